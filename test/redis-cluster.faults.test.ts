/**
 * Redis Cluster under change (REDIS_CLUSTER_NODES): a private cluster of 3 masters and 3 replicas
 * (test/fixture/redis-topologies.ts) and two nodes of ours on it. A slot moved under traffic
 * (resharding) and a master killed under traffic lose nothing: every acknowledged message reaches
 * every subscriber once, in order. Delivery, resume and shared state: test/redis-cluster.test.ts.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keySlot } from '../src/realtime/redis-slot.js';
import { roomSlotOf, startClusterNodes, stopClusterNodes } from './fixture/cluster-nodes.js';
import { type RedisClusterEnv, redisCall } from './fixture/redis-topologies.js';
import {
  analyze,
  clientFor,
  expectPerfect,
  runSenders,
  Scope,
  StreamLog,
  uuid,
  waitFor,
  wsClient,
  type TestEnv,
  type TestServer,
  sendUntilStopped,
} from './fixture.js';

let cluster: RedisClusterEnv;
let env: TestEnv;
let a: TestServer;
let b: TestServer;

const ROOM_CREATES = 3;

beforeAll(async () => {
  ({ cluster, env, a, b } = await startClusterNodes('rcluster_faults', ROOM_CREATES));
}, 60_000);

afterAll(() => stopClusterNodes({ cluster, env, a, b }), 90_000);

/** The broker channel of a room on a Cluster, and its slot. */
const roomSlot = (roomId: string) => roomSlotOf(env, roomId);

describe('a Redis Cluster that changes under traffic', () => {
  it('moves the slot of a busy room to another master under traffic and loses nothing', async () => {
    await using open = new Scope();
    const senders = ['m0', 'm1', 'm2', 'm3'].map((id, i) => open.use(clientFor(i % 2 === 0 ? a.url : b.url, id)));
    const room = await senders[0]!.trpc.room.create.mutate({ kind: 'group', name: 'reshard', memberIds: ['m1', 'm2', 'm3', 'watcher'] });
    const watchers = [a, b].map((s) => open.use(clientFor(s.url, 'watcher')));
    const logs = watchers.map((w, i) => {
      const log = new StreamLog(i === 0 ? 'on A' : 'on B');
      const sub = w.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
      open.use({ close: () => sub.unsubscribe() });
      return log;
    });
    await Promise.all(logs.map((l) => l.ready()));
    const slot = roomSlot(room.id);
    const from = await cluster.ownerOf(slot);
    const to = (await cluster.nodes()).find((n) => n.master && n.port !== from)!.port;

    let sent = 0;
    let move: Promise<{ from: number; to: number; keys: number }> | null = null;
    const gapFillsBefore = a.app.services.hubs.stats.gapFills + b.app.services.hubs.stats.gapFills;
    const seqs = await runSenders(senders, room.id, 60, {
      onSent: () => {
        // A quarter of the way: the slot moves while the senders go on.
        if (++sent === 60) move = cluster.moveSlot(slot, to);
      },
    });
    const moved = await move!;
    expect(await cluster.ownerOf(slot)).toBe(to);
    // After the move: more traffic, then a last message as a barrier.
    const after = await runSenders(senders, room.id, 10);
    const end = await senders[1]!.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'end' });
    const all = [...seqs, ...after, end.seq];
    await Promise.all(logs.map((l) => l.all(all, 'every message after the slot moved', 30_000)));
    const gapFills = a.app.services.hubs.stats.gapFills + b.app.services.hubs.stats.gapFills - gapFillsBefore;
    console.log(`[cluster] slot ${slot} moved ${JSON.stringify(moved)} under traffic; ${all.length} messages; gap fills ${gapFills}; counts ${logs.map((l) => JSON.stringify(analyze(l.got.items, all))).join(' ')}`);
    expectPerfect(logs, all);
    // The channel now lives on the new owner.
    const channel = `${env.redisPrefix}{room:${room.id}}`;
    await waitFor(async () => Number(((await redisCall(to, 'PUBSUB', 'SHARDNUMSUB', channel)) as [string, number])[1]), 'both nodes subscribed on the new owner', {
      until: (n) => n === 2,
      timeoutMs: 15_000,
      everyMs: 100,
    });
  });

  it('moves the presence slot with its keys (MIGRATE) while users connect and leave', async () => {
    const slot = keySlot(`${env.redisPrefix}{presence}:all`);
    const from = await cluster.ownerOf(slot);
    const to = (await cluster.nodes()).find((n) => n.master && n.port !== from)!.port;
    await using open = new Scope();
    const users = Array.from({ length: 8 }, (_, i) => `p${i}`);
    const clients = users.map((u, i) => open.use(wsClient({ url: i % 2 ? a.url : b.url, userId: u })));
    await Promise.all(clients.map((c) => c.trpc.auth.me.query()));
    const [moved] = await Promise.all([
      cluster.moveSlot(slot, to),
      // Connections come and go meanwhile (multi-key transactions on the moving slot).
      (async () => {
        for (let i = 0; i < 8; i++) {
          await using c = wsClient({ url: i % 2 ? b.url : a.url, userId: `q${i}` });
          await c.trpc.auth.me.query();
        }
      })(),
    ]);
    expect(moved.keys).toBeGreaterThan(0);
    expect(await cluster.ownerOf(slot)).toBe(to);
    await using asker = clientFor(a.url, 'asker');
    await asker.trpc.room.create.mutate({ kind: 'group', name: 'presence-move', memberIds: users });
    await waitFor(
      async () => (await asker.trpc.presence.get.query({ userIds: users })).map((p) => p.status),
      'every connected user online after the move',
      { until: (xs) => xs.length === users.length && xs.every((s) => s === 'online'), timeoutMs: 10_000, everyMs: 50 },
    );
  });
  it('a master is killed under traffic: its replica takes over, every message once and in order', async () => {
    await using open = new Scope();
    const senderIds = ['k0', 'k1', 'k2', 'k3'];
    const senders = senderIds.map((id, i) => open.use(clientFor(i % 2 === 0 ? a.url : b.url, id)));
    const room = await senders[0]!.trpc.room.create.mutate({ kind: 'group', name: 'master-killed', memberIds: [...senderIds.slice(1), 'watcher'] });
    const logs = [a, b].map((s, i) => {
      const w = open.use(clientFor(s.url, 'watcher'));
      const log = new StreamLog(i === 0 ? 'on A' : 'on B');
      const sub = w.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
      open.use({ close: () => sub.unsubscribe() });
      return log;
    });
    await Promise.all(logs.map((l) => l.ready()));
    const owner = await cluster.ownerOf(roomSlot(room.id));
    const victim = cluster.servers.find((s) => s.port === owner)!;

    // Senders go on until told to stop; a failed send is repeated with the same clientId (idempotent).
    const traffic = sendUntilStopped(senders, room.id, 'k');
    const acked = traffic.acked;
    await waitFor(() => acked.length, '60 messages before the kill', { until: (n) => n >= 60, timeoutMs: 20_000 });
    const killedAt = performance.now();
    const ackedAtKill = acked.length;
    await victim.kill();
    // The other masters mark it failed (cluster-node-timeout 2 s) and its replica is elected.
    const promoted = await waitFor(() => cluster.ownerOf(roomSlot(room.id)).catch(() => owner), 'a replica promoted for the slot', {
      until: (p) => p !== owner,
      timeoutMs: 30_000,
      everyMs: 100,
    });
    await cluster.settled();
    const settledAt = performance.now();
    await waitFor(
      () => senderIds.map((_, i) => acked.filter((x) => x.sender === i && x.startedAt > settledAt).length),
      'sends acknowledged after the replica took over',
      { until: (xs) => xs.every((n) => n >= 10), timeoutMs: 15_000, everyMs: 20 },
    );
    await traffic.stop();
    const end = await senders[1]!.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'end' });
    const all = [...acked.map((x) => x.seq), end.seq];
    await Promise.all(logs.map((l) => l.all(all, 'every acknowledged message', 30_000)));
    const ats = acked.map((x) => x.at).sort((x, y) => x - y);
    let longest = 0;
    for (let i = 1; i < ats.length; i++) longest = Math.max(longest, ats[i]! - ats[i - 1]!);
    const readyz = await Promise.all([a, b].map(async (s) => (await fetch(`${s.url}/readyz`)).status));
    console.log(
      `[cluster] master ${owner} (the room's shard) killed after ${ackedAtKill} sends; replica ${promoted} serves the slot after ${Math.round(settledAt - killedAt)} ms; ` +
        `longest pause between acknowledgements ${Math.round(longest)} ms; failed sends (repeated) ${traffic.errors()}; /readyz after ${readyz.join(',')}; ${all.length} messages; ` +
        `counts ${logs.map((l) => JSON.stringify(analyze(l.got.items, all))).join(' ')}`,
    );
    expect(promoted).not.toBe(owner);
    expect(new Set(all).size).toBe(all.length);
    expectPerfect(logs, all);
  });
});
