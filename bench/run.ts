/**
 * `npm run bench [-- --quick] [-- --only fanout,rooms] [-- --systems ours,socketio] [-- --profile] [-- --perf]`
 *
 * The coordinator: creates a bench database, starts each system's server as its own process,
 * drives the load workers (bench/load/worker.ts, separate processes), samples the servers' CPU and
 * RSS from /proc, and writes bench/results/<full|quick>.json. See bench/README.md.
 */
import { randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { execFileSync, execSync, spawn } from 'node:child_process';
import { nowUs } from './lib/clock.js';
import { dropDatabase, resetDatabase } from './lib/database.js';
import { summarize } from './lib/hist.js';
import { formatHeapDiff, heapDiff } from './lib/heap-diff.js';
import { WIRE } from './lib/servers.js';
import type {
  CollectResult,
  ConnSpec,
  ExpectResult,
  KeyRanges,
  OpenResult,
  ProgressResult,
  SendMode,
  SendResult,
} from './lib/ipc.js';
import { mapLimit, makeToken, OursApi } from './lib/ours-api.js';
import { cleanRedis, freePort, killAll, ROOT, sleep } from './lib/proc.js';
import { startServer as startServerWith, type BenchEnv, type Server, type StartOpts, type SystemName } from './lib/servers.js';
import { topFrames } from './lib/cpuprofile.js';
import { formatSplits, formatTop, perfSplit, type PerfSplit } from './lib/perf-split.js';
import { rssKb, Sampler, settle, settleOptions, waitQuiet } from './lib/stat.js';
import { LoadWorker } from './lib/workers.js';

// ---------------------------------------------------------------------------------------------
// Options and sizes

const argv = process.argv.slice(2);
const flag = (name: string) => argv.includes(`--${name}`);
const opt = (name: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const QUICK = flag('quick');
const PROFILE = flag('profile');
/**
 * `--perf`: the rooms scenario (or `--only bigroom`), ours and the Socket.IO + PostgreSQL peer (bigroom:
 * Socket.IO), each server under `perf record -g` during the measured phase (node with
 * `--perf-basic-prof`), and each server's CPU per message (per connect) split by origin, the kernel
 * included (bench/lib/perf-split.ts). Needs `perf` and root (or kernel.perf_event_paranoid <= 1).
 */
const PERF = flag('perf');
const PERF_SCENARIOS: ScenarioName[] = ['rooms', 'bigroom'];
const MODE = PROFILE ? 'profile' : QUICK ? 'quick' : 'full';

type ScenarioName = 'fanout' | 'rooms' | 'feed' | 'sends' | 'idle' | 'bigroom' | 'storm' | 'scaleout';
const SCENARIOS: ScenarioName[] = ['fanout', 'rooms', 'feed', 'sends', 'idle', 'bigroom', 'storm', 'scaleout'];
/** Which systems each scenario runs. Persistence changes nothing for idle sockets, restarts or scale-out. */
const SYSTEMS_OF: Record<ScenarioName, SystemName[]> = {
  fanout: ['ours', 'socketio', 'socketioPg', 'ws'],
  rooms: ['ours', 'socketio', 'socketioPg', 'ws'],
  // The rooms scenario with every connection also on inbox.events: what the room list's feed costs (ours only: no peer has one).
  feed: ['ours'],
  sends: ['ours', 'socketio', 'socketioPg', 'ws'],
  idle: ['ours', 'socketio', 'ws'],
  bigroom: ['ours', 'socketio', 'ws'],
  storm: ['ours', 'socketio', 'ws'],
  scaleout: ['ours', 'socketio', 'ws'],
};
// The quick run keeps the persisted Socket.IO for the sends only.
if (QUICK) for (const k of ['fanout', 'rooms'] as const) SYSTEMS_OF[k] = ['ours', 'socketio', 'ws'];

const FULL = {
  fanout: { subs: 1000, rates: [10, 50], phaseMs: 8000, window: Number(process.env.BENCH_FANOUT_WINDOW ?? 16) },
  rooms: { rooms: 1000, rate: 500, phaseMs: 8000 },
  sends: { senders: [1, 16, 64], phaseMs: 4000 },
  idle: { conns: 10_000, perRoom: 10 },
  // 19,000, not 20,000: a process may open at most 20,000 files on this machine (ulimit -Hn).
  bigroom: { sizes: [5000, 19_000] },
  storm: { subs: 2000, rooms: 20, rate: 50, beforeMs: 3000, afterMs: 15_000 },
  // A window of 64 undelivered messages (fanout's 16 left one capped node idle part of each CFS period:
  // 57k deliveries/s against 90-106k with 64; docs/BENCHMARKS.md, tenth pass). BENCH_SCALEOUT_WINDOW sets another.
  // warmupMs: before each measured phase (a node added for it is fresh: under its quota, its JIT
  // needs seconds of the phase's load before its code is optimized; docs/BENCHMARKS.md, thirteenth pass).
  scaleout: { subs: 1000, phaseMs: 8000, warmupMs: 3000, window: Number(process.env.BENCH_SCALEOUT_WINDOW ?? 64), nodes: [1, 2, 3], rooms: 1000 },
  drainMs: 20_000,
  /** A drain gives up when no new delivery came for this long (lost messages never come). */
  stallMs: 3000,
  /** Unmeasured traffic before the measured phases (JIT warm-up), per system. */
  warmupMs: 2000,
  /** Connections per user id in big rooms (like one person's tabs and devices); see README. */
  connsPerUser: 50,
};
const QUICK_SIZES: typeof FULL = {
  fanout: { subs: 300, rates: [50], phaseMs: 1000, window: 16 },
  rooms: { rooms: 200, rate: 100, phaseMs: 1000 },
  sends: { senders: [64], phaseMs: 800 },
  idle: { conns: 1000, perRoom: 10 },
  bigroom: { sizes: [2000] },
  storm: { subs: 300, rooms: 3, rate: 30, beforeMs: 800, afterMs: 2000 },
  scaleout: { subs: 200, phaseMs: 1000, warmupMs: 300, window: Number(process.env.BENCH_SCALEOUT_WINDOW ?? 16), nodes: [1, 2, 3], rooms: 200 },
  drainMs: 8000,
  stallMs: 1000,
  warmupMs: 300,
  connsPerUser: 50,
};
const C = QUICK ? QUICK_SIZES : FULL;
if (QUICK) settleOptions.samples = 1;
if (PROFILE) {
  // Long steady phases, so that startup and setup are a small part of the profile.
  C.fanout = { ...C.fanout, rates: [], phaseMs: 15_000 };
  C.rooms = { ...C.rooms, phaseMs: 15_000 };
  C.sends = { senders: [64], phaseMs: 8000 };
  C.bigroom = { sizes: [2000] };
}
// The perf run records the connects of one bigroom size: 5,000 (item 4's first size).
if (PERF) C.bigroom = { ...C.bigroom, sizes: [5000] };
/** `--profile --profile-rate 50`: the fan-out profile covers a phase at that fixed rate instead of the maximum. */
const PROFILE_RATE = PROFILE && opt('profile-rate') ? Number(opt('profile-rate')) : null;
if (PROFILE_RATE !== null) C.fanout = { ...C.fanout, rates: [PROFILE_RATE], phaseMs: 15_000 };

const onlyScenarios = (opt('only')?.split(',') ?? (PROFILE ? ['fanout'] : PERF ? ['rooms'] : SCENARIOS)) as ScenarioName[];
const onlySystems = (opt('systems')?.split(',') ?? (PROFILE ? ['ours'] : PERF ? ['ours', onlyScenarios.includes('bigroom') ? 'socketio' : 'socketioPg'] : null)) as SystemName[] | null;
if (PERF && onlyScenarios.some((s) => !PERF_SCENARIOS.includes(s))) throw new Error(`--perf covers ${PERF_SCENARIOS.join(' and ')} only`);

for (const s of onlyScenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s} (${SCENARIOS.join(', ')})`);

/** `perf record -g` of these processes until the returned function is called (it waits for perf to write). */
function recordPerf(pids: number[], file: string): () => Promise<void> {
  const rec = spawn('perf', ['record', '-q', '-F', '999', '-g', '-o', file, '-p', pids.join(',')], { stdio: 'ignore' });
  const exited = new Promise<void>((res) => rec.once('exit', () => res()));
  return async () => {
    rec.kill('SIGINT');
    await exited;
  };
}

const RUN_ID = `${process.pid}-${Date.now().toString(36)}`;
const DB_NAME = process.env.BENCH_DB ?? 'chat_bench';
const PG_ADMIN = process.env.BENCH_PG_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const DATABASE_URL = PG_ADMIN.replace(/\/[^/]*$/, `/${DB_NAME}`);
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';
const REDIS_PREFIX = `bench:${RUN_ID}:`;
const JWT_SECRET = `bench-secret-${randomUUID()}`;
const RESULTS_DIR = join(ROOT, 'bench', 'results');
const PROFILE_DIR = join(RESULTS_DIR, 'profiles');
/**
 * Each node's CPU in the scaleout scenario (a cgroup quota, in CPUs). The nodes, not the machine, must
 * set every figure: at 0.4 the three nodes left 0.8 of the 2 cores and the machine ran at 93%; at 0.25
 * three of our nodes at their quota would have needed about 490,000 deliveries/s, more than the load
 * generator took on the rest of the machine (89% busy). At 0.15 every
 * node of every system sits at or near its quota in every phase and the machine stays at or under 62%
 * (`cpuPctByServer` and `throttledPctByServer` of each phase show it; docs/BENCHMARKS.md, eleventh pass).
 */
const SCALEOUT_CPU_QUOTA = 0.15;
const MAX_RUN_MS = QUICK ? 10 * 60_000 : 60 * 60_000;

// ---------------------------------------------------------------------------------------------
// Servers

const ENV: BenchEnv = { databaseUrl: DATABASE_URL, redisUrl: REDIS_URL, redisPrefix: REDIS_PREFIX, jwtSecret: JWT_SECRET, profileDir: PROFILE_DIR };
const startServer = (sys: SystemName, o: StartOpts = {}) => startServerWith(ENV, sys, o);

/** Warnings our server logged (LOG_LEVEL=warn): slow consumers closed, bus errors... */
function serverWarnings(s: Server): string[] {
  return s.proc.output.filter((l) => l.includes('"level":40') || l.includes('"level":50')).map((l) => l.slice(0, 300));
}

// ---------------------------------------------------------------------------------------------
// Rooms and users per system: ours goes through its API; the peers' rooms are just names.

interface Provision {
  token(user: string): string;
  group(owner: string, name: string, members: string[]): Promise<string>;
  direct(a: string, b: string): Promise<string>;
}

function provision(s: Server): Provision {
  if (s.sys === 'ours') {
    const api = new OursApi(s.url, JWT_SECRET);
    return { token: (u) => api.token(u), group: (o, n, m) => api.groupRoom(o, n, m), direct: (a, b) => api.directRoom(a, b) };
  }
  const tokens = new Map<string, string>();
  return {
    token: (u) => {
      let t = tokens.get(u);
      if (!t) {
        t = makeToken(JWT_SECRET, u);
        tokens.set(u, t);
      }
      return t;
    },
    group: async () => randomUUID(),
    direct: async () => randomUUID(),
  };
}

// ---------------------------------------------------------------------------------------------
// Load workers: two hold subscribers (and the senders of the rooms scenario), one holds senders.

let subWorkers: LoadWorker[] = [];
let sendWorker: LoadWorker;
let allWorkers: LoadWorker[] = [];

async function openOn(w: LoadWorker, sys: SystemName, url: string, conns: ConnSpec[], reconnect = true): Promise<OpenResult> {
  if (conns.length === 0) return { conns: 0, open: 0, subs: 0, ready: 0, errors: [], elapsedMs: 0 };
  const timeoutMs = Math.max(30_000, conns.length * 20);
  return w.call<OpenResult>({ cmd: 'open', args: { system: WIRE[sys], url, conns, parallel: 64, timeoutMs, reconnect } }, timeoutMs + 30_000);
}

/** Opens subscriber connections spread over the subscriber workers (`urls[i]` for worker i). */
async function openSubs(sys: SystemName, urls: string[], specs: ConnSpec[][]): Promise<{ ready: number; subs: number; elapsedMs: number }> {
  const t0 = Date.now();
  const rs = await Promise.all(subWorkers.map((w, i) => openOn(w, sys, urls[i % urls.length]!, specs[i] ?? [])));
  const ready = rs.reduce((a, r) => a + r.ready, 0);
  const subs = rs.reduce((a, r) => a + r.subs, 0);
  if (ready < subs) {
    throw new Error(`${sys}: only ${ready} of ${subs} subscriptions became ready: ${rs.flatMap((r) => r.errors).slice(0, 5).join(' | ')}`);
  }
  return { ready, subs, elapsedMs: Date.now() - t0 };
}

async function closeAll() {
  await Promise.all(allWorkers.map((w) => w.call({ cmd: 'close' }, 30_000).catch(() => {})));
}

function split<T>(items: T[], parts: number, key: (item: T, i: number) => number = (_, i) => i): T[][] {
  const out: T[][] = Array.from({ length: parts }, () => []);
  items.forEach((it, i) => {
    out[key(it, i) % parts]!.push(it);
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// One measured phase

interface PhaseResult {
  deliveriesPerSec: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  p999Ms: number | null;
  maxMs: number | null;
  rssMb: number;
  cpuPct: number;
  /** Per server (several in scaleout): CPU %, and % of the phase throttled by its CPU quota (null: no quota). */
  cpuPctByServer: number[];
  throttledPctByServer: (number | null)[];
  cpuUsPerDelivery: number | null;
  /** `cpuUsPerDelivery` by thread kind: the main thread's user and system time, V8's helpers (GC, compiler), the rest. */
  cpuUsPerDeliveryByThread?: Record<string, number>;
  /** Server CPU over the window, ms. */
  serverCpuMs: number;
  /** The server's write and read system calls over the window per acknowledged send (/proc/<pid>/io). */
  writesPerSend: number | null;
  readsPerSend: number | null;
  /** Per server: its write system calls over the window per acknowledged send (of all servers). */
  writesPerSendByServer: number[] | null;
  /** CPU of the benchmark database's PostgreSQL backends per acknowledged send, µs (all systems share the database). */
  dbCpuUsPerSend: number | null;
  lost: number;
  duplicated: number;
  outOfOrder: number;
  unexpected: number;
  deliveries: number;
  sent: number;
  acked: number;
  sendErrors: number;
  sendRetries: number;
  sentPerSec: number;
  ackedPerSec: number;
  ackP50Ms: number | null;
  ackP99Ms: number | null;
  ackP999Ms: number | null;
  reconnects: number;
  subErrors: number;
  /** `room.activity` events received on inbox subscriptions (the feed scenario). */
  inboxActivity: number;
  loadCpuPct: number;
  machineCpuPct: number;
  windowMs: number;
  drainTimedOut: boolean;
  /** CLOCK_MONOTONIC µs of the window (to slice a CPU profile to it). */
  windowUs: [number, number];
  /** scaleout, ours: each node's bus and hub counters over the phase (its /metrics). */
  countersByNode?: Record<string, number>[];
  errorSamples?: string[];
}

const round = (v: number, d = 1) => Math.round(v * 10 ** d) / 10 ** d;

function mergeRanges(all: KeyRanges[]): KeyRanges {
  const out: KeyRanges = {};
  for (const r of all) {
    for (const [room, ranges] of Object.entries(r)) {
      const list = out[room] ?? [];
      list.push(...ranges);
      out[room] = list;
    }
  }
  return out;
}

async function progressAll(): Promise<ProgressResult[]> {
  return Promise.all(allWorkers.map((w) => w.call<ProgressResult>({ cmd: 'progress' }, 30_000)));
}

/** Waits until the subscribers hold `expected` distinct messages, progress stalls for 3 s, or `maxMs`. */
async function drain(expected: number, maxMs: number): Promise<boolean> {
  const deadline = Date.now() + maxMs;
  let last = -1;
  let lastChange = Date.now();
  while (Date.now() < deadline) {
    const ps = await progressAll();
    const distinct = ps.reduce((a, p) => a + p.distinct, 0);
    if (distinct >= expected) return false;
    if (distinct !== last) {
      last = distinct;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > C.stallMs) return true;
    await sleep(100);
  }
  return true;
}

async function runPhase(o: {
  servers: Server[];
  mode: SendMode;
  senders: LoadWorker[];
  durationMs: number;
  /** Subscribers per room (to know how many deliveries to wait for). */
  subsInRoom: (room: string) => number;
  /** `perf record -g` of the servers while the senders send, into this file. */
  perfFile?: string;
}): Promise<PhaseResult> {
  const watermark = o.mode.mode === 'window';
  await Promise.all(allWorkers.map((w) => w.call({ cmd: 'phase', args: { watermark } })));
  if (watermark) {
    subWorkers.forEach((w, i) => {
      w.onWatermark = (value) => o.senders[0]!.notify({ cmd: 'wm', from: i, value });
    });
  }
  const sampler = new Sampler(
    o.servers.map((s) => s.proc.pid),
    allWorkers.map((w) => w.pid),
    DB_NAME,
  ).start();
  const t0 = nowUs();
  const stopPerf = o.perfFile ? recordPerf(o.servers.map((x) => x.proc.pid), o.perfFile) : null;
  const share = o.senders.length;
  const sends = await Promise.all(
    o.senders.map((w) =>
      w.call<SendResult>(
        {
          cmd: 'send',
          args: { ...(o.mode.mode === 'rate' ? { mode: 'rate' as const, rate: o.mode.rate / share } : o.mode), durationMs: o.durationMs, drainMs: C.drainMs },
        },
        o.durationMs + C.drainMs + 60_000,
      ),
    ),
  );
  await stopPerf?.();
  const keys = mergeRanges(sends.map((s) => s.ackedKeys));
  let expected = 0;
  for (const [room, ranges] of Object.entries(keys)) {
    const n = ranges.reduce((a, [f, t]) => a + (t - f + 1), 0);
    expected += n * o.subsInRoom(room);
  }
  const drainTimedOut = expected > 0 ? await drain(expected, C.drainMs) : false;
  const win = sampler.stop();
  const t1 = nowUs();
  for (const w of subWorkers) w.onWatermark = null;
  const prog = await progressAll();
  const lastUs = Math.max(...prog.map((p) => p.lastDeliveryUs));
  const col = await Promise.all(allWorkers.map((w) => w.call<CollectResult>({ cmd: 'collect' })));
  const exp = await Promise.all(allWorkers.map((w) => w.call<ExpectResult>({ cmd: 'expect', rooms: keys }, 60_000)));
  const deliveries = col.reduce((a, c) => a + c.deliveries, 0);
  const lat = summarize(col.map((c) => c.hist));
  const ack = summarize(sends.map((s) => s.ackHist));
  const acked = sends.reduce((a, s) => a + s.acked, 0);
  const sent = sends.reduce((a, s) => a + s.issued, 0);
  const sendElapsedUs = Math.max(...sends.map((s) => s.elapsedUs));
  const spanUs = lastUs > t0 ? lastUs - t0 : win.wallUs;
  const errs = sends.flatMap((s) => s.errorSamples);
  return {
    deliveriesPerSec: deliveries > 0 ? Math.round(deliveries / (spanUs / 1e6)) : null,
    p50Ms: lat.p50Ms,
    p99Ms: lat.p99Ms,
    p999Ms: lat.p999Ms,
    maxMs: lat.maxMs,
    rssMb: round(win.rssMb),
    cpuPct: round(win.cpuPct),
    cpuPctByServer: win.cpuPctByServer,
    throttledPctByServer: win.throttledPctByServer,
    cpuUsPerDelivery: deliveries > 0 ? round(win.cpuUs / deliveries, 2) : null,
    cpuUsPerDeliveryByThread: deliveries > 0 ? Object.fromEntries(Object.entries(win.threadsUs).map(([k, us]) => [k, round(us / deliveries, 1)])) : {},
    serverCpuMs: Math.round(win.cpuUs / 1000),
    // The server's system calls per acknowledged send (a send is also its deliveries and its ack).
    writesPerSend: acked > 0 ? round(win.writeCalls / acked, 2) : null,
    readsPerSend: acked > 0 ? round(win.readCalls / acked, 2) : null,
    writesPerSendByServer: acked > 0 ? win.writeCallsByServer.map((w) => round(w / acked, 2)) : null,
    dbCpuUsPerSend: acked > 0 ? round(win.dbCpuUs / acked, 2) : null,
    lost: exp.reduce((a, e) => a + e.lost, 0),
    duplicated: exp.reduce((a, e) => a + e.duplicated, 0),
    outOfOrder: exp.reduce((a, e) => a + e.outOfOrder, 0),
    unexpected: exp.reduce((a, e) => a + e.unexpected, 0),
    deliveries,
    sent,
    acked,
    sendErrors: sends.reduce((a, s) => a + s.errors, 0),
    sendRetries: sends.reduce((a, s) => a + s.retries, 0),
    sentPerSec: Math.round(sent / (o.durationMs / 1000)),
    ackedPerSec: Math.round(acked / (sendElapsedUs / 1e6)),
    ackP50Ms: ack.p50Ms,
    ackP99Ms: ack.p99Ms,
    ackP999Ms: ack.p999Ms,
    reconnects: col.reduce((a, c) => a + c.reconnects, 0),
    subErrors: col.reduce((a, c) => a + c.subErrors, 0),
    inboxActivity: col.reduce((a, c) => a + c.inboxActivity, 0),
    loadCpuPct: round(win.loadCpuPct),
    machineCpuPct: round(win.machineCpuPct),
    windowMs: Math.round(win.wallUs / 1000),
    drainTimedOut,
    windowUs: [t0, t1],
    ...(errs.length ? { errorSamples: errs.slice(0, 5) } : {}),
  };
}

/** Starts a server, runs `fn`, and always closes the clients and stops the server. */
/**
 * Servers kept for the next scenario of the same system: fanout, rooms and sends run one after the
 * other on one server process per system (each scenario's clients are closed in between).
 */
const pool = new Map<SystemName, Server>();
let pooling = false;

async function stopPool() {
  await Promise.allSettled([...pool.values()].map((s) => s.proc.stop('SIGTERM', 10_000)));
  pool.clear();
}

/** Runs `fn` on a server of `sys` (a pooled one for default options), then closes the clients. */
async function withServer<T extends Record<string, unknown>>(sys: SystemName, o: StartOpts, fn: (s: Server) => Promise<T>): Promise<T & Record<string, unknown>> {
  const reuse = pooling && Object.keys(o).length === 0;
  let s = reuse ? pool.get(sys) : undefined;
  if (s && !s.proc.alive) s = undefined;
  const fresh = !s;
  if (!s) {
    s = await startServer(sys, o);
    if (reuse) pool.set(sys, s);
  }
  const warnsBefore = serverWarnings(s).length;
  try {
    const r = await fn(s);
    const warns = serverWarnings(s).slice(warnsBefore);
    const extra = { freshServer: fresh, ...(warns.length ? { serverWarnings: warns.slice(0, 10), serverWarningCount: warns.length } : {}) };
    return { ...r, ...extra };
  } finally {
    await closeAll();
    if (!reuse) await s.proc.stop('SIGTERM', 10_000);
  }
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

// ---------------------------------------------------------------------------------------------
// Scenarios

/** (1) One room, N subscribers, one sender at fixed rates and at the maximum (window of 16 undelivered). */
async function fanout(sys: SystemName) {
  const cfg = C.fanout;
  return withServer(sys, PROFILE ? { cpuProf: true } : {}, async (s) => {
    const p = provision(s);
    const users = range(Math.ceil(cfg.subs / C.connsPerUser)).map((i) => `fan-u${i}`);
    const room = await p.group('fan-sender', 'fanout', users);
    const specs = range(cfg.subs).map((i) => ({ user: users[i % users.length]!, token: p.token(users[i % users.length]!), subs: [room], sends: [] }));
    const opened = await openSubs(sys, [s.url], split(specs, subWorkers.length));
    await openOn(sendWorker, sys, s.url, [{ user: 'fan-sender', token: p.token('fan-sender'), subs: [], sends: [room] }]);
    const settleMs = await settle([s.proc.pid]);
    await runPhase({ servers: [s], mode: { mode: 'window', window: cfg.window, sources: subWorkers.length }, senders: [sendWorker], durationMs: C.warmupMs, subsInRoom: () => cfg.subs });
    await settle([s.proc.pid], 5, 5000);
    const rates: Record<string, PhaseResult> = {};
    for (const rate of cfg.rates) {
      rates[String(rate)] = await runPhase({ servers: [s], mode: { mode: 'rate', rate }, senders: [sendWorker], durationMs: cfg.phaseMs, subsInRoom: () => cfg.subs });
      await settle([s.proc.pid], 5, 5000);
    }
    const max = await runPhase({
      servers: [s],
      mode: { mode: 'window', window: cfg.window, sources: subWorkers.length },
      senders: [sendWorker],
      durationMs: cfg.phaseMs,
      subsInRoom: () => cfg.subs,
    });
    const profileWindowUs = PROFILE_RATE !== null ? rates[String(PROFILE_RATE)]!.windowUs : max.windowUs;
    return { ...max, subscribers: cfg.subs, window: cfg.window, connectMs: opened.elapsedMs, settleMs, rates, profileWindowUs };
  });
}

/**
 * (2) Many rooms: 2 connections per direct room, one of them sends; R messages/s in total. With
 * `inbox` (the feed scenario) every connection also holds `inbox.events`, so each message also
 * makes the room list's `room.activity` for both members.
 */
async function rooms(sys: SystemName, inbox = false) {
  const cfg = C.rooms;
  return withServer(sys, PROFILE ? { cpuProf: true } : PERF ? { perfMap: true } : {}, async (s) => {
    const p = provision(s);
    const ids = await mapLimit(range(cfg.rooms), 16, (r) => p.direct(`dm${r}a`, `dm${r}b`));
    const specs: ConnSpec[][] = subWorkers.map(() => []);
    ids.forEach((room, r) => {
      const w = specs[r % subWorkers.length]!;
      w.push({ user: `dm${r}a`, token: p.token(`dm${r}a`), subs: [room], sends: [room], inbox });
      w.push({ user: `dm${r}b`, token: p.token(`dm${r}b`), subs: [room], sends: [], inbox });
    });
    const opened = await openSubs(sys, [s.url], specs);
    const settleMs = await settle([s.proc.pid]);
    await runPhase({ servers: [s], mode: { mode: 'rate', rate: cfg.rate }, senders: subWorkers, durationMs: C.warmupMs, subsInRoom: () => 2 });
    await settle([s.proc.pid], 5, 5000);
    const perfFile = PERF ? join(PROFILE_DIR, `perf-rooms-${sys}.data`) : undefined;
    const r = await runPhase({ servers: [s], mode: { mode: 'rate', rate: cfg.rate }, senders: subWorkers, durationMs: cfg.phaseMs, subsInRoom: () => 2, perfFile });
    return { ...r, ...(perfFile ? { perfFile, perfUnits: r.sent } : {}), rooms: cfg.rooms, connections: cfg.rooms * 2, offeredMsgPerSec: cfg.rate, connectMs: opened.elapsedMs, settleMs, profileWindowUs: r.windowUs };
  });
}

/** (3) Persisted sends: k senders, each one message in flight, in one room or one room each (64 rooms). */
async function sends(sys: SystemName) {
  const cfg = C.sends;
  const maxK = Math.max(...cfg.senders);
  return withServer(sys, PROFILE ? { cpuProf: true } : {}, async (s) => {
    const p = provision(s);
    const senders = range(maxK).map((i) => `snd${i}`);
    const shared = await p.group(senders[0]!, 'sends-one', senders);
    const own = await mapLimit(senders, 16, (u) => p.group(u, `sends-${u}`, [u]));
    const cases: Record<string, Record<string, unknown>> = {};
    await openOn(sendWorker, sys, s.url, range(maxK).map((i) => ({ user: senders[i]!, token: p.token(senders[i]!), subs: [], sends: [own[i]!] })));
    await runPhase({ servers: [s], mode: { mode: 'closed' }, senders: [sendWorker], durationMs: C.warmupMs, subsInRoom: () => 0 });
    await closeAll();
    let first = 0;
    let last = 0;
    for (const layout of ['oneRoom', 'rooms64'] as const) {
      for (const k of cfg.senders) {
        const conns = range(k).map((i) => ({ user: senders[i]!, token: p.token(senders[i]!), subs: [], sends: [layout === 'oneRoom' ? shared : own[i]!] }));
        await openOn(sendWorker, sys, s.url, conns);
        const r = await runPhase({ servers: [s], mode: { mode: 'closed' }, senders: [sendWorker], durationMs: cfg.phaseMs, subsInRoom: () => 0 });
        first ||= r.windowUs[0];
        last = r.windowUs[1];
        await closeAll();
        cases[`${k}x${layout}`] = {
          senders: k,
          layout,
          ackedPerSec: r.ackedPerSec,
          ackP50Ms: r.ackP50Ms,
          ackP99Ms: r.ackP99Ms,
          ackP999Ms: r.ackP999Ms,
          cpuPct: r.cpuPct,
          cpuUsPerAck: r.acked > 0 ? round((r.serverCpuMs * 1000) / r.acked, 2) : null,
          dbCpuUsPerAck: r.dbCpuUsPerSend,
          machineCpuPct: r.machineCpuPct,
          loadCpuPct: r.loadCpuPct,
          rssMb: r.rssMb,
          acked: r.acked,
          sendErrors: r.sendErrors,
          ...(r.errorSamples ? { errorSamples: r.errorSamples } : {}),
        };
      }
    }
    const head = cases[`${maxK}xrooms64`]!;
    const one = cases[`${maxK}xoneRoom`]!;
    return {
      deliveriesPerSec: head.ackedPerSec as number,
      p50Ms: head.ackP50Ms as number | null,
      p99Ms: head.ackP99Ms as number | null,
      p999Ms: head.ackP999Ms as number | null,
      rssMb: head.rssMb as number,
      cpuPct: head.cpuPct as number,
      cpuUsPerDelivery: head.cpuUsPerAck as number | null,
      lost: 0,
      duplicated: 0,
      note: `deliveriesPerSec = acknowledged sends/s and p50/p99 = ack latency, for ${maxK} senders over ${maxK} rooms; oneRoom: ${maxK} senders in one room`,
      profileWindowUs: [first, last],
      oneRoomAckedPerSec: one.ackedPerSec,
      oneRoomAckP99Ms: one.ackP99Ms,
      cases,
    };
  });
}

/**
 * --heap-snapshot: a heap snapshot of the server (bench/results/profiles/), once it is written; its
 * file name (null if none came within 120 s). Writing one costs the server memory: the RSS figures of
 * a run with snapshots are not the connections' alone.
 */
async function heapSnapshot(s: Server): Promise<string | null> {
  mkdirSync(PROFILE_DIR, { recursive: true });
  const before = new Set(readdirSync(PROFILE_DIR));
  process.kill(s.proc.pid, 'SIGUSR2');
  const deadline = Date.now() + 120_000;
  let file: string | undefined;
  while (!file && Date.now() < deadline) {
    await sleep(500);
    file = readdirSync(PROFILE_DIR).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
  }
  // The server writes it on its main thread: once it answers a request again, the file is complete.
  if (file) await fetch(`${s.url}/healthz`).then((r) => r.arrayBuffer());
  console.log(`heap snapshot: ${file ?? 'none within 120 s'}`);
  return file ?? null;
}

/** How long the idle scenario holds its connections after opening them, measuring the server's CPU. */
const IDLE_HOLD_MS = QUICK ? 5000 : 30_000;

/** Ours' V8 heap in MB (committed, used, the young generation's committed), read from its /metrics. */
async function heapOf(s: Server): Promise<{ total: number; used: number; young: number } | null> {
  const text = await fetch(`${s.url}/metrics`)
    .then((r) => r.text())
    .catch(() => '');
  const mb = (re: RegExp) => round(Number(re.exec(text)?.[1] ?? Number.NaN) / 1048576);
  const total = mb(/^chat_process_nodejs_heap_size_total_bytes (\d+)$/m);
  if (Number.isNaN(total)) return null;
  return {
    total,
    used: mb(/^chat_process_nodejs_heap_size_used_bytes (\d+)$/m),
    young: mb(/^chat_process_nodejs_heap_space_size_total_bytes\{space="new"\} (\d+)$/m),
  };
}

/**
 * (4) Idle connections: RSS growth per connection with one subscription each, on a fresh server.
 * The connections open in two halves: `kbPerConnection` is the growth over all of them (what a node
 * started for them pays, the heap its connect burst grew included), `kbPerConnectionMarginal` the
 * growth of the second half only (what each more connection costs a node that already holds some).
 * With --heap-snapshot, a heap snapshot after each half gives the live JavaScript heap per
 * connection (`heapBytesPerConnection`, bench/lib/heap-diff.ts) and what it is made of.
 */
async function idle(sys: SystemName) {
  const cfg = C.idle;
  const snapshot = flag('heap-snapshot');
  return withServer(sys, snapshot && sys !== 'ours' ? { heapSnapshot: true } : {}, async (setup) => {
    const p = provision(setup);
    const nRooms = Math.ceil(cfg.conns / cfg.perRoom);
    const usersPerRoom = Math.max(1, Math.ceil(cfg.perRoom / 5));
    const roomIds = await mapLimit(range(nRooms), 16, (r) =>
      p.group(`idle${r}u0`, `idle-${r}`, range(usersPerRoom).map((u) => `idle${r}u${u}`)),
    );
    // Ours creates the rooms through its API: measured on the same server, the connections filled the
    // heap that work had grown and left (or that V8 had just given back), so the growth moved with
    // V8's timing (6.6 to 11.1 KB per connection between runs of one commit) and was not the
    // connections' own. They open on a fresh server at rest, like the peers' (their rooms are names).
    const s = sys === 'ours' ? await startServer(sys, { ...(snapshot ? { heapSnapshot: true } : {}), ...(PROFILE ? { cpuProf: true } : {}) }) : setup;
    try {
      await settle([s.proc.pid], 5, 10_000);
      const rss0 = rssKb(s.proc.pid) ?? 0;
      const specs = range(cfg.conns).map((i) => {
        const r = i % nRooms;
        const user = `idle${r}u${Math.floor(i / nRooms) % usersPerRoom}`;
        return { user, token: p.token(user), subs: [roomIds[r]!], sends: [] };
      });
      const half = Math.floor(specs.length / 2);
      let connectMs = 0;
      let connectCpuUs = 0;
      const openPart = async (part: ConnSpec[]) => {
        const sampler = new Sampler([s.proc.pid], allWorkers.map((w) => w.pid)).start();
        connectMs += (await openSubs(sys, [s.url], split(part, subWorkers.length))).elapsedMs;
        connectCpuUs += sampler.stop().cpuUs;
        const settleMs = await settle([s.proc.pid], 3, 20_000);
        await sleep(1000);
        const rss = rssKb(s.proc.pid) ?? 0;
        return { rss, settleMs, heap: sys === 'ours' ? await heapOf(s) : null, snapshot: snapshot ? await heapSnapshot(s) : null };
      };
      const first = await openPart(specs.slice(0, half));
      const second = await openPart(specs.slice(half));
      // Holding them: the server's CPU over 30 s (quick: 5) of nothing but idle connections (keep-alive pings
      // and their answers, for ours also a presence heartbeat round), and its RSS after it.
      const idleSampler = new Sampler([s.proc.pid], []).start();
      const heldFromUs = nowUs();
      await sleep(IDLE_HOLD_MS);
      const held = idleSampler.stop();
      const heldToUs = nowUs();
      const rssHeld = rssKb(s.proc.pid) ?? 0;
      const heap = first.snapshot && second.snapshot ? heapDiff(join(PROFILE_DIR, first.snapshot), join(PROFILE_DIR, second.snapshot), specs.length - half) : null;
      if (heap) console.log(`${sys}: ${formatHeapDiff(heap)}`);
      return {
        deliveriesPerSec: null,
        p50Ms: null,
        p99Ms: null,
        p999Ms: null,
        rssMb: round(second.rss / 1024),
        cpuPct: round((100 * connectCpuUs) / (connectMs * 1000)),
        cpuUsPerDelivery: null,
        lost: 0,
        duplicated: 0,
        kbPerConnection: round((second.rss - rss0) / cfg.conns, 1),
        kbPerConnectionMarginal: round((second.rss - first.rss) / (specs.length - half), 1),
        // Ours' V8 heap after each half (MB, from its /metrics): committed, used, and the young
        // generation's share of committed (production's node flags cap it: docs/OPERATIONS.md).
        ...(first.heap && second.heap ? { heapMb: [first.heap, second.heap] } : {}),
        idleCpuPct: round(held.cpuPct, 2),
        kbPerConnectionHeld: round((rssHeld - rss0) / cfg.conns, 1),
        // --profile (ours): the profile is summarised over the 30 s of holding them.
        profileWindowUs: [heldFromUs, heldToUs],
        ...(heap ? { heapBytesPerConnection: heap.bytesPerConnection, heapTop: heap.top.slice(0, 12) } : {}),
        connections: cfg.conns,
        rooms: nRooms,
        rssBeforeMb: round(rss0 / 1024),
        connectMs,
        connectsPerSec: Math.round(cfg.conns / (connectMs / 1000)),
        cpuUsPerConnect: round(connectCpuUs / cfg.conns, 1),
        settleMs: second.settleMs,
      };
    } finally {
      if (s !== setup) {
        await closeAll();
        await s.proc.stop('SIGTERM', 10_000);
      }
    }
  });
}

/**
 * (4b) Big rooms coming online: one room of N members (N distinct users), each opens a connection
 * and subscribes to it, all at once, after an unmeasured warm-up wave of 1,000. Every connect is a presence change of a member; with presence
 * events sent to every room of the user, this was quadratic (the members already online each got
 * one). Measures the time until every subscription is ready, and the server's CPU meanwhile.
 */
async function bigroom(sys: SystemName) {
  const cfg = C.bigroom;
  return withServer(sys, PROFILE ? { cpuProf: true } : PERF ? { perfMap: true } : {}, async (s) => {
    const p = provision(s);
    const sizes: Record<string, Record<string, unknown>> = {};
    /** --perf: the record of the largest size's connects, and that size. */
    let perf: { perfFile: string; perfUnits: number } | null = null;
    /** The connects of the last size: what a profile (--profile) is summarised over. */
    let window: [number, number] = [0, 0];
    // Warm-up, as every scenario has one: a wave of 1,000 members of another room opens and closes
    // first, so the measured waves do not meet a cold process (unmeasured; the same for every system).
    {
      const warm = range(1000).map((i) => `bigwarmu${i}`);
      const room = await p.group(warm[0]!, 'big-warm', warm);
      await openSubs(sys, [s.url], split(warm.map((u) => ({ user: u, token: p.token(u), subs: [room], sends: [] })), subWorkers.length));
      await closeAll();
      await settle([s.proc.pid], 3, 60_000);
    }
    for (const n of cfg.sizes) {
      const users = range(n).map((i) => `big${n}u${i}`);
      const room = await p.group(users[0]!, `big-${n}`, users);
      await settle([s.proc.pid], 5, 10_000);
      const specs = users.map((u) => ({ user: u, token: p.token(u), subs: [room], sends: [] }));
      const sampler = new Sampler([s.proc.pid], allWorkers.map((w) => w.pid), DB_NAME).start();
      const perfFile = PERF && n === Math.max(...cfg.sizes) ? join(PROFILE_DIR, `perf-bigroom-${sys}.data`) : null;
      const stopPerf = perfFile ? recordPerf([s.proc.pid], perfFile) : null;
      const t0 = nowUs();
      const opened = await openSubs(sys, [s.url], split(specs, subWorkers.length));
      window = [t0, nowUs()];
      await stopPerf?.();
      if (perfFile) perf = { perfFile, perfUnits: n };
      const win = sampler.stop();
      const settleMs = await settle([s.proc.pid], 3, 60_000);
      sizes[String(n)] = {
        subscribers: n,
        ready: opened.ready,
        connectMs: opened.elapsedMs,
        settleMs,
        cpuUsPerConnect: round(win.cpuUs / n, 1),
        // PostgreSQL's backends of the bench database; then the whole machine (server, load
        // generator, PostgreSQL, Redis) and the load generator alone.
        dbCpuUsPerConnect: round(win.dbCpuUs / n, 1),
        machineCpuPct: round(win.machineCpuPct),
        loadCpuPct: round(win.loadCpuPct),
        writesPerConnect: round(win.writeCalls / n, 2),
        readsPerConnect: round(win.readCalls / n, 2),
        rssMb: round((rssKb(s.proc.pid) ?? 0) / 1024),
      };
      await closeAll();
      await settle([s.proc.pid], 3, 60_000);
    }
    return { deliveriesPerSec: null, p50Ms: null, p99Ms: null, p999Ms: null, lost: 0, duplicated: 0, sizes, profileWindowUs: window, ...(perf ?? {}) };
  });
}

/** (5) Reconnect storm: N subscribers over R rooms, messages keep coming, the server restarts. */
async function storm(sys: SystemName) {
  const cfg = C.storm;
  const port = await freePort();
  let s = await startServer(sys, { port });
  try {
    const p = provision(s);
    const perRoom = Math.ceil(cfg.subs / cfg.rooms);
    const users = range(Math.ceil(perRoom / C.connsPerUser)).map((i) => `storm-u${i}`);
    const roomIds = await mapLimit(range(cfg.rooms), 8, (r) => p.group('storm-sender', `storm-${r}`, users));
    const specs = range(cfg.subs).map((i) => {
      const user = users[Math.floor(i / cfg.rooms) % users.length]!;
      return { user, token: p.token(user), subs: [roomIds[i % cfg.rooms]!], sends: [] };
    });
    await openSubs(sys, [s.url], split(specs, subWorkers.length));
    await openOn(sendWorker, sys, s.url, [{ user: 'storm-sender', token: p.token('storm-sender'), subs: [], sends: roomIds }]);
    await settle([s.proc.pid]);
    await Promise.all(allWorkers.map((w) => w.call({ cmd: 'phase', args: { watermark: false } })));
    // Sending goes on through the restart until `afterMs` after the new server is up (stopSend below).
    const durationMs = cfg.beforeMs + 60_000 + cfg.afterMs;
    let sendingDone = false;
    const sendP = sendWorker
      .call<SendResult>({ cmd: 'send', args: { mode: 'rate', rate: cfg.rate, durationMs, drainMs: C.drainMs } }, durationMs + C.drainMs + 120_000)
      .finally(() => (sendingDone = true));
    await sleep(cfg.beforeMs);
    // The restart: SIGTERM (ours drains: clients are told to reconnect), then a new process on the same port.
    const tDown = nowUs();
    await s.proc.stop('SIGTERM', 10_000);
    const stoppedMs = (nowUs() - tDown) / 1000;
    const s2 = await startServer(sys, { port, label: `${sys}-restarted` });
    const warns1 = serverWarnings(s);
    s = s2;
    const tUp = nowUs();
    const downtimeMs = (tUp - tDown) / 1000;
    // Caught up: every subscriber holds every message acknowledged up to the previous poll (100 ms
    // earlier). A system that lost messages never gets there: stop once sending is over and the
    // deliveries stall.
    let catchUpMs: number | null = null;
    let resubscribedMs: number | null = null;
    let prevCounts = await sendWorker.call<Record<string, number>>({ cmd: 'ackedCounts' });
    const deadline = Date.now() + cfg.afterMs + C.drainMs;
    let lastDistinct = -1;
    let lastChange = Date.now();
    let stopRequested = false;
    while (Date.now() < deadline && catchUpMs === null) {
      await sleep(100);
      if (!stopRequested && nowUs() - tUp > cfg.afterMs * 1000) {
        stopRequested = true;
        await sendWorker.call({ cmd: 'stopSend' });
      }
      const counts = await sendWorker.call<Record<string, number>>({ cmd: 'ackedCounts' });
      const [behind, prog] = await Promise.all([
        Promise.all(subWorkers.map((w) => w.call<{ behind: number }>({ cmd: 'behind', counts: prevCounts }))),
        progressAll(),
      ]);
      const elapsed = (nowUs() - tUp) / 1000;
      if (resubscribedMs === null && prog.every((x) => x.ready === x.subs)) resubscribedMs = Math.round(elapsed);
      if (resubscribedMs !== null && behind.every((b) => b.behind === 0)) catchUpMs = Math.round(elapsed);
      prevCounts = counts;
      const distinct = prog.reduce((a, x) => a + x.distinct, 0);
      if (distinct !== lastDistinct) {
        lastDistinct = distinct;
        lastChange = Date.now();
      } else if (sendingDone && Date.now() - lastChange > C.stallMs) break;
    }
    if (!stopRequested) {
      const left = cfg.afterMs - (nowUs() - tUp) / 1000;
      if (left > 0) await sleep(left);
      await sendWorker.call({ cmd: 'stopSend' });
    }
    const sent = await sendP;
    let expected = 0;
    for (const ranges of Object.values(sent.ackedKeys)) expected += ranges.reduce((a, [f, t]) => a + (t - f + 1), 0) * perRoom;
    const drainTimedOut = await drain(expected, C.drainMs);
    const prog = await progressAll();
    const col = await Promise.all(allWorkers.map((w) => w.call<CollectResult>({ cmd: 'collect' })));
    const exp = await Promise.all(allWorkers.map((w) => w.call<ExpectResult>({ cmd: 'expect', rooms: sent.ackedKeys }, 60_000)));
    const lat = summarize(col.map((c) => c.hist));
    const lost = exp.reduce((a, e) => a + e.lost, 0);
    const warns = [...warns1, ...serverWarnings(s)];
    return {
      deliveriesPerSec: null,
      p50Ms: lat.p50Ms,
      p99Ms: lat.p99Ms,
      p999Ms: lat.p999Ms,
      maxMs: lat.maxMs,
      rssMb: round((rssKb(s.proc.pid) ?? 0) / 1024),
      cpuPct: null,
      cpuUsPerDelivery: null,
      lost,
      duplicated: exp.reduce((a, e) => a + e.duplicated, 0),
      outOfOrder: exp.reduce((a, e) => a + e.outOfOrder, 0),
      catchUpMs: lost === 0 ? catchUpMs : null,
      catchUpNote: lost === 0 ? 'from the new server answering /healthz until every subscriber held every acknowledged message' : 'never: messages were lost',
      resubscribedMs,
      stopMs: Math.round(stoppedMs),
      downtimeMs: Math.round(downtimeMs),
      subscribers: cfg.subs,
      rooms: cfg.rooms,
      offeredMsgPerSec: cfg.rate,
      sent: sent.issued,
      acked: sent.acked,
      sendErrors: sent.errors,
      sendRetries: sent.retries,
      deliveries: col.reduce((a, c) => a + c.deliveries, 0),
      reconnects: col.reduce((a, c) => a + c.reconnects, 0),
      subsReadyAtEnd: prog.reduce((a, x) => a + x.ready, 0),
      subsWithLoss: exp.reduce((a, e) => a + e.subsWithLoss, 0),
      drainTimedOut,
      ...(warns.length ? { serverWarningCount: warns.length, serverWarnings: warns.slice(0, 5) } : {}),
    };
  } finally {
    await closeAll();
    await s.proc.stop('SIGTERM', 10_000);
  }
}

/** Our node's own counters of the bus and its hubs, from its /metrics (a Prometheus text). */
async function nodeCounters(s: Server): Promise<Record<string, number>> {
  const names = [
    'chat_messages_sent_total',
    'chat_bus_published_total',
    'chat_bus_received_total',
    'chat_bus_duplicates_total',
    'chat_events_delivered_total',
    'chat_gap_waits_total',
    'chat_gap_fills_total',
    'chat_gap_filled_events_total',
  ];
  const text = await (await fetch(`${s.url}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [name, value] = line.split(' ');
    if (name && names.includes(name)) out[name.replace(/^chat_|_total$/g, '')] = Number(value);
  }
  return out;
}

/**
 * Sender connections per node in the scale-out fan-out: the window's messages spread over them keep
 * each socket at 16 unanswered calls at most on one node (window 64), half of ours' default
 * WS_MAX_INFLIGHT. With one per node, the one node's socket held up to 64: the calls over 32 were
 * refused (TOO_MANY_REQUESTS) and the sender backed off 100 ms per attempt, which left capped nodes
 * idle (the peers have no such limit and were never refused).
 */
const SENDERS_PER_NODE = Math.max(1, Math.ceil(C.scaleout.window / 16));

/** (6) Scale-out: the fan-out at the maximum on one node, then on two nodes sharing Redis. */
async function scaleout(sys: SystemName) {
  const cfg = C.scaleout;
  // Every node capped at the same CPU quota (bench/lib/cgroup.ts): 2 cores cannot give each node a
  // core of its own, a quota can. --cpu-quota 0 runs the nodes uncapped.
  const quota = Number(opt('cpu-quota') ?? SCALEOUT_CPU_QUOTA);
  const servers: Server[] = [];
  const start = async () => {
    const s = await startServer(sys, { redis: true, label: `${sys}-${servers.length + 1}`, ...(quota > 0 ? { cpuQuota: quota } : {}) });
    servers.push(s);
    return s;
  };
  try {
    const first = await start();
    const p = provision(first);
    const users = range(Math.ceil(cfg.subs / C.connsPerUser)).map((i) => `so-u${i}`);
    const room = await p.group('so-sender', 'scaleout', users);
    const specs = range(cfg.subs).map((i) => ({ user: users[i % users.length]!, token: p.token(users[i % users.length]!), subs: [room], sends: [] }));
    const sender = [{ user: 'so-sender', token: p.token('so-sender'), subs: [], sends: [room] }];
    const phase = async (nodes: Server[], durationMs = cfg.phaseMs) =>
      runPhase({
        servers: nodes,
        mode: { mode: 'window', window: cfg.window, sources: subWorkers.length },
        senders: [sendWorker],
        durationMs,
        subsInRoom: () => cfg.subs,
      });
    const byNodes: Record<string, PhaseResult> = {};
    for (const n of cfg.nodes) {
      while (servers.length < n) await start();
      const nodes = servers.slice(0, n);
      // The subscribers spread evenly over the nodes; the sender on the first.
      const perNode = split(specs, n);
      for (const [k, s] of nodes.entries()) await openSubs(sys, [s.url], split(perNode[k] ?? [], subWorkers.length));
      // Sender connections on every node, taking turns (the load balancer spreads senders as it
      // spreads subscribers): with the one sender on the first node, that node carried every send
      // on top of its share of the subscribers and alone limited ours (docs/BENCHMARKS.md, eleventh pass).
      // SENDERS_PER_NODE of them, so that no socket holds more unanswered calls than a client may
      // keep on one (ours: WS_MAX_INFLIGHT, 32 by default; docs/BENCHMARKS.md, fifteenth pass).
      for (const s of nodes) await openOn(sendWorker, sys, s.url, range(SENDERS_PER_NODE).flatMap(() => sender));
      await settle(nodes.map((s) => s.proc.pid));
      await phase(nodes, cfg.warmupMs);
      const before = sys === 'ours' ? await Promise.all(nodes.map(nodeCounters)) : null;
      byNodes[String(n)] = await phase(nodes);
      if (before) {
        // What each node did in the phase (its /metrics before and after): a node that did more is
        // the one its quota throttled more (docs/BENCHMARKS.md, thirteenth pass).
        const after = await Promise.all(nodes.map(nodeCounters));
        byNodes[String(n)]!.countersByNode = after.map((a, i) => Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v - (before[i]![k] ?? 0)])));
      }
      await closeAll();
    }
    const base = byNodes['1']?.deliveriesPerSec ?? null;
    const speedups = Object.fromEntries(
      Object.entries(byNodes).map(([n, r]) => [n, base && r.deliveriesPerSec ? round(r.deliveriesPerSec / base, 2) : null]),
    );

    // Many small rooms across the nodes: direct rooms whose two members sit on different nodes (with
    // more than one), one sender each with one message in flight (closed loop): sends/s and
    // deliveries/s at the capped nodes' limit.
    const dms = await mapLimit(range(cfg.rooms), 16, (r) => p.direct(`so-dm${r}a`, `so-dm${r}b`));
    const roomsByNodes: Record<string, PhaseResult> = {};
    for (const n of cfg.nodes) {
      const nodes = servers.slice(0, n);
      const perNode: ConnSpec[][] = nodes.map(() => []);
      dms.forEach((room, r) => {
        perNode[r % n]!.push({ user: `so-dm${r}a`, token: p.token(`so-dm${r}a`), subs: [room], sends: [room] });
        perNode[(r + 1) % n]!.push({ user: `so-dm${r}b`, token: p.token(`so-dm${r}b`), subs: [room], sends: [] });
      });
      for (const [k, s] of nodes.entries()) await openSubs(sys, [s.url], split(perNode[k] ?? [], subWorkers.length));
      await settle(nodes.map((s) => s.proc.pid));
      const roomsPhase = (durationMs: number) =>
        runPhase({ servers: nodes, mode: { mode: 'closed' }, senders: subWorkers, durationMs, subsInRoom: () => 2 });
      await roomsPhase(cfg.warmupMs);
      roomsByNodes[String(n)] = await roomsPhase(cfg.phaseMs);
      await closeAll();
    }
    const roomsBase = roomsByNodes['1']?.ackedPerSec ?? null;
    const roomsSpeedups = Object.fromEntries(
      Object.entries(roomsByNodes).map(([n, r]) => [n, roomsBase && r.ackedPerSec ? round(r.ackedPerSec / roomsBase, 2) : null]),
    );
    const rooms = Object.fromEntries(
      Object.entries(roomsByNodes).map(([n, r]) => [
        n,
        { sendsPerSec: r.ackedPerSec, deliveriesPerSec: r.deliveriesPerSec, ackP99Ms: r.ackP99Ms, cpuUsPerSend: r.acked > 0 ? round((r.serverCpuMs * 1000) / r.acked, 1) : null, lost: r.lost, duplicated: r.duplicated },
      ]),
    );

    const last = byNodes[String(cfg.nodes.at(-1))]!;
    return { ...last, speedup: speedups['2'] ?? null, speedups, cpuQuota: quota, byNodes, subscribers: cfg.subs, rooms, roomsSpeedups, smallRooms: cfg.rooms };
  } finally {
    await closeAll();
    await Promise.all(servers.map((s) => s.proc.stop('SIGTERM', 10_000)));
  }
}

const feed = (sys: SystemName) => rooms(sys, true);
const RUNNERS: Record<ScenarioName, (sys: SystemName) => Promise<Record<string, unknown>>> = { fanout, rooms, feed, sends, idle, bigroom, storm, scaleout };

// ---------------------------------------------------------------------------------------------
// Machine, database, cleanup, report

function machine() {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const sh = (cmd: string) => {
    try {
      return execSync(cmd, { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    } catch {
      return null;
    }
  };
  return {
    nproc: os.availableParallelism(),
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown',
    memGb: round(os.totalmem() / 1024 ** 3, 1),
    node: process.version,
    kernel: os.release(),
    postgres: sh(`psql "${PG_ADMIN}" -Atc "show server_version"`),
    redis: sh(`redis-cli -u ${REDIS_URL} info server | grep redis_version | cut -d: -f2`),
    loadAvgAtStart: os.loadavg().map((v) => round(v, 2)),
    ulimitN: sh('bash -c "ulimit -n"'),
    gitHead: sh('git rev-parse --short HEAD'),
    /** The work tree is shared too: source files of the server that differ from HEAD when the run started. */
    srcChangedFromHead: sh('git status --porcelain -- src')?.split('\n').filter(Boolean).length ?? null,
    shared: 'a shared development machine (other engineers run tests at the same time)',
  };
}

function fmt(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'number') return v >= 1000 ? Math.round(v).toLocaleString('en-US') : String(v);
  return String(v);
}

function printTable(results: Record<string, Record<string, Record<string, unknown>>>) {
  const cols = ['deliveriesPerSec', 'p50Ms', 'p99Ms', 'p999Ms', 'cpuPct', 'cpuUsPerDelivery', 'writesPerSend', 'dbCpuUsPerSend', 'rssMb', 'lost', 'duplicated', 'kbPerConnection', 'kbPerConnectionMarginal', 'catchUpMs', 'speedup'];
  for (const [scen, bySys] of Object.entries(results)) {
    console.log(`\n${scen}`);
    console.log(['system', ...cols].map((c) => c.padStart(12)).join(''));
    for (const [sys, r] of Object.entries(bySys)) {
      if (r.error) console.log(`${sys.padStart(12)}  ERROR ${String(r.error).split('\n')[0]}`);
      else console.log([sys, ...cols.map((c) => fmt(r[c]))].map((c) => String(c).padStart(12)).join(''));
    }
  }
}

/** ours / peer for the headline figures of each scenario. */
function ratios(results: Record<string, Record<string, Record<string, unknown>>>) {
  const out: Record<string, Record<string, Record<string, number | null>>> = {};
  for (const [scen, bySys] of Object.entries(results)) {
    const ours = bySys.ours;
    if (!ours || ours.error) continue;
    for (const peer of ['socketio', 'socketioPg', 'ws']) {
      const r = bySys[peer];
      if (!r || r.error) continue;
      const q: Record<string, number | null> = {};
      for (const k of ['deliveriesPerSec', 'cpuUsPerDelivery', 'p99Ms', 'kbPerConnection', 'kbPerConnectionMarginal', 'speedup', 'rssMb']) {
        const a = ours[k];
        const b = r[k];
        q[k] = typeof a === 'number' && typeof b === 'number' && b !== 0 ? round(a / b, 2) : null;
      }
      const row = out[scen] ?? {};
      row[`oursVs_${peer}`] = q;
      out[scen] = row;
    }
  }
  return out;
}

/** The newest .cpuprofile (written when the profiled server exited) → bench/results/profile-top-<scenario>.txt. */
function summarizeProfile(scen: string, windowUs: unknown) {
  const newest = readdirSync(PROFILE_DIR)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => join(PROFILE_DIR, f))
    .sort((x, y) => statSync(y).mtimeMs - statSync(x).mtimeMs)[0];
  if (!newest) return console.log('no .cpuprofile was written');
  const w = Array.isArray(windowUs) ? { fromUs: windowUs[0] as number, toUs: windowUs[1] as number } : undefined;
  const text = `${scen}: ${newest.slice(ROOT.length + 1)}\n${topFrames(newest, 30, w)}`;
  writeFileSync(join(RESULTS_DIR, `profile-top-${scen}.txt`), text);
  console.log(`\n${text}`);
}

async function main() {
  const started = Date.now();
  const watchdog = setTimeout(() => {
    console.error(`bench: the run exceeded ${MAX_RUN_MS / 60_000} minutes; stopping`);
    process.exit(2);
  }, MAX_RUN_MS);
  watchdog.unref();
  process.once('SIGINT', () => process.exit(130));
  process.once('SIGTERM', () => process.exit(143));

  mkdirSync(RESULTS_DIR, { recursive: true });
  // Ours runs compiled, as in production (`npm start`): build src/ into dist/ first.
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
  if (PROFILE || PERF) mkdirSync(PROFILE_DIR, { recursive: true });
  const splits: { scen: ScenarioName; split: PerfSplit; messages: number }[] = [];
  const out = {
    machine: machine(),
    mode: MODE,
    startedAt: new Date().toISOString(),
    command: `npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`,
    sizes: C,
    scenarios: {} as Record<string, Record<string, Record<string, unknown>>>,
    ratios: {} as ReturnType<typeof ratios>,
    durationSec: 0,
  };
  const partial = !PROFILE && (opt('only') || opt('systems') || PERF);
  const file = join(RESULTS_DIR, `${MODE}${partial ? '-partial' : ''}.json`);
  const save = () => {
    out.durationSec = Math.round((Date.now() - started) / 1000);
    out.ratios = ratios(out.scenarios);
    writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  };
  console.log(`bench (${MODE}) on ${out.machine.cpuModel}, ${out.machine.nproc} cores, Node ${out.machine.node}`);
  let failed = false;
  try {
    // The machine is shared: give other work a moment to finish, and record how busy it was.
    const waitSec = Number(opt('wait-quiet') ?? (QUICK ? 0 : 60));
    const quiet = await waitQuiet(waitSec * 1000);
    Object.assign(out.machine, { busyPctBeforeStart: quiet.busyPct, waitedForQuietMs: quiet.waitedMs });
    console.log(`machine busy before start: ${quiet.busyPct.join(', ')} % (waited ${Math.round(quiet.waitedMs / 1000)} s)`);
    await resetDatabase(PG_ADMIN, DB_NAME);
    const workers = await Promise.all([LoadWorker.start(0), LoadWorker.start(1), LoadWorker.start(2)]);
    subWorkers = workers.slice(0, 2);
    sendWorker = workers[2]!;
    allWorkers = workers;
    // fanout, rooms and sends share one server per system; the others (feed too) start their own.
    const groups: ScenarioName[][] = [['fanout', 'rooms', 'sends'], ['feed'], ['idle'], ['bigroom'], ['storm'], ['scaleout']];
    const plan: [ScenarioName, SystemName][] = [];
    for (const g of groups) {
      const inGroup = g.filter((x) => onlyScenarios.includes(x));
      const systems = [...new Set(inGroup.flatMap((x) => SYSTEMS_OF[x]))];
      for (const sys of systems) for (const scen of inGroup) if (SYSTEMS_OF[scen].includes(sys)) plan.push([scen, sys]);
    }
    for (const scen of onlyScenarios) out.scenarios[scen] = {};
    let prevSys: SystemName | null = null;
    for (const [scen, sys] of plan) {
      if (onlySystems && !onlySystems.includes(sys)) continue;
      pooling = ['fanout', 'rooms', 'sends'].includes(scen);
      if (sys !== prevSys || !pooling) await stopPool();
      prevSys = sys;
      const t = Date.now();
      process.stdout.write(`${scen} / ${sys} ... `);
      try {
        const load1 = round(os.loadavg()[0]!, 2);
        const r = await RUNNERS[scen](sys);
        out.scenarios[scen]![sys] = { ...r, loadAvg1AtStart: load1, elapsedSec: Math.round((Date.now() - t) / 1000) };
        console.log(
          `${Math.round((Date.now() - t) / 1000)} s: ${fmt(r.deliveriesPerSec)}/s p99 ${fmt(r.p99Ms)} ms, cpu ${fmt(r.cpuUsPerDelivery)} us/delivery${r.cpuUsPerDeliveryByThread && Object.keys(r.cpuUsPerDeliveryByThread).length ? ` (${Object.entries(r.cpuUsPerDeliveryByThread).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}, lost ${fmt(r.lost)}, dup ${fmt(r.duplicated)}${r.kbPerConnection !== undefined ? `, ${r.kbPerConnection} KB/conn (marginal ${fmt(r.kbPerConnectionMarginal)})` : ''}${r.catchUpMs !== undefined ? `, catch-up ${fmt(r.catchUpMs)} ms` : ''}${r.speedup !== undefined ? `, x${fmt(r.speedup)} on 2 nodes` : ''}${Array.isArray(r.cpuPctByServer) && r.cpuPctByServer.length > 1 ? `, last phase per node: cpu ${r.cpuPctByServer.join('/')} %, throttled ${(r.throttledPctByServer as unknown[]).map((v) => fmt(v)).join('/')} %` : ''}${r.sizes ? `, ${JSON.stringify(r.sizes)}` : ''}`,
        );
        if (PROFILE && sys === 'ours') summarizeProfile(scen, r.profileWindowUs);
        // The record covers the senders' phase (rooms: the messages sent in it) or the connects (bigroom).
        if (PERF && typeof r.perfFile === 'string') splits.push({ scen, split: perfSplit(r.perfFile, sys), messages: r.perfUnits as number });
      } catch (err) {
        failed = true;
        const msg = err instanceof Error ? (err.stack ?? err.message) : String(err);
        out.scenarios[scen]![sys] = { error: msg.slice(0, 2000) };
        console.log(`FAILED\n${msg}`);
        await closeAll();
      }
      save();
    }
    await stopPool();
  } finally {
    await killAll();
    await cleanRedis(REDIS_URL, REDIS_PREFIX).catch((e) => console.error('redis cleanup failed:', e));
    if (!flag('keep-db')) await dropDatabase(PG_ADMIN, DB_NAME).catch((e) => console.error('database drop failed:', e));
    save();
  }
  printTable(out.scenarios);
  for (const scen of PERF_SCENARIOS) {
    const of = splits.filter((x) => x.scen === scen);
    if (of.length === 0) continue;
    const what =
      scen === 'rooms'
        ? `rooms scenario (${C.rooms.rooms} direct rooms, ${C.rooms.rate} msg/s), each server under perf record -g for ${C.rooms.phaseMs / 1000} s`
        : `bigroom scenario, the ${of[0]!.messages} members of one room connecting and subscribing, each server under perf record -g meanwhile (per connect below, not per message)`;
    const unit = scen === 'rooms' ? 'message' : 'connect';
    const text = [
      `${what}; ${out.startedAt}`,
      formatSplits(of, unit),
      ...of.map(({ split, messages }) => `\n${split.label}: the functions most samples are charged to (µs per ${unit})\n${formatTop(split, 30, messages)}`),
    ].join('\n');
    writeFileSync(join(RESULTS_DIR, `perf-split-${scen}.txt`), `${text}\n`);
    console.log(`\n${text}\n\nwrote bench/results/perf-split-${scen}.txt`);
  }
  console.log(`\nwrote ${file} (${out.durationSec} s)`);
  clearTimeout(watchdog);
  process.exit(failed ? 1 : 0);
}

await main();
