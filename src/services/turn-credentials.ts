import { createHmac } from 'node:crypto';
import type { IceServerDto } from '../domain/calls.js';
import type { RtcTurnConfig } from '../config/rtc.js';

/**
 * Time-limited TURN credentials, the "TURN REST API" of coturn's `use-auth-secret` (also how
 * LiveKit, Janus and Matrix servers hand out TURN): the TURN server and this server share a
 * secret; nothing is stored, the TURN server checks a credential by recomputing it.
 *
 *   username   = "<expiry, unix seconds>:<user key>"
 *   credential = base64(HMAC-SHA1(secret, username))
 *
 * The TURN server refuses a username whose expiry has passed. The user key stands for the tenant
 * and the user without naming either: the first 16 bytes of HMAC-SHA256(secret,
 * 'turn-user:' + JSON.stringify([tenant, userId])), base64url (22 characters, never a ':', which
 * separates the expiry). It is stable, so TURN logs and quotas can be told apart per user, and an
 * operator who knows the secret can compute it for a user; to anyone else it says nothing, and a
 * same-named user of another tenant has another key.
 */
export interface TurnCredential {
  server: IceServerDto;
  expiresAt: Date;
}

/** The user key of a tenant's user in TURN usernames. */
export function turnUserKey(secret: string, tenant: string, userId: string): string {
  return createHmac('sha256', secret)
    .update(`turn-user:${JSON.stringify([tenant, userId])}`)
    .digest()
    .subarray(0, 16)
    .toString('base64url');
}

/** A credential for `who`, valid `turn.ttlSeconds` from `nowMs`, for every URL of RTC_TURN_URLS. */
export function mintTurnCredential(turn: RtcTurnConfig, who: { tenant: string; id: string }, nowMs: number): TurnCredential {
  const expiry = Math.floor(nowMs / 1000) + turn.ttlSeconds;
  const username = `${expiry}:${turnUserKey(turn.secret, who.tenant, who.id)}`;
  const credential = createHmac('sha1', turn.secret).update(username).digest('base64');
  return { server: { urls: [...turn.urls], username, credential }, expiresAt: new Date(expiry * 1000) };
}
