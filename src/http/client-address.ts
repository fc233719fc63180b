import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';

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

/**
 * The key a client address is counted under by every per-address limit (connection attempts, open
 * connections, new tenants' key sets): an IPv6 address by its /64 (one host or one home network
 * holds a whole /64, so each of its addresses must not count as another client), an IPv4-mapped one
 * as IPv4.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (isIP(address) !== 6) return address;
  const [head = '', tail = ''] = address.toLowerCase().split('::');
  const left = head ? head.split(':') : [];
  const right = address.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = address.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}
