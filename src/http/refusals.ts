import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

/** Distinct keys remembered, at most: past this every key counts as seen (logged at debug). */
const WARN_ONCE_MAX = 100;

/**
 * Which refused values (origins, hosts) were logged at warn already: the first time each is said
 * at warn, repeats and values past the first 100 at debug, so a scan cannot flood the log.
 */
export class WarnOnce {
  private readonly seen = new Set<string>();

  /** True the first time `key` is seen (while fewer than 100 were). */
  first(key: string): boolean {
    if (this.seen.has(key) || this.seen.size >= WARN_ONCE_MAX) return false;
    this.seen.add(key);
    return true;
  }
}

/** A refused HTTP request: 403 with `{ error }`, never cached. */
export function forbid(res: ServerResponse, error: string): void {
  res.writeHead(403, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify({ error }));
}

/** A refused WebSocket upgrade: `403 Forbidden` with `{ error }` written to the raw socket, which is then destroyed. */
export function forbidUpgrade(socket: Duplex, error: string): void {
  const body = JSON.stringify({ error });
  socket.write(`HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  socket.destroy();
}

/**
 * How long a WebSocket refused right after its upgrade (closed with 4029, too many connections) has
 * to answer the close frame before it is dropped. A browser answers within a round trip; `ws` would
 * wait 30 s, and the refused socket counts in no connection limit meanwhile: a client that never
 * answers could hold one refused socket per connection attempt for that long.
 */
export const REFUSED_CLOSE_MS = 1000;

/** What `refuseSocket` needs of a `ws` socket. */
export interface RefusedSocket {
  close(code: number, reason: string): void;
  terminate(): void;
  once(event: 'close', listener: () => void): unknown;
}

/**
 * Closes a socket refused after its upgrade with `code` and `reason`, and terminates it if its
 * close handshake has not ended within `REFUSED_CLOSE_MS` (the client has seen the code by then,
 * or is not reading).
 */
export function refuseSocket(ws: RefusedSocket, code: number, reason: string): void {
  ws.close(code, reason);
  const timer = setTimeout(() => ws.terminate(), REFUSED_CLOSE_MS);
  timer.unref();
  ws.once('close', () => clearTimeout(timer));
}
