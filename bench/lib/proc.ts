/**
 * Child processes of a bench run (servers and load workers). Every process is started through
 * `bash -c 'ulimit -n 65536; exec node ...'` (so it may hold 10,000 sockets and its pid is node's),
 * remembered, and killed when the run ends, however it ends: `killAll()` in the normal path, and
 * a synchronous SIGKILL of every survivor on process exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';

export const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');

const live = new Set<Proc>();
process.once('exit', () => {
  for (const p of live) {
    try {
      p.child.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

export interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly output: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  alive: boolean;
  /** Sends `signal`, waits up to `timeoutMs` for the exit, then SIGKILLs. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<void>;
}

export interface SpawnOpts {
  name: string;
  /** Arguments after `node`. */
  args: string[];
  env: Record<string, string>;
  ipc?: boolean;
  /** Print each output line as it comes (workers' stderr, for example). */
  echo?: boolean;
  keepLines?: number;
}

const ULIMIT = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"';

export function spawnNode(o: SpawnOpts): Proc {
  const child = spawn('bash', ['-c', ULIMIT, process.execPath, ...o.args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...o.env },
    stdio: ['ignore', 'pipe', 'pipe', ...(o.ipc ? (['ipc'] as const) : [])],
  });
  const keep = o.keepLines ?? 200;
  const output: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once('exit', (code, signal) => {
      proc.alive = false;
      live.delete(proc);
      res({ code, signal });
    });
  });
  child.once('error', (err) => output.push(`[spawn error] ${err.message}`));
  const onLine = (stream: string) => (line: string) => {
    output.push(`[${o.name} ${stream}] ${line}`);
    if (output.length > keep) output.splice(0, output.length - keep);
    if (o.echo || process.env.BENCH_ECHO === "1") console.error(`[${o.name}] ${line}`);
  };
  createInterface({ input: child.stdout! }).on('line', onLine('out'));
  createInterface({ input: child.stderr! }).on('line', onLine('err'));
  const proc: Proc = {
    name: o.name,
    child,
    pid: child.pid ?? -1,
    output,
    exited,
    alive: true,
    async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000) {
      if (!proc.alive) return;
      try {
        child.kill(signal);
      } catch {
        /* gone */
      }
      let t: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => (t = setTimeout(() => r(true), timeoutMs)))]);
      clearTimeout(t);
      if (timedOut && proc.alive) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
  live.add(proc);
  return proc;
}

/** SIGKILLs every process still alive and waits for them. */
export async function killAll(): Promise<void> {
  await Promise.allSettled([...live].map((p) => p.stop('SIGKILL', 5000)));
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => res(port));
    });
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls GET url until it answers 200, the process dies, or the time is up. */
export async function waitHealthy(url: string, proc: Proc, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!proc.alive) throw new Error(`${proc.name} exited before it was healthy\n${proc.output.slice(-30).join('\n')}`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (r.ok) return;
    } catch {
      /* not yet */
    }
    await sleep(50);
  }
  throw new Error(`${proc.name}: not healthy within ${timeoutMs} ms\n${proc.output.slice(-30).join('\n')}`);
}

/** Deletes the keys a run left in Redis under its prefix (bounded SCAN). */
export async function cleanRedis(url: string, prefix: string): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await r.connect();
    let cursor = '0';
    let rounds = 0;
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      if (keys.length) await r.del(...keys);
      cursor = next;
    } while (cursor !== '0' && ++rounds < 10_000);
  } finally {
    r.disconnect();
  }
}
