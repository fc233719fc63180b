import { z } from 'zod';
import type { IceServerDto } from '../domain/calls.js';
import { ConfigError } from './env.js';

/** The WebRTC variables of 1:1 calls (docs/VIDEO.md, "Peer-to-peer signaling"). */
export const rtcEnv = {
  RTC_ICE_SERVERS: z.string().optional(),
};
type RtcEnv = z.infer<z.ZodObject<typeof rtcEnv>>;

export interface RtcConfig {
  /** Handed to call clients by `signal.config` as their `RTCConfiguration.iceServers`; empty: host candidates only (same network). */
  iceServers: IceServerDto[];
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

/** RTC_ICE_SERVERS: a JSON array of RTCIceServer objects (unset or empty: none). */
export function rtcConfig(e: RtcEnv): RtcConfig {
  const raw = e.RTC_ICE_SERVERS?.trim();
  if (!raw) return { iceServers: [] };
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
  return {
    iceServers: parsed.data.map((s) => ({
      urls: s.urls,
      ...(s.username !== undefined ? { username: s.username } : {}),
      ...(s.credential !== undefined ? { credential: s.credential } : {}),
    })),
  };
}
