import type { JWTPayload } from 'jose';
import type { AuthConfig } from '../config.js';
import type { Actor } from '../domain/actor.js';
import { isTenantId, isUserId, MAX_TENANT_LENGTH, MAX_USER_ID_LENGTH } from '../domain/ids.js';
import { isWellFormed } from '../domain/text.js';
import { AuthError } from './errors.js';

/** Providers add roles of their own (`offline_access`, `default-roles-<realm>`, ...): up to this many are taken. */
export const MAX_ROLES = 64;
const MAX_ROLE_LENGTH = 128;
const MAX_NAME_LENGTH = 200;
const CONTROL = /\p{Cc}/u;

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * A claim by name. The whole name is a key first (Auth0's namespaced `https://chat.example.com/roles`);
 * otherwise it is a dotted path (Keycloak's `realm_access.roles`), each step taking the longest
 * dotted prefix that is a key of the object it is in. Only own keys count.
 */
export function readClaim(payload: Record<string, unknown>, name: string): unknown {
  let cur: unknown = payload;
  let parts = name.split('.');
  while (parts.length > 0) {
    if (!isRecord(cur)) return undefined;
    let step = parts.length;
    while (step > 0 && !Object.hasOwn(cur, parts.slice(0, step).join('.'))) step--;
    if (step === 0) return undefined;
    cur = cur[parts.slice(0, step).join('.')];
    parts = parts.slice(step);
  }
  return cur;
}

const validId = (v: string, max: number) => v.length > 0 && v.length <= max && !CONTROL.test(v);

/** The roles claim: an array of strings or a space-separated string; absent: no roles. */
function rolesOf(value: unknown, claim: string): string[] {
  if (value === undefined || value === null) return [];
  const list: unknown = typeof value === 'string' ? value.split(/\s+/).filter((r) => r.length > 0) : value;
  if (!Array.isArray(list) || !list.every((r): r is string => typeof r === 'string')) {
    throw new AuthError(`access token claim ${claim} must be a list of role names`);
  }
  if (list.length > MAX_ROLES) throw new AuthError(`access token has more than ${MAX_ROLES} roles (${claim})`);
  if (!list.every((r) => validId(r, MAX_ROLE_LENGTH))) throw new AuthError(`access token has an invalid role name (${claim})`);
  return [...new Set(list)];
}

/** A display name: the first usable candidate, cut to the column's length. */
function nameOf(candidates: unknown[], fallback: string): string {
  for (const c of candidates) {
    if (typeof c !== 'string') continue;
    const name = c.trim();
    if (name.length > 0 && !CONTROL.test(name) && isWellFormed(name)) return Array.from(name).slice(0, MAX_NAME_LENGTH).join('');
  }
  return fallback;
}

const MAX_EMAIL_LENGTH = 254;
const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** The e-mail claim: used only when it looks like an address (a bad one is ignored, never refused). */
function emailOf(value: unknown): { email?: string } {
  if (typeof value !== 'string') return {};
  const email = value.trim();
  if (email.length > MAX_EMAIL_LENGTH || CONTROL.test(email) || !EMAIL.test(email)) return {};
  return { email };
}

/**
 * The actor of a verified token, by the configured claim names; AuthError when a claim is missing or
 * invalid. `issuerTenant`: the tenant its issuer names (AUTH_ISSUER with `{tenant}`): the token's
 * tenant, which a tenant claim, when the token has one, must repeat.
 */
export function actorFromClaims(payload: JWTPayload, claims: AuthConfig['claims'], issuerTenant?: string): Actor {
  const sub = readClaim(payload, claims.subject);
  if (sub === undefined || sub === null || sub === '') throw new AuthError(`access token has no subject (${claims.subject})`);
  if (typeof sub !== 'string' || !isUserId(sub)) {
    throw new AuthError(
      `access token subject (${claims.subject}) must be a user id of at most ${MAX_USER_ID_LENGTH} characters without whitespace or control characters`,
    );
  }
  const rawTenant = readClaim(payload, claims.tenant);
  let tenant = 'default';
  if (issuerTenant !== undefined) {
    if (rawTenant !== undefined && rawTenant !== null && rawTenant !== issuerTenant) {
      throw new AuthError(`access token tenant (${claims.tenant}) is not the tenant of its issuer (iss)`);
    }
    tenant = issuerTenant;
  } else if (rawTenant === undefined || rawTenant === null) {
    // Never guessed when the deployment named the claim: the user would land in the wrong tenant.
    if (claims.tenantRequired) throw new AuthError(`access token has no tenant (${claims.tenant})`);
  } else if (typeof rawTenant === 'string' && isTenantId(rawTenant)) tenant = rawTenant;
  else {
    throw new AuthError(
      `access token tenant (${claims.tenant}) must be 1-${MAX_TENANT_LENGTH} of A-Z a-z 0-9 . _ - (starting with a letter or digit)`,
    );
  }
  return {
    id: sub,
    name: nameOf([readClaim(payload, claims.name), payload.preferred_username], sub),
    tenant,
    roles: rolesOf(readClaim(payload, claims.roles), claims.roles),
    ...emailOf(readClaim(payload, claims.email)),
    ...(payload.exp !== undefined ? { exp: payload.exp } : {}),
    ...(payload.iat !== undefined ? { iat: payload.iat } : {}),
  };
}
