import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../logger.js';
import { AppError } from '../domain/errors.js';
import type { MeetingWebhooks } from '../services/meetings/index.js';
import { WebhookAuthError } from '../video/provider.js';

/** Provider webhooks are a few KiB; anything much larger is not one. */
export const VIDEO_WEBHOOK_MAX_BYTES = 256 * 1024;

const PATH_RE = /^\/webhooks\/video\/([a-z]+)\/?$/;

class TooLarge extends Error {}

/** Past the limit the rest of a body is read and dropped up to this much, so the client gets its 413. */
const DRAIN_MAX_BYTES = 4 * 1024 * 1024;

/**
 * Reads the raw body (verification needs the exact bytes). Over `limit`: rejects with TooLarge once
 * the rest has been drained (or the connection dropped when even that is too much).
 */
function readRawBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    const chunks: Buffer[] = [];
    let size = 0;
    let over = declared > limit;
    if (declared > DRAIN_MAX_BYTES) {
      reject(new TooLarge());
      req.socket.destroy();
      return;
    }
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > DRAIN_MAX_BYTES) {
        req.socket.destroy();
        return;
      }
      if (size > limit) over = true;
      if (!over) chunks.push(c);
    });
    req.on('end', () => (over ? reject(new TooLarge()) : resolve(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
    req.on('close', () => {
      if (!req.complete) reject(new TooLarge());
    });
  });
}

/**
 * `POST /webhooks/video/livekit` and `POST /webhooks/video/daily`: raw body -> MeetingWebhooks.
 * 200 processed/duplicate/ignored, 401 unsigned/wrongly signed/stale, 400 malformed, 404 provider not
 * configured, 405 not POST, 413 too large, 500 our failure (the provider retries).
 */
export function videoWebhookHandler(webhooks: MeetingWebhooks, log: Logger) {
  return (req: IncomingMessage, res: ServerResponse, path: string): boolean => {
    if (!path.startsWith('/webhooks/video/')) return false;
    const send = (status: number, body: object, headers: Record<string, string> = {}) => {
      if (res.headersSent) return;
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
      res.end(JSON.stringify(body));
    };
    const provider = PATH_RE.exec(path)?.[1];
    if (!provider) {
      send(404, { error: 'not found' });
      return true;
    }
    if (req.method !== 'POST') {
      send(405, { error: 'use POST' }, { allow: 'POST' });
      return true;
    }
    // A provider this server does not use: answered before a byte of the body is read.
    if (!webhooks.accepts(provider)) {
      send(404, { error: `${provider} is not the video provider of this server` }, { connection: 'close' });
      req.resume();
      return true;
    }
    void (async () => {
      try {
        const raw = await readRawBody(req, VIDEO_WEBHOOK_MAX_BYTES);
        const outcome = await webhooks.handle(provider, raw, req.headers);
        log.debug({ provider, outcome }, 'video webhook');
        send(200, { ok: true, outcome });
      } catch (err) {
        if (err instanceof TooLarge) {
          send(413, { error: `webhook body over ${VIDEO_WEBHOOK_MAX_BYTES} bytes` });
        } else if (err instanceof WebhookAuthError) {
          log.warn({ provider, reason: err.message }, 'video webhook refused');
          send(401, { error: err.message });
        } else if (err instanceof AppError && (err.code === 'BAD_REQUEST' || err.code === 'NOT_FOUND')) {
          send(err.code === 'NOT_FOUND' ? 404 : 400, { error: err.message });
        } else {
          log.error({ err, provider }, 'video webhook failed');
          send(500, { error: 'webhook processing failed' });
        }
      }
    })();
    return true;
  };
}
