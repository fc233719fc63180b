import type { WebSocket } from 'ws';
import { OPEN } from './protocol.js';

/** What the keep-alive sweep reads and writes of a connection (connection.ts). */
export interface LiveConnection {
  readonly ws: WebSocket;
  /** Date.now() of the last message from the client. */
  lastSeen: number;
  /** Date.now() of the unanswered ping, 0 when none is. */
  pingedAt: number;
  /** Writes a frame and checks the socket's buffer limit, as every write of the connection does. */
  write(frame: string): void;
}

/**
 * The connections of one handler, and their keep-alive with tRPC's option shape (`{ enabled,
 * pingMs = 30_000, pongWaitMs = 5_000 }`), in one sweep timer for all connections instead of two
 * timers per connection: a connection is pinged `pingMs` after the client's last message and
 * terminated when nothing arrives within `pongWaitMs` of the ping. The sweep runs every eighth of
 * the shorter delay (at least 10 ms, at most 1 s), so each happens at most that much later than
 * with tRPC's timers.
 *
 * Like tRPC's timers, which end with their connection, the sweep runs only while there are
 * connections: started by the first, stopped when the last one closes (a handler dropped with no
 * connection left holds no timer). `close()` stops it for good. It is unref'd: it never keeps the
 * process alive.
 */
export class LiveConnections {
  private readonly all = new Set<LiveConnection>();
  private sweep: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly step: number;

  constructor(
    private readonly keepAlive: boolean,
    private readonly pingMs = 30_000,
    private readonly pongWaitMs = 5_000,
  ) {
    this.step = Math.max(10, Math.min(1000, Math.floor(Math.min(pingMs, pongWaitMs) / 8)));
  }

  add(c: LiveConnection): void {
    this.all.add(c);
    if (this.sweep === null && this.keepAlive && !this.closed) {
      this.sweep = setInterval(() => this.check(), this.step);
      this.sweep.unref();
    }
  }

  delete(c: LiveConnection): void {
    this.all.delete(c);
    if (this.all.size === 0) this.stop();
  }

  /** Stops the keep-alive for good (the connections are served on without it). */
  close(): void {
    this.closed = true;
    this.stop();
  }

  private stop(): void {
    if (this.sweep !== null) clearInterval(this.sweep);
    this.sweep = null;
  }

  private check(): void {
    const now = Date.now();
    for (const c of this.all) {
      // Closing (refused, dropped for its buffer, failed): neither pinged nor terminated here.
      if (c.ws.readyState !== OPEN) continue;
      if (c.pingedAt === 0) {
        if (now - c.lastSeen >= this.pingMs) {
          c.pingedAt = now;
          // Through the connection's write: a PING counts against the buffer limit as any reply.
          c.write('PING');
        }
      } else if (now - c.pingedAt >= this.pongWaitMs) {
        c.ws.terminate();
      }
    }
  }
}
