import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';

/**
 * The client's address. Without trusted proxies (`trustedHops` 0) it is the TCP peer. Behind
 * `trustedHops` proxies that each append the address they saw to X-Forwarded-For (nginx's
 * `$proxy_add_x_forwarded_for`), it is the entry that many places from the right, without a port a
 * proxy may have added: the left part of the header is whatever the client sent and is never believed.
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
  return withoutPort(chain[Math.min(trustedHops, chain.length - 1)]!);
}

/**
 * An X-Forwarded-For entry without the port some proxies append (`192.0.2.7:51234`,
 * `[2001:db8::1]:443`; Azure Application Gateway, IIS ARR): with it, every socket of one client
 * came from another "address", and no per-address limit was ever reached.
 */
function withoutPort(entry: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(entry);
  if (bracketed) return bracketed[1]!;
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3}):\d+$/.exec(entry);
  return v4 ? v4[1]! : entry;
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
