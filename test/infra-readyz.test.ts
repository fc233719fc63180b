/**
 * `/readyz` checks every store the node depends on: PostgreSQL and each Redis connection in use
 * (the bus's publisher and subscriber, presence, rate limits, sessions). The node here runs on a
 * Redis server of this file's own (test/fault-env.ts), killed and restarted on the same port.
 */
import { randomInt } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dispose, FaultEnv, getJson, nativePool, redisLost, testEnv, waitFor, within, type PrivateRedis, type TestEnv, type TestServer } from './fixture.js';

const fault = new FaultEnv();
let redis: PrivateRedis;
let env: TestEnv;
let srv: TestServer;

beforeAll(async () => {
  redis = await fault.redis();
  env = await testEnv('infra_readyz');
  srv = await env.startServer({ redisUrl: redis.url });
});
afterAll(() => dispose(fault, env));

const allUp = { kind: 'redis', bus: { publisher: 'up', subscriber: 'up' }, presence: 'up', limits: 'up', sessions: 'up' };

describe('/readyz and Redis', () => {
  it('a node serves only once its Redis connections are ready (the first requests never fall back to per-node rate limits)', async () => {
    // No wait here: startServer resolved, so every connection must already be ready.
    expect(srv.app.infra.redis.map((l) => [l.role, l.client.status])).toEqual(srv.app.infra.redis.map((l) => [l.role, 'ready']));
  });

  it('with Redis down at start, a node waits and listens once Redis is back, every connection ready', async () => {
    await redis.kill();
    const starting = env.startServer({ redisUrl: redis.url });
    await redis.start();
    await using late = await starting;
    // All five reconnect at about the same time; the node waited for each of them, not only the bus.
    expect(late.app.infra.redis.every((l) => l.client.status === 'ready')).toBe(true);
    expect((await getJson(`${late.url}/readyz`)).status).toBe(200);
    await Promise.all(srv.app.infra.redis.map((l) => l.ready()));
  });

  it('names every Redis store; 503 with each of them down while Redis is killed, 200 again after its restart', async () => {
    const links = srv.app.infra.redis;
    expect(links.map((l) => l.role).sort()).toEqual(['bus-pub', 'bus-sub', 'limits', 'presence', 'sessions']);
    await Promise.all(links.map((l) => l.ready()));
    const up = await getJson(`${srv.url}/readyz`);
    expect(up.status).toBe(200);
    expect(up.body).toEqual({ status: 'ready', draining: false, database: 'up', bus: { kind: 'redis', status: 'up' }, redis: allUp });

    const gone = redisLost(...links);
    await redis.kill();
    await gone;
    const down = await getJson(`${srv.url}/readyz`);
    expect(down.status).toBe(503);
    expect(down.body).toEqual({
      status: 'unavailable',
      draining: false,
      database: 'up',
      bus: { kind: 'redis', status: 'down' },
      redis: { kind: 'redis', bus: { publisher: 'down', subscriber: 'down' }, presence: 'down', limits: 'down', sessions: 'down' },
    });

    await redis.start();
    await Promise.all(links.map((l) => l.ready()));
    const back = await getJson(`${srv.url}/readyz`);
    expect(back.status).toBe(200);
    expect(back.body).toMatchObject({ status: 'ready', database: 'up', bus: { kind: 'redis', status: 'up' }, redis: allUp });
  });

  it('a single lost connection is named on its own (presence), and the node is ready again once it is back', async () => {
    const links = srv.app.infra.redis;
    await Promise.all(links.map((l) => l.ready()));
    const presence = links.find((l) => l.role === 'presence')!;
    const closed = redisLost(presence);
    // Cut from this side and not reconnected: only that connection is gone, Redis itself is fine.
    presence.client.disconnect(false);
    await closed;
    const during = await getJson<{ redis: unknown }>(`${srv.url}/readyz`);
    expect(during.status).toBe(503);
    expect(during.body).toMatchObject({ status: 'unavailable', database: 'up', bus: { kind: 'redis', status: 'up' } });
    expect(during.body.redis).toEqual({ ...allUp, presence: 'down' });
    await presence.client.connect();
    await presence.ready();
    expect((await getJson(`${srv.url}/readyz`)).status).toBe(200);
  });
});

/** Memory mode: no Redis, every store in this process is reported up. */
describe('/readyz without Redis', () => {
  it('reports the in-memory stores as up', async () => {
    await using mem = await env.startServer({ redisUrl: undefined });
    const res = await getJson(`${mem.url}/readyz`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      status: 'ready',
      draining: false,
      database: 'up',
      bus: { kind: 'memory', status: 'up' },
      redis: { ...allUp, kind: 'memory' },
    });
    expect(mem.app.infra.redis).toHaveLength(0);
  });
});

/**
 * A pool whose every connection is busy (long statements, a burst) is not a database that is down:
 * a check queued behind that work times out on every node of a busy deployment at once, and the
 * load balancer takes them all out of service.
 */
describe('/readyz and a busy pool', () => {
  /** The backends of the readiness checks' own connections in this database. */
  const readinessPids = async () =>
    (await env.sql<{ pid: number }>("select pid from pg_stat_activity where datname = current_database() and application_name = 'chat-readiness'")).map((r) => r.pid);

  it('with every pool connection held and more statements waiting for one, /readyz is 200; its own connection ends with the node', async () => {
    const POOL = 2;
    const before = await readinessPids();
    const node = await env.startServer({ redisUrl: redis.url, dbPoolMax: POOL });
    const pool = await nativePool(node.app.db.orm);
    // The test holds an advisory lock: each statement of the pool waits for it on its connection,
    // and the one more waits for a connection. No timing: they go on once the test lets go.
    const key = randomInt(1, 2 ** 31);
    const holder = new pg.Client({ connectionString: env.databaseUrl });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('select pg_advisory_xact_lock($1)', [key]);
      const blocked = Array.from({ length: POOL + 1 }, () => pool.query('select pg_advisory_xact_lock($1)', [key]));
      await waitFor(
        async () =>
          (await env.sql<{ n: number }>("select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and wait_event = 'advisory'"))[0]!.n,
        'every pool connection waiting for the lock',
        { until: (n) => n >= POOL, timeoutMs: 10_000 },
      );
      expect({ total: pool.totalCount, idle: pool.idleCount, queued: pool.waitingCount >= 1 }).toEqual({ total: POOL, idle: 0, queued: true });
      const res = await within(getJson(`${node.url}/readyz`), 5000, '/readyz');
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ status: 'ready', database: 'up' });
      await holder.query('commit');
      await Promise.all(blocked);
    } finally {
      await holder.end();
    }
    // The check's connection is one of its own (named in pg_stat_activity), and close() ends it
    // with the pool's.
    const mine = (await readinessPids()).filter((pid) => !before.includes(pid));
    expect(mine).toHaveLength(1);
    await node.close();
    expect(pool.totalCount).toBe(0);
    await waitFor(readinessPids, 'the readiness connection to end', { until: (pids) => !pids.includes(mine[0]!), timeoutMs: 10_000 });
  });
});
