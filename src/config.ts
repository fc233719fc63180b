import { z } from 'zod';

/** The development JWT secret. Refused when NODE_ENV=production. */
export const DEV_JWT_SECRET = 'dev-secret-change-me-dev-secret-change-me';
/** Secrets published in this repository (the development default, the docker-compose placeholder): refused in production. */
const KNOWN_SECRETS = [DEV_JWT_SECRET, 'change-me-to-a-long-random-secret'];

const bool = z
  .enum(['1', '0', 'true', 'false', 'on', 'off', 'yes', 'no'])
  .transform((v) => ['1', 'true', 'on', 'yes'].includes(v));
/** An empty variable (`FOO=` or compose's `${FOO:-}`) counts as unset. */
const unsetIfEmpty = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === '' ? undefined : v), schema);
/** A claim name: a literal key or a dotted path (`realm_access.roles`, `https://chat.example.com/roles`). */
const claimName = z.string().min(1).max(256).regex(/^\S+$/, 'a claim name has no spaces');

/**
 * CORS_ORIGINS: a comma list of exact browser origins (`scheme://host[:port]`), each normalised as
 * browsers send it in `Origin` (`HTTPS://App.Example.com:443` -> `https://app.example.com`). No
 * wildcard, no path: every bad entry is one issue naming it.
 */
function corsOrigins(raw: string | undefined, ctx: z.RefinementCtx): string[] {
  const origins = new Set<string>();
  for (const entry of (raw ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    if (entry.includes('*')) {
      ctx.addIssue(`"${entry}": wildcards are refused; list the exact origin of each frontend, e.g. https://app.example.com (docs/SECURITY.md says why)`);
      continue;
    }
    let url: URL | null = null;
    try {
      url = new URL(entry);
    } catch {
      // not a URL at all: reported below
    }
    const parts = /^https?:\/\/([^/?#\\]+)(.*)$/i.exec(entry);
    if (!url || !parts || url.username || url.password) {
      ctx.addIssue(`"${entry}" is not an origin: expected http(s)://host[:port], e.g. https://app.example.com`);
    } else if (parts[2]) {
      ctx.addIssue(`"${entry}" has a path: an origin is scheme://host[:port] only (here ${url.origin})`);
    } else {
      origins.add(url.origin);
    }
  }
  return [...origins];
}

const EnvSchema = z.object({
  NODE_ENV: z.string().default('development'),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z.string().min(1).optional(),
  DATA_DIR: z.string().min(1).default('./data'),
  REDIS_URL: z.string().min(1).optional(),
  REDIS_PREFIX: z.string().max(64).default('chat:'),
  JWT_SECRET: z.string().optional(),
  AUTH_DEV_LOGIN: bool.optional(),
  ACCESS_TOKEN_TTL_SECONDS: z.coerce.number().int().positive().default(12 * 3600),
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
  AUTH_MAX_TOKEN_TTL_SECONDS: z.coerce.number().int().positive().max(30 * 86_400).default(86_400),
  AUTH_CLOCK_TOLERANCE_SECONDS: z.coerce.number().int().min(0).max(300).default(5),
  WS_MAX_PAYLOAD_BYTES: z.coerce.number().int().positive().default(64 * 1024),
  WS_KEEPALIVE_MS: z.coerce.number().int().positive().default(30_000),
  DB_POOL_MAX: z.coerce.number().int().positive().default(10),
  DB_PREPARED_STATEMENTS: bool.optional(),
  SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().positive().default(10_000),
  MESSAGE_KEYS: z.string().optional(),
  PRESENCE_TTL_MS: z.coerce.number().int().min(1000).default(60_000),
  TYPING_TTL_MS: z.coerce.number().int().min(100).default(10_000),
  TYPING_THROTTLE_MS: z.coerce.number().int().min(0).default(3_000),
  RATE_SEND_PER_SECOND: z.coerce.number().int().positive().default(10),
  RATE_SEND_BURST: z.coerce.number().int().min(0).default(20),
  RATE_TYPING_PER_10S: z.coerce.number().int().positive().default(30),
  RATE_SIGNALS_PER_10S: z.coerce.number().int().positive().default(100),
  RATE_ROOM_CREATES_PER_MINUTE: z.coerce.number().int().positive().default(20),
  RATE_ACTIONS_PER_10S: z.coerce.number().int().positive().default(100),
  TRUST_PROXY: bool.optional(),
  CORS_ORIGINS: z.string().optional().transform(corsOrigins),
  WS_PONG_WAIT_MS: z.coerce.number().int().positive().default(5000),
  RATE_CONNECTS_PER_IP_PER_MINUTE: z.coerce.number().int().positive().default(600),
  MAX_CONNECTIONS_PER_USER: z.coerce.number().int().positive().default(5),
  MAX_CONNECTIONS_PER_IP: z.coerce.number().int().positive().default(2000),
  MAX_SUBSCRIPTIONS_PER_CONNECTION: z.coerce.number().int().positive().default(100),
  WS_BUFFER_SOFT_BYTES: z.coerce.number().int().positive().default(1024 * 1024),
  WS_BUFFER_HARD_BYTES: z.coerce.number().int().positive().default(8 * 1024 * 1024),
  RETENTION_DAYS: z.coerce.number().int().positive().optional(),
  RETENTION_INTERVAL_MS: z.coerce.number().int().min(1000).default(3_600_000),
  RETENTION_BATCH: z.coerce.number().int().min(10).max(100_000).default(1000),
  LOG_LEVEL: z.enum(['silent', 'error', 'warn', 'info', 'debug']).default('info'),
  LOG_PRETTY: bool.optional(),
  VIDEO_PROVIDER: z.enum(['livekit', 'daily', 'none']).optional(),
  LIVEKIT_URL: z.url({ error: 'LIVEKIT_URL must be a URL such as wss://my-project.livekit.cloud' }).optional(),
  LIVEKIT_API_KEY: z.string().min(1).optional(),
  LIVEKIT_API_SECRET: z.string().min(1).optional(),
  DAILY_API_KEY: z.string().min(1).optional(),
  DAILY_API_URL: z.url().default('https://api.daily.co/v1'),
  DAILY_WEBHOOK_SECRET: z.string().min(1).optional(),
  VIDEO_TOKEN_TTL_SECONDS: z.coerce.number().int().min(30).max(86_400).default(600),
  WEBHOOK_RETRY_BASE_MS: z.coerce.number().int().min(1).max(3_600_000).default(5000),
  WEBHOOK_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(12),
  WEBHOOK_POLL_MS: z.coerce.number().int().min(10).max(600_000).default(1000),
  WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(10_000),
  WEBHOOK_ALLOW_PRIVATE_URLS: bool.optional(),
});

export interface Config {
  env: string;
  port: number;
  host: string;
  /** PostgreSQL URL; undefined means embedded PostgreSQL (PGlite) under dataDir. */
  databaseUrl: string | undefined;
  dataDir: string;
  /** Redis URL; undefined means the in-process bus (single process only). */
  redisUrl: string | undefined;
  /** Prefix for every Redis key and channel of this deployment. */
  redisPrefix: string;
  /** How access tokens are verified (docs/SECURITY.md, "Access tokens"). */
  auth: AuthConfig;
  devLogin: boolean;
  /** Lifetime of tokens minted by auth.devLogin (at most auth.maxTokenTtlSeconds). */
  accessTokenTtlSeconds: number;
  wsMaxPayloadBytes: number;
  wsKeepAliveMs: number;
  /** How long a pinged WebSocket may stay silent before it is closed. */
  wsPongWaitMs: number;
  /** Behind a reverse proxy: take the client address from X-Forwarded-For (first entry). */
  trustProxy: boolean;
  /**
   * Browser origins allowed besides the server's own (CORS_ORIGINS, normalised); empty: same origin
   * only (src/http/origins.ts).
   */
  corsOrigins: string[];
  dbPoolMax: number;
  /**
   * The hot queries (sends, access checks) run as named prepared statements, planned once per
   * connection. Off for a pooler that cannot keep them (PgBouncer in transaction mode before 1.21),
   * and always off in embedded mode.
   */
  dbPreparedStatements: boolean;
  shutdownTimeoutMs: number;
  logLevel: 'silent' | 'error' | 'warn' | 'info' | 'debug';
  /** Human-readable logs (development). */
  logPretty: boolean;
  /** `kid:base64key,...` for encrypted rooms; the first key encrypts. */
  messageKeys: string | undefined;
  /** How long a connection of a node that stopped heartbeating keeps its user online. */
  presenceTtlMs: number;
  /** A typing indicator expires this long after its last refresh. */
  typingTtlMs: number;
  /** Unchanged "typing" refreshes are forwarded at most this often per user and room. */
  typingThrottleMs: number;
  limits: {
    sendPerSecond: number;
    sendBurst: number;
    typingPer10s: number;
    signalsPer10s: number;
    roomCreatesPerMinute: number;
    /** Edits, deletes, reactions, read marks and presence changes per user. */
    actionsPer10s: number;
    connectAttemptsPerIpPerMinute: number;
    connectionsPerUser: number;
    connectionsPerIp: number;
    subscriptionsPerConnection: number;
    /** Over this many bytes queued on a socket, live-only events are coalesced. */
    wsBufferSoftBytes: number;
    /** Over this, the socket is closed (4008); the client reconnects and resumes. */
    wsBufferHardBytes: number;
  };
  /** Default message retention in days (undefined: keep forever); rooms may override. */
  retentionDays: number | undefined;
  retentionIntervalMs: number;
  retentionBatch: number;
  /** Video meetings (docs/VIDEO.md); provider null: video procedures answer PRECONDITION_FAILED. */
  video: VideoConfig;
  /** Outgoing webhooks (docs/OPERATIONS.md, "Webhooks"). */
  webhooks: WebhookConfig;
}

/** Outgoing webhooks: first retry delay (doubling, jittered), attempts, poll interval, request timeout, private addresses allowed. */
export interface WebhookConfig {
  retryBaseMs: number;
  maxAttempts: number;
  pollMs: number;
  timeoutMs: number;
  allowPrivateUrls: boolean;
}

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
  claims: { subject: string; tenant: string; tenantRequired: boolean; name: string; roles: string };
  /** Longest accepted lifetime: exp - iat, and exp - now. */
  maxTokenTtlSeconds: number;
  clockToleranceSeconds: number;
}

export interface VideoConfig {
  provider: 'livekit' | 'daily' | null;
  livekit: { url: string; apiKey: string; apiSecret: string } | null;
  /** `webhookSecret`: the base64 `hmac` secret of the Daily webhook (unset: Daily webhooks are refused). */
  daily: { apiKey: string; apiUrl: string; webhookSecret: string | null } | null;
  /** Lifetime of join tokens minted by `video.joinToken`. */
  tokenTtlSeconds: number;
}

/**
 * VIDEO_PROVIDER picks the provider; unset, it is LiveKit when LIVEKIT_* is set, else Daily when
 * DAILY_API_KEY is set, else none. A provider chosen explicitly must have its variables.
 */
function videoConfig(e: z.infer<typeof EnvSchema>): VideoConfig {
  const livekit =
    e.LIVEKIT_URL && e.LIVEKIT_API_KEY && e.LIVEKIT_API_SECRET
      ? { url: e.LIVEKIT_URL, apiKey: e.LIVEKIT_API_KEY, apiSecret: e.LIVEKIT_API_SECRET }
      : null;
  const daily = e.DAILY_API_KEY
    ? { apiKey: e.DAILY_API_KEY, apiUrl: e.DAILY_API_URL.replace(/\/+$/, ''), webhookSecret: e.DAILY_WEBHOOK_SECRET ?? null }
    : null;
  let provider: VideoConfig['provider'];
  if (e.VIDEO_PROVIDER === 'none') provider = null;
  else if (e.VIDEO_PROVIDER === 'livekit') {
    if (!livekit) throw new ConfigError('VIDEO_PROVIDER=livekit needs LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET');
    provider = 'livekit';
  } else if (e.VIDEO_PROVIDER === 'daily') {
    if (!daily) throw new ConfigError('VIDEO_PROVIDER=daily needs DAILY_API_KEY (and DAILY_WEBHOOK_SECRET for webhooks)');
    provider = 'daily';
  } else provider = livekit ? 'livekit' : daily ? 'daily' : null;
  return { provider, livekit, daily, tokenTtlSeconds: e.VIDEO_TOKEN_TTL_SECONDS };
}

/** JWT_SECRET, JWKS, issuer, audience and claims; the production rules of docs/SECURITY.md. */
function authConfig(e: z.infer<typeof EnvSchema>, production: boolean): AuthConfig {
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
      subject: e.AUTH_SUBJECT_CLAIM, name: e.AUTH_NAME_CLAIM, roles: e.AUTH_ROLES_CLAIM,
      tenant: e.AUTH_TENANT_CLAIM ?? 'tenant', tenantRequired: e.AUTH_TENANT_CLAIM !== undefined,
    },
    maxTokenTtlSeconds: e.AUTH_MAX_TOKEN_TTL_SECONDS,
    clockToleranceSeconds: e.AUTH_CLOCK_TOLERANCE_SECONDS,
  };
}

export class ConfigError extends Error {}

/** Reads and validates the environment. The only place that touches process.env. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const production = e.NODE_ENV === 'production';
  const auth = authConfig(e, production);
  const devLogin = e.AUTH_DEV_LOGIN ?? !production;
  if (devLogin && auth.jwtSecret === null) throw new ConfigError('AUTH_DEV_LOGIN needs JWT_SECRET (dev-login tokens are HS256)');
  return {
    env: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    dataDir: e.DATA_DIR,
    redisUrl: e.REDIS_URL,
    redisPrefix: e.REDIS_PREFIX,
    auth,
    devLogin,
    accessTokenTtlSeconds: e.ACCESS_TOKEN_TTL_SECONDS,
    wsMaxPayloadBytes: e.WS_MAX_PAYLOAD_BYTES,
    wsKeepAliveMs: e.WS_KEEPALIVE_MS,
    wsPongWaitMs: e.WS_PONG_WAIT_MS,
    trustProxy: e.TRUST_PROXY ?? false,
    corsOrigins: e.CORS_ORIGINS,
    dbPoolMax: e.DB_POOL_MAX,
    dbPreparedStatements: e.DB_PREPARED_STATEMENTS ?? true,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    logLevel: e.LOG_LEVEL,
    logPretty: e.LOG_PRETTY ?? false,
    messageKeys: e.MESSAGE_KEYS,
    presenceTtlMs: e.PRESENCE_TTL_MS,
    typingTtlMs: e.TYPING_TTL_MS,
    typingThrottleMs: e.TYPING_THROTTLE_MS,
    limits: {
      sendPerSecond: e.RATE_SEND_PER_SECOND,
      sendBurst: e.RATE_SEND_BURST,
      typingPer10s: e.RATE_TYPING_PER_10S,
      signalsPer10s: e.RATE_SIGNALS_PER_10S,
      roomCreatesPerMinute: e.RATE_ROOM_CREATES_PER_MINUTE,
      actionsPer10s: e.RATE_ACTIONS_PER_10S,
      connectAttemptsPerIpPerMinute: e.RATE_CONNECTS_PER_IP_PER_MINUTE,
      connectionsPerUser: e.MAX_CONNECTIONS_PER_USER,
      connectionsPerIp: e.MAX_CONNECTIONS_PER_IP,
      subscriptionsPerConnection: e.MAX_SUBSCRIPTIONS_PER_CONNECTION,
      wsBufferSoftBytes: e.WS_BUFFER_SOFT_BYTES,
      wsBufferHardBytes: e.WS_BUFFER_HARD_BYTES,
    },
    retentionDays: e.RETENTION_DAYS,
    retentionIntervalMs: e.RETENTION_INTERVAL_MS,
    retentionBatch: e.RETENTION_BATCH,
    video: videoConfig(e),
    webhooks: { retryBaseMs: e.WEBHOOK_RETRY_BASE_MS, maxAttempts: e.WEBHOOK_MAX_ATTEMPTS, pollMs: e.WEBHOOK_POLL_MS,
      timeoutMs: e.WEBHOOK_TIMEOUT_MS, allowPrivateUrls: e.WEBHOOK_ALLOW_PRIVATE_URLS ?? false },
  };
}

/** Builds a config from defaults plus overrides; used by tests and embedding code. */
export function makeConfig(overrides: Partial<Config> = {}): Config {
  return { ...loadConfig({}), ...overrides };
}
