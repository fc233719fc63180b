import { z } from 'zod';
import { ConfigError } from './env.js';

/** The video platform variables (docs/VIDEO.md). */
export const videoEnv = {
  VIDEO_PROVIDER: z.enum(['livekit', 'daily', 'none']).optional(),
  LIVEKIT_URL: z.url({ error: 'LIVEKIT_URL must be a URL such as wss://my-project.livekit.cloud' }).optional(),
  LIVEKIT_API_KEY: z.string().min(1).optional(),
  LIVEKIT_API_SECRET: z.string().min(1).optional(),
  DAILY_API_KEY: z.string().min(1).optional(),
  DAILY_API_URL: z.url().default('https://api.daily.co/v1'),
  DAILY_WEBHOOK_SECRET: z.string().min(1).optional(),
  VIDEO_TOKEN_TTL_SECONDS: z.coerce.number().int().min(30).max(86_400).default(600),
  VIDEO_REMOVAL_RETRY_BASE_MS: z.coerce.number().int().min(1).max(3_600_000).default(2000),
  VIDEO_REMOVAL_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(1000).default(20),
  VIDEO_REMOVAL_POLL_MS: z.coerce.number().int().min(100).max(3_600_000).default(10_000),
};
type VideoEnv = z.infer<z.ZodObject<typeof videoEnv>>;

export interface VideoConfig {
  provider: 'livekit' | 'daily' | null;
  livekit: { url: string; apiKey: string; apiSecret: string } | null;
  /** `webhookSecret`: the base64 `hmac` secret of the Daily webhook (unset: Daily webhooks are refused). */
  daily: { apiKey: string; apiUrl: string; webhookSecret: string | null } | null;
  /** Lifetime of join tokens minted by `video.joinToken`. */
  tokenTtlSeconds: number;
  /** The queue taking banned and removed users out of calls (docs/VIDEO.md, "Bans and removals"). */
  removals: { retryBaseMs: number; maxAttempts: number; pollMs: number };
}

/**
 * VIDEO_PROVIDER picks the provider; unset, it is LiveKit when LIVEKIT_* is set, else Daily when
 * DAILY_API_KEY is set, else none. A provider chosen explicitly must have its variables.
 */
export function videoConfig(e: VideoEnv): VideoConfig {
  const livekit =
    e.LIVEKIT_URL && e.LIVEKIT_API_KEY && e.LIVEKIT_API_SECRET
      ? { url: e.LIVEKIT_URL, apiKey: e.LIVEKIT_API_KEY, apiSecret: e.LIVEKIT_API_SECRET }
      : null;
  const daily = e.DAILY_API_KEY
    ? { apiKey: e.DAILY_API_KEY, apiUrl: e.DAILY_API_URL.replace(/\/+$/, ''), webhookSecret: e.DAILY_WEBHOOK_SECRET ?? null }
    : null;
  let provider: VideoConfig['provider'];
  if (e.VIDEO_PROVIDER === 'none') provider = null;
  else if (e.VIDEO_PROVIDER === 'livekit') {
    if (!livekit) throw new ConfigError('VIDEO_PROVIDER=livekit needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET');
    provider = 'livekit';
  } else if (e.VIDEO_PROVIDER === 'daily') {
    if (!daily) throw new ConfigError('VIDEO_PROVIDER=daily needs DAILY_API_KEY (and DAILY_WEBHOOK_SECRET for webhooks)');
    provider = 'daily';
  } else provider = livekit ? 'livekit' : daily ? 'daily' : null;
  return {
    provider,
    livekit,
    daily,
    tokenTtlSeconds: e.VIDEO_TOKEN_TTL_SECONDS,
    removals: { retryBaseMs: e.VIDEO_REMOVAL_RETRY_BASE_MS, maxAttempts: e.VIDEO_REMOVAL_MAX_ATTEMPTS, pollMs: e.VIDEO_REMOVAL_POLL_MS },
  };
}
