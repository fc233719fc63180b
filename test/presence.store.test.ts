/**
 * The Redis presence store on its own (real Redis, a prefix of this file's own): a heartbeat round
 * renews every connection it is given, in slices of HEARTBEAT_SLICE, several connections of one user
 * included, and names the users of whom a connection had been swept; connections left out of it
 * expire, and the sweep reports a user offline only once their last connection is gone. One sweep
 * removes every expired connection, however many batches of SWEEP_BATCH that takes, and names each
 * user once, also with another sweeper at work. Removals and admissions in groups answer as they
 * would one by one. Every change raises the store's version, which `get` reads with the states.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import { SEP } from '../src/realtime/presence-store.js';
import { MemoryPresenceStore } from '../src/realtime/memory-presence.js';
import { HEARTBEAT_SLICE, RedisPresenceStore, SWEEP_BATCH } from '../src/realtime/redis-presence.js';
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

/** A store of its own prefix within this file's, with the keys a test reads of it (tenant `acme`). */
function storeAt(name: string) {
  const p = `${prefix}${name}:`;
  const tenant = 'acme';
  return {
    p,
    tenant,
    store: new RedisPresenceStore(link, p, 60_000),
    all: `${p}{presence}:all`,
    connKey: (userId: string) => `${p}{presence}:conn:${encodeURIComponent(tenant)}:${encodeURIComponent(userId)}`,
  };
}

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

    // One sweep takes what the heartbeat left out: each dropped user goes offline, "half" does not.
    const gone = (await store.sweep()).map((k) => k.userId);
    expect(gone.sort()).toEqual(dropped.map((c) => c.userId).sort());
    expect(await store.sweep()).toEqual([]);
    expect(await store.count({ tenant, userId: 'half' })).toBe(1);
    expect(await store.count({ tenant, userId: users[0]! })).toBe(2);
  });
});

describe('RedisPresenceStore.sweep', () => {
  it("one sweep removes all of a dead node's connections, batch after batch, and names each user once; two sweepers at once never name a user twice", async () => {
    const { p, store, tenant, all, connKey } = storeAt('sweep');
    const other = new RedisPresenceStore(link, p, 60_000);
    // 2.4 batches of a dead node's connections: one per user, and some users with two (one of them
    // in a later batch than the other: the global set is ordered by expiry, and these expired last).
    const single = Array.from({ length: Math.floor(SWEEP_BATCH * 2.2) }, (_, i) => ({ tenant, userId: `s${i}`, connId: `s${i}-c0` }));
    const twice = Array.from({ length: 50 }, (_, i) => `t${i}`);
    const first = twice.map((userId) => ({ tenant, userId, connId: `${userId}-c0` }));
    const second = twice.map((userId) => ({ tenant, userId, connId: `${userId}-c1` }));
    // A user with an expired connection and a live one (on a node still alive) stays online.
    const alive = { tenant, userId: 'alive', connId: 'alive-live' };
    const aliveDead = { tenant, userId: 'alive', connId: 'alive-dead' };
    const dead = [...first, ...single, aliveDead, ...second];
    for (const c of [...dead, alive]) await store.connect(c);
    const now = Date.now();
    // Backdated in this order: `first` expired earliest, `second` last.
    for (const [i, c] of dead.entries()) {
      const at = now - 10_000 + i;
      await link.client.zadd(all, at, [tenant, c.userId, c.connId].join(SEP));
      await link.client.zadd(connKey(c.userId), at, c.connId);
    }
    expect(dead.length).toBeGreaterThan(SWEEP_BATCH * 2);

    const [a, b] = await Promise.all([store.sweep(), other.sweep()]);
    const named = [...a, ...b].map((k) => k.userId);
    expect(named.length).toBe(new Set(named).size);
    expect(named.sort()).toEqual([...single.map((c) => c.userId), ...twice].sort());
    expect(await link.client.zcount(all, '-inf', now)).toBe(0);
    for (const userId of [...twice, 's0', `s${single.length - 1}`]) {
      expect(await link.client.zcard(connKey(userId)), userId).toBe(0);
      expect(Number(await link.client.get(`${p}{presence}:seen:${encodeURIComponent(tenant)}:${encodeURIComponent(userId)}`))).toBeGreaterThanOrEqual(now);
    }
    expect(await store.count({ tenant, userId: 'alive' })).toBe(1);
    expect(await store.sweep()).toEqual([]);

    // What `get` answers afterwards (a ZCOUNT per user and one MGET): the swept user offline since the
    // sweep, the one with a live connection online with the status they set, one never seen offline.
    await store.setStatus({ tenant, userId: 'alive' }, 'away');
    const states = await other.get(tenant, ['t0', 'alive', 'never']);
    expect(states.map((st) => [st.userId, st.status])).toEqual([
      ['t0', 'offline'],
      ['alive', 'away'],
      ['never', 'offline'],
    ]);
    expect(states[0]!.lastSeenAt!.getTime()).toBeGreaterThanOrEqual(now);
    expect(states[2]!.lastSeenAt).toBeNull();
  });
  it('a Redis error part way: the batches removed before it are named at once, and the next sweep removes the batch that failed first and names its users', async () => {
    const { store, tenant, all, connKey } = storeAt('sweep-fail');
    // 2.5 batches of a dead node's connections, one user each, expired in this order.
    const dead = Array.from({ length: Math.floor(SWEEP_BATCH * 2.5) }, (_, i) => ({ tenant, userId: `d${i}`, connId: `d${i}-c0` }));
    for (const c of dead) await store.connect(c);
    const now = Date.now();
    for (const [i, c] of dead.entries()) {
      await link.client.zadd(all, now - 10_000 + i, [tenant, c.userId, c.connId].join(SEP));
      await link.client.zadd(connKey(c.userId), now - 10_000 + i, c.connId);
    }
    // A real Redis error in the second batch's removal: one of its users' sets is a string (WRONGTYPE).
    // The script stops there, keeping what it did for the users before.
    const broken = dead[SWEEP_BATCH + 100]!;
    await link.client.del(connKey(broken.userId));
    await link.client.set(connKey(broken.userId), 'not a sorted set');

    const handed: string[][] = [];
    await expect(store.sweep((users) => handed.push(users.map((k) => k.userId)))).rejects.toThrow(/WRONGTYPE/);
    // The first batch was handed over before the error; the third was not claimed.
    expect(handed).toEqual([dead.slice(0, SWEEP_BATCH).map((c) => c.userId)]);
    expect(await link.client.zcard(all)).toBe(dead.length - 2 * SWEEP_BATCH);
    // Users of the failed batch before the broken one: removed by the failed call, named by nobody yet.
    expect(await link.client.zcard(connKey(dead[SWEEP_BATCH]!.userId))).toBe(0);

    // Redis is right again: the next sweep does the failed batch first, then the rest; every user of
    // the dead node has been named exactly once over the two sweeps.
    await link.client.del(connKey(broken.userId));
    const second: string[][] = [];
    const rest = await store.sweep((users) => second.push(users.map((k) => k.userId)));
    expect(second[0]).toEqual(dead.slice(SWEEP_BATCH, 2 * SWEEP_BATCH).map((c) => c.userId));
    expect(rest.map((k) => k.userId)).toEqual(second.flat());
    const named = [...handed.flat(), ...second.flat()];
    expect(named.length).toBe(dead.length);
    expect(new Set(named)).toEqual(new Set(dead.map((c) => c.userId)));
    expect(await link.client.zcard(all)).toBe(0);
    expect(await store.sweep()).toEqual([]);
  });
});

describe('RedisPresenceStore.admitMany', () => {
  it('admits connections over several slices as admits one by one would: the per-user limit counts the earlier ones of the same call, expired entries free a place', async () => {
    const { store, tenant, all, connKey } = storeAt('admit');
    // A user already at the limit of 2, and one whose only entry expired (a dead node's).
    await store.connect({ tenant, userId: 'full', connId: 'full-1' });
    await store.connect({ tenant, userId: 'full', connId: 'full-2' });
    await store.connect({ tenant, userId: 'stale', connId: 'stale-old' });
    await link.client.zadd(connKey('stale'), Date.now() - 1000, 'stale-old');
    // More than one slice: single users, then three connections of one user in the second slice
    // (the third over the limit), the full user, and the stale one.
    const singles = Array.from({ length: HEARTBEAT_SLICE + 5 }, (_, i) => ({ c: { tenant, userId: `a${i}`, connId: `a${i}-c` }, max: 2 }));
    const trio = [1, 2, 3].map((n) => ({ c: { tenant, userId: 'trio', connId: `trio-${n}` }, max: 2 }));
    const items = [...singles, ...trio, { c: { tenant, userId: 'full', connId: 'full-3' }, max: 2 }, { c: { tenant, userId: 'stale', connId: 'stale-new' }, max: 1 }];

    const answers = await store.admitMany(items);
    expect(answers).toEqual([...singles.map(() => 'first'), 'first', 'more', 'full', 'full', 'first']);
    expect(await store.count({ tenant, userId: 'trio' })).toBe(2);
    expect(await link.client.zrange(connKey('trio'), 0, -1)).toEqual(['trio-1', 'trio-2']);
    expect(await store.count({ tenant, userId: 'full' })).toBe(2);
    expect(await link.client.zrange(connKey('stale'), 0, -1)).toEqual(['stale-new']);
    expect(await link.client.pttl(connKey('a0'))).toBeGreaterThan(60_000);
    // In the global set: everyone admitted, and nobody refused.
    const members = new Set(await link.client.zrange(all, 0, -1));
    for (const { c } of singles) expect(members.has([tenant, c.userId, c.connId].join(SEP))).toBe(true);
    expect(members.has([tenant, 'trio', 'trio-3'].join(SEP))).toBe(false);
    expect(members.has([tenant, 'full', 'full-3'].join(SEP))).toBe(false);
    // One alone answers as a group of one.
    expect(await store.admit({ tenant, userId: 'trio', connId: 'trio-4' }, 3)).toBe('more');
  });
});

describe('RedisPresenceStore.disconnectMany', () => {
  it('removes connections over several slices as removals one by one would: true once per user, at the connection that left them with none', async () => {
    const { p, store, tenant, all, connKey } = storeAt('leave');
    // Users with two connections, the second of each HEARTBEAT_SLICE later (in the next slice); one
    // user keeps a connection that is not removed; one connection was never registered.
    const pairs = Array.from({ length: HEARTBEAT_SLICE + 20 }, (_, i) => `p${i}`);
    const firsts = pairs.map((userId) => ({ tenant, userId, connId: `${userId}-a` }));
    const seconds = pairs.map((userId) => ({ tenant, userId, connId: `${userId}-b` }));
    const stays = { tenant, userId: 'stays', connId: 'stays-kept' };
    const staysGone = { tenant, userId: 'stays', connId: 'stays-gone' };
    const unknown = { tenant, userId: 'ghost', connId: 'ghost-0' };
    for (const c of [...firsts, ...seconds, stays, staysGone]) await store.connect(c);
    const removing = [...firsts, staysGone, unknown, ...seconds];
    const before = Date.now();

    const answers = await store.disconnectMany(removing);
    expect(answers.length).toBe(removing.length);
    const offline = removing.filter((_, i) => answers[i]).map((c) => c.connId);
    expect(offline.sort()).toEqual(seconds.map((c) => c.connId).sort());
    for (const userId of [pairs[0]!, pairs.at(-1)!]) {
      expect(await link.client.zcard(connKey(userId))).toBe(0);
      expect(Number(await link.client.get(`${p}{presence}:seen:${encodeURIComponent(tenant)}:${encodeURIComponent(userId)}`))).toBeGreaterThanOrEqual(before);
    }
    expect(await store.count({ tenant, userId: 'stays' })).toBe(1);
    expect(await link.client.zrange(all, 0, -1)).toEqual([[tenant, 'stays', 'stays-kept'].join(SEP)]);
    // Removing them again removes nothing and names no one; one alone answers as a group of one.
    expect((await store.disconnectMany(removing)).some(Boolean)).toBe(false);
    expect(await store.disconnect(stays)).toBe(true);
    expect(await store.disconnect(stays)).toBe(false);

    // A user whose only connection expired (its node died) and was not swept yet: a removal that
    // takes the expired entry names the user (gone now), and the sweep after it does not again.
    const orphan = { tenant, userId: 'orphan', connId: 'orphan-dead' };
    await store.connect(orphan);
    const past = Date.now() - 1000;
    await link.client.zadd(connKey('orphan'), past, orphan.connId);
    await link.client.zadd(all, past, [tenant, 'orphan', orphan.connId].join(SEP));
    expect(await store.disconnect({ tenant, userId: 'orphan', connId: 'orphan-other' })).toBe(true);
    expect(await store.sweep()).toEqual([]);
    expect(await link.client.zcard(all)).toBe(0);
  });
});

describe('the presence version', () => {
  it('every change raises it (Redis and memory stores), and `get` reads it with the states: a later reading is never older', async () => {
    const { store, tenant } = storeAt('version');
    const memory = new MemoryPresenceStore(60_000);
    for (const s of [store, memory]) {
      const k = { tenant, userId: 'v-user' };
      const c = { ...k, connId: 'v-conn' };
      const readings: { status: string; version: number }[] = [];
      const read = async () => {
        const [state] = await s.get(tenant, [k.userId]);
        readings.push({ status: state!.status, version: state!.version });
      };
      await read();
      await s.admitMany([{ c, max: 5 }]);
      await read();
      await s.setStatus(k, 'away');
      await read();
      await s.heartbeat([c]);
      await read();
      await s.disconnectMany([c]);
      await read();
      await s.connect(c);
      await read();
      expect(readings.map((r) => r.status)).toEqual(['offline', 'online', 'away', 'away', 'offline', 'away']);
      // Strictly rising at each change; two readings without a change between share their version.
      for (let i = 1; i < readings.length; i++) expect(readings[i]!.version, `reading ${i}`).toBeGreaterThan(readings[i - 1]!.version);
      const [again] = await s.get(tenant, [k.userId]);
      expect(again!.version).toBe(readings.at(-1)!.version);
    }
  });
});

describe('the presence version across a loss of the store', () => {
  it('never goes back when Redis loses its presence keys (a restart without persistence) or a one-node server restarts: hubs and clients that kept a newer version take the new states', async () => {
    const { store, tenant, p } = storeAt('version-loss');
    const k = { tenant, userId: 'vl-user' };
    const c = { ...k, connId: 'vl-conn' };
    await store.admitMany([{ c, max: 5 }]);
    await store.setStatus(k, 'away');
    await store.heartbeat([c]);
    const [before] = await store.get(tenant, [k.userId]);
    // Redis restarts without persistence: every presence key is gone, the version counter with them.
    const keys = await link.client.keys(`${p}*`);
    await link.client.del(...keys);
    // The node's next heartbeat writes the connection back (and its user is announced online again).
    expect(await store.heartbeat([c])).toEqual([k]);
    const [after] = await store.get(tenant, [k.userId]);
    expect(after!.status).toBe('online');
    expect(after!.version, 'the version read after the loss, against the one read before it').toBeGreaterThan(before!.version);
    // The other changes that start it again after a loss: a connect and a status set.
    for (const change of [() => store.connect({ ...c, connId: 'vl-2' }), () => store.setStatus(k, 'dnd')]) {
      const [last] = await store.get(tenant, [k.userId]);
      await link.client.del(...(await link.client.keys(`${p}*`)));
      await change();
      const [now] = await store.get(tenant, [k.userId]);
      expect(now!.version).toBeGreaterThan(last!.version);
    }

    // One node on the in-memory store, restarted: its clients keep the versions they were shown.
    const first = new MemoryPresenceStore(60_000);
    for (let i = 0; i < 3; i++) await first.connect({ ...c, connId: `m-${i}` });
    const [old] = await first.get(tenant, [k.userId]);
    // The new process starts a second later (a restart takes at least that).
    const later = Date.now() + 1000;
    vi.spyOn(Date, 'now').mockReturnValue(later);
    const restarted = new MemoryPresenceStore(60_000);
    vi.restoreAllMocks();
    await restarted.connect(c);
    const [fresh] = await restarted.get(tenant, [k.userId]);
    expect(fresh!.version, 'the version after a restart, against the one before it').toBeGreaterThan(old!.version);
  });
});
