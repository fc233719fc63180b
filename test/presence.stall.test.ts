/**
 * A node that stalls past its presence entries' life (PRESENCE_TTL_MS) has its users' connections
 * swept as if it were dead, and they are reported offline. Its next heartbeat registers them again
 * and reports them online again: a connected user is never left shown offline (real Redis; the
 * in-memory store of a single node the same way). A dead node's connections, however many, are
 * swept by one sweep of a node still alive.
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { keyOf } from '../src/domain/ids.js';
import { MemoryPresenceStore } from '../src/realtime/memory-presence.js';
import { PRESENCE_SLICE, SEP } from '../src/realtime/presence-store.js';
import { RedisPresenceStore, SWEEP_BATCH } from '../src/realtime/redis-presence.js';
import { RedisLink } from '../src/realtime/redis.js';
import { TEST_REDIS_URL } from './env.js';
import { actor, clientFor, fileServer, HEARTBEAT_SLICE, recordEvents, uuid, waitFor } from './fixture.js';

// Entries that live an hour: the node's own heartbeat and sweep timers (every third and half of it)
// never run during the test, which drives both itself (a background heartbeat between its expiry and
// its sweep would register the user again before the sweep).
const t = fileServer('presence_stall', { presenceTtlMs: 3_600_000 });
const redis = new Redis(TEST_REDIS_URL);
afterAll(() => redis.quit());

/** Backdates every presence entry of the user to a second ago: what a stalled node leaves behind. */
async function expire(prefix: string, tenant: string, userId: string): Promise<void> {
  const all = `${prefix}{presence}:all`;
  const mine = (await redis.zrange(all, 0, -1)).filter((m) => m.startsWith(`${tenant}${SEP}${userId}${SEP}`));
  expect(mine.length).toBeGreaterThan(0);
  const past = Date.now() - 1000;
  const connKey = `${prefix}{presence}:conn:${keyOf(tenant, userId)}`;
  for (const m of mine) {
    await redis.zadd(all, past, m);
    await redis.zadd(connKey, past, m.split(SEP)[2]!);
  }
}

/**
 * A node that will die: its store on the app's Redis prefix registers one connection per user;
 * `died` then expires every entry, in the users' order (the first expired first, so sweep batches
 * take them in this order), and returns the global set's key and the first entry's expiry.
 */
async function doomedNode(link: RedisLink, prefix: string, users: string[]): Promise<{ died: () => Promise<{ all: string; past: number }> }> {
  const store = new RedisPresenceStore(link, prefix, 3_600_000);
  const conns = users.map((userId) => ({ tenant: 'default', userId, connId: `dead-${userId}` }));
  for (const c of conns) await store.connect(c);
  return {
    died: async () => {
      const all = `${prefix}{presence}:all`;
      const past = Date.now() - 10_000;
      for (const [i, c] of conns.entries()) {
        await redis.zadd(all, past + i, [c.tenant, c.userId, c.connId].join(SEP));
        await redis.zadd(`${prefix}{presence}:conn:${keyOf(c.tenant, c.userId)}`, past + i, c.connId);
      }
      return { all, past };
    },
  };
}

/**
 * The sizes of the groups the app's presence service hands its Redis store's `method` while `run`
 * runs (the store's own method still does the work).
 */
async function groupsOf(method: 'admitMany' | 'disconnectMany', run: () => Promise<unknown>): Promise<number[]> {
  const store = (t.app.services.presence as unknown as { store: RedisPresenceStore }).store;
  const groups: number[] = [];
  const original = store[method].bind(store) as (items: unknown[]) => Promise<unknown[]>;
  const spy = vi.spyOn(store, method).mockImplementation(((items: unknown[]) => {
    groups.push(items.length);
    return original(items);
  }) as never);
  try {
    await run();
  } finally {
    spy.mockRestore();
  }
  return groups;
}

describe('presence after a stall', () => {
  it('a user swept while their node stalled is reported online again by its next heartbeat, with the status they set', async () => {
    const u = uuid().slice(0, 8);
    const [p, w] = [`p-${u}`, `w-${u}`];
    await using wc = clientFor(t.url, w);
    const room = await wc.trpc.room.create.mutate({ kind: 'group', name: 'stall', memberIds: [p] });
    expect(room.id).toBeTruthy();
    using rec = recordEvents(wc, { roomId: room.id });
    await rec.ready();
    await using pc = clientFor(t.url, p, { ws: true });
    expect((await pc.trpc.auth.me.query()).id).toBe(p);
    await rec.next('presence', (e) => e.userId === p && e.status === 'online');
    await pc.trpc.presence.set.mutate({ status: 'away' });
    await rec.next('presence', (e) => e.userId === p && e.status === 'away');

    // The node stalled: its entries expired, and a sweep (any node's) took p for gone.
    await expire(t.config.redisPrefix, 'default', p);
    await t.app.services.presence.sweep();
    await rec.next('presence', (e) => e.userId === p && e.status === 'offline');
    expect((await wc.trpc.presence.get.query({ userIds: [p] }))[0]).toMatchObject({ status: 'offline' });

    // The node runs again: its heartbeat brings p back, and says so.
    await t.app.services.presence.heartbeat();
    const statuses = () => rec.of('presence', (e) => e.userId === p).map((e) => e.status);
    await waitFor(statuses, 'the presence event after the heartbeat', { until: (s) => s.length >= 4 });
    expect(statuses()).toEqual(['online', 'away', 'offline', 'away']);
    expect((await wc.trpc.presence.get.query({ userIds: [p] }))[0]).toMatchObject({ status: 'away' });
    expect(await t.app.services.presence.connections({ id: p, name: p, tenant: 'default', roles: [] })).toBe(1);
  });

  it('a connection that closes while a heartbeat is under way is not written back by it: its user goes offline and stays so', async () => {
    const presence = t.app.services.presence;
    const u = uuid().slice(0, 8);
    // More connections than one heartbeat slice: the last ones are renewed by a later round trip.
    const ids = Array.from({ length: HEARTBEAT_SLICE + 10 }, (_, i) => `hb-${u}-${i}`);
    for (const id of ids) await presence.connected(actor(id), `conn-${id}`);
    const last = ids.at(-1)!;
    expect(await presence.connections(actor(last))).toBe(1);
    const beat = presence.heartbeat();
    // Its removal reaches Redis after the heartbeat's first slice and before the slice that renews it.
    await presence.disconnected(`conn-${last}`);
    await beat;
    expect(await presence.connections(actor(last))).toBe(0);
    expect(await presence.connections(actor(ids[0]!))).toBe(1);
    await Promise.all(ids.slice(0, -1).map((id) => presence.disconnected(`conn-${id}`)));
    expect(await presence.connections(actor(ids[0]!))).toBe(0);
  });

  it("a dead node's connections, more than one sweep batch of them: one sweep of this node reports every user offline, to their rooms too", async () => {
    const u = uuid().slice(0, 8);
    const [d, w] = [`d-${u}`, `w-${u}`];
    await using wc = clientFor(t.url, w);
    const room = await wc.trpc.room.create.mutate({ kind: 'group', name: 'dead node', memberIds: [d] });
    using rec = recordEvents(wc, { roomId: room.id });
    await rec.ready();
    // The dead node held d's connection and those of users of no room; it died an hour ago, d's
    // entry expired last (in the last batch).
    const link = new RedisLink('presence', TEST_REDIS_URL);
    try {
      const presence = t.app.services.presence;
      const others = Array.from({ length: SWEEP_BATCH * 2 + 20 }, (_, i) => `x${i}-${u}`);
      const conns = [...others, d];
      const node = await doomedNode(link, t.config.redisPrefix, conns);
      expect(await presence.connections(actor(d))).toBe(1);
      const { all, past } = await node.died();
      await presence.sweep();
      await rec.next('presence', (e) => e.userId === d && e.status === 'offline');
      for (const userId of [others[0]!, others.at(-1)!, d]) expect(await presence.connections(actor(userId)), userId).toBe(0);
      expect(await redis.zcount(all, '-inf', past + conns.length)).toBe(0);
    } finally {
      await link.close();
    }
  });

  it('a sweep that a Redis error ends part way still reports the users of the batches it removed; the next sweep reports those of the batch that failed', async () => {
    const u = uuid().slice(0, 8);
    const [d1, d2, w] = [`d1-${u}`, `d2-${u}`, `w-${u}`];
    await using wc = clientFor(t.url, w);
    const room = await wc.trpc.room.create.mutate({ kind: 'group', name: 'sweep fails', memberIds: [d1, d2] });
    using rec = recordEvents(wc, { roomId: room.id });
    await rec.ready();
    const link = new RedisLink('presence', TEST_REDIS_URL);
    try {
      // A dead node's connections: d1 in the first sweep batch, d2 in the second after a user whose
      // set is not a sorted set (a real WRONGTYPE error of that batch's removal).
      const conns = Array.from({ length: SWEEP_BATCH * 2 + 20 }, (_, i) => `y${i}-${u}`);
      const broken = conns[SWEEP_BATCH + 10]!;
      conns[0] = d1;
      conns[SWEEP_BATCH + 20] = d2;
      const { all, past } = await (await doomedNode(link, t.config.redisPrefix, conns)).died();
      const brokenKey = `${t.config.redisPrefix}{presence}:conn:${keyOf('default', broken)}`;
      await redis.del(brokenKey);
      await redis.set(brokenKey, 'not a sorted set');

      const presence = t.app.services.presence;
      await presence.sweep();
      await rec.next('presence', (e) => e.userId === d1 && e.status === 'offline');
      expect(await redis.zcount(all, '-inf', past + conns.length)).toBe(conns.length - 2 * SWEEP_BATCH);

      await redis.del(brokenKey);
      // One sweep at a time: a second call while it runs gets the same sweep (the timer's, say).
      const sweep = presence.sweep();
      expect(presence.sweep()).toBe(sweep);
      await sweep;
      await rec.next('presence', (e) => e.userId === d2 && e.status === 'offline');
      expect(await redis.zcount(all, '-inf', past + conns.length)).toBe(0);
      const offline = rec.of('presence', (e) => e.status === 'offline').map((e) => e.userId);
      expect(offline).toEqual([d1, d2]);
    } finally {
      await link.close();
    }
  });

  it('connections opened at once are admitted by Redis in groups: the first at once, the ones that open meanwhile together', async () => {
    const presence = t.app.services.presence;
    const u = uuid().slice(0, 8);
    const ids = Array.from({ length: PRESENCE_SLICE + 30 }, (_, i) => `join-${u}-${i}`);
    // As a room's members coming online: all in one turn of the event loop.
    const groups = await groupsOf('admitMany', async () => {
      const admitted = await Promise.all(ids.map((id) => presence.admit(actor(id), `conn-${id}`, 2)));
      expect(admitted.every(Boolean)).toBe(true);
    });
    expect(groups).toEqual([1, PRESENCE_SLICE, ids.length - 1 - PRESENCE_SLICE]);
    for (const id of [ids[0]!, ids[PRESENCE_SLICE]!, ids.at(-1)!]) expect(await presence.connections(actor(id)), id).toBe(1);
    await Promise.all(ids.map((id) => presence.disconnected(`conn-${id}`)));
    expect(await presence.connections(actor(ids[0]!))).toBe(0);
  });

  it('connections closed at once are removed from Redis in groups, and every user goes offline', async () => {
    const presence = t.app.services.presence;
    const u = uuid().slice(0, 8);
    const ids = Array.from({ length: PRESENCE_SLICE * 2 + 50 }, (_, i) => `leave-${u}-${i}`);
    for (const id of ids) await presence.connected(actor(id), `conn-${id}`);
    // As a drained node's sockets close: all in one turn of the event loop.
    const groups = await groupsOf('disconnectMany', () => Promise.all(ids.map((id) => presence.disconnected(`conn-${id}`))));
    // The first goes at once, the others wait for it and go in groups of at most PRESENCE_SLICE.
    expect(groups).toEqual([1, PRESENCE_SLICE, PRESENCE_SLICE, ids.length - 1 - 2 * PRESENCE_SLICE]);
    for (const id of [ids[0]!, ids[PRESENCE_SLICE]!, ids.at(-1)!]) expect(await presence.connections(actor(id)), id).toBe(0);
  });

  it('after Redis lost the presence keys (a restart without persistence), the room still gets its members\' presence: the next heartbeat brings them back, and later changes go out', async () => {
    const u = uuid().slice(0, 8);
    const [p, w] = [`rl-${u}`, `wl-${u}`];
    await using wc = clientFor(t.url, w);
    const room = await wc.trpc.room.create.mutate({ kind: 'group', name: 'redis lost', memberIds: [p] });
    using rec = recordEvents(wc, { roomId: room.id });
    await rec.ready();
    await using pc = clientFor(t.url, p, { ws: true });
    expect((await pc.trpc.auth.me.query()).id).toBe(p);
    await rec.next('presence', (e) => e.userId === p && e.status === 'online');
    await pc.trpc.presence.set.mutate({ status: 'away' });
    const away = await rec.next('presence', (e) => e.userId === p && e.status === 'away');

    // Redis restarts empty: every presence key of the deployment is gone, its version counter too.
    const keys = await redis.keys(`${t.config.redisPrefix}{presence}:*`);
    expect(keys.length).toBeGreaterThan(0);
    await redis.del(...keys);
    // The node's next heartbeat registers p's connection again and announces p online.
    await t.app.services.presence.heartbeat();
    // (The room's hub keeps the highest version it delivered per user and drops older ones.)
    const back = await rec.next('presence', (e) => e.userId === p && e.status === 'online' && e.version > away.version, 5000);
    expect((await wc.trpc.presence.get.query({ userIds: [p] }))[0]).toMatchObject({ status: 'online', version: back.version });
    await pc.trpc.presence.set.mutate({ status: 'dnd' });
    await rec.next('presence', (e) => e.userId === p && e.status === 'dnd', 5000);
    expect(rec.of('presence', (e) => e.userId === p).map((e) => e.status)).toEqual(['online', 'away', 'online', 'dnd']);
  });

  it('the in-memory store (one node): a heartbeat registers again what the sweep removed, and names the user', async () => {
    const store = new MemoryPresenceStore(60_000);
    const c = { tenant: 'acme', userId: 'solo', connId: 'c1' };
    const other = { tenant: 'acme', userId: 'steady', connId: 'c2' };
    await store.connect(c);
    await store.connect(other);
    // c's entry expired (the process stalled), other's did not.
    (store as unknown as { conns: Map<string, Map<string, number>> }).conns.get(`acme${SEP}solo`)!.set('c1', Date.now() - 1000);
    expect(await store.sweep()).toEqual([{ tenant: 'acme', userId: 'solo' }]);
    expect(await store.count(c)).toBe(0);
    expect(await store.heartbeat([c, other])).toEqual([{ tenant: 'acme', userId: 'solo' }]);
    expect(await store.count(c)).toBe(1);
    expect(await store.heartbeat([c, other])).toEqual([]);
  });
});
