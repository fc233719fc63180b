/**
 * Video meetings (issue 4) against local doubles of LiveKit (Twirp + JWT) and Daily (REST + HMAC
 * webhooks): configuration, video.* procedures and their rules, tokens checked with LiveKit's own
 * TokenVerifier and by the request Daily's double received, webhooks (signed, wrongly signed,
 * unsigned, stale, replayed, out of order, concurrent duplicates), meeting system messages and
 * `meeting.invite` inbox items, live over wsLink.
 */
import { TokenVerifier } from 'livekit-server-sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import type { RemovalOutcome } from '../src/services/meetings/index.js';
import {
  actor,
  callerFor,
  claimDueRemovals,
  clientFor,
  ConfigError,
  DailyProvider,
  dispose,
  expectTRPCError,
  finishRemoval,
  LiveKitProvider,
  loadConfig,
  nextRemovalDueInMs,
  openInbox,
  recordEvents,
  recordInbox,
  roomKit,
  TEST_LIMITS,
  testEnv,
  uuid,
  type Actor,
  type Config,
  type InboxEvent,
  type TestEnv,
  type TestServer,
} from './fixture.js';
import { commitWhileBlocked } from './fixture/locks.js';
import {
  dailyEvent,
  livekitEvent,
  postWebhook,
  signDaily,
  signLiveKit,
  signLiveKitAt,
  nextRemoval,
  removalOutcomes,
  startVideoServers,
  TEST_REMOVALS,
  videoConfig,
  type DailyDouble,
  type LiveKitDouble,
} from './video-doubles.js';

/** The join tokens' lifetime (seconds) on the servers set up with `videoConfig`. */
const TOKEN_TTL = videoConfig({}).video!.tokenTtlSeconds;
const DAILY_SECRET = Buffer.from('daily-webhook-secret-for-tests-0123456789').toString('base64');

let env: TestEnv;
let lk: LiveKitDouble;
let daily: DailyDouble;
let none: TestServer;
let lkSrv: TestServer;
let dailySrv: TestServer;

/** A server of this file's env with a Redis prefix of its own. */
function server(label: string, overrides: Partial<Config>): Promise<TestServer> {
  return env.startServer({ redisPrefix: env.prefix(label), ...overrides });
}

beforeAll(async () => {
  env = await testEnv('video');
  // The plain server first (it applies the migrations), then one on each provider's double.
  none = await server('video-none', {});
  ({ lk, daily, lkSrv, dailySrv } = await startVideoServers(env, 'video', DAILY_SECRET));
});

afterAll(() => dispose(lk, daily, env));

const { users } = roomKit(() => none);
const who = (id: string, name = id, tenant = 'default', roles: string[] = []): Actor => ({ id, name, tenant, roles });
const as = (s: TestServer, a: Actor | string) => callerFor(s.app, typeof a === 'string' ? actor(a) : a);

/** A group room owned by `owner` with `members`. */
async function groupRoom(s: TestServer, owner: string, members: string[], kind: 'group' | 'broadcast' | 'support' = 'group') {
  return as(s, owner).room.create({ kind, name: `meet-${owner}`, memberIds: members });
}

const lkHook = (s: TestServer) => `${s.url}/webhooks/video/livekit`;
const dailyHook = (s: TestServer) => `${s.url}/webhooks/video/daily`;

/** Posts a LiveKit webhook signed like LiveKit does. */
async function lkPost(body: string) {
  return postWebhook(lkHook(lkSrv), body, { authorization: await signLiveKit(body, lk.apiKey, lk.apiSecret), 'content-type': 'application/webhook+json' });
}

async function dailyPost(body: string) {
  return postWebhook(dailyHook(dailySrv), body, signDaily(body, DAILY_SECRET));
}

/** System messages of a room, oldest first (bodies). */
async function systemBodies(s: TestServer, roomId: string, reader: string) {
  const { messages } = await as(s, reader).chat.history({ roomId, limit: 100 });
  return messages.filter((m) => m.kind === 'system' && /^Meeting/.test(m.body ?? '')).map((m) => m.body);
}

/**
 * A user's durable inbox items as replayed from PostgreSQL: a service notification is appended as a
 * barrier, then `inbox.events({ lastEventId: '0' })` is read up to it.
 */
async function inboxItems(s: TestServer, userId: string, tenant = 'default'): Promise<InboxEvent[]> {
  const title = `barrier ${uuid()}`;
  await as(s, who(`svc-${userId}`, 'svc', tenant, ['service'])).inbox.notify({ userId, kind: 'test.barrier', title });
  await using inbox = await openInbox(s.app, actor(userId, tenant), { lastEventId: '0' });
  const out: InboxEvent[] = [];
  while (true) {
    const { event: e } = await inbox.nextItem(5000);
    if (e.type === 'notification' && e.title === title) return out;
    if (e.type !== 'notification') out.push(e);
  }
}

async function meetingRow(id: string) {
  return (await env.sql('select status, started_at, ended_at from meeting where id = $1', [id]))[0];
}

describe('configuration', () => {
  it('reads the video variables; LiveKit is the default when configured; an explicit provider needs its variables', () => {
    const base = loadConfig({});
    expect(base.video).toEqual({
      provider: null,
      livekit: null,
      daily: null,
      tokenTtlSeconds: 600,
      removals: { retryBaseMs: 2000, maxAttempts: 20, pollMs: 10_000 },
    });
    expect(loadConfig({ VIDEO_REMOVAL_RETRY_BASE_MS: '500', VIDEO_REMOVAL_MAX_ATTEMPTS: '3', VIDEO_REMOVAL_POLL_MS: '1000' }).video.removals).toEqual({
      retryBaseMs: 500,
      maxAttempts: 3,
      pollMs: 1000,
    });
    expect(() => loadConfig({ VIDEO_REMOVAL_MAX_ATTEMPTS: '0' })).toThrow(/VIDEO_REMOVAL_MAX_ATTEMPTS/);
    expect(() => loadConfig({ VIDEO_REMOVAL_POLL_MS: 'soon' })).toThrow(/VIDEO_REMOVAL_POLL_MS/);
    const lkEnv = { LIVEKIT_URL: 'wss://demo.livekit.cloud', LIVEKIT_API_KEY: 'k', LIVEKIT_API_SECRET: 's' };
    const dailyEnv = { DAILY_API_KEY: 'dk' };
    expect(loadConfig(lkEnv).video).toMatchObject({ provider: 'livekit', livekit: { url: 'wss://demo.livekit.cloud', apiKey: 'k', apiSecret: 's' } });
    expect(loadConfig({ ...lkEnv, ...dailyEnv }).video.provider).toBe('livekit');
    expect(loadConfig(dailyEnv).video).toMatchObject({
      provider: 'daily',
      daily: { apiKey: 'dk', apiUrl: 'https://api.daily.co/v1', webhookSecret: null },
    });
    expect(
      loadConfig({ ...lkEnv, ...dailyEnv, VIDEO_PROVIDER: 'daily', DAILY_API_URL: 'http://127.0.0.1:9/v1/', DAILY_WEBHOOK_SECRET: 'c2VjcmV0', VIDEO_TOKEN_TTL_SECONDS: '120' }).video,
    ).toMatchObject({ provider: 'daily', daily: { apiUrl: 'http://127.0.0.1:9/v1', webhookSecret: 'c2VjcmV0' }, tokenTtlSeconds: 120 });
    expect(loadConfig({ ...lkEnv, VIDEO_PROVIDER: 'none' }).video.provider).toBeNull();
    expect(() => loadConfig({ VIDEO_PROVIDER: 'livekit', LIVEKIT_URL: 'wss://x.livekit.cloud' })).toThrow(/LIVEKIT_API_KEY/);
    expect(() => loadConfig({ VIDEO_PROVIDER: 'daily' })).toThrow(ConfigError);
    expect(() => loadConfig({ VIDEO_PROVIDER: 'zoom' })).toThrow(/VIDEO_PROVIDER/);
    expect(() => loadConfig({ VIDEO_TOKEN_TTL_SECONDS: '5' })).toThrow(/VIDEO_TOKEN_TTL_SECONDS/);
  });

  it('without a provider every video procedure answers PRECONDITION_FAILED naming the variables; the rest works', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(none, owner, [bob]);
    const me = as(none, owner);
    const meetingId = uuid();
    for (const call of [
      () => me.video.create({ roomId: room.id }),
      () => me.video.joinToken({ meetingId }),
      () => me.video.get({ meetingId }),
      () => me.video.list({ roomId: room.id }),
      () => me.video.end({ meetingId }),
    ]) {
      const err = await expectTRPCError(call(), 'PRECONDITION_FAILED');
      expect(err.message).toMatch(/VIDEO_PROVIDER=livekit/);
      expect(err.message).toMatch(/LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET/);
      expect(err.message).toMatch(/DAILY_API_KEY/);
    }
    // Webhooks for a provider that is not configured are not found; chat works as before.
    const hook = await postWebhook(lkHook(none), livekitEvent({ event: 'room_started', room: uuid() }), { authorization: 'x' });
    expect(hook.status).toBe(404);
    // Checked before the body is read: an oversized body to a provider not in use is 404, not 413.
    const big = await fetch(lkHook(none), { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(1024 * 1024) });
    expect(big.status).toBe(404);
    expect(await big.json()).toEqual({ error: 'livekit is not the video provider of this server' });
    const msg = await me.chat.send({ roomId: room.id, clientId: uuid(), body: 'still chatting' });
    expect(msg.body).toBe('still chatting');
  });
});

describe('LiveKit: video.create / joinToken / get / list / end', () => {
  it('creates a meeting (provider room named by our id), invites the other members, not the creator', async () => {
    const [owner, bob, carol] = users('owner', 'bob', 'carol');
    const room = await groupRoom(lkSrv, owner, [bob, carol]);
    const before = Date.now();
    const m = await as(lkSrv, owner).video.create({ roomId: room.id, title: ' Standup ', ttlMinutes: 30 });
    expect(m).toMatchObject({
      roomId: room.id,
      provider: 'livekit',
      status: 'scheduled',
      title: 'Standup',
      url: lk.url.replace(/^http/, 'ws'),
      createdBy: owner,
      startedAt: null,
      endedAt: null,
      participants: [],
    });
    expect(m.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(m.expiresAt.getTime()).toBeGreaterThanOrEqual(before + 30 * 60_000);
    expect(m.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 30 * 60_000);

    // The provider room: named by the meeting id, created with a JWT carrying roomCreate.
    const created = lk.requests.filter((r) => r.method === 'CreateRoom' && r.body.name === m.id);
    expect(created).toHaveLength(1);
    expect(created[0]!.grants.iss).toBe(lk.apiKey);
    expect(created[0]!.grants.video?.roomCreate).toBe(true);
    expect(lk.rooms.get(m.id)?.emptyTimeout).toBeGreaterThan(29 * 60);

    const invite = { type: 'meeting.invite', roomId: room.id, meetingId: m.id, title: 'Standup', url: m.url, from: owner };
    for (const u of [bob, carol]) {
      const items = await inboxItems(lkSrv, u!);
      expect(items.filter((i) => i.type === 'meeting.invite')).toEqual([{ ...invite, seq: 2 }]);
    }
    expect((await inboxItems(lkSrv, owner)).filter((i) => i.type === 'meeting.invite')).toEqual([]);

    // get and list (members only; list newest first).
    expect(await as(lkSrv, bob!).video.get({ meetingId: m.id })).toEqual({ ...m, online: null });
    const second = await as(lkSrv, bob!).video.create({ roomId: room.id });
    expect(second.title).toBeNull();
    expect((await as(lkSrv, carol!).video.list({ roomId: room.id })).map((x) => x.id)).toEqual([second.id, m.id]);
  });

  it('only members who may post create meetings: non-members, other tenants, muted and banned users cannot', async () => {
    const [owner, bob, muted, banned, outsider] = users('owner', 'bob', 'muted', 'banned', 'outsider');
    const room = await groupRoom(lkSrv, owner, [bob!, muted!, banned!]);
    await as(lkSrv, owner).room.mute({ roomId: room.id, userId: muted! });
    await as(lkSrv, owner).room.ban({ roomId: room.id, userId: banned! });
    const calls = lk.requests.length;
    await expectTRPCError(as(lkSrv, outsider!).video.create({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as(lkSrv, who(owner, owner, 'other-tenant')).video.create({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as(lkSrv, muted!).video.create({ roomId: room.id }), 'FORBIDDEN', /muted/);
    await expectTRPCError(as(lkSrv, banned!).video.create({ roomId: room.id }), 'NOT_FOUND');
    // A service token may post but is no member: no meetings.
    await expectTRPCError(as(lkSrv, who('svc', 'svc', 'default', ['service'])).video.create({ roomId: room.id }), 'NOT_FOUND');
    // Broadcast rooms: members read, only admins post, so only admins start meetings.
    const cast = await groupRoom(lkSrv, owner, [bob!], 'broadcast');
    await expectTRPCError(as(lkSrv, bob!).video.create({ roomId: cast.id }), 'FORBIDDEN');
    // Input validation.
    await expectTRPCError(as(lkSrv, owner).video.create({ roomId: 'nope' }), 'BAD_REQUEST', /roomId/);
    await expectTRPCError(as(lkSrv, owner).video.create({ roomId: room.id, ttlMinutes: 0 }), 'BAD_REQUEST', /ttlMinutes/);
    await expectTRPCError(as(lkSrv, owner).video.create({ roomId: room.id, title: 'x'.repeat(201) }), 'BAD_REQUEST', /title/);
    expect(lk.requests.length).toBe(calls);
    expect(await as(lkSrv, owner).video.list({ roomId: room.id })).toEqual([]);
  });

  it('mints short-lived LiveKit tokens: identity, display name, room, admin grant by role, ttl (checked with TokenVerifier)', async () => {
    const [owner, admin, mod, member, outsider] = users('owner', 'admin', 'mod', 'member', 'outsider');
    const room = await groupRoom(lkSrv, owner, [admin!, mod!, member!]);
    await as(lkSrv, owner).room.setRole({ roomId: room.id, userId: admin!, role: 'admin' });
    await as(lkSrv, owner).room.setRole({ roomId: room.id, userId: mod!, role: 'moderator' });
    const m = await as(lkSrv, member!).video.create({ roomId: room.id, title: 'Design review' });
    const verifier = new TokenVerifier(lk.apiKey, lk.apiSecret);
    for (const [u, isAdmin] of [
      [owner, true],
      [admin!, true],
      [mod!, true],
      [member!, false],
    ] as const) {
      const display = `Display ${u}`;
      const t = await as(lkSrv, who(u, display)).video.joinToken({ meetingId: m.id });
      expect(t.provider).toBe('livekit');
      expect(t.url).toBe(lk.url.replace(/^http/, 'ws'));
      const claims = await verifier.verify(t.token);
      expect(claims.sub).toBe(u);
      expect(claims.name).toBe(display);
      expect(claims.iss).toBe(lk.apiKey);
      expect(claims.video).toMatchObject({ roomJoin: true, room: m.id, canPublish: true, canSubscribe: true });
      expect(claims.video?.roomAdmin === true).toBe(isAdmin);
      expect(claims.exp! - claims.nbf!).toBeGreaterThanOrEqual(TOKEN_TTL - 1);
      expect(claims.exp! - claims.nbf!).toBeLessThanOrEqual(TOKEN_TTL);
      expect(t.expiresAt.getTime()).toBe(claims.exp! * 1000);
      // A token for one meeting opens no other room.
      expect(claims.video?.roomCreate).toBeUndefined();
      expect(claims.video?.roomList).toBeUndefined();
    }
    // A token signed with another secret does not verify.
    const foreign = await as(lkSrv, owner).video.joinToken({ meetingId: m.id });
    await expect(new TokenVerifier(lk.apiKey, 'another-secret-another-secret').verify(foreign.token)).rejects.toThrow();

    await expectTRPCError(as(lkSrv, outsider!).video.joinToken({ meetingId: m.id }), 'NOT_FOUND', /meeting not found/);
    await expectTRPCError(as(lkSrv, who(member!, member!, 'other-tenant')).video.joinToken({ meetingId: m.id }), 'NOT_FOUND');
    await expectTRPCError(as(lkSrv, owner).video.joinToken({ meetingId: uuid() }), 'NOT_FOUND');
    await expectTRPCError(as(lkSrv, outsider!).video.get({ meetingId: m.id }), 'NOT_FOUND');
    await expectTRPCError(as(lkSrv, outsider!).video.list({ roomId: room.id }), 'NOT_FOUND');

    // Close to its expiry, a token lives no longer than the meeting.
    await env.sql(`update meeting set expires_at = now() + interval '100 seconds' where id = $1`, [m.id]);
    const short = await verifier.verify((await as(lkSrv, owner).video.joinToken({ meetingId: m.id })).token);
    expect(short.exp! - short.nbf!).toBeLessThanOrEqual(100);
    expect(short.exp! - short.nbf!).toBeGreaterThanOrEqual(95);
    // Expired or ended: no token.
    await env.sql(`update meeting set expires_at = now() - interval '1 second' where id = $1`, [m.id]);
    await expectTRPCError(as(lkSrv, owner).video.joinToken({ meetingId: m.id }), 'PRECONDITION_FAILED', /expired/);
    const m2 = await as(lkSrv, owner).video.create({ roomId: room.id });
    await as(lkSrv, owner).video.end({ meetingId: m2.id });
    await expectTRPCError(as(lkSrv, member!).video.joinToken({ meetingId: m2.id }), 'PRECONDITION_FAILED', /ended/);
  });

  it('ends meetings on the provider: creator or moderator+, once (idempotent), with one meeting.ended message', async () => {
    const [owner, creator, mod, member] = users('owner', 'creator', 'mod', 'member');
    const room = await groupRoom(lkSrv, owner, [creator!, mod!, member!]);
    await as(lkSrv, owner).room.setRole({ roomId: room.id, userId: mod!, role: 'moderator' });
    const a = await as(lkSrv, creator!).video.create({ roomId: room.id, title: 'A' });
    const b = await as(lkSrv, creator!).video.create({ roomId: room.id, title: 'B' });
    await expectTRPCError(as(lkSrv, member!).video.end({ meetingId: a.id }), 'FORBIDDEN', /creator of the meeting or a moderator/);
    expect(lk.rooms.has(a.id)).toBe(true);

    const endedA = await as(lkSrv, creator!).video.end({ meetingId: a.id });
    expect(endedA).toMatchObject({ id: a.id, status: 'ended' });
    expect(endedA.endedAt).toBeInstanceOf(Date);
    expect(lk.rooms.has(a.id)).toBe(false);
    const deletes = lk.requests.filter((r) => r.method === 'DeleteRoom' && r.body.room === a.id);
    expect(deletes).toHaveLength(1);
    expect(deletes[0]!.grants.video?.roomCreate).toBe(true);
    // Again: the meeting is unchanged; the provider is asked again (its room is gone: no error).
    expect((await as(lkSrv, creator!).video.end({ meetingId: a.id })).endedAt).toEqual(endedA.endedAt);
    expect(lk.requests.filter((r) => r.method === 'DeleteRoom' && r.body.room === a.id)).toHaveLength(2);

    // A moderator ends someone else's meeting; a provider room already gone is fine.
    lk.rooms.delete(b.id);
    expect(await as(lkSrv, mod!).video.end({ meetingId: b.id })).toMatchObject({ status: 'ended' });
    // The provider's room_finished for an ended meeting changes nothing.
    expect((await lkPost(livekitEvent({ event: 'room_finished', room: a.id }))).body).toEqual({ ok: true, outcome: 'processed' });
    expect(await systemBodies(lkSrv, room.id, member!)).toEqual(['Meeting "A" ended', 'Meeting "B" ended']);
  });

  it('video.end by a moderator demoted after the check, before the write: FORBIDDEN, nothing ended, not even the provider room', async () => {
    const [owner, creator, mod, member] = users('owner', 'creator', 'mod', 'member');
    const room = await groupRoom(lkSrv, owner, [creator!, mod!, member!]);
    await as(lkSrv, owner).room.setRole({ roomId: room.id, userId: mod!, role: 'moderator' });
    const m = await as(lkSrv, creator!).video.create({ roomId: room.id, title: 'Race' });
    // The demotion runs in a transaction of its own (its trigger holds the room's row); video.end checks
    // the moderator's role (not demoted yet: uncommitted) and waits for the room's row; only then does
    // the demotion commit.
    const r = await commitWhileBlocked(
      env.databaseUrl,
      [['update membership set role = $3 where room_id = $1 and user_id = $2', [room.id, mod!, 'member']]],
      () => as(lkSrv, mod!).video.end({ meetingId: m.id }),
    );
    await expectTRPCError(r.status === 'fulfilled' ? Promise.resolve(r.value) : Promise.reject(r.reason), 'FORBIDDEN', /creator of the meeting or a moderator/);
    expect(await meetingRow(m.id)).toMatchObject({ status: 'scheduled', ended_at: null });
    expect(lk.rooms.has(m.id)).toBe(true);
    expect(lk.requests.filter((x) => x.method === 'DeleteRoom' && x.body.room === m.id)).toEqual([]);
    expect(await systemBodies(lkSrv, room.id, member!)).toEqual([]);
    // The creator still ends it.
    expect(await as(lkSrv, creator!).video.end({ meetingId: m.id })).toMatchObject({ status: 'ended' });
    expect(lk.rooms.has(m.id)).toBe(false);
  });

  it('video.end whose provider request fails after the meeting is ended: SERVICE_UNAVAILABLE saying so; video.end again ends the provider room', async () => {
    const [owner, member] = users('owner', 'member');
    const room = await groupRoom(lkSrv, owner, [member!]);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id, title: 'Outage' });
    lk.beforeDelete = (name) => (name === m.id ? 'fail' : undefined);
    try {
      await expectTRPCError(as(lkSrv, owner).video.end({ meetingId: m.id }), 'SERVICE_UNAVAILABLE', /^the meeting is ended, but the video provider failed: LiveKit DeleteRoom failed \(503 unavailable\).*video\.end again/);
    } finally {
      lk.beforeDelete = null;
    }
    expect(lk.rooms.has(m.id)).toBe(true);
    const { online: _online, ...ended } = await as(lkSrv, member!).video.get({ meetingId: m.id });
    expect(ended.status).toBe('ended');
    expect(await as(lkSrv, owner).video.end({ meetingId: m.id })).toEqual(ended);
    expect(lk.rooms.has(m.id)).toBe(false);
    expect(lk.requests.filter((x) => x.method === 'DeleteRoom' && x.body.room === m.id)).toHaveLength(2);
    expect(await systemBodies(lkSrv, room.id, member!)).toEqual(['Meeting "Outage" ended']);
    // Only who may end it asks again.
    await expectTRPCError(as(lkSrv, member!).video.end({ meetingId: m.id }), 'FORBIDDEN');
    expect(lk.requests.filter((x) => x.method === 'DeleteRoom' && x.body.room === m.id)).toHaveLength(2);
  });

  it('a member muted in the room joins calls as a listener until the mute ends: subscribes, publishes nothing, no admin grant', async () => {
    const [owner, mod, bob, carol] = users('owner', 'mod', 'bob', 'carol');
    const room = await groupRoom(lkSrv, owner, [mod!, bob!, carol!]);
    await as(lkSrv, owner).room.setRole({ roomId: room.id, userId: mod!, role: 'moderator' });
    const m = await as(lkSrv, owner).video.create({ roomId: room.id });
    await as(lkSrv, owner).room.mute({ roomId: room.id, userId: bob! });
    await as(lkSrv, owner).room.mute({ roomId: room.id, userId: mod!, until: new Date(Date.now() + 3600_000) });
    const verifier = new TokenVerifier(lk.apiKey, lk.apiSecret);
    const grantOf = async (u: string) => (await verifier.verify((await as(lkSrv, u).video.joinToken({ meetingId: m.id })).token)).video;
    const listener = { roomJoin: true, room: m.id, canSubscribe: true, canPublish: false, canPublishData: false };
    const speaker = { roomJoin: true, room: m.id, canSubscribe: true, canPublish: true, canPublishData: true };
    expect(await grantOf(bob!)).toEqual(listener);
    // A muted moderator gets no roomAdmin either: with it they could give the publishing back to themselves.
    expect(await grantOf(mod!)).toEqual(listener);
    expect(await grantOf(carol!)).toEqual(speaker);
    expect(await grantOf(owner)).toEqual({ ...speaker, roomAdmin: true });
    // LiveKit lets the listener in, without publishing.
    const t = await as(lkSrv, bob!).video.joinToken({ meetingId: m.id });
    expect(await lk.join(t.token)).toMatchObject({ identity: bob, canPublish: false });
    // Unmuted, or the mute over: a new token publishes again (the moderator's admin grant with it).
    await as(lkSrv, owner).room.unmute({ roomId: room.id, userId: bob! });
    expect(await grantOf(bob!)).toEqual(speaker);
    await env.sql("update membership set muted_until = now() - interval '1 second' where room_id = $1 and user_id = $2", [room.id, mod!]);
    expect(await grantOf(mod!)).toEqual({ ...speaker, roomAdmin: true });
  });

  it("a broadcast room's readers (plain members, moderators) join its calls as listeners; its admins and owner speak", async () => {
    const [owner, admin, mod, bob] = users('owner', 'admin', 'mod', 'bob');
    const room = await as(lkSrv, owner).room.create({ kind: 'broadcast', name: 'Town hall', memberIds: [admin!, mod!, bob!] });
    await as(lkSrv, owner).room.setRole({ roomId: room.id, userId: admin!, role: 'admin' });
    await as(lkSrv, owner).room.setRole({ roomId: room.id, userId: mod!, role: 'moderator' });
    const m = await as(lkSrv, admin!).video.create({ roomId: room.id });
    const verifier = new TokenVerifier(lk.apiKey, lk.apiSecret);
    const grantOf = async (u: string) => (await verifier.verify((await as(lkSrv, u).video.joinToken({ meetingId: m.id })).token)).video;
    const listener = { roomJoin: true, room: m.id, canSubscribe: true, canPublish: false, canPublishData: false };
    const speaker = { roomJoin: true, room: m.id, canSubscribe: true, canPublish: true, canPublishData: true, roomAdmin: true };
    expect(await grantOf(bob!)).toEqual(listener);
    expect(await grantOf(mod!)).toEqual(listener);
    expect(await grantOf(admin!)).toEqual(speaker);
    expect(await grantOf(owner)).toEqual(speaker);
  });

  it('video.get({ live: true }) asks LiveKit who is in the room (ListParticipants with a roomAdmin token)', async () => {
    const [owner] = users('owner');
    const room = await groupRoom(lkSrv, owner, []);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id });
    const joinedAt = new Date(Date.now() - 5000);
    lk.rooms.get(m.id)!.participants.push({ sid: 'PA_live1', identity: owner, name: 'Owner', joinedAt: joinedAt.getTime() });
    const got = await as(lkSrv, owner).video.get({ meetingId: m.id, live: true });
    expect(got.online).toEqual([{ userId: owner, name: 'Owner', joinedAt }]);
    const list = lk.requests.filter((r) => r.method === 'ListParticipants' && r.body.room === m.id);
    expect(list).toHaveLength(1);
    expect(list[0]!.grants.video).toMatchObject({ roomAdmin: true, room: m.id });
  });

  it('join tokens and live participant lists spend the action budget: a flood stops before it reaches the provider', async () => {
    await using tight = await server('video-tight', {
      ...videoConfig({ provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret } }),
      limits: { ...TEST_LIMITS, actionsPer10s: 3 },
    });
    const [owner] = users('owner');
    const room = await groupRoom(tight, owner, []);
    const m = await as(tight, owner).video.create({ roomId: room.id });
    const before = lk.requests.filter((r) => r.method === 'ListParticipants' && r.body.room === m.id).length;
    await as(tight, owner).video.joinToken({ meetingId: m.id });
    await as(tight, owner).video.get({ meetingId: m.id, live: true });
    await as(tight, owner).video.get({ meetingId: m.id, live: true });
    await expectTRPCError(as(tight, owner).video.get({ meetingId: m.id, live: true }), 'TOO_MANY_REQUESTS', /too many changes/);
    await expectTRPCError(as(tight, owner).video.joinToken({ meetingId: m.id }), 'TOO_MANY_REQUESTS');
    expect(lk.requests.filter((r) => r.method === 'ListParticipants' && r.body.room === m.id).length - before).toBe(2);
    // Reading the meeting without asking the provider stays free.
    expect((await as(tight, owner).video.get({ meetingId: m.id })).id).toBe(m.id);
  });

  it('provider failures are SERVICE_UNAVAILABLE and leave no meeting behind (wrong LiveKit secret: 401 from Twirp)', async () => {
    await using bad = await server(
      'video-lk-bad',
      videoConfig({ provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: 'not-the-secret-not-the-secret' } }),
    );
    const [owner] = users('owner');
    const room = await groupRoom(bad, owner, []);
    const refused = lk.refused.length;
    await expectTRPCError(as(bad, owner).video.create({ roomId: room.id }), 'SERVICE_UNAVAILABLE', /LiveKit CreateRoom failed \(401 unauthenticated\)/);
    expect(lk.refused.slice(refused)).toEqual([{ method: 'CreateRoom', status: 401, code: 'unauthenticated' }]);
    expect(await as(bad, owner).video.list({ roomId: room.id })).toEqual([]);
  });

  it('a meeting past its expiry reads as ended and cannot be joined, even without a webhook', async () => {
    const [owner] = users('owner');
    const room = await groupRoom(lkSrv, owner, []);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id, ttlMinutes: 5 });
    expect((await as(lkSrv, owner).video.get({ meetingId: m.id })).status).toBe('scheduled');
    await env.sql("update meeting set expires_at = now() - interval '1 second' where id = $1", [m.id]);
    const got = await as(lkSrv, owner).video.get({ meetingId: m.id });
    expect(got.status).toBe('ended');
    expect(got.endedAt).toEqual(got.expiresAt);
    expect((await as(lkSrv, owner).video.list({ roomId: room.id })).find((x) => x.id === m.id)?.status).toBe('ended');
    await expect(as(lkSrv, owner).video.joinToken({ meetingId: m.id })).rejects.toMatchObject({ code: 'PRECONDITION_FAILED' });
  });

  it('the provider calls are idempotent by room name (create twice: one room)', async () => {
    const provider = new LiveKitProvider({ url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret });
    const name = uuid();
    const expiresAt = new Date(Date.now() + 600_000);
    const first = await provider.createRoom({ name, expiresAt });
    const again = await provider.createRoom({ name, expiresAt });
    expect(again).toEqual(first);
    expect(first.providerRoomId).toMatch(/^RM_/);
    await provider.endRoom(name);
    await provider.endRoom(name); // gone already: fine
    expect(await provider.listParticipants(name)).toEqual([]);
  });
});

describe('LiveKit: large rooms and room deletion', () => {
  it('video.create in a room of 14,000 members invites every one of them (inbox writes stay under the bind parameter limit)', async () => {
    const [owner] = users('owner');
    const room = await groupRoom(lkSrv, owner!, []);
    const tag = uuid().slice(0, 8);
    await env.sql(
      `insert into membership (room_id, user_id, role, joined_at, last_read_seq) select $1, 'bm-' || $2 || '-' || g, 'member', now(), 0 from generate_series(1, 14000) g`,
      [room.id, tag],
    );
    const m = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'All hands' });
    const [row] = await env.sql<{ invited: string; users: string; first: string }>(
      `select count(*) as invited, count(distinct user_id) as users, count(*) filter (where seq = 1) as first
         from inbox_event where type = 'meeting.invite' and data->>'meetingId' = $1`,
      [m.id],
    );
    expect(row).toEqual({ invited: '14000', users: '14000', first: '14000' });
    // Every member's cursor moved to that seq, and one of them reads it from their inbox.
    const [cursors] = await env.sql<{ n: string }>(`select count(*) as n from inbox_cursor where user_id like $1 and last_seq = 1`, [`bm-${tag}-%`]);
    expect(cursors).toEqual({ n: '14000' });
    const items = await inboxItems(lkSrv, `bm-${tag}-13999`);
    expect(items.filter((i) => i.type === 'meeting.invite')).toEqual([
      { type: 'meeting.invite', roomId: room.id, meetingId: m.id, title: 'All hands', url: m.url, from: owner, seq: 1 },
    ]);
  });

  it('room.delete ends the provider rooms of its meetings not ended (LiveKit DeleteRoom), leaving ended ones alone', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(lkSrv, owner!, [bob!]);
    const open = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Open' });
    const ended = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Ended' });
    await as(lkSrv, owner!).video.end({ meetingId: ended.id });
    const token = await as(lkSrv, bob!).video.joinToken({ meetingId: open.id });
    expect(token.token).toBeTruthy();
    expect(lk.rooms.has(open.id)).toBe(true);
    const deletesOf = (id: string) => lk.requests.filter((r) => r.method === 'DeleteRoom' && r.body.room === id);
    expect(deletesOf(open.id)).toHaveLength(0);

    await as(lkSrv, owner!).room.delete({ roomId: room.id });
    expect(deletesOf(open.id)).toHaveLength(1);
    expect(deletesOf(open.id)[0]!.grants.video?.roomCreate).toBe(true);
    expect(lk.rooms.has(open.id)).toBe(false);
    // The ended one was ended once, by video.end.
    expect(deletesOf(ended.id)).toHaveLength(1);
    expect(await env.sql('select id from meeting where room_id = $1', [room.id])).toEqual([]);
  });
});

describe('LiveKit webhooks', () => {
  it('room_started, participants, room_finished move the meeting; system messages once; live over wsLink', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(lkSrv, owner, [bob!]);
    // Bob watches his inbox and the room over a real WebSocket.
    await using client = clientFor(lkSrv.url, bob!);
    using inboxRec = recordInbox(client);
    using roomRec = recordEvents(client, { roomId: room.id });
    const inbox = inboxRec.events;
    const events = roomRec.events;
    await inbox.until((xs) => xs.some((x) => x.data.type === 'ready'), 'inbox ready');
    await events.until((xs) => xs.some((x) => x.data.type === 'ready'), 'room ready');
    await using ownerClient = clientFor(lkSrv.url, owner);
    const m = await ownerClient.trpc.video.create.mutate({ roomId: room.id, title: 'Weekly' });
    await ownerClient.close();
    expect(m.createdAt).toBeInstanceOf(Date);
    await inbox.until((xs) => xs.some((x) => x.data.type === 'meeting.invite'), 'the invite');
    expect(inbox.items.find((x) => x.data.type === 'meeting.invite')?.data).toEqual({
      type: 'meeting.invite',
      seq: 2,
      roomId: room.id,
      meetingId: m.id,
      title: 'Weekly',
      url: lk.url.replace(/^http/, 'ws'),
      from: owner,
    });

    const t0 = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
    const started = livekitEvent({ event: 'room_started', room: m.id, createdAt: t0 });
    expect(await lkPost(started)).toEqual({ status: 200, body: { ok: true, outcome: 'processed' } });
    const live = await as(lkSrv, bob!).video.get({ meetingId: m.id });
    expect(live).toMatchObject({ status: 'live', startedAt: t0, endedAt: null });
    await events.until((xs) => xs.some((x) => x.data.type === 'message.new' && x.data.message.body === 'Meeting "Weekly" started'), 'started message');

    const joinedAt = new Date(t0.getTime() + 1000);
    const joined = livekitEvent({ event: 'participant_joined', room: m.id, createdAt: joinedAt, participant: { sid: 'PA_1', identity: bob!, joinedAt } });
    const joinedReq = { authorization: await signLiveKit(joined, lk.apiKey, lk.apiSecret) };
    expect((await postWebhook(lkHook(lkSrv), joined, joinedReq)).body.outcome).toBe('processed');
    // The very same delivery again (a provider retry): processed once.
    expect(await postWebhook(lkHook(lkSrv), joined, joinedReq)).toEqual({ status: 200, body: { ok: true, outcome: 'duplicate' } });
    expect((await lkPost(started)).body.outcome).toBe('duplicate');
    expect((await as(lkSrv, bob!).video.get({ meetingId: m.id })).participants).toEqual([{ userId: bob, joinedAt, leftAt: null }]);

    const leftAt = new Date(t0.getTime() + 30_000);
    await lkPost(livekitEvent({ event: 'participant_left', room: m.id, createdAt: leftAt, participant: { sid: 'PA_1', identity: bob!, joinedAt } }));
    const endAt = new Date(t0.getTime() + 40_000);
    const finished = livekitEvent({ event: 'room_finished', room: m.id, createdAt: endAt });
    expect((await lkPost(finished)).body.outcome).toBe('processed');
    expect((await lkPost(finished)).body.outcome).toBe('duplicate');
    // A late room_started (another event id) does not reopen it.
    expect((await lkPost(livekitEvent({ event: 'room_started', room: m.id }))).body.outcome).toBe('processed');

    const final = await as(lkSrv, owner).video.get({ meetingId: m.id });
    expect(final).toMatchObject({ status: 'ended', startedAt: t0, endedAt: endAt, participants: [{ userId: bob, joinedAt, leftAt }] });
    await events.until((xs) => xs.some((x) => x.data.type === 'message.new' && x.data.message.body === 'Meeting "Weekly" ended'), 'ended message');
    expect(await systemBodies(lkSrv, room.id, bob!)).toEqual(['Meeting "Weekly" started', 'Meeting "Weekly" ended']);
    const sys = events.items.filter((x) => x.data.type === 'message.new' && x.data.message.kind === 'system').map((x) => (x.data as { message: { body: string } }).message.body);
    expect(sys).toEqual(['Meeting "Weekly" started', 'Meeting "Weekly" ended']);
    expect(inbox.error).toBeNull();
    expect(events.error).toBeNull();
  });

  it('out of order: room_finished before room_started never reopens; participant_left before participant_joined merges', async () => {
    const [owner, bob, carol] = users('owner', 'bob', 'carol');
    const room = await groupRoom(lkSrv, owner, [bob!, carol!]);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id, title: 'Late' });
    const t0 = new Date(Math.floor(Date.now() / 1000) * 1000 - 120_000);
    const at = (s: number) => new Date(t0.getTime() + s * 1000);

    // Carol's leave arrives before her join; Bob joins before room_started arrives.
    await lkPost(livekitEvent({ event: 'participant_left', room: m.id, createdAt: at(50), participant: { sid: 'PA_c', identity: carol!, joinedAt: at(10) } }));
    expect((await meetingRow(m.id))!.status).toBe('scheduled');
    await lkPost(livekitEvent({ event: 'participant_joined', room: m.id, createdAt: at(5), participant: { sid: 'PA_b', identity: bob!, joinedAt: at(5) } }));
    expect(await as(lkSrv, owner).video.get({ meetingId: m.id })).toMatchObject({ status: 'live', startedAt: at(5) });
    await lkPost(livekitEvent({ event: 'participant_joined', room: m.id, createdAt: at(10), participant: { sid: 'PA_c', identity: carol!, joinedAt: at(10) } }));
    await lkPost(livekitEvent({ event: 'room_started', room: m.id, createdAt: at(0) }));
    expect((await as(lkSrv, owner).video.get({ meetingId: m.id })).participants).toEqual([
      { userId: bob, joinedAt: at(5), leftAt: null },
      { userId: carol, joinedAt: at(10), leftAt: at(50) },
    ]);

    // Another meeting: finished arrives first; started afterwards must not reopen it.
    const m2 = await as(lkSrv, owner).video.create({ roomId: room.id, title: 'Flipped' });
    await lkPost(livekitEvent({ event: 'room_finished', room: m2.id, createdAt: at(90) }));
    await lkPost(livekitEvent({ event: 'room_started', room: m2.id, createdAt: at(0) }));
    await lkPost(livekitEvent({ event: 'participant_joined', room: m2.id, createdAt: at(1), participant: { sid: 'PA_x', identity: bob!, joinedAt: at(1) } }));
    expect(await as(lkSrv, owner).video.get({ meetingId: m2.id })).toMatchObject({ status: 'ended', startedAt: null, endedAt: at(90) });
    expect(await systemBodies(lkSrv, room.id, owner)).toEqual(['Meeting "Late" started', 'Meeting "Flipped" ended']);
  });

  it('a join to an ended meeting (a token minted before video.end: LiveKit creates the room again on join) ends the provider room again', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(lkSrv, owner, [bob!]);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id, title: 'Over' });
    const token = await as(lkSrv, bob!).video.joinToken({ meetingId: m.id });
    await as(lkSrv, owner).video.end({ meetingId: m.id });
    expect(lk.rooms.has(m.id)).toBe(false);

    // Bob reconnects with the token he had: LiveKit creates the room anew and lets him in.
    const p = await lk.join(token.token);
    const joinedAt = new Date(p.joinedAt);
    const joined = livekitEvent({ event: 'participant_joined', room: m.id, createdAt: joinedAt, participant: { sid: p.sid, identity: bob!, joinedAt } });
    expect((await lkPost(joined)).body.outcome).toBe('processed');
    expect({ online: lk.rooms.get(m.id)?.participants.map((x) => x.identity) ?? [] }).toEqual({ online: [] });
    expect(lk.requests.filter((r) => r.method === 'DeleteRoom' && r.body.room === m.id)).toHaveLength(2);
    // The meeting stays ended, with its one "ended" message.
    expect(await as(lkSrv, owner).video.get({ meetingId: m.id })).toMatchObject({ status: 'ended' });
    expect(await systemBodies(lkSrv, room.id, owner)).toEqual(['Meeting "Over" ended']);
  });

  it('refuses unsigned, wrongly signed, tampered and stale deliveries with 401 and changes nothing', async () => {
    const [owner] = users('owner');
    const room = await groupRoom(lkSrv, owner, []);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id });
    const body = livekitEvent({ event: 'room_started', room: m.id, id: `EV_${uuid()}` });
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, Record<string, string>, string][] = [
      ['unsigned', {}, body],
      ['garbage', { authorization: 'Bearer not-a-jwt' }, body],
      ['other secret', { authorization: await signLiveKit(body, lk.apiKey, 'some-other-secret-some-other') }, body],
      ['other key', { authorization: await signLiveKit(body, 'APIother', lk.apiSecret) }, body],
      ['tampered body', { authorization: await signLiveKit(body, lk.apiKey, lk.apiSecret) }, body.replace('room_started', 'room_finished')],
      ['expired', { authorization: signLiveKitAt(body, lk.apiKey, lk.apiSecret, { nbf: now - 3600, exp: now - 3000 }) }, body],
      ['issued long ago', { authorization: signLiveKitAt(body, lk.apiKey, lk.apiSecret, { nbf: now - 3600, exp: now + 3600 }) }, body],
    ];
    for (const [what, headers, b] of cases) {
      const res = await postWebhook(lkHook(lkSrv), b, headers);
      expect({ what, status: res.status }).toEqual({ what, status: 401 });
      expect(typeof res.body.error).toBe('string');
    }
    expect((await meetingRow(m.id))!.status).toBe('scheduled');
    // None of them used up the event id: the genuine delivery is processed.
    expect((await lkPost(body)).body.outcome).toBe('processed');
    expect((await meetingRow(m.id))!.status).toBe('live');
  });

  it('concurrent duplicate deliveries are processed exactly once; foreign rooms and other events are acknowledged', async () => {
    const [owner] = users('owner');
    const room = await groupRoom(lkSrv, owner, []);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id, title: 'Race' });
    const body = livekitEvent({ event: 'room_started', room: m.id });
    const headers = { authorization: await signLiveKit(body, lk.apiKey, lk.apiSecret) };
    const results = await Promise.all(Array.from({ length: 8 }, () => postWebhook(lkHook(lkSrv), body, headers)));
    expect(results.map((r) => r.status)).toEqual(Array(8).fill(200));
    expect(results.map((r) => r.body.outcome).sort()).toEqual([...Array(7).fill('duplicate'), 'processed']);
    expect(await systemBodies(lkSrv, room.id, owner)).toEqual(['Meeting "Race" started']);

    expect((await lkPost(livekitEvent({ event: 'room_started', room: 'not-ours' }))).body.outcome).toBe('ignored');
    expect((await lkPost(livekitEvent({ event: 'room_started', room: uuid() }))).body.outcome).toBe('ignored');
    // Malformed (but signed) bodies are a 400; oversized ones a 413; other methods a 405.
    const junk = '{"event": 12';
    expect((await postWebhook(lkHook(lkSrv), junk, { authorization: await signLiveKit(junk, lk.apiKey, lk.apiSecret) })).status).toBe(400);
    expect((await postWebhook(lkHook(lkSrv), 'x'.repeat(300 * 1024))).status).toBe(413);
    expect((await fetch(lkHook(lkSrv))).status).toBe(405);
    // The other provider's endpoint is not served by a LiveKit server.
    expect((await postWebhook(dailyHook(lkSrv), dailyEvent('meeting.started', { room: m.id }), signDaily('{}', DAILY_SECRET))).status).toBe(404);
  });
});

describe('Daily', () => {
  it('creates private rooms that expire with the meeting and mints meeting tokens (is_owner by role, exp by ttl)', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(dailySrv, owner, [bob!]);
    const m = await as(dailySrv, owner).video.create({ roomId: room.id, title: 'Daily sync', ttlMinutes: 45 });
    expect(m).toMatchObject({ provider: 'daily', status: 'scheduled', url: `https://${daily.domain}.daily.co/${m.id}` });
    const post = daily.requests.filter((r) => r.method === 'POST' && r.path === '/rooms' && r.body.name === m.id);
    expect(post).toHaveLength(1);
    expect(post[0]!.body).toEqual({
      name: m.id,
      privacy: 'private',
      properties: { exp: Math.ceil(m.expiresAt.getTime() / 1000), eject_at_room_exp: true },
    });
    expect((await inboxItems(dailySrv, bob!)).filter((i) => i.type === 'meeting.invite')).toEqual([
      { type: 'meeting.invite', seq: 2, roomId: room.id, meetingId: m.id, title: 'Daily sync', url: m.url, from: owner },
    ]);

    for (const [u, owns] of [
      [owner, true],
      [bob!, false],
    ] as const) {
      const before = Math.floor(Date.now() / 1000);
      const t = await as(dailySrv, who(u, `Name of ${u}`)).video.joinToken({ meetingId: m.id });
      const minted = daily.tokens.find((x) => x.token === t.token);
      expect(minted).toBeDefined();
      expect(t).toEqual({ provider: 'daily', url: m.url, token: minted!.token, expiresAt: new Date(minted!.properties.exp * 1000) });
      expect(minted!.properties).toEqual({ room_name: m.id, user_id: u, user_name: `Name of ${u}`, is_owner: owns, exp: minted!.properties.exp });
      expect(minted!.properties.exp).toBeGreaterThanOrEqual(before + TOKEN_TTL);
      expect(minted!.properties.exp).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + TOKEN_TTL);
    }

    // Ending deletes the Daily room.
    await as(dailySrv, owner).video.end({ meetingId: m.id });
    expect(daily.rooms.has(m.id)).toBe(false);
    expect(daily.requests.filter((r) => r.method === 'DELETE' && r.path === `/rooms/${m.id}`)).toHaveLength(1);
  });

  it('a member muted in the room gets a Daily token that sends no media (permissions.canSend false, no owner) until unmuted', async () => {
    const [owner, mod, bob] = users('owner', 'mod', 'bob');
    const room = await groupRoom(dailySrv, owner, [mod!, bob!]);
    await as(dailySrv, owner).room.setRole({ roomId: room.id, userId: mod!, role: 'moderator' });
    const m = await as(dailySrv, owner).video.create({ roomId: room.id });
    await as(dailySrv, owner).room.mute({ roomId: room.id, userId: bob! });
    await as(dailySrv, owner).room.mute({ roomId: room.id, userId: mod! });
    const propertiesOf = async (u: string) => {
      const t = await as(dailySrv, u).video.joinToken({ meetingId: m.id });
      const { exp: _exp, ...rest } = daily.tokens.find((x) => x.token === t.token)!.properties;
      return rest;
    };
    const base = { room_name: m.id, user_name: expect.any(String) };
    expect(await propertiesOf(bob!)).toEqual({ ...base, user_id: bob, is_owner: false, permissions: { canSend: false } });
    expect(await propertiesOf(mod!)).toEqual({ ...base, user_id: mod, is_owner: false, permissions: { canSend: false } });
    await as(dailySrv, owner).room.unmute({ roomId: room.id, userId: bob! });
    await as(dailySrv, owner).room.unmute({ roomId: room.id, userId: mod! });
    expect(await propertiesOf(bob!)).toEqual({ ...base, user_id: bob, is_owner: false });
    expect(await propertiesOf(mod!)).toEqual({ ...base, user_id: mod, is_owner: true });
  });

  it('signed webhooks move the meeting; unsigned, wrongly signed and stale ones get 401; replays are de-duplicated', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(dailySrv, owner, [bob!]);
    const m = await as(dailySrv, owner).video.create({ roomId: room.id, title: 'Hooks' });
    const t0 = Math.floor(Date.now() / 1000) - 300;

    const started = dailyEvent('meeting.started', { start_ts: t0, meeting_id: uuid(), room: m.id });
    const rejects: [string, Record<string, string>][] = [
      ['unsigned', {}],
      ['wrong secret', signDaily(started, Buffer.from('another secret entirely').toString('base64'))],
      ['signature of another body', { ...signDaily(started.replace('meeting.started', 'meeting.ended'), DAILY_SECRET) }],
      ['stale', signDaily(started, DAILY_SECRET, String(Math.floor(Date.now() / 1000) - 3600))],
      ['from the future', signDaily(started, DAILY_SECRET, String(Math.floor(Date.now() / 1000) + 3600))],
      ['timestamp only', { 'x-webhook-timestamp': String(Math.floor(Date.now() / 1000)) }],
    ];
    for (const [what, headers] of rejects) {
      const res = await postWebhook(dailyHook(dailySrv), started, headers);
      expect({ what, status: res.status }).toEqual({ what, status: 401 });
    }
    expect((await meetingRow(m.id))!.status).toBe('scheduled');

    // Daily's unsigned verification probe (sent while a webhook is created) is acknowledged, nothing more.
    expect(await postWebhook(dailyHook(dailySrv), '{"test":"test"}')).toEqual({ status: 200, body: { ok: true, outcome: 'probe' } });

    expect((await dailyPost(started)).body.outcome).toBe('processed');
    expect((await dailyPost(started)).body.outcome).toBe('duplicate');
    // Milliseconds timestamps are accepted too.
    const joined = dailyEvent('participant.joined', { room: m.id, user_id: bob, user_name: 'Bob', session_id: 'sess-b', joined_at: t0 + 2, owner: false });
    expect((await postWebhook(dailyHook(dailySrv), joined, signDaily(joined, DAILY_SECRET, String(Date.now())))).body.outcome).toBe('processed');
    // Left (with duration) before the next join of another session.
    await dailyPost(dailyEvent('participant.left', { room: m.id, user_id: bob, user_name: 'Bob', session_id: 'sess-b', joined_at: t0 + 2, duration: 60 }));
    await dailyPost(dailyEvent('meeting.ended', { start_ts: t0, end_ts: t0 + 90, meeting_id: uuid(), room: m.id }));
    await dailyPost(dailyEvent('meeting.started', { start_ts: t0 + 100, meeting_id: uuid(), room: m.id }));

    expect(await as(dailySrv, bob!).video.get({ meetingId: m.id })).toMatchObject({
      status: 'ended',
      startedAt: new Date(t0 * 1000),
      endedAt: new Date((t0 + 90) * 1000),
      participants: [{ userId: bob, joinedAt: new Date((t0 + 2) * 1000), leftAt: new Date((t0 + 62) * 1000) }],
    });
    expect(await systemBodies(dailySrv, room.id, bob!)).toEqual(['Meeting "Hooks" started', 'Meeting "Hooks" ended']);
  });

  it('user ids over Daily\'s 36 characters get a stable hashed user_id that webhooks map back', async () => {
    const owner = `owner-${uuid()}-with-a-long-id`;
    const room = await groupRoom(dailySrv, owner, []);
    const m = await as(dailySrv, owner).video.create({ roomId: room.id });
    const t = await as(dailySrv, owner).video.joinToken({ meetingId: m.id });
    const identity = daily.tokens.find((x) => x.token === t.token)!.properties.user_id as string;
    expect(identity).toHaveLength(36);
    expect(identity).toBe(new DailyProvider({ apiKey: '', apiUrl: '', webhookSecret: null }).identityOf(owner));
    const at = Math.floor(Date.now() / 1000);
    await dailyPost(dailyEvent('participant.joined', { room: m.id, user_id: identity, user_name: 'O', session_id: 'sess-long', joined_at: at }));
    expect((await as(dailySrv, owner).video.get({ meetingId: m.id })).participants).toEqual([
      { userId: owner, joinedAt: new Date(at * 1000), leftAt: null },
    ]);
  });

  it('Daily errors (bad API key) are SERVICE_UNAVAILABLE with the provider reason; webhooks without a secret are refused', async () => {
    await using bad = await server(
      'video-daily-bad',
      videoConfig({ provider: 'daily', daily: { apiKey: 'wrong-key', apiUrl: daily.url, webhookSecret: null } }),
    );
    const [owner] = users('owner');
    const room = await groupRoom(bad, owner, []);
    await expectTRPCError(as(bad, owner).video.create({ roomId: room.id }), 'SERVICE_UNAVAILABLE', /401 authentication-error/);
    expect(await as(bad, owner).video.list({ roomId: room.id })).toEqual([]);
    const body = dailyEvent('meeting.started', { room: uuid() });
    const res = await postWebhook(dailyHook(bad), body, signDaily(body, DAILY_SECRET));
    expect(res.status).toBe(401);
    expect(res.body.error).toMatch(/DAILY_WEBHOOK_SECRET/);
  });

  it('create is idempotent on Daily too (an existing room of that name is taken)', async () => {
    const provider = new DailyProvider({ apiKey: daily.apiKey, apiUrl: daily.url, webhookSecret: null });
    const name = uuid();
    const expiresAt = new Date(Date.now() + 600_000);
    const first = await provider.createRoom({ name, expiresAt });
    expect(await provider.createRoom({ name, expiresAt })).toEqual(first);
    daily.rooms.get(name)!.presence.push({ id: 'sess-1', userId: 'u1', userName: 'U', joinTime: new Date(1_700_000_000_000).toISOString(), duration: 5 });
    expect(await provider.listParticipants(name)).toEqual([{ userId: 'u1', name: 'U', sessionId: 'sess-1', joinedAt: new Date(1_700_000_000_000) }]);
    await provider.endRoom(name);
    await provider.endRoom(name);
    expect(await provider.listParticipants(name)).toEqual([]);
  });
});

describe('banned and removed users leave the room\'s calls', () => {
  /** A room of owner, a moderator and the given members, with a meeting, a second one not joined and an ended one. */
  async function callRoom(s: TestServer, owner: string, mod: string, members: string[]) {
    const room = await groupRoom(s, owner, [mod, ...members]);
    await as(s, owner).room.setRole({ roomId: room.id, userId: mod, role: 'moderator' });
    const live = await as(s, owner).video.create({ roomId: room.id, title: 'In call' });
    const idle = await as(s, owner).video.create({ roomId: room.id, title: 'Nobody here' });
    const ended = await as(s, owner).video.create({ roomId: room.id, title: 'Over' });
    await as(s, owner).video.end({ meetingId: ended.id });
    return { room, live, idle, ended };
  }

  /** The removal queue's rows of a room (src/store/video-removals.ts), by user. */
  const queued = (roomId: string) =>
    lkSrv.app.services.store
      .db()
      .selectFrom('video_removal')
      .select(['user_id', 'reason', 'attempts'])
      .where('room_id', '=', roomId)
      .orderBy('user_id')
      .execute();

  const online = async (s: TestServer, reader: string, meetingId: string) =>
    ((await as(s, reader).video.get({ meetingId, live: true })).online ?? []).map((p) => p.userId).sort();

  for (const action of ['ban', 'removeMember'] as const) {
    it(`LiveKit: room.${action} during a call sends RemoveParticipant for that identity; the user is out and gets no new token`, async () => {
      const [owner, mod, bob, carol] = users('owner', 'mod', 'bob', 'carol');
      const { room, live, idle, ended } = await callRoom(lkSrv, owner, mod!, [bob!, carol!]);
      // Bob and Carol connect with the tokens they were given.
      const bobToken = await as(lkSrv, bob!).video.joinToken({ meetingId: live.id });
      await lk.join(bobToken.token);
      await lk.join((await as(lkSrv, carol!).video.joinToken({ meetingId: live.id })).token);
      expect(await online(lkSrv, mod!, live.id)).toEqual([bob, carol].sort());
      const removals = (id: string) => lk.requests.filter((r) => r.method === 'RemoveParticipant' && r.body.room === id);

      const removed = nextRemoval(lkSrv, room.id, bob!);
      await as(lkSrv, mod!).room[action]({ roomId: room.id, userId: bob! });
      expect(await removed).toMatchObject({ outcome: 'removed', attempts: 1 });

      expect(removals(live.id).map((r) => r.body)).toEqual([{ room: live.id, identity: bob }]);
      // Signed by the server for that room with the admin grant RemoveParticipant needs.
      expect(removals(live.id)[0]!.grants.video).toMatchObject({ roomAdmin: true, room: live.id });
      // Every meeting not ended is covered (Bob not in it: LiveKit's not_found is no error); ended ones are left alone.
      expect(removals(idle.id).map((r) => r.body)).toEqual([{ room: idle.id, identity: bob }]);
      expect(removals(ended.id)).toEqual([]);
      expect(await online(lkSrv, mod!, live.id)).toEqual([carol]);
      await expectTRPCError(as(lkSrv, bob!).video.joinToken({ meetingId: live.id }), 'NOT_FOUND', /meeting not found/);
      await expectTRPCError(as(lkSrv, bob!).video.get({ meetingId: live.id, live: true }), 'NOT_FOUND');
    });

    it(`Daily: room.${action} during a call ejects that user_id with ban; the old token cannot rejoin and no new one is minted`, async () => {
      const [owner, mod, carol] = users('owner', 'mod', 'carol');
      // Longer than Daily's 36 characters: ejected by the same hashed user_id its token carries.
      const bob = `bob-${uuid()}-with-a-long-id`;
      const { room, live, idle, ended } = await callRoom(dailySrv, owner, mod!, [bob, carol!]);
      const bobToken = await as(dailySrv, bob).video.joinToken({ meetingId: live.id });
      const identity = daily.tokens.find((t) => t.token === bobToken.token)!.properties.user_id as string;
      expect(identity).toBe(new DailyProvider({ apiKey: '', apiUrl: '', webhookSecret: null }).identityOf(bob));
      daily.join(bobToken.token);
      daily.join((await as(dailySrv, carol!).video.joinToken({ meetingId: live.id })).token);
      expect(await online(dailySrv, mod!, live.id)).toEqual([identity, carol].sort());
      const ejects = (id: string) => daily.requests.filter((r) => r.method === 'POST' && r.path === `/rooms/${id}/eject`);

      const removed = nextRemoval(dailySrv, room.id, bob);
      await as(dailySrv, mod!).room[action]({ roomId: room.id, userId: bob });
      expect(await removed).toMatchObject({ outcome: 'removed', attempts: 1 });

      expect(ejects(live.id).map((r) => r.body)).toEqual([{ user_ids: [identity], ban: true }]);
      expect(ejects(idle.id).map((r) => r.body)).toEqual([{ user_ids: [identity], ban: true }]);
      expect(ejects(ended.id)).toEqual([]);
      expect(await online(dailySrv, mod!, live.id)).toEqual([carol]);
      // The token minted before is refused by Daily while the meeting lasts; the server mints no other.
      expect(() => daily.join(bobToken.token)).toThrow(/ejected/);
      await expectTRPCError(as(dailySrv, bob).video.joinToken({ meetingId: live.id }), 'NOT_FOUND', /meeting not found/);
    });
  }

  it('a ban of a user who is in no call (or no member at all) is no error on either provider', async () => {
    const asked = {
      livekit: (id: string) => lk.requests.filter((r) => r.method === 'RemoveParticipant' && r.body.room === id).map((r) => r.body.identity),
      daily: (id: string) => daily.requests.filter((r) => r.path === `/rooms/${id}/eject`).map((r) => (r.body.user_ids as string[])[0]),
    };
    for (const [s, provider] of [
      [lkSrv, 'livekit'],
      [dailySrv, 'daily'],
    ] as const) {
      const [owner, mod, bob, stranger] = users('owner', 'mod', 'bob', 'stranger');
      const { room, live } = await callRoom(s, owner, mod!, [bob!]);
      const removed = [nextRemoval(s, room.id, bob!), nextRemoval(s, room.id, stranger!)];
      await as(s, mod!).room.ban({ roomId: room.id, userId: bob! });
      await as(s, mod!).room.ban({ roomId: room.id, userId: stranger! });
      expect((await Promise.all(removed)).map((o) => o.outcome)).toEqual(['removed', 'removed']);
      expect((await as(s, mod!).room.bans({ roomId: room.id })).map((b) => b.userId).sort()).toEqual([bob, stranger].sort());
      // Asked for both, once each (the provider answers not_found / no ejectedIds), and nothing failed.
      // The removal worker takes the two bans' removals in either order: no order is promised.
      expect({ provider, asked: asked[provider](live.id).sort() }).toEqual({ provider, asked: [bob, stranger].sort() });
      expect(await online(s, owner, live.id)).toEqual([]);
    }
  });

  it('the ban answers without waiting for the provider; a failed removal is retried until the provider takes the user out', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(lkSrv, owner, [bob!]);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id });
    await lk.join((await as(lkSrv, bob!).video.joinToken({ meetingId: m.id })).token);
    // The provider holds the first RemoveParticipant until the ban has answered, then fails it and the next one (an outage).
    let answered!: () => void;
    const banAnswered = new Promise<void>((resolve) => (answered = resolve));
    let asked = 0;
    lk.beforeRemove = async (identity, name) => {
      if (identity !== bob || name !== m.id) return undefined;
      asked++;
      if (asked === 1) await banAnswered;
      return asked <= 2 ? 'fail' : undefined;
    };
    const removed = removalOutcomes(lkSrv, room.id, bob!, 'removed');
    let outcomes: RemovalOutcome[] = [];
    const failedBefore = lkSrv.app.services.deps.counters.videoRemovalsFailed;
    const removalsBefore = lkSrv.app.services.deps.counters.videoRemovals;
    try {
      await as(lkSrv, owner).room.ban({ roomId: room.id, userId: bob! });
      // Answered while the provider still holds the call: the ban has committed and stands.
      expect(lk.rooms.get(m.id)!.participants.map((p) => p.identity)).toEqual([bob]);
      expect((await as(lkSrv, owner).room.bans({ roomId: room.id })).map((b) => b.userId)).toEqual([bob]);
      await expectTRPCError(as(lkSrv, bob!).video.joinToken({ meetingId: m.id }), 'NOT_FOUND');
      answered();
      outcomes = await removed;
    } finally {
      lk.beforeRemove = null;
    }
    expect(outcomes.map((o) => [o.outcome, o.attempts, o.reason])).toEqual([
      ['retry', 1, 'banned'],
      ['retry', 2, 'banned'],
      ['removed', 3, 'banned'],
    ]);
    expect(outcomes[0]!.error).toMatch(/unavailable|service unavailable/);
    expect(asked).toBe(3);
    expect(lk.rooms.get(m.id)!.participants).toEqual([]);
    expect(lkSrv.app.services.deps.counters.videoRemovalsFailed - failedBefore).toBe(2);
    expect(lkSrv.app.services.deps.counters.videoRemovals - removalsBefore).toBe(1);
    const metrics = await (await fetch(`${lkSrv.url}/metrics`)).text();
    expect(metrics).toMatch(/\nchat_video_removals_total \d+\n/);
    expect(metrics).toMatch(/\nchat_video_removals_failed_total \d+\n/);
    // Done: nothing is left in the queue.
    expect(await queued(room.id)).toEqual([]);
  });

  it('a removal queued while no node sends it is checked again when sent: a user unbanned and added back meanwhile stays in the call', async () => {
    const [owner, bob, carol] = users('owner', 'bob', 'carol');
    const room = await groupRoom(lkSrv, owner, [bob!, carol!]);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id });
    await lk.join((await as(lkSrv, bob!).video.joinToken({ meetingId: m.id })).token);
    await lk.join((await as(lkSrv, carol!).video.joinToken({ meetingId: m.id })).token);
    const removals = lkSrv.app.services.meetings.removals;
    const asked = () => lk.requests.filter((r) => r.method === 'RemoveParticipant' && r.body.room === m.id).map((r) => r.body.identity);
    // This node's sender is stopped (as if every node were down): the bans and the removal stay queued.
    await removals.stop();
    try {
      await as(lkSrv, owner).room.ban({ roomId: room.id, userId: bob! });
      await as(lkSrv, owner).room.unban({ roomId: room.id, userId: bob! });
      await as(lkSrv, owner).room.addMembers({ roomId: room.id, userIds: [bob!] });
      // Carol is removed twice: one row per room and user, sent once.
      await as(lkSrv, owner).room.removeMember({ roomId: room.id, userId: carol! });
      await as(lkSrv, owner).room.addMembers({ roomId: room.id, userIds: [carol!] });
      await as(lkSrv, owner).room.removeMember({ roomId: room.id, userId: carol! });
      expect(await queued(room.id)).toEqual([
        { user_id: bob, reason: 'banned', attempts: 0 },
        { user_id: carol, reason: 'removed', attempts: 0 },
      ]);
      expect(asked()).toEqual([]);
    } finally {
      const settled = Promise.all([nextRemoval(lkSrv, room.id, bob!), nextRemoval(lkSrv, room.id, carol!)]);
      removals.start();
      const [forBob, forCarol] = await settled;
      // Bob may be in the room's calls again: left alone. Carol is out.
      expect(forBob).toMatchObject({ outcome: 'not_needed', reason: 'banned' });
      expect(forCarol).toMatchObject({ outcome: 'removed', reason: 'removed', attempts: 1 });
    }
    expect(asked()).toEqual([carol]);
    expect(lk.rooms.get(m.id)!.participants.map((p) => p.identity)).toEqual([bob]);
    expect(await queued(room.id)).toEqual([]);
  });

  it('a round that comes before a row is due by the database\'s clock schedules itself for then, not for the next poll', async () => {
    // A timer may fire a little early and a node's clock may be behind the database's: here the row is
    // due 300 ms after the round that looks for it, and the poll is ten minutes off (TEST_REMOVALS).
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(lkSrv, owner, [bob!]);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id });
    await lk.join((await as(lkSrv, bob!).video.joinToken({ meetingId: m.id })).token);
    const removals = lkSrv.app.services.meetings.removals;
    const db = lkSrv.app.services.store.db();
    await removals.stop();
    let sent: Promise<RemovalOutcome> | null = null;
    try {
      await as(lkSrv, owner).room.ban({ roomId: room.id, userId: bob! });
      await db
        .updateTable('video_removal')
        .set({ next_attempt_at: sql<Date>`clock_timestamp() + interval '300 milliseconds'` })
        .where('room_id', '=', room.id)
        .execute();
      sent = nextRemoval(lkSrv, room.id, bob!);
    } finally {
      removals.start();
    }
    // The round at start finds nothing due; without another wake-up the row is sent when it is due.
    expect(await sent).toMatchObject({ outcome: 'removed', reason: 'banned', attempts: 1 });
    expect(lk.rooms.get(m.id)!.participants).toEqual([]);
    expect(await queued(room.id)).toEqual([]);
  });

  it('a removal the node that queued it never sends is sent by another node on its poll', async () => {
    // Another node on the same database and provider, polling every 50 ms; this file's node does not send.
    await using other = await server(
      'video-lk-poller',
      videoConfig({ provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret }, removals: { ...TEST_REMOVALS, pollMs: 50 } }),
    );
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(lkSrv, owner, [bob!]);
    const m = await as(lkSrv, owner).video.create({ roomId: room.id });
    await lk.join((await as(lkSrv, bob!).video.joinToken({ meetingId: m.id })).token);
    const removals = lkSrv.app.services.meetings.removals;
    await removals.stop();
    try {
      const sent = nextRemoval(other, room.id, bob!);
      await as(lkSrv, owner).room.ban({ roomId: room.id, userId: bob! });
      expect(await sent).toMatchObject({ outcome: 'removed', reason: 'banned', attempts: 1 });
    } finally {
      removals.start();
    }
    expect(lk.rooms.get(m.id)!.participants).toEqual([]);
    expect(await queued(room.id)).toEqual([]);
  });

  it('a room without a meeting not ended queues nothing; a deleted room takes its queued removals with it', async () => {
    const [owner, bob, carol] = users('owner', 'bob', 'carol');
    const quiet = await groupRoom(lkSrv, owner, [bob!]);
    const ended = await as(lkSrv, owner).video.create({ roomId: quiet.id });
    await as(lkSrv, owner).video.end({ meetingId: ended.id });
    const removals = lkSrv.app.services.meetings.removals;
    await removals.stop();
    try {
      await as(lkSrv, owner).room.ban({ roomId: quiet.id, userId: bob! });
      expect(await queued(quiet.id)).toEqual([]);
      const doomed = await groupRoom(lkSrv, owner, [carol!]);
      await as(lkSrv, owner).video.create({ roomId: doomed.id });
      await as(lkSrv, owner).room.ban({ roomId: doomed.id, userId: carol! });
      expect(await queued(doomed.id)).toEqual([{ user_id: carol, reason: 'banned', attempts: 0 }]);
      await as(lkSrv, owner).room.delete({ roomId: doomed.id });
      expect(await queued(doomed.id)).toEqual([]);
    } finally {
      removals.start();
    }
  });

  it("a node of another provider leaves a room's removal to the nodes of its meetings' provider; once no meeting is left, any node finishes it", async () => {
    const [owner, bob, carol] = users('owner', 'bob', 'carol');
    const live = await groupRoom(lkSrv, owner, [bob!]);
    await as(lkSrv, owner).video.create({ roomId: live.id });
    const over = await groupRoom(lkSrv, owner, [carol!]);
    const ended = await as(lkSrv, owner).video.create({ roomId: over.id });
    const removals = lkSrv.app.services.meetings.removals;
    const db = lkSrv.app.services.store.db();
    await removals.stop();
    let sent: Promise<RemovalOutcome> | null = null;
    try {
      await as(lkSrv, owner).room.ban({ roomId: live.id, userId: bob! });
      await as(lkSrv, owner).room.ban({ roomId: over.id, userId: carol! });
      await as(lkSrv, owner).video.end({ meetingId: ended.id });
      // What a Daily node claims: not Bob's (his room's call runs on LiveKit), Carol's (no call is left in her room).
      const claimed = await claimDueRemovals(db, 'daily', 100, 60_000);
      expect(claimed.map((r) => [r.room_id, r.user_id])).toEqual([[over.id, carol]]);
      expect(await finishRemoval(db, claimed[0]!)).toBe(true);
      // Nor is a Daily node woken for Bob's; a LiveKit node finds it due.
      expect(await nextRemovalDueInMs(db, 'daily')).toBeNull();
      expect(await nextRemovalDueInMs(db, 'livekit')).toBeLessThanOrEqual(0);
      sent = nextRemoval(lkSrv, live.id, bob!);
    } finally {
      removals.start();
    }
    // Sent by the LiveKit node on its first attempt: no other node took an attempt of it.
    expect(await sent).toMatchObject({ outcome: 'removed', reason: 'banned', attempts: 1 });
    expect(await queued(live.id)).toEqual([]);
    expect(await queued(over.id)).toEqual([]);
  });
});
