/**
 * The Redis presence store on its own (real Redis, a prefix of this file's own): a heartbeat round
 * renews every connection it is given, in slices of HEARTBEAT_SLICE, several connections of one user
 * included, and names the users of whom a connection had been swept; connections left out of it expire, and the sweep reports a user offline only once their
 * last connection is gone.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { SEP } from '../src/realtime/presence-store.js';
import { HEARTBEAT_SLICE, RedisPresenceStore } from '../src/realtime/redis-presence.js';
import { RedisLink } from '../src/realtime/redis.js';
import { TEST_REDIS_URL } from './env.js';
import { uuid } from './fixture.js';

const prefix = `test:presence-store:${uuid().slice(0, 8)}:`;
const link = new RedisLink('presence', TEST_REDIS_URL);
afterAll(async () => {
  const keys = await link.client.keys(`${prefix}*`);
  if (keys.length) await link.client.del(...keys);
  await link.close();
});

describe('RedisPresenceStore.heartbeat', () => {
  it('renews every connection over several slices; the ones left out expire and are swept user by user', async () => {
    const ttlMs = 60_000;
    const store = new RedisPresenceStore(link, prefix, ttlMs);
    const tenant = 'acme';
    // 2.5 slices of connections: 300 users with two each, plus 40 users whose only connection is left out.
    const users = Array.from({ length: Math.ceil((HEARTBEAT_SLICE * 2.5) / 2) }, (_, i) => `u${i}`);
    const kept = users.flatMap((userId) => [0, 1].map((n) => ({ tenant, userId, connId: `${userId}-c${n}` })));
    const dropped = Array.from({ length: 40 }, (_, i) => ({ tenant, userId: `gone${i}`, connId: `gone${i}-c0` }));
    // One connection of a kept user is left out too: that user stays online with the other.
    const halfKept = { tenant, userId: 'half', connId: 'half-out' };
    const halfIn = { tenant, userId: 'half', connId: 'half-in' };
    for (const c of [...kept, ...dropped, halfKept, halfIn]) await store.connect(c);

    // Every entry written by connect is backdated to have expired a second ago.
    const past = Date.now() - 1000;
    const all = `${prefix}{presence}:all`;
    const members = await link.client.zrange(all, 0, -1);
    expect(members.length).toBe(kept.length + dropped.length + 2);
    await link.client.zadd(all, ...members.flatMap((m) => [past, m]));
    for (const c of [...kept, ...dropped, halfKept, halfIn]) {
      await link.client.zadd(`${prefix}{presence}:conn:${encodeURIComponent(tenant)}:${encodeURIComponent(c.userId)}`, past, c.connId);
    }

    // A sweep had removed one connection of a kept user (the node stalled past its life): the
    // heartbeat writes it back and names that user, and only that user, to be announced again.
    const swept = kept[3]!;
    await link.client.zrem(`${prefix}{presence}:conn:${encodeURIComponent(tenant)}:${encodeURIComponent(swept.userId)}`, swept.connId);
    await link.client.zrem(all, [tenant, swept.userId, swept.connId].join(SEP));

    const before = Date.now();
    const back = await store.heartbeat([...kept, halfIn]);
    expect(back).toEqual([{ tenant, userId: swept.userId }]);
    for (const c of [...kept, halfIn]) {
      const key = `${prefix}{presence}:conn:${encodeURIComponent(tenant)}:${encodeURIComponent(c.userId)}`;
      expect(Number(await link.client.zscore(key, c.connId)), c.connId).toBeGreaterThanOrEqual(before + ttlMs);
      expect(await link.client.pttl(key)).toBeGreaterThan(ttlMs);
      expect(Number(await link.client.zscore(all, [tenant, c.userId, c.connId].join(SEP)))).toBeGreaterThanOrEqual(before + ttlMs);
    }

    // The sweep takes what the heartbeat left out: each dropped user goes offline, "half" does not.
    const gone: string[] = [];
    for (;;) {
      const batch = await store.sweep();
      if (batch.length === 0) break;
      gone.push(...batch.map((k) => k.userId));
    }
    expect(gone.sort()).toEqual(dropped.map((c) => c.userId).sort());
    expect(await store.count({ tenant, userId: 'half' })).toBe(1);
    expect(await store.count({ tenant, userId: users[0]! })).toBe(2);
  });
});
