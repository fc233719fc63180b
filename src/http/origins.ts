import type { IncomingMessage, OutgoingHttpHeader, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../logger.js';
import type { Counters } from '../metrics.js';
import { appOrigin } from '../config/origins.js';
import { clientAddress } from './client-address.js';
import { firstForwarded, requestHost } from './hosts.js';
import { forbid, forbidUpgrade, WarnOnce } from './refusals.js';

/**
 * Request headers a page of a listed origin may send: the bearer token, and what tRPC's links add
 * (`content-type` on POST from httpLink/httpBatchLink, `trpc-accept` from httpBatchStreamLink).
 */
export const CORS_ALLOW_HEADERS = ['authorization', 'content-type', 'trpc-accept'] as const;
export const CORS_ALLOW_METHODS = ['GET', 'POST', 'OPTIONS'] as const;
/** How long a browser may cache a preflight answer. */
export const CORS_MAX_AGE_SECONDS = 600;
/** Refused origins are echoed in logs and answers at most this long. */
const ORIGIN_ECHO_MAX = 200;

/** What the `Origin` header of a request says about it. */
export type OriginVerdict =
  /** No Origin: not a browser's cross-origin request (Node, the CLI, curl, servers). */
  | { kind: 'absent' }
  /** The server's own origin (the bundled page): allowed, no CORS headers needed. */
  | { kind: 'own'; origin: string }
  /** In CORS_ORIGINS: allowed, with CORS headers. */
  | { kind: 'listed'; origin: string }
  | { kind: 'refused'; origin: string };

export interface OriginPolicyOptions {
  /** Normalised origins allowed besides the server's own (Config.corsOrigins). */
  allowed: readonly string[];
  /** Take the request's own scheme and host from X-Forwarded-Proto / X-Forwarded-Host. */
  /** Trusted proxy hops (TRUST_PROXY); any: X-Forwarded-Proto/-Host name the own origin. */
  trustProxy: number;
  log: Logger;
  counters: Pick<Counters, 'originRefused'>;
}

/**
 * Which browser origins may use the API (docs/SECURITY.md, "Browser origins"). Browsers send
 * `Origin` on cross-origin requests, on every POST and on every WebSocket handshake; a request with
 * one that is neither the server's own origin nor listed in CORS_ORIGINS is refused with 403 before
 * anything runs. Requests without `Origin` are not a browser's and pass. CORS headers are sent only
 * to listed origins, never `*` and never with credentials (tokens are bearer tokens, no cookies).
 *
 * Guarded: `/trpc` (HTTP and WebSocket) and `/admin/stats`. Not guarded: `/healthz`, `/readyz`,
 * `/metrics`, the video webhooks and the static page (called by probes, Prometheus and providers,
 * or plain page loads; they carry no CORS headers, so another origin's page cannot read them).
 */
export class OriginPolicy {
  private readonly allowed: ReadonlySet<string>;
  private readonly warned = new WarnOnce();

  constructor(private readonly opts: OriginPolicyOptions) {
    this.allowed = new Set(opts.allowed);
  }

  /** Whether an HTTP path is one the policy guards. */
  guards(path: string): boolean {
    return path === '/trpc' || path.startsWith('/trpc/') || path === '/admin/stats';
  }

  verdict(req: IncomingMessage): OriginVerdict {
    const header = req.headers.origin;
    if (header === undefined) return { kind: 'absent' };
    const origin = normaliseOrigin(header);
    if (origin === null) return { kind: 'refused', origin: header.slice(0, ORIGIN_ECHO_MAX) };
    if (this.allowed.has(origin)) return { kind: 'listed', origin };
    if (origin === ownOrigin(req, this.opts.trustProxy)) return { kind: 'own', origin };
    return { kind: 'refused', origin: origin.slice(0, ORIGIN_ECHO_MAX) };
  }

  /**
   * For every HTTP request: on a guarded path, answers a preflight of a listed origin (204) or a
   * request of a refused one (403) and returns true; otherwise adds the CORS headers the answer
   * needs and returns false (the route answers).
   */
  screen(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    if (!this.guards(path)) return false;
    const v = this.verdict(req);
    // With CORS on, answers differ by Origin: caches must key them by it.
    if (this.allowed.size > 0) keepVaryOrigin(res);
    if (v.kind === 'refused') {
      this.refused(req, v.origin, 'http');
      forbid(res, refusal(v.origin));
      return true;
    }
    if (v.kind !== 'listed') return false;
    res.setHeader('access-control-allow-origin', v.origin);
    if (req.method !== 'OPTIONS') return false;
    this.noteUnsupported(req, v.origin);
    res.writeHead(204, {
      'access-control-allow-methods': CORS_ALLOW_METHODS.join(', '),
      'access-control-allow-headers': CORS_ALLOW_HEADERS.join(', '),
      'access-control-max-age': String(CORS_MAX_AGE_SECONDS),
    });
    res.end();
    return true;
  }

  /**
   * Before a WebSocket upgrade: a refused Origin gets `403 Forbidden` on the raw socket, which is
   * then destroyed, and true is returned.
   */
  refuseUpgrade(req: IncomingMessage, socket: Duplex): boolean {
    const v = this.verdict(req);
    if (v.kind !== 'refused') return false;
    this.refused(req, v.origin, 'ws');
    forbidUpgrade(socket, refusal(v.origin));
    return true;
  }

  /** Counted always; logged at warn the first time an origin is refused, at debug after that. */
  private refused(req: IncomingMessage, origin: string, transport: 'http' | 'ws'): void {
    this.opts.counters.originRefused++;
    const fields: Record<string, string> = { audit: 'origin_refused', origin, transport, ip: clientAddress(req, this.opts.trustProxy) };
    const own = ownOrigin(req, this.opts.trustProxy);
    if (own && /^https?:/i.test(origin) && normaliseOrigin(origin) && new URL(origin).host === new URL(own).host) {
      // The page's own host seen with another scheme: usually TLS ended by a proxy the server does not trust.
      fields.hint = `this server sees itself as ${own}: behind a TLS proxy set TRUST_PROXY=1 (the proxy sends X-Forwarded-Proto), or list ${origin} in CORS_ORIGINS`;
    }
    if (this.warned.first(origin)) {
      this.opts.log.warn(fields, 'browser origin refused (logged once per origin, repeats at debug level)');
    } else {
      this.opts.log.debug(fields, 'browser origin refused');
    }
  }

  /** A preflight asking for what the answer does not allow fails in the browser, which names it; said here at debug. */
  private noteUnsupported(req: IncomingMessage, origin: string): void {
    const method = req.headers['access-control-request-method'];
    const headers = (req.headers['access-control-request-headers'] ?? '')
      .split(',')
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h && !(CORS_ALLOW_HEADERS as readonly string[]).includes(h));
    const badMethod = method !== undefined && !(CORS_ALLOW_METHODS as readonly string[]).includes(method);
    if (badMethod || headers.length > 0) {
      this.opts.log.debug({ origin, method, headers }, 'preflight asks for a method or headers the API does not allow');
    }
  }
}

const refusal = (origin: string) => `origin ${JSON.stringify(origin)} is not allowed (the server's CORS_ORIGINS lists the browser origins it accepts)`;

/** `scheme://host[:port]` as browsers serialise it (an app's own scheme lower-cased, `appOrigin`), or null for anything that is no origin (`null` included). */
function normaliseOrigin(value: string): string | null {
  try {
    const url = new URL(value);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : appOrigin(value);
  } catch {
    return null;
  }
}

/**
 * The origin the client used to reach this server: the scheme from TLS (or, with TRUST_PROXY,
 * X-Forwarded-Proto) and the host from `Host` (or, with TRUST_PROXY, X-Forwarded-Host). Null when
 * the host is missing or is not a plain `host[:port]`.
 */
function ownOrigin(req: IncomingMessage, trustProxy: number): string | null {
  const proto = trustProxy > 0 ? firstForwarded(req.headers['x-forwarded-proto'])?.toLowerCase() : undefined;
  const tls = (req.socket as Partial<TLSSocket>).encrypted === true;
  const scheme = proto === 'https' || proto === 'wss' ? 'https' : proto === 'http' || proto === 'ws' ? 'http' : tls ? 'https' : 'http';
  const host = requestHost(req, trustProxy);
  if (!host || !/^[a-z0-9.\-_:[\]]+$/i.test(host)) return null;
  return normaliseOrigin(`${scheme}://${host}`);
}

/** Keeps `Origin` in this answer's `Vary`, also when the route (tRPC) sets a `Vary` of its own later. */
function keepVaryOrigin(res: ServerResponse): void {
  const setHeader = res.setHeader;
  res.setHeader = function (this: ServerResponse, name: string, value: OutgoingHttpHeader) {
    return setHeader.call(this, name, name.toLowerCase() === 'vary' ? withOrigin(value) : value);
  };
  res.setHeader('vary', 'Origin');
}

function withOrigin(vary: OutgoingHttpHeader): string {
  const list = (Array.isArray(vary) ? vary.join(', ') : String(vary)).trim();
  if (list === '') return 'Origin';
  return list.split(',').some((v) => v.trim().toLowerCase() === 'origin' || v.trim() === '*') ? list : `${list}, Origin`;
}
