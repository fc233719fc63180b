import { z } from 'zod';
import { authConfig, authEnv, type AuthConfig } from './config/auth.js';
import { ConfigError, optionalBool, unsetIfEmpty, URL_CREDENTIALS_RULE, urlCredentialsProblem } from './config/env.js';
import { parseMessageKeys } from './config/keys.js';
import { parseMultiHostUrl } from './store/pg-hosts.js';
import { filesConfig, filesEnv, type FilesConfig } from './config/files.js';
import { allowedHosts } from './config/hosts.js';
import { corsOrigins } from './config/origins.js';
import { videoConfig, videoEnv, type VideoConfig } from './config/video.js';
import { notifyConfig, notifyEnv, type NotifyConfig } from './config/notify.js';
import { redisEnv, redisTopologyConfig, type RedisTopologyConfig } from './config/redis.js';
import { rtcConfig, rtcEnv, type RtcConfig } from './config/rtc.js';

export { DEV_JWT_SECRET, TENANT_PLACEHOLDER, type AuthConfig, type IssuerTemplate } from './config/auth.js';
export { ConfigError } from './config/env.js';
export type { VideoConfig } from './config/video.js';
export { fileOrigins, type FilesConfig, type S3Config } from './config/files.js';
export type { NotifyConfig } from './config/notify.js';
export type { RedisHostPort, RedisTopologyConfig } from './config/redis.js';
export type { RtcConfig } from './config/rtc.js';

/**
 * What keeps a PostgreSQL URL from reading as written, or null; `name` says which variable (and which
 * of its URLs). pg, the ORM and the multi-host client would read another host, port or password out
 * of it, or throw at start with the URL, password included, in the error. Never quotes the URL.
 */
function postgresUrlProblem(name: string, url: string): string | null {
  if (!/^postgres(ql)?:\/\//.test(url)) return null;
  const why = urlCredentialsProblem(url);
  if (why !== null) return `${name} does not read as written: ${why}`;
  let single: string;
  try {
    // Its messages quote a host of the list, never the user or password (checked above).
    single = parseMultiHostUrl(url).firstUrl;
  } catch (err) {
    return (err as Error).message;
  }
  try {
    // No host (`user@/chat?host=/socket/dir`): pg reads it with a stand-in host, and so does this check.
    new URL(single.replace('@/', '@localhost/'));
  } catch {
    return `${name} does not parse as a URL; ${URL_CREDENTIALS_RULE}`;
  }
  return null;
}

/** A zod check that adds `problem`'s answer as an issue. */
const noProblem =
  <T>(problem: (v: T) => string | null) =>
  (v: T, ctx: z.core.$RefinementCtx<T>) => {
    const message = problem(v);
    if (message !== null) ctx.addIssue({ code: 'custom', message });
  };

const EnvSchema = z.object({
  ...authEnv,
  ...videoEnv,
  ...filesEnv,
  ...notifyEnv,
  ...redisEnv,
  ...rtcEnv,
  // Anything else (`prodution`, `Production`) would run as development: without the production checks.
  NODE_ENV: unsetIfEmpty(
    z
      .enum(['production', 'development', 'test'], {
        error: (iss) => `NODE_ENV must be production, development or test, not ${JSON.stringify(iss.input)}`,
      })
      .default('development'),
  ),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: z
    .string()
    .min(1)
    .superRefine(noProblem((url: string) => postgresUrlProblem('DATABASE_URL', url)))
    .optional(),
  DATABASE_REPLICA_URLS: z
    .string()
    .optional()
    .transform((v) => (v ?? '').split(/[\s,]+/).filter((u) => u !== ''))
    .refine((urls) => urls.every((u) => /^postgres(ql)?:\/\/[^,]+$/.test(u)), 'DATABASE_REPLICA_URLS is a comma list of postgresql:// URLs, one per replica')
    .superRefine(
      noProblem((urls: string[]) => {
        for (const [i, url] of urls.entries()) {
          const problem = postgresUrlProblem(`DATABASE_REPLICA_URLS (replica ${i + 1} of ${urls.length})`, url);
          if (problem !== null) return problem;
        }
        return null;
      }),
    ),
  DATABASE_REPLICA_MAX_LAG_MS: z.coerce.number().int().min(0).max(3_600_000).default(5000),
  DATA_DIR: z.string().min(1).default('./data'),
  REDIS_PREFIX: z.string().max(64).default('chat:'),
  WS_MAX_PAYLOAD_BYTES: z.coerce.number().int().positive().default(64 * 1024),
  WS_KEEPALIVE_MS: z.coerce.number().int().positive().default(30_000),
  DB_POOL_MAX: z.coerce.number().int().positive().default(10),
  ADMIN_TOKEN: z.string().min(32, 'ADMIN_TOKEN must be at least 32 characters').optional(),
  DB_STATEMENT_TIMEOUT_MS: z.coerce.number().int().min(0).max(3_600_000).default(15_000),
  DB_PREPARED_STATEMENTS: optionalBool,
  DB_SEND_PIPELINE: optionalBool,
  // The drain splits it (src/app.ts): at most half for the sockets, the last quarter kept for closing the services.
  SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(1000, 'SHUTDOWN_TIMEOUT_MS must be at least 1000 ms (the drain shares it between the sockets, the HTTP requests in flight and the services\' close)').default(10_000),
  MESSAGE_KEYS: z.string().optional(),
  PRESENCE_TTL_MS: z.coerce.number().int().min(1000).default(60_000),
  PRESENCE_ROOM_MAX_MEMBERS: z.coerce.number().int().min(0).max(1_000_000).default(200),
  TYPING_TTL_MS: z.coerce.number().int().min(100).default(10_000),
  ACTIVITY_COALESCE_MS: z.coerce.number().int().min(10).max(60_000).default(250),
  ACTIVITY_FEED: optionalBool,
  TYPING_THROTTLE_MS: z.coerce.number().int().min(0).default(3_000),
  RATE_SEND_PER_SECOND: z.coerce.number().int().positive().default(10),
  RATE_SEND_BURST: z.coerce.number().int().min(0).default(20),
  RATE_TYPING_PER_10S: z.coerce.number().int().positive().default(30),
  RATE_SIGNALS_PER_10S: z.coerce.number().int().positive().default(100),
  RATE_ROOM_CREATES_PER_MINUTE: z.coerce.number().int().positive().default(20),
  RATE_ACTIONS_PER_10S: z.coerce.number().int().positive().default(100),
  RATE_READS_PER_10S: z.coerce.number().int().positive().default(300),
  // The number of proxies in front of the node that append to X-Forwarded-For (`on`/`true`: 1).
  TRUST_PROXY: z
    .string()
    .trim()
    .transform((v, ctx) => {
      const lower = v.toLowerCase();
      if (['', '0', 'off', 'false', 'no'].includes(lower)) return 0;
      if (['on', 'true', 'yes'].includes(lower)) return 1;
      if (/^\d{1,2}$/.test(v)) return Number(v);
      ctx.addIssue({ code: 'custom', message: 'TRUST_PROXY is the number of proxies in front of the node (0-99), or on/off' });
      return z.NEVER;
    })
    .optional(),
  CORS_ORIGINS: z.string().optional().transform(corsOrigins),
  ALLOWED_HOSTS: z.string().optional().transform(allowedHosts),
  WS_PONG_WAIT_MS: z.coerce.number().int().positive().default(5000),
  RATE_CONNECTS_PER_IP_PER_MINUTE: z.coerce.number().int().positive().default(600),
  MAX_CONNECTIONS_PER_USER: z.coerce.number().int().positive().default(5),
  MAX_CONNECTIONS_PER_IP: z.coerce.number().int().positive().default(2000),
  MAX_SUBSCRIPTIONS_PER_CONNECTION: z.coerce.number().int().positive().default(100),
  WS_BUFFER_SOFT_BYTES: z.coerce.number().int().positive().default(1024 * 1024),
  WS_BUFFER_HARD_BYTES: z.coerce.number().int().positive().default(8 * 1024 * 1024),
  WS_REPLAY_QUEUE_EVENTS: z.coerce.number().int().positive().default(10_000),
  // Unset: WS_BUFFER_HARD_BYTES, and WS_KEEPALIVE_MS + WS_PONG_WAIT_MS.
  WS_REPLAY_QUEUE_BYTES: z.coerce.number().int().positive().optional(),
  WS_REPLAY_DRAIN_MS: z.coerce.number().int().positive().optional(),
  WS_MAX_INFLIGHT: z.coerce.number().int().positive().max(10_000).default(32),
  MAX_BATCH_SIZE: z.coerce.number().int().positive().max(1000).default(50),
  RETENTION_DAYS: z.coerce.number().int().positive().optional(),
  RETENTION_INTERVAL_MS: z.coerce.number().int().min(1000).default(3_600_000),
  RETENTION_BATCH: z.coerce.number().int().min(10).max(100_000).default(1000),
  LOG_LEVEL: z.enum(['silent', 'error', 'warn', 'info', 'debug']).default('info'),
  LOG_PRETTY: optionalBool,
  WEBHOOK_RETRY_BASE_MS: z.coerce.number().int().min(1).max(3_600_000).default(5000),
  WEBHOOK_MAX_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(12),
  WEBHOOK_POLL_MS: z.coerce.number().int().min(10).max(600_000).default(1000),
  WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).max(120_000).default(10_000),
  WEBHOOK_ALLOW_PRIVATE_URLS: optionalBool,
});

export interface Config {
  env: string;
  port: number;
  host: string;
  /** PostgreSQL URL; undefined means embedded PostgreSQL (PGlite) under dataDir. */
  databaseUrl: string | undefined;
  dataDir: string;
  /**
   * PostgreSQL read replicas (DATABASE_REPLICA_URLS): history, threads, search, room lists and
   * replays read there when the replica has what the caller has seen (src/services/read-routing.ts).
   */
  databaseReplicaUrls: string[];
  /** A replica further behind than this is skipped (reads go to the primary; /readyz says degraded). */
  databaseReplicaMaxLagMs: number;
  /** Redis URL; undefined means the in-process bus (single process only). */
  redisUrl: string | undefined;
  /**
   * Redis Cluster (`REDIS_CLUSTER_NODES`) or Sentinel (`REDIS_SENTINELS`); undefined: `redisUrl`
   * alone says where Redis is. Never both (src/realtime/redis-topology.ts).
   */
  redisTopology: RedisTopologyConfig | undefined;
  /** Prefix for every Redis key and channel of this deployment. */
  redisPrefix: string;
  /**
   * A node that knows it is the only one on its Redis skips the broker for its publishes and counts
   * rate limits in memory (`REDIS_SOLO`, default on; src/realtime/redis-bus.ts).
   */
  redisSolo: boolean;
  /** How access tokens are verified (docs/SECURITY.md, "Access tokens"). */
  auth: AuthConfig;
  devLogin: boolean;
  /** Whether dev login may grant roles and tenants other than `default` (AUTH_DEV_LOGIN_ROLES=1). */
  devLoginRoles: boolean;
  /** Lifetime of tokens minted by auth.devLogin (at most auth.maxTokenTtlSeconds). */
  accessTokenTtlSeconds: number;
  wsMaxPayloadBytes: number;
  wsKeepAliveMs: number;
  /** How long a pinged WebSocket may stay silent before it is closed. */
  wsPongWaitMs: number;
  /** Behind a reverse proxy: take the client address from X-Forwarded-For (first entry). */
  /** Proxies in front of the node that append to X-Forwarded-For (0: the TCP peer is the client). */
  trustProxy: number;
  /**
   * Browser origins allowed besides the server's own (CORS_ORIGINS, normalised); empty: same origin
   * only (src/http/origins.ts).
   */
  corsOrigins: string[];
  /**
   * Host names the server answers to (ALLOWED_HOSTS: names and `*.domain` entries, lower-cased);
   * empty: every host (src/http/hosts.ts).
   */
  allowedHosts: string[];
  dbPoolMax: number;
  /** A static bearer secret for the node-wide operator endpoints (/admin/stats); unset: operator tokens only. */
  adminToken: string | undefined;
  /** PostgreSQL cancels a statement that runs longer (0: no limit). */
  dbStatementTimeoutMs: number;
  /**
   * The hot queries (sends, access checks) run as named prepared statements, planned once per
   * connection. Off for a pooler that cannot keep them (PgBouncer in transaction mode before 1.21),
   * and always off in embedded mode.
   */
  dbPreparedStatements: boolean;
  /** The grouped sends on a pipelined connection of their own (src/store/hot/pipe.ts); with prepared statements only. */
  dbSendPipeline: boolean;
  shutdownTimeoutMs: number;
  logLevel: 'silent' | 'error' | 'warn' | 'info' | 'debug';
  /** Human-readable logs (development). */
  logPretty: boolean;
  /** `kid:base64key,...` for encrypted rooms; the first key encrypts. */
  messageKeys: string | undefined;
  /** How long a connection of a node that stopped heartbeating keeps its user online. */
  presenceTtlMs: number;
  /**
   * Rooms with more members get no presence events (a user coming online would otherwise reach every
   * member of every big room: quadratic as a big room comes online); their clients ask `presence.get`
   * for the users they show. 0: no room gets them.
   */
  presenceRoomMaxMembers: number;
  /** A typing indicator expires this long after its last refresh. */
  typingTtlMs: number;
  /** The shortest time between two `room.activity` inbox events of one room from one node (grows with big rooms). */
  activityCoalesceMs: number;
  /** Whether `room.activity` / `room.changed` go to open inboxes (ACTIVITY_FEED, default on). */
  activityFeed: boolean;
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
    /** Queries per user (all nodes), every 10 s. */
    readsPer10s: number;
    connectAttemptsPerIpPerMinute: number;
    connectionsPerUser: number;
    connectionsPerIp: number;
    subscriptionsPerConnection: number;
    /** Over this many bytes queued on a socket, live-only events are coalesced. */
    wsBufferSoftBytes: number;
    /** Over this, the socket is closed (4008); the client reconnects and resumes. Replies count too. */
    wsBufferHardBytes: number;
    /**
     * While a stream replays (a resume), the live events it keeps for after the replay: over this
     * many, or over `wsReplayQueueBytes` of their encoding, the socket is closed (4008) and the
     * client resumes from its last event id.
     */
    wsReplayQueueEvents: number;
    wsReplayQueueBytes: number;
    /** How long a replay waits for its socket's queue to drop to the soft limit before a page; longer: closed (4008). */
    wsReplayDrainMs: number;
    /** Queries and mutations of one WebSocket being answered at once; more: TOO_MANY_REQUESTS. */
    wsMaxInflight: number;
    /** Calls in one HTTP batch or one WebSocket frame; more: refused (400 / BAD_REQUEST each). */
    maxBatchSize: number;
  };
  /** Default message retention in days (undefined: keep forever); rooms may override. */
  retentionDays: number | undefined;
  retentionIntervalMs: number;
  retentionBatch: number;
  /** Video meetings (docs/VIDEO.md); provider null: video procedures answer PRECONDITION_FAILED. */
  video: VideoConfig;
  /** 1:1 calls: the ICE servers `signal.config` hands to clients (RTC_ICE_SERVERS) and the TURN credentials it mints (RTC_TURN_*). */
  rtc: RtcConfig;
  /** Outgoing webhooks (docs/OPERATIONS.md, "Webhooks"). */
  webhooks: WebhookConfig;
  /** File uploads, storage and downloads (docs/OPERATIONS.md, "Files"). */
  files: FilesConfig;
  /** Web push, e-mail digests and their queue (docs/OPERATIONS.md, "Notifications"). */
  notify: NotifyConfig;
}

/** Outgoing webhooks: first retry delay (doubling, jittered), attempts, poll interval, request timeout, private addresses allowed. */
export interface WebhookConfig {
  retryBaseMs: number;
  maxAttempts: number;
  pollMs: number;
  timeoutMs: number;
  allowPrivateUrls: boolean;
}


/** True for a listen address only this machine reaches (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/** Reads and validates the environment. The only place that touches process.env. */
/** `loadConfig` for a process entry: a configuration error is printed (no stack) and the process exits 1. */
export function loadConfigOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : err);
    process.exit(1);
  }
}

/** Whether a variable's schema reads a number (through defaults, optionals and pipes). */
function readsNumber(schema: z.ZodType): boolean {
  const def = (schema as unknown as { _zod: { def: { type: string; innerType?: z.ZodType; in?: z.ZodType; out?: z.ZodType } } })._zod.def;
  if (def.type === 'number') return true;
  if (def.innerType) return readsNumber(def.innerType);
  if (def.type === 'pipe') return (def.in ? readsNumber(def.in) : false) || (def.out ? readsNumber(def.out) : false);
  return false;
}

/** The number variables: empty (`FOO=`, compose's `${FOO:-}`) they count as unset, never as 0. */
const NUMBER_VARIABLES = Object.entries(EnvSchema.shape)
  .filter(([, schema]) => readsNumber(schema as z.ZodType))
  .map(([name]) => name);

/**
 * Pairs of variables where the first must stay below the second. Each bound is valid alone; together
 * they contradict each other, and the server would run, just not as either says.
 */
const ORDERED_LIMITS = [
  // Live events are coalesced over the soft limit and a replay waits below it before each page; the
  // socket is closed at the hard one: a soft limit at or over the hard one is never in effect.
  ['WS_BUFFER_SOFT_BYTES', 'WS_BUFFER_HARD_BYTES'],
  // Unchanged refreshes within the throttle are not forwarded, and a member's indicator ends a TTL
  // after the last one it got: at or over the TTL it goes off between refreshes while the user types.
  ['TYPING_THROTTLE_MS', 'TYPING_TTL_MS'],
  // Uploads never sent are removed after FILE_UNATTACHED_TTL_SECONDS: an upload URL living longer
  // lets a client upload to a file already removed.
  ['FILE_UPLOAD_TTL_SECONDS', 'FILE_UNATTACHED_TTL_SECONDS'],
] as const satisfies ReadonlyArray<readonly [keyof z.infer<typeof EnvSchema>, keyof z.infer<typeof EnvSchema>]>;

/** One line per pair of ORDERED_LIMITS out of order, naming both variables and their values. */
function outOfOrder(e: z.infer<typeof EnvSchema>, input: Record<string, string | undefined>): string[] {
  const shown = (name: string, value: number) => (input[name] === undefined ? `${value}, the default` : String(value));
  return ORDERED_LIMITS.filter(([low, high]) => e[low] >= e[high]).map(
    ([low, high]) => `${low} (${shown(low, e[low])}) must be below ${high} (${shown(high, e[high])})`,
  );
}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const input = { ...env };
  for (const name of NUMBER_VARIABLES) if (typeof input[name] === 'string' && input[name].trim() === '') delete input[name];
  const parsed = EnvSchema.safeParse(input);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  const contradictions = outOfOrder(e, input);
  if (contradictions.length > 0) throw new ConfigError(`invalid configuration:\n${contradictions.map((line) => `  ${line}`).join('\n')}`);
  // Read at start, not when the services are built: a bad value is one line naming the variable.
  parseMessageKeys(e.MESSAGE_KEYS);
  const production = e.NODE_ENV === 'production';
  const auth = authConfig(e, production);
  // On by default only for the local demo (`npm start`: loopback, not production); anywhere else
  // it must be asked for with AUTH_DEV_LOGIN=1 (and the server warns at start).
  const devLogin = e.AUTH_DEV_LOGIN ?? (!production && isLoopbackHost(e.HOST));
  if (devLogin && auth.jwtSecret === null) throw new ConfigError('AUTH_DEV_LOGIN needs JWT_SECRET (dev-login tokens are HS256)');
  return {
    env: e.NODE_ENV,
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    dataDir: e.DATA_DIR,
    databaseReplicaUrls: e.DATABASE_REPLICA_URLS,
    databaseReplicaMaxLagMs: e.DATABASE_REPLICA_MAX_LAG_MS,
    redisUrl: e.REDIS_URL,
    redisTopology: redisTopologyConfig(e),
    redisPrefix: e.REDIS_PREFIX,
    redisSolo: e.REDIS_SOLO ?? true,
    auth,
    devLogin,
    devLoginRoles: devLogin && (e.AUTH_DEV_LOGIN_ROLES ?? false),
    accessTokenTtlSeconds: e.ACCESS_TOKEN_TTL_SECONDS,
    wsMaxPayloadBytes: e.WS_MAX_PAYLOAD_BYTES,
    wsKeepAliveMs: e.WS_KEEPALIVE_MS,
    wsPongWaitMs: e.WS_PONG_WAIT_MS,
    trustProxy: e.TRUST_PROXY ?? 0,
    corsOrigins: e.CORS_ORIGINS,
    allowedHosts: e.ALLOWED_HOSTS,
    dbPoolMax: e.DB_POOL_MAX,
    dbStatementTimeoutMs: e.DB_STATEMENT_TIMEOUT_MS,
    adminToken: e.ADMIN_TOKEN,
    dbPreparedStatements: e.DB_PREPARED_STATEMENTS ?? true,
    dbSendPipeline: e.DB_SEND_PIPELINE ?? true,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    logLevel: e.LOG_LEVEL,
    logPretty: e.LOG_PRETTY ?? false,
    messageKeys: e.MESSAGE_KEYS,
    presenceTtlMs: e.PRESENCE_TTL_MS,
    presenceRoomMaxMembers: e.PRESENCE_ROOM_MAX_MEMBERS,
    typingTtlMs: e.TYPING_TTL_MS,
    activityCoalesceMs: e.ACTIVITY_COALESCE_MS,
    activityFeed: e.ACTIVITY_FEED ?? true,
    typingThrottleMs: e.TYPING_THROTTLE_MS,
    limits: {
      sendPerSecond: e.RATE_SEND_PER_SECOND,
      sendBurst: e.RATE_SEND_BURST,
      typingPer10s: e.RATE_TYPING_PER_10S,
      signalsPer10s: e.RATE_SIGNALS_PER_10S,
      roomCreatesPerMinute: e.RATE_ROOM_CREATES_PER_MINUTE,
      actionsPer10s: e.RATE_ACTIONS_PER_10S,
      readsPer10s: e.RATE_READS_PER_10S,
      connectAttemptsPerIpPerMinute: e.RATE_CONNECTS_PER_IP_PER_MINUTE,
      connectionsPerUser: e.MAX_CONNECTIONS_PER_USER,
      connectionsPerIp: e.MAX_CONNECTIONS_PER_IP,
      subscriptionsPerConnection: e.MAX_SUBSCRIPTIONS_PER_CONNECTION,
      wsBufferSoftBytes: e.WS_BUFFER_SOFT_BYTES,
      wsBufferHardBytes: e.WS_BUFFER_HARD_BYTES,
      wsReplayQueueEvents: e.WS_REPLAY_QUEUE_EVENTS,
      wsReplayQueueBytes: e.WS_REPLAY_QUEUE_BYTES ?? e.WS_BUFFER_HARD_BYTES,
      wsReplayDrainMs: e.WS_REPLAY_DRAIN_MS ?? e.WS_KEEPALIVE_MS + e.WS_PONG_WAIT_MS,
      wsMaxInflight: e.WS_MAX_INFLIGHT,
      maxBatchSize: e.MAX_BATCH_SIZE,
    },
    retentionDays: e.RETENTION_DAYS,
    retentionIntervalMs: e.RETENTION_INTERVAL_MS,
    retentionBatch: e.RETENTION_BATCH,
    video: videoConfig(e),
    rtc: rtcConfig(e),
    webhooks: { retryBaseMs: e.WEBHOOK_RETRY_BASE_MS, maxAttempts: e.WEBHOOK_MAX_ATTEMPTS, pollMs: e.WEBHOOK_POLL_MS,
      timeoutMs: e.WEBHOOK_TIMEOUT_MS, allowPrivateUrls: e.WEBHOOK_ALLOW_PRIVATE_URLS ?? false },
    files: filesConfig(e, e.DATA_DIR, auth.jwtSecret, production, auth.jwtSecretIsDev),
    notify: notifyConfig(e),
  };
}

/** Builds a config from defaults plus overrides; used by tests and embedding code. */
export function makeConfig(overrides: Partial<Config> = {}): Config {
  return { ...loadConfig({}), ...overrides };
}
