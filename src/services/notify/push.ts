import webpush from 'web-push';
import type { NotifyConfig } from '../../config.js';
import { postWebhook, type SendResult } from '../webhooks/sender.js';

/** What a push carries (encrypted for the browser, RFC 8291 aes128gcm); docs/API.md, "Web push". */
export interface PushPayload {
  type: string;
  roomId: string | null;
  messageId?: string;
  title: string;
  body: string;
  url: string;
  /** How many notifications this push stands for (coalesced within NOTIFY_COALESCE_MS). */
  count: number;
}

export interface PushTarget {
  endpoint: string;
  p256dh: string;
  auth: string;
}

/** A key pair for VAPID_PUBLIC_KEY / VAPID_PRIVATE_KEY (`npm run vapid`). */
export function generateVapidKeys(): { publicKey: string; privateKey: string } {
  return webpush.generateVAPIDKeys();
}

/**
 * Sends one encrypted push to a subscription: the request (payload encryption, VAPID JWT, TTL,
 * urgency) is built by `web-push`; it goes out through the webhooks' SSRF-guarded sender (https
 * and public addresses unless PUSH_ALLOW_PRIVATE_URLS, no redirects, bounded by PUSH_TIMEOUT_MS).
 */
export async function sendPush(
  target: PushTarget,
  payload: PushPayload,
  config: NotifyConfig,
  /** `timeoutMs`: at most this long (what is left of the claim's deadline), never more than PUSH_TIMEOUT_MS. */
  opts: { urgency: 'normal' | 'high'; signal: AbortSignal; timeoutMs?: number },
): Promise<SendResult> {
  const vapid = config.vapid;
  if (!vapid) return { ok: false, statusCode: null, error: 'web push is not configured (VAPID_*)' };
  if (!config.allowPrivateUrls && !target.endpoint.startsWith('https://')) return { ok: false, statusCode: null, error: 'refused: the endpoint must be https' };
  let details: ReturnType<typeof webpush.generateRequestDetails>;
  try {
    details = webpush.generateRequestDetails({ endpoint: target.endpoint, keys: { p256dh: target.p256dh, auth: target.auth } }, JSON.stringify(payload), {
      vapidDetails: vapid,
      TTL: config.pushTtlSeconds,
      urgency: opts.urgency,
      contentEncoding: 'aes128gcm',
    });
  } catch (err) {
    return { ok: false, statusCode: 400, error: `cannot encrypt for this subscription: ${(err as Error).message}` };
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(details.headers)) if (k.toLowerCase() !== 'content-length') headers[k] = String(v);
  return postWebhook(details.endpoint, headers, details.body ?? Buffer.alloc(0), {
    timeoutMs: Math.min(config.pushTimeoutMs, opts.timeoutMs ?? config.pushTimeoutMs),
    allowPrivate: config.allowPrivateUrls,
    signal: opts.signal,
  });
}
