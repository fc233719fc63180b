import type { IncomingMessage } from 'node:http';
import { type AnyRouter, getTRPCErrorFromUnknown } from '@trpc/server';
import type { WebSocket } from 'ws';
import type { FrameWriteCounters } from './frames.js';
import { connectionClass } from './ws-connection.js';
import { keepAliveSweep, type LiveConnection } from './ws-keepalive.js';
import { OPEN, type WsTransportOptions } from './ws-protocol.js';

export type { TransportErrorInfo, WsTransportOptions } from './ws-protocol.js';

/**
 * The WebSocket transport: tRPC's WebSocket protocol (what `@trpc/client`'s wsLink speaks), served
 * by our own connection handler instead of `applyWSSHandler`, for the fan-out hot path.
 *
 * Queries and mutations go through `callTRPCProcedure` (middlewares, input validation, error
 * formatting exactly as tRPC's adapter). Subscriptions differ only in how values reach the socket.
 * Our streams (src/stream/streams.ts) are pushed: the room hub's fan-out loop hands each live
 * event to the stream, which writes its frame to the socket synchronously (no promise or generator
 * step per subscriber and value). Any other subscription is pulled as an async iterator. Either
 * way a tracked event's frame is the subscription's head (`{"id":<request id>`) plus the event's
 * tail; an event the hub fans out to many subscribers comes with the fan-out's shared encoding, so
 * its tail is serialized and UTF-8-encoded once (frames.ts), and frames written to one socket
 * within one tick leave in one system call (`cork`). tRPC's
 * adapter runs a generic pipeline per value and subscriber instead (an iterator step, a promise
 * race against abort, object spreads, the transformer, the encoder). Keep-alive is one sweep timer
 * for all connections instead of two timers per connection.
 *
 * The connection (context, requests, subscriptions, writes, corking) is in ws-connection.ts, the
 * keep-alive sweep in ws-keepalive.ts, the protocol's messages and checks in ws-protocol.ts.
 *
 * The protocol is pinned to the exact `@trpc/*` version in package.json, and
 * test/ws-conformance.test.ts runs one scripted session against tRPC's own adapter and against this
 * one and compares the frames byte for byte.
 *
 * A pulled subscription must end its iterator when its `signal` aborts: the loop awaits the
 * iterator without racing it against the signal, which would cost a promise race per value.
 */

export interface WsTransport {
  /** Asks every client to reconnect (tRPC's `reconnect` notification), e.g. before a shutdown. */
  broadcastReconnectNotification(): void;
  /** Stops the keep-alive sweep (connections are closed by their owner). */
  close(): void;
}

export function createWsTransport<TRouter extends AnyRouter, TCtx>(opts: WsTransportOptions<TRouter, TCtx>): WsTransport {
  const connections = new Set<LiveConnection>();
  const counters: FrameWriteCounters = opts.counters ?? { wsDirectWrites: 0, wsFallbackWrites: 0 };
  const Connection = connectionClass(opts, connections, counters);

  opts.wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    const conn = new Connection(ws, req);
    connections.add(conn);
    ws.on('message', (data, isBinary) => conn.onMessage(data, isBinary));
    ws.on('error', (cause) => conn.reportError(getTRPCErrorFromUnknown(cause), undefined, 'unknown', undefined));
    ws.once('close', () => conn.closed());
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.searchParams.get('connectionParams') !== '1') conn.ctxReady = conn.createContext(() => null);
  });

  let sweep: NodeJS.Timeout | null = null;
  if (opts.keepAlive) sweep = keepAliveSweep(connections, opts.keepAlive);

  return {
    broadcastReconnectNotification() {
      const frame = JSON.stringify({ id: null, method: 'reconnect' });
      for (const c of connections) if (c.ws.readyState === OPEN) c.ws.send(frame);
    },
    close() {
      if (sweep) clearInterval(sweep);
      sweep = null;
    },
  };
}
