/**
 * What a drop-in for tRPC's `applyWSSHandler` must also do, beyond tRPC's own tests
 * (websockets*.test.ts here): each test runs on tRPC's adapter and on ours, except the few that
 * check where ours is stricter than tRPC's (marked, with the reason). Raw `ws` clients read the
 * frames; every wait is on an event, and keep-alive runs on fake timers.
 */
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import { type AnyTRPCRouter, initTRPC, tracked } from '@trpc/server';
import type { WSSHandlerOptions } from '@trpc/server/adapters/ws';
import { observable } from '@trpc/server/observable';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { z } from 'zod';
import { applyWSSHandler as ours, PUSH, type Pushable, type PushSink, type TransportExtraOptions } from '../../src/transport/index.js';
import { ADAPTERS, type ApplyWSSHandler, waitFor } from './harness.js';

/** A transformer that is not superjson: tagged JSON, so its output is recognisable on the wire. */
const tagged = {
  serialize: (v: unknown) => ({ tagged: v }),
  deserialize: (v: unknown) => (v && typeof v === 'object' && 'tagged' in v ? (v as { tagged: unknown }).tagged : v),
};

interface Frame {
  id: number | string | null;
  result?: { type: string; data?: unknown; id?: string };
  error?: { message: string; data: { code: string } };
}

/** A raw client: every frame it got, and a wait for the first frame matching a predicate. */
class Raw {
  readonly frames: Frame[] = [];
  readonly texts: string[] = [];
  private waiters: (() => void)[] = [];
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const text = data.toString();
      this.texts.push(text);
      if (text !== 'PING' && text !== 'PONG') this.frames.push(JSON.parse(text) as Frame);
      for (const w of this.waiters.splice(0)) w();
    });
  }
  send(m: unknown) {
    this.ws.send(typeof m === 'string' ? m : JSON.stringify(m));
  }
  async frame(pred: (f: Frame) => boolean): Promise<Frame> {
    for (;;) {
      const f = this.frames.find(pred);
      if (f) return f;
      if (this.ws.readyState > WebSocket.OPEN) throw new Error('socket closed while waiting for a frame');
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }
}

/**
 * Runs `body` while watching for unhandled rejections, then asserts there were none (they are
 * reported on the next turns of the event loop: it gives them two).
 */
async function withoutUnhandledRejections(body: () => Promise<void>): Promise<void> {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    await body();
    await new Promise<void>((r) => setImmediate(r));
    await new Promise<void>((r) => setImmediate(r));
    expect(unhandled).toEqual([]);
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
}

async function serve(apply: ApplyWSSHandler, opts: Omit<WSSHandlerOptions<AnyTRPCRouter>, 'wss'>) {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const handler = apply({ ...opts, wss } as WSSHandlerOptions<AnyTRPCRouter>);
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  const clients: WebSocket[] = [];
  return {
    wss,
    url,
    handler,
    async raw(path = '/') {
      const ws = new WebSocket(url + path);
      clients.push(ws);
      const raw = new Raw(ws);
      await once(ws, 'open');
      return raw;
    },
    async [Symbol.asyncDispose]() {
      for (const c of clients) c.terminate();
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}

const isOurs = (name: string) => name === 'ours';

afterEach(() => {
  vi.useRealTimers();
});

describe.each(ADAPTERS)('%s', (name, apply) => {
  test('tracked() values go through the router transformer, not always superjson', async () => {
    const t = initTRPC.create({ transformer: tagged });
    const router = t.router({
      ticks: t.procedure.subscription(async function* () {
        yield tracked('1', { at: 'one' });
        yield { plain: true };
      }),
    });
    await using srv = await serve(apply, { router });
    const c = await srv.raw();
    c.send({ id: 1, method: 'subscription', params: { path: 'ticks', input: { tagged: null } } });
    await c.frame((f) => f.result?.type === 'stopped');
    expect(c.texts).toEqual([
      '{"id":1,"result":{"type":"started"}}',
      '{"id":1,"result":{"type":"data","data":{"tagged":{"id":"1","data":{"at":"one"}}},"id":"1"}}',
      '{"id":1,"result":{"type":"data","data":{"tagged":{"plain":true}}}}',
      '{"id":1,"result":{"type":"stopped"}}',
    ]);
    // And the real client reads them back through the same transformer.
    const wsClient = createWSClient({ url: srv.url });
    const client = createTRPCClient<typeof router>({ links: [wsLink({ client: wsClient, transformer: tagged })] });
    const got: unknown[] = [];
    await new Promise<void>((resolve, reject) => {
      client.ticks.subscribe(undefined, { onData: (d) => got.push(d), onComplete: resolve, onError: reject });
    });
    expect(got).toEqual([{ id: '1', data: { at: 'one' } }, { plain: true }]);
    await wsClient.close();
  });

  test('observable subscriptions are served: values, errors and unsubscription', async () => {
    const t = initTRPC.create();
    let torn = 0;
    const router = t.router({
      obs: t.procedure.input(z.object({ fail: z.boolean() })).subscription(({ input }) =>
        observable<number>((emit) => {
          emit.next(1);
          emit.next(2);
          if (input.fail) emit.error(new Error('boom'));
          return () => {
            torn++;
          };
        }),
      ),
    });
    await using srv = await serve(apply, { router });
    const c = await srv.raw();
    c.send({ id: 1, method: 'subscription', params: { path: 'obs', input: { fail: true } } });
    const err = await c.frame((f) => f.id === 1 && !!f.error);
    expect(err.error?.message).toBe('boom');
    await c.frame((f) => f.id === 1 && f.result?.type === 'stopped');
    expect(c.frames.filter((f) => f.id === 1 && f.result?.type === 'data').map((f) => f.result?.data)).toEqual([1, 2]);
    c.send({ id: 2, method: 'subscription', params: { path: 'obs', input: { fail: false } } });
    await c.frame((f) => f.id === 2 && f.result?.type === 'data' && f.result.data === 2);
    c.send({ id: 2, method: 'subscription.stop' });
    await c.frame((f) => f.id === 2 && f.result?.type === 'stopped');
    await waitFor(() => expect(torn).toBe(2));
  });

  test('several subscriptions on one connection: a live id is refused again, a stop ends its own only, a stopped id is free again, a close aborts the rest', async () => {
    const t = initTRPC.create();
    const aborted: number[] = [];
    const router = t.router({
      live: t.procedure.input(z.object({ n: z.number() })).subscription(async function* ({ input, signal }) {
        const ended = new Promise<void>((resolve) =>
          signal?.addEventListener('abort', () => {
            aborted.push(input.n);
            resolve();
          }),
        );
        yield input.n;
        await ended;
      }),
    });
    await using srv = await serve(apply, { router });
    const c = await srv.raw();
    const subscribe = (id: number, n: number) => c.send({ id, method: 'subscription', params: { path: 'live', input: { n } } });
    const data = (id: number, n: number) => c.frame((f) => f.id === id && f.result?.type === 'data' && f.result.data === n);
    const stopped = (id: number) => c.frames.filter((f) => f.id === id && f.result?.type === 'stopped').length;
    for (const id of [1, 2, 3]) subscribe(id, id);
    for (const id of [1, 2, 3]) await data(id, id);
    subscribe(2, 20);
    const duplicate = await c.frame((f) => f.id === 2 && !!f.error);
    expect(duplicate.error).toMatchObject({ message: 'Duplicate id 2', data: { code: 'BAD_REQUEST' } });
    c.send({ id: 1, method: 'subscription.stop' });
    await c.frame((f) => f.id === 1 && f.result?.type === 'stopped');
    c.send({ id: 3, method: 'subscription.stop' });
    await c.frame((f) => f.id === 3 && f.result?.type === 'stopped');
    subscribe(1, 10);
    await data(1, 10);
    expect([stopped(1), stopped(2), stopped(3)]).toEqual([1, 0, 1]);
    expect(aborted.sort((a, b) => a - b)).toEqual([1, 3]);
    c.ws.close();
    await waitFor(() => expect(aborted.sort((a, b) => a - b)).toEqual([1, 2, 3, 10]));
  });

  test('maxBatchSize refuses a longer batch whole, every call answered', async () => {
    const t = initTRPC.create();
    const called = vi.fn();
    const router = t.router({ q: t.procedure.query(() => called()) });
    await using srv = await serve(apply, { router, maxBatchSize: 2 });
    const c = await srv.raw();
    c.send([1, 2, 3].map((id) => ({ id, method: 'query', params: { path: 'q', input: null } })));
    for (const id of [1, 2, 3]) {
      const f = await c.frame((x) => x.id === id);
      expect(f.error?.message).toBe('Batch call exceeds maximum size');
      expect(f.error?.data.code).toBe('BAD_REQUEST');
    }
    c.send([1, 2].map((id) => ({ id: id + 10, method: 'query', params: { path: 'q', input: null } })));
    await c.frame((x) => x.id === 12 && !!x.result);
    expect(called).toHaveBeenCalledTimes(2);
  });

  test('prefix: only connections whose URL starts with it are served', async () => {
    const t = initTRPC.create();
    const router = t.router({ q: t.procedure.query(() => 'ok') });
    await using srv = await serve(apply, { router, prefix: '/trpc' });
    const served = await srv.raw('/trpc');
    served.send({ id: 1, method: 'query', params: { path: 'q', input: null } });
    expect((await served.frame((f) => f.id === 1)).result?.data).toBe('ok');
    const other = await srv.raw('/other');
    other.send({ id: 1, method: 'query', params: { path: 'q', input: null } });
    // Nobody answers on the other path: a query sent after it on the served socket is answered
    // first, and the other socket still has no frame.
    served.send({ id: 2, method: 'query', params: { path: 'q', input: null } });
    await served.frame((f) => f.id === 2);
    await new Promise<void>((r) => setImmediate(r));
    expect(other.frames).toEqual([]);
  });

  test('createContext is optional, and gets { req, res, info } as tRPC gives it', async () => {
    const t = initTRPC.context<{ seen?: string }>().create();
    const router = t.router({ q: t.procedure.query(({ ctx }) => ctx ?? null) });
    {
      await using srv = await serve(apply, { router });
      const c = await srv.raw();
      c.send({ id: 1, method: 'query', params: { path: 'q', input: null } });
      expect((await c.frame((f) => f.id === 1)).result).toEqual({ type: 'data', data: null });
    }
    let got: { req: IncomingMessage; res: WebSocket; info: Record<string, unknown> } | null = null;
    await using srv = await serve(apply, {
      router,
      createContext: ((opts: never) => {
        got = opts;
        return { seen: 'yes' };
      }) as never,
    });
    const c = await srv.raw('/?connectionParams=1');
    c.send({ method: 'connectionParams', data: { token: 'abc' } });
    c.send({ id: 1, method: 'query', params: { path: 'q', input: null } });
    expect((await c.frame((f) => f.id === 1)).result?.data).toEqual({ seen: 'yes' });
    const opts = got as unknown as { req: IncomingMessage; res: WebSocket; info: Record<string, unknown> };
    expect(opts.req.url).toBe('/?connectionParams=1');
    expect(opts.res).toBe([...srv.wss.clients][0]);
    expect(opts.info).toMatchObject({ connectionParams: { token: 'abc' }, calls: [], isBatchCall: false, accept: null, type: 'unknown', url: null });
    expect(opts.info.signal).toBeInstanceOf(AbortSignal);
    const signal = opts.info.signal as AbortSignal;
    expect(signal.aborted).toBe(false);
    c.ws.close();
    await waitFor(() => expect(signal.aborted).toBe(true));
  });

  test('queries and mutations are given an AbortSignal', async () => {
    const t = initTRPC.create();
    const signals: (AbortSignal | undefined)[] = [];
    const router = t.router({
      q: t.procedure.query(({ signal }) => {
        signals.push(signal);
        return 1;
      }),
      m: t.procedure.mutation(({ signal }) => {
        signals.push(signal);
        return 2;
      }),
    });
    await using srv = await serve(apply, { router });
    const c = await srv.raw();
    c.send([
      { id: 1, method: 'query', params: { path: 'q', input: null } },
      { id: 2, method: 'mutation', params: { path: 'm', input: null } },
    ]);
    await c.frame((f) => f.id === 2);
    expect(signals).toHaveLength(2);
    for (const s of signals) expect(s).toBeInstanceOf(AbortSignal);
  });

  // Defined for ours only: tRPC behaves otherwise here (see the title).
  if (isOurs(name)) {
    test('ours: a query still running when its client leaves sees its signal aborted (tRPC never aborts it)', async () => {
      const t = initTRPC.create();
      let signal: AbortSignal | undefined;
      let enter = () => {};
      const entered = new Promise<void>((r) => {
        enter = r;
      });
      const router = t.router({
        slow: t.procedure.query(async ({ signal: s }) => {
          signal = s;
          enter();
          await new Promise<void>((r) => s?.addEventListener('abort', () => r(), { once: true }));
          return 'aborted';
        }),
      });
      await using srv = await serve(apply, { router });
      const c = await srv.raw();
      c.send({ id: 1, method: 'query', params: { path: 'slow', input: null } });
      await entered;
      c.ws.terminate();
      await waitFor(() => expect(signal?.aborted).toBe(true));
    });
  }

  test('an async onError that rejects is never an unhandled rejection', async () => {
    await withoutUnhandledRejections(async () => {
      const t = initTRPC.create();
      const router = t.router({
        fail: t.procedure.query(() => {
          throw new Error('nope');
        }),
      });
      const onError = vi.fn(async () => {
        throw new Error('onError failed');
      });
      await using srv = await serve(apply, { router, onError });
      const c = await srv.raw();
      c.send({ id: 1, method: 'query', params: { path: 'fail', input: null } });
      expect((await c.frame((f) => f.id === 1)).error?.message).toBe('nope');
      c.send({ id: 2, method: 'query', params: { path: 'nothing.here', input: null } });
      await c.frame((f) => f.id === 2);
      expect(onError).toHaveBeenCalledTimes(2);
    });
  });

  test('stopping an iterator that honours its signal: stopped, and its finally runs', async () => {
    const t = initTRPC.create();
    const cleaned = vi.fn();
    const router = t.router({
      sub: t.procedure.subscription(async function* ({ signal }) {
        try {
          yield 1;
          await new Promise<void>((r) => signal?.addEventListener('abort', () => r(), { once: true }));
        } finally {
          cleaned();
        }
      }),
    });
    await using srv = await serve(apply, { router });
    const c = await srv.raw();
    c.send({ id: 1, method: 'subscription', params: { path: 'sub', input: null } });
    await c.frame((f) => f.result?.type === 'data');
    c.send({ id: 1, method: 'subscription.stop' });
    await c.frame((f) => f.result?.type === 'stopped');
    await waitFor(() => expect(cleaned).toHaveBeenCalledTimes(1));
  });

  test('a subscription value that cannot be serialized: the client gets the error, then stopped; the generator is disposed; no unhandled rejection', async () => {
    await withoutUnhandledRejections(async () => {
      const t = initTRPC.create();
      const cleaned = vi.fn();
      const router = t.router({
        // A BigInt: JSON.stringify throws, for a plain value and for a tracked one alike.
        sub: t.procedure.input(z.object({ tracked: z.boolean() })).subscription(async function* ({ input }) {
          try {
            yield input.tracked ? tracked('1', 1) : 1;
            yield input.tracked ? tracked('2', 2n) : 2n;
            yield 3;
          } finally {
            cleaned();
          }
        }),
      });
      const onError = vi.fn();
      await using srv = await serve(apply, { router, onError });
      const c = await srv.raw();
      c.send({ id: 1, method: 'subscription', params: { path: 'sub', input: { tracked: false } } });
      c.send({ id: 2, method: 'subscription', params: { path: 'sub', input: { tracked: true } } });
      for (const id of [1, 2]) {
        const err = await c.frame((f) => f.id === id && !!f.error);
        expect(err.error?.data.code).toBe('INTERNAL_SERVER_ERROR');
        await c.frame((f) => f.id === id && f.result?.type === 'stopped');
        expect(c.frames.filter((f) => f.id === id && f.result?.type === 'data')).toHaveLength(1);
      }
      await waitFor(() => expect(cleaned).toHaveBeenCalledTimes(2));
      expect(onError).toHaveBeenCalledTimes(2);
    });
  });

  test('stopping an iterator that ignores its signal sends stopped at once and releases it, also on disconnect', async () => {
    const t = initTRPC.create();
    const returned = vi.fn();
    let pending = 0;
    /** An iterator whose next() never settles and which never looks at the signal. */
    const deaf = (): AsyncIterable<number> => ({
      [Symbol.asyncIterator]: () => ({
        next: () => {
          pending++;
          return new Promise<IteratorResult<number>>(() => {});
        },
        return: async () => {
          returned();
          return { done: true, value: undefined };
        },
      }),
    });
    const router = t.router({ sub: t.procedure.subscription(() => deaf()) });
    await using srv = await serve(apply, { router });
    const c = await srv.raw();
    c.send({ id: 1, method: 'subscription', params: { path: 'sub', input: null } });
    await c.frame((f) => f.result?.type === 'started');
    c.send({ id: 1, method: 'subscription.stop' });
    await c.frame((f) => f.result?.type === 'stopped');
    expect(returned).toHaveBeenCalledTimes(1);
    // The id is free again at once.
    c.send({ id: 1, method: 'subscription', params: { path: 'sub', input: null } });
    await c.frame((f) => f.id === 1 && f.result?.type === 'started' && c.frames.filter((x) => x.result?.type === 'started').length === 2);
    // On disconnect too: the iterator is released although its next() never settles.
    c.ws.terminate();
    await waitFor(() => expect(returned).toHaveBeenCalledTimes(2));
    expect(pending).toBe(2);
  });

  // Defined for ours only: tRPC behaves otherwise here (see the title).
  if (isOurs(name)) {
    test('ours: a generator stuck in an await that ignores its signal still gets stopped at once (tRPC waits for its return() forever)', async () => {
      const t = initTRPC.create();
      const router = t.router({
        sub: t.procedure.subscription(async function* () {
          yield 1;
          await new Promise<void>(() => {});
        }),
      });
      await using srv = await serve(apply, { router });
      const c = await srv.raw();
      c.send({ id: 1, method: 'subscription', params: { path: 'sub', input: null } });
      await c.frame((f) => f.result?.type === 'data');
      c.send({ id: 1, method: 'subscription.stop' });
      await c.frame((f) => f.result?.type === 'stopped');
    });
  }

  test('dangerouslyDisablePong: PING gets no PONG; without it, PING gets PONG', async () => {
    const t = initTRPC.create();
    const router = t.router({ q: t.procedure.query(() => 'ok') });
    for (const disabled of [false, true]) {
      await using srv = await serve(apply, { router, dangerouslyDisablePong: disabled });
      const c = await srv.raw();
      c.send('PING');
      c.send({ id: 1, method: 'query', params: { path: 'q', input: null } });
      await c.frame((f) => f.id === 1);
      expect(c.texts.includes('PONG')).toBe(!disabled);
    }
  });

  test("keep-alive: tRPC's option shape, ping after pingMs of quiet, terminate pongWaitMs after it, within tRPC's timing", async () => {
    const t = initTRPC.create();
    const router = t.router({ q: t.procedure.query(() => 'ok') });
    const pingMs = 2_000;
    const pongWaitMs = 1_000;
    // Fake timers before the server starts: its keep-alive timers are then fake too (I/O is real).
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    await using srv = await serve(apply, { router, keepAlive: { enabled: true, pingMs, pongWaitMs } });
    const times: { ping?: number; terminate?: number } = {};
    const connected = once(srv.wss, 'connection');
    const c = await srv.raw();
    const [ws] = (await connected) as [WebSocket];
    const send = ws.send.bind(ws);
    ws.send = ((data: unknown, ...rest: never[]) => {
      if (data === 'PING') times.ping ??= Date.now();
      return (send as (...a: unknown[]) => void)(data, ...rest);
    }) as typeof ws.send;
    const terminate = ws.terminate.bind(ws);
    ws.terminate = () => {
      times.terminate ??= Date.now();
      terminate();
    };
    // A message resets the quiet period (fake time starts now).
    c.send({ id: 1, method: 'query', params: { path: 'q', input: null } });
    await c.frame((f) => f.id === 1);
    const start = Date.now();
    // Step through time in 10 ms ticks, letting I/O run between them.
    const advanceUntil = async (done: () => boolean, maxMs: number) => {
      for (let ms = 0; ms < maxMs && !done(); ms += 10) await vi.advanceTimersByTimeAsync(10);
    };
    await advanceUntil(() => times.ping !== undefined, pingMs * 2);
    expect(times.ping).toBeDefined();
    // tRPC pings exactly pingMs after the last message; the tolerance here is an eighth of it.
    expect(times.ping! - start).toBeGreaterThanOrEqual(pingMs - 10);
    expect(times.ping! - start).toBeLessThanOrEqual(pingMs + pingMs / 8);
    await advanceUntil(() => times.terminate !== undefined, pongWaitMs * 2);
    expect(times.terminate).toBeDefined();
    expect(times.terminate! - times.ping!).toBeGreaterThanOrEqual(pongWaitMs - 10);
    expect(times.terminate! - times.ping!).toBeLessThanOrEqual(pongWaitMs + pongWaitMs / 8);
  });

  test('keep-alive: a client that answers PING with PONG stays connected', async () => {
    const t = initTRPC.create();
    const router = t.router({ q: t.procedure.query(() => 'ok') });
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    await using srv = await serve(apply, { router, keepAlive: { enabled: true, pingMs: 500, pongWaitMs: 500 } });
    const c = await srv.raw();
    let pings = 0;
    c.ws.on('message', (d) => {
      if (d.toString() === 'PING') {
        pings++;
        c.ws.send('PONG');
      }
    });
    for (let ms = 0; ms < 3_000 && pings < 3; ms += 10) await vi.advanceTimersByTimeAsync(10);
    expect(pings).toBeGreaterThanOrEqual(3);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
  });
});

/** Our `limits` (tRPC has none): per connection, with a socket buffer no test here reaches. */
const limitsOf = (l: { maxInflight?: number; maxBatch?: number; maxStopping?: number }): TransportExtraOptions['limits'] => ({
  maxInflight: 10,
  maxBatch: 10,
  hardBytes: 1 << 30,
  onOverflow: () => {},
  ...l,
});

/** A message of `n` queries of `path`, with ids 1 to n. */
const queries = (n: number, path = 'q') => Array.from({ length: n }, (_, i) => ({ id: i + 1, method: 'query', params: { path, input: null } }));

/** Resolves on the socket's close (with its code), or once more than `bound` frames came without one. */
function closeOrFlood(c: Raw, bound: number): Promise<number | 'flood'> {
  return new Promise((resolve) => {
    c.ws.once('close', (code: number) => resolve(code));
    c.ws.on('message', () => {
      if (c.texts.length > bound) resolve('flood');
    });
  });
}

describe('ours: limits beyond tRPC (tRPC has no `limits`)', () => {
  const apply: ApplyWSSHandler = (opts) => ours(opts);

  test('ours: stopped generators that ignore their signal are counted until their finally ran; over limits.maxStopping a new subscription is refused (TOO_MANY_REQUESTS)', async () => {
    const t = initTRPC.create();
    let release = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const ended = vi.fn();
    const router = t.router({
      q: t.procedure.query(() => 'ok'),
      stubborn: t.procedure.subscription(async function* () {
        try {
          yield 'first';
          // Ignores its signal: only the test ends this await.
          await gate;
        } finally {
          ended();
        }
      }),
    });
    await using srv = await serve(apply, { router, limits: limitsOf({ maxStopping: 2 }) } as never);
    const c = await srv.raw();
    const subscribe = (id: number) => c.send({ id, method: 'subscription', params: { path: 'stubborn', input: null } });
    for (const id of [1, 2]) {
      subscribe(id);
      await c.frame((f) => f.id === id && f.result?.type === 'data');
      c.send({ id, method: 'subscription.stop' });
      // What the client sees is unchanged: `stopped` at once, though the generator goes on.
      await c.frame((f) => f.id === id && f.result?.type === 'stopped');
    }
    expect(ended).not.toHaveBeenCalled();
    subscribe(3);
    const refused = await c.frame((f) => f.id === 3);
    expect(refused.error?.data.code).toBe('TOO_MANY_REQUESTS');
    expect(refused.error?.message).toBe('at most 2 stopped subscriptions still ending per connection: wait for them to end');
    // Queries are not concerned, and the socket serves on.
    c.send({ id: 4, method: 'query', params: { path: 'q', input: null } });
    expect((await c.frame((f) => f.id === 4)).result?.data).toBe('ok');
    // The generators end (their finally runs): their slots are free again.
    release();
    await waitFor(() => expect(ended).toHaveBeenCalledTimes(2));
    subscribe(5);
    expect((await c.frame((f) => f.id === 5 && (f.result?.type === 'data' || !!f.error))).result?.data).toBe('first');
  });

  test('ours: a subscription stopped while its set-up ignores the signal is counted until the set-up ends; the default cap is maxInflight', async () => {
    const t = initTRPC.create();
    let release = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let setUps = 0;
    const router = t.router({
      slow: t.procedure.subscription(async () => {
        setUps++;
        await gate;
        return (async function* () {
          yield 'live';
        })();
      }),
    });
    await using srv = await serve(apply, { router, limits: limitsOf({ maxInflight: 2 }) } as never);
    const c = await srv.raw();
    const subscribe = (id: number) => c.send({ id, method: 'subscription', params: { path: 'slow', input: null } });
    subscribe(1);
    subscribe(2);
    await waitFor(() => expect(setUps).toBe(2));
    c.send([
      { id: 1, method: 'subscription.stop' },
      { id: 2, method: 'subscription.stop' },
    ]);
    subscribe(3);
    // Refused before its procedure is called (the set-up would hang: wait for either).
    await waitFor(() => expect(c.frames.some((f) => f.id === 3) || setUps > 2).toBe(true));
    expect(setUps).toBe(2);
    expect(c.frames.find((f) => f.id === 3)?.error?.data.code).toBe('TOO_MANY_REQUESTS');
    release();
    // The set-ups end: the stopped subscriptions get `stopped`, and a new one is served.
    await c.frame((f) => f.id === 1 && f.result?.type === 'stopped');
    await c.frame((f) => f.id === 2 && f.result?.type === 'stopped');
    subscribe(4);
    expect((await c.frame((f) => f.id === 4 && (f.result?.type === 'data' || !!f.error))).result?.data).toBe('live');
  });

  test("ours: a pushed value that cannot be serialized fails its own subscription only (error, then stopped); the producer's fan-out loop goes on", async () => {
    const t = initTRPC.create();
    const sinks: { sink: PushSink<unknown>; signal: AbortSignal }[] = [];
    const fanOut = (value: unknown) => {
      for (const { sink, signal } of [...sinks]) if (!signal.aborted) sink.data(value);
    };
    const router = t.router({
      sub: t.procedure.subscription(({ signal }): Pushable<unknown> => ({
        [PUSH](sink) {
          sinks.push({ sink, signal: signal! });
          signal!.addEventListener('abort', () => sink.end(), { once: true });
        },
        [Symbol.asyncIterator]: () => {
          throw new Error('pushed only');
        },
      })),
    });
    await using srv = await serve(apply, { router });
    const c = await srv.raw();
    c.send({ id: 1, method: 'subscription', params: { path: 'sub', input: null } });
    c.send({ id: 2, method: 'subscription', params: { path: 'sub', input: null } });
    await c.frame((f) => f.id === 2 && f.result?.type === 'started');
    await c.frame((f) => f.id === 1 && f.result?.type === 'started');
    // The first subscriber's value cannot be serialized; the second one still gets its own.
    const first = sinks[0]!;
    const second = sinks[1]!;
    expect(() => first.sink.data(1n)).not.toThrow();
    second.sink.data('fine');
    expect((await c.frame((f) => f.id === 1 && !!f.error)).error?.data.code).toBe('INTERNAL_SERVER_ERROR');
    await c.frame((f) => f.id === 1 && f.result?.type === 'stopped');
    expect((await c.frame((f) => f.id === 2 && f.result?.type === 'data')).result?.data).toBe('fine');
    fanOut('more');
    await c.frame((f) => f.id === 2 && f.result?.data === 'more');
    expect(c.frames.filter((f) => f.id === 1 && f.result?.type === 'stopped')).toHaveLength(1);
    expect(c.frames.filter((f) => f.id === 1 && f.result?.type === 'data')).toHaveLength(0);
  });

  test('ours: a message of 100,000 calls over limits.maxBatch costs one close (1009), not a reply per call; up to twice the limit every call is answered', async () => {
    const t = initTRPC.create();
    const called = vi.fn();
    const router = t.router({ q: t.procedure.query(() => called()) });
    await using srv = await serve(apply, { router, limits: limitsOf({ maxBatch: 5 }) } as never);
    const c = await srv.raw();
    // Twice the limit: the first 5 served, the next 5 answered BAD_REQUEST each; the socket stays.
    c.send(queries(10));
    for (let id = 1; id <= 10; id++) await c.frame((f) => f.id === id);
    expect(c.frames.filter((f) => f.error?.data.code === 'BAD_REQUEST').map((f) => f.id)).toEqual([6, 7, 8, 9, 10]);
    expect(called).toHaveBeenCalledTimes(5);
    const before = c.texts.length;
    const end = closeOrFlood(c, before + 100);
    c.send(queries(100_000));
    // Sent before the close reaches the client: not served either.
    c.send(queries(1));
    expect(await end).toBe(1009);
    expect(c.texts.length).toBe(before);
    expect(called).toHaveBeenCalledTimes(5);
  });

  test("ours: tRPC's maxBatchSize too: a message of 100,000 calls costs one close (1009), not a reply per call", async () => {
    const t = initTRPC.create();
    const called = vi.fn();
    const router = t.router({ q: t.procedure.query(() => called()) });
    await using srv = await serve(apply, { router, maxBatchSize: 5 });
    const c = await srv.raw();
    const end = closeOrFlood(c, 100);
    c.send(queries(100_000));
    expect(await end).toBe(1009);
    expect(c.texts).toEqual([]);
    expect(called).not.toHaveBeenCalled();
  });
});
