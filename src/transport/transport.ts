import type { IncomingMessage } from 'node:http';
import { type AnyRouter, getTRPCErrorFromUnknown } from '@trpc/server';
import type { WebSocket } from 'ws';
import { connectionClass } from './connection.js';
import type { FrameWriteCounters } from './frames.js';
import { keepAliveSweep, type LiveConnection } from './keepalive.js';
import { OPEN, type TransportOptions } from './protocol.js';

/** What `applyWSSHandler` returns: tRPC's `broadcastReconnectNotification` plus `close`. */
export interface WsTransport {
  /** Asks every client to reconnect (tRPC's `reconnect` notification), e.g. before a shutdown. */
  broadcastReconnectNotification(): void;
  /** Stops the keep-alive sweep (also done when the WebSocket server closes). */
  close(): void;
}

/**
 * Returns a `ws` connection listener that serves a router, as tRPC's `getWSConnectionHandler`:
 * for your own WebSocket server. With `keepAlive.enabled`, its sweep starts here (it is unref'd:
 * it never keeps the process alive).
 */
export function getWSConnectionHandler<TRouter extends AnyRouter>(opts: TransportOptions<TRouter>) {
  const connections = new Set<LiveConnection>();
  if (opts.keepAlive?.enabled) keepAliveSweep(connections, opts.keepAlive.pingMs, opts.keepAlive.pongWaitMs);
  return connectionHandler(opts, connections);
}

function connectionHandler<TRouter extends AnyRouter>(opts: TransportOptions<TRouter>, connections: Set<LiveConnection>) {
  const counters: FrameWriteCounters = opts.counters ?? { wsDirectWrites: 0, wsFallbackWrites: 0 };
  const Connection = connectionClass(opts, connections, counters);
  return (ws: WebSocket, req: IncomingMessage) => {
    const conn = new Connection(ws, req);
    connections.add(conn);
    ws.on('message', (data, isBinary) => conn.onMessage(data, isBinary));
    // Socket errors are reported, never thrown (an unhandled 'error' would crash the process).
    ws.on('error', (cause) => conn.reportError(getTRPCErrorFromUnknown(cause), undefined, 'unknown', undefined));
    ws.once('close', () => conn.closed());
    if (!hasConnectionParamsFlag(req.url)) conn.ctxReady = conn.createContext(() => null);
  };
}

/** `?connectionParams=1` in the upgrade URL: the first message carries the connection params. */
function hasConnectionParamsFlag(url: string | undefined): boolean {
  const q = url?.indexOf('?') ?? -1;
  if (q < 0 || !url) return false;
  return new URLSearchParams(url.slice(q + 1)).get('connectionParams') === '1';
}

/**
 * Serves a router on a `ws` WebSocket server: a drop-in for `applyWSSHandler` of
 * `@trpc/server/adapters/ws` (same options, same protocol, same frames), plus the options of
 * `TransportExtraOptions`. See README.md in this folder for what is faster, why, and what differs.
 */
export function applyWSSHandler<TRouter extends AnyRouter>(opts: TransportOptions<TRouter>): WsTransport {
  const connections = new Set<LiveConnection>();
  const onConnection = connectionHandler(opts, connections);
  opts.wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    if (opts.prefix && !req.url?.startsWith(opts.prefix)) return;
    onConnection(ws, req);
  });

  let sweep: NodeJS.Timeout | null = null;
  if (opts.keepAlive?.enabled) sweep = keepAliveSweep(connections, opts.keepAlive.pingMs, opts.keepAlive.pongWaitMs);
  const close = () => {
    if (sweep) clearInterval(sweep);
    sweep = null;
  };
  opts.wss.once('close', close);

  return {
    broadcastReconnectNotification() {
      const notification = { id: null, method: 'reconnect' };
      const frame = opts.experimental_encoder ? opts.experimental_encoder.encode(notification) : JSON.stringify(notification);
      for (const ws of opts.wss.clients) if (ws.readyState === OPEN) ws.send(frame);
    },
    close,
  };
}
