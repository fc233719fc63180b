/**
 * Helpers for the live (wsLink) tests of receipts, typing, presence, the inbox and the consistency
 * test: a two-node cluster (two in-process servers on one database and one Redis prefix), a client
 * pool that closes what it opened, an inbox recorder, full history loads, a seeded PRNG and a
 * bounded poll for state that emits no event.
 */
import { createChatClient, type ChatClient, type Message, type RouterOutputs } from '../client/index.js';
import type { Config } from '../src/config.js';
import { TEST_REDIS_URL } from './env.js';
import { Collector, createTestDatabase, deferred, startServer, testConfig, testPrefix, tokenFor, type TestServer } from './helpers.js';

export { recordEvents, withTimeout, type EventsRecorder, type Tracked } from './ws-helpers.js';

/** Two nodes sharing one PostgreSQL database and one Redis prefix. */
export interface Cluster {
  a: TestServer;
  b: TestServer;
  config: Config;
  databaseUrl: string;
  redisPrefix: string;
  close(): Promise<void>;
}

export async function startCluster(label: string, overrides: Partial<Config> = {}): Promise<Cluster> {
  const db = await createTestDatabase(label);
  const redisPrefix = testPrefix(label);
  const config = testConfig({ databaseUrl: db.url, redisUrl: TEST_REDIS_URL, redisPrefix, ...overrides });
  const servers: TestServer[] = [];
  try {
    // One after the other: the first applies the migrations.
    servers.push(await startServer(config));
    servers.push(await startServer(config));
  } catch (err) {
    await Promise.allSettled(servers.map((s) => s.close()));
    await db.drop();
    throw err;
  }
  const [a, b] = servers as [TestServer, TestServer];
  return {
    a,
    b,
    config,
    databaseUrl: db.url,
    redisPrefix,
    async close() {
      await Promise.allSettled([a.close(), b.close()]);
      await db.drop();
    },
  };
}

export interface ClientOptions {
  tenant?: string;
  roles?: string[];
  /** Queries and mutations over the socket too (default: HTTP batching, subscriptions over the socket). */
  ws?: boolean;
}

/** Opens clients and closes every one of them at the end (afterEach / afterAll). */
export class ClientPool {
  private readonly open = new Set<ChatClient>();

  client(url: string, userId: string, opts: ClientOptions = {}): ChatClient {
    const c = createChatClient({
      url,
      token: tokenFor(userId, { ...(opts.tenant ? { tenant: opts.tenant } : {}), ...(opts.roles ? { roles: opts.roles } : {}) }),
      allOverWebSocket: opts.ws ?? false,
      retryDelayMs: () => 50,
    });
    this.open.add(c);
    return c;
  }

  async close(c: ChatClient): Promise<void> {
    this.open.delete(c);
    await c.close().catch(() => undefined);
  }

  async closeAll(): Promise<void> {
    const all = [...this.open];
    this.open.clear();
    await Promise.allSettled(all.map((c) => c.close()));
  }
}

export type InboxItem = RouterOutputs['inbox']['events'] extends AsyncIterable<infer T> ? T : never;
export type InboxEvent = InboxItem extends { data: infer D } ? D : never;

export interface InboxRecorder {
  items: Collector<InboxItem>;
  ended: Promise<'complete' | 'stopped' | 'error'>;
  error: unknown;
  unsubscribe(): void;
  /** Waits for `ready` and returns its seq. */
  ready(timeoutMs?: number): Promise<number>;
  /** Waits for an item matching `pred` and returns it. */
  next<T extends InboxEvent['type']>(type: T, pred?: (e: Extract<InboxEvent, { type: T }>) => boolean, timeoutMs?: number): Promise<Extract<InboxEvent, { type: T }>>;
  /** Durable items (no ready, no signals) in arrival order. */
  durable(): InboxItem[];
}

export function recordInbox(client: Pick<ChatClient, 'trpc'>, input: { lastEventId?: string | null } = {}): InboxRecorder {
  const items = new Collector<InboxItem>();
  const end = deferred<'complete' | 'stopped' | 'error'>();
  const rec: InboxRecorder = {
    items,
    ended: end.promise,
    error: null,
    unsubscribe: () => sub.unsubscribe(),
    async ready(timeoutMs = 15_000) {
      const xs = await items.until((all) => all.some((x) => x.data.type === 'ready'), 'inbox ready', timeoutMs);
      return (xs.find((x) => x.data.type === 'ready')!.data as { seq: number }).seq;
    },
    async next(type, pred = () => true, timeoutMs = 15_000) {
      const match = (x: InboxItem) => x.data.type === type && pred(x.data as never);
      const xs = await items.until((all) => all.some(match), `inbox ${type}`, timeoutMs);
      return xs.find(match)!.data as never;
    },
    durable: () => items.items.filter((x) => x.data.type !== 'ready' && x.data.type !== 'signal'),
  };
  const sub = client.trpc.inbox.events.subscribe(input, {
    onData: (d) => items.push(d as InboxItem),
    onError: (err) => {
      rec.error = err;
      items.fail(err);
      end.resolve('error');
    },
    onStopped: () => end.resolve('stopped'),
    onComplete: () => end.resolve('complete'),
  });
  return rec;
}

/** Every message of a room, ascending by seq, loaded page by page (newest page first, then back). */
export async function loadAllHistory(client: Pick<ChatClient, 'trpc'>, roomId: string, limit = 100): Promise<Message[]> {
  const pages: Message[][] = [];
  let beforeSeq: number | null = null;
  for (let i = 0; i < 10_000; i++) {
    const page: { messages: Message[]; hasMore: boolean } = await client.trpc.chat.history.query({ roomId, beforeSeq, limit });
    pages.unshift(page.messages);
    if (!page.hasMore || page.messages.length === 0) return pages.flat();
    beforeSeq = page.messages[0]!.seq;
  }
  throw new Error('history did not end within 10,000 pages');
}

/** A small seeded PRNG (mulberry32): the same seed gives the same workload choices. */
export function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick<T>(xs: readonly T[]): T {
      if (xs.length === 0) throw new Error('pick from an empty list');
      return xs[Math.floor(next() * xs.length)]!;
    },
  };
}

/**
 * A bounded poll of a value that emits no event of its own (e.g. presence expiring on a node that
 * died): calls `read` every `everyMs` until `cond` holds; fails after `timeoutMs` with the last value.
 */
export async function pollUntil<T>(read: () => Promise<T>, cond: (v: T) => boolean, what: string, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await read();
  while (!cond(last)) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, everyMs));
    last = await read();
  }
  return last;
}

/** The TRPC error code of a rejected client call (undefined when it is not a TRPC error). */
export function codeOf(err: unknown): string | undefined {
  return (err as { data?: { code?: string } } | null)?.data?.code;
}
