import { isWellFormed } from './text.js';
/**
 * Tenant and user ids, and the keys built from them (docs/SECURITY.md, "Ids and keys").
 *
 * - A tenant id is 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
 * - A user id (a token's subject) is 1-128 characters without whitespace or control characters,
 *   well-formed (no lone surrogate)
 *   (identity providers' subjects such as `auth0|5f1c...` or e-mail addresses fit).
 *
 * Every key that joins ids (bus channels, Redis keys, rate-limit buckets) is built by `keyOf`, which
 * percent-encodes each part, so no part can contain the separator: tenant `a:b` with user `c` and
 * tenant `a` with user `b:c` never share a key.
 */
export const MAX_TENANT_LENGTH = 64;
export const MAX_USER_ID_LENGTH = 128;

export const TENANT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this rejects
export const USER_ID = /^[^\s\u0000-\u001f\u007f-\u009f]{1,128}$/u;

export const isTenantId = (v: string): boolean => TENANT_ID.test(v);
/** A user id: USER_ID, and well-formed (a lone surrogate passes the pattern but breaks keys and JSON). */
export const isUserId = (v: string): boolean => USER_ID.test(v) && isWellFormed(v);

/** What `encodeURIComponent` leaves as it is (ids and uuids nearly always are). */
const UNRESERVED = /^[A-Za-z0-9\-_.!~*'()]*$/;

/**
 * One unambiguous key from its parts: each percent-encoded, joined by `:`. A part that encoding
 * would not change is taken as it is (the check is cheaper than the encoding; keys are built on
 * every send).
 */
export function keyOf(...parts: string[]): string {
  let key = '';
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    const part = UNRESERVED.test(p) ? p : encodeURIComponent(p);
    key = i === 0 ? part : `${key}:${part}`;
  }
  return key;
}
