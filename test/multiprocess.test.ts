/**
 * Multi-process tests of the delivery guarantee (docs/DELIVERY.md): two real server
 * processes (src/main.ts) share one PostgreSQL database and one Redis; clients are real wsLink
 * clients. Covers concurrent start (advisory-locked migrations), cross-node fan-out, resume after
 * client-side socket cuts, and failover to the other node after SIGKILL.
 */
import { performance } from 'node:perf_hooks';
import { WebSocket as WsWebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChatClient, type ChatClient } from '../client/index.js';
import {
  analyze,
  clientFor,
  dispose,
  expectPerfect,
  getJson,
  migrationsList,
  recordingWebSocket,
  runSenders,
  Scope,
  StreamLog,
  testEnv,
  tokenFor,
  uuid,
  wsClient,
  type ServerProc,
  type TestEnv,
} from './fixture.js';

const SENDERS = 4;
const PER_SENDER = 250;
const TOTAL = SENDERS * PER_SENDER;

let env: TestEnv;
let nodeA: ServerProc;
let nodeB: ServerProc;

beforeAll(async () => {
  env = await testEnv('mp');
  // Both processes start together on the fresh database: both try to migrate it at once.
  const started = await Promise.allSettled([env.startNode('A'), env.startNode('B')]);
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  [nodeA, nodeB] = started.map((s) => (s as PromiseFulfilledResult<ServerProc>).value) as [ServerProc, ServerProc];
});

afterAll(() => dispose(env));

const senderIds = Array.from({ length: SENDERS }, (_, i) => `sender${i}`);

/** A node's room hub totals (GET /admin/stats): gaps closed by the bus, and gaps filled from PostgreSQL. */
async function gapStats(url: string): Promise<{ gapWaits: number; gapFills: number }> {
  const r = await getJson<{ events: { gapWaits: number; gapFills: number } }>(`${url}/admin/stats`, {
    headers: { authorization: `Bearer ${tokenFor('mp-admin', { roles: ['operator'] })}` },
  });
  if (r.status !== 200) throw new Error(`/admin/stats: ${r.status} ${JSON.stringify(r.body)}`);
  return { gapWaits: r.body.events.gapWaits, gapFills: r.body.events.gapFills };
}

async function newRoom(creator: ChatClient, name: string) {
  return creator.trpc.room.create.mutate({ kind: 'group', name, memberIds: [...senderIds.filter((s) => s !== 'sender0'), 'sub'] });
}

describe('two server processes', () => {
  it('start together on a fresh database: migrations applied once, both ready', async () => {
    expect(nodeA.url).not.toBe(nodeB.url);
    for (const n of [nodeA, nodeB]) {
      const res = await fetch(`${n.url}/readyz`);
      expect(res.status, `${n.label} /readyz`).toBe(200);
      expect(await res.json()).toMatchObject({ status: 'ready', bus: { kind: 'redis', status: 'up' } });
    }
    const rows = await env.sql<{ name: string }>('select name from mikro_orm_migrations order by id');
    expect(rows.map((r) => r.name)).toEqual(migrationsList.map((m) => m.name));
  });

  it('fans out across nodes in both directions', async () => {
    await using aliceB = clientFor(nodeB.url, 'alice');
    await using bobA = clientFor(nodeA.url, 'bob');
    await using aliceA = clientFor(nodeA.url, 'alice');
    const room = await aliceB.trpc.room.create.mutate({ kind: 'group', name: 'cross', memberIds: ['bob'] });
    const bobLog = new StreamLog();
    const aliceLog = new StreamLog();
    const s1 = bobA.trpc.chat.events.subscribe({ roomId: room.id }, { onData: bobLog.onData, onError: bobLog.got.fail });
    const s2 = aliceB.trpc.chat.events.subscribe({ roomId: room.id }, { onData: aliceLog.onData, onError: aliceLog.got.fail });
    await Promise.all([bobLog.ready(10_000), aliceLog.ready(10_000)]);
    const viaB = await aliceB.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'via B' });
    const viaA = await aliceA.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'via A' });
    await bobLog.all([viaB.seq, viaA.seq], 'both messages on A', 30_000);
    await aliceLog.all([viaB.seq, viaA.seq], 'both messages on B', 30_000);
    for (const log of [bobLog, aliceLog]) {
      const bodies = log.got.items.flatMap((x) => (x.data.type === 'message.new' ? [x.data.message.body] : []));
      expect(bodies).toEqual(['via B', 'via A']);
    }
    s1.unsubscribe();
    s2.unsubscribe();
  });

  it('measures send-to-receive latency across nodes (printed, not asserted)', async () => {
    await using sender = clientFor(nodeB.url, 'sender0');
    await using sub = clientFor(nodeA.url, 'sub');
    const room = await newRoom(sender, 'latency');
    const log = new StreamLog();
    const s = sub.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
    await log.ready(10_000);
    const lat: number[] = [];
    const WARMUP = 20;
    for (let i = 0; i < WARMUP + 200; i++) {
      const t0 = performance.now();
      const m = await sender.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `lat-${i}` });
      await log.all([m.seq], `latency message ${i}`, 10_000);
      if (i >= WARMUP) lat.push(log.at.get(m.seq)! - t0);
    }
    lat.sort((a, b) => a - b);
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!.toFixed(2);
    console.log(
      `[mp] latency send(B) -> receive(A) over ${lat.length} messages: median ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${lat.at(-1)!.toFixed(2)} ms`,
    );
    s.unsubscribe();
  });

  it('resumes exactly once and in order while the subscriber socket is cut twice', async () => {
    await using open = new Scope();
    const senders = senderIds.map((id, i) => open.use(clientFor(i % 2 === 0 ? nodeA.url : nodeB.url, id)));
    const rec = recordingWebSocket();
    let opens = 0;
    let sent = 0;
    const sentAtOpen: number[] = [];
    const sub = open.use(
      createChatClient({
        url: nodeA.url,
        token: tokenFor('sub'),
        WebSocket: rec.WebSocket,
        retryDelayMs: () => 20,
        onOpen: () => {
          opens++;
          sentAtOpen.push(sent);
        },
      }),
    );
    const room = await newRoom(senders[0]!, 'cuts');
    const log = new StreamLog();
    const cutAt = [250, 600];
    const cuts: { atReceived: number; atSent: number; lastId: string }[] = [];
    log.onMessage = (n) => {
      if (cuts.length < cutAt.length && n >= cutAt[cuts.length]!) {
        const open = rec.sockets.filter((s) => s.readyState === WsWebSocket.OPEN);
        const lastId = log.got.items.at(-1)!.id;
        // Abrupt: destroy the TCP socket, no close frame; what was in flight on it is lost.
        for (const s of open) s.terminate();
        cuts.push({ atReceived: n, atSent: sent, lastId });
      }
    };
    const s = sub.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
    await log.ready(10_000);

    // Senders on both nodes: node A hands its hubs its own commits at once and gets B's through
    // Redis, so the subscriber's hub sees B's earlier seqs after A's later ones (held, src/stream/hub.ts).
    const gapsBefore = await gapStats(nodeA.url);
    const t0 = performance.now();
    const seqs = await runSenders(senders, room.id, PER_SENDER, { onSent: () => sent++ });
    const sendMs = performance.now() - t0;
    // A last message as a barrier: whatever the stream had to deliver before it has arrived.
    const sentinel = await senders[1]!.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'end' });
    await log.all([...seqs, sentinel.seq], `all ${TOTAL} messages`, 30_000);
    const recvMs = performance.now() - t0;

    const counts = analyze(log.got.items, [...seqs, sentinel.seq]);
    const gapsAfter = await gapStats(nodeA.url);
    console.log(
      `[mp] cuts: sent ${TOTAL} (+1 sentinel) in ${sendMs.toFixed(0)} ms, all received after ${recvMs.toFixed(0)} ms; ` +
        `node A's hubs: gaps closed by the bus +${gapsAfter.gapWaits - gapsBefore.gapWaits}, filled from PostgreSQL +${gapsAfter.gapFills - gapsBefore.gapFills}; ` +
        `cuts ${JSON.stringify(cuts)}; sockets opened ${opens} (sent count at each open: ${sentAtOpen.join(',')}); counts ${JSON.stringify(counts)}`,
    );
    expect(cuts).toHaveLength(2);
    expect(opens).toBeGreaterThanOrEqual(3);
    expect(seqs).toHaveLength(TOTAL);
    expect(new Set(seqs).size).toBe(TOTAL);
    // Exactly once, in order, and the room's durable stream after `ready` is exactly these messages.
    expectPerfect([log], [...seqs, sentinel.seq]);
    s.unsubscribe();
  });

  it('fails over to the other node after SIGKILL and still delivers every message once, in order', async () => {
    await using open = new Scope();
    const senders = senderIds.map((id) => open.use(clientFor(nodeB.url, id)));
    const rec = recordingWebSocket();
    let target = nodeA.url;
    const connectedTo: string[] = [];
    let sent = 0;
    const sentAtOpen: number[] = [];
    const sub = open.use(
      wsClient({
        url: () => {
          connectedTo.push(target);
          return target;
        },
        token: tokenFor('sub'),
        WebSocket: rec.WebSocket,
        onOpen: () => sentAtOpen.push(sent),
      }),
    );
    const room = await newRoom(senders[0]!, 'failover');
    const log = new StreamLog();
    let kill: { atReceived: number; atSent: number; lastId: string } | null = null;
    log.onMessage = (n) => {
      if (!kill && n >= 300) {
        kill = { atReceived: n, atSent: sent, lastId: log.got.items.at(-1)!.id };
        target = nodeB.url;
        nodeA.child.kill('SIGKILL');
      }
    };
    const s = sub.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
    await log.ready(10_000);
    expect(connectedTo).toEqual([nodeA.url]);

    const t0 = performance.now();
    const seqs = await runSenders(senders, room.id, PER_SENDER, { onSent: () => sent++ });
    const sentinel = await senders[2]!.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'end' });
    await log.all([...seqs, sentinel.seq], `all ${TOTAL} messages after failover`, 30_000);
    const recvMs = performance.now() - t0;
    const exit = await nodeA.exited;

    const counts = analyze(log.got.items, [...seqs, sentinel.seq]);
    console.log(
      `[mp] failover: node A killed ${JSON.stringify(kill)} (exit ${JSON.stringify(exit)}); all received after ${recvMs.toFixed(0)} ms; ` +
        `connections ${connectedTo.map((u) => (u === nodeA.url ? 'A' : 'B')).join(',')} (sent count at each open: ${sentAtOpen.join(',')}); counts ${JSON.stringify(counts)}`,
    );
    expect(kill).not.toBeNull();
    expect(exit.signal).toBe('SIGKILL');
    expect(connectedTo.at(-1)).toBe(nodeB.url);
    expectPerfect([log], [...seqs, sentinel.seq]);
    s.unsubscribe();
  });
});
