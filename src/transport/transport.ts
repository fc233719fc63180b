import type { IncomingMessage } from 'node:http';
import { type AnyRouter, getTRPCErrorFromUnknown } from '@trpc/server';
import type { RawData, WebSocket } from 'ws';
import { connectionClass } from './connection.js';
import type { FrameWriteCounters } from './frames.js';
import { LiveConnections } from './keepalive.js';
import { OPEN, type TransportOptions } from './protocol.js';

/** What `applyWSSHandler` returns: tRPC's `broadcastReconnectNotification` plus `close`. */
export interface WsTransport {
  /** Asks every client to reconnect (tRPC's `reconnect` notification), e.g. before a shutdown. */
  broadcastReconnectNotification(): void;
  /**
   * Stops the keep-alive sweep for good (also done when the WebSocket server closes). Without it the
   * sweep still runs only while there are connections.
   */
  close(): void;
}

/**
 * Returns a `ws` connection listener that serves a router, as tRPC's `getWSConnectionHandler`:
 * for your own WebSocket server. With `keepAlive.enabled`, its sweep runs while the listener has
 * connections (keepalive.ts): nothing to stop when the server is done with it.
 */
export function getWSConnectionHandler<TRouter extends AnyRouter>(opts: TransportOptions<TRouter>) {
  return connectionHandler(opts, liveConnections(opts));
}

function liveConnections<TRouter extends AnyRouter>(opts: TransportOptions<TRouter>): LiveConnections {
  const k = opts.keepAlive;
  return new LiveConnections(k?.enabled === true, k?.pingMs, k?.pongWaitMs);
}

/** What the socket's listeners below need of its connection. */
interface SocketListener {
  onMessage(data: RawData, isBinary: boolean): void;
  reportError(error: ReturnType<typeof getTRPCErrorFromUnknown>, path: undefined, type: 'unknown', input: undefined): void;
  closed(): void;
}

/**
 * The connection of each socket. The three listeners are the same functions for every socket (ws
 * calls them with the socket as `this`): three closures and a `once` wrapper per connection were
 * about 0.4 KB of every idle connection (docs/BENCHMARKS.md, seventeenth pass).
 */
const connectionOf = new WeakMap<WebSocket, SocketListener>();

function onSocketMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  connectionOf.get(this)?.onMessage(data, isBinary);
}

/** Socket errors are reported, never thrown (an unhandled 'error' would crash the process). */
function onSocketError(this: WebSocket, cause: Error): void {
  connectionOf.get(this)?.reportError(getTRPCErrorFromUnknown(cause), undefined, 'unknown', undefined);
}

function onSocketClose(this: WebSocket): void {
  const conn = connectionOf.get(this);
  connectionOf.delete(this);
  conn?.closed();
}

function connectionHandler<TRouter extends AnyRouter>(opts: TransportOptions<TRouter>, connections: LiveConnections) {
  const counters: FrameWriteCounters = opts.counters ?? { wsDirectWrites: 0, wsFallbackWrites: 0 };
  const Connection = connectionClass(opts, connections, counters);
  return (ws: WebSocket, req: IncomingMessage) => {
    const conn = new Connection(ws, req);
    connections.add(conn);
    connectionOf.set(ws, conn);
    ws.on('message', onSocketMessage);
    ws.on('error', onSocketError);
    ws.on('close', onSocketClose);
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
  const connections = liveConnections(opts);
  const onConnection = connectionHandler(opts, connections);
  opts.wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    if (opts.prefix && !req.url?.startsWith(opts.prefix)) return;
    onConnection(ws, req);
  });

  const close = () => connections.close();
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
