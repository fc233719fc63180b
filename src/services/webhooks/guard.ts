import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { badRequest } from '../../domain/errors.js';

/**
 * The SSRF guard of outgoing webhooks: a URL must be http(s), and every address its host resolves
 * to must be public. Checked when a webhook is created or changed and again before every request,
 * which then connects to exactly the addresses checked here (no second lookup).
 */

const blocked = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], // "this network", unspecified
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // CGNAT
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, cloud metadata (169.254.169.254)
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  blocked.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [
  ['::', 96], // unspecified, and IPv4-compatible addresses (::a.b.c.d, deprecated)
  ['::1', 128],
  ['::ffff:0:0:0', 96], // IPv4-translated (SIIT): an IPv4 address in another form
  ['100::', 64], // discard-only
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
  ['64:ff9b::', 96], // NAT64 of any IPv4 address
  ['2002::', 16], // 6to4
] as const) {
  blocked.addSubnet(net, bits, 'ipv6');
}

/** True for an address a webhook must not reach (IPv4-mapped IPv6 addresses are checked as IPv4). */
export function isForbiddenAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return blocked.check(mapped[1]!, 'ipv4');
  const family = isIP(address);
  if (family === 0) return true;
  return blocked.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

export class UrlRefused extends Error {}

/**
 * Bounds of the guard's DNS lookups. `dns.lookup` runs getaddrinfo on libuv's thread pool (4
 * threads unless UV_THREADPOOL_SIZE says otherwise), shared with async fs, crypto and every other
 * lookup of the process; a name whose name server never answers holds a thread for the resolver's
 * timeout (10 s and more). Anyone who may register a webhook or a push device chooses the name, so:
 * - at most GUARD_LOOKUP_CONCURRENCY guard lookups run at once per process (more wait, in order),
 *   which always leaves the pool threads for everything else;
 * - a caller is answered after GUARD_LOOKUP_TIMEOUT_MS at the latest (UrlRefused, "could not
 *   resolve <host> within N ms"), waiting for a slot included. A getaddrinfo that timed out still
 *   holds its thread until it returns, so its slot is freed only when the lookup really settles.
 * 5 s: a name server that answers at all answers far sooner, and it is half of the request
 * timeouts (WEBHOOK_TIMEOUT_MS, PUSH_TIMEOUT_MS default to 10 s) that follow the lookup.
 */
export const GUARD_LOOKUP_CONCURRENCY = 2;
export const GUARD_LOOKUP_TIMEOUT_MS = 5000;

/** All addresses of a host name. */
export type GuardLookup = (host: string) => Promise<ResolvedAddress[]>;

const systemLookup: GuardLookup = async (host) =>
  (await lookup(host, { all: true, verbatim: true })).map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));

let lookupImpl: GuardLookup = systemLookup;
let lookupTimeoutMs = GUARD_LOOKUP_TIMEOUT_MS;
let lookupsInFlight = 0;
const waitingLookups: Array<() => void> = [];

/** Tests only: replaces the lookup and its timeout; no argument restores the system's and the default. */
export function setGuardLookupForTests(opts?: { lookup?: GuardLookup; timeoutMs?: number }): void {
  lookupImpl = opts?.lookup ?? systemLookup;
  lookupTimeoutMs = opts?.timeoutMs ?? GUARD_LOOKUP_TIMEOUT_MS;
}

/** Guard lookups holding a slot now (started and not settled, timed out or not). */
export const guardLookupsInFlight = () => lookupsInFlight;

/** lookupImpl within the bounds above (GUARD_LOOKUP_CONCURRENCY, GUARD_LOOKUP_TIMEOUT_MS). */
function boundedLookup(host: string): Promise<ResolvedAddress[]> {
  const impl = lookupImpl;
  const ms = lookupTimeoutMs;
  return new Promise<ResolvedAddress[]>((resolve, reject) => {
    let answered = false;
    const start = () => {
      lookupsInFlight++;
      let found: Promise<ResolvedAddress[]>;
      try {
        found = impl(host);
      } catch (err) {
        found = Promise.reject(err);
      }
      found
        .then(
          (addresses) => {
            if (answered) return;
            answered = true;
            clearTimeout(timer);
            resolve(addresses);
          },
          (err: unknown) => {
            if (answered) return;
            answered = true;
            clearTimeout(timer);
            reject(err);
          },
        )
        .finally(() => {
          // Only now is the pool thread free again: the next waiting lookup may start.
          lookupsInFlight--;
          waitingLookups.shift()?.();
        });
    };
    const timer = setTimeout(() => {
      answered = true;
      const queued = waitingLookups.indexOf(start);
      if (queued >= 0) waitingLookups.splice(queued, 1);
      reject(new UrlRefused(`could not resolve ${host} within ${ms} ms`));
    }, ms);
    if (lookupsInFlight < GUARD_LOOKUP_CONCURRENCY) start();
    else waitingLookups.push(start);
  });
}

/** The host of a URL without IPv6 brackets. */
export const hostOf = (url: URL) => url.hostname.replace(/^\[(.*)\]$/, '$1');

/**
 * Resolves the URL's host (all addresses) and refuses it when any address is forbidden, unless
 * private addresses are allowed. Throws UrlRefused with a message fit for the caller.
 */
export async function resolveTarget(raw: string, allowPrivate: boolean): Promise<{ url: URL; addresses: ResolvedAddress[] }> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UrlRefused('not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UrlRefused('the URL must be http or https');
  if (url.username || url.password) throw new UrlRefused('the URL must not contain credentials');
  const host = hostOf(url);
  let addresses: ResolvedAddress[];
  const literal = isIP(host);
  if (literal !== 0) {
    // An address needs no lookup (and must not wait for a slot behind names that hang).
    addresses = [{ address: host, family: literal === 6 ? 6 : 4 }];
  } else {
    try {
      addresses = await boundedLookup(host);
    } catch (err) {
      if (err instanceof UrlRefused) throw err;
      throw new UrlRefused(`the host ${host} cannot be resolved (${(err as { code?: string }).code ?? 'lookup failed'})`);
    }
  }
  if (addresses.length === 0) throw new UrlRefused(`the host ${host} has no address`);
  if (!allowPrivate) {
    const bad = addresses.find((a) => isForbiddenAddress(a.address));
    if (bad) throw new UrlRefused(`the host ${host} resolves to ${bad.address}, a loopback, private, link-local or otherwise non-public address`);
  }
  return { url, addresses };
}

/** resolveTarget for create/update: a refusal is BAD_REQUEST. */
export async function checkWebhookUrl(raw: string, allowPrivate: boolean): Promise<void> {
  try {
    await resolveTarget(raw, allowPrivate);
  } catch (err) {
    if (err instanceof UrlRefused) throw badRequest(`webhook url refused: ${err.message}`);
    throw err;
  }
}
