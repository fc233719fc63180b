import { z } from 'zod';
import { ConfigError, optionalBool, unsetIfEmpty } from './env.js';

/** Web push, e-mail digests and the notification queue (docs/OPERATIONS.md, "Notifications"). */
export const notifyEnv = {
  VAPID_PUBLIC_KEY: unsetIfEmpty(z.string().regex(/^[A-Za-z0-9_-]{80,100}$/, 'VAPID_PUBLIC_KEY must be the base64url public key `npm run vapid` prints').optional()),
  VAPID_PRIVATE_KEY: unsetIfEmpty(z.string().regex(/^[A-Za-z0-9_-]{40,50}$/, 'VAPID_PRIVATE_KEY must be the base64url private key `npm run vapid` prints').optional()),
  VAPID_SUBJECT: unsetIfEmpty(
    z
      .string()
      .regex(/^(mailto:\S+@\S+|https:\/\/\S+)$/, 'VAPID_SUBJECT must be a mailto: address or an https: URL of the operator')
      .optional(),
  ),
  PUSH_ALLOW_PRIVATE_URLS: optionalBool,
  PUSH_TTL_SECONDS: z.coerce.number().int().min(0).max(28 * 86_400).default(86_400),
  PUSH_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(10_000),
  NOTIFY_COALESCE_MS: z.coerce.number().int().min(0).max(3_600_000).default(30_000),
  NOTIFY_POLL_MS: z.coerce.number().int().min(10).max(600_000).default(1000),
  NOTIFY_RETRY_BASE_MS: z.coerce.number().int().min(1).max(3_600_000).default(5000),
  NOTIFY_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(10),
  SMTP_URL: unsetIfEmpty(z.url({ protocol: /^smtps?$/, error: 'SMTP_URL must be an smtp:// or smtps:// URL' }).optional()),
  MAIL_FROM: unsetIfEmpty(z.string().min(3).max(320).optional()),
  EMAIL_DIGEST_DELAY_MS: z.coerce.number().int().min(10).max(7 * 86_400_000).default(15 * 60_000),
  PUBLIC_APP_URL: unsetIfEmpty(z.url({ protocol: /^https?$/, error: 'PUBLIC_APP_URL must be the http(s) URL of the chat page' }).optional()),
};
type NotifyEnv = z.infer<z.ZodObject<typeof notifyEnv>>;

export interface NotifyConfig {
  /** Web push keys (all three variables or none): null means no pushes are sent. */
  vapid: { publicKey: string; privateKey: string; subject: string } | null;
  /** Push endpoints may be http and private addresses (tests only). */
  allowPrivateUrls: boolean;
  pushTtlSeconds: number;
  pushTimeoutMs: number;
  /** At most one push per user and room in this window (later ones are folded into the next, with a count). */
  coalesceMs: number;
  pollMs: number;
  retryBaseMs: number;
  maxAttempts: number;
  /** E-mail digests: null means none are sent. */
  smtp: { url: string; from: string } | null;
  digestDelayMs: number;
  /** Where links in pushes and e-mails point (no trailing slash); null: relative links. */
  publicAppUrl: string | null;
}

export function notifyConfig(e: NotifyEnv): NotifyConfig {
  const vapidSet = [e.VAPID_PUBLIC_KEY, e.VAPID_PRIVATE_KEY, e.VAPID_SUBJECT].filter((v) => v !== undefined).length;
  if (vapidSet !== 0 && vapidSet !== 3) throw new ConfigError('web push needs all of VAPID_PUBLIC_KEY, VAPID_PRIVATE_KEY and VAPID_SUBJECT (`npm run vapid` prints a key pair)');
  if ((e.SMTP_URL === undefined) !== (e.MAIL_FROM === undefined)) throw new ConfigError('e-mail digests need both SMTP_URL and MAIL_FROM');
  return {
    vapid: vapidSet === 3 ? { publicKey: e.VAPID_PUBLIC_KEY!, privateKey: e.VAPID_PRIVATE_KEY!, subject: e.VAPID_SUBJECT! } : null,
    allowPrivateUrls: e.PUSH_ALLOW_PRIVATE_URLS ?? false,
    pushTtlSeconds: e.PUSH_TTL_SECONDS,
    pushTimeoutMs: e.PUSH_TIMEOUT_MS,
    coalesceMs: e.NOTIFY_COALESCE_MS,
    pollMs: e.NOTIFY_POLL_MS,
    retryBaseMs: e.NOTIFY_RETRY_BASE_MS,
    maxAttempts: e.NOTIFY_MAX_ATTEMPTS,
    smtp: e.SMTP_URL && e.MAIL_FROM ? { url: e.SMTP_URL, from: e.MAIL_FROM } : null,
    digestDelayMs: e.EMAIL_DIGEST_DELAY_MS,
    publicAppUrl: e.PUBLIC_APP_URL ? e.PUBLIC_APP_URL.replace(/\/+$/, '') : null,
  };
}
