import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../logger.js';
import type { Counters } from '../metrics.js';
import { clientAddress } from './client-address.js';
import { forbid, forbidUpgrade, WarnOnce } from './refusals.js';

/** Refused host names are echoed in logs and answers at most this long. */
const HOST_ECHO_MAX = 200;

/** Every entry of a forwarded header (`X-Forwarded-Host: a, b` -> `a`, `b`), trimmed. */
const forwardedEntries = (h: string | string[] | undefined): string[] =>
  h === undefined ? [] : (Array.isArray(h) ? h : [h]).flatMap((v) => v.split(',')).map((v) => v.trim());

/** The first value of a forwarded header (`X-Forwarded-Host: a, b` -> `a`: the client's side). */
export const firstForwarded = (h: string | string[] | undefined) => forwardedEntries(h)[0] || undefined;

/**
 * The `host[:port]` the client used to reach this server: `Host`, or with TRUST_PROXY the proxy's
 * X-Forwarded-Host (the name the browser used; the proxy's own `Host` may be an internal name).
 */
export function requestHost(req: IncomingMessage, trustProxy: number): string | undefined {
  return (trustProxy > 0 ? firstForwarded(req.headers['x-forwarded-host']) : undefined) ?? req.headers.host;
}

/** The host name of a `host[:port]` (an IPv6 literal keeps its brackets), lower-cased, without a trailing dot. */
export function hostName(host: string): string {
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d*$/, '');
  return name.toLowerCase().replace(/\.$/, '');
}

export interface HostPolicyOptions {
  /** ALLOWED_HOSTS (Config.allowedHosts): names and `*.domain` entries; empty: every host. */
  allowed: readonly string[];
  trustProxy: number;
  log: Logger;
  counters: Pick<Counters, 'hostRefused'>;
}

/**
 * Which `Host` names the server answers to (ALLOWED_HOSTS; docs/SECURITY.md, "Host names"). Against
 * DNS rebinding: a page of a domain an attacker points at the server's address is same-origin to it
 * in the browser, and its requests carry that domain in `Host`. With a list set, every HTTP request
 * and WebSocket upgrade naming another host is refused with 403 before anything runs (the probes and
 * the metrics too: they answer on the listed names and on IP addresses).
 *
 * Always allowed: IP addresses and `localhost` (a rebinding page's requests name the attacker's
 * domain, never these, so they cost nothing: probes, scrapers and local tools reach the node by
 * address), and requests without `Host` (HTTP/1.0 tools; browsers always send it). An empty `Host`
 * is refused; empty forwarded entries are skipped.
 */
export class HostPolicy {
  private readonly exact: ReadonlySet<string>;
  private readonly suffixes: readonly string[];
  private readonly warned = new WarnOnce();

  constructor(private readonly opts: HostPolicyOptions) {
    this.exact = new Set(opts.allowed.filter((h) => !h.startsWith('*.')));
    this.suffixes = opts.allowed.filter((h) => h.startsWith('*.')).map((h) => h.slice(1));
  }

  get enabled(): boolean {
    return this.opts.allowed.length > 0;
  }

  /**
   * The refused host of a request, or null when it may be served. `Host` and, with TRUST_PROXY, every
   * X-Forwarded-Host entry must be allowed: a page may add an X-Forwarded-Host of its own to a
   * same-origin request, and a proxy that passes it through (or appends to it) would otherwise let a
   * listed name stand for the rebinding domain in `Host`.
   */
  refusedHost(req: IncomingMessage): string | null {
    if (!this.enabled) return null;
    // Empty entries are skipped (`Host` is checked anyway).
    const forwarded = this.opts.trustProxy > 0 ? forwardedEntries(req.headers['x-forwarded-host']).filter((h) => h.length > 0) : [];
    for (const host of req.headers.host === undefined ? forwarded : [req.headers.host, ...forwarded]) {
      if (!this.allows(host)) return host.slice(0, HOST_ECHO_MAX);
    }
    return null;
  }

  private allows(host: string): boolean {
    const name = hostName(host);
    if (name === 'localhost' || isIP(name.replace(/^\[|\]$/g, '')) !== 0) return true;
    return this.exact.has(name) || this.suffixes.some((s) => name.endsWith(s) && name.length > s.length);
  }

  /** For every HTTP request: a refused host is answered with 403 here (true returned). */
  screen(req: IncomingMessage, res: ServerResponse): boolean {
    const host = this.refusedHost(req);
    if (host === null) return false;
    this.refused(req, host, 'http');
    forbid(res, refusal(host));
    return true;
  }

  /** Before a WebSocket upgrade: a refused host gets `403 Forbidden` on the raw socket, which is then destroyed (true returned). */
  refuseUpgrade(req: IncomingMessage, socket: Duplex): boolean {
    const host = this.refusedHost(req);
    if (host === null) return false;
    this.refused(req, host, 'ws');
    forbidUpgrade(socket, refusal(host));
    return true;
  }

  /** Counted always; logged at warn the first time a host is refused, at debug after that. */
  private refused(req: IncomingMessage, host: string, transport: 'http' | 'ws'): void {
    this.opts.counters.hostRefused++;
    const fields = { audit: 'host_refused', host, transport, ip: clientAddress(req, this.opts.trustProxy) };
    if (this.warned.first(host)) this.opts.log.warn(fields, 'host name refused (logged once per host, repeats at debug level)');
    else this.opts.log.debug(fields, 'host name refused');
  }
}

const refusal = (host: string) => `host ${JSON.stringify(host)} is not served here (the server's ALLOWED_HOSTS lists the host names it answers to)`;
