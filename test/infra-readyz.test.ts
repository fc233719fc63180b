/**
 * `/readyz` checks every store the node depends on: PostgreSQL and each Redis connection in use
 * (the bus's publisher and subscriber, presence, rate limits, sessions). The node here runs on a
 * Redis server of this file's own (test/fault-env.ts), killed and restarted on the same port.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dispose, FaultEnv, getJson, redisLost, testEnv, type PrivateRedis, type TestEnv, type TestServer } from './fixture.js';

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
