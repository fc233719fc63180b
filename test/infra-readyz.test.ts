/**
 * `/readyz` checks every store the node depends on: PostgreSQL and each Redis connection in use
 * (the bus's publisher and subscriber, presence, rate limits, sessions). The node here runs on a
 * Redis server of this file's own (test/fault-env.ts), killed and restarted on the same port.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisLink } from '../src/realtime/redis.js';
import { FaultEnv, type PrivateRedis } from './fault-env.js';
import { createTestDatabase, startServer, testConfig, testPrefix, type TestServer } from './helpers.js';
import { getJson } from './ws-helpers.js';

const env = new FaultEnv();
let redis: PrivateRedis;
let db: Awaited<ReturnType<typeof createTestDatabase>>;
let srv: TestServer;

beforeAll(async () => {
  redis = await env.redis();
  db = await createTestDatabase('infra_readyz');
  srv = await startServer(testConfig({ databaseUrl: db.url, redisUrl: redis.url, redisPrefix: testPrefix('infra_readyz') }));
});
afterAll(async () => {
  await srv?.close();
  await db?.drop();
  await env.cleanup();
});

/** Resolves once the connection has noticed that Redis is gone (its socket closed). */
function lost(link: RedisLink): Promise<void> {
  if (link.down) return Promise.resolve();
  return new Promise((resolve) => link.client.once('close', () => resolve()));
}

const allUp = { kind: 'redis', bus: { publisher: 'up', subscriber: 'up' }, presence: 'up', limits: 'up', sessions: 'up' };

describe('/readyz and Redis', () => {
  it('names every Redis store; 503 with each of them down while Redis is killed, 200 again after its restart', async () => {
    const links = srv.app.infra.redis;
    expect(links.map((l) => l.role).sort()).toEqual(['bus-pub', 'bus-sub', 'limits', 'presence', 'sessions']);
    await Promise.all(links.map((l) => l.ready()));
    const up = await getJson(`${srv.url}/readyz`);
    expect(up.status).toBe(200);
    expect(up.body).toEqual({ status: 'ready', draining: false, database: 'up', bus: { kind: 'redis', status: 'up' }, redis: allUp });

    const gone = Promise.all(links.map(lost));
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
    const closed = lost(presence);
    // Cut from this side and not reconnected: only that connection is gone, Redis itself is fine.
    presence.client.disconnect(false);
    await closed;
    const during = await getJson(`${srv.url}/readyz`);
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
    const mem = await startServer(testConfig({ databaseUrl: db.url }));
    try {
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
    } finally {
      await mem.close();
    }
  });
});
