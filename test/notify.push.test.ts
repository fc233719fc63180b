/**
 * Web push for people who are away: a local push service decrypts every push (RFC 8291) and checks
 * its VAPID JWT (RFC 8292); presence decides (an open connection on any node: no push), preferences
 * and read state are checked when a push is due, pushes of a room are coalesced, a device its push
 * service forgot (410) is removed.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  actor,
  callerFor,
  claimPushes,
  clientFor,
  createLogger,
  deferred,
  DeviceService,
  decidePush,
  elapse,
  expectTRPCError,
  failPush,
  fileServer,
  finishPush,
  generateVapidKeys,
  getJson,
  makeConfig,
  type PushService,
  pushService,
  quietUntil,
  type Subscription,
  testEnv,
  tokenFor,
  uuid,
  waitFor,
  within,
} from './fixture.js';
import { newCounters } from '../src/metrics.js';
import type { PresenceStore } from '../src/realtime/presence-store.js';
import { Mailer } from '../src/services/notify/digest.js';
import { NotifyWorker } from '../src/services/notify/worker.js';
import { abandonPush, enqueue, holdPush, type PushKind } from '../src/store/notify.js';
import { startLiveKitDouble } from './video-doubles.js';

const vapid = { ...generateVapidKeys(), subject: 'mailto:ops@example.com' };
const COALESCE_MS = 1500;
const OVERRIDES = {
  messageKeys: `k1:${randomBytes(32).toString('base64')}`,
  notify: {
    ...makeConfig().notify,
    vapid,
    allowPrivateUrls: true,
    coalesceMs: COALESCE_MS,
    pollMs: 50,
    retryBaseMs: 50,
    maxAttempts: 5,
    pushTimeoutMs: 2000,
    publicAppUrl: 'https://chat.example.com',
  },
};
const t = fileServer('push', OVERRIDES);

let ps: PushService;
beforeAll(async () => {
  ps = await pushService(vapid.publicKey);
});
afterAll(async () => {
  // Every push of the file was decrypted and its VAPID JWT verified (the service answers them all).
  expect(ps.rejected).toEqual([]);
  await ps.close();
});

/** A tenant of its own per test, with callers and a device helper. */
function tenant() {
  const name = `push-${uuid().slice(0, 8)}`;
  const as = (id: string) => callerFor(t.app, actor(id, name));
  return {
    name,
    as,
    /** Registers a new subscription of the push service for `id`. */
    async device(id: string): Promise<Subscription & { id: string }> {
      const sub = ps.subscribe();
      const d = await as(id).device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: sub.keys, label: 'test browser' });
      return { ...sub, id: d.id };
    },
    /**
     * Once the user's last push is recorded (its coalescing window runs from then, nothing pending),
     * holds the user's push row as another node's claim holds it, so the worker takes nothing of it
     * until the returned release: what a test writes meanwhile is queued, and due when the writes
     * computed, however slow the machine. Without it, a test whose writes take longer than the
     * window sees the worker rightly push the first of them alone.
     */
    async holdPushes(userId: string, roomId?: string): Promise<() => Promise<void>> {
      // The user's row of that room (one row per user and room), or the user's only row.
      const which = roomId === undefined ? 'tenant = $1 and user_id = $2' : 'tenant = $1 and user_id = $2 and room_id = $3';
      const args = roomId === undefined ? [name, userId] : [name, userId, roomId];
      const row = () =>
        t.env.sql<{ pending: number; sent: boolean; leased: boolean }>(
          `select pending, last_sent_at is not null as sent, lease_until is not null as leased from notify_push where ${which}`,
          args,
        );
      await waitFor(row, `the last push to ${userId} recorded`, { until: (r) => r.length === 1 && r[0]!.sent && !r[0]!.leased && r[0]!.pending === 0 });
      const held = await t.env.sql(`update notify_push set lease_until = now() + interval '1 minute' where ${which} and lease_until is null returning 1`, args);
      expect(held).toHaveLength(1);
      return async () => {
        await t.env.sql(`update notify_push set lease_until = null where ${which}`, args);
      };
    },
    /**
     * A room of alice's with `members`, set to `all` by bob (his device `sub`), whose first message
     * ("good morning") bob has been pushed: later pushes of the room wait for its coalescing window.
     */
    async roomBobHears(sub: Subscription, roomName: string, members: string[]) {
      const room = await as('alice').room.create({ kind: 'group', name: roomName, memberIds: members });
      await as('bob').notify.setRoomPreference({ roomId: room.id, level: 'all' });
      await as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'good morning' });
      await waitPushes(sub, 1, 'the first push of the room (level all)');
      return room;
    },
    /** How many items are still queued for `userId` (0 once the worker handled them). */
    async pending(userId: string): Promise<number> {
      const rows = await t.env.sql<{ n: number }>('select coalesce(sum(pending), 0)::int as n from notify_push where tenant = $1 and user_id = $2', [name, userId]);
      return rows[0]!.n;
    },
  };
}

const pushesTo = (sub: Subscription) => ps.received.items.filter((r) => r.device === sub.device);
const waitPushes = (sub: Subscription, n: number, what: string, timeoutMs = 8000) =>
  ps.received.until(() => pushesTo(sub).length >= n, what, timeoutMs).then(() => pushesTo(sub));
/** Waits until nothing is queued for the user, then asserts that no push reached the device. */
async function expectNoPush(tn: ReturnType<typeof tenant>, userId: string, sub: Subscription, before = 0) {
  await waitFor(() => tn.pending(userId), `the queue of ${userId} handled`, { until: (n) => n === 0, timeoutMs: 8000 });
  await elapse(100);
  expect(pushesTo(sub)).toHaveLength(before);
}

describe('device.*', () => {
  it('register, list, remove; the VAPID key; keys and endpoints validated', async () => {
    const tn = tenant();
    const bob = tn.as('bob');
    expect(await bob.device.vapidKey()).toEqual({ publicKey: vapid.publicKey });
    const sub = ps.subscribe();
    const d = await bob.device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: sub.keys, label: 'laptop' });
    expect(d).toMatchObject({ kind: 'webpush', endpoint: sub.endpoint, label: 'laptop', lastPushAt: null });
    // The same endpoint again: the same device (a browser re-subscribing), not a second one.
    const again = await bob.device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: sub.keys });
    expect(again.id).toBe(d.id);
    expect((await bob.device.list()).map((x) => x.id)).toEqual([d.id]);
    expect(await tn.as('carol').device.list()).toEqual([]);
    await expectTRPCError(tn.as('carol').device.remove({ id: d.id }), 'NOT_FOUND', 'device not found');
    await expectTRPCError(bob.device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: { ...sub.keys, p256dh: 'AAAA' } }), 'BAD_REQUEST', /p256dh/);
    await expectTRPCError(bob.device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: { ...sub.keys, auth: 'AAAA' } }), 'BAD_REQUEST', /auth secret/);
    await expectTRPCError(bob.device.register({ kind: 'webpush', endpoint: 'ftp://x', keys: sub.keys }), 'BAD_REQUEST', /https URL/);
    await expectTRPCError(bob.device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: sub.keys, label: '  ' }), 'BAD_REQUEST', /label must not be empty/);
    expect(await bob.device.remove({ id: d.id })).toEqual({ ok: true });
    expect(await bob.device.list()).toEqual([]);
  });

  it("auth.revoke removes the user's push devices (a lost laptop's push endpoint would go on getting message previews); others' stay", async () => {
    const tn = tenant();
    const [laptop, phone, other] = [ps.subscribe(), ps.subscribe(), ps.subscribe()];
    await tn.as('bob').device.register({ kind: 'webpush', endpoint: laptop.endpoint, keys: laptop.keys, label: 'laptop' });
    await tn.as('bob').device.register({ kind: 'webpush', endpoint: phone.endpoint, keys: phone.keys, label: 'phone' });
    const carols = await tn.as('carol').device.register({ kind: 'webpush', endpoint: other.endpoint, keys: other.keys });
    await callerFor(t.app, actor('root', tn.name, ['admin'])).auth.revoke({ userId: 'bob' });
    expect(await tn.as('bob').device.list()).toEqual([]);
    expect((await tn.as('carol').device.list()).map((d) => d.id)).toEqual([carols.id]);
  });

  it('a p256dh of the right shape (65 bytes, 0x04 first) that is no point of P-256 is refused with BAD_REQUEST; nothing is stored', async () => {
    const tn = tenant();
    const bob = tn.as('bob');
    const sub = ps.subscribe();
    const key = Buffer.from(sub.keys.p256dh, 'base64url');
    const offCurve = Buffer.from(key);
    offCurve[64]! ^= 1; // y changed: (x, y) no longer solves the curve's equation
    const zeros = Buffer.alloc(65);
    zeros[0] = 0x04;
    const beyondField = Buffer.alloc(65, 0xff); // coordinates of at least the field's prime
    beyondField[0] = 0x04;
    for (const bad of [offCurve, zeros, beyondField]) {
      await expectTRPCError(
        bob.device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: { ...sub.keys, p256dh: bad.toString('base64url') } }),
        'BAD_REQUEST',
        'keys.p256dh must be the base64url P-256 public key of the subscription (65 bytes)',
      );
    }
    expect(await bob.device.list()).toEqual([]);
    // The subscription's own key is one.
    expect(await bob.device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: sub.keys })).toMatchObject({ endpoint: sub.endpoint });
  });

  it('at most 20 devices per user: the 21st is refused with PRECONDITION_FAILED, re-registering one of them still works', async () => {
    const tn = tenant();
    const subs = [];
    for (let i = 0; i < 20; i++) subs.push(await tn.device('bob'));
    const extra = ps.subscribe();
    await expectTRPCError(
      tn.as('bob').device.register({ kind: 'webpush', endpoint: extra.endpoint, keys: extra.keys }),
      'PRECONDITION_FAILED',
      'a user has at most 20 push devices: remove one first',
    );
    const again = await tn.as('bob').device.register({ kind: 'webpush', endpoint: subs[0]!.endpoint, keys: subs[0]!.keys, label: 'renamed' });
    expect(again).toMatchObject({ id: subs[0]!.id, label: 'renamed' });
    expect(await tn.as('bob').device.list()).toHaveLength(20);
  });

  it('at most 20 devices per user, also when registrations run concurrently; re-registering one of them at the cap still works', async () => {
    const tn = tenant();
    const bob = tn.as('bob');
    const subs = Array.from({ length: 40 }, () => ps.subscribe());
    const results = await Promise.allSettled(subs.map((s) => bob.device.register({ kind: 'webpush', endpoint: s.endpoint, keys: s.keys })));
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as { code?: string; message?: string });
    expect(refused.map((e) => [e.code, e.message])).toEqual(Array(20).fill(['PRECONDITION_FAILED', 'a user has at most 20 push devices: remove one first']));
    const mine = await bob.device.list();
    expect(mine).toHaveLength(20);
    // At the cap, concurrently: the registered ones again (the same devices) and new ones (refused).
    const registered = subs.filter((s) => mine.some((d) => d.endpoint === s.endpoint));
    const fresh = Array.from({ length: 5 }, () => ps.subscribe());
    const again = await Promise.allSettled([...registered, ...fresh].map((s) => bob.device.register({ kind: 'webpush', endpoint: s.endpoint, keys: s.keys, label: 'again' })));
    expect(again.slice(0, 20).map((r) => r.status === 'fulfilled' && r.value.label)).toEqual(Array(20).fill('again'));
    expect(again.slice(20).map((r) => r.status === 'rejected' && (r.reason as { code?: string }).code)).toEqual(Array(5).fill('PRECONDITION_FAILED'));
    expect((await bob.device.list()).map((d) => d.id).sort()).toEqual(mine.map((d) => d.id).sort());
  });

  it('without PUSH_ALLOW_PRIVATE_URLS an endpoint must be https and public (the webhooks SSRF guard)', async () => {
    const strict = new DeviceService(t.app.services.store, { ...t.config.notify, allowPrivateUrls: false });
    const keys = ps.subscribe().keys;
    const who = actor('dave', `strict-${uuid().slice(0, 8)}`);
    await expect(strict.register(who, { kind: 'webpush', endpoint: 'http://push.example.com/x', keys })).rejects.toMatchObject({
      code: 'BAD_REQUEST',
      message: 'endpoint refused: a push endpoint must be an https URL',
    });
    await expect(strict.register(who, { kind: 'webpush', endpoint: 'https://127.0.0.1:9/x', keys })).rejects.toMatchObject({
      code: 'BAD_REQUEST',
      message: expect.stringMatching(/127\.0\.0\.1.*non-public/),
    });
  });
});


/**
 * A database of its own whose worker's claims hang on their presence read until `release()`
 * (`reading` resolves when the first one is there), with a clock the test moves: a node whose
 * reads before a push outlast its deadline. carol has a push device; `as` acts in `tenant`.
 */
async function heldClaim(db: string, prefix: string) {
  const env = await testEnv(db);
  const srv = await env.startServer(OVERRIDES);
  await srv.app.services.notifyWorker.stop();
  const tenant = `${prefix}-${uuid().slice(0, 8)}`;
  const as = (id: string) => callerFor(srv.app, actor(id, tenant));
  const sub = ps.subscribe();
  await as('carol').device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: sub.keys });
  const reading = deferred<void>();
  const gate = deferred<void>();
  const slow = {
    count: async () => {
      reading.resolve();
      await gate.promise;
      return 0;
    },
    get: async (_t: string, ids: string[]) => ids.map((userId) => ({ userId, status: 'offline', lastSeenAt: null })),
  } as unknown as PresenceStore;
  const notify = { ...OVERRIDES.notify, pushTimeoutMs: 2000, pollMs: 600_000 };
  const warnings: { msg: string }[] = [];
  const log = createLogger('warn', false, { write: (line: string) => warnings.push(JSON.parse(line) as { msg: string }) });
  const held = {
    env,
    tenant,
    as,
    sub,
    notify,
    warnings,
    clock: Date.now(),
    reading: reading.promise,
    /** Lets every claim's presence read through, the one held and all after it. */
    release: () => gate.resolve(),
    w: null as unknown as NotifyWorker,
    /** The server's database, for claims made as another node's worker makes them. */
    db: srv.app.services.store.db(),
    async [Symbol.asyncDispose]() {
      gate.resolve();
      await held.w.stop();
      await env[Symbol.asyncDispose]();
    },
  };
  held.w = new NotifyWorker(srv.app.services.store, slow, notify, null, log, newCounters(), { now: () => held.clock });
  return held;
}

describe('who gets a push', () => {
  it('an offline user gets an encrypted, VAPID-signed push for a mention: { type, roomId, messageId, title, body, url }, TTL and urgency set', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Ops', memberIds: ['bob'] });
    const m = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'hey @bob, the deploy is done', mentions: ['bob'] });
    const [p] = await waitPushes(sub, 1, 'the mention push');
    expect(p!.payload).toEqual({
      type: 'mention',
      roomId: room.id,
      messageId: m.id,
      title: 'alice mentioned you in Ops',
      body: 'hey @bob, the deploy is done',
      url: `https://chat.example.com/#/room/${room.id}`,
      count: 1,
    });
    expect(p!.ttl).toBe(86_400);
    expect(p!.urgency).toBe('high');
    expect(p!.jwt.aud).toBe(ps.origin);
    expect(p!.jwt.sub).toBe('mailto:ops@example.com');
    expect(ps.rejected).toEqual([]);
    await waitFor(() => tn.as('bob').device.list(), 'lastPushAt set', { until: (l) => l[0]?.lastPushAt instanceof Date });
  });

  it('queued in the statement that writes the message: the queue row exists when the send returns (a crash cannot lose it)', async () => {
    const tn = tenant();
    await tn.device('bob');
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    const m = await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'durable' });
    const rows = await t.env.sql<{ message_id: string; kind: string }>('select message_id, kind from notify_push where tenant = $1 and user_id = $2', [tn.name, 'bob']);
    expect(rows).toEqual([{ message_id: m.id, kind: 'direct' }]);
    // A user without a device gets no row at all.
    const dm2 = await tn.as('alice').room.openDirect({ userId: 'carol' });
    await tn.as('alice').chat.send({ roomId: dm2.id, clientId: uuid(), body: 'nobody listens' });
    expect(await t.env.sql('select 1 from notify_push where tenant = $1 and user_id = $2', [tn.name, 'carol'])).toEqual([]);
  });

  it('a direct message, a reply in a thread I wrote in and an inbox.notify reach me; a plain group message does not (level mentions)', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'lunch?' });
    const [direct] = await waitPushes(sub, 1, 'the direct message push');
    expect(direct!.payload).toMatchObject({ type: 'direct', roomId: dm.id, title: 'alice', body: 'lunch?', count: 1 });

    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Design', memberIds: ['bob', 'carol'] });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'plain news' });
    await expectNoPush(tn, 'bob', sub, 1);
    const root = await tn.as('bob').chat.send({ roomId: room.id, clientId: uuid(), body: 'a question' });
    await tn.as('carol').chat.send({ roomId: room.id, clientId: uuid(), body: 'an answer', replyToId: root.id });
    const got = await waitPushes(sub, 2, 'the reply push');
    expect(got[1]!.payload).toMatchObject({ type: 'reply', roomId: room.id, title: 'carol replied in Design', body: 'an answer' });

    await callerFor(t.app, actor('svc', tn.name, ['service'])).inbox.notify({ userId: 'bob', kind: 'billing', title: 'Invoice ready' });
    const all = await waitPushes(sub, 3, 'the notification push');
    expect(all[2]!.payload).toMatchObject({ type: 'notification', roomId: null, title: 'Invoice ready', url: 'https://chat.example.com/' });
    expect(all[2]!.urgency).toBe('normal');
  });

  it("a service's system message pushes nobody (a direct room, a room set to all), as the server's own notices: the next message is the first push", async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const svc = callerFor(t.app, actor('svc', tn.name, ['service']));
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Orders', memberIds: ['bob'] });
    await tn.as('bob').notify.setRoomPreference({ roomId: room.id, level: 'all' });
    // Plain system messages go out in the grouped send statement, as plain text does.
    await svc.chat.send({ roomId: dm.id, clientId: uuid(), kind: 'system', body: 'order 4711 was paid' });
    await svc.chat.send({ roomId: room.id, clientId: uuid(), kind: 'system', body: 'order 4712 was paid' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'thanks!' });
    const [first] = await waitPushes(sub, 1, 'the push of the direct message');
    expect(first!.payload).toMatchObject({ type: 'direct', roomId: dm.id, body: 'thanks!', count: 1 });
    await expectNoPush(tn, 'bob', sub, 1);
  });

  it('one item per person and message, the most personal kind: a reply in a direct room is direct; a mention in a room set to all is a mention; a reply there reaches a member who set all', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    const root = await tn.as('bob').chat.send({ roomId: dm.id, clientId: uuid(), body: 'a root of mine' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'in the thread', replyToId: root.id });
    const [direct] = await waitPushes(sub, 1, 'the push of the reply in the direct room');
    expect(direct!.payload).toMatchObject({ type: 'direct', roomId: dm.id, body: 'in the thread', count: 1 });

    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Loud', memberIds: ['bob'] });
    await tn.as('bob').notify.setRoomPreference({ roomId: room.id, level: 'all' });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob and everyone', mentions: ['bob'] });
    const got = await waitPushes(sub, 2, 'the push of the mention in a room set to all');
    expect(got[1]!.payload).toMatchObject({ type: 'mention', roomId: room.id, body: '@bob and everyone', count: 1 });
    // A reply in a thread bob never wrote in reaches him because the room is set to all: folded with
    // its root into the next push of the room, after the window (the row held while both are written,
    // so that they are queued together however slow the writes).
    const release = await tn.holdPushes('bob', room.id);
    const root2 = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'a thread of mine' });
    const reply2 = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'and its reply', replyToId: root2.id });
    await release();
    const all = await waitPushes(sub, 3, 'the push of the thread in a room set to all');
    expect(all[2]!.payload).toMatchObject({ type: 'message', roomId: room.id, messageId: reply2.id, body: '2 new messages in Loud', count: 2 });
    await expectNoPush(tn, 'bob', sub, 3);
  });

  it('a meeting invite (video.create, on a server with a LiveKit double) pushes to each other member with the meeting link', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    await using lk = await startLiveKitDouble();
    await using videoSrv = await t.env.startServer({
      ...OVERRIDES,
      video: { ...t.config.video, provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret } },
    });
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Standup', memberIds: ['bob'] });
    const meeting = await callerFor(videoSrv.app, actor('alice', tn.name)).video.create({ roomId: room.id, title: 'Daily' });
    const [p] = await waitPushes(sub, 1, 'the invite push');
    expect(p!.payload).toMatchObject({ type: 'meeting.invite', roomId: room.id, title: 'alice invites you to a meeting in Standup', body: 'Daily', url: meeting.url });
    expect(p!.urgency).toBe('high');
  });

  it('a user with an open connection (here on another node) gets nothing; after closing it, the next message pushes', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    {
      await using other = await t.env.startServer(OVERRIDES);
      await using bobWs = clientFor(other.url, 'bob', { tenant: tn.name, ws: true });
      await bobWs.trpc.auth.me.query();
      await waitFor(() => tn.as('alice').presence.get({ userIds: ['bob'] }), 'bob online', { until: (s) => s[0]?.status === 'online' });
      await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'you are here' });
      await expectNoPush(tn, 'bob', sub);
    }
    await waitFor(() => tn.as('alice').presence.get({ userIds: ['bob'] }), 'bob offline', { until: (s) => s[0]?.status === 'offline' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'and now you are gone' });
    const [p] = await waitPushes(sub, 1, 'the push once away');
    expect(p!.payload.body).toBe('and now you are gone');
  });

  it('levels: none silences mentions, all pushes every message; a muted room sends nothing until its time', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Noisy', memberIds: ['bob'] });
    await tn.as('bob').notify.setRoomPreference({ roomId: room.id, level: 'none' });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob ping', mentions: ['bob'] });
    await expectNoPush(tn, 'bob', sub);

    await tn.as('bob').notify.setRoomPreference({ roomId: room.id, level: 'all' });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'everyone: cake' });
    const [p] = await waitPushes(sub, 1, 'the level-all push');
    expect(p!.payload).toMatchObject({ type: 'message', title: 'Noisy', body: 'alice: cake'.replace('alice: ', 'alice: everyone: ') });

    const until = new Date(Date.now() + 3600_000);
    const set = await tn.as('bob').notify.setRoomPreference({ roomId: room.id, level: 'all', muteUntil: until });
    expect(set).toEqual({ roomId: room.id, level: 'all', muteUntil: until });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob muted?', mentions: ['bob'] });
    await expectNoPush(tn, 'bob', sub, 1);
    const prefs = await tn.as('bob').notify.preferences();
    expect(prefs).toEqual({ email: 'digest', push: true, quietHours: null, rooms: [{ roomId: room.id, level: 'all', muteUntil: until }] });
    // A level alone (no muteUntil) unmutes, as documented.
    expect(await tn.as('bob').notify.setRoomPreference({ roomId: room.id, level: 'mentions' })).toEqual({ roomId: room.id, level: 'mentions', muteUntil: null });
    expect((await tn.as('bob').notify.preferences()).rooms).toEqual([{ roomId: room.id, level: 'mentions', muteUntil: null }]);
    await expectTRPCError(tn.as('mallory').notify.setRoomPreference({ roomId: room.id, level: 'all' }), 'NOT_FOUND');
  });

  it('a mute ends at its time: nothing before, pushes again after', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Short mute', memberIds: ['bob'] });
    // An hour's mute, ended below by moving its time to now: a short real mute would make the test
    // depend on how fast a loaded machine gets the send and its push handled within it.
    const muteUntil = new Date(Date.now() + 3600_000);
    expect(await tn.as('bob').notify.setRoomPreference({ roomId: room.id, level: 'mentions', muteUntil })).toMatchObject({ muteUntil });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob during the mute', mentions: ['bob'] });
    await expectNoPush(tn, 'bob', sub);
    await t.env.sql('update notify_room_preference set mute_until = now() where tenant = $1 and room_id = $2', [tn.name, room.id]);
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob after the mute', mentions: ['bob'] });
    const [p] = await waitPushes(sub, 1, 'the push after the mute');
    expect(p!.payload.body).toBe('@bob after the mute');
  });

  it('quiet hours hold pushes until they end; push: false sends none', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const now = new Date();
    const hhmm = (d: Date) => d.toISOString().slice(11, 16);
    const quietHours = { start: hhmm(new Date(now.getTime() - 3600_000)), end: hhmm(new Date(now.getTime() + 7200_000)), timeZone: 'UTC' };
    await tn.as('bob').notify.setPreferences({ quietHours });
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'late night' });
    const [held] = await waitFor(
      () => t.env.sql<{ due_at: Date; pending: number }>('select due_at, pending from notify_push where tenant = $1 and user_id = $2', [tn.name, 'bob']),
      'the push held',
      { until: (r) => r.length === 1 && r[0]!.due_at.getTime() > Date.now() + 3600_000 },
    );
    expect(held!.pending).toBe(1);
    expect(hhmm(held!.due_at)).toBe(quietHours.end);
    expect(pushesTo(sub)).toEqual([]);
    await expectTRPCError(tn.as('bob').notify.setPreferences({ quietHours: { ...quietHours, timeZone: 'Mars/Olympus' } }), 'BAD_REQUEST', /IANA time zone/);
    await expectTRPCError(tn.as('bob').notify.setPreferences({ quietHours: { ...quietHours, start: '25:00' } }), 'BAD_REQUEST', /HH:MM/);
    await expectTRPCError(tn.as('bob').notify.setPreferences({ quietHours: { ...quietHours, timeZone: '' } }), 'BAD_REQUEST', /quietHours.timeZone is required/);

    // The hours end (moved here to now): the held push goes out, once.
    await tn.as('bob').notify.setPreferences({ quietHours: null });
    await t.env.sql('update notify_push set due_at = now() where tenant = $1', [tn.name]);
    const [released] = await waitPushes(sub, 1, 'the held push after the quiet hours');
    expect(released!.payload).toMatchObject({ type: 'direct', body: 'late night', count: 1 });

    const tn2 = tenant();
    const sub2 = await tn2.device('bob');
    await tn2.as('bob').notify.setPreferences({ push: false });
    const dm2 = await tn2.as('alice').room.openDirect({ userId: 'bob' });
    await tn2.as('alice').chat.send({ roomId: dm2.id, clientId: uuid(), body: 'off' });
    await expectNoPush(tn2, 'bob', sub2);
  });

  it('one push per room per NOTIFY_COALESCE_MS: the first at once, the next two folded into one with a count of 2 after the window', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'one' });
    const [first] = await waitPushes(sub, 1, 'the first push');
    // 'two' and 'three' are written while the row is held: the worker cannot take 'two' alone
    // however long the two writes take on a busy machine (after the window it would, rightly).
    const release = await tn.holdPushes('bob');
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'two' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'three' });
    await release();
    // The second push is the folded one, and it went out after the window (a push of its own for
    // 'two' would be the second, with count 1, before the window's end).
    const got = await waitPushes(sub, 2, 'the coalesced push');
    expect(got[1]!.payload).toMatchObject({ type: 'direct', count: 2, body: '2 new messages' });
    expect(got[1]!.at - first!.at).toBeGreaterThanOrEqual(COALESCE_MS - 100);
    await elapse(300);
    expect(pushesTo(sub)).toHaveLength(2);
  });

  it('a message read before its push is due sends nothing (the window holds it, the read drops it)', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'first' });
    await waitPushes(sub, 1, 'the first push');
    // Held while 'second' is written and read, so a slow machine cannot let its window pass first.
    const release = await tn.holdPushes('bob');
    const m = await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'second' });
    await tn.as('bob').receipt.markRead({ roomId: dm.id, seq: m.seq });
    await release();
    await expectNoPush(tn, 'bob', sub, 1);
  });

  it('a push counts only what is still unread: read past some of its messages, it tells of the rest (one left: that message itself)', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    const say = (body: string) => tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body });
    await say('one');
    await waitPushes(sub, 1, 'the first push');
    // Four messages folded into one row (held while they are written and partly read): two read.
    const release = await tn.holdPushes('bob');
    await say('two');
    const three = await say('three');
    await say('four');
    await say('five');
    await tn.as('bob').receipt.markRead({ roomId: dm.id, seq: three.seq });
    await release();
    const got = await waitPushes(sub, 2, 'the push of the two unread');
    expect(got[1]!.payload).toMatchObject({ type: 'direct', title: 'alice', body: '2 new messages', count: 2 });
    // Two more, the first read: the push is the other one's, as a push of it alone.
    const again = await tn.holdPushes('bob');
    const six = await say('six');
    const seven = await say('seven');
    await tn.as('bob').receipt.markRead({ roomId: dm.id, seq: six.seq });
    await again();
    const all = await waitPushes(sub, 3, 'the push of the one unread');
    expect(all[2]!.payload).toEqual({
      type: 'direct',
      roomId: dm.id,
      messageId: seven.id,
      title: 'alice',
      body: 'seven',
      url: `https://chat.example.com/#/room/${dm.id}`,
      count: 1,
    });
    await expectNoPush(tn, 'bob', sub, 3);
  });

  it('a mention read before its push, folded with messages that are not: the push is of their kind (at level all a message, at level mentions a reply), not a mention', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const room = await tn.roomBobHears(sub, 'Ops', ['bob', 'carol']);
    const release = await tn.holdPushes('bob', room.id);
    const mention = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob need you', mentions: ['bob'] });
    await tn.as('carol').chat.send({ roomId: room.id, clientId: uuid(), body: 'looking at the graphs' });
    await tn.as('bob').receipt.markRead({ roomId: room.id, seq: mention.seq });
    await release();
    const got = await waitPushes(sub, 2, 'the push of the unread message');
    expect(got[1]!.payload).toMatchObject({ type: 'message', title: 'Ops', body: 'carol: looking at the graphs', count: 1 });
    expect(got[1]!.urgency).toBe('normal');

    // At level mentions: a mention (read) and a reply in bob's thread (not read).
    await tn.as('bob').notify.setRoomPreference({ roomId: room.id, level: 'mentions' });
    const root = await tn.as('bob').chat.send({ roomId: room.id, clientId: uuid(), body: 'a question' });
    const again = await tn.holdPushes('bob', room.id);
    const mention2 = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob once more', mentions: ['bob'] });
    await tn.as('carol').chat.send({ roomId: room.id, clientId: uuid(), body: 'an answer', replyToId: root.id });
    await tn.as('bob').receipt.markRead({ roomId: room.id, seq: mention2.seq });
    await again();
    const all = await waitPushes(sub, 3, 'the push of the unread reply');
    expect(all[2]!.payload).toMatchObject({ type: 'reply', title: 'carol replied in Ops', body: 'an answer', count: 1 });
    expect(all[2]!.urgency).toBe('high');
    await expectNoPush(tn, 'bob', sub, 3);
  });

  it('a meeting invite that came after the last read counts among what is unread (it has no message to read past)', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const room = await tn.roomBobHears(sub, 'Standup', ['bob']);
    const release = await tn.holdPushes('bob', room.id);
    const read = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'read by bob' });
    await tn.as('bob').receipt.markRead({ roomId: room.id, seq: read.seq });
    // A meeting and its invite, as video.create writes them (after bob's read), then a message.
    const meetingUrl = 'https://meet.example.com/daily';
    await t.env.sql(
      `insert into meeting (id, tenant, room_id, created_by, title, provider, url, status, created_at, expires_at)
       values ($1, $2, $3, 'alice', 'Daily', 'livekit', $4, 'scheduled', now(), now() + interval '1 hour')`,
      [uuid(), tn.name, room.id, meetingUrl],
    );
    await enqueue(
      t.app.services.store.db(),
      [{ tenant: tn.name, userId: 'bob', roomId: room.id, kind: 'meeting.invite', messageId: null, messageSeq: null, fromUser: 'alice', title: 'Daily', url: meetingUrl }],
      { push: true, digest: false, coalesceMs: COALESCE_MS, digestDelayMs: 0 },
    );
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'join please' });
    await release();
    const got = await waitPushes(sub, 2, 'the push of the invite and the unread message');
    expect(got[1]!.payload).toMatchObject({ type: 'meeting.invite', title: 'You are invited to a meeting in Standup', body: '2 new notifications in Standup', count: 2 });
    await expectNoPush(tn, 'bob', sub, 2);
  });

  it('a mention folded with later messages keeps its row a mention: told at level mentions, urgent, titled as a mention without naming the last sender', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const room = await tn.roomBobHears(sub, 'Ops', ['bob', 'carol']);
    // Within the coalescing window (held, so the mention cannot be pushed alone first): a mention of
    // bob, then a plain message (the grouped send's upsert) and one that mentions carol only (the
    // transaction's upsert), each of which bob is told about as a plain message of a room set to all.
    const release = await tn.holdPushes('bob', room.id);
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob the database is down, need you', mentions: ['bob'] });
    await tn.as('carol').chat.send({ roomId: room.id, clientId: uuid(), body: 'looking at the graphs meanwhile' });
    await tn.as('carol').chat.send({ roomId: room.id, clientId: uuid(), body: '@carol note to self', mentions: ['carol'] });
    // Too noisy: bob keeps only his mentions (and replies, invites) for this room.
    await tn.as('bob').notify.setRoomPreference({ roomId: room.id, level: 'mentions' });
    await release();
    await waitFor(() => tn.pending('bob'), 'the queue of bob handled', { until: (n) => n === 0, timeoutMs: 8000 });
    const got = pushesTo(sub);
    expect(got.map((p) => p.payload.type)).toEqual(['message', 'mention']);
    // The newest item is carol's, who mentioned nobody: the title names no sender.
    expect(got[1]!.payload).toMatchObject({ type: 'mention', roomId: room.id, title: 'You were mentioned in Ops', body: '3 new notifications in Ops', count: 3 });
    expect(got[1]!.urgency).toBe('high');
  });

  it('a message deleted before its push is due is not pushed; deleted among others, the push counts it and shows no "(deleted)"', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Design', memberIds: ['bob'] });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob first', mentions: ['bob'] });
    await waitPushes(sub, 1, 'the first mention push');
    const release = await tn.holdPushes('bob', room.id);
    const oops = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob (meant someone else)', mentions: ['bob'] });
    await tn.as('alice').chat.delete({ messageId: oops.id });
    await release();
    await waitFor(() => tn.pending('bob'), 'the queue of bob handled', { until: (n) => n === 0, timeoutMs: 8000 });
    expect(pushesTo(sub)).toHaveLength(1);

    const again = await tn.holdPushes('bob', room.id);
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob second', mentions: ['bob'] });
    const third = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob third', mentions: ['bob'] });
    await tn.as('alice').chat.delete({ messageId: third.id });
    await again();
    const got = await waitPushes(sub, 2, 'the push of the two mentions');
    expect(got[1]!.payload).toMatchObject({ type: 'mention', title: 'You were mentioned in Design', body: '2 new notifications in Design', count: 2 });
    expect(JSON.stringify(got[1]!.payload)).not.toContain('(deleted)');
  });

  it('room and sender names are one line in a push: line breaks and control characters stored in them (before names were checked) become single spaces', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    await t.app.services.users.touch({ ...actor('alice', tn.name), name: 'Alice\r\n\tSmith' });
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Ops', memberIds: ['bob'] });
    await t.env.sql('update room set name = $2 where tenant = $1 and id = $3', [tn.name, 'Ops\r\n\r\nSECURITY NOTICE\u0085sign in again\u2028', room.id]);
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob look', mentions: ['bob'] });
    const [p] = await waitPushes(sub, 1, 'the mention push');
    expect(p!.payload).toMatchObject({ type: 'mention', title: 'Alice Smith mentioned you in Ops SECURITY NOTICE sign in again', body: '@bob look' });
  });

  it('encrypted rooms: the push says "New message in <room>", never the body', async () => {
    const tn = tenant();
    const sub = await tn.device('bob');
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Vault', memberIds: ['bob'], encrypted: true });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'the password is swordfish', mentions: ['bob'] });
    const [p] = await waitPushes(sub, 1, 'the encrypted room push');
    expect(p!.payload.body).toBe('New message in Vault');
    expect(JSON.stringify(p!.payload)).not.toContain('swordfish');
  });

  it('a device whose push service answers 404 or 410 is removed; 503 is retried with backoff', async () => {
    const tn = tenant();
    const gone = await tn.device('bob');
    const unknown = await tn.device('bob');
    const flaky = await tn.device('bob');
    await ps.answer({ byDevice: { [gone.device]: [410], [unknown.device]: [404], [flaky.device]: [503, 503] } });
    try {
      const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
      await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'anyone?' });
      await ps.received.until(() => pushesTo(flaky).some((r) => r.status === 201), 'the flaky device accepts after retries', 8000);
      expect(pushesTo(flaky).map((r) => r.status)).toEqual([503, 503, 201]);
      // Each forgotten device was tried once, then removed (not retried with the flaky one).
      expect(pushesTo(gone).map((r) => r.status)).toEqual([410]);
      expect(pushesTo(unknown).map((r) => r.status)).toEqual([404]);
      expect((await tn.as('bob').device.list()).map((d) => d.id)).toEqual([flaky.id]);
    } finally {
      await ps.answer({});
    }
  });

  it('a node whose lease ran out before it recorded its push cannot drop the items queued after another node pushed the row', async () => {
    // A database of its own with its worker stopped: the claims are made here, as several nodes would.
    await using env = await testEnv('pushlease');
    const srv = await env.startServer();
    await srv.app.services.notifyWorker.stop();
    const db = srv.app.services.store.db();
    // Queues `n` items as a send does (an idle row starts over: attempts 0).
    const queue = (n: number) =>
      env.sql(
        `insert into notify_push (tenant, user_id, room_key, pending, kind, due_at, attempts, updated_at)
         values ('lease', 'bob', 'r1', $1, 'direct', now(), 0, now())
         on conflict (tenant, user_id, room_key) do update set pending = notify_push.pending + excluded.pending, due_at = now(),
           attempts = case when notify_push.pending > 0 then notify_push.attempts else 0 end`,
        [n],
      );
    const row = async () => (await env.sql<{ pending: number; lease_until: Date | null }>("select pending, lease_until from notify_push where tenant = 'lease'"))[0];

    await queue(1);
    const [a] = await claimPushes(db, 10, 60_000); // node A
    expect(a).toMatchObject({ pending: 1, attempts: 1 });
    expect(await claimPushes(db, 10, 60_000)).toEqual([]); // A's lease holds it
    // A is held up until its lease has run out: node B claims the row, pushes it, records it.
    await env.sql("update notify_push set lease_until = now() - interval '1 second' where tenant = 'lease'");
    const [b] = await claimPushes(db, 10, 60_000);
    expect(b).toMatchObject({ pending: 1, attempts: 2 });
    expect(await finishPush(db, b!, b!.pending, true, 0)).toBe(true);
    await queue(2); // two new messages after B's push

    // A's push then ends (sent, dropped or failed): nothing is written, the two new items stay queued.
    expect(await finishPush(db, a!, a!.pending, true, 0)).toBe(false);
    expect(await failPush(db, a!, a!.pending, null, 'gave up')).toBe(false);
    expect(await failPush(db, a!, a!.pending, 100, 'retry')).toBe(false);
    expect(await row()).toEqual({ pending: 2, lease_until: null });
    // Claimed again (C), the row has attempts 1 as A's claim had: A's outcome is still not written, C's is.
    const [c] = await claimPushes(db, 10, 60_000);
    expect(c).toMatchObject({ pending: 2, attempts: 1 });
    expect(await finishPush(db, a!, a!.pending, true, 0)).toBe(false);
    expect(await row()).toEqual({ pending: 2, lease_until: c!.lease_until });
    expect(await finishPush(db, c!, c!.pending, true, 0)).toBe(true);
    expect(await row()).toEqual({ pending: 0, lease_until: null });
  });
  it('a row keeps the most personal kind of its items; items queued while its push is in flight keep theirs when it is sent, and a held or retried claim keeps its own', async () => {
    // A database of its own with its worker stopped: the claims are made here, as a node's worker makes them.
    await using env = await testEnv('pushkind');
    const srv = await env.startServer();
    await srv.app.services.notifyWorker.stop();
    const db = srv.app.services.store.db();
    await env.sql(
      `insert into push_device (id, tenant, user_id, kind, endpoint, p256dh, auth, created_at) values ($1, 'kind', 'bob', 'webpush', 'https://push.example/kind', 'k', 'a', now())`,
      [uuid()],
    );
    const roomId = uuid();
    const queue = (...kinds: PushKind[]) =>
      enqueue(
        db,
        kinds.map((kind) => ({ tenant: 'kind', userId: 'bob', roomId, kind, messageId: null, messageSeq: null, fromUser: 'alice', title: null, url: null })),
        { push: true, digest: false, coalesceMs: 0, digestDelayMs: 0 },
      );
    const row = async () => (await env.sql<{ pending: number; kind: string }>("select pending, kind from notify_push where tenant = 'kind'"))[0];

    // In one transaction, then one more: a mention followed by chatter stays a mention.
    await queue('mention', 'message');
    await queue('message');
    expect(await row()).toEqual({ pending: 3, kind: 'mention' });
    // Claimed: what comes while its push is in flight is not the claim's mention. Sent, the three
    // are done; what remains is a reply and two messages.
    const [a] = await claimPushes(db, 10, 60_000);
    expect(a).toMatchObject({ pending: 3, kind: 'mention' });
    await queue('message');
    await queue('reply');
    await queue('message');
    expect(await finishPush(db, a!, a!.pending, true, 0)).toBe(true);
    expect(await row()).toEqual({ pending: 3, kind: 'reply' });
    // A claim held (quiet hours) keeps its items, and their kind with the one that came meanwhile.
    const [b] = await claimPushes(db, 10, 60_000);
    await queue('message');
    expect(await holdPush(db, b!, 0)).toBe(true);
    expect(await row()).toEqual({ pending: 4, kind: 'reply' });
    // A claim retried likewise; a more personal item that came meanwhile is kept.
    const [c] = await claimPushes(db, 10, 60_000);
    await queue('mention');
    expect(await failPush(db, c!, c!.pending, 0, 'retry')).toBe(true);
    expect(await row()).toEqual({ pending: 5, kind: 'mention' });
    // An idle row takes the new item's kind.
    const [d] = await claimPushes(db, 10, 60_000);
    expect(await finishPush(db, d!, d!.pending, true, 0)).toBe(true);
    await queue('message');
    expect(await row()).toEqual({ pending: 1, kind: 'message' });
  });

  it("quiet hours are held from the database's now(): a node whose clock is an hour behind does not claim the row again and again", async () => {
    // A database of its own; the push row is written as a send writes it, and handled by a worker whose clock is an hour behind.
    await using env = await testEnv('pushclock');
    const srv = await env.startServer();
    await srv.app.services.notifyWorker.stop();
    const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);
    const real = Date.now();
    // By the node's clock (an hour ago) the user's quiet hours last another half hour; by the database's, they ended half an hour ago.
    await env.sql(
      `insert into notify_preference (tenant, user_id, email, push, quiet_start, quiet_end, quiet_time_zone, updated_at) values ('clock', 'bob', 'digest', true, $1, $2, 'UTC', now())`,
      [hhmm(real - 2 * 3600_000), hhmm(real - 1800_000)],
    );
    await env.sql(
      `insert into notify_push (tenant, user_id, room_key, pending, kind, title, due_at, attempts, updated_at) values ('clock', 'bob', '-', 1, 'notification', 'Invoice ready', now(), 0, now())`,
    );
    const offline = { count: async () => 0, get: async () => [] } as unknown as PresenceStore;
    const notify = { ...OVERRIDES.notify, pollMs: 600_000 };
    const w = new NotifyWorker(srv.app.services.store, offline, notify, null, createLogger('silent'), newCounters(), { now: () => Date.now() - 3600_000 });
    w.start();
    try {
      const [held] = await waitFor(
        () => env.sql<{ due_in: number }>("select extract(epoch from due_at - now())::float8 as due_in from notify_push where tenant = 'clock' and lease_until is null and attempts = 0 and last_sent_at is null and due_at <> updated_at"),
        'the push held',
        { until: (r) => r.length === 1 },
      );
      // Held for the half hour the node counts (to the minute), from the database's now(): not due again at once.
      expect(held!.due_in).toBeGreaterThan(28 * 60);
      expect(held!.due_in).toBeLessThanOrEqual(30 * 60);
    } finally {
      await w.stop();
    }
  });

  it('a push whose reads before the request outlast its deadline (PUSH_TIMEOUT_MS from the claim) is not sent by that claim: left to its lease, then sent once', async () => {
    // The presence read before the push is held (a slow Redis, a stalled node) while this node's clock
    // passes the deadline.
    await using held = await heldClaim('pushdeadline', 'late');
    const { env, tenant, as, sub, w, warnings, notify } = held;
    w.start();
    const toCarol = await as('alice').room.openDirect({ userId: 'carol' });
    await as('alice').chat.send({ roomId: toCarol.id, clientId: uuid(), body: 'late' });
    w.wake();
    await within(held.reading, 8000, 'the push being prepared');
    held.clock += notify.pushTimeoutMs + 1;
    held.release();
    await waitFor(() => warnings.map((x) => x.msg), 'the push given up by this claim', {
      until: (msgs) => msgs.includes('push not sent: its deadline passed before the request (retried after the lease)'),
    });
    expect(ps.received.items.filter((r) => r.device === sub.device)).toEqual([]);
    const [row] = await env.sql<{ leased: boolean }>('select lease_until > now() as leased from notify_push where tenant = $1', [tenant]);
    expect(row).toEqual({ leased: true });
    // Its lease over (moved here rather than waited for), the next claim sends it, once.
    await env.sql("update notify_push set lease_until = now() - interval '1 second' where tenant = $1", [tenant]);
    w.wake();
    const [p] = await waitPushes(sub, 1, 'the push sent by the next claim');
    expect(p!.payload).toMatchObject({ type: 'direct', roomId: toCarol.id, body: 'late' });
    await waitFor(() => env.sql<{ pending: number }>('select pending from notify_push where tenant = $1', [tenant]), 'the push recorded', {
      until: (rows) => rows.every((r) => Number(r.pending) === 0),
    });
    expect(ps.received.items.filter((r) => r.device === sub.device)).toHaveLength(1);
  });

  it('a claim that ends with no outcome after an item came puts its own kind back: a mention folded with a later message is still pushed as a mention, once', async () => {
    // The presence read of the claim is held while a message comes and this node's clock passes the deadline.
    await using held = await heldClaim('pushnooutcome', 'gone');
    const { env, tenant, as, sub, w, warnings, notify } = held;
    const row = async () =>
      (await env.sql<{ pending: number; kind: string; leased: boolean }>('select pending, kind, lease_until > now() as leased from notify_push where tenant = $1', [tenant]))[0];
    w.start();
    const room = await as('alice').room.create({ kind: 'group', name: 'Ops', memberIds: ['carol'] });
    await as('carol').notify.setRoomPreference({ roomId: room.id, level: 'all' });
    await as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@carol the database is down', mentions: ['carol'] });
    w.wake();
    await within(held.reading, 8000, 'the push being prepared');
    // While the mention's push is in flight: a plain message (level all) folds into the row.
    await as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'and the cache too' });
    expect(await row()).toEqual({ pending: 2, kind: 'message', leased: true });
    held.clock += notify.pushTimeoutMs + 1;
    held.release();
    await waitFor(() => warnings.map((x) => x.msg), 'the push given up by this claim', {
      until: (msgs) => msgs.includes('push not sent: its deadline passed before the request (retried after the lease)'),
    });
    // Left to its lease, with the claimed mention's kind back.
    expect(await row()).toEqual({ pending: 2, kind: 'mention', leased: true });
    expect(pushesTo(sub)).toEqual([]);
    // Its lease over (moved here rather than waited for), the next claim sends both, as a mention, once.
    await env.sql("update notify_push set lease_until = now() - interval '1 second' where tenant = $1", [tenant]);
    w.wake();
    const [p] = await waitPushes(sub, 1, 'the push sent by the next claim');
    expect(p!.payload).toMatchObject({ type: 'mention', roomId: room.id, title: 'You were mentioned in Ops', body: '2 new notifications in Ops', count: 2 });
    expect(p!.urgency).toBe('high');
    await waitFor(row, 'the push recorded', { until: (r) => Number(r?.pending) === 0 });
    expect(pushesTo(sub)).toHaveLength(1);
  });

  it('a claim whose node died after a less personal item came (no outcome, its lease ran out): the node that takes the row over pushes the mention as a mention, once', async () => {
    await using held = await heldClaim('pushdeadclaim', 'dead');
    const { env, tenant, as, sub, w } = held;
    const row = async () => (await env.sql<{ pending: number; kind: string }>('select pending, kind from notify_push where tenant = $1', [tenant]))[0];
    const room = await as('alice').room.create({ kind: 'group', name: 'Ops', memberIds: ['carol'] });
    await as('carol').notify.setRoomPreference({ roomId: room.id, level: 'all' });
    await as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@carol the database is down', mentions: ['carol'] });
    // Node A claims the row as its worker does, then dies: no outcome, nothing put back.
    const [a] = await claimPushes(held.db, 10, 60_000);
    expect(a).toMatchObject({ pending: 1, kind: 'mention' });
    // While A's claim stands, a plain message (level all) folds into the row.
    await as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'and the cache too' });
    expect(await row()).toMatchObject({ pending: 2 });
    // A's lease runs out (moved here rather than waited for): this node takes the row over.
    await env.sql("update notify_push set lease_until = now() - interval '1 second' where tenant = $1", [tenant]);
    held.release();
    w.start();
    const [p] = await waitPushes(sub, 1, 'the push sent by the node that took the row over');
    expect(p!.payload).toMatchObject({ type: 'mention', roomId: room.id, title: 'You were mentioned in Ops', body: '2 new notifications in Ops', count: 2 });
    expect(p!.urgency).toBe('high');
    await waitFor(row, 'the push recorded', { until: (r) => Number(r?.pending) === 0 });
    expect(pushesTo(sub)).toHaveLength(1);
  });

  it("a row taken over from dead claims has the most personal kind of all its items: the claimed ones and those folded in since; never a dead claim's kind it no longer holds", async () => {
    // A database of its own with its worker stopped: the claims are made here, as nodes' workers make them.
    await using env = await testEnv('pushdeadkind');
    const srv = await env.startServer();
    await srv.app.services.notifyWorker.stop();
    const db = srv.app.services.store.db();
    await env.sql(
      `insert into push_device (id, tenant, user_id, kind, endpoint, p256dh, auth, created_at) values ($1, 'dead', 'bob', 'webpush', 'https://push.example/dead', 'k', 'a', now())`,
      [uuid()],
    );
    const roomId = uuid();
    const queue = (...kinds: PushKind[]) =>
      enqueue(
        db,
        kinds.map((kind) => ({ tenant: 'dead', userId: 'bob', roomId, kind, messageId: null, messageSeq: null, fromUser: 'alice', title: null, url: null })),
        { push: true, digest: false, coalesceMs: 0, digestDelayMs: 0 },
      );
    // The claim's node dies: its lease runs out (moved here rather than waited for), nothing else is written.
    const dies = () => env.sql("update notify_push set lease_until = now() - interval '1 second' where tenant = 'dead'");
    const claim = async () => (await claimPushes(db, 10, 60_000))[0]!;

    // A claims a mention and dies after a message came: B has both, as a mention.
    await queue('mention');
    expect(await claim()).toMatchObject({ pending: 1, kind: 'mention' });
    await queue('message');
    await dies();
    expect(await claim()).toMatchObject({ pending: 2, kind: 'mention' });
    // B dies too, after a reply came: C has the three, still a mention.
    await queue('reply');
    await dies();
    const c = await claim();
    expect(c).toMatchObject({ pending: 3, kind: 'mention' });
    expect(await finishPush(db, c, c.pending, true, 0)).toBe(true);
    // A message is claimed by a node of the version before `claim_kind` (it sets the lease only), which
    // dies: D takes over a message, not the mention C sent. D dies with nothing more: E has a message.
    await queue('message');
    await env.sql("update notify_push set lease_until = now() - interval '1 second', updated_at = now() - interval '1 second', attempts = attempts + 1 where tenant = 'dead'");
    expect(await claim()).toMatchObject({ pending: 1, kind: 'message' });
    await dies();
    expect(await claim()).toMatchObject({ pending: 1, kind: 'message' });
    await dies();
    // A more personal item after a dead claim's lease ran out, before the takeover, is kept.
    await queue('direct');
    const f = await claim();
    expect(f).toMatchObject({ pending: 2, kind: 'direct' });
    // A claim that ended with no outcome while its node lived (abandoned), then taken over: its kind, once more.
    await queue('message');
    expect(await abandonPush(db, f)).toBe(true);
    await dies();
    expect(await claim()).toMatchObject({ pending: 3, kind: 'direct' });
  });

  it('a digest stuck on a stalled SMTP relay holds back no push: pushes and digests have loops of their own, and stop() ends both', async () => {
    // A database of its own with web push and e-mail, its worker stopped: the test runs one whose rounds run when woken.
    await using env = await testEnv('pushmail');
    const srv = await env.startServer({ notify: { ...OVERRIDES.notify, smtp: { url: 'smtp://127.0.0.1:9', from: 'Chat <chat@example.com>' }, digestDelayMs: 60_000 } });
    await srv.app.services.notifyWorker.stop();
    // An SMTP relay that accepts connections and never says a word.
    const relay = { sessions: 0, open: 0 };
    const sockets = new Set<net.Socket>();
    const smtpHost = net.createServer((s) => {
      relay.sessions++;
      relay.open++;
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        relay.open--;
        sockets.delete(s);
      });
    });
    await new Promise<void>((r) => smtpHost.listen(0, '127.0.0.1', r));
    await using _relay = {
      [Symbol.asyncDispose]: async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => smtpHost.close(() => r()));
      },
    };
    const tenant = `mail-${uuid().slice(0, 8)}`;
    const as = (id: string) => callerFor(srv.app, actor(id, tenant));
    // Bob has an address (his digest is due now); carol has a push device.
    await srv.app.services.users.touch({ ...actor('bob', tenant), email: `bob@${tenant}.example.com` });
    const toBob = await as('alice').room.openDirect({ userId: 'bob' });
    await as('alice').chat.send({ roomId: toBob.id, clientId: uuid(), body: 'digest me' });
    await env.sql('update notify_digest set due_at = now() where tenant = $1', [tenant]);
    const sub = ps.subscribe();
    await as('carol').device.register({ kind: 'webpush', endpoint: sub.endpoint, keys: sub.keys });
    const offline = {
      count: async () => 0,
      get: async (_t: string, ids: string[]) => ids.map((userId) => ({ userId, status: 'offline', lastSeenAt: null })),
    } as unknown as PresenceStore;
    // PUSH_TIMEOUT_MS (the SMTP timeouts and the digest's deadline) far beyond the wait for the push below.
    const notify = { ...OVERRIDES.notify, pushTimeoutMs: 30_000, pollMs: 600_000 };
    const { port } = smtpHost.address() as net.AddressInfo;
    const mailer = new Mailer(`smtp://127.0.0.1:${port}`, 'Chat <chat@example.com>', notify.pushTimeoutMs);
    const w = new NotifyWorker(srv.app.services.store, offline, notify, mailer, createLogger('silent'), newCounters());
    let stopped = false;
    try {
      w.start();
      await waitFor(() => relay.sessions, "bob's digest being sent", { until: (n) => n >= 1 });
      // A direct message to carol (the first item of a quiet room: due at once), while the digest waits for the relay.
      const toCarol = await as('alice').room.openDirect({ userId: 'carol' });
      await as('alice').chat.send({ roomId: toCarol.id, clientId: uuid(), body: 'ping' });
      w.wake();
      const [p] = await waitPushes(sub, 1, 'the push to carol while the digest waits for the relay', 8000);
      expect(p!.payload).toMatchObject({ type: 'direct', roomId: toCarol.id, body: 'ping' });
      expect(relay.open).toBe(1); // the digest still waits
      // stop() ends both loops: the digest's session is aborted (the row is left to its lease, not written as failed).
      await w.stop();
      stopped = true;
      await waitFor(() => relay.open, "the digest's SMTP session closed by stop()", { until: (n) => n === 0 });
      const [row] = await env.sql<{ leased: boolean; last_error: string | null }>('select lease_until > now() as leased, last_error from notify_digest where tenant = $1', [tenant]);
      expect(row).toEqual({ leased: true, last_error: null });
    } finally {
      if (!stopped) await w.stop();
    }
  });
});

describe('connection parameters', () => {
  it('clientType, clientVersion and deviceId are shown in /admin/stats; values of another shape are left out', async () => {
    const tn = tenant();
    await using web = clientFor(t.url, 'bob', { tenant: tn.name, ws: true, client: { clientType: 'web', clientVersion: '2.1.0', deviceId: 'dev-1' } });
    await using odd = clientFor(t.url, 'bob', { tenant: tn.name, ws: true, client: { clientType: 'x'.repeat(40), clientVersion: 'bad version', deviceId: 'dev 2' } });
    await web.trpc.auth.me.query();
    await odd.trpc.auth.me.query();
    const stats = await getJson<{ clients: Record<string, { connections: number; devices: number; versions: Record<string, number> }> }>(
      `${t.url}/admin/stats`,
      { headers: { authorization: `Bearer ${tokenFor('root', { tenant: tn.name, roles: ['operator'] })}` } },
    );
    expect(stats.status).toBe(200);
    expect(stats.body.clients.web).toEqual({ connections: 1, devices: 1, versions: { '2.1.0': 1 } });
    expect(stats.body.clients.unknown?.versions.unknown).toBeGreaterThanOrEqual(1);
    expect(Object.keys(stats.body.clients).some((k) => k.startsWith('xxx'))).toBe(false);
  });
});

describe('NotificationPolicy', () => {
  const base = { kind: 'mention' as const, online: false, prefs: { email: 'digest' as const, push: true, quietHours: null }, room: null, read: false, now: new Date('2026-03-01T12:00:00Z') };
  it('decides from presence, preferences, levels, mutes and read state', () => {
    expect(decidePush(base)).toEqual({ send: true });
    expect(decidePush({ ...base, online: true })).toEqual({ send: false, reason: 'online' });
    expect(decidePush({ ...base, read: true })).toEqual({ send: false, reason: 'read' });
    expect(decidePush({ ...base, room: { level: 'mentions', muteUntil: new Date('2026-03-01T13:00:00Z') } })).toEqual({ send: false, reason: 'muted' });
    expect(decidePush({ ...base, room: { level: 'mentions', muteUntil: new Date('2026-03-01T11:00:00Z') } })).toEqual({ send: true });
    expect(decidePush({ ...base, kind: 'message', room: { level: 'mentions', muteUntil: null } })).toEqual({ send: false, reason: 'level mentions' });
    expect(decidePush({ ...base, kind: 'message', room: { level: 'all', muteUntil: null } })).toEqual({ send: true });
    expect(decidePush({ ...base, kind: 'direct', room: { level: 'none', muteUntil: null } })).toEqual({ send: false, reason: 'level none' });
  });

  it('quiet hours in an IANA time zone, across midnight', () => {
    const q = { start: '22:00', end: '07:00', timeZone: 'Europe/Berlin' };
    // 12:00 UTC = 13:00 in Berlin (CET): outside.
    expect(quietUntil(q, new Date('2026-03-01T12:00:00Z'))).toBeNull();
    // 22:30 UTC = 23:30 Berlin: inside until 07:00 Berlin = 06:00 UTC.
    expect(quietUntil(q, new Date('2026-03-01T22:30:20Z'))).toEqual(new Date('2026-03-02T06:00:00Z'));
    // 05:59 UTC = 06:59 Berlin: one minute left.
    expect(quietUntil(q, new Date('2026-03-02T05:59:00Z'))).toEqual(new Date('2026-03-02T06:00:00Z'));
    expect(quietUntil({ start: '09:00', end: '17:00', timeZone: 'America/New_York' }, new Date('2026-07-01T14:00:00Z'))).toEqual(new Date('2026-07-01T21:00:00Z'));
    expect(quietUntil({ start: '09:00', end: '09:00', timeZone: 'UTC' }, new Date())).toBeNull();
    expect(decidePush({ ...base, prefs: { ...base.prefs, quietHours: q }, now: new Date('2026-03-01T22:30:00Z') })).toEqual({ holdUntil: new Date('2026-03-02T06:00:00Z') });
  });

  it('quiet hours across a daylight saving change end when the local clock reaches their end', () => {
    const q = { start: '22:00', end: '07:00', timeZone: 'America/New_York' };
    // Spring: 2026-03-08 04:00 UTC = 23:00 EST on March 7; clocks go 02:00 EST -> 03:00 EDT; 07:00 EDT = 11:00 UTC.
    expect(quietUntil(q, new Date('2026-03-08T04:00:00Z'))).toEqual(new Date('2026-03-08T11:00:00Z'));
    // Berlin: 2026-03-28 22:00 CET (21:00 UTC); 02:00 CET -> 03:00 CEST; 07:00 CEST = 05:00 UTC.
    expect(quietUntil({ ...q, timeZone: 'Europe/Berlin' }, new Date('2026-03-28T21:00:00Z'))).toEqual(new Date('2026-03-29T05:00:00Z'));
    // Autumn: 2026-10-31 23:00 EDT (03:00 UTC); 02:00 EDT -> 01:00 EST; 07:00 EST = 12:00 UTC.
    expect(quietUntil(q, new Date('2026-11-01T03:00:00Z'))).toEqual(new Date('2026-11-01T12:00:00Z'));
    // Berlin: 2026-10-24 22:00 CEST (20:00 UTC); 03:00 CEST -> 02:00 CET; 07:00 CET = 06:00 UTC.
    expect(quietUntil({ ...q, timeZone: 'Europe/Berlin' }, new Date('2026-10-24T20:00:00Z'))).toEqual(new Date('2026-10-25T06:00:00Z'));
    // An end the clocks skip (02:30 on March 8 in New York): the hours end when it is skipped, 03:00 EDT = 07:00 UTC.
    expect(quietUntil({ ...q, end: '02:30' }, new Date('2026-03-08T04:00:00Z'))).toEqual(new Date('2026-03-08T07:00:00Z'));
    // An end the clocks show twice (01:30 on November 1): the first time, 01:30 EDT = 05:30 UTC.
    expect(quietUntil({ ...q, end: '01:30' }, new Date('2026-11-01T03:00:00Z'))).toEqual(new Date('2026-11-01T05:30:00Z'));
    // A change of half an hour (Lord Howe Island, 2026-10-04: 02:00 +10:30 -> 02:30 +11): 07:00 +11 = 20:00 UTC.
    expect(quietUntil({ ...q, timeZone: 'Australia/Lord_Howe' }, new Date('2026-10-03T12:00:00Z'))).toEqual(new Date('2026-10-03T20:00:00Z'));
    // From inside, after the change: the minutes left as the clock shows them.
    expect(quietUntil(q, new Date('2026-03-08T10:59:00Z'))).toEqual(new Date('2026-03-08T11:00:00Z'));
    expect(quietUntil(q, new Date('2026-03-08T11:00:00Z'))).toBeNull();
    expect(decidePush({ ...base, prefs: { ...base.prefs, quietHours: q }, now: new Date('2026-03-08T04:00:00Z') })).toEqual({ holdUntil: new Date('2026-03-08T11:00:00Z') });
  });
});
