/**
 * `npx tsx bench/schedstat.ts [seconds]`: run next to a benchmark (`npm run bench -- --only sends`
 * in another shell). Once a second, for each kind of process of the run (ours: `dist/src/main.js`;
 * the peers; the load workers; the PostgreSQL backends of the benchmark database), the time its
 * threads ran and the time they waited for a core, in ms per second, from `/proc/<pid>/schedstat`.
 * What is left of the second the process slept: for PostgreSQL's backends during the sends that is
 * the time the database waited for the next statement (docs/BENCHMARKS.md, "twentieth pass").
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const seconds = Number(process.argv[2] ?? 120);
const db = process.env.BENCH_DB ?? 'chat_bench';

function kinds(): Map<number, string> {
  const out = new Map<number, string>();
  const ps = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' }).split('\n').slice(1);
  for (const line of ps) {
    const m = /^\s*(\d+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const [, pid, args] = m as unknown as [string, string, string];
    const kind = args.includes('postgres') && args.includes(db) ? 'postgres' : args.includes('dist/src/main.js') ? 'ours' : args.includes('socketio-server') || args.includes('ws-server') ? 'peer' : args.includes('bench/load/worker') ? 'load' : null;
    if (kind) out.set(Number(pid), kind);
  }
  return out;
}

/** Run and runqueue-wait nanoseconds of a process (all its threads), or null once it is gone. */
function sched(pid: number): [number, number] | null {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ').map(Number);
    return [run!, wait!];
  } catch {
    return null;
  }
}

const prev = new Map<number, [number, number]>();
const end = Date.now() + seconds * 1000;
while (Date.now() < end) {
  const totals = new Map<string, { run: number; wait: number; n: number }>();
  for (const [pid, kind] of kinds()) {
    const now = sched(pid);
    if (!now) continue;
    const before = prev.get(pid);
    prev.set(pid, now);
    if (!before) continue;
    const t = totals.get(kind) ?? { run: 0, wait: 0, n: 0 };
    t.run += now[0] - before[0];
    t.wait += now[1] - before[1];
    t.n++;
    totals.set(kind, t);
  }
  if (totals.size > 0) {
    const parts = [...totals].sort(([a], [b]) => a.localeCompare(b)).map(([k, t]) => `${k}: ran ${Math.round(t.run / 1e6)} waited ${Math.round(t.wait / 1e6)} ms (${t.n})`);
    console.log(`${new Date().toISOString().slice(11, 19)}  ${parts.join('  ')}`);
  }
  await new Promise((r) => setTimeout(r, 1000));
}
