/**
 * Two nodes of ours on a private Redis Cluster of 3 masters and 3 replicas (REDIS_CLUSTER_NODES):
 * room and inbox events on sharded pub/sub, resume, rate limits, presence and revocations shared
 * by both nodes. Changes under traffic (slot moves, a master killed): test/redis-cluster.faults.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { roomSlotOf, startClusterNodes, stopClusterNodes } from './fixture/cluster-nodes.js';
import { type RedisClusterEnv, redisCall } from './fixture/redis-topologies.js';
import {
  clientFor,
  expectPerfect,
  codeOf,
  getJson,
  recordingWebSocket,
  runSenders,
  Scope,
  StreamLog,
  tokenFor,
  uuid,
  waitFor,
  wsClient,
  type TestEnv,
  type TestServer,
} from './fixture.js';
import { createChatClient } from '../client/index.js';

let cluster: RedisClusterEnv;
let env: TestEnv;
let a: TestServer;
let b: TestServer;

const ROOM_CREATES = 3;

beforeAll(async () => {
  ({ cluster, env, a, b } = await startClusterNodes('rcluster', ROOM_CREATES));
}, 60_000);

afterAll(() => stopClusterNodes({ cluster, env, a, b }), 90_000);

/** The broker channel of a room on a Cluster, and its slot. */
const roomSlot = (roomId: string) => roomSlotOf(env, roomId);

describe('two nodes on a Redis Cluster', () => {
  it('serve once every connection is ready; /readyz names the cluster', async () => {
    for (const s of [a, b]) {
      expect(s.app.infra.redis.every((l) => l.cluster && l.client.status === 'ready')).toBe(true);
      const r = await getJson<{ redis: { topology: string } }>(`${s.url}/readyz`);
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ status: 'ready', bus: { kind: 'redis', status: 'up' }, redis: { kind: 'redis', topology: 'cluster' } });
    }
  });

  it('a server process configured by REDIS_CLUSTER_NODES (src/main.ts) joins them: its sends reach a subscriber on node A', async () => {
    await using node = await env.startNode('C', { REDIS_URL: '', REDIS_CLUSTER_NODES: cluster.nodesEnv });
    const r = await getJson(`${node.url}/readyz`);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ redis: { kind: 'redis', topology: 'cluster' } });
    await using sender = clientFor(node.url, 'proc-sender');
    await using watcher = clientFor(a.url, 'proc-watcher');
    const room = await sender.trpc.room.create.mutate({ kind: 'group', name: 'from a process', memberIds: ['proc-watcher'] });
    const log = new StreamLog();
    const s = watcher.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
    await log.ready();
    const m = await sender.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'hello from C' });
    await log.all([m.seq], 'the message sent through the process', 20_000);
    expectPerfect([log], [m.seq]);
    s.unsubscribe();
  });

  it('deliver across nodes on sharded pub/sub: each room on one shard, the rooms spread over the masters', async () => {
    await using open = new Scope();
    const alice = open.use(clientFor(b.url, 'alice'));
    const bob = open.use(clientFor(a.url, 'bob'));
    const before = await cluster.commandCalls('spublish');
    const rooms = [];
    // Three creators: the room-create limit (3 per minute per user) is shared by both nodes.
    for (const creator of ['alice', 'ann', 'abe']) {
      const c = open.use(clientFor(creator === 'alice' ? b.url : a.url, creator));
      for (let i = 0; i < 3; i++) rooms.push(await c.trpc.room.create.mutate({ kind: 'group', name: `spread-${creator}-${i}`, memberIds: ['bob', 'alice'] }));
    }
    const logs = rooms.map((r) => {
      const log = new StreamLog(r.name);
      const sub = bob.trpc.chat.events.subscribe({ roomId: r.id }, { onData: log.onData, onError: log.got.fail });
      open.use({ close: () => sub.unsubscribe() });
      return log;
    });
    await Promise.all(logs.map((l) => l.ready(20_000)));
    const sent = await Promise.all(rooms.map((r) => alice.trpc.chat.send.mutate({ roomId: r.id, clientId: uuid(), body: `to ${r.name}` })));
    await Promise.all(logs.map((l, i) => l.all([sent[i]!.seq], 'the message of its room', 20_000)));
    for (const [i, l] of logs.entries()) expectPerfect([l], [sent[i]!.seq]);

    const owners = new Set(await Promise.all(rooms.map((r) => cluster.ownerOf(roomSlot(r.id)))));
    expect(owners.size, 'masters owning the rooms of this test').toBeGreaterThan(1);
    // Sharded: SPUBLISH reached the masters; no classic PUBLISH (which every node of a cluster would carry).
    const after = await cluster.commandCalls('spublish');
    const grew = [...after].filter(([port, n]) => n > (before.get(port) ?? 0)).length;
    expect(grew).toBeGreaterThan(1);
    expect([...(await cluster.commandCalls('publish')).values()].every((n) => n === 0)).toBe(true);
    // Each room's channel is subscribed on the master that owns its slot, and nowhere else.
    const r0 = rooms[0]!;
    const owner = await cluster.ownerOf(roomSlot(r0.id));
    const channel = `${env.redisPrefix}{room:${r0.id}}`;
    for (const port of cluster.ports) {
      const reply = (await redisCall(port, 'PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
      expect(Number(reply[1]), `subscribers of the room's channel on ${port}`).toBe(port === owner ? 1 : 0);
    }
  });

  it('bus.listened asks the owner shard (PUBSUB SHARDNUMSUB)', async () => {
    await using bob = clientFor(a.url, 'bob');
    const log = new StreamLog();
    const room = await bob.trpc.room.create.mutate({ kind: 'group', name: 'listened' });
    const s = bob.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
    await log.ready();
    const other = uuid();
    const heard = await b.app.infra.bus.listened([`room:${room.id}`, `room:${other}`]);
    expect([...heard]).toEqual([`room:${room.id}`]);
    s.unsubscribe();
  });

  it('resume: a subscriber whose socket is cut mid-stream gets every message once, in order', async () => {
    await using open = new Scope();
    const senders = ['s0', 's1'].map((id, i) => open.use(clientFor(i === 0 ? a.url : b.url, id)));
    const room = await senders[0]!.trpc.room.create.mutate({ kind: 'group', name: 'resume', memberIds: ['s1', 'sub'] });
    const rec = recordingWebSocket();
    const sub = open.use(createChatClient({ url: a.url, token: tokenFor('sub'), WebSocket: rec.WebSocket, retryDelayMs: () => 20 }));
    const log = new StreamLog('sub');
    let cut = 0;
    log.onMessage = (n) => {
      if (cut === 0 && n >= 60) cut = rec.cut();
    };
    const s = sub.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
    await log.ready();
    const seqs = await runSenders(senders, room.id, 100);
    const end = await senders[1]!.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'end' });
    await log.all([...seqs, end.seq], 'all messages after the cut', 30_000);
    expect(cut).toBeGreaterThan(0);
    expectPerfect([log], [...seqs, end.seq]);
    s.unsubscribe();
  });

  it('share rate limits, presence and revocations across the nodes', async () => {
    // Rate limits: the room-create budget of one user is counted once for both nodes.
    await using limitedA = clientFor(a.url, 'limited');
    await using limitedB = clientFor(b.url, 'limited');
    for (let i = 0; i < ROOM_CREATES; i++) await (i % 2 ? limitedB : limitedA).trpc.room.create.mutate({ kind: 'group', name: `l${i}` });
    for (const c of [limitedB, limitedA]) {
      expect(codeOf(await c.trpc.room.create.mutate({ kind: 'group', name: 'over' }).catch((e: unknown) => e))).toBe('TOO_MANY_REQUESTS');
    }

    // Presence: a user connected to A is online for a user asking B.
    await using carol = wsClient({ url: a.url, userId: 'carol' });
    await carol.trpc.auth.me.query();
    await using dave = clientFor(b.url, 'dave');
    await dave.trpc.room.create.mutate({ kind: 'group', name: 'presence', memberIds: ['carol'] });
    await waitFor(
      async () => (await dave.trpc.presence.get.query({ userIds: ['carol'] }))[0]?.status,
      'carol online as seen from node B',
      { until: (s) => s === 'online', timeoutMs: 10_000, everyMs: 50 },
    );

    // Revocations: an admin on B revokes erin; erin's older token is refused on A (the denylist in Redis).
    const erinToken = tokenFor('erin');
    await using open = new Scope();
    const erinA = open.use(createChatClient({ url: a.url, token: erinToken }));
    await erinA.trpc.auth.me.query();
    await using admin = clientFor(b.url, 'root', { roles: ['admin'] });
    await admin.trpc.auth.revoke.mutate({ userId: 'erin' });
    expect(codeOf(await erinA.trpc.auth.me.query().catch((e: unknown) => e))).toBe('UNAUTHORIZED');
    const masters = (await cluster.nodes()).filter((n) => n.master);
    const keys = await Promise.all(masters.map(async (m) => (await redisCall(m.port, 'KEYS', `${env.redisPrefix}revoked:*`)) as string[]));
    expect(keys.flat()).toHaveLength(1);
  });

  it('RedisLink.mget reads keys of many slots at once (an MGET per slot), in order, null where none', async () => {
    const link = a.app.infra.redis.find((l) => l.role === 'sessions')!;
    const keys = Array.from({ length: 60 }, (_, i) => `${env.redisPrefix}mget:${i}:${uuid()}`);
    for (const [i, key] of keys.entries()) if (i % 3 !== 0) await link.client.set(key, `v${i}`, 'EX', 60);
    // The keys spread over the masters: a plain MGET of them is refused (CROSSSLOT).
    await expect(link.client.mget(keys)).rejects.toThrow(/CROSSSLOT|same slot/i);
    expect(await link.mget(keys)).toEqual(keys.map((_, i) => (i % 3 !== 0 ? `v${i}` : null)));
  });
});
