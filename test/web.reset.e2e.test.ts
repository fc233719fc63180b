/**
 * The browser page's open room after a `reset` to a lower seq (the database restored from an older
 * backup, so the room's seqs start again below what the page had read): the page reports its reads
 * again from the room's new position on, so the user's unread counts (the room list, the other
 * devices) follow; and its room list forgets the previews and counts of the old database on a
 * `reset` (of the open room's stream, or of the inbox feed for every room), so a reread and the
 * events after it are shown instead of a message the restore removed. Debian's Chromium driven
 * by playwright-core against a real server (PostgreSQL + Redis) that is restarted on the same port;
 * every wait is on a condition, never a fixed sleep.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWebPage, logIn, TestBrowser } from './fixture/browser.js';
import { clientFor, dispose, freePort, testEnv, uuid, waitFor, type TestEnv, type TestServer } from './fixture.js';

/** Page-side waits: generous for a loaded CI machine (a reconnect backs off), well inside the test timeout. */
const WAIT = 20_000;

let env: TestEnv;
let port: number;
let srv: TestServer;
let browser: TestBrowser;

beforeAll(async () => {
  buildWebPage();
  env = await testEnv('web_reset');
  port = await freePort();
  srv = await env.startServer({ port });
  browser = await TestBrowser.launch();
});

afterAll(() => dispose(env, browser));

const newPage = async (errors: string[]): Promise<Page> => (await browser.newPage(errors, { timeoutMs: WAIT })).page;

/** A message the server has confirmed (it has a seq), by its text. */
const message = (page: Page, text: string) => page.locator('#messages .msg[data-seq]', { has: page.locator('.body', { hasText: text }) });

describe('the page at / after a reset to a lower seq', () => {
  it('reports reads of the open room again after its seqs went back below what it had read (a restored backup)', async () => {
    const u = uuid().slice(0, 8);
    const [carol, dave] = [`c-${u}`, `d-${u}`];
    const errors: string[] = [];
    const page = await newPage(errors);
    await logIn(page, srv.url, carol, 'Carol');

    const room = await (async () => {
      await using dc = clientFor(srv.url, dave);
      const r = await dc.trpc.room.create.mutate({ kind: 'group', name: 'Restored', memberIds: [carol] });
      const sent = [];
      for (const body of ['one', 'two', 'three', 'four']) sent.push(await dc.trpc.chat.send.mutate({ roomId: r.id, clientId: uuid(), body }));
      return { ...r, sent };
    })();
    const [m1, m2] = room.sent;
    const readPosition = async () =>
      Number((await env.sql<{ s: string }>('select last_read_seq as s from membership where room_id = $1 and user_id = $2', [room.id, carol]))[0]!.s);

    // Carol opens the room: the page shows it and reports it read up to its last seq (N).
    await page.locator(`#room-list .room-item[data-room-id="${room.id}"]`).click();
    await message(page, 'four').waitFor();
    const n = room.sent.at(-1)!.seq;
    await waitFor(readPosition, 'the page reporting the room read', { until: (s) => s === n, timeoutMs: WAIT });

    // The server goes away and the database comes back from a backup taken after "two", when Carol
    // had read only "one": the room's position is below what the page read.
    await srv.close();
    const k = m2!.seq;
    await env.sql('delete from message where room_id = $1 and seq > $2', [room.id, k]);
    await env.sql('delete from room_event where room_id = $1 and seq > $2', [room.id, k]);
    await env.sql('update room set last_seq = $2 where id = $1', [room.id, k]);
    await env.sql('update membership set last_read_seq = least(last_read_seq, $2), receipt_seq = least(receipt_seq, $2) where room_id = $1', [room.id, k]);
    await env.sql('update membership set last_read_seq = $3, receipt_seq = $3 where room_id = $1 and user_id = $2', [room.id, carol, m1!.seq]);
    expect(await readPosition()).toBe(m1!.seq);

    // Back on the same port: the page's room stream resumes from N, above the room's position, and
    // gets `reset` to it; the page reloads the room (the messages the backup lacks are gone).
    srv = await env.startServer({ port });
    await message(page, 'three').waitFor({ state: 'detached' });
    await message(page, 'two').waitFor();
    await page.waitForSelector('#conn[data-state="open"]');
    // What it shows ("two", unread in the backup) it reports read.
    await waitFor(readPosition, 'the page reporting the restored room read', { until: (s) => s === k, timeoutMs: WAIT });

    // Dave writes again: a seq at or below N, which the page shows and must report read.
    await using dc = clientFor(srv.url, dave);
    const fresh = await dc.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'after the restore' });
    expect(fresh.seq).toBeLessThanOrEqual(n);
    await message(page, 'after the restore').waitFor();
    // The room list shows it too: its entry does not keep the preview of a message the restore
    // removed ("four", at a seq above the room's new position).
    await page.locator(`#room-list .room-item[data-room-id="${room.id}"] .room-last`, { hasText: 'after the restore' }).waitFor();
    expect(
      await waitFor(readPosition, "Carol's read position following the message the page shows", { until: (s) => s === fresh.seq, timeoutMs: WAIT }),
    ).toBe(fresh.seq);
    // Her other devices and the room list count nothing unread in the room.
    await using phone = clientFor(srv.url, carol);
    expect((await phone.trpc.receipt.unread.query()).find((c) => c.roomId === room.id)).toMatchObject({ unread: 0, lastReadSeq: fresh.seq });
    expect(errors).toEqual([]);
  });

  it("rereads the room list after the inbox's reset: a room not open no longer shows a message the restore removed, and shows those sent since", async () => {
    const u = uuid().slice(0, 8);
    const [erin, fred] = [`e-${u}`, `f-${u}`];
    const errors: string[] = [];
    const page = await newPage(errors);
    await logIn(page, srv.url, erin, 'Erin');
    const inboxPosition = async () =>
      Number((await env.sql<{ s: string }>("select last_seq as s from inbox_cursor where tenant = 'default' and user_id = $1", [erin]))[0]!.s);
    const preview = (roomId: string, text: string) => page.locator(`#room-list .room-item[data-room-id="${roomId}"] .room-last`, { hasText: text });

    // A room Erin never opens; the page learns its messages from the inbox feed alone.
    const room = await (async () => {
      await using fc = clientFor(srv.url, fred);
      const r = await fc.trpc.room.create.mutate({ kind: 'group', name: 'Elsewhere', memberIds: [erin] });
      const two = [];
      for (const body of ['one', 'two']) two.push(await fc.trpc.chat.send.mutate({ roomId: r.id, clientId: uuid(), body }));
      return { ...r, two };
    })();
    await preview(room.id, 'two').waitFor();
    // The backup is taken here. Then Fred mentions Erin (an inbox item) and writes on.
    const backupInbox = await inboxPosition();
    {
      await using fc = clientFor(srv.url, fred);
      await fc.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: '@erin three', mentions: [erin] });
      await fc.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'four' });
    }
    await page.locator('#toast', { hasText: 'mentioned you' }).waitFor({ state: 'attached' });
    await preview(room.id, 'four').waitFor();

    // The database comes back from that backup: the room's messages after "two" and Erin's inbox
    // item of the mention are gone, and her inbox position is below what the page has seen.
    await srv.close();
    const k = room.two.at(-1)!.seq;
    await env.sql('delete from message where room_id = $1 and seq > $2', [room.id, k]);
    await env.sql('delete from room_event where room_id = $1 and seq > $2', [room.id, k]);
    await env.sql('update room set last_seq = $2 where id = $1', [room.id, k]);
    await env.sql("delete from inbox_event where tenant = 'default' and user_id = $1 and seq > $2", [erin, backupInbox]);
    await env.sql("update inbox_cursor set last_seq = $2 where tenant = 'default' and user_id = $1", [erin, backupInbox]);
    srv = await env.startServer({ port });
    await page.waitForSelector('#conn[data-state="open"]');

    // Fred writes again, at a seq the page had seen before the restore: the list shows it.
    await using fc = clientFor(srv.url, fred);
    const fresh = await fc.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'after the restore' });
    expect(fresh.seq).toBeLessThanOrEqual(k + 2);
    await preview(room.id, 'after the restore').waitFor();
    expect(errors).toEqual([]);
  });
});
