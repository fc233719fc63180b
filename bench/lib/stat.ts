/**
 * CPU time and memory of processes, read from /proc (Linux): utime + stime of /proc/<pid>/stat
 * (all threads of the process) and VmRSS of /proc/<pid>/status.
 */
import { execSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { nowUs } from './clock.js';
import { throttledUs } from './cgroup.js';

const CLK_TCK = (() => {
  try {
    return Number(execSync('getconf CLK_TCK').toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

/**
 * A `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`) line: the command name and its user and
 * system CPU time in µs. After "pid (comm) ", field 3 (state) is f[0]; utime (14) is f[11], stime (15) f[12].
 */
function statTimes(line: string): { name: string; userUs: number; sysUs: number } {
  const close = line.lastIndexOf(')');
  const f = line.slice(close + 2).split(' ');
  return { name: line.slice(line.indexOf('(') + 1, close), userUs: (Number(f[11]) * 1e6) / CLK_TCK, sysUs: (Number(f[12]) * 1e6) / CLK_TCK };
}

/** CPU time (user + system) of a process in µs, or null when it is gone. */
export function cpuUs(pid: number): number | null {
  try {
    const t = statTimes(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return t.userUs + t.sysUs;
  } catch {
    return null;
  }
}

/**
 * CPU time per thread kind of a process, µs: the main thread's user and system time apart, the
 * other threads summed by name (`V8Worker`: GC and compiler helpers; `libuv-worker`: the thread
 * pool; node's own). Empty when the process is gone.
 */
export function threadCpuUs(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  const add = (k: string, us: number) => out.set(k, (out.get(k) ?? 0) + us);
  for (const tid of tids) {
    try {
      const t = statTimes(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
      if (tid === String(pid)) {
        add('main user', t.userUs);
        add('main system', t.sysUs);
      } else {
        add(t.name.replace(/[\d-]+$/, '') || 'thread', t.userUs + t.sysUs);
      }
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** Resident set size in KiB, or null when the process is gone. */
export function rssKb(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * System calls of a process that read and wrote (/proc/<pid>/io `syscr`, `syscw`: all its threads),
 * or zeros when it is gone. A socket write on loopback also runs the receiver's TCP path and wakes
 * it, so writes are what a message costs beyond its JavaScript.
 */
export function ioSyscalls(pid: number): { reads: number; writes: number } {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    return { reads: Number(/^syscr:\s+(\d+)/m.exec(io)?.[1] ?? 0), writes: Number(/^syscw:\s+(\d+)/m.exec(io)?.[1] ?? 0) };
  } catch {
    return { reads: 0, writes: 0 };
  }
}

/**
 * The PostgreSQL backends serving database `db` (their process title is `postgres: <cluster>:
 * <user> <db> <client> <state>`), each with its CPU µs so far.
 */
export function backendsOf(db: string): Map<number, number> {
  const out = new Map<number, number>();
  const title = new RegExp(`^postgres: [^:]*: \\S+ ${db.replace(/[^A-Za-z0-9_]/g, '')} `);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!title.test(cmd)) continue;
    const us = cpuUs(Number(name));
    if (us !== null) out.set(Number(name), us);
  }
  return out;
}

/** Busy and total jiffies of the whole machine (/proc/stat). */
function machineJiffies(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

export interface Window {
  wallUs: number;
  /** CPU µs of the server processes over the window. */
  cpuUs: number;
  /** Each server's CPU over the window, in the order given, 100 = one core (which node of several is the busy one). */
  cpuPctByServer: number[];
  /**
   * Each capped server's share of the window spent throttled (its CPU quota used up while it had work:
   * bench/lib/cgroup.ts), %; null for a server without a quota. A node throttled much longer than the
   * others is the one that limits a multi-node phase.
   */
  throttledPctByServer: (number | null)[];
  /** 100 = one core fully busy. */
  cpuPct: number;
  /** Highest RSS sum of the server processes sampled during the window, MiB. */
  rssMb: number;
  /** CPU of the load workers, 100 = one core. */
  loadCpuPct: number;
  /** The whole machine's CPU use over the window, 100 = every core busy. */
  machineCpuPct: number;
  /** The servers' CPU µs over the window per thread kind (`threadCpuUs`). */
  threadsUs: Record<string, number>;
  /** Read and write system calls of the server processes over the window (ioSyscalls). */
  readCalls: number;
  writeCalls: number;
  /** Each server's write system calls over the window, in the order given (a node that writes more per delivery coalesces less). */
  writeCallsByServer: number[];
  /**
   * CPU µs of the PostgreSQL backends of the benchmark database over the window (`backendsOf`: the
   * backends at the window's end, less what those open at its start had used before it).
   */
  dbCpuUs: number;
}

/** Samples server (and load worker) processes over a window: CPU at both ends, RSS every 200 ms. */
export class Sampler {
  private t0 = 0;
  private cpuByServer0: number[] = [];
  private throttled0: (number | null)[] = [];
  private load0 = 0;
  private m0 = { busy: 0, total: 0 };
  private io0 = { reads: 0, writes: 0, writesByServer: [] as number[] };
  private rssMax = 0;
  private timer: NodeJS.Timeout | null = null;
  private db0 = new Map<number, number>();
  private threads0 = new Map<string, number>();

  constructor(
    private readonly servers: number[],
    private readonly workers: number[],
    /** The benchmark database, whose backends' CPU the window also counts. */
    private readonly db: string | null = null,
  ) {}

  private sum(pids: number[]) {
    return pids.reduce((a, p) => a + (cpuUs(p) ?? 0), 0);
  }

  private threads() {
    const out = new Map<string, number>();
    for (const p of this.servers) for (const [k, us] of threadCpuUs(p)) out.set(k, (out.get(k) ?? 0) + us);
    return out;
  }

  /** Each server's read and write system calls so far, and their sums. */
  private io() {
    const byServer = this.servers.map(ioSyscalls);
    return { reads: byServer.reduce((a, x) => a + x.reads, 0), writes: byServer.reduce((a, x) => a + x.writes, 0), writesByServer: byServer.map((x) => x.writes) };
  }

  private sampleRss() {
    const r = this.servers.reduce((a, p) => a + (rssKb(p) ?? 0), 0);
    if (r > this.rssMax) this.rssMax = r;
  }

  start(): this {
    this.t0 = nowUs();
    this.cpuByServer0 = this.servers.map((p) => cpuUs(p) ?? 0);
    this.throttled0 = this.servers.map(throttledUs);
    this.load0 = this.sum(this.workers);
    this.m0 = machineJiffies();
    this.io0 = this.io();
    this.threads0 = this.threads();
    this.db0 = this.db ? backendsOf(this.db) : new Map();
    this.rssMax = 0;
    this.sampleRss();
    this.timer = setInterval(() => this.sampleRss(), 200);
    return this;
  }

  stop(): Window {
    if (this.timer) clearInterval(this.timer);
    this.sampleRss();
    const wallUs = Math.max(1, nowUs() - this.t0);
    const byServer = this.servers.map((p, i) => (cpuUs(p) ?? 0) - (this.cpuByServer0[i] ?? 0));
    const cpu = byServer.reduce((a, b) => a + b, 0);
    const throttledPctByServer = this.servers.map((p, i) => {
      const t0 = this.throttled0[i];
      const t1 = throttledUs(p);
      return t0 == null || t1 == null ? null : Math.round((1000 * (t1 - t0)) / wallUs) / 10;
    });
    const load = this.sum(this.workers) - this.load0;
    const m = machineJiffies();
    const mt = m.total - this.m0.total;
    const io = this.io();
    const threadsUs: Record<string, number> = {};
    for (const [k, us] of this.threads()) {
      const d = us - (this.threads0.get(k) ?? 0);
      if (d > 0) threadsUs[k] = Math.round(d);
    }
    let dbCpuUs = 0;
    if (this.db) for (const [pid, us] of backendsOf(this.db)) dbCpuUs += us - (this.db0.get(pid) ?? 0);
    return {
      threadsUs,
      dbCpuUs,
      readCalls: io.reads - this.io0.reads,
      writeCalls: io.writes - this.io0.writes,
      writeCallsByServer: io.writesByServer.map((w, i) => w - (this.io0.writesByServer[i] ?? 0)),
      wallUs,
      cpuUs: cpu,
      cpuPct: (100 * cpu) / wallUs,
      cpuPctByServer: byServer.map((us) => Math.round((1000 * us) / wallUs) / 10),
      throttledPctByServer,
      rssMb: this.rssMax / 1024,
      loadCpuPct: (100 * load) / wallUs,
      machineCpuPct: mt > 0 ? (100 * (m.busy - this.m0.busy)) / mt : 0,
    };
  }
}

/** Samples in a row that `settle` wants under its threshold (the quick bench takes one). */
export const settleOptions = { samples: 2 };

/** Waits until the servers' CPU stays under `pct` (of one core) for `settleOptions.samples` 250 ms samples in a row. */
export async function settle(pids: number[], pct = 5, maxMs = 20_000): Promise<number> {
  const t0 = Date.now();
  let quiet = 0;
  let prev = pids.reduce((a, p) => a + (cpuUs(p) ?? 0), 0);
  let prevT = nowUs();
  while (Date.now() - t0 < maxMs) {
    await new Promise((r) => setTimeout(r, 250));
    const cur = pids.reduce((a, p) => a + (cpuUs(p) ?? 0), 0);
    const t = nowUs();
    const used = (100 * (cur - prev)) / Math.max(1, t - prevT);
    prev = cur;
    prevT = t;
    quiet = used < pct ? quiet + 1 : 0;
    if (quiet >= settleOptions.samples) break;
  }
  return Date.now() - t0;
}

/** The machine's CPU use (100 = every core busy) over `ms`. */
export async function machineBusyPct(ms = 1000): Promise<number> {
  const a = machineJiffies();
  await new Promise((r) => setTimeout(r, ms));
  const b = machineJiffies();
  const total = b.total - a.total;
  return total > 0 ? (100 * (b.busy - a.busy)) / total : 0;
}

/**
 * Waits (at most `maxMs`) until the machine is quiet: under `pct` busy for three 1 s samples in a
 * row. Returns the last samples, which the report keeps (the machine is shared).
 */
export async function waitQuiet(maxMs: number, pct = 30): Promise<{ waitedMs: number; busyPct: number[] }> {
  const t0 = Date.now();
  const last: number[] = [];
  do {
    last.push(Math.round(await machineBusyPct(1000)));
    if (last.length > 3) last.shift();
    if (last.length === 3 && last.every((v) => v < pct)) break;
  } while (Date.now() - t0 < maxMs);
  return { waitedMs: Date.now() - t0, busyPct: last };
}
