import { SignJWT } from 'jose';
import type { AuthConfig } from '../config.js';

export interface TokenClaims {
  sub: string;
  name: string;
  tenant: string;
  roles: string[];
}

/**
 * Mints HS256 access tokens with the shared secret (auth.devLogin). They carry `iss` (the tenant's
 * with an issuer per tenant) and `aud` when those are configured and put name, tenant and roles under the configured claim names, so
 * they pass the same checks as every other token.
 */
export class TokenSigner {
  private readonly key: Uint8Array;

  constructor(
    secret: string,
    private readonly config: Pick<AuthConfig, 'issuer' | 'issuerTemplate' | 'audience' | 'claims'>,
  ) {
    this.key = new TextEncoder().encode(secret);
  }

  /** A token for `claims` valid for `ttlSeconds`, and its expiry (seconds since the epoch). */
  async sign(claims: TokenClaims, ttlSeconds: number): Promise<{ token: string; exp: number }> {
    const c = this.config.claims;
    const now = Math.floor(Date.now() / 1000);
    const exp = now + ttlSeconds;
    let jwt = new SignJWT({ [c.subject]: claims.sub, [c.name]: claims.name, [c.tenant]: claims.tenant, [c.roles]: claims.roles })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(claims.sub)
      .setIssuedAt(now)
      .setExpirationTime(exp);
    // An issuer per tenant (AUTH_ISSUER with `{tenant}`): the tenant's own.
    const template = this.config.issuerTemplate;
    if (template !== null) jwt = jwt.setIssuer(`${template.prefix}${claims.tenant}${template.suffix}`);
    else if (this.config.issuer !== null) jwt = jwt.setIssuer(this.config.issuer);
    const audience = this.config.audience[0];
    if (audience !== undefined) jwt = jwt.setAudience(audience);
    return { token: await jwt.sign(this.key), exp };
  }
}
