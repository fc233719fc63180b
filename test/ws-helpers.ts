/**
 * Helpers for the WebSocket / HTTP integration tests: a tRPC client with every call over one
 * WebSocket (and a url callback, so a test can point it at another server), connection counters,
 * a subscription recorder, and bounded waits on events or conditions.
 */
import type { Server } from 'node:http';
import { createTRPCClient, createWSClient, wsLink, type TRPCClient } from '@trpc/client';
import superjson from 'superjson';
import type { AppRouter, RoomEvent } from '../client/index.js';
import { isDurable } from '../src/domain/events.js';
import { Collector, deferred, tokenFor, uuid } from './helpers.js';

export type Tracked = { id: string; data: RoomEvent };

export interface WsTestClient {
  trpc: TRPCClient<AppRouter>;
  ws: ReturnType<typeof createWSClient>;
  /** Times the client's socket closed (onClose). */
  readonly closes: number;
  /** Times a socket opened (onOpen). */
  readonly opens: number;
  close(): Promise<void>;
}

export interface WsClientOptions {
  /** Server base URL (http://...), or a function read on every (re)connect. */
  url: string | (() => string);
  /** Access token sent as connectionParams.token; omitted when undefined. */
  token?: string | undefined;
  /** A user id: a valid token is minted for it (ignored when `token` is given). */
  userId?: string;
  WebSocket?: typeof WebSocket;
  retryDelayMs?: (attempt: number) => number;
}

const wsUrl = (base: string) => `${base.replace(/\/+$/, '').replace(/^http/, 'ws')}/trpc`;

/** A tRPC client speaking only WebSocket (queries and mutations included). */
export function wsClient(opts: WsClientOptions): WsTestClient {
  const token = opts.token ?? (opts.userId ? tokenFor(opts.userId) : undefined);
  let closes = 0;
  let opens = 0;
  const ws = createWSClient({
    url: typeof opts.url === 'string' ? wsUrl(opts.url) : () => wsUrl((opts.url as () => string)()),
    connectionParams: () => (token ? { token } : {}),
    retryDelayMs: opts.retryDelayMs ?? (() => 50),
    onOpen: () => {
      opens++;
    },
    onClose: () => {
      closes++;
    },
    ...(opts.WebSocket ? { WebSocket: opts.WebSocket } : {}),
  });
  const trpc = createTRPCClient<AppRouter>({ links: [wsLink<AppRouter>({ client: ws, transformer: superjson })] });
  return {
    trpc,
    ws,
    get closes() {
      return closes;
    },
    get opens() {
      return opens;
    },
    close: () => ws.close(),
  };
}

/** A WebSocket class that counts how many sockets the client constructs. */
export function countingWebSocket(): { WebSocket: typeof WebSocket; readonly count: number } {
  let count = 0;
  class CountingWebSocket extends globalThis.WebSocket {
    constructor(...args: ConstructorParameters<typeof WebSocket>) {
      super(...args);
      count++;
    }
  }
  return {
    WebSocket: CountingWebSocket,
    get count() {
      return count;
    },
  };
}

/** Counts the WebSocket upgrade requests a server received. */
export function countUpgrades(server: Server): { readonly count: number; stop(): void } {
  let count = 0;
  const listener = () => {
    count++;
  };
  server.on('upgrade', listener);
  return {
    get count() {
      return count;
    },
    stop: () => server.off('upgrade', listener),
  };
}

/** Rejects after `ms` unless `p` settles first (the bound of an event wait, never a sleep). */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A short bounded poll on a condition, for state that emits no event (e.g. a server-side counter).
 * Fails with `what` after `timeoutMs`.
 */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A recorded `chat.events` subscription. */
export interface EventsRecorder {
  events: Collector<Tracked>;
  /** Resolves when the subscription ends (onComplete/onStopped) or errors; never rejects. */
  ended: Promise<'complete' | 'stopped' | 'error'>;
  readonly endedHow: 'complete' | 'stopped' | 'error' | null;
  error: unknown;
  unsubscribe(): void;
  /** Durable events received (ready and ephemeral events excluded). */
  durable(): Tracked[];
  /** Seqs of the durable events received, in arrival order. */
  seqs(): number[];
  /** Waits until a durable event with seq >= `seq` arrived. */
  untilSeq(seq: number, timeoutMs?: number): Promise<void>;
  /** Waits for the `ready` event and returns its seq. */
  ready(timeoutMs?: number): Promise<number>;
}

export function recordEvents(
  client: Pick<WsTestClient, 'trpc'>,
  input: { roomId: string; lastEventId?: string | null },
): EventsRecorder {
  const events = new Collector<Tracked>();
  const end = deferred<'complete' | 'stopped' | 'error'>();
  let endedHow: 'complete' | 'stopped' | 'error' | null = null;
  const finish = (how: 'complete' | 'stopped' | 'error') => {
    if (endedHow === null) endedHow = how;
    end.resolve(how);
  };
  const rec: EventsRecorder = {
    events,
    ended: end.promise,
    get endedHow() {
      return endedHow;
    },
    error: null,
    unsubscribe: () => sub.unsubscribe(),
    durable: () => events.items.filter((x) => x.data.type !== 'ready' && isDurable(x.data as never)),
    seqs: () => rec.durable().map((x) => (x.data as { seq: number }).seq),
    async untilSeq(seq, timeoutMs = 15_000) {
      await events.until((xs) => xs.some((x) => x.data.type !== 'ready' && isDurable(x.data as never) && (x.data as { seq: number }).seq >= seq), `event seq ${seq}`, timeoutMs);
    },
    async ready(timeoutMs = 15_000) {
      const xs = await events.until((items) => items.some((x) => x.data.type === 'ready'), 'ready', timeoutMs);
      const r = xs.find((x) => x.data.type === 'ready')!;
      return (r.data as { seq: number }).seq;
    },
  };
  const sub = client.trpc.chat.events.subscribe(input, {
    onData: (d) => events.push(d as Tracked),
    onError: (err) => {
      rec.error = err;
      events.fail(err);
      finish('error');
    },
    onStopped: () => finish('stopped'),
    onComplete: () => finish('complete'),
  });
  return rec;
}

/** Sends `n` messages (bodies `${prefix}${i}`), `concurrency` at a time; returns them sorted by seq. */
export async function sendMany(
  client: Pick<WsTestClient, 'trpc'>,
  roomId: string,
  n: number,
  prefix = 'm',
  concurrency = 1,
): Promise<{ seq: number; body: string | null }[]> {
  const out: { seq: number; body: string | null }[] = [];
  for (let i = 0; i < n; i += concurrency) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + concurrency); j++) {
      batch.push(client.trpc.chat.send.mutate({ roomId, clientId: uuid(), body: `${prefix}${j}` }));
    }
    out.push(...(await Promise.all(batch)));
  }
  return out.sort((a, b) => a.seq - b.seq);
}

/** [from, from+1, ..., to]. */
export function range(from: number, to: number): number[] {
  const out: number[] = [];
  for (let i = from; i <= to; i++) out.push(i);
  return out;
}

/** Fetches a URL and parses the JSON body (null when the body is not JSON). */
export async function getJson(url: string, init?: RequestInit): Promise<{ status: number; body: any }> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: any = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

/**
 * A TCP proxy in front of a real service (e.g. PostgreSQL), so a test can make the service
 * unreachable for one app without touching the service: `cut()` drops every connection and
 * refuses new ones; `restore()` lets connections through again.
 */
export async function tcpProxy(target: { host: string; port: number }): Promise<{
  port: number;
  readonly connections: number;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}> {
  const { createServer, connect } = await import('node:net');
  const sockets = new Set<import('node:net').Socket>();
  let open = true;
  let connections = 0;
  const server = createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    connections++;
    const upstream = connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as import('node:net').AddressInfo).port;
  return {
    port,
    get connections() {
      return connections;
    },
    cut() {
      open = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      open = true;
    },
    async close() {
      open = false;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
