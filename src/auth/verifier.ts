import { createHmac, createSecretKey, type KeyObject, timingSafeEqual } from 'node:crypto';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import {
  type CryptoKey,
  createLocalJWKSet,
  createRemoteJWKSet,
  type ExportedJWKSCache,
  decodeJwt,
  decodeProtectedHeader,
  errors,
  type JSONWebKeySet,
  jwksCache,
  type JWKSCacheInput,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  type ProtectedHeaderParameters,
  UnsecuredJWT,
} from 'jose';
import { type AuthConfig, TENANT_PLACEHOLDER } from '../config.js';
import type { Actor } from '../domain/actor.js';
import { isTenantId } from '../domain/ids.js';
import { addressKey } from '../http/client-address.js';
import { setNewest } from '../util/bounded.js';
import { actorFromClaims } from './claims.js';
import { AuthError } from './errors.js';

/** Signed with the shared secret (JWT_SECRET): only this, and never with a key of the JWKS. */
const SECRET_ALGORITHMS = ['HS256'];
/** Signed with the identity provider's keys (AUTH_JWKS_URL): only these, and never with the shared secret. */
export const JWKS_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA', 'Ed25519'];
/** Longer tokens are refused before any parsing (the same bound as `auth.refresh`'s input). */
export const MAX_TOKEN_LENGTH = 8192;

const INVALID = 'invalid access token';

/**
 * Header members of the tokens whose HS256 signature is checked with node:crypto's HMAC (see
 * `verifySecret`); a token with any other member (`crit`, `b64`, ...) goes through jose's whole JWS
 * verification instead.
 */
const PLAIN_HEADER = new Set(['alg', 'typ', 'kid']);
/** The header of an unsecured JWT: what jose's claim validation is handed once the signature is checked. */
const NONE_HEADER = Buffer.from('{"alg":"none"}').toString('base64url');
const UNAVAILABLE = "cannot verify the access token now: the identity provider's keys could not be loaded (retry later)";
const OTHER_ISSUER = 'access token is from another issuer (iss)';
/** Key sets per tenant (AUTH_JWKS_URL with `{tenant}`) kept at most; the least recently used goes first. */
export const MAX_TENANT_KEY_SETS = 10_000;
/** Tenants remembered as seen (a token of theirs verified), and tenants whose key set could not be fetched. */
export const MAX_KNOWN_TENANTS = 100_000;
const MAX_FAILED_TENANTS = 10_000;
/**
 * Key sets of tenants not seen since start fetched at most, per 10 s, per client address and per
 * node. A token can name any tenant before its signature can be checked, and each new one costs the
 * identity provider a request; past these, `SERVICE_UNAVAILABLE` until the window moves on. Tenants
 * seen once are never held by them, so a flood of made-up tenants cannot lock real ones out.
 */
export const NEW_TENANTS_PER_SOURCE_PER_10S = 10;
export const NEW_TENANTS_PER_10S = 1000;

/**
 * The one place where access tokens are verified (HTTP and WebSocket contexts, auth.refresh,
 * /admin/stats): signature, algorithm, issuer, audience, expiry and lifetime, then the claims
 * mapped to an Actor. Created once per process from the config; the JWKS is fetched lazily, cached
 * and refetched once for a token whose key id it does not know (key rotation).
 */
export class TokenVerifier {
  /** The shared secret as an HMAC key, imported once (jose would import raw bytes again for every token). */
  private readonly secret: Promise<CryptoKey> | null;
  /**
   * The shared secret as a node:crypto key, made once: an HMAC keyed with the raw bytes makes a key
   * object of them for every token (10 µs against 2 µs per HMAC here).
   */
  private readonly secretKey: KeyObject | null;
  private readonly jwks: JWTVerifyGetKey | null;
  /** With AUTH_JWKS_URL naming `{tenant}`: each tenant's key set, made when its first token comes (least recently used first). */
  private readonly tenantKeys = new Map<string, JWTVerifyGetKey>();
  /** Tenants a token of which verified: their key set is fetched again without the new-tenant budgets. */
  private readonly knownTenants = new Map<string, true>();
  /** Tenants whose key set could not be fetched, and when: not asked again within the cooldown, and never kept in `tenantKeys`. */
  private readonly failedTenants = new Map<string, number>();
  private readonly newTenantsPerSource: RateLimiterMemory;
  private readonly newTenants: RateLimiterMemory;
  private readonly options: JWTVerifyOptions;

  /**
   * `budgetWindowSeconds`: the window of the new-tenant budgets (10 s; a test that spends a whole
   * budget on a slow machine takes a longer one, so that the window cannot move under it).
   */
  constructor(
    private readonly config: AuthConfig,
    { budgetWindowSeconds = 10 }: { budgetWindowSeconds?: number } = {},
  ) {
    this.newTenantsPerSource = new RateLimiterMemory({ points: NEW_TENANTS_PER_SOURCE_PER_10S, duration: budgetWindowSeconds });
    this.newTenants = new RateLimiterMemory({ points: NEW_TENANTS_PER_10S, duration: budgetWindowSeconds });
    this.secret =
      config.jwtSecret === null
        ? null
        : (crypto.subtle.importKey('raw', new TextEncoder().encode(config.jwtSecret), { name: 'HMAC', hash: 'SHA-256' }, false, ['verify']) as Promise<CryptoKey>);
    this.secretKey = config.jwtSecret === null ? null : createSecretKey(Buffer.from(config.jwtSecret, 'utf8'));
    this.jwks = config.jwks && !config.jwks.perTenant ? remoteKeys(config.jwks.url, config.jwks) : null;
    this.options = {
      requiredClaims: ['exp'],
      clockTolerance: config.clockToleranceSeconds,
      // A template's issuer is checked per token (`issuerOf`).
      ...(config.issuer !== null && config.issuerTemplate === null ? { issuer: config.issuer } : {}),
      ...(config.audience.length > 0 ? { audience: config.audience } : {}),
    };
  }

  /**
   * The actor of a valid token; AuthError (with a message a client can show) otherwise. `source`:
   * who presented it (the client address), for the budget of tenants not seen since start.
   */
  async verify(token: string, source = 'unknown'): Promise<Actor> {
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) throw new AuthError(INVALID);
    let header: ProtectedHeaderParameters;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new AuthError(INVALID);
    }
    const alg: unknown = header.alg;
    const from = this.issuerOf(token);
    const options = from ? { ...this.options, issuer: from.issuer } : this.options;
    let payload: JWTPayload;
    try {
      // The header's alg picks the key, and each key accepts its own algorithms only: an HS256
      // token is never checked against a public key (the classic algorithm confusion).
      if (alg === 'HS256' && this.secretKey && Object.keys(header).every((k) => PLAIN_HEADER.has(k))) {
        payload = this.verifySecret(token, options);
      } else if (typeof alg === 'string' && SECRET_ALGORITHMS.includes(alg) && this.secret) {
        payload = (await jwtVerify(token, await this.secret, { ...options, algorithms: SECRET_ALGORITHMS })).payload;
      } else if (typeof alg === 'string' && JWKS_ALGORITHMS.includes(alg) && this.config.jwks) {
        payload = (await jwtVerify(token, await this.keysOf(from?.tenant, source), { ...options, algorithms: JWKS_ALGORITHMS })).payload;
        if (from && this.config.jwks.perTenant) setNewest(this.knownTenants, from.tenant, true, MAX_KNOWN_TENANTS);
      } else {
        throw new AuthError(typeof alg === 'string' && /^[A-Za-z0-9]{1,16}$/.test(alg) ? `access token algorithm ${alg} is not accepted by this server` : INVALID);
      }
    } catch (err) {
      throw authErrorOf(err);
    }
    const now = Date.now() / 1000;
    this.checkLifetime(payload, now);
    const actor = actorFromClaims(payload, this.config.claims, from?.tenant);
    // An iat ahead of this clock (the issuer's runs fast, within the tolerance) is taken as now: the
    // token exists, so it was issued by now at the latest. A revocation compares iat with its own
    // time (src/services/sessions.ts): the sessions of such a token, open before it, are revoked too.
    if (actor.iat !== undefined && actor.iat > now) actor.iat = now;
    return actor;
  }

  /**
   * With AUTH_ISSUER naming `{tenant}`: the token's `iss` (read before its signature is checked, to
   * pick the tenant's keys; the signature then covers it) and the tenant it names, a tenant id or
   * the token is from another issuer. Null with a fixed issuer or none.
   */
  private issuerOf(token: string): { issuer: string; tenant: string } | null {
    const template = this.config.issuerTemplate;
    if (!template) return null;
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      throw new AuthError(INVALID);
    }
    if (typeof iss !== 'string' || iss === '') throw new AuthError('access token has no issuer (iss)');
    const { prefix, suffix } = template;
    if (iss.length <= prefix.length + suffix.length || !iss.startsWith(prefix) || !iss.endsWith(suffix)) throw new AuthError(OTHER_ISSUER);
    const tenant = iss.slice(prefix.length, iss.length - suffix.length);
    if (!isTenantId(tenant)) throw new AuthError(OTHER_ISSUER);
    return { issuer: iss, tenant };
  }

  /**
   * With a key set per tenant: counts these tenants as seen (at start, the tenants with users in the
   * database), so that after a restart their key sets are fetched without the new-tenant budgets.
   */
  knowTenants(tenants: Iterable<string>): void {
    if (!this.config.jwks?.perTenant) return;
    for (const t of tenants) if (isTenantId(t)) setNewest(this.knownTenants, t, true, MAX_KNOWN_TENANTS);
  }

  /** The key set for a token of `tenant`: the one key set, or with AUTH_JWKS_URL naming `{tenant}` the tenant's own. */
  private async keysOf(tenant: string | undefined, source: string): Promise<JWTVerifyGetKey> {
    const jwks = this.config.jwks!;
    if (!jwks.perTenant) return this.jwks!;
    const name = tenant!;
    const cached = this.tenantKeys.get(name);
    if (cached) {
      setNewest(this.tenantKeys, name, cached, MAX_TENANT_KEY_SETS);
      return cached;
    }
    // A tenant the provider did not know (or could not answer for) is not asked again within the cooldown.
    const failed = this.failedTenants.get(name);
    if (failed !== undefined && Date.now() - failed < jwks.cooldownSeconds * 1000) throw new AuthError(UNAVAILABLE, { unavailable: true });
    if (!this.knownTenants.has(name)) {
      const allowed = await this.newTenantsPerSource
        .consume(addressKey(source))
        .then(() => this.newTenants.consume('node'))
        .then(
          () => true,
          () => false,
        );
      if (!allowed) throw new AuthError(UNAVAILABLE, { unavailable: true });
    }
    const again = this.tenantKeys.get(name);
    if (again) return again;
    const keys: JWTVerifyGetKey = remoteKeys(jwks.url.replace(TENANT_PLACEHOLDER, encodeURIComponent(name)), jwks, () => {
      // Not kept: made-up tenants never take the places of real ones.
      if (this.tenantKeys.get(name) === keys) this.tenantKeys.delete(name);
      setNewest(this.failedTenants, name, Date.now(), MAX_FAILED_TENANTS);
    });
    setNewest(this.tenantKeys, name, keys, MAX_TENANT_KEY_SETS);
    return keys;
  }

  /**
   * An HS256 token with a plain header: its signature checked with node:crypto's HMAC, its claims by
   * jose's own claim validation (expiry, not-before, issuer, audience, required claims, clock
   * tolerance: the same checks and errors as `jwtVerify`). jose signs and verifies with WebCrypto,
   * whose HMAC job took about 120 µs of the event loop per token in Node 24, a tenth of a
   * connection's whole cost (docs/BENCHMARKS.md, "Big rooms"); this takes a few µs.
   */
  private verifySecret(token: string, options: JWTVerifyOptions): JWTPayload {
    const first = token.indexOf('.');
    const second = token.indexOf('.', first + 1);
    if (first < 0 || second < 0 || token.indexOf('.', second + 1) >= 0) throw new AuthError(INVALID);
    const expected = Buffer.from(createHmac('sha256', this.secretKey!).update(token.slice(0, second)).digest('base64url'));
    const given = Buffer.from(token.slice(second + 1));
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new AuthError(INVALID);
    return UnsecuredJWT.decode(`${NONE_HEADER}.${token.slice(first + 1, second)}.`, options).payload;
  }

  /** At most AUTH_MAX_TOKEN_TTL_SECONDS from iat to exp, and from now to exp (tokens without iat); no iat in the future. */
  private checkLifetime(payload: JWTPayload, now: number): void {
    const { exp, iat } = payload;
    if (exp === undefined) throw new AuthError('access token has no expiry (exp)');
    const max = this.config.maxTokenTtlSeconds;
    const tolerance = this.config.clockToleranceSeconds;
    if ((iat !== undefined && exp - iat > max) || exp - now > max + tolerance) {
      throw new AuthError(`access token lifetime exceeds the maximum of ${max} s`);
    }
    // A token "issued" later would outlive a revocation of its user (revocation compares iat).
    if (iat !== undefined && iat > now + tolerance) throw new AuthError('access token is issued in the future (iat)');
  }
}


/**
 * How long after the provider's last answer its keys still verify tokens while it cannot be
 * reached (down, hung, answering garbage): an outage of the provider does not stop every sign-in
 * once the cache is older than AUTH_JWKS_CACHE_SECONDS, nor does one failed refetch throw a
 * tenant's keys away; a key the provider withdrew meanwhile cannot be known before it answers again.
 */
const STALE_KEYS_MAX_SECONDS = 86_400;

/**
 * An identity provider's key set at `url`: cached, refetched once for an unknown key id (after the
 * cooldown). Once a fetch failed, the keys of the last answer (`STALE_KEYS_MAX_SECONDS`), without
 * asking again within the cooldown: tokens of known keys do not wait for a hung provider each, and
 * made-up key ids do not make the node hammer it. `onUnavailable`: told when a fetch failed and no
 * such keys are held (the provider down, or a tenant it does not know).
 */
function remoteKeys(url: string, jwks: NonNullable<AuthConfig['jwks']>, onUnavailable?: () => void): JWTVerifyGetKey {
  // jose writes the key set of each successful fetch here, and when (`uat`).
  const fetched: JWKSCacheInput = {};
  const remote = createRemoteJWKSet(new URL(url), {
    cooldownDuration: jwks.cooldownSeconds * 1000,
    cacheMaxAge: jwks.cacheSeconds * 1000,
    timeoutDuration: jwks.timeoutMs,
    [jwksCache]: fetched,
  });
  /** The last answer's keys, imported once per answer. */
  let last: { set: JSONWebKeySet; keys: ReturnType<typeof createLocalJWKSet> } | null = null;
  const lastKeys = (): ReturnType<typeof createLocalJWKSet> | null => {
    const { jwks: set, uat } = fetched as Partial<ExportedJWKSCache>;
    if (set === undefined || uat === undefined || Date.now() - uat > STALE_KEYS_MAX_SECONDS * 1000) return null;
    if (last?.set !== set) last = { set, keys: createLocalJWKSet(set) };
    return last.keys;
  };
  /** When a fetch last failed while keys were held: within the cooldown the provider is not asked again. */
  let failedAt = Number.NEGATIVE_INFINITY;
  const fromHeld = (held: ReturnType<typeof createLocalJWKSet>, header: Parameters<JWTVerifyGetKey>[0], token: Parameters<JWTVerifyGetKey>[1], cause: unknown) =>
    held(header, token).catch((heldErr: unknown) => {
      // A key id the last answer lacks may be one the provider added since: not the token's fault either.
      throw heldErr instanceof errors.JWKSNoMatchingKey ? new AuthError(UNAVAILABLE, { unavailable: true, cause }) : keyError(heldErr);
    });
  return async (header, token) => {
    const recent = Date.now() - failedAt < jwks.cooldownSeconds * 1000 ? lastKeys() : null;
    if (recent) return fromHeld(recent, header, token, new Error('the last fetch of the key set failed'));
    try {
      return await remote(header, token);
    } catch (err) {
      if (!unavailableKeys(err)) throw keyError(err);
      // Unreachable, slow, not 200, not a key set: the provider's problem, not the token's.
      const held = lastKeys();
      if (!held) {
        onUnavailable?.();
        throw new AuthError(UNAVAILABLE, { unavailable: true, cause: err });
      }
      failedAt = Date.now();
      return fromHeld(held, header, token, err);
    }
  };
}

/** True unless a key lookup failed for the token's own sake (its key id, its algorithm). */
const unavailableKeys = (err: unknown) =>
  !(err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys || err instanceof errors.JOSENotSupported);

/** A key lookup's verdict on the token. */
function keyError(err: unknown): unknown {
  if (err instanceof errors.JWKSNoMatchingKey) return new AuthError('access token is signed by an unknown key (kid)');
  if (err instanceof errors.JWKSMultipleMatchingKeys) return new AuthError('access token has no key id (kid) and several keys match');
  if (err instanceof errors.JOSENotSupported) return new AuthError(INVALID);
  return err;
}

/** jose's verdicts as messages a client can show. */
function authErrorOf(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (err instanceof errors.JWTExpired) return new AuthError('access token expired');
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'exp':
        return new AuthError(err.reason === 'missing' ? 'access token has no expiry (exp)' : 'access token expiry (exp) is invalid');
      case 'iss':
        return new AuthError(err.reason === 'missing' ? 'access token has no issuer (iss)' : OTHER_ISSUER);
      case 'aud':
        return new AuthError(err.reason === 'missing' ? 'access token has no audience (aud)' : 'access token is not meant for this service (aud)');
      case 'nbf':
        return new AuthError('access token is not valid yet (nbf)');
      default:
        return new AuthError(`access token claim ${err.claim} is invalid`);
    }
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return new AuthError('access token algorithm is not accepted by this server');
  return new AuthError(INVALID);
}
