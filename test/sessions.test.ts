/**
 * Long-lived sessions (issue 6), against real servers (PostgreSQL, Redis): dead connections found by
 * the keepAlive, token expiry on open sockets (4001), auth.refresh on the live connection, admin
 * revocation across two nodes (4003) with the iat denylist, membership changes ending streams, and
 * subscriptions refused over HTTP (SSE), where none of these guards would apply.
 */
import { Redis } from 'ioredis';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyOf } from '../src/domain/ids.js';
import type { RedisBus } from '../src/realtime/redis-bus.js';
import { TEST_REDIS_URL } from './env.js';
import {
  actor,
  callerFor,
  closeOf,
  CloseCode,
  dispose,
  errInfo,
  getJson,
  untilNextSecondAfter,
  rawClient,
  recordEvents,
  Scope,
  sessionsOf,
  testEnv,
  tokenFor,
  uuid,
  waitFor,
  within,
  wsClient,
  type Frame,
  type RawClient,
  type TestEnv,
  type TestServer,
  type TrpcHttpError,
} from './fixture.js';

const KEEPALIVE_MS = 300;
/** tRPC's keepAlive waits this long for any message after its PING (set in src/app.ts). */
const PONG_WAIT_MS = 5000;

let env: TestEnv;
/** N1 and N2: two nodes sharing Redis. */
let N1: TestServer;
let N2: TestServer;
/** K: keepAlive every 300 ms of silence. */
let K: TestServer;
/** The clients of the whole file (closed at its end). */
const open = new Scope();

beforeAll(async () => {
  env = await testEnv('sessions');
  N1 = await env.startServer();
  [N2, K] = await Promise.all([env.startServer(), env.startServer({ redisPrefix: env.prefix('sessions_k'), wsKeepAliveMs: KEEPALIVE_MS })]);
});

/** Reads and writes Redis as another node would, and cuts connections. */
const admin = new Redis(TEST_REDIS_URL);
afterAll(async () => {
  await dispose(env, open);
  await admin.quit();
});

const raw = (...args: Parameters<typeof rawClient>) => open.use(rawClient(...args));
const ws = (srv: TestServer, token: string) => open.use(wsClient({ url: srv.url, token }));
const expOf = (token: string) => decodeJwt(token).exp!;

async function room(owner: string, members: string[] = []): Promise<string> {
  return (await callerFor(N1.app, actor(owner)).room.create({ kind: 'group', name: 'sessions', memberIds: members })).id;
}

const isReady = (id: number) => (f: Frame) => f.id === id && f.result?.data?.data?.type === 'ready';

/** A raw client with a live `chat.events` subscription (id 1) on `roomId`. */
async function subscribed(srv: TestServer, token: string, roomId: string): Promise<RawClient> {
  const c = raw(srv.url, { token });
  c.subscribe(1, 'chat.events', { roomId });
  await c.waitFrame(isReady(1), 'ready');
  return c;
}

async function httpMe(srv: TestServer, token: string): Promise<{ status: number; message: string | undefined }> {
  const { status, body } = await getJson<Partial<TrpcHttpError>>(`${srv.url}/trpc/auth.me`, { headers: { authorization: `Bearer ${token}` } });
  return { status, message: body?.error?.json?.message };
}

async function rejection(p: Promise<unknown>): Promise<ReturnType<typeof errInfo>> {
  return errInfo(await p.then(() => new Error('unexpectedly succeeded'), (e: unknown) => e));
}

describe('keepAlive', () => {
  it('a client that stops answering is closed within pingMs + pongWaitMs; one that answers stays', async () => {
    const dead = raw(K.url, { token: tokenFor('ka-dead'), autoPong: false });
    const roomId = await room('ka-dead');
    // The subscribe is the client's last message: the server's keepalive clock starts when it
    // arrives, so measuring from just before it is sending gives a lower bound that holds.
    const silentSince = Date.now();
    dead.subscribe(1, 'chat.events', { roomId });
    await dead.waitFrame(isReady(1), 'ready');
    // From here on the raw client sends nothing (it never answers the server's PING).
    const alive = ws(K, tokenFor('ka-alive'));
    await alive.trpc.auth.me.query();
    const closed = await closeOf(dead, KEEPALIVE_MS + PONG_WAIT_MS + 5000, 'the silent client to be dropped');
    const after = Date.now() - silentSince;
    expect(closed.code).toBe(1006); // terminated, no close frame: what a half-open socket gets too
    expect(dead.frames).toContain('PING');
    expect(after).toBeGreaterThanOrEqual(KEEPALIVE_MS + PONG_WAIT_MS - 50);
    expect(after).toBeLessThan(KEEPALIVE_MS + PONG_WAIT_MS + 2000);
    await waitFor(() => sessionsOf(K.app, 'ka-dead').length === 0, 'the server to forget the dead session');
    await waitFor(() => K.app.services.hubs.subscriberCount === 0, 'its subscription to be detached');
    expect((await alive.trpc.auth.me.query()).id).toBe('ka-alive');
    expect(alive.opens).toBe(1);
    expect(alive.closes).toBe(0);
    console.log(`[sessions] keepAlive ${KEEPALIVE_MS} ms + pong wait ${PONG_WAIT_MS} ms: silent client dropped after ${after} ms (1006); answering client kept`);
  });
});

describe('token expiry on open sockets', () => {
  it('at exp the server closes the socket with 4001', async () => {
    const roomId = await room('exp-user');
    const token = tokenFor('exp-user', { ttlSeconds: 2 });
    const c = await subscribed(N1, token, roomId);
    const closed = await closeOf(c, 4000, 'the close at expiry');
    const at = Date.now();
    expect(closed).toEqual({ code: CloseCode.TokenExpired, reason: 'access token expired' });
    expect(at).toBeGreaterThanOrEqual(expOf(token) * 1000);
    expect(at - expOf(token) * 1000).toBeLessThan(1000);
    console.log(`[sessions] token expiry: socket closed 4001 ${at - expOf(token) * 1000} ms after exp`);
  });

  it('auth.refresh before expiry keeps the connection and its subscriptions past the old exp', async () => {
    const roomId = await room('ref-owner', ['ref-user']);
    // Both connections are set up on a long token, then moved to a short one: only the refresh below
    // has to happen within the short token's life, however slow the set-up was.
    const long = tokenFor('ref-user', { ttlSeconds: 600 });
    const c = ws(N1, long);
    const rec = recordEvents(c, { roomId });
    await rec.ready();
    // A second connection with the same token and no refresh: its 4001 marks the old expiry.
    const control = await subscribed(N1, long, roomId);
    // Minted right after a second starts, so that it lives two whole seconds (exp is in seconds).
    await untilNextSecondAfter(Date.now());
    const short = tokenFor('ref-user', { ttlSeconds: 2 });
    control.send({ id: 2, method: 'mutation', params: { path: 'auth.refresh', input: { json: { token: short } } } });
    const [, controlMoved] = await Promise.all([
      c.trpc.auth.refresh.mutate({ token: short }),
      control.waitFrame((f) => f.id === 2, 'the control connection moved to the short token'),
    ]);
    expect(controlMoved.result?.data).toMatchObject({ connection: true });
    const fresh = tokenFor('ref-user', { ttlSeconds: 600 });
    const res = await c.trpc.auth.refresh.mutate({ token: fresh });
    expect(res).toEqual({ connection: true, expiresAt: new Date(expOf(fresh) * 1000) });
    expect(await closeOf(control, 4000, 'the control connection to expire')).toMatchObject({ code: CloseCode.TokenExpired });
    expect(Date.now()).toBeGreaterThanOrEqual(expOf(short) * 1000);
    const m = await callerFor(N1.app, actor('ref-owner')).chat.send({ roomId, clientId: uuid(), body: 'after the old expiry' });
    await rec.untilSeq(m.seq);
    expect((await c.trpc.auth.me.query()).expiresAt).toEqual(new Date(expOf(fresh) * 1000));
    expect(c.opens).toBe(1);
    expect(c.closes).toBe(0);
    expect(rec.endedHow).toBeNull();
  });

  it('refresh to a token that lost a role (support) closes the connection (4010): its support-room stream does not outlive the role', async () => {
    const support = (await callerFor(N1.app, actor('sr-customer')).room.create({ kind: 'support', name: 'Help' })).id;
    const agent = raw(N1.url, { token: tokenFor('sr-agent', { roles: ['support'] }) });
    agent.subscribe(1, 'chat.events', { roomId: support });
    await agent.waitFrame(isReady(1), 'the support room stream');
    agent.send({ id: 2, method: 'mutation', params: { path: 'auth.refresh', input: { json: { token: tokenFor('sr-agent') } } } });
    expect((await agent.waitFrame((f) => f.id === 2, 'the refresh answer')).result).toBeDefined();
    expect(await closeOf(agent, 5000, 'the close')).toEqual({ code: CloseCode.RolesChanged, reason: 'the token lost roles: reconnect' });
    // Back with the new token: the room is none of theirs.
    const again = raw(N1.url, { token: tokenFor('sr-agent') });
    again.subscribe(1, 'chat.events', { roomId: support });
    expect((await again.waitFrame((f) => f.id === 1, 'the answer')).error?.data?.code).toBe('NOT_FOUND');
    // A refresh that keeps the roles keeps the connection (the test above).
  });

  it('refresh with another user or tenant is FORBIDDEN; an expired or foreign token is UNAUTHORIZED; the connection keeps its identity', async () => {
    const c = ws(N1, tokenFor('ref-2'));
    const cases: [string, string, string, string][] = [
      ['another user', tokenFor('mallory'), 'FORBIDDEN', 'a refreshed token must be for the same user and tenant'],
      ['same user, another tenant', tokenFor('ref-2', { tenant: 'acme' }), 'FORBIDDEN', 'a refreshed token must be for the same user and tenant'],
      ['expired', tokenFor('ref-2', { ttlSeconds: -5 }), 'UNAUTHORIZED', 'access token expired'],
      ['signed with another secret', tokenFor('ref-2', { secret: 'another-secret-0123456789abcdef-xyz' }), 'UNAUTHORIZED', 'invalid access token'],
      ['garbage', 'not-a-jwt', 'UNAUTHORIZED', 'invalid access token'],
    ];
    for (const [what, token, code, message] of cases) {
      expect(await rejection(c.trpc.auth.refresh.mutate({ token })), what).toMatchObject({ code, message });
    }
    const me = await c.trpc.auth.me.query();
    expect(me).toMatchObject({ id: 'ref-2', tenant: 'default' });
    expect(c.closes).toBe(0);
  });
});

describe('revocation', () => {
  it("an admin's auth.revoke closes the user's sockets on both nodes (4003); old tokens are refused; new ones work after the next second", async () => {
    const roomId = await room('rv-owner', ['victim', 'bystander']);
    const old = tokenFor('victim');
    const [v1, v2, bystander] = await Promise.all([subscribed(N1, old, roomId), subscribed(N2, old, roomId), subscribed(N2, tokenFor('bystander'), roomId)]);
    const admin = ws(N1, tokenFor('root', { roles: ['admin'] }));
    const t0 = performance.now();
    const { revokedAt } = await admin.trpc.auth.revoke.mutate({ userId: 'victim' });
    const closes = await Promise.all([v1, v2].map(async (v) => ({ ...(await closeOf(v, 5000, 'the victim socket to close')), ms: performance.now() - t0 })));
    for (const c of closes) expect(c).toMatchObject({ code: CloseCode.Revoked, reason: 'sessions revoked' });
    expect(bystander.isClosed).toBe(false);

    // The old token: refused over HTTP and over WebSocket, on both nodes.
    for (const n of [N1, N2]) {
      expect(await httpMe(n, old)).toEqual({ status: 401, message: 'access token revoked' });
      expect(await rejection(ws(n, old).trpc.auth.me.query())).toMatchObject({ code: 'UNAUTHORIZED', message: 'access token revoked' });
    }
    // iat has a resolution of one second: a token issued in the second of the revocation is refused
    // too. Wait (a computed time, not a guess) for the next second, then a new token works.
    const wait = await untilNextSecondAfter(revokedAt.getTime());
    const fresh = tokenFor('victim');
    for (const n of [N1, N2]) expect(await httpMe(n, fresh)).toMatchObject({ status: 200 });
    const back = ws(N2, fresh);
    const rec = recordEvents(back, { roomId });
    await rec.ready();
    console.log(
      `[sessions] revoke: 4003 on node 1 after ${Math.round(closes[0]!.ms)} ms and on node 2 after ${Math.round(closes[1]!.ms)} ms; ` +
        `old token 401/UNAUTHORIZED on both nodes; new token accepted after a computed wait of ${wait} ms`,
    );
  });

  it('a revocation made while a connection is being admitted closes it (4003): its token is never served on that socket', async () => {
    // Hold the connection between its token check and its registration (the admission's Redis
    // round trip), revoke meanwhile, then let it go on.
    const presence = N1.app.services.presence;
    const admit = presence.admit.bind(presence);
    let entered!: () => void;
    const inAdmission = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    presence.admit = async (...args: Parameters<typeof admit>) => {
      entered();
      await gate;
      return admit(...args);
    };
    try {
      const c = raw(N1.url, { token: tokenFor('rv-admitting') });
      await inAdmission;
      await callerFor(N1.app, actor('root', 'default', ['admin'])).auth.revoke({ userId: 'rv-admitting' });
      release();
      c.send({ id: 7, method: 'query', params: { path: 'auth.me', input: {} } });
      const closed = await closeOf(c, 5000, 'the socket admitted across the revocation to close');
      expect(closed).toMatchObject({ code: CloseCode.Revoked, reason: 'sessions revoked' });
      expect(c.frames.filter((f) => typeof f !== 'string' && f.id === 7 && f.result)).toEqual([]);
      expect(sessionsOf(N1.app, 'rv-admitting')).toEqual([]);
    } finally {
      presence.admit = admit;
      release();
    }
  });

  it('a revocation whose message a node missed (its bus cut from Redis) closes the sockets of older tokens there once the bus is back (4003); a token newer than an older revocation stays', async () => {
    const roomId = await room('rc-owner', ['rc-victim', 'rc-back']);
    const victim = await subscribed(N2, tokenFor('rc-victim'), roomId);
    const back = await subscribed(N2, tokenFor('rc-back'), roomId);
    // Stored as auth.revoke stores them, and never published: what a node whose subscriber is cut
    // from Redis sees of a revocation made meanwhile on another node. rc-back's is an hour old: their
    // token is newer.
    const stored = (userId: string) => `${N2.config.redisPrefix}revoked:${keyOf('default', userId)}`;
    await admin.set(stored('rc-victim'), String(Date.now()), 'EX', 3600);
    await admin.set(stored('rc-back'), String(Date.now() - 3_600_000), 'EX', 3600);
    // The node does not know: the victim's socket still answers (its calls are not checked again).
    victim.send({ id: 9, method: 'query', params: { path: 'auth.me', input: {} } });
    await victim.waitFrame((f) => f.id === 9 && f.result !== undefined, 'auth.me before the reconnect');

    // N2's subscriber connection is cut; ioredis reconnects it.
    const bus = N2.app.bus as RedisBus;
    const reconnected = new Promise<void>((r) => bus.onReconnect(r));
    const list = (await admin.client('LIST')) as string;
    const line = list.split('\n').find((l) => l.includes(`name=chat-sub-${bus.nodeId}`));
    expect(line).toBeDefined();
    await admin.client('KILL', 'ID', /id=(\d+)/.exec(line!)![1]!);
    await reconnected;
    const closed = await closeOf(victim, 5000, "the victim's socket to close after the reconnect");
    expect(closed).toMatchObject({ code: CloseCode.Revoked, reason: 'sessions revoked' });
    // Both users were checked in one MGET: rc-back's session was decided before the victim's close.
    expect(back.isClosed).toBe(false);
    expect(sessionsOf(N2.app, 'rc-back')).toHaveLength(1);
    await waitFor(() => sessionsOf(N2.app, 'rc-victim'), "the victim's session to be gone", { until: (s) => s.length === 0 });
  });

  it("a revocation's message that comes after the user logged in again closes only the sockets of tokens issued until the revocation", async () => {
    const roomId = await room('rl-owner', ['rl-user']);
    const now = Math.floor(Date.now() / 1000);
    const older = await subscribed(N2, tokenFor('rl-user', { issuedAt: now - 120 }), roomId);
    const newer = await subscribed(N2, tokenFor('rl-user', { issuedAt: now }), roomId);
    // A revocation made a minute ago on another node whose message comes only now (a slow or
    // reconnecting bus): the token issued since is not revoked, so its socket stays.
    await N1.app.bus.publish('control', JSON.stringify({ type: 'revoke', tenant: 'default', userId: 'rl-user', at: (now - 60) * 1000 }));
    expect(await closeOf(older, 5000, 'the older token to close')).toMatchObject({ code: CloseCode.Revoked, reason: 'sessions revoked' });
    // Both sessions were decided in the one handler call that closed the older one.
    expect(newer.isClosed).toBe(false);
    await waitFor(() => sessionsOf(N2.app, 'rl-user'), 'the older session to be gone', { until: (s) => s.length === 1 });
    newer.send({ id: 4, method: 'query', params: { path: 'auth.me', input: {} } });
    expect((await newer.waitFrame((f) => f.id === 4, 'auth.me on the newer token')).result?.data).toMatchObject({ id: 'rl-user' });
  });

  it('a non-admin gets FORBIDDEN; an admin of another tenant cannot touch this tenant', async () => {
    const roomId = await room('rv2-owner', ['rv2-user']);
    const user = await subscribed(N1, tokenFor('rv2-user'), roomId);
    expect(await rejection(ws(N1, tokenFor('rv2-owner')).trpc.auth.revoke.mutate({ userId: 'rv2-user' }))).toMatchObject({
      code: 'FORBIDDEN',
      message: 'only admins can revoke sessions',
    });
    const foreignAdmin = ws(N2, tokenFor('root', { tenant: 'acme', roles: ['admin'] }));
    await foreignAdmin.trpc.auth.revoke.mutate({ userId: 'rv2-user' });
    // The revocation of acme's rv2-user went through the bus; ours keeps working.
    expect(await httpMe(N1, tokenFor('rv2-user'))).toMatchObject({ status: 200 });
    user.send({ id: 2, method: 'query', params: { path: 'auth.me', input: {} } });
    expect((await user.waitFrame((f) => f.id === 2, 'auth.me')).result?.data).toMatchObject({ id: 'rv2-user', tenant: 'default' });
    expect(user.isClosed).toBe(false);
  });

  it('banning a member ends their subscription to the room at once', async () => {
    const roomId = await room('ban-owner', ['ban-user']);
    const c = ws(N2, tokenFor('ban-user'));
    const rec = recordEvents(c, { roomId });
    await rec.ready();
    await callerFor(N1.app, actor('ban-owner')).room.ban({ roomId, userId: 'ban-user' });
    expect(await within(rec.ended, 5000, 'the banned member’s stream to end')).not.toBe('error');
    expect(rec.events.items.at(-1)?.data).toMatchObject({ type: 'member.left', userId: 'ban-user', reason: 'banned' });
  });
});

describe('subscriptions over HTTP', () => {
  it('are refused (WebSocket only): an SSE stream would escape expiry, revocation and the per-connection limits', async () => {
    const roomId = await room('sse-user');
    const input = encodeURIComponent(JSON.stringify({ json: { roomId } }));
    const res = await fetch(`${N1.url}/trpc/chat.events?input=${input}`, { headers: { authorization: `Bearer ${tokenFor('sse-user')}` } });
    // tRPC answers in the SSE format it was asked in, with an error event, and ends the stream.
    const text = await within(res.text(), 5000, 'the SSE response to end');
    expect(text).toContain('event: serialized-error');
    expect(text).toContain('METHOD_NOT_SUPPORTED');
    expect(text).not.toContain('"ready"');
  });

  it('are refused before their procedure runs: a GET of admin.exportUser leaves no export in the audit trail', async () => {
    const target = `export-target-${uuid().slice(0, 8)}`;
    // The target exists (its row is written when its token is first used).
    expect((await fetch(`${N1.url}/trpc/auth.me`, { headers: { authorization: `Bearer ${tokenFor(target)}` } })).status).toBe(200);
    const input = encodeURIComponent(JSON.stringify({ json: { userId: target } }));
    const res = await fetch(`${N1.url}/trpc/admin.exportUser?input=${input}`, { headers: { authorization: `Bearer ${tokenFor('export-boss', { roles: ['admin'] })}` } });
    const text = await within(res.text(), 5000, 'the refusal');
    expect(text).toContain('METHOD_NOT_SUPPORTED');
    expect(text).toContain('subscriptions are served over WebSocket only');
    expect(text).not.toContain('"type":"export"');
    expect(await env.sql('select actor_id from audit_event where action = $1 and target_id = $2', ['user.export', target])).toEqual([]);
  });

  it('an HTTP call takes its token from the Authorization header only, never from the URL (?connectionParams=)', async () => {
    const params = encodeURIComponent(JSON.stringify({ token: tokenFor('url-token') }));
    const res = await fetch(`${N1.url}/trpc/auth.me?connectionParams=${params}`);
    expect(res.status).toBe(401);
    expect(await res.text()).toContain('missing access token');
  });
});
