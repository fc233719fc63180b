/**
 * A CPU quota for one process (cgroup v1, `/sys/fs/cgroup/cpu`): on a 2-core machine a second node
 * has no core of its own, so scale-out is measured with every node capped at the same fraction of a
 * CPU (`cpu.cfs_quota_us` / `cpu.cfs_period_us`), the load generator, PostgreSQL and Redis outside
 * the quota. Needs root (or a writable cpu hierarchy); the group is removed when the process exits.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';

const ROOT = '/sys/fs/cgroup/cpu';
/**
 * The quota's period: 100 ms, the kernel's and Kubernetes' default (a node capped at 0.25 CPU runs up
 * to 25 ms of each 100). `BENCH_CFS_PERIOD_US` sets another (10 ms was measured against it: no
 * difference in the scale-out speedups beyond the run-to-run spread, docs/BENCHMARKS.md tenth pass).
 */
const PERIOD_US = Number(process.env.BENCH_CFS_PERIOD_US ?? 100_000);

/** Puts `child` (all its threads) into a new cgroup limited to `cpus` CPUs; throws when it cannot. */
export function capCpu(child: ChildProcess, cpus: number, name: string): string {
  if (!existsSync(join(ROOT, 'cgroup.procs'))) throw new Error(`no cgroup v1 cpu hierarchy at ${ROOT}: cannot cap a node's CPU`);
  if (!child.pid) throw new Error('the process has no pid');
  const dir = join(ROOT, `bench-${name.replace(/\W/g, '_')}-${child.pid}`);
  mkdirSync(dir);
  writeFileSync(join(dir, 'cpu.cfs_period_us'), String(PERIOD_US));
  writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(Math.round(cpus * PERIOD_US)));
  writeFileSync(join(dir, 'cgroup.procs'), String(child.pid));
  const inside = readFileSync(join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
  if (!inside.includes(String(child.pid))) throw new Error(`process ${child.pid} did not move into ${dir}`);
  // An empty group can be removed; the process leaves it when it exits.
  child.once('exit', () => {
    try {
      rmdirSync(dir);
    } catch {
      // Still busy for a moment after the exit: the next run's names differ (pid), so it does no harm.
    }
  });
  return dir;
}

/**
 * How long the cgroup of `pid` has been throttled (its quota used up, runnable but not run), µs; null
 * when the process is in no cpu cgroup of its own (not capped). From `cpu.stat`'s `throttled_time`.
 */
export function throttledUs(pid: number): number | null {
  let rel: string | undefined;
  try {
    rel = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
      .split('\n')
      .map((l) => l.split(':'))
      .find((f) => f[1]?.split(',').includes('cpu'))?.[2];
  } catch {
    return null;
  }
  if (!rel || rel === '/') return null;
  try {
    const m = /^throttled_time (\d+)$/m.exec(readFileSync(join(ROOT, rel, 'cpu.stat'), 'utf8'));
    return m ? Number(m[1]) / 1000 : null;
  } catch {
    return null;
  }
}
