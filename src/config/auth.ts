import { z } from 'zod';
import { bool, ConfigError, unsetIfEmpty } from './env.js';

/** The development JWT secret. Refused when NODE_ENV=production. */
export const DEV_JWT_SECRET = 'dev-secret-change-me-dev-secret-change-me';
/** Secrets published in this repository (the development default, the docker-compose placeholder): refused in production. */
const KNOWN_SECRETS = [DEV_JWT_SECRET, 'change-me-to-a-long-random-secret'];

/** A claim name: a literal key or a dotted path (`realm_access.roles`, `https://chat.example.com/roles`). */
const claimName = z.string().min(1).max(256).regex(/^\S+$/, 'a claim name has no spaces');

/** The access-token variables (docs/OPERATIONS.md, "Access tokens"). */
export const authEnv = {
  JWT_SECRET: z.string().optional(),
  AUTH_JWKS_URL: unsetIfEmpty(z.url({ protocol: /^https?$/, error: 'AUTH_JWKS_URL must be the http(s) URL of a JSON Web Key Set' }).optional()),
  AUTH_JWKS_COOLDOWN_SECONDS: z.coerce.number().int().min(0).max(3600).default(30),
  AUTH_JWKS_CACHE_SECONDS: z.coerce.number().int().min(1).max(7 * 86_400).default(600),
  AUTH_JWKS_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(5000),
  AUTH_ISSUER: unsetIfEmpty(z.string().min(1).max(1024).optional()),
  AUTH_AUDIENCE: unsetIfEmpty(z.string().min(1).max(4096).optional()),
  AUTH_SUBJECT_CLAIM: unsetIfEmpty(claimName.default('sub')),
  AUTH_TENANT_CLAIM: unsetIfEmpty(claimName.optional()),
  AUTH_NAME_CLAIM: unsetIfEmpty(claimName.default('name')),
  AUTH_ROLES_CLAIM: unsetIfEmpty(claimName.default('roles')),
  AUTH_EMAIL_CLAIM: unsetIfEmpty(claimName.default('email')),
  AUTH_MAX_TOKEN_TTL_SECONDS: z.coerce.number().int().positive().max(30 * 86_400).default(86_400),
  AUTH_CLOCK_TOLERANCE_SECONDS: z.coerce.number().int().min(0).max(300).default(5),
  ACCESS_TOKEN_TTL_SECONDS: z.coerce.number().int().positive().default(12 * 3600),
  AUTH_DEV_LOGIN: bool.optional(),
  AUTH_DEV_LOGIN_ROLES: bool.optional(),
};
type AuthEnv = z.infer<z.ZodObject<typeof authEnv>>;

export interface AuthConfig {
  /** HS256 key (JWT_SECRET, at least 32 bytes); null: HS256 tokens are refused (production with a JWKS only). */
  jwtSecret: string | null;
  /** True when the secret is the built-in development one. */
  jwtSecretIsDev: boolean;
  /** The identity provider's keys (RS256, ES256, EdDSA, ...); null: HS256 tokens only. */
  jwks: { url: string; cooldownSeconds: number; cacheSeconds: number; timeoutMs: number } | null;
  /** Required `iss`; null: not checked. */
  issuer: string | null;
  /** `aud` must contain one of these; empty: not checked. */
  audience: string[];
  /**
   * Where the actor's fields are read from (a literal key first, then a dotted path). tenantRequired
   * (AUTH_TENANT_CLAIM set explicitly): a token without the tenant claim is refused, not `default`.
   */
  claims: { subject: string; tenant: string; tenantRequired: boolean; name: string; roles: string; email: string };
  /** Longest accepted lifetime: exp - iat, and exp - now. */
  maxTokenTtlSeconds: number;
  clockToleranceSeconds: number;
}

/** JWT_SECRET, JWKS, issuer, audience and claims; the production rules of docs/SECURITY.md. */
export function authConfig(e: AuthEnv, production: boolean): AuthConfig {
  const secret = e.JWT_SECRET;
  if (secret !== undefined && Buffer.byteLength(secret, 'utf8') < 32) {
    throw new ConfigError('JWT_SECRET must be at least 32 bytes (e.g. the output of `openssl rand -base64 48`)');
  }
  const audience = (e.AUTH_AUDIENCE ?? '').split(',').map((a) => a.trim()).filter((a) => a.length > 0);
  if (production) {
    if (secret !== undefined && KNOWN_SECRETS.includes(secret)) {
      throw new ConfigError('JWT_SECRET is a value published with this project: set a random secret of at least 32 bytes');
    }
    if (secret === undefined && !e.AUTH_JWKS_URL) {
      throw new ConfigError('JWT_SECRET or AUTH_JWKS_URL (the identity provider keys) must be set when NODE_ENV=production');
    }
    const missing = [e.AUTH_ISSUER ? null : 'AUTH_ISSUER', audience.length ? null : 'AUTH_AUDIENCE'].filter((m) => m !== null);
    if (missing.length) throw new ConfigError(`${missing.join(' and ')} must be set when NODE_ENV=production`);
  }
  const [ttl, max] = [e.ACCESS_TOKEN_TTL_SECONDS, e.AUTH_MAX_TOKEN_TTL_SECONDS];
  if (ttl > max) throw new ConfigError(`ACCESS_TOKEN_TTL_SECONDS (${ttl}) must not exceed AUTH_MAX_TOKEN_TTL_SECONDS (${max})`);
  return {
    jwtSecret: secret ?? (production ? null : DEV_JWT_SECRET),
    jwtSecretIsDev: secret === undefined && !production,
    jwks: e.AUTH_JWKS_URL
      ? { url: e.AUTH_JWKS_URL, cooldownSeconds: e.AUTH_JWKS_COOLDOWN_SECONDS, cacheSeconds: e.AUTH_JWKS_CACHE_SECONDS, timeoutMs: e.AUTH_JWKS_TIMEOUT_MS }
      : null,
    issuer: e.AUTH_ISSUER ?? null,
    audience,
    claims: {
      subject: e.AUTH_SUBJECT_CLAIM, name: e.AUTH_NAME_CLAIM, roles: e.AUTH_ROLES_CLAIM, email: e.AUTH_EMAIL_CLAIM,
      tenant: e.AUTH_TENANT_CLAIM ?? 'tenant', tenantRequired: e.AUTH_TENANT_CLAIM !== undefined,
    },
    maxTokenTtlSeconds: e.AUTH_MAX_TOKEN_TTL_SECONDS,
    clockToleranceSeconds: e.AUTH_CLOCK_TOLERANCE_SECONDS,
  };
}
