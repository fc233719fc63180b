/**
 * The transport's own timers and writes over a handler's life (ours only: tRPC's adapter keeps two
 * timers per connection, cleared on its close, and has no `limits`).
 *
 * - The keep-alive sweep (one interval for all of a handler's connections) runs while the handler
 *   has connections and stops with the last one: a handler made by `getWSConnectionHandler` has no
 *   `close()`, and a server that makes and drops handlers (tests, hot reload) kept one interval per
 *   handler for ever, holding its connection set. `applyWSSHandler`'s `close()` stops it for good.
 * - A keep-alive `PING` counts against the socket's buffer limit like every other write
 *   (`limits.hardBytes` / `onOverflow`).
 *
 * Intervals are watched by wrapping `setInterval`/`clearInterval` for the test; keep-alive timing
 * runs on fake timers. Every wait is on an event.
 */
import { once } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { initTRPC } from '@trpc/server';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { applyWSSHandler, getWSConnectionHandler } from '../../src/transport/index.js';

const t = initTRPC.create();
const router = t.router({ q: t.procedure.query(() => 'ok') });

/** The intervals started and not cleared since the call (until `vi.restoreAllMocks`). */
function watchIntervals(): Set<unknown> {
  const live = new Set<unknown>();
  const realSet = globalThis.setInterval;
  const realClear = globalThis.clearInterval;
  vi.spyOn(globalThis, 'setInterval').mockImplementation(((fn: () => void, ms?: number) => {
    const timer = realSet(fn, ms);
    live.add(timer);
    return timer;
  }) as typeof setInterval);
  vi.spyOn(globalThis, 'clearInterval').mockImplementation(((timer: NodeJS.Timeout | undefined) => {
    live.delete(timer);
    realClear(timer);
  }) as typeof clearInterval);
  return live;
}

async function listening(): Promise<{ wss: WebSocketServer; url: string } & AsyncDisposable> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  return {
    wss,
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    async [Symbol.asyncDispose]() {
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    },
  };
}

/** Opens a client, waits until the server has its socket; returns both sides. */
async function connect(wss: WebSocketServer, url: string): Promise<{ client: WebSocket; server: WebSocket }> {
  const accepted = once(wss, 'connection') as Promise<[WebSocket, IncomingMessage]>;
  const client = new WebSocket(url);
  await once(client, 'open');
  const [server] = await accepted;
  return { client, server };
}

/** Closes a client and waits for the server side's close (the transport forgets it there). */
async function disconnect(c: { client: WebSocket; server: WebSocket }): Promise<void> {
  const closed = once(c.server, 'close');
  c.client.close();
  await closed;
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('ours: the keep-alive sweep lives as long as the connections', () => {
  test("getWSConnectionHandler: the sweep runs while a connection is open (it is pinged) and stops with the last one (tRPC's timers end with their connection)", async () => {
    await using srv = await listening();
    const live = watchIntervals();
    srv.wss.on('connection', getWSConnectionHandler({ wss: srv.wss, router, keepAlive: { enabled: true, pingMs: 50, pongWaitMs: 60_000 } }));
    const a = await connect(srv.wss, srv.url);
    const b = await connect(srv.wss, srv.url);
    await once(a.client, 'message');
    expect(live.size).toBe(1);
    await disconnect(a);
    expect(live.size).toBe(1);
    await disconnect(b);
    expect(live.size).toBe(0);
    // A later connection starts it again.
    const c = await connect(srv.wss, srv.url);
    expect((await once(c.client, 'message'))[0].toString()).toBe('PING');
    expect(live.size).toBe(1);
    await disconnect(c);
    expect(live.size).toBe(0);
  });

  test('applyWSSHandler: no interval while it has no connection; close() stops the sweep for good', async () => {
    await using srv = await listening();
    const live = watchIntervals();
    const handler = applyWSSHandler({ wss: srv.wss, router, keepAlive: { enabled: true, pingMs: 50, pongWaitMs: 60_000 } });
    expect(live.size).toBe(0);
    const a = await connect(srv.wss, srv.url);
    expect((await once(a.client, 'message'))[0].toString()).toBe('PING');
    expect(live.size).toBe(1);
    await disconnect(a);
    expect(live.size).toBe(0);
    handler.close();
    const b = await connect(srv.wss, srv.url);
    expect(live.size).toBe(0);
    await disconnect(b);
  });
});

describe('ours: a keep-alive PING counts against the socket buffer limit', () => {
  test('a PING written to a stalled socket past limits.hardBytes calls onOverflow, as any reply does; a socket being dropped gets no PING', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    await using srv = await listening();
    const overflows: number[] = [];
    const pings: WebSocket[] = [];
    applyWSSHandler({
      wss: srv.wss,
      router,
      keepAlive: { enabled: true, pingMs: 500, pongWaitMs: 60_000 },
      // A PING frame is 6 bytes on the wire: over this limit whenever it cannot leave at once.
      limits: {
        maxInflight: 10,
        maxBatch: 10,
        hardBytes: 4,
        onOverflow: (ws, bufferedAmount) => {
          overflows.push(bufferedAmount);
          ws.close(4008, 'too much data queued');
        },
      },
    });
    const c = await connect(srv.wss, srv.url);
    const send = c.server.send.bind(c.server);
    c.server.send = ((data: unknown, ...rest: never[]) => {
      if (data === 'PING') pings.push(c.server);
      return (send as (...a: unknown[]) => void)(data, ...rest);
    }) as typeof c.server.send;
    // A stalled link: nothing written to the server's socket leaves it.
    (c.server as unknown as { _socket: Socket })._socket.cork();
    for (let ms = 0; ms < 2_000 && pings.length === 0; ms += 10) await vi.advanceTimersByTimeAsync(10);
    expect(pings).toHaveLength(1);
    expect(overflows).toEqual([6]);
    expect(c.server.readyState).toBe(WebSocket.CLOSING);
    // Being dropped: the sweep writes it no more PINGs.
    await vi.advanceTimersByTimeAsync(2_000);
    expect(pings).toHaveLength(1);
    c.client.terminate();
  });
});
