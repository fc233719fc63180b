/**
 * The test fixture: every test file takes what it needs from here.
 *
 *   const env = await testEnv('label');          // a fresh PostgreSQL database + Redis prefix
 *   const srv = await env.startServer();          // createApp on them, listening on 127.0.0.1:0
 *   const node = await env.startNode('A');        // src/main.ts as a child process on them
 *   await using alice = clientFor(srv.url, 'alice');
 *   await env.sql('select ...', [param]);         // the test database, through `pg`
 *   await dispose(env);                           // servers and nodes closed, database and keys dropped
 *
 * `fileServer(label)` and `fileCluster(label)` do the usual set-up of a file (an env with one or
 * two servers, created in beforeAll and disposed in afterAll).
 *
 * Everything that holds a resource is disposable (`await using`, or `dispose(...)` in a hook). The
 * focused parts live in test/fixture/: waiting (wait.ts), clients and HS256 tokens (clients.ts),
 * subscriptions (streams.ts), raw WebSockets (raw-ws.ts), room set-ups (rooms.ts), the compliance
 * service with small pages (compliance.ts), delivery checks (delivery.ts), an identity provider's
 * key endpoint (jwks.ts), forced interleavings (locks.ts), small tools (tools.ts) and the names
 * taken from src/ (src.ts).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { TEST_PG_URL, TEST_REDIS_URL } from './env.js';
import { TEST_SECRET } from './fixture/clients.js';
import { dispose } from './fixture/wait.js';
import { createApp, createLogger, makeConfig, type App, type AppOptions, type Config } from './fixture/src.js';
import { spawnServer, type ServerProc, type SpawnOptions } from './proc.js';

export * from './fixture/append.js';
export * from './fixture/clients.js';
export * from './fixture/compliance.js';
export * from './fixture/delivery.js';
export * from './fixture/jwks.js';
export * from './fixture/locks.js';
export * from './fixture/raw-ws.js';
export * from './fixture/push.js';
export * from './fixture/rooms.js';
export * from './fixture/src.js';
export * from './fixture/streams.js';
export * from './fixture/tools.js';
export * from './fixture/wait.js';
export * from './fixture/webhooks.js';
export { TEST_PG_URL, TEST_REDIS_URL } from './env.js';
export { FaultEnv, type PrivatePostgres, type PrivateRedis } from './fault-env.js';
export { PROJECT_ROOT, ProcGroup, type ServerProc, type SpawnOptions } from './proc.js';

/** Functional tests act far faster than people: per-user limits are lifted unless a test sets them. */
export const TEST_LIMITS: Config['limits'] = {
  ...makeConfig().limits,
  sendPerSecond: 100_000,
  sendBurst: 100_000,
  typingPer10s: 100_000,
  signalsPer10s: 100_000,
  roomCreatesPerMinute: 100_000,
  actionsPer10s: 100_000,
  readsPer10s: 100_000,
  connectAttemptsPerIpPerMinute: 100_000,
  connectionsPerUser: 1000,
};

/** Token verification of test servers: HS256 with TEST_SECRET, no issuer or audience, default claims. */
export const TEST_AUTH: Config['auth'] = { ...makeConfig().auth, jwtSecret: TEST_SECRET, jwtSecretIsDev: false };

/** What a test changes of the config: `auth` and `limits` are merged into the test defaults field by field. */
export type ConfigOverrides = Omit<Partial<Config>, 'auth' | 'limits'> & { auth?: Partial<Config['auth']>; limits?: Partial<Config['limits']> };

export function testConfig(overrides: ConfigOverrides = {}): Config {
  return makeConfig({
    port: 0,
    host: '127.0.0.1',
    logLevel: 'silent',
    shutdownTimeoutMs: 5000,
    ...overrides,
    auth: { ...TEST_AUTH, ...overrides.auth },
    limits: { ...TEST_LIMITS, ...overrides.limits },
  });
}

/** A Redis channel/key prefix of its own. */
export function testPrefix(label: string): string {
  return `test:${label}:${randomBytes(4).toString('hex')}:`;
}

/** An in-process server (src/app.ts) listening on 127.0.0.1. `close()` may be called more than once. */
export interface TestServer extends AsyncDisposable {
  app: App;
  url: string;
  config: Config;
  close(): Promise<void>;
}

/** Starts a server on `config` (silent logs unless `opts.log` is given). */
export async function startServer(config: Config, opts: AppOptions = {}): Promise<TestServer> {
  const app = await createApp(config, { log: createLogger('silent'), ...opts });
  const url = await app.listen();
  let closing: Promise<void> | null = null;
  const close = () => (closing ??= app.close());
  return { app, url, config, close, [Symbol.asyncDispose]: close };
}

/** A server process (`node --import tsx src/main.ts`) that is SIGKILLed when disposed. */
export function startNode(opts: SpawnOptions): Promise<ServerProc> {
  return spawnServer(opts);
}

/** Deletes every Redis key under the given prefixes. */
export async function dropRedisPrefixes(url: string, prefixes: string[]): Promise<number> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  let n = 0;
  try {
    for (const prefix of prefixes) {
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
        cursor = next;
        if (keys.length) n += await redis.del(...keys);
      } while (cursor !== '0');
    }
  } finally {
    redis.disconnect();
  }
  return n;
}

/**
 * The world of one test file: a fresh PostgreSQL database and a Redis prefix. Servers and nodes
 * started through it are closed when it is disposed; then the database is dropped and the keys
 * under its prefixes are deleted.
 */
export interface TestEnv extends AsyncDisposable {
  readonly label: string;
  readonly databaseUrl: string;
  readonly redisUrl: string;
  /** The env's Redis prefix (servers share it, and so their bus and limits, unless told otherwise). */
  readonly redisPrefix: string;
  /** Another Redis prefix, for a server that must not share the bus or the limits; dropped with the env. */
  prefix(label: string): string;
  /** A config on this database and prefix, with `overrides`. */
  config(overrides?: ConfigOverrides): Config;
  /** An in-process server on this env. Start the first one alone: it applies the migrations. */
  startServer(overrides?: ConfigOverrides, opts?: AppOptions): Promise<TestServer>;
  /** The environment variables of a server process on this env, with `extra`. */
  nodeEnv(extra?: Record<string, string>): Record<string, string>;
  /** A server process on this env. */
  startNode(label: string, extra?: Record<string, string>, opts?: Omit<SpawnOptions, 'label' | 'env'>): Promise<ServerProc>;
  /** Runs a statement on the test database (`$1` parameters) and returns the rows. */
  sql<R = Record<string, unknown>>(text: string, params?: unknown[]): Promise<R[]>;
}

/** A fresh database and Redis prefix named after `label`. */
export async function testEnv(label: string): Promise<TestEnv> {
  const name = `chat_t_${label.replace(/\W/g, '_').slice(0, 20)}_${randomBytes(4).toString('hex')}`.toLowerCase();
  const admin = async (statement: string) => {
    const c = new pg.Client({ connectionString: TEST_PG_URL });
    await c.connect();
    try {
      await c.query(statement);
    } finally {
      await c.end();
    }
  };
  await admin(`create database ${name}`);
  const url = new URL(TEST_PG_URL);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();
  const prefixes = [testPrefix(label)];
  const held: AsyncDisposable[] = [];
  let pool: pg.Pool | null = null;
  const hold = <T extends AsyncDisposable>(x: T): T => {
    held.push(x);
    return x;
  };

  const env: TestEnv = {
    label,
    databaseUrl,
    redisUrl: TEST_REDIS_URL,
    redisPrefix: prefixes[0]!,
    prefix(l) {
      const p = testPrefix(l);
      prefixes.push(p);
      return p;
    },
    config: (overrides = {}) => testConfig({ databaseUrl, redisUrl: TEST_REDIS_URL, redisPrefix: env.redisPrefix, ...overrides }),
    startServer: async (overrides, opts) => hold(await startServer(env.config(overrides), opts)),
    nodeEnv: (extra = {}) => ({
      DATABASE_URL: databaseUrl,
      REDIS_URL: TEST_REDIS_URL,
      REDIS_PREFIX: env.redisPrefix,
      JWT_SECRET: TEST_SECRET,
      PORT: '0',
      HOST: '127.0.0.1',
      // The URL of a process is read from its "listening" log line.
      LOG_LEVEL: 'info',
      ...extra,
    }),
    startNode: async (nodeLabel, extra, opts = {}) => hold(await startNode({ ...opts, label: nodeLabel, env: env.nodeEnv(extra) })),
    async sql(text, params = []) {
      if (!pool) {
        pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
        // pool.end() resolves once its clients are asked to end, not when their sockets are closed:
        // the database drop at dispose may terminate one still closing. Its error reaches the client
        // and, through the listener pg-pool leaves on idle clients, the pool: both are ignored here.
        pool.on('connect', (client) => client.on('error', () => undefined));
        pool.on('error', () => undefined);
      }
      return (await pool.query(text, params)).rows;
    },
    async [Symbol.asyncDispose]() {
      const closed = await Promise.allSettled(held.splice(0).map((x) => x[Symbol.asyncDispose]()));
      await pool?.end();
      await admin(`drop database if exists ${name} with (force)`);
      await dropRedisPrefixes(TEST_REDIS_URL, prefixes);
      const failed = closed.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    },
  };
  return env;
}

/** Registers beforeAll/afterAll for an env with `count` servers (started one after the other: the first migrates). */
function forFile(label: string, count: number, overrides: ConfigOverrides, opts: AppOptions) {
  let env: TestEnv | undefined;
  const servers: TestServer[] = [];
  beforeAll(async () => {
    env = await testEnv(label);
    for (let i = 0; i < count; i++) servers.push(await env.startServer(overrides, opts));
  });
  afterAll(() => dispose(env));
  const need = <T>(x: T | undefined): T => {
    if (x === undefined) throw new Error(`${label}: the file's environment exists from beforeAll on`);
    return x;
  };
  return { env: () => need(env), server: (i: number) => need(servers[i]) };
}

/** The env of the file and its one server (readable from beforeAll on). */
export function fileServer(label: string, overrides: ConfigOverrides = {}, opts: AppOptions = {}): TestServer & { readonly env: TestEnv } {
  const f = forFile(label, 1, overrides, opts);
  return {
    get env() {
      return f.env();
    },
    get app() {
      return f.server(0).app;
    },
    get url() {
      return f.server(0).url;
    },
    get config() {
      return f.server(0).config;
    },
    close: () => f.server(0).close(),
    [Symbol.asyncDispose]: () => f.server(0).close(),
  };
}

/** The env of the file and two servers on it that share its database and Redis prefix (readable from beforeAll on). */
export function fileCluster(label: string, overrides: ConfigOverrides = {}): { readonly env: TestEnv; readonly a: TestServer; readonly b: TestServer } {
  const f = forFile(label, 2, overrides, {});
  return {
    get env() {
      return f.env();
    },
    get a() {
      return f.server(0);
    },
    get b() {
      return f.server(1);
    },
  };
}
