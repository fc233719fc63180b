import type { WebSocket } from 'ws';
import { OPEN } from './protocol.js';

/** What the keep-alive sweep reads and writes of a connection (connection.ts). */
export interface LiveConnection {
  readonly ws: WebSocket;
  /** Date.now() of the last message from the client. */
  lastSeen: number;
  /** Date.now() of the unanswered ping, 0 when none is. */
  pingedAt: number;
}

/**
 * Keep-alive with tRPC's option shape (`{ enabled, pingMs = 30_000, pongWaitMs = 5_000 }`), in one
 * sweep timer for all connections instead of two timers per connection: a connection is pinged
 * `pingMs` after the client's last message and terminated when nothing arrives within
 * `pongWaitMs` of the ping. The sweep runs every eighth of the shorter delay (at least 10 ms, at
 * most 1 s), so each happens at most that much later than with tRPC's timers.
 */
export function keepAliveSweep(connections: Set<LiveConnection>, pingMs = 30_000, pongWaitMs = 5_000): NodeJS.Timeout {
  const step = Math.max(10, Math.min(1000, Math.floor(Math.min(pingMs, pongWaitMs) / 8)));
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const c of connections) {
      if (c.ws.readyState !== OPEN) continue;
      if (c.pingedAt === 0) {
        if (now - c.lastSeen >= pingMs) {
          c.pingedAt = now;
          c.ws.send('PING');
        }
      } else if (now - c.pingedAt >= pongWaitMs) {
        c.ws.terminate();
      }
    }
  }, step);
  sweep.unref();
  return sweep;
}
