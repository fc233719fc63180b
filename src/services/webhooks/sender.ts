import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { hostOf, resolveTarget, UrlRefused, type ResolvedAddress } from './guard.js';

/** What became of one POST: `ok` for a 2xx; otherwise the reason and the status code, if any. */
export type SendResult = { ok: true; statusCode: number } | { ok: false; statusCode: number | null; error: string };

/** The Standard Webhooks headers of one message (`webhook-id` is the event id: the same on every retry). */
export function signedHeaders(secret: string, msgId: string, body: string, at: Date): Record<string, string> {
  return {
    'content-type': 'application/json',
    'user-agent': 'trpc-chat-webhooks/1',
    'webhook-id': msgId,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(msgId, at, body),
  };
}

/** A DNS lookup that answers with the addresses the guard checked (so the socket goes nowhere else). */
function pinned(addresses: ResolvedAddress[]): LookupFunction {
  return (_host, options, callback) => {
    if (options.all) {
      callback(null, addresses);
      return;
    }
    const first = addresses.find((a) => !options.family || a.family === options.family) ?? addresses[0]!;
    callback(null, first.address, first.family);
  };
}

/** Content types an answer's description may name; any other is "another type" (the header is the endpoint's text). */
const NAMED_TYPES = new Set([
  'application/json',
  'application/problem+json',
  'application/xml',
  'application/problem+xml',
  'application/octet-stream',
  'application/x-www-form-urlencoded',
  'text/plain',
  'text/html',
  'text/xml',
]);

/**
 * What a failed answer's body was, never what it said: many endpoints echo the request in their
 * error answer, and the request carries the event (message bodies, decrypted for encrypted rooms),
 * which must not end up in plain text in `last_error`, nor outlive a message's erasure there.
 */
function bodyNote(bytes: number, contentType: string | undefined): string {
  if (bytes === 0) return '';
  const media = contentType?.split(';')[0]?.trim().toLowerCase();
  const type = !media ? 'no content-type' : NAMED_TYPES.has(media) ? media : 'another content-type';
  return ` (body of ${bytes} bytes, ${type}, not kept)`;
}

/** Network error codes in words. */
const NETWORK_FAILURES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection closed or reset',
  EPIPE: 'connection closed by the endpoint',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

/**
 * A request's failure in fixed words from its error code (and the address it went to): never the
 * error's message, which is the network layer's text and may quote what the endpoint sent.
 */
function networkFailure(err: Error & { code?: unknown; address?: unknown; port?: unknown }, timeoutMs: number): string {
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return `no answer within ${timeoutMs} ms`;
  const code = typeof err.code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(err.code) ? err.code : null;
  const to = typeof err.address === 'string' && isIP(err.address) ? ` to ${err.address}${typeof err.port === 'number' ? `:${err.port}` : ''}` : '';
  if (code === null) return 'request failed';
  if (NETWORK_FAILURES[code]) return `${NETWORK_FAILURES[code]}${to} (${code})`;
  if (code.startsWith('HPE_')) return `invalid HTTP answer (${code})`;
  if (code === 'EPROTO' || /TLS|SSL|CERT|CRL|SIGNATURE|ISSUER|INVALID_CA|HOSTNAME_MISMATCH/.test(code)) return `TLS error (${code})`;
  return `request failed (${code})`;
}

/**
 * The deadline of a request. When it passes, the abort waits for one turn of the event loop's I/O
 * (an immediate runs after the poll phase): after a stall of this process (a long GC pause, a
 * starved CPU), an answer that came in time and waits in the socket's buffer is read first instead
 * of being taken for a timeout, which would send the event again.
 */
function deadline(ms: number): { signal: AbortSignal; clear: () => void } {
  const ac = new AbortController();
  let immediate: NodeJS.Immediate | undefined;
  const timer = setTimeout(() => {
    immediate = setImmediate(() => ac.abort(new DOMException(`no answer within ${ms} ms`, 'TimeoutError')));
  }, ms);
  timer.unref();
  return {
    signal: ac.signal,
    clear: () => {
      clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
    },
  };
}

/**
 * POSTs `body` to `rawUrl`: the host is resolved and checked first (SSRF guard), the connection
 * goes to the checked addresses, redirects are not followed (a 3xx is a failure), and the whole
 * exchange is bounded by `timeoutMs` (see `deadline`). Of a failed answer only its status, and its
 * body's length and content type, are kept (`bodyNote`).
 */
export async function postWebhook(
  rawUrl: string,
  headers: Record<string, string>,
  body: string | Buffer,
  opts: { timeoutMs: number; allowPrivate: boolean; signal: AbortSignal },
): Promise<SendResult> {
  let target: Awaited<ReturnType<typeof resolveTarget>>;
  try {
    target = await resolveTarget(rawUrl, opts.allowPrivate);
  } catch (err) {
    if (err instanceof UrlRefused) return { ok: false, statusCode: null, error: `refused: ${err.message}` };
    throw err;
  }
  const { url, addresses } = target;
  const due = deadline(opts.timeoutMs);
  const options: RequestOptions = {
    method: 'POST',
    host: hostOf(url),
    port: url.port || undefined,
    path: `${url.pathname}${url.search}`,
    headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
    lookup: pinned(addresses),
    signal: AbortSignal.any([opts.signal, due.signal]),
    agent: false,
  };
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<SendResult>((settle) => {
    const resolve = (r: SendResult) => {
      due.clear();
      settle(r);
    };
    const req = request(options, (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      // Counted, never kept (see `bodyNote`).
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
      });
      let ended = false;
      res.on('error', () => undefined);
      res.on('end', () => {
        ended = true;
        if (status >= 200 && status < 300) return resolve({ ok: true, statusCode: status });
        const why = status >= 300 && status < 400 ? `redirect to ${res.headers.location ?? '?'} not followed` : `HTTP ${status}`;
        resolve({ ok: false, statusCode: status, error: `${why}${bodyNote(bytes, res.headers['content-type'])}` });
      });
      // An answer whose connection closes before the end of its body has no 'end', and the request
      // no 'error': it is settled here, or the delivery would wait forever. Its status stands: a
      // 2xx was the endpoint's acceptance.
      res.on('close', () => {
        if (ended) return;
        if (status >= 200 && status < 300) return resolve({ ok: true, statusCode: status });
        const cut = due.signal.aborted ? `no answer within ${opts.timeoutMs} ms` : 'connection closed';
        resolve({ ok: false, statusCode: status, error: `HTTP ${status}, ${cut} before the end of its body` });
      });
    });
    req.on('error', (err: Error) => resolve({ ok: false, statusCode: null, error: networkFailure(err, opts.timeoutMs) }));
    req.end(body);
  });
}
