/**
 * Spawns chat server processes (src/main.ts as separate OS processes) for multi-process tests and
 * guarantees they are killed: disposing a process or a `ProcGroup` SIGKILLs it (test/fixture.ts
 * starts them through `env.startNode`), plus a synchronous SIGKILL of any survivor when the test
 * worker itself exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { killOnExit } from './fixture/reap.js';

/** Rate limits high enough that no functional test hits them. */
export const TEST_LIMITS_ENV: Record<string, string> = {
  RATE_SEND_PER_SECOND: '100000',
  RATE_SEND_BURST: '100000',
  RATE_TYPING_PER_10S: '100000',
  RATE_SIGNALS_PER_10S: '100000',
  RATE_ROOM_CREATES_PER_MINUTE: '100000',
  RATE_ACTIONS_PER_10S: '100000',
  RATE_READS_PER_10S: '100000',
  RATE_CONNECTS_PER_IP_PER_MINUTE: '100000',
  MAX_CONNECTIONS_PER_USER: '1000',
};

export const PROJECT_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..');

export interface ServerProc extends AsyncDisposable {
  readonly label: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** http://127.0.0.1:NNNN, parsed from the "listening" log line. */
  readonly url: string;
  /** The last lines of stdout and stderr (for failure messages). */
  readonly output: string[];
  /** Resolves when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly alive: boolean;
  /** Sends a signal and waits (bounded) for the process to exit. */
  kill(signal?: NodeJS.Signals, timeoutMs?: number): Promise<void>;
}

export interface SpawnOptions {
  label: string;
  /** Extra environment (merged over a minimal PATH/HOME environment; the test's env is not inherited). */
  env: Record<string, string>;
  /** How long to wait for the "listening" line. */
  startTimeoutMs?: number;
  /** How many output lines to keep. */
  keepLines?: number;
}

const URL_RE = /"url":"(http:\/\/[^"]+)"/;


/** Starts `node --import tsx src/main.ts` and resolves once it logs its URL. */
export function spawnServer(opts: SpawnOptions): Promise<ServerProc> {
  const keep = opts.keepLines ?? 200;
  const output: string[] = [];
  const remember = (line: string) => {
    output.push(line);
    if (output.length > keep) output.splice(0, output.length - keep);
  };
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: PROJECT_ROOT,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      // Load tests send far faster than a person: lift the per-user rate limits (tests of the
      // limits themselves set their own).
      ...TEST_LIMITS_ENV,
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  killOnExit(child);
  let exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      res(exitInfo);
    });
  });
  // An 'error' (e.g. spawn failure) also ends the process's life for our purposes.
  child.once('error', (err) => remember(`[spawn error] ${err.message}`));

  return new Promise<ServerProc>((resolveStart, rejectStart) => {
    let settled = false;
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (exitInfo === null) child.kill('SIGKILL');
      rejectStart(new Error(`${opts.label}: ${why}\n--- output ---\n${output.join('\n')}`));
    };
    const timer = setTimeout(() => fail(`no "listening" line within ${opts.startTimeoutMs ?? 30_000} ms`), opts.startTimeoutMs ?? 30_000);

    const onLine = (stream: string) => (line: string) => {
      remember(`[${opts.label} ${stream}] ${line}`);
      if (settled || stream !== 'out') return;
      const m = URL_RE.exec(line);
      if (!m) return;
      settled = true;
      clearTimeout(timer);
      const url = m[1]!;
      const proc: ServerProc = {
        label: opts.label,
        child,
        pid: child.pid!,
        url,
        output,
        exited,
        get alive() {
          return exitInfo === null;
        },
        async kill(signal: NodeJS.Signals = 'SIGKILL', timeoutMs = 10_000) {
          if (exitInfo !== null) return;
          child.kill(signal);
          let t: NodeJS.Timeout | undefined;
          const timedOut = await Promise.race([
            exited.then(() => false),
            new Promise<boolean>((r) => {
              t = setTimeout(() => r(true), timeoutMs);
            }),
          ]);
          clearTimeout(t);
          if (timedOut && exitInfo === null) {
            child.kill('SIGKILL');
            await exited;
          }
        },
        [Symbol.asyncDispose]: () => proc.kill('SIGKILL'),
      };
      resolveStart(proc);
    };
    // Both streams are drained for the whole life of the process (a full pipe would block it).
    createInterface({ input: child.stdout! }).on('line', onLine('out'));
    createInterface({ input: child.stderr! }).on('line', onLine('err'));
    void exited.then((info) => fail(`exited before listening (code ${info.code}, signal ${info.signal})`));
  });
}

/** The processes of one test file; disposing the group (or `killAll()`) belongs in afterAll. */
export class ProcGroup implements AsyncDisposable {
  readonly procs: ServerProc[] = [];
  private readonly starting = new Set<Promise<ServerProc>>();

  async spawn(opts: SpawnOptions): Promise<ServerProc> {
    const p = spawnServer(opts);
    this.starting.add(p);
    try {
      const proc = await p;
      this.procs.push(proc);
      return proc;
    } finally {
      this.starting.delete(p);
    }
  }

  /** SIGKILLs every process of the group (started or still starting) and waits for their exit. */
  async killAll(): Promise<void> {
    await Promise.allSettled([...this.starting]);
    await Promise.allSettled(this.procs.map((p) => p.kill('SIGKILL')));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.killAll();
  }
}
