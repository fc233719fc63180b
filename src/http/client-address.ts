import type { IncomingMessage } from 'node:http';

/**
 * The client's address. Without trusted proxies (`trustedHops` 0) it is the TCP peer. Behind
 * `trustedHops` proxies that each append the address they saw to X-Forwarded-For (nginx's
 * `$proxy_add_x_forwarded_for`), it is the entry that many places from the right: the left part of
 * the header is whatever the client sent and is never believed.
 */
export function clientAddress(req: IncomingMessage, trustedHops: number): string {
  const peer = req.socket?.remoteAddress ?? 'unknown';
  if (trustedHops <= 0) return peer;
  const header = req.headers?.['x-forwarded-for'];
  const entries = (Array.isArray(header) ? header.join(',') : (header ?? ''))
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  // [peer, last entry, the one before, ...]: the address each trusted hop received the request from.
  const chain = [peer, ...entries.reverse()];
  return chain[Math.min(trustedHops, chain.length - 1)]!;
}
