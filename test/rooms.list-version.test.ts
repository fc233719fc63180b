/**
 * `room.list` and the room list's live feed (`room.activity`, `unread.changed` on `inbox.events`)
 * merged as docs/CLIENT.md says: each list entry carries the `version` of its counts, as the events
 * do, and whichever of the two arrives later, the counts of the higher version are the ones shown.
 * A list read is a merge, not a reset: counts read before a read position moved never replace
 * counts read after it, whether they come from the list or from an event.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatClient, RouterOutputs } from '../client/index.js';
import { buildWebPage, logIn, TestBrowser } from './fixture/browser.js';
import { clientFor, dispose, fileServer, holdAnswers, recordInbox, uuid } from './fixture.js';

const srv = fileServer('list_version');

const tag = () => uuid().slice(0, 8);
const send = (c: ChatClient, roomId: string, body: string) => c.trpc.chat.send.mutate({ roomId, clientId: uuid(), body });

type Entry = RouterOutputs['room']['list'][number];

/** Bob with two devices (the laptop shows the list), Alice writing to their room. */
async function setUp() {
  const u = tag();
  const [alice, bob] = [`a-${u}`, `b-${u}`];
  const ac = clientFor(srv.url, alice);
  const phone = clientFor(srv.url, bob);
  const laptop = clientFor(srv.url, bob);
  const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'list', memberIds: [bob] });
  const inbox = recordInbox(laptop);
  await inbox.ready();
  /** The laptop's list reads: each entry of the room, and how many inbox events had arrived before it. */
  const lists: { at: number; entry: Entry }[] = [];
  const readList = async () => {
    const entry = (await laptop.trpc.room.list.query()).find((r) => r.id === room.id)!;
    lists.push({ at: inbox.events.items.length, entry });
    return entry;
  };
  /**
   * The room's unread count as the documented recipe shows it, over the list reads and the events
   * in arrival order: counts whose version is lower than those shown are dropped, on a tie the later
   * ones are taken.
   */
  const shown = () => {
    const arrivals: { unread: number; version: number }[] = [];
    const items = inbox.events.items;
    for (let i = 0; i <= items.length; i++) {
      for (const l of lists) if (l.at === i) arrivals.push({ unread: l.entry.unreadCount, version: l.entry.version });
      const e = items[i]?.data;
      if (e?.type === 'room.activity' && e.roomId === room.id) arrivals.push({ unread: e.unreadCount, version: e.version });
      if (e?.type === 'unread.changed' && e.roomId === room.id) arrivals.push({ unread: e.unread, version: e.version });
    }
    return arrivals.reduce((view, next) => (next.version < view.version ? view : next)).unread;
  };
  const truth = async () => (await phone.trpc.receipt.unread.query()).find((c) => c.roomId === room.id)!.unread;
  return {
    bob,
    room,
    ac,
    phone,
    laptop,
    inbox,
    readList,
    shown,
    truth,
    async [Symbol.asyncDispose]() {
      inbox.unsubscribe();
      await Promise.all([ac, phone, laptop].map((c) => c[Symbol.asyncDispose]()));
    },
  };
}

describe('room.list merged with the live feed by version', () => {
  it('a room.activity counted before a read on another device but delivered after a later room.list loses to the list', async () => {
    await using s = await setUp();
    using holds = holdAnswers(srv.app.services.store);
    const m0 = await send(s.ac, s.room.id, 'before');
    await s.inbox.next('room.activity', (e) => e.roomId === s.room.id && e.seq === m0.seq);

    // The activity of m1 is counted (m0 and m1 unread) and held; Bob reads both on his phone; the
    // laptop rereads its list (a reconnect, say), and only then does the old count arrive.
    const h = holds.next((rows) => rows.some((r) => r.room_id === s.room.id && r.user_id === s.bob && 'unread' in r));
    const m1 = await send(s.ac, s.room.id, 'one');
    await h.reached.promise;
    await s.phone.trpc.receipt.markRead.mutate({ roomId: s.room.id, seq: m1.seq });
    await s.inbox.next('unread.changed', (e) => e.roomId === s.room.id && e.unread === 0);
    const listed = await s.readList();
    expect(listed.unreadCount).toBe(0);
    h.release.resolve();
    const late = await s.inbox.next('room.activity', (e) => e.roomId === s.room.id && e.seq === m1.seq);
    expect(late.unreadCount).toBe(2);

    expect(await s.truth()).toBe(0);
    expect(s.shown(), 'the unread count after a list read raced by an older activity').toBe(0);
    expect(listed.version).toBeGreaterThan(late.version);
  });

  it('a room.list read before a read (or a mark unread) but answered after its unread.changed loses to it', async () => {
    await using s = await setUp();
    using holds = holdAnswers(srv.app.services.store);
    const m1 = await send(s.ac, s.room.id, 'one');
    const m2 = await send(s.ac, s.room.id, 'two');
    const first = await s.readList();
    expect(first.unreadCount).toBe(2);

    /** The laptop's list is read and held; the phone moves Bob's read position; the old list arrives last. */
    const race = async (change: () => Promise<unknown>, counts: (unread: number) => boolean) => {
      const h = holds.next((rows) => rows.some((r) => r.id === s.room.id && 'unread_count' in r));
      const reading = s.readList();
      await h.reached.promise;
      await change();
      await s.inbox.next('unread.changed', (e) => e.roomId === s.room.id && counts(e.unread));
      h.release.resolve();
      return reading;
    };

    // Read with m1 and m2 unread; Bob reads both on the phone.
    const stale = await race(() => s.phone.trpc.receipt.markRead.mutate({ roomId: s.room.id, seq: m2.seq }), (n) => n === 0);
    expect(stale.unreadCount).toBe(2);
    expect(await s.truth()).toBe(0);
    expect(s.shown(), 'the unread count after a read raced by a list read').toBe(0);

    // Read with nothing unread; Bob marks m1 unread on the phone (his position moves back).
    const before = await race(() => s.phone.trpc.receipt.markUnread.mutate({ roomId: s.room.id, seq: m1.seq }), (n) => n === 2);
    expect(before.unreadCount).toBe(0);
    expect(await s.truth()).toBe(2);
    expect(s.shown(), 'the unread count after a mark unread raced by a list read').toBe(2);

    // A list read after all of it has the newest counts, and a version no lower than any event's.
    const after = await s.readList();
    expect(after.unreadCount).toBe(2);
    const versions = s.inbox.events.items.flatMap((x) => ('version' in x.data ? [x.data.version] : []));
    expect(after.version).toBeGreaterThanOrEqual(Math.max(...versions));
    expect(s.shown()).toBe(2);
  });
});

describe('the page at / merges room.list with the live feed by version', () => {
  let browser: TestBrowser;
  beforeAll(async () => {
    buildWebPage();
    browser = await TestBrowser.launch();
  });
  afterAll(() => dispose(browser));

  /** Carol on the page with three rooms of Dave's (Alpha, Beta, Gamma), one unread message in each. */
  async function onPage() {
    const u = tag();
    const [carol, dave] = [`c-${u}`, `d-${u}`];
    const errors: string[] = [];
    const { ctx, page } = await browser.newPage(errors, { timeoutMs: 10_000 });
    await logIn(page, srv.url, carol, 'Carol');
    const dc = clientFor(srv.url, dave);
    const phone = clientFor(srv.url, carol);
    const create = async (name: string) => {
      const room = await dc.trpc.room.create.mutate({ kind: 'group', name, memberIds: [carol] });
      await send(dc, room.id, `first in ${name}`);
      return room;
    };
    const rooms = { alpha: await create('Alpha'), beta: await create('Beta'), gamma: await create('Gamma') };
    const item = (roomId: string) => page.locator(`#room-list .room-item[data-room-id="${roomId}"]`);
    for (const r of Object.values(rooms)) await item(r.id).locator('.badge').filter({ hasText: /^1$/ }).waitFor();
    return {
      carol,
      dc,
      phone,
      page,
      errors,
      rooms,
      item,
      /** Renames Alpha: the page rereads its list (room.changed); resolves once it shows the list's answer. */
      async reread(name: string, answered: () => Promise<void> = async () => undefined) {
        await dc.trpc.room.update.mutate({ roomId: rooms.alpha.id, name });
        await answered();
        await item(rooms.alpha.id).locator('.room-name').filter({ hasText: name }).waitFor();
      },
      async [Symbol.asyncDispose]() {
        await ctx.close();
        await Promise.all([dc, phone].map((c) => c[Symbol.asyncDispose]()));
      },
    };
  }

  it('a list read before a read on another device, answered after its unread.changed, leaves the badge off', async () => {
    await using p = await onPage();
    using holds = holdAnswers(srv.app.services.store);
    const { beta } = p.rooms;
    const h = holds.next((rows) => rows.some((r) => r.id === beta.id && 'unread_count' in r));
    // The page rereads its list (Alpha renamed); the answer (Beta: 1 unread) is held.
    const reread = p.reread('Alpha 2', async () => {
      await h.reached.promise;
      // Carol reads Beta on her phone: unread.changed takes the badge off; then the old list arrives.
      const m = await p.phone.trpc.room.get.query({ roomId: beta.id });
      await p.phone.trpc.receipt.markRead.mutate({ roomId: beta.id, seq: m.lastSeq });
      await p.item(beta.id).locator('.badge').waitFor({ state: 'detached' });
      h.release.resolve();
    });
    await reread;
    expect(await p.item(beta.id).locator('.badge').count(), 'Beta\'s badge after the older list arrived').toBe(0);
    expect(p.errors).toEqual([]);
  });

  it('a room.activity counted before a read on another device, delivered after a later list read, leaves the badge off', async () => {
    await using p = await onPage();
    using holds = holdAnswers(srv.app.services.store);
    const { beta, gamma } = p.rooms;
    // Beta's activity for Carol is counted (2 unread) and held.
    const h = holds.next((rows) => rows.some((r) => r.room_id === beta.id && r.user_id === p.carol && 'unread' in r));
    const m = await send(p.dc, beta.id, 'second in Beta');
    await h.reached.promise;
    // Carol reads Beta on her phone (the badge goes), the page rereads its list (0 unread in Beta).
    await p.phone.trpc.receipt.markRead.mutate({ roomId: beta.id, seq: m.seq });
    await p.item(beta.id).locator('.badge').waitFor({ state: 'detached' });
    await p.reread('Alpha 2');
    // Then the old activity goes out, and after it (the feed sends one batch at a time) Gamma's.
    h.release.resolve();
    await send(p.dc, gamma.id, 'second in Gamma');
    await p.item(gamma.id).locator('.badge').filter({ hasText: /^2$/ }).waitFor();
    expect(await p.item(beta.id).locator('.badge').count(), 'Beta\'s badge after the older activity arrived').toBe(0);
    expect(p.errors).toEqual([]);
  });
});
