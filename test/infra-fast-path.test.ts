/**
 * The fan-out fast path proves it runs: frames of tracked events are written with ws's internals
 * (`_sender.sendFrame` after `_socket.cork`, src/transport/frames.ts and src/transport/transport.ts), and
 * `chat_ws_fallback_writes_total` counts every frame that had to go through `ws.send` instead. A ws
 * upgrade that renames those internals makes the first test fail; the others show that the
 * fallback is counted and still writes the same bytes.
 */
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { initTRPC, tracked } from '@trpc/server';
import superjson from 'superjson';
import { describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import {
  Collector,
  createWsTransport,
  fileServer,
  frameHead,
  PUSH,
  recordEvents,
  Scope,
  SharedEncoding,
  trackedTail,
  uuid,
  wsClient,
  writeTextFrame,
  type FrameWriteCounters,
  type Pushable,
  type RecordedEvent,
  type WsTestClient,
} from './fixture.js';

function metricValue(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ').at(-1)) : NaN;
}

async function scrape(url: string): Promise<{ direct: number; fallback: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return { direct: metricValue(text, 'chat_ws_direct_writes_total'), fallback: metricValue(text, 'chat_ws_fallback_writes_total') };
}

describe('fan-out through a real server and real clients', () => {
  const srv = fileServer('infra_fast_path');

  it('writes every frame with the direct write (sendFrame, corked) and none with the fallback', async () => {
    const users = ['fp-owner', 'fp-a', 'fp-b', 'fp-c'].map((u) => `${u}-${uuid().slice(0, 6)}`);
    await using scope = new Scope();
    const [owner, ...readers] = users.map((userId) => scope.use(wsClient({ url: srv.url, userId }))) as [WsTestClient, ...WsTestClient[]];
    const room = await owner.trpc.room.create.mutate({ kind: 'group', name: 'fast path', memberIds: users.slice(1) });
    const before = await scrape(srv.url);
    expect(before.fallback).toBe(0);
    const logs = readers.map((c) => scope.use(recordEvents(c, { roomId: room.id })).events);
    await Promise.all(logs.map((l) => l.until((xs) => xs.some((x) => x.data.type === 'ready'), 'ready')));
    const SENDS = 5;
    for (let i = 0; i < SENDS; i++) await owner.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m${i}` });
    const news = (xs: RecordedEvent[]) => xs.filter((x) => x.data.type === 'message.new').length;
    await Promise.all(logs.map((l) => l.until((xs) => news(xs) === SENDS, `${SENDS} messages`)));
    const after = await scrape(srv.url);
    // Each reader got its `ready` and every message through the hub's fan-out (3 subscribers:
    // one shared encoding per event), each frame one direct write.
    expect(after.fallback).toBe(0);
    expect(after.direct - before.direct).toBeGreaterThanOrEqual(readers.length * (SENDS + 1));
  });
});

describe('the fallback write', () => {
  it('is counted when the socket has no `_sender`, and sends the same bytes with ws.send', () => {
    const counters: FrameWriteCounters = { wsDirectWrites: 0, wsFallbackWrites: 0 };
    const sent: { data: Buffer; binary: boolean }[] = [];
    const socket = { send: (data: Buffer, opts: { binary: boolean }) => void sent.push({ data, binary: opts.binary }) };
    const event = { type: 'message.new', at: new Date('2026-11-22T03:00:00Z') };
    const head = frameHead(7, undefined);
    const tail = trackedTail('3', event, new SharedEncoding(event));
    writeTextFrame(socket, head, tail, counters);
    expect(counters).toEqual({ wsDirectWrites: 0, wsFallbackWrites: 1 });
    expect(sent).toHaveLength(1);
    expect(sent[0]!.binary).toBe(false);
    expect(sent[0]!.data.toString('utf8')).toBe(
      JSON.stringify({ id: 7, result: { type: 'data', data: superjson.serialize({ id: '3', data: event }), id: '3' } }),
    );
  });

  it('is counted by the transport when ws hides sendFrame, and the client still reads the same frames', async () => {
    const withFast = await runTransport(false);
    const withoutFast = await runTransport(true);
    expect(withFast.counters).toEqual({ wsDirectWrites: 3, wsFallbackWrites: 0 });
    expect(withoutFast.counters).toEqual({ wsDirectWrites: 0, wsFallbackWrites: 3 });
    expect(withoutFast.frames).toEqual(withFast.frames);
  });
});

const AT = new Date('2026-11-22T03:00:00.000Z');
const t = initTRPC.create({ transformer: superjson });
const shared = { type: 'message.new', body: 'héllo', at: AT };
const router = t.router({
  // Pushed like a room stream: three tracked values of one shared event, then the end.
  ticks: t.procedure.subscription(
    (): Pushable<unknown> => ({
      [PUSH](sink) {
        const encoding = new SharedEncoding(shared);
        for (const id of ['1', '2', '3']) sink.data(tracked(id, shared), encoding);
        sink.end();
      },
      async *[Symbol.asyncIterator]() {
        for (const id of ['1', '2', '3']) yield tracked(id, shared);
      },
    }),
  ),
});

/**
 * One subscription through the transport on a bare WebSocketServer. With `hideSendFrame`, every
 * server socket's sender looks like one of a ws version without `sendFrame` (ws itself keeps
 * working: its own `send` still reaches the real sender).
 */
async function runTransport(hideSendFrame: boolean): Promise<{ counters: FrameWriteCounters; frames: string[] }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  if (hideSendFrame) {
    wss.on('connection', (ws) => {
      const internals = ws as unknown as { _sender: object };
      const real = internals._sender;
      internals._sender = new Proxy(real, {
        get(target, key) {
          if (key === 'sendFrame') return undefined;
          const v = Reflect.get(target, key) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    });
  }
  const counters: FrameWriteCounters = { wsDirectWrites: 0, wsFallbackWrites: 0 };
  const transport = createWsTransport({ wss, router, createContext: async () => ({}), counters });
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  const frames = new Collector<string>();
  client.on('message', (data) => frames.push(data.toString()));
  client.on('error', frames.fail);
  try {
    await once(client, 'open');
    client.send(JSON.stringify({ id: 1, method: 'subscription', params: { path: 'ticks', input: superjson.serialize(undefined) } }));
    await frames.until((xs) => xs.at(-1)?.includes('"type":"stopped"') === true, 'the stopped frame');
    // started, three values, stopped
    expect(frames.items).toHaveLength(5);
    return { counters, frames: frames.items };
  } finally {
    client.terminate();
    transport.close();
    await new Promise<void>((r) => wss.close(() => r()));
  }
}
