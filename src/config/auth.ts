import { z } from 'zod';
import { ConfigError, optionalBool, unsetIfEmpty } from './env.js';

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
  // No 0: it would lift the bound on refetches, and a token with a made-up key id (kid) would make
  // the server fetch the identity provider's key set for every token.
  AUTH_JWKS_COOLDOWN_SECONDS: z.coerce
    .number()
    .int()
    .min(1, 'must be at least 1 (seconds between refetches of the key set for unknown key ids; 0 would refetch it for every made-up key id)')
    .max(3600)
    .default(30),
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
  AUTH_DEV_LOGIN: optionalBool,
  AUTH_DEV_LOGIN_ROLES: optionalBool,
};
type AuthEnv = z.infer<z.ZodObject<typeof authEnv>>;

export interface AuthConfig {
  /** HS256 key (JWT_SECRET, at least 32 bytes); null: HS256 tokens are refused (production with a JWKS only). */
  jwtSecret: string | null;
  /** True when the secret is the built-in development one. */
  jwtSecretIsDev: boolean;
  /**
   * The identity provider's keys (RS256, ES256, EdDSA, ...); null: HS256 tokens only. `perTenant`:
   * the URL names `{tenant}` (a key set per tenant, fetched when its first token comes).
   */
  jwks: { url: string; perTenant: boolean; cooldownSeconds: number; cacheSeconds: number; timeoutMs: number } | null;
  /** Required `iss` (the text of AUTH_ISSUER, `{tenant}` included when it has one); null: not checked. */
  issuer: string | null;
  /**
   * AUTH_ISSUER with `{tenant}` (a realm or directory per tenant): `iss` must be `prefix`, a tenant
   * id, `suffix`, and that tenant is the token's (src/auth/verifier.ts). Null: a fixed issuer, or none.
   */
  issuerTemplate: IssuerTemplate | null;
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

/** The placeholder of AUTH_ISSUER and AUTH_JWKS_URL where a tenant's id goes. */
export const TENANT_PLACEHOLDER = '{tenant}';

/** `iss` = prefix + tenant id + suffix. */
export interface IssuerTemplate {
  prefix: string;
  suffix: string;
}

const placeholders = (v: string) => v.split(TENANT_PLACEHOLDER).length - 1;

/** AUTH_ISSUER's template, or null without `{tenant}`; ConfigError for more than one. */
function issuerTemplateOf(issuer: string | undefined): IssuerTemplate | null {
  if (issuer === undefined || placeholders(issuer) === 0) return null;
  if (placeholders(issuer) > 1) throw new ConfigError('AUTH_ISSUER names {tenant} more than once');
  const [prefix, suffix] = issuer.split(TENANT_PLACEHOLDER) as [string, string];
  return { prefix, suffix };
}

/**
 * AUTH_JWKS_URL with `{tenant}`: only where AUTH_ISSUER names it too, once, and only in the path,
 * so that a token's tenant never chooses the host its keys come from (a tenant id may hold dots:
 * `https://{tenant}/keys` would let a token name a key server of its own).
 */
function checkJwksTemplate(url: string, issuerTemplate: IssuerTemplate | null): boolean {
  const n = placeholders(url);
  if (n === 0) return false;
  if (!issuerTemplate) throw new ConfigError('AUTH_JWKS_URL names {tenant}: AUTH_ISSUER must name it too (the tenant is read from the issuer of each token)');
  if (n > 1) throw new ConfigError('AUTH_JWKS_URL names {tenant} more than once');
  const at = url.indexOf(TENANT_PLACEHOLDER);
  const pathStart = url.indexOf('/', url.indexOf('://') + 3);
  if (pathStart < 0 || at < pathStart) throw new ConfigError('AUTH_JWKS_URL may name {tenant} in its path only, never in its host or port');
  return true;
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
  const issuerTemplate = issuerTemplateOf(e.AUTH_ISSUER);
  const perTenant = e.AUTH_JWKS_URL !== undefined && checkJwksTemplate(e.AUTH_JWKS_URL, issuerTemplate);
  return {
    jwtSecret: secret ?? (production ? null : DEV_JWT_SECRET),
    jwtSecretIsDev: secret === undefined && !production,
    jwks: e.AUTH_JWKS_URL
      ? { url: e.AUTH_JWKS_URL, perTenant, cooldownSeconds: e.AUTH_JWKS_COOLDOWN_SECONDS, cacheSeconds: e.AUTH_JWKS_CACHE_SECONDS, timeoutMs: e.AUTH_JWKS_TIMEOUT_MS }
      : null,
    issuer: e.AUTH_ISSUER ?? null,
    issuerTemplate,
    audience,
    claims: {
      subject: e.AUTH_SUBJECT_CLAIM, name: e.AUTH_NAME_CLAIM, roles: e.AUTH_ROLES_CLAIM, email: e.AUTH_EMAIL_CLAIM,
      tenant: e.AUTH_TENANT_CLAIM ?? 'tenant', tenantRequired: e.AUTH_TENANT_CLAIM !== undefined,
    },
    maxTokenTtlSeconds: e.AUTH_MAX_TOKEN_TTL_SECONDS,
    clockToleranceSeconds: e.AUTH_CLOCK_TOLERANCE_SECONDS,
  };
}
