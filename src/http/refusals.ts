import { type IncomingMessage, type OutgoingHttpHeader, type OutgoingHttpHeaders, ServerResponse } from 'node:http';
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

/**
 * The most of a request's body node reads after an answer given before it: a body declared at most
 * this long is read to its end and its connection kept (a routine 401 or 404 of a small call keeps
 * it, and its client gets the answer, never a reset); a longer or chunked one ends the connection.
 */
export const EARLY_ANSWER_READ_MAX_BYTES = 64 * 1024;

/** Whether what is left of a request's body may be longer than EARLY_ANSWER_READ_MAX_BYTES (chunked: of any length). */
function restMayBeLong(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > EARLY_ANSWER_READ_MAX_BYTES;
}

/**
 * The server's answers (`createServer({ ServerResponse: EarlyAnswerResponse })`). An answer given
 * while the request's body has not all arrived (an unknown path or procedure, a wrong method, a
 * refusal, a body over a limit: answered without reading it) says `Connection: close` unless what
 * is left is short (EARLY_ANSWER_READ_MAX_BYTES): node then ends the connection once the answer is
 * out and destroys the socket right after it, instead of reading and dropping the rest of the body,
 * of any size, to keep the connection for a next request. An answer to a request whose body was
 * read to its end (a tRPC call, an upload) keeps its connection; WebSocket upgrades get no
 * ServerResponse.
 */
export class EarlyAnswerResponse<Request extends IncomingMessage = IncomingMessage> extends ServerResponse<Request> {
  // Every answer's head goes through here: node's implicit head (write/end without writeHead) too.
  override writeHead(statusCode: number, ...rest: unknown[]): this {
    if (!this.headersSent && !this.req.complete && restMayBeLong(this.req)) this.setHeader('connection', 'close');
    // Node reads both forms: (status, message?, headers?) and (status, headers?).
    return super.writeHead(statusCode, ...(rest as [string | undefined, OutgoingHttpHeaders | OutgoingHttpHeader[] | undefined]));
  }
}

/**
 * Stops reading a request's body once more than `limit` bytes of it came. For tRPC's endpoint: its
 * adapter refuses a body past maxBodySize (413) but leaves the request flowing, so what follows would
 * be read and dropped for as long as the answer takes (a slow database or Redis: of any size). The
 * rest stays unread, and the answer, given before the body's end, ends the connection.
 */
export function readAtMost(req: IncomingMessage, limit: number): void {
  let size = 0;
  const count = (chunk: Buffer) => {
    size += chunk.length;
    if (size <= limit) return;
    req.off('data', count);
    req.pause();
  };
  req.on('data', count);
}
