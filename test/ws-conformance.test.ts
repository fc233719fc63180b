/**
 * Conformance of our WebSocket transport (src/transport/transport.ts) with tRPC's own adapter
 * (`applyWSSHandler` of the pinned @trpc/server): one scripted session of raw frames runs against
 * both, and every frame the server sends back must be byte-identical. Covers connectionParams,
 * queries, mutations, batches, typed and validation errors, unknown paths, parse errors, the
 * `jsonrpc` echo, string ids, PING/PONG, and subscriptions: tracked and untracked values, resume
 * with `lastEventId`, natural end, stop, errors before and during iteration, duplicate ids.
 * Then the real `@trpc/client` (wsLink) runs against ours.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import { initTRPC, tracked, TRPCError } from '@trpc/server';
import { applyWSSHandler } from '@trpc/server/adapters/ws';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { z } from 'zod';
import {
  channels,
  Collector,
  createWsTransport,
  dispose,
  encodeEvent,
  MemoryBus,
  parseLastEventId,
  PUSH,
  resumableStream,
  roomStreamKind,
  SharedEncoding,
  StreamHubs,
  type EventSource,
  type HubEvent,
  type Pushable,
} from './fixture.js';

interface Ctx {
  token: string | null;
}

const t = initTRPC.context<Ctx>().create({
  transformer: superjson,
  isDev: false,
  errorFormatter: ({ shape, error }) => ({ ...shape, data: { ...shape.data, zod: error.code === 'BAD_REQUEST' ? error.message : null } }),
});
const AT = new Date('2026-11-22T03:00:00.000Z');
/** One event object shared by every subscriber, as the room hub fans out. */
const shared = { type: 'message.new', body: 'héllo "quoted" \u2028', at: AT };

/**
 * Two tracked values of the shared event: pushed with one shared encoding (as a hub's fan-out
 * hands it to our transport: the second id rebuilds the cached tail), pulled by tRPC's adapter.
 */
function sharedTicks(): Pushable<unknown> {
  return {
    [PUSH](sink) {
      const encoding = new SharedEncoding(shared);
      sink.data(tracked('7', shared), encoding);
      sink.data(tracked('8', shared), encoding);
      sink.end();
    },
    async *[Symbol.asyncIterator]() {
      yield tracked('7', shared);
      yield tracked('8', shared);
    },
  };
}

/**
 * A room stream as the product serves it (services/streams.ts: our transport pushes it, tRPC's
 * adapter pulls it), over an in-memory log and bus. Each server gets its own (the same script
 * runs against both).
 */
function roomLog() {
  const log: (HubEvent & { seq: number })[] = [];
  const bus = new MemoryBus();
  const source: EventSource<HubEvent & { seq: number }> = {
    lastSeq: async () => log.length,
    load: async (_key, after, upto, limit) => log.filter((e) => e.seq > after && e.seq <= upto).slice(0, limit) as never,
    oldestSeq: async () => log[0]?.seq ?? null,
  };
  const hubs = new StreamHubs<HubEvent>(roomStreamKind, bus, source as never);
  return {
    hubs,
    source,
    post(body: string) {
      const e = { type: 'room.updated', roomId: 'r1', seq: log.length + 1, name: body, topic: null, by: 'u1' } as unknown as HubEvent & { seq: number };
      log.push(e);
      void bus.publish(channels.room('r1'), encodeEvent(e));
      return e.seq;
    },
  };
}
const logs: { current: ReturnType<typeof roomLog> } = { current: roomLog() };

const router = t.router({
  post: t.procedure.input(z.object({ body: z.string() })).mutation(({ input }) => logs.current.post(input.body)),
  room: t.procedure.input(z.object({ lastEventId: z.string().nullish() })).subscription(({ input, signal }) =>
    resumableStream({
      hubs: logs.current.hubs,
      source: logs.current.source,
      key: 'r1',
      userId: 'u1',
      after: parseLastEventId(input.lastEventId),
      signal,
      ready: (seq) => ({ type: 'ready', roomId: 'r1', seq }) as unknown as HubEvent,
      reset: (seq) => ({ type: 'reset', roomId: 'r1', seq }) as unknown as HubEvent,
      wrap: (id, e) => tracked(id, e),
    }),
  ),
  whoami: t.procedure.query(({ ctx }) => ({ token: ctx.token })),
  echo: t.procedure.input(z.object({ text: z.string().min(1), at: z.date().optional() })).query(({ input }) => ({ ...input, len: input.text.length })),
  add: t.procedure.input(z.object({ a: z.number(), b: z.number() })).mutation(({ input }) => input.a + input.b),
  missing: t.procedure.query(() => {
    throw new TRPCError({ code: 'NOT_FOUND', message: 'room not found' });
  }),
  crash: t.procedure.query(() => {
    throw new Error('boom');
  }),
  ticks: t.procedure.input(z.object({ count: z.number().int().max(10), lastEventId: z.string().nullish() })).subscription(async function* ({ input }) {
    const from = input.lastEventId ? Number(input.lastEventId) + 1 : 1;
    for (let i = from; i <= input.count; i++) yield tracked(String(i), { i, at: AT });
  }),
  sharedTicks: t.procedure.subscription(() => sharedTicks()),
  plain: t.procedure.subscription(async function* () {
    yield { n: 1, at: AT };
    yield 'two';
  }),
  forever: t.procedure.subscription(async function* ({ signal }) {
    yield tracked('1', { n: 1 });
    await new Promise<void>((resolve) => {
      if (signal?.aborted) resolve();
      signal?.addEventListener('abort', () => resolve(), { once: true });
    });
  }),
  failing: t.procedure.subscription(async function* () {
    yield tracked('1', { n: 1 });
    throw new TRPCError({ code: 'FORBIDDEN', message: 'you were removed' });
  }),
  refused: t.procedure.subscription(() => {
    throw new TRPCError({ code: 'UNAUTHORIZED', message: 'access token expired' });
  }),
});

const createContext = async (opts: { info: { connectionParams: Record<string, string> | null } | { connectionParams?: unknown } }): Promise<Ctx> => {
  const params = (opts.info as { connectionParams?: Record<string, string> | null }).connectionParams;
  return { token: params?.token ?? null };
};

async function serve(kind: 'trpc' | 'ours'): Promise<{ url: string } & AsyncDisposable> {
  const server: Server = createServer();
  const wss = new WebSocketServer({ server });
  let closeTransport = () => {};
  if (kind === 'trpc') applyWSSHandler({ wss, router, createContext: createContext as never });
  else closeTransport = createWsTransport({ wss, router, createContext }).close;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `ws://127.0.0.1:${port}`,
    [Symbol.asyncDispose]: async () => {
      closeTransport();
      for (const c of wss.clients) c.terminate();
      wss.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A raw client that records every text frame and waits until a count of them has arrived. */
class RawClient {
  private readonly got = new Collector<string>();
  readonly frames = this.got.items;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.got.push(data.toString()));
  }
  static async open(url: string): Promise<RawClient> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return new RawClient(ws);
  }
  async until(n: number): Promise<void> {
    await this.got.until((xs) => xs.length >= n, `${n} frames`);
  }
}

/**
 * The script: each step sends frames and says how many frames the server answers with. Steps
 * run one at a time, so the order of frames between steps is fixed; within a step the frames of
 * different request ids may interleave differently, so they are compared per request id.
 */
/** What wsLink sends for a procedure without input: superjson of undefined. */
const NONE = superjson.serialize(undefined);

const steps: { name: string; send: (string | Buffer)[]; expect: number }[] = [
  { name: 'connectionParams', send: [JSON.stringify({ method: 'connectionParams', data: { token: 't-1' } })], expect: 0 },
  { name: 'query with context', send: [JSON.stringify({ id: 1, method: 'query', params: { path: 'whoami', input: NONE } })], expect: 1 },
  {
    name: 'batch of query, mutation and invalid input',
    send: [
      JSON.stringify([
        { id: 2, method: 'query', params: { path: 'echo', input: superjson.serialize({ text: 'hi', at: AT }) } },
        { id: 3, method: 'mutation', params: { path: 'add', input: superjson.serialize({ a: 2, b: 3 }) } },
        { id: 4, method: 'query', params: { path: 'echo', input: superjson.serialize({ text: '' }) } },
      ]),
    ],
    expect: 3,
  },
  { name: 'typed error', send: [JSON.stringify({ id: 5, method: 'query', params: { path: 'missing', input: NONE } })], expect: 1 },
  { name: 'unexpected error', send: [JSON.stringify({ id: 6, method: 'query', params: { path: 'crash', input: NONE } })], expect: 1 },
  { name: 'unknown path', send: [JSON.stringify({ id: 7, method: 'query', params: { path: 'nope.nothing', input: NONE } })], expect: 1 },
  { name: 'jsonrpc echo and string id', send: [JSON.stringify({ id: 'q-8', jsonrpc: '2.0', method: 'mutation', params: { path: 'add', input: superjson.serialize({ a: 1, b: 1 }) } })], expect: 1 },
  { name: 'malformed JSON', send: ['{"id": 9, "method": '], expect: 1 },
  { name: 'batch with one bad element', send: [JSON.stringify([{ id: 10, method: 'query', params: { path: 'whoami', input: NONE } }, { id: 11, method: 'explode' }])], expect: 1 },
  { name: 'no input at all (superjson cannot read it: a parse error)', send: [JSON.stringify({ id: 13, method: 'query', params: { path: 'whoami' } })], expect: 1 },
  { name: 'missing id', send: [JSON.stringify({ id: null, method: 'query', params: { path: 'whoami', input: NONE } })], expect: 1 },
  { name: 'PING', send: ['PING'], expect: 1 },
  { name: 'binary frame', send: [Buffer.from(JSON.stringify({ id: 12, method: 'query', params: { path: 'whoami', input: NONE } }))], expect: 1 },
  {
    name: 'tracked subscription to its natural end',
    send: [JSON.stringify({ id: 20, method: 'subscription', params: { path: 'ticks', input: superjson.serialize({ count: 3 }) } })],
    expect: 5,
  },
  {
    name: 'resume with lastEventId (outside the input)',
    send: [JSON.stringify({ id: 21, jsonrpc: '2.0', method: 'subscription', params: { path: 'ticks', input: superjson.serialize({ count: 4 }), lastEventId: '2' } })],
    expect: 4,
  },
  { name: 'shared events', send: [JSON.stringify({ id: 22, method: 'subscription', params: { path: 'sharedTicks', input: NONE } })], expect: 4 },
  { name: 'untracked values', send: [JSON.stringify({ id: 23, method: 'subscription', params: { path: 'plain', input: NONE } })], expect: 4 },
  { name: 'open-ended subscription', send: [JSON.stringify({ id: 24, method: 'subscription', params: { path: 'forever', input: NONE } })], expect: 2 },
  { name: 'duplicate subscription id', send: [JSON.stringify({ id: 24, method: 'subscription', params: { path: 'forever', input: NONE } })], expect: 1 },
  { name: 'stop', send: [JSON.stringify({ id: 24, method: 'subscription.stop' })], expect: 1 },
  { name: 'error during iteration', send: [JSON.stringify({ id: 25, method: 'subscription', params: { path: 'failing', input: NONE } })], expect: 4 },
  { name: 'error before the first value', send: [JSON.stringify({ id: 26, method: 'subscription', params: { path: 'refused', input: NONE } })], expect: 1 },
  { name: 'subscription input error', send: [JSON.stringify({ id: 27, method: 'subscription', params: { path: 'ticks', input: superjson.serialize({ count: 99 }) } })], expect: 1 },
  { name: 'room stream (pushed by ours): ready', send: [JSON.stringify({ id: 30, method: 'subscription', params: { path: 'room', input: superjson.serialize({}) } })], expect: 2 },
  { name: 'room stream: a live event', send: [JSON.stringify({ id: 31, method: 'mutation', params: { path: 'post', input: superjson.serialize({ body: 'one' }) } })], expect: 2 },
  { name: 'room stream: two more', send: [JSON.stringify([{ id: 32, method: 'mutation', params: { path: 'post', input: superjson.serialize({ body: 'two' }) } }, { id: 33, method: 'mutation', params: { path: 'post', input: superjson.serialize({ body: 'three' }) } }])], expect: 4 },
  { name: 'room stream: stop', send: [JSON.stringify({ id: 30, method: 'subscription.stop' })], expect: 1 },
  { name: 'room stream: resume replays from the log, then live', send: [JSON.stringify({ id: 34, method: 'subscription', params: { path: 'room', input: superjson.serialize({}), lastEventId: '1' } })], expect: 3 },
  { name: 'room stream: live after the replay', send: [JSON.stringify({ id: 35, method: 'mutation', params: { path: 'post', input: superjson.serialize({ body: 'four' }) } })], expect: 2 },
  { name: 'room stream: bad lastEventId', send: [JSON.stringify({ id: 36, method: 'subscription', params: { path: 'room', input: superjson.serialize({}), lastEventId: 'x' } })], expect: 1 },
  { name: 'query after everything', send: [JSON.stringify({ id: 28, method: 'query', params: { path: 'whoami', input: NONE } })], expect: 1 },
];

async function runScript(url: string): Promise<string[][]> {
  logs.current = roomLog();
  const client = await RawClient.open(`${url}/?connectionParams=1`);
  const out: string[][] = [];
  let seen = 0;
  for (const step of steps) {
    for (const frame of step.send) client.ws.send(frame, { binary: typeof frame !== 'string' });
    seen += step.expect;
    await client.until(seen);
    out.push(client.frames.slice(seen - step.expect, seen));
  }
  // One more round trip: nothing unexpected may have arrived after the last step.
  client.ws.send('PING');
  await client.until(seen + 1);
  expect(client.frames.slice(seen)).toEqual(['PONG']);
  client.ws.close();
  return out;
}

/** Frames grouped by request id, in arrival order within each id. */
function byRequest(frames: string[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const f of frames) {
    const id = f.startsWith('{') ? String((JSON.parse(f) as { id: unknown }).id) : f;
    out[id] ??= [];
    out[id].push(f);
  }
  return out;
}

describe('WebSocket transport conformance with tRPC’s adapter', () => {
  let theirs: Awaited<ReturnType<typeof serve>>;
  let ours: Awaited<ReturnType<typeof serve>>;
  beforeAll(async () => {
    theirs = await serve('trpc');
    ours = await serve('ours');
  });
  afterAll(() => dispose(theirs, ours));

  it('answers one scripted session with byte-identical frames', async () => {
    const reference = await runScript(theirs.url);
    const actual = await runScript(ours.url);
    for (let i = 0; i < steps.length; i++) {
      expect.soft(byRequest(actual[i]!), steps[i]!.name).toEqual(byRequest(reference[i]!));
    }
    // The script exercises what it claims (checked on the reference, so a silent server fails).
    const all = reference.flat();
    expect(all.filter((f) => f.includes('"type":"started"'))).toHaveLength(8);
    expect(all.filter((f) => f.includes('"type":"stopped"'))).toHaveLength(7);
    expect(all.some((f) => f.includes('"code":"PARSE_ERROR"'))).toBe(true);
    expect(reference[1]![0]).toContain('"token":"t-1"');
  });

  it('serves the real @trpc/client: queries, mutations, tracked resume and stop', async () => {
    const wsc = createWSClient({ url: `${ours.url}/`, connectionParams: { token: 't-2' } });
    const client = createTRPCClient<typeof router>({ links: [wsLink<typeof router>({ client: wsc, transformer: superjson })] });
    try {
      expect(await client.whoami.query()).toEqual({ token: 't-2' });
      expect(await client.echo.query({ text: 'abc', at: AT })).toEqual({ text: 'abc', at: AT, len: 3 });
      expect(await client.add.mutate({ a: 20, b: 22 })).toBe(42);
      await expect(client.missing.query()).rejects.toMatchObject({ message: 'room not found', data: { code: 'NOT_FOUND' } });
      const got: { id: string; i: number; at: Date }[] = [];
      await new Promise<void>((resolve, reject) => {
        client.ticks.subscribe(
          { count: 5, lastEventId: '2' },
          { onData: (e) => got.push({ id: e.id, ...e.data }), onError: reject, onComplete: () => resolve() },
        );
      });
      expect(got).toEqual([3, 4, 5].map((i) => ({ id: String(i), i, at: AT })));
      const stopped = await new Promise<string>((resolve, reject) => {
        const sub = client.forever.subscribe(undefined, {
          onData: (e) => {
            sub.unsubscribe();
            resolve(e.id);
          },
          onError: reject,
        });
      });
      expect(stopped).toBe('1');
      // The connection still serves after the stop.
      expect(await client.add.mutate({ a: 1, b: 2 })).toBe(3);
    } finally {
      await wsc.close();
    }
  });
});
