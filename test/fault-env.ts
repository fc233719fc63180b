/**
 * Private infrastructure for fault tests: a Redis server and a PostgreSQL cluster that belong to one
 * test file, on free loopback ports, so a test can kill and restart them without touching the
 * machine's shared services (127.0.0.1:5432 / :6379) that other test files use in parallel.
 *
 *   const env = new FaultEnv();           // afterAll(() => dispose(env))
 *   const redis = await env.redis();      // redis-server child; kill() / start() on the same port
 *   const pg = await env.postgres();      // initdb + pg_ctl in a temp dir; stop('immediate') / start()
 *
 * Cleanup runs in afterAll and, as a last resort, synchronously when the test worker exits.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { freePort } from './fixture/tools.js';
import { within } from './fixture/wait.js';

/** What differs for a cluster node or a sentinel (test/fixture/redis-topologies.ts). */
export interface PrivateRedisOptions {
  /** Arguments after the defaults (or, with `config`, after the config file). */
  args?: string[];
  /** A config file to start from (sentinels need one they can rewrite). */
  config?: string;
  /** Working directory (cluster nodes write their nodes-<port>.conf there). */
  cwd?: string;
}

/** A redis-server child process on a fixed port; can be SIGKILLed and started again on that port. */
export class PrivateRedis {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  readonly output: string[] = [];
  /** How many times the server was (re)started. */
  starts = 0;

  constructor(
    readonly port: number,
    private readonly opts: PrivateRedisOptions = {},
  ) {}

  /** The process id while it runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.child !== null;
  }

  /**
   * A private redis-server on a free port, started. A free port is only free when asked: another
   * test file may bind it (or a cluster node's bus port, port + 10000) before redis-server does, so
   * "Address already in use" is retried on another port.
   */
  static async startOnFreePort(optsFor: (port: number) => PrivateRedisOptions = () => ({}), attempts = 5): Promise<PrivateRedis> {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const r = new PrivateRedis(port, optsFor(port));
      try {
        await r.start();
        return r;
      } catch (err) {
        if (attempt >= attempts || !/Address already in use/.test(String(err))) throw err;
      }
    }
  }

  /** Starts redis-server and resolves once it logs that it accepts connections. */
  async start(timeoutMs = 15_000): Promise<void> {
    if (this.child) throw new Error('private redis already running');
    const base = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'notice'];
    const child = spawn('redis-server', [...(this.opts.config ? [this.opts.config] : []), ...base, ...(this.opts.args ?? [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: this.opts.cwd,
    });
    this.child = child;
    live.redis.add(child);
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        live.redis.delete(child);
        if (this.child === child) this.child = null;
        resolve();
      });
    });
    const ready = new Promise<void>((resolve, reject) => {
      const onLine = (line: string) => {
        this.output.push(line);
        if (this.output.length > 200) this.output.shift();
        if (/Ready to accept connections|\+monitor master/i.test(line)) resolve();
      };
      createInterface({ input: child.stdout! }).on('line', onLine);
      createInterface({ input: child.stderr! }).on('line', onLine);
      child.once('error', reject);
      void this.exited.then(() => reject(new Error(`redis-server exited before it was ready:\n${this.output.join('\n')}`)));
    });
    try {
      await within(ready, timeoutMs, `redis-server on port ${this.port}`);
    } catch (err) {
      await this.kill();
      throw err;
    }
    this.starts++;
  }

  /** SIGKILL (no shutdown, no goodbye to clients) and wait for the exit. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill('SIGKILL');
    await within(this.exited, 10_000, 'redis-server exit');
  }
}

const PG_BIN_ROOT = '/usr/lib/postgresql';

function pgBin(name: string): string {
  const fromEnv = process.env.PG_BIN_DIR;
  if (fromEnv) return join(fromEnv, name);
  if (!existsSync(PG_BIN_ROOT)) throw new Error(`no PostgreSQL binaries under ${PG_BIN_ROOT} (set PG_BIN_DIR)`);
  const versions = readdirSync(PG_BIN_ROOT)
    .filter((v) => existsSync(join(PG_BIN_ROOT, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  if (!versions.length) throw new Error(`no initdb under ${PG_BIN_ROOT}/*/bin`);
  return join(PG_BIN_ROOT, versions[0]!, 'bin', name);
}

/** initdb refuses to run as root: then the cluster belongs to the `postgres` OS user. */
function runAs(): { prefix: string[]; uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  return { prefix: ['runuser', '-u', 'postgres', '--'], uid, gid };
}

function run(cmd: string[], what: string, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${what} failed (code ${code}, signal ${signal}):\n${out}`));
    });
  });
}

/** A PostgreSQL cluster of its own in a temp dir, managed with initdb/pg_ctl. */
export class PrivatePostgres {
  running = false;
  /** How many times the server was (re)started. */
  starts = 0;

  private constructor(
    readonly dir: string,
    /** Fixed once the server first started (restarts reuse it); see `firstStart`. */
    public port: number,
    private readonly as: ReturnType<typeof runAs>,
  ) {}

  /**
   * The first start, on another free port when the one taken was bound meanwhile: a free port is
   * only free when asked, and another test file may bind it before the server does (as for the
   * private Redis servers, `PrivateRedis.startOnFreePort`).
   */
  private async firstStart(attempts = 5): Promise<void> {
    const log = (): string => {
      try {
        return readFileSync(join(this.dir, 'log'), 'utf8');
      } catch {
        return '';
      }
    };
    for (let attempt = 1; ; attempt++) {
      const before = log().length;
      try {
        await this.start();
        return;
      } catch (err) {
        // This attempt's lines only (the log is appended to).
        if (attempt >= attempts || !/Address already in use/.test(log().slice(before))) throw err;
        this.port = await freePort();
      }
    }
  }

  /** initdb in a fresh temp dir (about 2 s), then start. */
  static async create(): Promise<PrivatePostgres> {
    const as = runAs();
    const dir = mkdtempSync(join(tmpdir(), 'chat-fault-pg-'));
    live.dirs.add(dir);
    if (as) chownSync(dir, as.uid, as.gid);
    const port = await freePort();
    const pgc = new PrivatePostgres(dir, port, as);
    live.pg.add(pgc);
    try {
      await run(
        [...(as?.prefix ?? []), pgBin('initdb'), '-D', pgc.dataDir, '-U', 'postgres', '--auth=trust', '-N', '-E', 'UTF8', '--locale=C'],
        'initdb',
      );
      await pgc.firstStart();
    } catch (err) {
      await pgc.destroy().catch(() => undefined);
      throw err;
    }
    return pgc;
  }

  get dataDir(): string {
    return join(this.dir, 'data');
  }

  /** The URL of a database of this cluster (default: `postgres`). */
  url(database = 'postgres'): string {
    return `postgresql://postgres@127.0.0.1:${this.port}/${database}`;
  }

  private ctl(args: string[]): string[] {
    return [...(this.as?.prefix ?? []), pgBin('pg_ctl'), '-D', this.dataDir, ...args];
  }

  /**
   * A streaming standby of this cluster (hot standby, read-only): `pg_basebackup -R -X stream` into a
   * temp dir of its own, started on a port of its own. The defaults of initdb already allow it
   * (wal_level replica, max_wal_senders 10, replication from 127.0.0.1 trusted).
   */
  async standby(): Promise<PrivatePostgres> {
    const dir = mkdtempSync(join(tmpdir(), 'chat-fault-pg-standby-'));
    live.dirs.add(dir);
    if (this.as) chownSync(dir, this.as.uid, this.as.gid);
    const s = new PrivatePostgres(dir, await freePort(), this.as);
    live.pg.add(s);
    try {
      await run(
        [...(this.as?.prefix ?? []), pgBin('pg_basebackup'), '-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-D', s.dataDir, '-R', '-X', 'stream', '-c', 'fast'],
        'pg_basebackup',
      );
      await s.firstStart();
    } catch (err) {
      await s.destroy().catch(() => undefined);
      throw err;
    }
    return s;
  }

  /** pg_ctl promote -w: a standby becomes a primary (returns once it accepts writes). */
  async promote(): Promise<void> {
    await run(this.ctl(['-w', '-t', '60', 'promote']), 'pg_ctl promote', 90_000);
  }

  /** pg_ctl start -w: returns once the server accepts connections. */
  async start(): Promise<void> {
    const opts = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
    await run(this.ctl(['-o', opts, '-l', join(this.dir, 'log'), '-w', '-t', '60', 'start']), 'pg_ctl start', 90_000);
    this.running = true;
    this.starts++;
  }

  /** pg_ctl stop: `immediate` is a crash of the server (no checkpoint, clients cut at once). */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await run(this.ctl(['-m', mode, '-w', '-t', '60', 'stop']), `pg_ctl stop -m ${mode}`, 90_000);
    this.running = false;
  }

  async createDatabase(name: string): Promise<string> {
    await this.sql('postgres', `create database ${name}`);
    return this.url(name);
  }

  /** Runs a statement on a database of this cluster (`$1` parameters) and returns the rows. */
  async sql<R = Record<string, unknown>>(database: string, text: string, params: unknown[] = []): Promise<R[]> {
    const c = new pg.Client({ connectionString: this.url(database) });
    await c.connect();
    try {
      return (await c.query(text, params)).rows as R[];
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** Stops the server (immediate) and removes its directory. */
  async destroy(): Promise<void> {
    live.pg.delete(this);
    try {
      if (this.running || existsSync(join(this.dataDir, 'postmaster.pid'))) await this.stop('immediate');
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
      live.dirs.delete(this.dir);
    }
  }

  /** Synchronous last resort (process exit). */
  destroySync(): void {
    if (existsSync(join(this.dataDir, 'postmaster.pid'))) {
      const cmd = this.ctl(['-m', 'immediate', '-w', '-t', '20', 'stop']);
      spawnSync(cmd[0]!, cmd.slice(1), { stdio: 'ignore', timeout: 30_000 });
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const live = { redis: new Set<ChildProcess>(), pg: new Set<PrivatePostgres>(), dirs: new Set<string>() };
process.once('exit', () => {
  for (const c of live.redis) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const p of live.pg) {
    try {
      p.destroySync();
    } catch {
      /* best effort */
    }
  }
  for (const d of live.dirs) rmSync(d, { recursive: true, force: true });
});

/** The private services of one test file; disposing it (or `cleanup()`) belongs in afterAll (it never throws). */
export class FaultEnv implements AsyncDisposable {
  private readonly redises: PrivateRedis[] = [];
  private readonly pgs: PrivatePostgres[] = [];

  async redis(opts: PrivateRedisOptions = {}): Promise<PrivateRedis> {
    const r = await PrivateRedis.startOnFreePort(() => opts);
    this.redises.push(r);
    return r;
  }

  async postgres(): Promise<PrivatePostgres> {
    const p = await PrivatePostgres.create();
    this.pgs.push(p);
    return p;
  }

  /** A streaming standby of `primary` (see PrivatePostgres.standby), cleaned up with the rest. */
  async standbyOf(primary: PrivatePostgres): Promise<PrivatePostgres> {
    const s = await primary.standby();
    this.pgs.push(s);
    return s;
  }

  /**
   * A private primary with database `db` and a streaming standby of it, timing each step into
   * `timings` (ms) for the test's set-up line.
   */
  async primaryWithStandby(db: string, timings: Record<string, number>): Promise<{ primary: PrivatePostgres; standby: PrivatePostgres }> {
    let t = performance.now();
    const lap = (what: string) => {
      timings[what] = Math.round(performance.now() - t);
      t = performance.now();
    };
    const primary = await this.postgres();
    await primary.createDatabase(db);
    lap('primary: initdb + start (ms)');
    const standby = await this.standbyOf(primary);
    lap('standby: pg_basebackup -R + start (ms)');
    return { primary, standby };
  }

  async cleanup(): Promise<void> {
    await Promise.allSettled([...this.redises.map((r) => r.kill()), ...this.pgs.map((p) => p.destroy())]);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.cleanup();
  }
}
