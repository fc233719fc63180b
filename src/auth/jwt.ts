import jwt from 'jsonwebtoken';
import { z } from 'zod';
import type { Actor } from '../domain/actor.js';

/** Access token claims (contract): sub, name, optional tenant and roles, exp. */
const ClaimsSchema = z.object({
  sub: z.string().min(1).max(128),
  name: z.string().min(1).max(200).optional(),
  tenant: z.string().min(1).max(64).default('default'),
  roles: z.array(z.string().max(32)).max(16).default([]),
  exp: z.number().int().optional(),
  iat: z.number().int().optional(),
});

export class AuthError extends Error {}

/** Verifies an HS256 access token; throws AuthError with a reason a client can show. */
export function verifyToken(token: string, secret: string): Actor {
  let payload: unknown;
  try {
    payload = jwt.verify(token, secret, { algorithms: ['HS256'] });
  } catch (err) {
    if (err instanceof jwt.TokenExpiredError) throw new AuthError('access token expired');
    throw new AuthError('invalid access token');
  }
  const claims = ClaimsSchema.safeParse(payload);
  if (!claims.success) throw new AuthError('access token claims are invalid');
  const c = claims.data;
  return {
    id: c.sub,
    name: c.name ?? c.sub,
    tenant: c.tenant,
    roles: c.roles,
    ...(c.exp ? { exp: c.exp } : {}),
    ...(c.iat ? { iat: c.iat } : {}),
  };
}

export function signToken(
  claims: { sub: string; name?: string; tenant?: string; roles?: string[] },
  secret: string,
  ttlSeconds: number,
): string {
  return jwt.sign({ ...claims }, secret, { algorithm: 'HS256', expiresIn: ttlSeconds });
}

export function isExpired(actor: Actor, nowMs = Date.now()): boolean {
  return actor.exp !== undefined && actor.exp * 1000 <= nowMs;
}
