/**
 * Multi-process tests of the delivery guarantee (ARCHITECTURE.md section 3): two real server
 * processes (src/main.ts) share one PostgreSQL database and one Redis; clients are real wsLink
 * clients. Covers concurrent start (advisory-locked migrations), cross-node fan-out, resume after
 * client-side socket cuts, and failover to the other node after SIGKILL.
 */
import { performance } from 'node:perf_hooks';
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import pg from 'pg';
import superjson from 'superjson';
import { WebSocket as WsWebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChatClient, type AppRouter, type ChatClient, type RouterOutputs } from '../client/index.js';
import { migrationsList } from '../src/store/migrations/index.js';
import { TEST_REDIS_URL } from './env.js';
import { clientFor, Collector, createTestDatabase, TEST_SECRET, testPrefix, tokenFor, uuid } from './helpers.js';
import { ProcGroup, type ServerProc } from './proc.js';

/** What `chat.events` delivers on the client: the tracked envelope `{ id, data }`. */
type Item = RouterOutputs['chat']['events'] extends AsyncIterable<infer T> ? T : never;

const SENDERS = 4;
const PER_SENDER = 250;
const TOTAL = SENDERS * PER_SENDER;

let db: Awaited<ReturnType<typeof createTestDatabase>>;
const group = new ProcGroup();
let nodeA: ServerProc;
let nodeB: ServerProc;
const openClients = new Set<{ close(): Promise<void> }>();

function track<T extends { close(): Promise<void> }>(c: T): T {
  openClients.add(c);
  return c;
}

async function closeClient(c: { close(): Promise<void> }) {
  openClients.delete(c);
  await c.close().catch(() => undefined);
}

beforeAll(async () => {
  db = await createTestDatabase('mp');
  const env = {
    DATABASE_URL: db.url,
    REDIS_URL: TEST_REDIS_URL,
    REDIS_PREFIX: testPrefix('mp'),
    JWT_SECRET: TEST_SECRET,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
  };
  // Both processes start together on the fresh database: both try to migrate it at once.
  const started = await Promise.allSettled([group.spawn({ label: 'A', env }), group.spawn({ label: 'B', env })]);
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
  [nodeA, nodeB] = started.map((s) => (s as PromiseFulfilledResult<ServerProc>).value) as [ServerProc, ServerProc];
});

afterAll(async () => {
  await Promise.allSettled([...openClients].map((c) => closeClient(c)));
  await group.killAll();
  await db?.drop();
});

/** A WebSocket class (the `ws` package) that records its instances, so a test can cut them. */
function recordingWebSocket() {
  const sockets: WsWebSocket[] = [];
  class RecordingWebSocket extends WsWebSocket {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols);
      sockets.push(this);
    }
  }
  return { sockets, WebSocket: RecordingWebSocket as unknown as typeof WebSocket };
}

/** A wsLink-only client whose URL is asked for on every (re)connect, so it can switch node. */
function switchingClient(opts: { url: () => string; token: string; WebSocket: typeof WebSocket; onOpen?: () => void }) {
  const ws = createWSClient({
    url: () => `${opts.url().replace(/^http/, 'ws')}/trpc`,
    connectionParams: { token: opts.token },
    retryDelayMs: () => 50,
    WebSocket: opts.WebSocket,
    ...(opts.onOpen ? { onOpen: opts.onOpen } : {}),
  });
  const trpc = createTRPCClient<AppRouter>({ links: [wsLink<AppRouter>({ client: ws, transformer: superjson })] });
  return { trpc, ws, close: () => ws.close() };
}

/** What a subscriber got, checked against what was sent. */
interface Counts {
  received: number;
  unique: number;
  duplicates: number;
  missing: number;
  unexpected: number;
  outOfOrder: number;
  badIds: number;
  /** `ready` events: exactly one, or a resume started afresh instead of from lastEventId. */
  readies: number;
}

/**
 * Counts over the whole stream: every tracked event's id must be its durable seq, durable seqs must
 * strictly increase, and the message.new seqs must be exactly the sent ones, each once.
 */
function analyze(items: Item[], sentSeqs: Iterable<number>): Counts {
  const expected = new Set(sentSeqs);
  const seen = new Map<number, number>();
  let outOfOrder = 0;
  let badIds = 0;
  let readies = 0;
  let prev = -1;
  for (const { id, data } of items) {
    if (!('seq' in data)) continue;
    if (id !== String(data.seq)) badIds++;
    if (data.type === 'ready') {
      readies++;
      prev = data.seq;
      continue;
    }
    if (data.seq <= prev) outOfOrder++;
    prev = Math.max(prev, data.seq);
    if (data.type === 'message.new') seen.set(data.seq, (seen.get(data.seq) ?? 0) + 1);
  }
  let duplicates = 0;
  let received = 0;
  for (const n of seen.values()) {
    received += n;
    duplicates += n - 1;
  }
  let missing = 0;
  for (const s of expected) if (!seen.has(s)) missing++;
  let unexpected = 0;
  for (const s of seen.keys()) if (!expected.has(s)) unexpected++;
  return { received, unique: seen.size, duplicates, missing, unexpected, outOfOrder, badIds, readies };
}

/** A subscription's items plus a seq index, so waits are O(1) per event. */
class StreamLog {
  readonly got = new Collector<Item>();
  readonly seqs = new Set<number>();
  readonly at = new Map<number, number>();
  messages = 0;
  onMessage: ((n: number) => void) | null = null;

  onData = (item: Item) => {
    if (item.data.type === 'message.new') {
      this.messages++;
      this.seqs.add(item.data.seq);
      if (!this.at.has(item.data.seq)) this.at.set(item.data.seq, performance.now());
    }
    this.got.push(item);
    if (item.data.type === 'message.new') this.onMessage?.(this.messages);
  };

  ready(timeoutMs = 10_000) {
    return this.got.until((xs) => xs.some((x) => x.data.type === 'ready'), 'ready', timeoutMs);
  }

  /** Resolves once every seq in `want` has arrived. */
  all(want: number[], what: string, timeoutMs = 30_000) {
    return this.got.until(() => want.every((s) => this.seqs.has(s)), what, timeoutMs);
  }
}

/** Runs the senders concurrently: sender i sends PER_SENDER messages in order through its client. */
async function runSenders(
  clients: ChatClient[],
  roomId: string,
  onSent: () => void,
): Promise<number[]> {
  const seqs: number[] = [];
  await Promise.all(
    clients.map(async (c, i) => {
      for (let n = 0; n < PER_SENDER; n++) {
        const m = await c.trpc.chat.send.mutate({ roomId, clientId: uuid(), body: `s${i}-${n}` });
        seqs.push(m.seq);
        onSent();
      }
    }),
  );
  return seqs;
}

const senderIds = Array.from({ length: SENDERS }, (_, i) => `sender${i}`);

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
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const rows = (await c.query<{ name: string }>('select name from mikro_orm_migrations order by id')).rows;
      expect(rows.map((r) => r.name)).toEqual(migrationsList.map((m) => m.name));
    } finally {
      await c.end();
    }
  });

  it('fans out across nodes in both directions', async () => {
    const aliceB = track(clientFor(nodeB.url, 'alice'));
    const bobA = track(clientFor(nodeA.url, 'bob'));
    const aliceA = track(clientFor(nodeA.url, 'alice'));
    try {
      const room = await aliceB.trpc.room.create.mutate({ kind: 'group', name: 'cross', memberIds: ['bob'] });
      const bobLog = new StreamLog();
      const aliceLog = new StreamLog();
      const s1 = bobA.trpc.chat.events.subscribe({ roomId: room.id }, { onData: bobLog.onData, onError: bobLog.got.fail });
      const s2 = aliceB.trpc.chat.events.subscribe({ roomId: room.id }, { onData: aliceLog.onData, onError: aliceLog.got.fail });
      await Promise.all([bobLog.ready(), aliceLog.ready()]);
      const viaB = await aliceB.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'via B' });
      const viaA = await aliceA.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'via A' });
      await bobLog.all([viaB.seq, viaA.seq], 'both messages on A');
      await aliceLog.all([viaB.seq, viaA.seq], 'both messages on B');
      for (const log of [bobLog, aliceLog]) {
        const bodies = log.got.items.flatMap((x) => (x.data.type === 'message.new' ? [x.data.message.body] : []));
        expect(bodies).toEqual(['via B', 'via A']);
      }
      s1.unsubscribe();
      s2.unsubscribe();
    } finally {
      await Promise.all([aliceB, bobA, aliceA].map(closeClient));
    }
  });

  it('measures send-to-receive latency across nodes (printed, not asserted)', async () => {
    const sender = track(clientFor(nodeB.url, 'sender0'));
    const sub = track(clientFor(nodeA.url, 'sub'));
    try {
      const room = await newRoom(sender, 'latency');
      const log = new StreamLog();
      const s = sub.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
      await log.ready();
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
    } finally {
      await Promise.all([sender, sub].map(closeClient));
    }
  });

  it('resumes exactly once and in order while the subscriber socket is cut twice', async () => {
    const senders = senderIds.map((id, i) => track(clientFor(i % 2 === 0 ? nodeA.url : nodeB.url, id)));
    const rec = recordingWebSocket();
    let opens = 0;
    let sent = 0;
    const sentAtOpen: number[] = [];
    const sub = track(
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
    try {
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
      await log.ready();

      const t0 = performance.now();
      const seqs = await runSenders(senders, room.id, () => sent++);
      const sendMs = performance.now() - t0;
      // A last message as a barrier: whatever the stream had to deliver before it has arrived.
      const sentinel = await senders[1]!.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'end' });
      await log.all([...seqs, sentinel.seq], `all ${TOTAL} messages`, 30_000);
      const recvMs = performance.now() - t0;

      const counts = analyze(log.got.items, [...seqs, sentinel.seq]);
      console.log(
        `[mp] cuts: sent ${TOTAL} (+1 sentinel) in ${sendMs.toFixed(0)} ms, all received after ${recvMs.toFixed(0)} ms; ` +
          `cuts ${JSON.stringify(cuts)}; sockets opened ${opens} (sent count at each open: ${sentAtOpen.join(',')}); counts ${JSON.stringify(counts)}`,
      );
      expect(cuts).toHaveLength(2);
      expect(opens).toBeGreaterThanOrEqual(3);
      expect(seqs).toHaveLength(TOTAL);
      expect(new Set(seqs).size).toBe(TOTAL);
      expect(counts).toEqual({
        received: TOTAL + 1,
        unique: TOTAL + 1,
        duplicates: 0,
        missing: 0,
        unexpected: 0,
        outOfOrder: 0,
        badIds: 0,
        readies: 1,
      });
      // The room's durable stream after `ready` is exactly these messages: seqs contiguous.
      const got = log.got.items.filter((x) => x.data.type === 'message.new').map((x) => Number(x.id));
      const ready = log.got.items.find((x) => x.data.type === 'ready')!;
      expect(got).toEqual(Array.from({ length: TOTAL + 1 }, (_, i) => Number(ready.id) + 1 + i));
      s.unsubscribe();
    } finally {
      await Promise.all([sub, ...senders].map(closeClient));
    }
  });

  it('fails over to the other node after SIGKILL and still delivers every message once, in order', async () => {
    const senders = senderIds.map((id) => track(clientFor(nodeB.url, id)));
    const rec = recordingWebSocket();
    let target = nodeA.url;
    const connectedTo: string[] = [];
    let sent = 0;
    const sentAtOpen: number[] = [];
    const sub = track(
      switchingClient({
        url: () => {
          connectedTo.push(target);
          return target;
        },
        token: tokenFor('sub'),
        WebSocket: rec.WebSocket,
        onOpen: () => sentAtOpen.push(sent),
      }),
    );
    try {
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
      await log.ready();
      expect(connectedTo).toEqual([nodeA.url]);

      const t0 = performance.now();
      const seqs = await runSenders(senders, room.id, () => sent++);
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
      expect(counts).toEqual({
        received: TOTAL + 1,
        unique: TOTAL + 1,
        duplicates: 0,
        missing: 0,
        unexpected: 0,
        outOfOrder: 0,
        badIds: 0,
        readies: 1,
      });
      const got = log.got.items.filter((x) => x.data.type === 'message.new').map((x) => Number(x.id));
      const ready = log.got.items.find((x) => x.data.type === 'ready')!;
      expect(got).toEqual(Array.from({ length: TOTAL + 1 }, (_, i) => Number(ready.id) + 1 + i));
      s.unsubscribe();
    } finally {
      await Promise.all([sub, ...senders].map(closeClient));
    }
  });
});
