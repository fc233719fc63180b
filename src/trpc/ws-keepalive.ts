import type { WebSocket } from 'ws';
import { OPEN } from './ws-protocol.js';

/** What the keep-alive sweep reads and writes of a connection (ws-connection.ts). */
export interface LiveConnection {
  readonly ws: WebSocket;
  /** Date.now() of the last message from the client; a ping's time while one is unanswered. */
  lastSeen: number;
  pingedAt: number;
}

/**
 * Keep-alive: one sweep for all connections. A connection is pinged after `pingMs` without a
 * message and closed when nothing arrives within `pongWaitMs` of the ping.
 */
export function keepAliveSweep(connections: Set<LiveConnection>, keepAlive: { pingMs: number; pongWaitMs: number }): NodeJS.Timeout {
  const { pingMs, pongWaitMs } = keepAlive;
  const step = Math.max(20, Math.min(1000, Math.floor(Math.min(pingMs, pongWaitMs) / 4)));
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
