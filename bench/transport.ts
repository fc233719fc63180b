/**
 * The WebSocket transport (src/transport/) against tRPC's own `applyWSSHandler`, on a plain tRPC
 * app with no chat in it: the same router, the same raw clients, one after the other in one run.
 *
 *   npx tsx bench/transport.ts --quick   # about 30 s (one round, small counts)
 *   npx tsx bench/transport.ts           # about 3 minutes (three rounds, medians)
 *
 * Scenarios (each on a fresh server process per handler, alternating handlers per round):
 * - fanout-generator: N subscribers of one subscription written as the tRPC docs show it (an async
 *   generator over `on(emitter)`, yielding `tracked(id, event)`); K events published as fast as
 *   the server takes them. deliveries/s and server CPU µs per delivery.
 * - fanout-pushable: the same, with the subscription returned as a `Pushable` (src/transport/
 *   push.ts): ours writes each event from the publisher's loop with one shared encoding, tRPC's
 *   adapter pulls the same object as an async iterator.
 * - queries: C clients, each one query in flight (closed loop), for D seconds: queries/s, round
 *   trip p50/p99, server CPU µs per query.
 *
 * `--only queries,fanout-generator` runs some scenarios; `BENCH_CPU_PROF=<dir>` profiles the servers.
 *
 * The server is a child process (its CPU is read from /proc); the clients are raw `ws` sockets in
 * this process, reading frames with `indexOf`. Results: bench/results/transport-<quick|full>.json
 * and a table on stdout. A benchmark, never part of `npm test`.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { EventEmitter, on, once } from 'node:events';
import { writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { initTRPC, tracked } from '@trpc/server';
import { applyWSSHandler as trpcApplyWSSHandler } from '@trpc/server/adapters/ws';
import { WebSocket, WebSocketServer } from 'ws';
import { applyWSSHandler as ourApplyWSSHandler, PUSH, type Pushable, type PushSink, type SharedFrame } from '../src/transport/index.js';
import { cpuUs } from './lib/stat.js';

type Handler = 'trpc' | 'ours';
type Scenario = 'fanout-generator' | 'fanout-pushable' | 'queries';

// ---------------------------------------------------------------------------------------------
// Server (child process): a plain tRPC router on one of the two handlers.

async function server(handler: Handler) {
  const t = initTRPC.create();
  const ee = new EventEmitter();
  ee.setMaxListeners(0);
  /** Sinks of pushed subscriptions, and queues of pulled ones (tRPC's adapter pulls the Pushable). */
  const sinks = new Set<PushSink<unknown>>();
  const pulled = new Set<(v: unknown) => void>();
  let seq = 0;
  const pushable = (signal: AbortSignal | undefined): Pushable<unknown> => ({
    [PUSH](sink) {
      sinks.add(sink);
      signal?.addEventListener('abort', () => {
        sinks.delete(sink);
        sink.end();
      });
    },
    [Symbol.asyncIterator]() {
      const queue: unknown[] = [];
      let wake: (() => void) | null = null;
      const push = (v: unknown) => {
        queue.push(v);
        wake?.();
      };
      pulled.add(push);
      const stop = () => {
        pulled.delete(push);
        wake?.();
      };
      signal?.addEventListener('abort', stop);
      return {
        async next() {
          while (queue.length === 0) {
            if (signal?.aborted) return { done: true, value: undefined };
            await new Promise<void>((r) => {
              wake = r;
            });
            wake = null;
          }
          return { done: false, value: queue.shift() };
        },
        async return() {
          stop();
          return { done: true, value: undefined };
        },
      };
    },
  });
  const router = t.router({
    echo: t.procedure.input((v) => v as { n: number; text: string }).query(({ input }) => ({ n: input.n, text: input.text, at: Date.now() })),
    ticks: t.procedure.subscription(async function* ({ signal }) {
      for await (const [event] of on(ee, 'tick', { signal })) yield tracked(String((event as { n: number }).n), event);
    }),
    pushed: t.procedure.subscription(({ signal }) => pushable(signal)),
  });
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  if (handler === 'trpc') trpcApplyWSSHandler({ wss, router });
  else ourApplyWSSHandler({ wss, router });
  const publish = (count: number) => {
    let left = count;
    const step = () => {
      // A few events per turn of the event loop, so the sockets are written between them.
      for (let i = 0; i < 4 && left > 0; i++, left--) {
        const event = { n: ++seq, at: Date.now(), text: 'lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore' };
        ee.emit('tick', event);
        const value = tracked(String(event.n), event);
        const shared: SharedFrame = { event, id: null, bytes: null };
        for (const s of sinks) s.data(value, shared);
        for (const p of pulled) p(value);
      }
      if (left > 0) setImmediate(step);
    };
    step();
  };
  process.on('message', (m: { cmd: string; count?: number }) => {
    if (m.cmd === 'publish') publish(m.count ?? 0);
    else if (m.cmd === 'exit') process.exit(0);
    else if (m.cmd === 'subscribers') process.send?.({ subscribers: ee.listenerCount('tick') + sinks.size + pulled.size });
  });
  process.send?.({ port: (wss.address() as AddressInfo).port });
}

// ---------------------------------------------------------------------------------------------
// Coordinator: starts a server, drives raw clients, measures.

interface Srv {
  child: ChildProcess;
  url: string;
  ask<T>(msg: object, key: string): Promise<T>;
  stop(): Promise<void>;
}

async function startServer(handler: Handler): Promise<Srv> {
  // BENCH_CPU_PROF=<dir>: each server writes a V8 CPU profile there (open it in Chrome DevTools).
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, `--cpu-prof-name=${handler}-${Date.now()}.cpuprofile`] : [];
  const child = fork(fileURLToPath(import.meta.url), ['--server', handler], { execArgv: [...process.execArgv, ...prof], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const [first] = (await once(child, 'message')) as [{ port: number }];
  return {
    child,
    url: `ws://127.0.0.1:${first.port}`,
    async ask<T>(msg: object, key: string) {
      child.send(msg);
      for (;;) {
        const [m] = (await once(child, 'message')) as [Record<string, T>];
        if (key in m) return m[key] as T;
      }
    },
    async stop() {
      // A clean exit (a --cpu-prof profile is written then), SIGKILL if it takes more than 5 s.
      const exited = child.exitCode === null && child.signalCode === null ? once(child, 'exit') : Promise.resolve();
      child.send({ cmd: 'exit' });
      const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(kill);
    },
  };
}

async function connect(url: string, n: number): Promise<WebSocket[]> {
  const out: WebSocket[] = [];
  // In batches, so the accept queue is never the bottleneck.
  for (let i = 0; i < n; i += 100) {
    const batch = Array.from({ length: Math.min(100, n - i) }, () => new WebSocket(url, { perMessageDeflate: false }));
    await Promise.all(batch.map((ws) => once(ws, 'open')));
    out.push(...batch);
  }
  return out;
}

const DATA = Buffer.from('"type":"data"');
const STARTED = Buffer.from('"type":"started"');

async function fanout(srv: Srv, path: string, subscribers: number, events: number) {
  const sockets = await connect(srv.url, subscribers);
  let started = 0;
  let delivered = 0;
  let done: () => void = () => {};
  const all = new Promise<void>((r) => {
    done = r;
  });
  const total = subscribers * events;
  for (const ws of sockets) {
    ws.on('message', (data: Buffer) => {
      if (data.indexOf(DATA) >= 0) {
        if (++delivered === total) done();
      } else if (data.indexOf(STARTED) >= 0) started++;
    });
    ws.send(JSON.stringify({ id: 1, method: 'subscription', params: { path, input: null } }));
  }
  // Every subscription started on the client and listening on the server (tRPC reports `started`
  // before the generator runs).
  for (;;) {
    const n = await srv.ask<number>({ cmd: 'subscribers' }, 'subscribers');
    if (started === subscribers && n === subscribers) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  // Warm-up: a few events, not measured.
  const warm = 20;
  const warmTotal = subscribers * warm;
  srv.child.send({ cmd: 'publish', count: warm });
  while (delivered < warmTotal) await new Promise((r) => setTimeout(r, 5));
  delivered = 0;
  const cpu0 = cpuUs(srv.child.pid!)!;
  const t0 = performance.now();
  srv.child.send({ cmd: 'publish', count: events });
  const timeout = setTimeout(() => done(), 60_000);
  await all;
  clearTimeout(timeout);
  const ms = performance.now() - t0;
  const cpu = cpuUs(srv.child.pid!)! - cpu0;
  for (const ws of sockets) ws.terminate();
  return {
    subscribers,
    events,
    deliveries: delivered,
    lost: total - delivered,
    deliveriesPerSec: Math.round(delivered / (ms / 1000)),
    cpuUsPerDelivery: round(cpu / Math.max(1, delivered), 2),
    serverCpuPct: Math.round((cpu / 1000 / ms) * 100),
  };
}

async function queries(srv: Srv, clients: number, seconds: number) {
  const sockets = await connect(srv.url, clients);
  const text = 'x'.repeat(64);
  const lat: number[] = [];
  let measuring = false;
  let stop = false;
  const loops = sockets.map(
    (ws) =>
      new Promise<void>((resolve) => {
        let id = 0;
        let sentAt = 0;
        const send = () => {
          if (stop) return resolve();
          sentAt = performance.now();
          ws.send(`{"id":${++id},"method":"query","params":{"path":"echo","input":{"n":${id},"text":"${text}"}}}`);
        };
        ws.on('message', () => {
          if (measuring) lat.push(performance.now() - sentAt);
          send();
        });
        send();
      }),
  );
  await new Promise((r) => setTimeout(r, 500)); // warm-up
  measuring = true;
  const cpu0 = cpuUs(srv.child.pid!)!;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  measuring = false;
  const ms = performance.now() - t0;
  const cpu = cpuUs(srv.child.pid!)! - cpu0;
  const n = lat.length;
  stop = true;
  await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, 2000))]);
  for (const ws of sockets) ws.terminate();
  lat.sort((a, b) => a - b);
  return {
    clients,
    queries: n,
    queriesPerSec: Math.round(n / (ms / 1000)),
    p50Ms: round(lat[Math.floor(n * 0.5)] ?? 0, 3),
    p99Ms: round(lat[Math.floor(n * 0.99)] ?? 0, 3),
    cpuUsPerQuery: round(cpu / Math.max(1, n), 2),
    serverCpuPct: Math.round((cpu / 1000 / ms) * 100),
  };
}

const round = (v: number, d: number) => Math.round(v * 10 ** d) / 10 ** d;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main() {
  const quick = process.argv.includes('--quick');
  const onlyAt = process.argv.indexOf('--only');
  const only = onlyAt >= 0 ? (process.argv[onlyAt + 1] ?? '').split(',') : null;
  const sizes = quick
    ? { rounds: 1, subscribers: 300, events: 100, clients: 32, seconds: 2 }
    : { rounds: 3, subscribers: 1000, events: 100, clients: 64, seconds: 4 };
  const started = Date.now();
  const runs: Record<Scenario, Record<Handler, Record<string, number>[]>> = {
    'fanout-generator': { trpc: [], ours: [] },
    'fanout-pushable': { trpc: [], ours: [] },
    queries: { trpc: [], ours: [] },
  };
  for (let round = 0; round < sizes.rounds; round++) {
    // Alternate which handler goes first, so a drift of the shared machine hits both alike.
    const order: Handler[] = round % 2 === 0 ? ['trpc', 'ours'] : ['ours', 'trpc'];
    for (const scenario of Object.keys(runs) as Scenario[]) {
      if (only && !only.includes(scenario)) continue;
      for (const h of order) {
        const srv = await startServer(h);
        try {
          const r =
            scenario === 'queries'
              ? await queries(srv, sizes.clients, sizes.seconds)
              : await fanout(srv, scenario === 'fanout-generator' ? 'ticks' : 'pushed', sizes.subscribers, sizes.events);
          runs[scenario][h].push(r);
          console.log(`round ${round + 1} ${scenario} ${h}: ${JSON.stringify(r)}`);
        } finally {
          await srv.stop();
        }
      }
    }
  }
  // Medians per figure, and ours / tRPC's.
  const result: Record<string, unknown> = {};
  const table: string[] = ['| scenario | figure | tRPC applyWSSHandler | ours | ours / tRPC |', '|---|---|---|---|---|'];
  for (const scenario of Object.keys(runs) as Scenario[]) {
    if (only && !only.includes(scenario)) continue;
    const med = (h: Handler) => {
      const keys = Object.keys(runs[scenario][h][0] ?? {});
      return Object.fromEntries(keys.map((k) => [k, median(runs[scenario][h].map((r) => r[k]!))]));
    };
    const trpc = med('trpc');
    const ours = med('ours');
    const figures = scenario === 'queries' ? ['queriesPerSec', 'p50Ms', 'p99Ms', 'cpuUsPerQuery'] : ['deliveriesPerSec', 'cpuUsPerDelivery', 'lost'];
    const ratios = Object.fromEntries(figures.map((f) => [f, trpc[f] ? round(ours[f]! / trpc[f]!, 2) : null]));
    result[scenario] = { trpc, ours, oursVsTrpc: ratios };
    for (const f of figures) table.push(`| ${scenario} | ${f} | ${trpc[f]} | ${ours[f]} | ${ratios[f] ?? '-'} |`);
  }
  const out = {
    mode: quick ? 'quick' : 'full',
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadAvg1AtStart: round(loadavg()[0]!, 2) },
    sizes,
    scenarios: result,
    durationSec: Math.round((Date.now() - started) / 1000),
  };
  writeFileSync(new URL(`./results/transport-${out.mode}${only ? "-partial" : ""}.json`, import.meta.url), `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\n${table.join('\n')}\n\n${out.mode} run in ${out.durationSec} s (load average ${out.machine.loadAvg1AtStart} at start)`);
}

const serverAt = process.argv.indexOf('--server');
if (serverAt >= 0) {
  void server(process.argv[serverAt + 1] as Handler);
} else {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
