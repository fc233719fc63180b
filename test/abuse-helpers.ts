/**
 * Helpers for the limits / sessions / abuse tests: a raw WebSocket client that speaks tRPC's wire
 * protocol by hand (so a test can see close codes, stop reading, or misbehave), access to the
 * server side of a user's sockets, and small statistics.
 */
import superjson from 'superjson';
import WebSocket from 'ws';
import type { App } from '../src/app.js';
import type { Session } from '../src/services/sessions.js';
import { deferred } from './helpers.js';
import { withTimeout } from './ws-helpers.js';

export interface Closed {
  code: number;
  reason: string;
}

/** A decoded server frame (the tRPC response envelope; `data` of results is superjson-decoded). */
export interface Frame {
  id: number | string | null;
  result?: { type: 'started' | 'stopped' | 'data'; id?: string; data?: any };
  error?: { message: string; code: number; data: { code: string; retryAfterMs?: number | null; [k: string]: unknown } };
  method?: string;
}

export interface RawClient {
  ws: WebSocket;
  /** Every text frame the server sent, decoded (non-JSON frames such as PING kept as strings). */
  frames: (Frame | string)[];
  /** Resolves when the socket is open (and the connectionParams message was sent). */
  opened: Promise<void>;
  /** Resolves on close with the code and reason the client saw (1006 for a dropped socket). */
  closed: Promise<Closed>;
  /** Resolves with the HTTP status when the server refused the upgrade. */
  refused: Promise<number>;
  readonly isClosed: boolean;
  send(msg: unknown): void;
  /** Sends a `subscription` request for `path` with `input` (superjson-encoded as wsLink does). */
  subscribe(id: number, path: string, input: unknown): void;
  stop(id: number): void;
  /** Waits for a frame matching `pred` (already received or future); bounded. */
  waitFrame(pred: (f: Frame) => boolean, what: string, timeoutMs?: number): Promise<Frame>;
  /** Tracked data of subscription `id`, in arrival order: `{ id: seq string, data: event }`. */
  data(id: number): { id: string; data: any }[];
  /** Stops reading from the TCP socket (the server's send queue then grows); `resume()` undoes it. */
  pause(): void;
  resume(): void;
  terminate(): void;
}

export const wsTrpcUrl = (base: string, connectionParams = true) =>
  `${base.replace(/\/+$/, '').replace(/^http/, 'ws')}/trpc${connectionParams ? '?connectionParams=1' : ''}`;

/**
 * Opens a raw WebSocket to the server's tRPC endpoint. With a token, it sends tRPC's
 * connectionParams message first (`?connectionParams=1`), exactly like wsLink does.
 */
export function rawClient(
  baseUrl: string,
  opts: {
    token?: string | undefined;
    autoPong?: boolean;
    /** Connect with `?connectionParams=1` (default: when a token is given). */
    connectionParams?: boolean;
    /** Send the connectionParams message on open (default true); false: the test sends its own. */
    sendParams?: boolean;
  } = {},
): RawClient {
  const withParams = opts.connectionParams ?? opts.token !== undefined;
  const ws = new WebSocket(wsTrpcUrl(baseUrl, withParams), { autoPong: opts.autoPong ?? true });
  const frames: (Frame | string)[] = [];
  const waiters: { pred: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];
  const opened = deferred<void>();
  const closed = deferred<Closed>();
  const refused = deferred<number>();
  let isClosed = false;
  /** Frames sent before the socket opened go out right after connectionParams, in order. */
  const pending: (string | Buffer)[] = [];
  // Nobody has to await these: they only settle in one of the outcomes.
  opened.promise.catch(() => undefined);
  ws.on('open', () => {
    if (withParams && opts.sendParams !== false) ws.send(JSON.stringify({ method: 'connectionParams', data: opts.token ? { token: opts.token } : {} }));
    for (const m of pending.splice(0)) ws.send(m);
    opened.resolve();
  });
  ws.on('unexpected-response', (_req, res) => {
    refused.resolve(res.statusCode ?? 0);
    opened.reject(new Error(`upgrade refused with HTTP ${res.statusCode}`));
    isClosed = true;
    closed.resolve({ code: 0, reason: `http ${res.statusCode}` });
    ws.terminate();
  });
  ws.on('error', () => undefined);
  ws.on('close', (code, reason) => {
    isClosed = true;
    opened.reject(new Error(`closed before open (${code})`));
    closed.resolve({ code, reason: reason.toString() });
  });
  ws.on('message', (raw, isBinary) => {
    if (isBinary) return;
    const text = raw.toString();
    let f: Frame | string;
    try {
      f = JSON.parse(text) as Frame;
    } catch {
      frames.push(text);
      return;
    }
    if (f.result?.type === 'data' && f.result.data !== undefined) f.result.data = superjson.deserialize(f.result.data);
    // Errors travel superjson-encoded too ({ json, meta }), like results.
    if (f.error && 'json' in (f.error as object)) f.error = superjson.deserialize(f.error as never);
    if (f.error && f.error.data === undefined) f.error.data = { code: 'UNKNOWN' };
    frames.push(f);
    for (let i = waiters.length - 1; i >= 0; i--) {
      const w = waiters[i]!;
      if (w.pred(f)) {
        waiters.splice(i, 1);
        w.resolve(f);
      }
    }
  });
  const c: RawClient = {
    ws,
    frames,
    opened: opened.promise,
    closed: closed.promise,
    refused: refused.promise,
    get isClosed() {
      return isClosed;
    },
    send: (msg) => {
      const data = typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg);
      if (ws.readyState === WebSocket.CONNECTING) pending.push(data);
      else ws.send(data);
    },
    subscribe: (id, path, input) => c.send({ id, method: 'subscription', params: { path, input: superjson.serialize(input) } }),
    stop: (id) => c.send({ id, method: 'subscription.stop' }),
    waitFrame(pred, what, timeoutMs = 10_000) {
      const hit = frames.find((f): f is Frame => typeof f !== 'string' && pred(f));
      if (hit) return Promise.resolve(hit);
      const d = deferred<Frame>();
      waiters.push({ pred, resolve: d.resolve });
      return withTimeout(Promise.race([d.promise, closed.promise.then((cl) => Promise.reject(new Error(`socket closed (${cl.code} ${cl.reason}) while waiting for ${what}`)))]), timeoutMs, what);
    },
    data: (id) =>
      frames
        .filter((f): f is Frame => typeof f !== 'string' && f.id === id && f.result?.type === 'data')
        .map((f) => f.result!.data as { id: string; data: any }),
    pause: () => (ws as unknown as { _socket: import('node:net').Socket })._socket.pause(),
    resume: () => (ws as unknown as { _socket: import('node:net').Socket })._socket.resume(),
    terminate: () => ws.terminate(),
  };
  return c;
}

/** Waits for a raw client's close and returns it (bounded). */
export function closeOf(c: RawClient, timeoutMs: number, what: string): Promise<Closed> {
  return withTimeout(c.closed, timeoutMs, what);
}

/** The live WebSocket sessions of a user on one node (server side; read-only use in tests). */
export function sessionsOf(app: App, userId: string, tenant = 'default'): Session[] {
  const byUser = (app.services.sessions as unknown as { byUser: Map<string, Set<Session>> }).byUser;
  return [...(byUser.get(`${tenant}\u0000${userId}`) ?? [])];
}

/** The server-side `ws` socket of a session. */
export type ServerSocket = WebSocket;

/**
 * Watches what the server sends on one of its sockets: every text frame, and the moment it calls
 * `close()` (with the code), without changing the behaviour.
 */
export function tapServerSocket(socket: ServerSocket): {
  sent: string[];
  closeCalled: Promise<{ code: number | undefined; bufferedAmount: number }>;
  /** Resolves when a sent frame satisfies `pred`. */
  waitSent(pred: (text: string) => boolean, what: string, timeoutMs?: number): Promise<void>;
} {
  const sent: string[] = [];
  const waiters: { pred: (t: string) => boolean; resolve: () => void }[] = [];
  const closeCalled = deferred<{ code: number | undefined; bufferedAmount: number }>();
  // Every frame leaves through ws's Sender.sendFrame: the ones of `send` and the fan-out frames our
  // transport writes directly (src/trpc/frames.ts). Text frames are decoded from the wire bytes.
  const sender = (socket as unknown as { _sender: { sendFrame: (list: (Buffer | string)[], cb?: unknown) => void } })._sender;
  const sendFrame = sender.sendFrame.bind(sender);
  sender.sendFrame = (list, cb) => {
    const bytes = Buffer.concat(list.map((b) => (typeof b === 'string' ? Buffer.from(b) : b)));
    const len = bytes[1]! & 0x7f;
    const offset = len === 126 ? 4 : len === 127 ? 10 : 2;
    if ((bytes[0]! & 0x0f) === 1) {
      const text = bytes.subarray(offset).toString('utf8');
      sent.push(text);
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (waiters[i]!.pred(text)) waiters.splice(i, 1)[0]!.resolve();
      }
    }
    sendFrame(list, cb);
  };
  const close = socket.close.bind(socket);
  socket.close = (code?: number, reason?: string | Buffer) => {
    closeCalled.resolve({ code, bufferedAmount: socket.bufferedAmount });
    close(code, reason);
  };
  return {
    sent,
    closeCalled: closeCalled.promise,
    waitSent(pred, what, timeoutMs = 10_000) {
      if (sent.some(pred)) return Promise.resolve();
      const d = deferred<void>();
      waiters.push({ pred, resolve: d.resolve });
      return withTimeout(d.promise, timeoutMs, what);
    },
  };
}

/** Percentiles of a list of numbers (nearest rank). */
export function stats(xs: number[]): { n: number; p50: number; p95: number; p99: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
  return { n: s.length, p50: at(50), p95: at(95), p99: at(99), max: s[s.length - 1] ?? NaN };
}

export const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

/** Milliseconds until the next whole second after `ms` (the resolution of a JWT's `iat`). */
export function msUntilNextSecondAfter(ms: number, now = Date.now()): number {
  return Math.max(0, (Math.floor(ms / 1000) + 1) * 1000 - now);
}

/** Waits for a computed amount of time (used only where the passage of time IS the condition). */
export const elapse = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Error helpers for TRPCClientErrors. */
export function errInfo(err: unknown): { code: string | undefined; message: string; retryAfterMs: unknown } {
  const e = err as { data?: { code?: string; retryAfterMs?: unknown }; message?: string };
  return { code: e?.data?.code, message: e?.message ?? String(err), retryAfterMs: e?.data?.retryAfterMs };
}

/** A bounded poll on server state read asynchronously (e.g. from Redis), which emits no event. */
export async function waitForAsync(cond: () => Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Deletes every Redis key under the given test prefixes (revocations live 30 days otherwise). */
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
