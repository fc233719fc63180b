import { z } from 'zod';
import type { IceServerDto } from '../domain/calls.js';
import { ConfigError } from './env.js';

/** The WebRTC variables of 1:1 calls (docs/VIDEO.md, "Peer-to-peer signaling"). */
export const rtcEnv = {
  RTC_ICE_SERVERS: z.string().optional(),
  RTC_TURN_URLS: z.string().optional(),
  RTC_TURN_SECRET: z.string().optional(),
  RTC_TURN_TTL_SECONDS: z.string().optional(),
};
type RtcEnv = z.infer<z.ZodObject<typeof rtcEnv>>;

/** How long a minted TURN credential is valid unless RTC_TURN_TTL_SECONDS says otherwise: one day, as the TURN REST API recommends. */
export const TURN_TTL_DEFAULT_SECONDS = 86_400;
/** Bounds of RTC_TURN_TTL_SECONDS: a minute to a week. */
export const TURN_TTL_MIN_SECONDS = 60;
export const TURN_TTL_MAX_SECONDS = 7 * 86_400;
/** The shortest RTC_TURN_SECRET accepted. */
export const TURN_SECRET_MIN_LENGTH = 16;

/**
 * Time-limited TURN credentials (the "TURN REST API": coturn's `use-auth-secret` with
 * `static-auth-secret`): `signal.config` mints one per call for the caller.
 */
export interface RtcTurnConfig {
  /** RTC_TURN_URLS: the turn:/turns: URLs of the TURN servers that share the secret. */
  urls: string[];
  /** RTC_TURN_SECRET: the TURN servers' `static-auth-secret`. */
  secret: string;
  /** RTC_TURN_TTL_SECONDS: how long a minted credential is valid. */
  ttlSeconds: number;
}

export interface RtcConfig {
  /** Handed to call clients by `signal.config` as their `RTCConfiguration.iceServers`; empty: host candidates only (same network). */
  iceServers: IceServerDto[];
  /** Set (RTC_TURN_URLS and RTC_TURN_SECRET): `signal.config` adds a TURN server with a credential minted for the caller. */
  turn?: RtcTurnConfig;
}

const IceUrl = z
  .string()
  .trim()
  .max(500)
  .regex(/^(stun|stuns|turn|turns):[^\s]+$/, 'each url must be a stun:, stuns:, turn: or turns: URL');
const IceServer = z
  .object({
    urls: z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(IceUrl).min(1, 'urls must not be empty').max(10)),
    username: z.string().max(500).optional(),
    credential: z.string().max(500).optional(),
  })
  .strict()
  .refine((s) => s.urls.every((u) => !/^turns?:/.test(u)) || (s.username !== undefined && s.credential !== undefined), {
    message: 'a TURN server needs username and credential',
  });
const IceServers = z.array(IceServer).max(10, 'at most 10 ICE servers');

/**
 * RTC_ICE_SERVERS: a JSON array of RTCIceServer objects (unset or empty: none); RTC_TURN_URLS,
 * RTC_TURN_SECRET and RTC_TURN_TTL_SECONDS: time-limited TURN credentials (unset: none).
 */
export function rtcConfig(e: RtcEnv): RtcConfig {
  const turn = turnConfig(e);
  return { iceServers: iceServers(e), ...(turn ? { turn } : {}) };
}

function iceServers(e: RtcEnv): IceServerDto[] {
  const raw = e.RTC_ICE_SERVERS?.trim();
  if (!raw) return [];
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new ConfigError('RTC_ICE_SERVERS must be JSON: an array such as [{"urls":"stun:stun.example.com:3478"}]');
  }
  const parsed = IceServers.safeParse(json);
  if (!parsed.success) {
    const why = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid RTC_ICE_SERVERS: ${why}`);
  }
  return parsed.data.map((s) => ({
    urls: s.urls,
    ...(s.username !== undefined ? { username: s.username } : {}),
    ...(s.credential !== undefined ? { credential: s.credential } : {}),
  }));
}

const TurnUrl = z
  .string()
  .max(500)
  .regex(/^turns?:[^\s]+$/, 'each url must be a turn: or turns: URL (STUN servers go in RTC_ICE_SERVERS)');
const TurnUrls = z.array(TurnUrl).min(1, 'no URL').max(10, 'at most 10 URLs');

/** RTC_TURN_*: all unset (or empty) is no TURN; RTC_TURN_URLS and RTC_TURN_SECRET go together. */
function turnConfig(e: RtcEnv): RtcTurnConfig | undefined {
  const rawUrls = e.RTC_TURN_URLS?.trim() || undefined;
  const secret = e.RTC_TURN_SECRET?.trim() || undefined;
  const rawTtl = e.RTC_TURN_TTL_SECONDS?.trim() || undefined;
  if (rawUrls === undefined) {
    for (const [name, value] of [['RTC_TURN_SECRET', secret], ['RTC_TURN_TTL_SECONDS', rawTtl]] as const) {
      if (value !== undefined) throw new ConfigError(`${name} is set but RTC_TURN_URLS is not: set the TURN server URLs too, or unset ${name}`);
    }
    return undefined;
  }
  const urls = TurnUrls.safeParse(rawUrls.split(',').map((u) => u.trim()).filter((u) => u !== ''));
  if (!urls.success) {
    const why = urls.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ');
    throw new ConfigError(`invalid RTC_TURN_URLS (a comma-separated list such as turn:turn.example.com:3478,turns:turn.example.com:5349): ${why}`);
  }
  if (secret === undefined) {
    throw new ConfigError("RTC_TURN_URLS needs RTC_TURN_SECRET: the TURN servers' static-auth-secret (coturn use-auth-secret) the credentials are minted with");
  }
  if (secret.length < TURN_SECRET_MIN_LENGTH) {
    throw new ConfigError(`RTC_TURN_SECRET is too short: at least ${TURN_SECRET_MIN_LENGTH} characters (e.g. openssl rand -hex 32)`);
  }
  if (!/^[\x21-\x7e]+$/.test(secret)) {
    throw new ConfigError('RTC_TURN_SECRET must be printable ASCII without spaces, written the same in the TURN server configuration (e.g. openssl rand -hex 32)');
  }
  let ttlSeconds = TURN_TTL_DEFAULT_SECONDS;
  if (rawTtl !== undefined) {
    ttlSeconds = Number(rawTtl);
    if (!/^\d+$/.test(rawTtl) || ttlSeconds < TURN_TTL_MIN_SECONDS || ttlSeconds > TURN_TTL_MAX_SECONDS) {
      throw new ConfigError(
        `RTC_TURN_TTL_SECONDS must be a whole number of seconds from ${TURN_TTL_MIN_SECONDS} (a minute) to ${TURN_TTL_MAX_SECONDS} (7 days); default ${TURN_TTL_DEFAULT_SECONDS}`,
      );
    }
  }
  return { urls: urls.data, secret, ttlSeconds };
}
