import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
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

const SNIPPET = 200;

/**
 * POSTs `body` to `rawUrl`: the host is resolved and checked first (SSRF guard), the connection
 * goes to the checked addresses, redirects are not followed (a 3xx is a failure), and the whole
 * exchange is bounded by `timeoutMs`. Of the response only a short snippet is kept, for errors.
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
  const options: RequestOptions = {
    method: 'POST',
    host: hostOf(url),
    port: url.port || undefined,
    path: `${url.pathname}${url.search}`,
    headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
    lookup: pinned(addresses),
    signal: AbortSignal.any([opts.signal, AbortSignal.timeout(opts.timeoutMs)]),
    agent: false,
  };
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<SendResult>((resolve) => {
    const req = request(options, (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      let snippet = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (snippet.length < SNIPPET) snippet += chunk.slice(0, SNIPPET - snippet.length);
      });
      res.on('error', () => undefined);
      res.on('end', () => {
        if (status >= 200 && status < 300) return resolve({ ok: true, statusCode: status });
        const why = status >= 300 && status < 400 ? `redirect to ${res.headers.location ?? '?'} not followed` : `HTTP ${status}`;
        resolve({ ok: false, statusCode: status, error: snippet ? `${why}: ${snippet.replace(/\s+/g, ' ').trim()}` : why });
      });
    });
    req.on('error', (err: Error & { code?: string }) => {
      const reason = err.name === 'TimeoutError' || err.name === 'AbortError' ? `no answer within ${opts.timeoutMs} ms` : `${err.code ?? err.name}: ${err.message}`;
      resolve({ ok: false, statusCode: null, error: reason });
    });
    req.end(body);
  });
}
