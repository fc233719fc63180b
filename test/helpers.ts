import { randomBytes, randomUUID } from 'node:crypto';
import pg from 'pg';
import { createApp, type App } from '../src/app.js';
import { signToken } from '../src/auth/jwt.js';
import { makeConfig, type Config } from '../src/config.js';
import type { Actor } from '../src/domain/actor.js';
import { createLogger } from '../src/logger.js';
import { createCaller } from '../src/trpc/router.js';
import { createChatClient, type ChatClient } from '../client/index.js';
import { TEST_PG_URL, TEST_REDIS_URL } from './env.js';

export const TEST_SECRET = 'test-secret-0123456789abcdef-0123456789';

export const TEST_LIMITS: Config['limits'] = {
  ...makeConfig().limits,
  sendPerSecond: 100_000,
  sendBurst: 100_000,
  typingPer10s: 100_000,
  signalsPer10s: 100_000,
  roomCreatesPerMinute: 100_000,
  actionsPer10s: 100_000,
  connectAttemptsPerIpPerMinute: 100_000,
  connectionsPerUser: 1000,
};

/** A fresh PostgreSQL database for one test file; `drop()` removes it. */
export async function createTestDatabase(label: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `chat_t_${label.replace(/\W/g, '_').slice(0, 20)}_${randomBytes(4).toString('hex')}`.toLowerCase();
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(TEST_PG_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: TEST_PG_URL });
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}

/** A Redis channel/key prefix unique to one test file. */
export function testPrefix(label: string): string {
  return `test:${label}:${randomBytes(4).toString('hex')}:`;
}

export function testConfig(overrides: Partial<Config> = {}): Config {
  return makeConfig({
    port: 0,
    host: '127.0.0.1',
    jwtSecret: TEST_SECRET,
    jwtSecretIsDev: false,
    logLevel: 'silent',
    shutdownTimeoutMs: 5000,
    ...overrides,
    // Functional tests act far faster than people: per-user limits are lifted unless a test sets them.
    limits: { ...TEST_LIMITS, ...overrides.limits },
  });
}

export interface TestServer {
  app: App;
  url: string;
  close(): Promise<void>;
}

export async function startServer(config: Config): Promise<TestServer> {
  const app = await createApp(config, { log: createLogger('silent') });
  const url = await app.listen();
  return { app, url, close: () => app.close() };
}

export function tokenFor(
  userId: string,
  opts: { tenant?: string; roles?: string[]; name?: string; ttlSeconds?: number; secret?: string } = {},
): string {
  return signToken(
    { sub: userId, name: opts.name ?? userId, tenant: opts.tenant ?? 'default', roles: opts.roles ?? [] },
    opts.secret ?? TEST_SECRET,
    opts.ttlSeconds ?? 3600,
  );
}

export function actor(id: string, tenant = 'default', roles: string[] = []): Actor {
  return { id, name: id, tenant, roles };
}

/** A server-side caller acting as a user (router-level tests). */
export function callerFor(app: App, a: Actor | null) {
  return createCaller({ actor: a, authError: a ? null : 'missing access token', services: app.services });
}

export function clientFor(url: string, userId: string, opts: Parameters<typeof tokenFor>[1] = {}): ChatClient {
  return createChatClient({ url, token: tokenFor(userId, opts), retryDelayMs: () => 50 });
}

export const uuid = () => randomUUID();

/** A promise with its resolve/reject exposed. */
export function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Collects what a subscription delivers and lets a test wait for a condition on it
 * (event-driven: resolves as soon as the condition holds, fails after a generous bound).
 */
export class Collector<T> {
  readonly items: T[] = [];
  private waiters: { pred: (items: T[]) => boolean; resolve: () => void }[] = [];
  error: unknown = null;

  push = (item: T) => {
    this.items.push(item);
    this.check();
  };

  fail = (err: unknown) => {
    this.error = err;
    this.check();
  };

  private check() {
    this.waiters = this.waiters.filter((w) => {
      if (w.pred(this.items) || this.error) {
        w.resolve();
        return false;
      }
      return true;
    });
  }

  async until(pred: (items: T[]) => boolean, what = 'condition', timeoutMs = 30_000): Promise<T[]> {
    if (!pred(this.items)) {
      const d = deferred();
      this.waiters.push({ pred, resolve: d.resolve });
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out waiting for ${what} (have ${this.items.length})`)), timeoutMs);
      });
      try {
        await Promise.race([d.promise, timeout]);
      } finally {
        clearTimeout(timer);
      }
    }
    if (this.error && !pred(this.items)) throw this.error;
    return this.items;
  }
}
