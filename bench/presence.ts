/**
 * `npm run bench:presence` (`npx tsx bench/presence.ts [connections] [nodes]`): what presence costs
 * Redis at scale, for the sizing plan (docs/OPERATIONS.md).
 *
 * Starts a private redis-server on a free loopback port (its CPU is then this benchmark's alone:
 * `/proc/<pid>/schedstat`, the scheduler's exact run time) and opens `nodes` presence stores on it
 * (our `RedisPresenceStore`, each on its own connection, as nodes have), default 100,000
 * connections over 4 nodes, one connection per user (the most users per connection: a user's set
 * and its expiry are renewed per user). Measures:
 * - connect: the admission script of every connection (1,000 in flight), Redis CPU per connect and
 *   Redis memory per connection (`used_memory` before and after);
 * - heartbeat: three rounds, every node renewing its connections at once, as their timers do:
 *   Redis CPU per renewed connection, and the wall time of a round;
 * - `get`: the state of 200 users (the most `presence.get` takes), half of them online, 2,000 calls
 *   8 at a time: this process's CPU (the node's side) and Redis CPU per call;
 * - a node leaving: the connections of one node removed all at once (its clients' sockets closed by
 *   a drain), grouped as the presence service groups them and then each alone: this process's and
 *   Redis's CPU per connection and the heap they held meanwhile (run with NODE_OPTIONS=--expose-gc
 *   for a heap figure that starts after a collection);
 * - a dead node: the connections of one node expire (their entries backdated), and one `sweep()`
 *   call of a surviving node (as the presence service's timer makes every `PRESENCE_TTL_MS / 2`)
 *   removes them: how many it removed, how many users it reported offline, its wall time and Redis
 *   CPU per removed connection.
 * Prints a summary and writes bench/results/presence.json. Stops the redis-server it started.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { PRESENCE_SLICE, type PresenceConn } from '../src/realtime/presence-store.js';
import { RedisPresenceStore } from '../src/realtime/redis-presence.js';
import { RedisLink } from '../src/realtime/redis.js';
import { SendBatcher } from '../src/services/send-batcher.js';
import { PrivateRedis } from '../test/fault-env.js';
import { ROOT } from './lib/proc.js';

const CONNECTIONS = Number(process.argv[2] ?? 100_000);
const NODES = Number(process.argv[3] ?? 4);
const TTL_MS = 60_000;
const PREFIX = 'bench-presence:';
const TENANT = 'acme';

/** Nanoseconds the process has run on a CPU (the scheduler's own count). */
const runNs = (pid: number) => Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
const usedMemory = async (link: RedisLink) => Number(/used_memory:(\d+)/.exec(await link.client.info('memory'))![1]);
const round1 = (x: number) => Math.round(x * 10) / 10;

async function inParallel<T>(items: T[], limit: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

const redis = await PrivateRedis.startOnFreePort();
const pid = redis.pid!;
const links: RedisLink[] = [];
try {
  const nodes = Array.from({ length: NODES }, () => {
    const link = new RedisLink('presence', redis.url);
    links.push(link);
    return { link, store: new RedisPresenceStore(link, PREFIX, TTL_MS), conns: [] as PresenceConn[] };
  });
  await Promise.all(links.map((l) => l.client.ping()));
  for (let i = 0; i < CONNECTIONS; i++) nodes[i % NODES]!.conns.push({ tenant: TENANT, userId: `u${i}`, connId: `c${i}` });

  // Connect: every connection admitted (at most 100 per user, as the server's default allows).
  const mem0 = await usedMemory(nodes[0]!.link);
  let cpu0 = runNs(pid);
  let t0 = performance.now();
  await Promise.all(nodes.map((n) => inParallel(n.conns, Math.ceil(1000 / NODES), (c) => n.store.admit(c, 100))));
  const connect = {
    wallMs: Math.round(performance.now() - t0),
    redisCpuUsPerConnect: round1((runNs(pid) - cpu0) / 1000 / CONNECTIONS),
    redisBytesPerConnection: Math.round(((await usedMemory(nodes[0]!.link)) - mem0) / CONNECTIONS),
  };

  // Heartbeat rounds: every node renews all its connections at once.
  const rounds: { wallMs: number; redisCpuUsPerRenewal: number }[] = [];
  for (let r = 0; r < 3; r++) {
    cpu0 = runNs(pid);
    t0 = performance.now();
    const back = await Promise.all(nodes.map((n) => n.store.heartbeat(n.conns)));
    if (back.some((b) => b.length > 0)) throw new Error('a heartbeat named users back: nothing was swept');
    rounds.push({ wallMs: Math.round(performance.now() - t0), redisCpuUsPerRenewal: round1((runNs(pid) - cpu0) / 1000 / CONNECTIONS) });
  }
  const perRenewal = rounds.map((r) => r.redisCpuUsPerRenewal).sort((a, b) => a - b)[1]!;
  // At 1,000,000 connections, each renewed every PRESENCE_TTL_MS / 3.
  const renewalsPerSecAt1M = 1_000_000 / (TTL_MS / 3 / 1000);

  // presence.get: 200 users a call (the procedure's most), half of them online, 8 calls at a time.
  const GET_CALLS = Number(process.env.GET_CALLS ?? 2000);
  const asked = Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? nodes[0]!.conns[i]!.userId : `nobody${i}`));
  const calls = Array.from({ length: GET_CALLS }, (_, i) => i);
  cpu0 = runNs(pid);
  const own0 = process.cpuUsage();
  t0 = performance.now();
  let online = 0;
  await inParallel(calls, 8, async () => {
    const states = await nodes[1]!.store.get(TENANT, asked);
    online = states.filter((st) => st.status !== 'offline').length;
  });
  const own = process.cpuUsage(own0);
  if (online !== 100) throw new Error(`presence.get saw ${online} of 100 users online`);
  const get = {
    usersPerCall: asked.length,
    calls: GET_CALLS,
    wallMsPerCall: round1((performance.now() - t0) / GET_CALLS),
    nodeCpuUsPerCall: round1((own.user + own.system) / GET_CALLS),
    redisCpuUsPerCall: round1((runNs(pid) - cpu0) / 1000 / GET_CALLS),
  };

  // A node leaving (drained: every client's socket closes at once): node 2's connections removed
  // all at once, grouped as the presence service groups them (a removal under way, the next group
  // waits; src/services/presence.ts `leaves`), then (connected again) each alone.
  const leaving = nodes[NODES - 2]!;
  const leaveOnce = async (how: 'grouped' | 'alone') => {
    const batcher = new SendBatcher<PresenceConn, boolean>((conns) => leaving.store.disconnectMany(conns), { maxBatch: PRESENCE_SLICE });
    global.gc?.();
    const heap0 = process.memoryUsage().heapUsed;
    const own1 = process.cpuUsage();
    const cpuStart = runNs(pid);
    const start = performance.now();
    const pending = leaving.conns.map((c) => (how === 'grouped' ? batcher.submit(c) : leaving.store.disconnect(c)));
    const heapPending = process.memoryUsage().heapUsed;
    const wentOffline = (await Promise.all(pending)).filter(Boolean).length;
    const own2 = process.cpuUsage(own1);
    if (wentOffline !== leaving.conns.length) throw new Error(`${wentOffline} of ${leaving.conns.length} users went offline`);
    return {
      how,
      connections: leaving.conns.length,
      wallMs: Math.round(performance.now() - start),
      nodeCpuUsPerConnection: round1((own2.user + own2.system) / leaving.conns.length),
      redisCpuUsPerConnection: round1((runNs(pid) - cpuStart) / 1000 / leaving.conns.length),
      heapMbWhilePending: Math.round((heapPending - heap0) / 1e5) / 10,
    };
  };
  const leave = [await leaveOnce('grouped')];
  await inParallel(leaving.conns, 250, (c) => leaving.store.admit(c, 100));
  leave.push(await leaveOnce('alone'));

  // A dead node: its connections' entries backdated (as if its heartbeats stopped a life ago), then
  // one sweep by a surviving node.
  const dead = nodes[NODES - 1]!;
  const past = Date.now() - 1000;
  const all = `${PREFIX}{presence}:all`;
  const pipe = dead.link.client.pipeline();
  for (const c of dead.conns) {
    pipe.zadd(all, past, [c.tenant, c.userId, c.connId].join('\u0001'));
    pipe.zadd(`${PREFIX}{presence}:conn:${TENANT}:${c.userId}`, past, c.connId);
  }
  await pipe.exec();
  const left0 = await dead.link.client.zcount(all, '-inf', past);
  cpu0 = runNs(pid);
  t0 = performance.now();
  const gone = await nodes[0]!.store.sweep();
  const sweepWallMs = Math.round(performance.now() - t0);
  const sweepCpuUs = (runNs(pid) - cpu0) / 1000;
  const left1 = await dead.link.client.zcount(all, '-inf', past);
  const removed = left0 - left1;
  const sweep = {
    deadNodeConnections: dead.conns.length,
    removedByOneSweep: removed,
    reportedOffline: gone.length,
    leftExpired: left1,
    wallMs: sweepWallMs,
    redisCpuUsPerRemoved: removed > 0 ? round1(sweepCpuUs / removed) : null,
  };

  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model },
    connections: CONNECTIONS,
    nodes: NODES,
    ttlMs: TTL_MS,
    connect,
    heartbeat: {
      rounds,
      redisCpuUsPerRenewal: perRenewal,
      at1MConnections: { renewalsPerSec: renewalsPerSecAt1M, redisCpuShareOfOneCore: round1((perRenewal * renewalsPerSecAt1M) / 10_000) / 100 },
    },
    get,
    leave,
    sweep,
  };
  writeFileSync(`${ROOT}/bench/results/presence.json`, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`${CONNECTIONS} connections on ${NODES} nodes, one per user, private redis-server (pid ${pid})`);
  console.log(`connect: ${connect.wallMs} ms, Redis CPU ${connect.redisCpuUsPerConnect} µs per connect, Redis memory ${connect.redisBytesPerConnection} bytes per connection`);
  console.log(`heartbeat rounds (all nodes at once): ${rounds.map((r) => `${r.wallMs} ms, ${r.redisCpuUsPerRenewal} µs`).join('; ')} (wall, Redis CPU per renewal)`);
  console.log(
    `  at 1,000,000 connections: ${renewalsPerSecAt1M.toLocaleString('en')} renewals/s, ${Math.round(result.heartbeat.at1MConnections.redisCpuShareOfOneCore * 100)}% of one Redis core (the median round)`,
  );
  console.log(`presence.get of ${get.usersPerCall} users (half online), ${get.calls} calls 8 at a time: ${get.wallMsPerCall} ms each, this process's CPU ${get.nodeCpuUsPerCall} µs and Redis CPU ${get.redisCpuUsPerCall} µs per call`);
  for (const l of leave) {
    console.log(
      `a node leaving, ${l.how}: its ${l.connections} connections removed at once in ${l.wallMs} ms, this process's CPU ${l.nodeCpuUsPerConnection} µs and Redis CPU ${l.redisCpuUsPerConnection} µs each, heap ${l.heapMbWhilePending} MB more while they were under way`,
    );
  }
  console.log(
    `dead node: ${sweep.deadNodeConnections} expired connections; one sweep removed ${sweep.removedByOneSweep} (${sweep.reportedOffline} users offline) in ${sweep.wallMs} ms, ${sweep.redisCpuUsPerRemoved} µs of Redis CPU each; ${sweep.leftExpired} left`,
  );
} finally {
  await Promise.allSettled(links.map((l) => l.close()));
  await redis.kill();
}
