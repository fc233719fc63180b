/**
 * E-mail digests over real SMTP (a local smtp-server): unread mentions and direct messages of a user
 * who stayed away for EMAIL_DIGEST_DELAY_MS, in one mail (plain text and HTML, links from
 * PUBLIC_APP_URL); nothing for what was read meanwhile, nothing of an encrypted room's bodies.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newCounters } from '../src/metrics.js';
import type { PresenceStore } from '../src/realtime/presence-store.js';
import { type Digest, Mailer } from '../src/services/notify/digest.js';
import { NotifyWorker, type NotifyWorkerOptions } from '../src/services/notify/worker.js';
import { claimDigests, deleteDigest, digestItems, digestSent, postponeDigest, retryDigest } from '../src/store/notify.js';
import {
  actor,
  Collector,
  callerFor,
  clientFor,
  createLogger,
  elapse,
  type MailServer,
  mailServer,
  makeConfig,
  type TestEnv,
  type TestServer,
  testEnv,
  uuid,
  waitFor,
} from './fixture.js';

const DELAY_MS = 800;
let smtp: MailServer;
let env: TestEnv;
let digestServer: TestServer;
/** The server starts once the SMTP server's port is known. */
beforeAll(async () => {
  smtp = await mailServer();
  env = await testEnv('digest');
  digestServer = await env.startServer({
    messageKeys: `k1:${randomBytes(32).toString('base64')}`,
    notify: {
      ...makeConfig().notify,
      pollMs: 50,
      retryBaseMs: 50,
      digestDelayMs: DELAY_MS,
      publicAppUrl: 'https://chat.example.com',
      smtp: { url: smtp.url, from: 'Chat <chat@example.com>' },
    },
  });
});
afterAll(async () => {
  await env?.[Symbol.asyncDispose]();
  await smtp?.close();
});

function tenant() {
  const name = `mail-${uuid().slice(0, 8)}`;
  const as = (id: string) => callerFor(digestServer.app, actor(id, name));
  return {
    name,
    as,
    /** Makes the user known with an e-mail address (as a token with an `email` claim does). */
    withEmail: (id: string) => digestServer.app.services.users.touch({ ...actor(id, name), email: `${id}@${name}.example.com` }),
    digestRows: () => env.sql<{ user_id: string }>('select user_id from notify_digest where tenant = $1', [name]),
  };
}

const mailsTo = (addr: string) => smtp.mails.items.filter((m) => m.to.includes(addr));

/**
 * A TCP gate in front of the test SMTP server whose first session is slow but alive: once the client
 * sends EHLO, the reply comes as a multi-line reply whose lines trickle in, one every 200 ms (the
 * socket never idles for the SMTP timeouts), and the server's own lines only when a second session
 * comes in (another sender). Later sessions pass straight through. Records when each session opened
 * and closed, and the most open at once.
 */
async function slowEhloGate(upstreamPort: number) {
  const sessions: { openedAt: number; closedAt: number | null }[] = [];
  const sockets = new Set<net.Socket>();
  const releases: (() => void)[] = [];
  const state = { open: 0, maxOpen: 0 };
  const server = net.createServer((s) => {
    const session = { openedAt: Date.now(), closedAt: null as number | null };
    const slow = sessions.length === 0;
    sessions.push(session);
    sockets.add(s);
    state.open++;
    state.maxOpen = Math.max(state.maxOpen, state.open);
    for (const release of releases.splice(0)) release();
    const up = net.connect(upstreamPort, '127.0.0.1');
    let trickle: NodeJS.Timeout | undefined;
    s.on('error', () => {});
    up.on('error', () => s.destroy());
    up.on('close', () => s.destroy());
    s.on('close', () => {
      session.closedAt = Date.now();
      state.open--;
      sockets.delete(s);
      clearInterval(trickle);
      up.destroy();
    });
    s.pipe(up);
    if (!slow) {
      up.pipe(s);
      return;
    }
    let held: Buffer[] | null = null;
    s.on('data', (chunk: Buffer) => {
      if (held !== null || !/^EHLO /i.test(chunk.toString('latin1'))) return;
      held = [];
      trickle = setInterval(() => s.write('250-X-SLOW-CHECKS\r\n'), 200);
      releases.push(() => {
        clearInterval(trickle);
        for (const c of held!.splice(0)) s.write(c);
        held = null;
      });
    });
    up.on('data', (chunk: Buffer) => {
      if (held === null) s.write(chunk);
      else held.push(chunk);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `smtp://127.0.0.1:${port}`,
    sessions,
    state,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('e-mail digests', () => {
  it('one digest of unread mentions and direct messages after the delay away: plain text and HTML with links', async () => {
    const tn = tenant();
    await tn.withEmail('bob');
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Release <train>', memberIds: ['bob'] });
    // Bob is connected while the three are written: his row waits (put off while he is online), so
    // both items are in one digest however long the sends take; the delay counts from when he left.
    await using bobWs = clientFor(digestServer.url, 'bob', { tenant: tn.name, ws: true });
    await bobWs.trpc.auth.me.query();
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'are you around?' });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob please sign off', mentions: ['bob'] });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'plain chatter is not in a digest' });
    const addr = `bob@${tn.name}.example.com`;
    expect(mailsTo(addr)).toEqual([]);
    const leftAt = Date.now();
    await bobWs.close();
    await smtp.mails.until(() => mailsTo(addr).length >= 1, 'the digest', 10_000);
    expect(Date.now() - leftAt).toBeGreaterThanOrEqual(DELAY_MS);
    const [mail] = mailsTo(addr);
    expect(mail!.from).toBe('chat@example.com');
    expect(mail!.subject).toBe('2 unread messages for you');
    expect(mail!.text).toContain('Direct message from alice');
    expect(mail!.text).toContain('alice: are you around?');
    expect(mail!.text).toContain('alice: @bob please sign off');
    expect(mail!.text).toContain(`https://chat.example.com/#/room/${room.id}`);
    expect(mail!.text).not.toContain('plain chatter');
    expect(mail!.html).toContain(`<a href="https://chat.example.com/#/room/${room.id}">Release &lt;train&gt;</a>`);
    expect(mail!.html).toContain('<b>alice</b>: are you around?');
    // One digest: nothing more for the same messages.
    await elapse(DELAY_MS * 2);
    expect(mailsTo(addr)).toHaveLength(1);
  });

  it('nothing for what was read meanwhile; nothing with e-mail off; nothing without an address; nothing from a room set to none', async () => {
    const tn = tenant();
    await tn.withEmail('bob');
    await tn.withEmail('carol');
    await tn.withEmail('frank');
    await tn.as('carol').notify.setPreferences({ email: 'off' });
    // Bob and frank stay connected until their digest rows are checked: a connected user's row waits
    // (it is put off by EMAIL_DIGEST_DELAY_MS each time it comes due), so the check does not depend
    // on the steps below taking less than the delay.
    await using bobWs = clientFor(digestServer.url, 'bob', { tenant: tn.name, ws: true });
    await using frankWs = clientFor(digestServer.url, 'frank', { tenant: tn.name, ws: true });
    await Promise.all([bobWs.trpc.auth.me.query(), frankWs.trpc.auth.me.query()]);
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    const m = await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'read me quickly' });
    await tn.as('bob').receipt.markRead({ roomId: dm.id, seq: m.seq });
    const dmCarol = await tn.as('alice').room.openDirect({ userId: 'carol' });
    await tn.as('alice').chat.send({ roomId: dmCarol.id, clientId: uuid(), body: 'carol turned mail off' });
    // A room set to none is left out of the digest (here: its only item, so no mail at all).
    const quiet = await tn.as('alice').room.create({ kind: 'group', name: 'Quiet', memberIds: ['frank'] });
    await tn.as('frank').notify.setRoomPreference({ roomId: quiet.id, level: 'none' });
    await tn.as('alice').chat.send({ roomId: quiet.id, clientId: uuid(), body: '@frank shh', mentions: ['frank'] });
    const dmDave = await tn.as('alice').room.openDirect({ userId: 'dave' });
    await tn.as('alice').chat.send({ roomId: dmDave.id, clientId: uuid(), body: 'dave has no address' });
    expect((await tn.digestRows()).map((r) => r.user_id).sort()).toEqual(['bob', 'frank']);
    // Both go away: their rows are handled after the delay, and find nothing to send.
    await Promise.all([bobWs.close(), frankWs.close()]);
    await waitFor(() => tn.digestRows(), 'the digest rows handled', { until: (r) => r.length === 0, timeoutMs: 10_000 });
    expect(smtp.mails.items.filter((x) => x.to.some((a) => a.endsWith(`@${tn.name}.example.com`)))).toEqual([]);
  });

  it("a token's email claim is kept as the user's address (the last one known; a token without it keeps it; a bad one is ignored)", async () => {
    const tn = tenant();
    const emailOf = async () => (await env.sql<{ email: string | null }>('select email from chat_user where tenant = $1 and id = $2', [tn.name, 'erin']))[0]?.email;
    {
      await using erin = clientFor(digestServer.url, 'erin', { tenant: tn.name, email: 'erin@example.com' });
      await erin.trpc.auth.me.query();
    }
    expect(await emailOf()).toBe('erin@example.com');
    {
      await using erin = clientFor(digestServer.url, 'erin', { tenant: tn.name, name: 'Erin' });
      await erin.trpc.auth.me.query();
    }
    expect(await emailOf()).toBe('erin@example.com');
    {
      await using erin = clientFor(digestServer.url, 'erin', { tenant: tn.name, email: 'not an address' });
      await erin.trpc.auth.me.query();
    }
    expect(await emailOf()).toBe('erin@example.com');
  });

  it('encrypted rooms: "New message in <room>", never the body', async () => {
    const tn = tenant();
    await tn.withEmail('bob');
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Vault', memberIds: ['bob'], encrypted: true });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'the password is swordfish', mentions: ['bob'] });
    const addr = `bob@${tn.name}.example.com`;
    await smtp.mails.until(() => mailsTo(addr).length >= 1, 'the digest', 10_000);
    const [mail] = mailsTo(addr);
    expect(mail!.text).toContain('alice: New message in Vault');
    expect(mail!.raw).not.toContain('swordfish');
  });

  it('a user with an open connection gets no digest while connected; once away, one after EMAIL_DIGEST_DELAY_MS', async () => {
    const tn = tenant();
    const addr = `bob@${tn.name}.example.com`;
    await tn.withEmail('bob');
    await using bobWs = clientFor(digestServer.url, 'bob', { tenant: tn.name, ws: true });
    await bobWs.trpc.auth.me.query();
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'you are online' });
    await elapse(DELAY_MS * 2);
    expect(mailsTo(addr)).toEqual([]);
    expect((await tn.digestRows()).map((r) => r.user_id)).toEqual(['bob']);

    // Bob leaves: the digest waits until he has been away for the whole delay, then comes once.
    const leftAt = Date.now();
    await bobWs.close();
    await smtp.mails.until(() => mailsTo(addr).length >= 1, 'the digest once away', 10_000);
    expect(Date.now() - leftAt).toBeGreaterThanOrEqual(DELAY_MS);
    const [mail] = mailsTo(addr);
    expect(mail!.subject).toBe('1 unread message for you');
    expect(mail!.text).toContain('alice: you are online');
  });

  it('room, sender and user names are one line in a digest: line breaks stored in them (before names were checked) add no line of their own', async () => {
    const tn = tenant();
    const addr = `bob@${tn.name}.example.com`;
    const injected = 'SECURITY NOTICE from Chat: your session expired, sign in again at https://evil.example/login';
    await digestServer.app.services.users.touch({ ...actor('bob', tn.name), name: 'Bob\r\n\r\nP.S. forward this mail', email: addr });
    await digestServer.app.services.users.touch({ ...actor('alice', tn.name), name: 'Alice\nFAKE LINE' });
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Ops', memberIds: ['bob'] });
    await env.sql('update room set name = $2 where tenant = $1 and id = $3', [tn.name, `Ops\r\n\r\n${injected}\u2028\r\n`, room.id]);
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob see above', mentions: ['bob'] });
    await smtp.mails.until(() => mailsTo(addr).length >= 1, 'the digest', 10_000);
    const [mail] = mailsTo(addr);
    const lines = mail!.text.split(/\r?\n/);
    expect(lines.filter((l) => /^\s*(SECURITY NOTICE|P\.S\.|FAKE LINE)/.test(l))).toEqual([]);
    expect(lines).toContain('Hello Bob P.S. forward this mail,');
    expect(lines).toContain(`Ops ${injected} (https://chat.example.com/#/room/${room.id})`);
    expect(lines).toContain('  Alice FAKE LINE: @bob see above');
    expect(mail!.html).toContain(`>Ops ${injected}</a>`);
  });

  it('a muted room is left out of the digest', async () => {
    const tn = tenant();
    const addr = `bob@${tn.name}.example.com`;
    await tn.withEmail('bob');
    const muted = await tn.as('alice').room.create({ kind: 'group', name: 'Muted', memberIds: ['bob'] });
    const open = await tn.as('alice').room.create({ kind: 'group', name: 'Open', memberIds: ['bob'] });
    await tn.as('bob').notify.setRoomPreference({ roomId: muted.id, level: 'mentions', muteUntil: new Date(Date.now() + 3600_000) });
    await tn.as('alice').chat.send({ roomId: muted.id, clientId: uuid(), body: '@bob from the muted room', mentions: ['bob'] });
    await tn.as('alice').chat.send({ roomId: open.id, clientId: uuid(), body: '@bob from the open room', mentions: ['bob'] });
    await smtp.mails.until(() => mailsTo(addr).length >= 1, 'the digest', 10_000);
    const [mail] = mailsTo(addr);
    expect(mail!.subject).toBe('1 unread message for you');
    expect(mail!.text).toContain('alice: @bob from the open room');
    expect(mail!.raw).not.toContain('from the muted room');
  });
});

/**
 * The digest worker's rounds driven one at a time on a database of their own: the server's worker is
 * stopped, and each test runs a worker whose presence, mailer and clock it controls. A round runs when
 * the test makes the row due and wakes the worker; its outcome is read from the row.
 */
describe('the digest worker: claims, attempts, the cursor and the clock', () => {
  const DELAY = 60_000;
  let wenv: TestEnv;
  let srv: TestServer;
  beforeAll(async () => {
    wenv = await testEnv('digestwork');
    srv = await wenv.startServer({
      notify: { ...makeConfig().notify, smtp: { url: 'smtp://127.0.0.1:9', from: 'Chat <chat@example.com>' }, digestDelayMs: DELAY },
    });
    await srv.app.services.notifyWorker.stop();
  });
  afterAll(() => wenv?.[Symbol.asyncDispose]());

  interface Row {
    since: string;
    after_room_id: string | null;
    after_seq: string | null;
    lease_until: Date | null;
    attempts: number;
    queued: string;
    last_error: string | null;
    due_at: Date;
    /** Seconds from the database's now() to due_at. */
    due_in: number;
  }
  const rowOf = async (tenant: string): Promise<Row | undefined> =>
    (
      await wenv.sql<Row>(
        `select to_char(since at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as since, after_room_id, after_seq, lease_until, attempts, queued, last_error, due_at,
                extract(epoch from due_at - now())::float8 as due_in
           from notify_digest where tenant = $1 and user_id = 'bob'`,
        [tenant],
      )
    )[0];

  /** A tenant where alice writes to bob (who has an e-mail address) in a direct room. */
  async function dm() {
    const tenant = `dw-${uuid().slice(0, 8)}`;
    await srv.app.services.users.touch({ ...actor('bob', tenant), email: `bob@${tenant}.example.com` });
    const alice = callerFor(srv.app, actor('alice', tenant));
    const room = await alice.room.openDirect({ userId: 'bob' });
    const send = (body: string) => alice.chat.send({ roomId: room.id, clientId: uuid(), body });
    return { tenant, room, send, row: () => rowOf(tenant) };
  }

  /** A worker with a fake presence (offline, never seen, unless set), a mailer that records (or fails) and an optional clock. */
  function worker(config: { maxAttempts?: number } = {}, options: NotifyWorkerOptions = {}) {
    const presence = { online: false, lastSeenAt: null as Date | null };
    const mails = new Collector<{ to: string; subject: string; text: string }>();
    let failures = 0;
    const mailer = {
      async send(to: string, d: Digest) {
        if (failures > 0) {
          failures--;
          throw new Error('451 try again later');
        }
        mails.push({ to, subject: d.subject, text: d.text });
      },
      close() {},
    } as unknown as Mailer;
    const store = {
      count: async () => (presence.online ? 1 : 0),
      get: async (_tenant: string, userIds: string[]) => userIds.map((userId) => ({ userId, status: presence.online ? 'online' : 'offline', lastSeenAt: presence.lastSeenAt })),
    } as unknown as PresenceStore;
    const counters = newCounters();
    // Rounds only when woken (the poll interval is long); retries far off, so a retried row waits for the test.
    const notify = { ...srv.config.notify, pollMs: 600_000, retryBaseMs: 600_000, maxAttempts: config.maxAttempts ?? 10 };
    const w = new NotifyWorker(srv.app.services.store, store, notify, mailer, createLogger('silent'), counters, options);
    w.start();
    return {
      presence,
      mails,
      counters,
      failNext: (n: number) => {
        failures = n;
      },
      /** Makes the tenant's row due, runs a round and returns the row once the round wrote its outcome (undefined: deleted). */
      async round(tenant: string): Promise<Row | undefined> {
        await wenv.sql('update notify_digest set due_at = now() where tenant = $1', [tenant]);
        w.wake();
        return waitFor(() => rowOf(tenant), 'the round to write its outcome', { until: (r) => r === undefined || (r.lease_until === null && r.due_in > 0), timeoutMs: 8000 });
      },
      [Symbol.asyncDispose]: () => w.stop(),
    };
  }

  it('a node whose lease ran out cannot write over or delete a digest row another node claimed since', async () => {
    const db = srv.app.services.store.db();
    const t = await dm();
    await t.send('hello');
    const claim = async () => (await claimDigests(db, 100, 60_000)).find((c) => c.tenant === t.tenant);
    await wenv.sql('update notify_digest set due_at = now() where tenant = $1', [t.tenant]);
    const a = await claim(); // node A
    expect(a).toMatchObject({ attempts: 1 });
    expect(await claim()).toBeUndefined(); // A's lease holds it
    // A is held up until its lease has run out: node B claims the row and sends the digest.
    await wenv.sql("update notify_digest set lease_until = now() - interval '1 second' where tenant = $1", [t.tenant]);
    const b = await claim();
    expect(b).toMatchObject({ attempts: 2 });
    const items = await digestItems(db, t.tenant, 'bob', b!.cursor, 50);
    expect(items.map((i) => i.body)).toEqual(['hello']);
    expect(await digestSent(db, b!, { at: items[0]!.created_at_exact, roomId: items[0]!.room_id, seq: items[0]!.seq }, DELAY)).toBe(true);
    const afterB = await t.row();
    expect(afterB).toMatchObject({ after_room_id: t.room.id, attempts: 0, lease_until: null });
    // Whatever A's round ends with, nothing is written: B's cursor and due time stay.
    expect(await retryDigest(db, a!, 10, 'smtp down')).toBe(false);
    expect(await postponeDigest(db, a!, 10)).toBe(false);
    expect(await digestSent(db, a!, a!.cursor, 10)).toBe(false);
    expect(await deleteDigest(db, a!, 10)).toBe('lost');
    expect(await t.row()).toMatchObject({ ...afterB, due_in: expect.any(Number) });
    // Claimed again (C): A's outcome is still not written, C's is.
    await wenv.sql('update notify_digest set due_at = now() where tenant = $1', [t.tenant]);
    const c = await claim();
    expect(await deleteDigest(db, a!, 10)).toBe('lost');
    expect(await t.row()).toMatchObject({ lease_until: c!.lease_until });
    expect(await deleteDigest(db, c!, 10)).toBe('deleted');
    expect(await t.row()).toBeUndefined();
  });

  it('an item queued while a round finds nothing keeps the row: a delete never drops it, even when the queuing transaction commits during the delete', async () => {
    const db = srv.app.services.store.db();
    const t = await dm();
    const first = await t.send('read at once');
    await callerFor(srv.app, actor('bob', t.tenant)).receipt.markRead({ roomId: t.room.id, seq: first.seq });
    const claim = async () => {
      await wenv.sql('update notify_digest set due_at = now() where tenant = $1', [t.tenant]);
      return (await claimDigests(db, 100, 60_000)).find((c) => c.tenant === t.tenant)!;
    };

    // A round claims the row and finds nothing to send (bob read it) ...
    const d = await claim();
    expect(await digestItems(db, t.tenant, 'bob', d.cursor, 50)).toEqual([]);
    // ... a new message is queued (its transaction meets the row and leaves it as it is) ...
    const second = await t.send('new since the check');
    // ... and the round's delete finds the row touched: it stays, released and due as a new row is.
    expect(await deleteDigest(db, d, DELAY)).toBe('queued');
    const kept = await t.row();
    expect(kept).toMatchObject({ lease_until: null, attempts: 0 });
    expect(kept!.due_in).toBeGreaterThan(DELAY / 1000 - 30);
    const again = await claim();
    expect((await digestItems(db, t.tenant, 'bob', again.cursor, 50)).map((i) => i.body)).toEqual(['new since the check']);

    // The same when the queuing transaction has not committed when the delete runs: the delete waits
    // for it (its write holds the row) and then sees what it queued.
    await callerFor(srv.app, actor('bob', t.tenant)).receipt.markRead({ roomId: t.room.id, seq: second.seq });
    expect(await digestItems(db, t.tenant, 'bob', again.cursor, 50)).toEqual([]);
    const writer = new pg.Client({ connectionString: wenv.databaseUrl });
    await writer.connect();
    try {
      await writer.query('begin');
      await writer.query(`insert into notify_digest (tenant, user_id, since, due_at, attempts) values ($1, 'bob', now(), now() + interval '1 minute', 0) on conflict (tenant, user_id) do nothing`, [
        t.tenant,
      ]);
      const deleting = deleteDigest(db, again, DELAY);
      await waitFor(
        () => wenv.sql<{ n: number }>("select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and query like 'delete from%notify_digest%'"),
        'the delete waiting for the queuing transaction',
        { until: (r) => r[0]!.n === 1 },
      );
      await writer.query('commit');
      expect(await deleting).toBe('queued');
    } finally {
      await writer.end();
    }
    expect(await t.row()).toMatchObject({ lease_until: null });
  });

  it('a user who stays connected through many checks keeps every retry: only failed sends count towards NOTIFY_MAX_ATTEMPTS', async () => {
    const t = await dm();
    await t.send('while you were here');
    await using w = worker({ maxAttempts: 2 });
    w.presence.online = true;
    for (let i = 0; i < 4; i++) expect(await w.round(t.tenant)).toMatchObject({ attempts: 0, last_error: null });
    // Away now (never seen: the delay is over): the first send fails and is retried, not given up.
    w.presence.online = false;
    w.failNext(1);
    expect(await w.round(t.tenant)).toMatchObject({ attempts: 1, last_error: '451 try again later' });
    expect(await w.round(t.tenant)).toMatchObject({ attempts: 0, last_error: null });
    expect(w.mails.items.map((m) => m.text)).toEqual([expect.stringContaining('alice: while you were here')]);
  });

  it('every item is mailed once, past the limit of a digest: items that share a created_at, and items in the same millisecond', async () => {
    const t = await dm();
    const sent = [];
    for (let i = 0; i < 7; i++) sent.push(await t.send(`item <${i}>`));
    // As a transaction or a grouped send writes them: five at one instant, two more in the same
    // millisecond (an hour back, where the row's cursor is moved too: later sends come after them all).
    const at = (await wenv.sql<{ at: string }>(`select to_char((date_trunc('milliseconds', now()) - interval '1 hour') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS') as at`))[0]!
      .at;
    const micros = ['100', '100', '100', '100', '100', '400', '900'];
    for (const [i, m] of sent.entries()) await wenv.sql('update message set created_at = $1::timestamptz where id = $2', [`${at}${micros[i]}Z`, m.id]);
    await wenv.sql('update notify_digest set since = $1::timestamptz where tenant = $2', [`${at}000Z`, t.tenant]);
    await using w = worker({}, { digestItems: 3 });
    const bodies = () => w.mails.items.map((m) => [...m.text.matchAll(/item <(\d)>/g)].map((x) => Number(x[1])));
    await w.round(t.tenant);
    await w.round(t.tenant);
    await w.round(t.tenant);
    expect(bodies()).toEqual([[0, 1, 2], [3, 4, 5], [6]]);
    expect(await t.row()).toMatchObject({ since: `${at}900Z`, after_room_id: t.room.id, after_seq: String(sent[6]!.seq) });

    // A message whose transaction began before the last item mailed but committed after the digest
    // (here: written with such a created_at, and queued as its transaction does) is mailed too: the
    // cursor moves back to it, and the few items after it come again rather than it never coming.
    const late = await t.send('item <7>');
    await wenv.sql('update message set created_at = $1::timestamptz where id = $2', [`${at}600Z`, late.id]);
    await wenv.sql(`insert into notify_digest (tenant, user_id, since, due_at, attempts) values ($1, 'bob', $2::timestamptz, now(), 0) on conflict (tenant, user_id) do nothing`, [
      t.tenant,
      `${at}600Z`,
    ]);
    await w.round(t.tenant);
    expect(bodies()[3]).toEqual([7, 6]);
    // Nothing new: the next round deletes the row, and no item came twice but the one after the late one.
    expect(await w.round(t.tenant)).toBeUndefined();
    expect(bodies().flat().sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 6, 7]);
  });

  it('an SMTP session that would outlast the claim is cut off at its deadline (PUSH_TIMEOUT_MS from the claim), before the lease ends: retried, mailed once, never by two nodes at once', async () => {
    const PUSH_TIMEOUT_MS = 1000;
    const t = await dm();
    const to = `bob@${t.tenant}.example.com`;
    await t.send('are you there?');
    // A relay that answers EHLO slowly but never idles for PUSH_TIMEOUT_MS: every SMTP timeout holds, the session would go on for good.
    const gate = await slowEhloGate(Number(new URL(smtp.url).port));
    const offline = {
      count: async () => 0,
      get: async (_t: string, ids: string[]) => ids.map((userId) => ({ userId, status: 'offline', lastSeenAt: null })),
    } as unknown as PresenceStore;
    const notify = { ...srv.config.notify, vapid: null, pushTimeoutMs: PUSH_TIMEOUT_MS, pollMs: 50, retryBaseMs: 50 };
    const warnings: { msg: string; err?: { message: string } }[] = [];
    const log = createLogger('warn', false, { write: (line: string) => warnings.push(JSON.parse(line)) });
    // Two nodes on the database, each with its own mailer.
    const node = () => new NotifyWorker(srv.app.services.store, offline, notify, new Mailer(gate.url, 'Chat <chat@example.com>', PUSH_TIMEOUT_MS), log, newCounters());
    const a = node();
    const b = node();
    try {
      await wenv.sql('update notify_digest set due_at = now() where tenant = $1', [t.tenant]);
      a.start();
      await waitFor(() => gate.sessions.length, 'node A sending the digest', { until: (n) => n >= 1 });
      const claim = await t.row();
      expect(claim).toMatchObject({ attempts: 1, lease_until: expect.any(Date) });
      const leaseEnd = claim!.lease_until!.getTime();
      b.start();
      // Node A's session ends (cut off) before the claim's lease does: node B cannot claim the row while A still sends.
      const first = gate.sessions[0]!;
      await waitFor(() => first.closedAt, "node A's session ended or its lease over", { until: (at) => at !== null || Date.now() > leaseEnd, timeoutMs: leaseEnd - Date.now() + 2000 });
      expect(first.closedAt, "node A's SMTP session ended before its claim's lease").not.toBeNull();
      expect(first.closedAt!).toBeLessThan(leaseEnd);
      await waitFor(() => warnings, 'the failed send logged', { until: (w) => w.length >= 1 });
      expect(warnings.map((w) => [w.msg, w.err?.message])).toEqual([['e-mail digest failed', expect.stringMatching(/^the SMTP exchange did not end within its deadline \(\d+ ms\)$/)]]);
      // Retried (a failed attempt) and mailed by one node, once.
      await smtp.mails.until(() => mailsTo(to).length >= 1, 'the digest mailed on a retry', 10_000);
      await waitFor(() => t.row(), 'the row released after the mail', { until: (r) => r !== undefined && r.lease_until === null && r.due_in > 0 });
      await waitFor(() => gate.state.open, 'every SMTP session closed', { until: (n) => n === 0 });
      expect({ sessions: gate.sessions.length, atOnce: gate.state.maxOpen, mails: mailsTo(to).length }).toEqual({ sessions: 2, atOnce: 1, mails: 1 });
    } finally {
      await Promise.all([a.stop(), b.stop()]);
      await gate.close();
    }
  });

  it("due times are the database's now() plus a delay: a node whose clock is an hour behind does not make rows due at once", async () => {
    const t = await dm();
    await t.send('checked by a slow clock');
    await using w = worker({}, { now: () => Date.now() - 3600_000 });
    // Connected: put off by the delay from the database's now().
    w.presence.online = true;
    const postponed = await w.round(t.tenant);
    expect(postponed!.due_in).toBeGreaterThan(DELAY / 1000 - 30);
    // Away: the digest goes out and the row is next due after the delay, not an hour ago.
    w.presence.online = false;
    const sent = await w.round(t.tenant);
    expect(w.mails.items).toHaveLength(1);
    expect(sent).toBeDefined();
    expect(sent!.due_in).toBeGreaterThan(DELAY / 1000 - 30);
    expect(sent!.due_in).toBeLessThanOrEqual(DELAY / 1000);
  });
});
