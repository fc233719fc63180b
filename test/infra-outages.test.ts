/**
 * Outages are SERVICE_UNAVAILABLE on every kind of call (retryable), never NOT_FOUND or
 * INTERNAL_SERVER_ERROR: a query, a mutation and a subscription while PostgreSQL is down, and the
 * calls that need Redis while Redis is down. The node runs on a PostgreSQL cluster and a Redis
 * server of this file's own (test/fault-env.ts), stopped and started again by the tests.
 */
import { createTRPCClient, httpLink, TRPCClientError } from '@trpc/client';
import { Redis } from 'ioredis';
import pg from 'pg';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AppError,
  codeOf,
  dispose,
  FaultEnv,
  freePort,
  getJson,
  outageOf,
  recordEvents,
  redisLost,
  startServer,
  testConfig,
  testPrefix,
  tokenFor,
  toTRPCError,
  uuid,
  waitFor,
  wsClient,
  type AppRouter,
  type PrivatePostgres,
  type PrivateRedis,
  type TestServer,
  type WsTestClient,
} from './fixture.js';

const fault = new FaultEnv();
let redis: PrivateRedis;
let pgc: PrivatePostgres;
let srv: TestServer;

beforeAll(async () => {
  [redis, pgc] = await Promise.all([fault.redis(), fault.postgres()]);
  const dbUrl = await pgc.createDatabase('chat_infra_outages');
  srv = await startServer(testConfig({ databaseUrl: dbUrl, redisUrl: redis.url, redisPrefix: testPrefix('infra_outages') }));
}, 120_000);
afterAll(async () => {
  if (pgc && !pgc.running) await pgc.start().catch(() => undefined);
  if (redis && !redis.running) await redis.start().catch(() => undefined);
  await dispose(fault, srv);
}, 60_000);

function client(userId: string, roles: string[] = []): WsTestClient {
  return wsClient({ url: srv.url, token: tokenFor(userId, { roles }) });
}

function httpClient(userId: string) {
  return createTRPCClient<AppRouter>({
    links: [httpLink({ url: `${srv.url}/trpc`, transformer: superjson, headers: { authorization: `Bearer ${tokenFor(userId)}` } })],
  });
}

/** The code a call failed with as the client sees it; 'OK' when it succeeded. */
async function outcomeOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return 'OK';
  } catch (err) {
    if (err instanceof TRPCClientError) return codeOf(err) ?? 'NETWORK';
    return `NOT A TRPC ERROR: ${String(err)}`;
  }
}

/** The code a subscription failed with before its first event ('DATA' if an event came). */
async function subscriptionCode(c: WsTestClient, roomId: string): Promise<string> {
  using sub = recordEvents(c, { roomId });
  try {
    await sub.events.first(() => true, 'a first event or an error');
    return 'DATA';
  } catch (err) {
    return outcomeOf(Promise.reject(err));
  }
}

async function readyAgain(): Promise<void> {
  const ready = () => getJson(`${srv.url}/readyz`).then((r) => r.status === 200, () => false);
  await waitFor(ready, '/readyz 200 again', { timeoutMs: 60_000, everyMs: 100 });
}

describe('PostgreSQL down', () => {
  it('a query, a mutation and a subscription are each answered SERVICE_UNAVAILABLE (WebSocket and HTTP)', async () => {
    const u = uuid().slice(0, 6);
    await using alice = client(`od-alice-${u}`);
    const http = httpClient(`od-alice-${u}`);
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'outage', memberIds: [`od-bob-${u}`] });
    const msg = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'before' });
    // The HTTP client works too before the outage.
    expect((await http.chat.history.query({ roomId: room.id })).messages.map((m) => m.body)).toContain('before');

    await pgc.stop('immediate');
    try {
      const codes = {
        'query chat.history (ws)': await outcomeOf(alice.trpc.chat.history.query({ roomId: room.id })),
        'query room.get (ws)': await outcomeOf(alice.trpc.room.get.query({ roomId: room.id })),
        'query room.list (ws)': await outcomeOf(alice.trpc.room.list.query()),
        'query chat.history (http)': await outcomeOf(http.chat.history.query({ roomId: room.id })),
        'mutation chat.send (ws)': await outcomeOf(alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'during' })),
        'mutation chat.send (http)': await outcomeOf(http.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'during' })),
        'mutation receipt.markRead (ws)': await outcomeOf(alice.trpc.receipt.markRead.mutate({ roomId: room.id, seq: msg.seq })),
        'mutation chat.edit (ws)': await outcomeOf(alice.trpc.chat.edit.mutate({ messageId: msg.id, body: 'edited' })),
        'mutation chat.react (ws)': await outcomeOf(alice.trpc.chat.react.mutate({ messageId: msg.id, emoji: '👍' })),
        'mutation chat.delete (ws)': await outcomeOf(alice.trpc.chat.delete.mutate({ messageId: msg.id })),
        'subscription chat.events (ws)': await subscriptionCode(alice, room.id),
      };
      expect(codes).toEqual(Object.fromEntries(Object.keys(codes).map((k) => [k, 'SERVICE_UNAVAILABLE'])));
    } finally {
      await pgc.start();
      await readyAgain();
    }
    // Back: the same calls work again on the same connection.
    expect((await alice.trpc.chat.history.query({ roomId: room.id })).messages.map((m) => m.body)).toContain('before');
    expect(await subscriptionCode(alice, room.id)).toBe('DATA');
  });
});

describe('Redis down', () => {
  it('presence and revocation are SERVICE_UNAVAILABLE; sends keep going on per-node rate limits; all back after the restart', async () => {
    const u = uuid().slice(0, 6);
    await using alice = client(`or-alice-${u}`);
    await using admin = client(`or-admin-${u}`, ['admin']);
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'redis outage', memberIds: [] });
    expect(await outcomeOf(alice.trpc.presence.set.mutate({ status: 'away' }))).toBe('OK');
    const links = srv.app.infra.redis;
    await Promise.all(links.map((l) => l.ready()));

    const gone = redisLost(...links);
    await redis.kill();
    await gone;
    try {
      const codes = {
        // Mutations behind a rate limit that need Redis for their own state.
        'mutation presence.set': await outcomeOf(alice.trpc.presence.set.mutate({ status: 'dnd' })),
        'mutation auth.revoke': await outcomeOf(admin.trpc.auth.revoke.mutate({ userId: `or-someone-${u}` })),
        'query presence.get': await outcomeOf(alice.trpc.presence.get.query({ userIds: [`or-alice-${u}`] })),
        // The send's rate limit falls back to a per-node limit (docs/OPERATIONS.md): not refused.
        'mutation chat.send': await outcomeOf(alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'while redis is down' })),
      };
      expect(codes).toEqual({
        'mutation presence.set': 'SERVICE_UNAVAILABLE',
        'mutation auth.revoke': 'SERVICE_UNAVAILABLE',
        'query presence.get': 'SERVICE_UNAVAILABLE',
        'mutation chat.send': 'OK',
      });
    } finally {
      await redis.start();
      await Promise.all(links.map((l) => l.ready()));
    }
    expect(await outcomeOf(alice.trpc.presence.set.mutate({ status: 'dnd' }))).toBe('OK');
    expect(await outcomeOf(admin.trpc.auth.revoke.mutate({ userId: `or-someone-${u}` }))).toBe('OK');
  });
});

describe('the outage classifier (src/trpc/init.ts)', () => {
  it('maps the real errors of an unreachable PostgreSQL or Redis to SERVICE_UNAVAILABLE, and nothing else', async () => {
    const port = await freePort(); // nothing listens there
    // ioredis: a command that outlived its one retry, and one sent on a connection closed for good.
    const retrying = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, retryStrategy: () => 10 });
    retrying.on('error', () => undefined);
    const retries = await retrying.get('k').catch((e: unknown) => e);
    retrying.disconnect();
    const ended = new Redis({ host: '127.0.0.1', port, retryStrategy: () => null });
    ended.on('error', () => undefined);
    await new Promise((resolve) => ended.once('end', resolve));
    const closed = await ended.get('k').catch((e: unknown) => e);
    // node-postgres: connection refused.
    const c = new pg.Client({ host: '127.0.0.1', port });
    const refused = await c.connect().catch((e: unknown) => e);
    expect((retries as Error).name).toBe('MaxRetriesPerRequestError');
    expect((closed as Error).message).toBe('Connection is closed.');
    expect(outageOf(retries)).toBe('redis');
    expect(outageOf(closed)).toBe('redis');
    expect(outageOf(refused)).not.toBeNull();
    // Wrapped by a library: found through `cause`.
    expect(outageOf(new Error('limiter failed', { cause: retries }))).toBe('redis');
    for (const err of [retries, closed, refused]) expect(toTRPCError(err)?.code).toBe('SERVICE_UNAVAILABLE');
    expect(toTRPCError(new AppError('SERVICE_UNAVAILABLE', 'redis (presence) unavailable, retry later'))?.code).toBe('SERVICE_UNAVAILABLE');
    // Not outages: a lookup that found nothing stays NOT_FOUND; an unexpected error stays unmapped.
    expect(toTRPCError(new AppError('NOT_FOUND', 'message not found'))?.code).toBe('NOT_FOUND');
    expect(toTRPCError(new Error('boom'))).toBeNull();
    expect(outageOf(new TypeError('x is undefined'))).toBeNull();
  });
});
