import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { clip } from '../../domain/text.js';
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
 * exchange is bounded by `timeoutMs` (see `deadline`). Of the response only a short snippet is
 * kept, for errors.
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
      let snippet = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        if (snippet.length < SNIPPET) snippet = clip(snippet + chunk, SNIPPET);
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
