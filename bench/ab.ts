/**
 * `npm run bench:ab -- --base <rev> [--only sends] [--rounds 4]`: our server at two commits, side by
 * side, in alternating runs. On a shared 2-core machine one run differs from the next by a third
 * (docs/BENCHMARKS.md), so a change is judged by rounds of one run of each tree (base first in odd
 * rounds, this tree first in even ones), each round on the same minutes of the machine, never by
 * one run against a number from earlier. Use an even number of rounds.
 *
 * The base commit is checked out in a temporary git worktree with this tree's `bench/` copied over
 * it (the same harness measures both; only `src/` and the rest differ) and this tree's
 * node_modules linked in. Each run is `tsx bench/run.ts --only <scenario> --systems ours
 * --wait-quiet 5` in that tree (it builds the tree's dist/ first), with `BENCH_DB=chat_bench_ab`.
 * Prints one line per run and the means per tree; the worktree is removed at the end.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const args = process.argv.slice(2);
const opt = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const base = opt('base');
if (!base) throw new Error('usage: npm run bench:ab -- --base <rev> [--only sends|rooms|fanout|...] [--rounds 4]');
const scenario = opt('only') ?? 'sends';
const rounds = Number(opt('rounds') ?? 4);

type Metrics = Record<string, number | null>;

/** The figures of one run that a change is judged by. */
function metricsOf(tree: string): Metrics {
  const r = JSON.parse(readFileSync(join(tree, 'bench', 'results', 'full-partial.json'), 'utf8')) as {
    scenarios: Record<string, Record<string, Record<string, unknown>>>;
  };
  const o = r.scenarios[scenario]?.ours;
  if (!o) throw new Error(`no result for ${scenario} in ${tree}`);
  const num = (v: unknown) => (typeof v === 'number' ? v : null);
  if (o.byNodes) {
    // scaleout: fan-out deliveries/s and small-room sends/s on 1, 2 and 3 nodes, and their speedups.
    const out: Metrics = {};
    for (const [n, r] of Object.entries(o.byNodes as Record<string, Record<string, unknown>>)) out[`fan-out ${n} node(s) deliveries/s`] = num(r.deliveriesPerSec);
    for (const [n, x] of Object.entries((o.speedups ?? {}) as Record<string, unknown>)) out[`fan-out speedup ${n}`] = num(x);
    for (const [n, r] of Object.entries((o.rooms ?? {}) as Record<string, Record<string, unknown>>)) out[`rooms ${n} node(s) sends/s`] = num(r.sendsPerSec);
    for (const [n, x] of Object.entries((o.roomsSpeedups ?? {}) as Record<string, unknown>)) out[`rooms speedup ${n}`] = num(x);
    return out;
  }
  if (o.sizes) {
    // bigroom: the time until every subscriber of the room is ready, and the CPU per connect, per size.
    const out: Metrics = {};
    for (const [n, r] of Object.entries(o.sizes as Record<string, Record<string, unknown>>)) {
      out[`${n} connect ms`] = num(r.connectMs);
      out[`${n} server µs/connect`] = num(r.cpuUsPerConnect);
    }
    return out;
  }
  if (o.cases) {
    const out: Metrics = {};
    for (const [k, c] of Object.entries(o.cases as Record<string, Record<string, unknown>>)) {
      if (!k.startsWith('64x')) continue;
      out[`${k} acks/s`] = num(c.ackedPerSec);
      out[`${k} p99 ms`] = num(c.ackP99Ms);
      out[`${k} server µs/ack`] = num(c.cpuUsPerAck);
      out[`${k} db µs/ack`] = num(c.dbCpuUsPerAck);
    }
    return out;
  }
  if ('catchUpMs' in o) {
    // storm: from the new server's first healthy answer until every subscriber holds every message.
    return { 'catch-up ms': num(o.catchUpMs), lost: num(o.lost), 'p99 ms': num(o.p99Ms) };
  }
  if (typeof o.kbPerConnection === 'number') {
    // idle: memory per connection with one subscription, and what a connect cost.
    return { 'KB/connection': num(o.kbPerConnection), 'KB/connection (marginal)': num(o.kbPerConnectionMarginal), 'server µs/connect': num(o.cpuUsPerConnect), 'connect ms': num(o.connectMs), 'idle CPU %': num(o.idleCpuPct) };
  }
  return {
    'deliveries/s': num(o.deliveriesPerSec),
    'p99 ms': num(o.p99Ms),
    'server µs/delivery': num(o.cpuUsPerDelivery),
    'db µs/send': num(o.dbCpuUsPerSend),
    'writes/send': num(o.writesPerSend),
  };
}

const worktree = mkdtempSync(join(tmpdir(), 'chat-bench-ab-'));
rmSync(worktree, { recursive: true });
execFileSync('git', ['worktree', 'add', '--detach', worktree, base], { cwd: ROOT, stdio: 'ignore' });
try {
  cpSync(join(ROOT, 'bench'), join(worktree, 'bench'), { recursive: true, filter: (src) => !src.includes(`${join('bench', 'results')}`) });
  if (!existsSync(join(worktree, 'node_modules'))) symlinkSync(join(ROOT, 'node_modules'), join(worktree, 'node_modules'));
  const trees = { base: worktree, head: ROOT };
  const runs: Record<keyof typeof trees, Metrics[]> = { base: [], head: [] };
  for (let round = 1; round <= rounds; round++) {
    // Base first in odd rounds, head first in even ones: the second run of a pair was slower, by up
    // to a fifth, even with the same commit on both sides (an A/A run, docs/BENCHMARKS.md, seventeenth
    // pass), so a fixed order would charge that to the head.
    for (const name of round % 2 === 1 ? (['base', 'head'] as const) : (['head', 'base'] as const)) {
      execFileSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--only', scenario, '--systems', 'ours', '--wait-quiet', '5'], {
        cwd: trees[name],
        env: { ...process.env, BENCH_DB: process.env.BENCH_DB ?? 'chat_bench_ab' },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      const m = metricsOf(trees[name]);
      runs[name].push(m);
      console.log(`round ${round} ${name.padEnd(4)} ${Object.entries(m).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    }
  }
  console.log(`\nmeans of ${rounds} rounds (${scenario}; base ${base}, head = this tree):`);
  for (const key of Object.keys(runs.head[0] ?? {})) {
    const mean = (ms: Metrics[]) => {
      const vs = ms.map((m) => m[key]).filter((v): v is number => v !== null);
      return vs.length ? +(vs.reduce((a, b) => a + b, 0) / vs.length).toFixed(1) : null;
    };
    const range = (ms: Metrics[]) => {
      const vs = ms.map((m) => m[key]).filter((v): v is number => v !== null);
      return vs.length ? `${Math.min(...vs)}..${Math.max(...vs)}` : '-';
    };
    const b = mean(runs.base);
    const h = mean(runs.head);
    // Each round's head/base: the two runs of a round are minutes apart, the rounds may be far more
    // (a shared machine's speed drifts over tens of minutes), so their median is steadier than the
    // ratio of the means.
    const paired = runs.head
      .map((m, i) => [m[key], runs.base[i]?.[key]] as const)
      .filter((x): x is readonly [number, number] => typeof x[0] === 'number' && typeof x[1] === 'number' && x[1] !== 0)
      .map(([hv, bv]) => hv / bv)
      .sort((x, y) => x - y);
    const median = paired.length ? paired[(paired.length - 1) >> 1]! / 2 + paired[paired.length >> 1]! / 2 : null;
    // The range of each tree's rounds next to its mean: a ratio inside the spread decides nothing.
    console.log(
      `  ${key.padEnd(28)} base ${String(b).padStart(9)} (${range(runs.base)})  head ${String(h).padStart(9)} (${range(runs.head)})${b && h ? `  head/base ${(h / b).toFixed(2)}` : ''}${median !== null ? `  per round ${paired.map((r) => r.toFixed(2)).join(' ')}, median ${median.toFixed(2)}` : ''}`,
    );
  }
} finally {
  execFileSync('git', ['worktree', 'remove', '--force', worktree], { cwd: ROOT, stdio: 'ignore' });
}
