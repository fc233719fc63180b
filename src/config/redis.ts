import { z } from 'zod';
import { ConfigError, optionalBool, unsetIfEmpty, URL_CREDENTIALS_RULE, urlCredentialsProblem } from './env.js';

/** One `host:port` of a Redis Cluster node or of a sentinel. */
export interface RedisHostPort {
  host: string;
  port: number;
}

/**
 * Where Redis is when it is not one server named by `REDIS_URL`: a Redis Cluster
 * (`REDIS_CLUSTER_NODES`) or a primary watched by Redis Sentinel (`REDIS_SENTINELS`,
 * `REDIS_SENTINEL_NAME`). src/realtime/redis-topology.ts turns it into connections.
 */
export type RedisTopologyConfig =
  | {
      kind: 'cluster';
      /** Seed nodes; the client learns the others (and the slot map) from them. */
      nodes: RedisHostPort[];
      username: string | undefined;
      password: string | undefined;
      tls: boolean;
    }
  | {
      kind: 'sentinel';
      sentinels: RedisHostPort[];
      /** The master name the sentinels monitor. */
      name: string;
      username: string | undefined;
      password: string | undefined;
      /** The sentinels' own password (unset: they need none). */
      sentinelPassword: string | undefined;
      tls: boolean;
    };

const hostPorts = (name: string) =>
  z
    .string()
    .trim()
    .transform((v, ctx) => {
      const out: RedisHostPort[] = [];
      for (const item of v.split(',').map((s) => s.trim()).filter(Boolean)) {
        // host:port, [v6]:port
        const m = /^(\[[^\]]+\]|[^:@\s]+):(\d{1,5})$/.exec(item);
        const port = m ? Number(m[2]) : 0;
        if (!m || port < 1 || port > 65535) {
          // What comes before an @ is a user and password: never echoed.
          const at = item.lastIndexOf('@');
          const shown = at < 0 ? item : `...@${item.slice(at + 1)}`;
          const hint = at < 0 ? '' : ` (credentials go in REDIS_USERNAME and REDIS_PASSWORD${name === 'REDIS_SENTINELS' ? ', or REDIS_SENTINEL_PASSWORD' : ''})`;
          ctx.addIssue({ code: 'custom', message: `${name} entry ${out.length + 1}: "${shown}" is not host:port${hint}` });
          return z.NEVER;
        }
        out.push({ host: m[1]!.replace(/^\[|\]$/g, ''), port });
      }
      if (out.length === 0) {
        ctx.addIssue({ code: 'custom', message: `${name} needs at least one host:port` });
        return z.NEVER;
      }
      return out;
    });

/**
 * What is wrong with a REDIS_URL, or null. Kept: what ioredis reads as meant, `redis://` and
 * `rediss://` (TLS) whose user, password, port and database read as written, a unix socket
 * (`unix:///path` or `/path`) and a bare `host[:port]`. Refused:
 * any other scheme, which ioredis reads without a word and wrongly: the path of `http://host:6379/`
 * or `redis-sentinel://host:26379/name` becomes a unix socket, and `valkeys://` or `REDISS://`
 * connect without TLS (ioredis turns TLS on for a lower-case `rediss://` only). The message names
 * the scheme, never the rest of the URL (it may hold a password).
 */
export function redisUrlProblem(url: string): string | null {
  if (/^rediss?:\/\//.test(url)) return redisServerUrlProblem(url);
  if (/^(unix:\/\/\/|\/)/.test(url)) return null;
  if (/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?$/.test(url)) return null;
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(url)?.[1];
  let why: string;
  if (scheme === undefined) why = 'this is neither';
  else if (/^rediss?$/.test(scheme)) why = `"${scheme}:" needs the two slashes of ${scheme}://`;
  else if (/^rediss?$/i.test(scheme)) why = `write the scheme in lower case, not "${scheme}:" (ioredis turns TLS on for rediss:// only)`;
  else why = `not "${scheme}:" (a Cluster or Sentinel goes in REDIS_CLUSTER_NODES or REDIS_SENTINELS)`;
  return `REDIS_URL must be a redis:// or rediss:// (TLS) URL such as redis://user:password@redis.example.com:6379/0, or a unix socket (unix:///path/redis.sock); ${why}`;
}

/**
 * What keeps a `redis://` or `rediss://` URL from reading as written, or null: ioredis would connect
 * elsewhere than meant, or `SELECT NaN`, and its error would carry the password. Never quotes the URL.
 */
function redisServerUrlProblem(url: string): string | null {
  const why = urlCredentialsProblem(url);
  if (why !== null) return `REDIS_URL does not read as written: ${why}`;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `REDIS_URL does not parse as a URL; ${URL_CREDENTIALS_RULE}`;
  }
  // ioredis selects the path after the host as the database.
  if (!/^\/?(\d+)?$/.test(parsed.pathname)) return 'REDIS_URL names its database by number after the host (redis://host:6379/0)';
  return null;
}

/** REDIS_URL: empty counts as unset (compose's `REDIS_URL=` when a Cluster or Sentinel is used instead). */
const redisUrl = unsetIfEmpty(
  z
    .string()
    .transform((v, ctx) => {
      const problem = redisUrlProblem(v);
      if (problem === null) return v;
      ctx.addIssue({ code: 'custom', message: problem });
      return z.NEVER;
    })
    .optional(),
);

export const redisEnv = {
  REDIS_URL: redisUrl,
  REDIS_CLUSTER_NODES: unsetIfEmpty(hostPorts('REDIS_CLUSTER_NODES').optional()),
  REDIS_SENTINELS: unsetIfEmpty(hostPorts('REDIS_SENTINELS').optional()),
  REDIS_SENTINEL_NAME: unsetIfEmpty(z.string().min(1).max(200).optional()),
  REDIS_SENTINEL_PASSWORD: unsetIfEmpty(z.string().min(1).optional()),
  REDIS_USERNAME: unsetIfEmpty(z.string().min(1).optional()),
  REDIS_PASSWORD: unsetIfEmpty(z.string().min(1).optional()),
  REDIS_TLS: optionalBool,
  // A node alone on its Redis skips the broker for its publishes (src/realtime/redis-bus.ts); 0 turns it off.
  REDIS_SOLO: optionalBool,
};

type RedisEnv = {
  REDIS_URL?: string | undefined;
  REDIS_PREFIX: string;
  REDIS_CLUSTER_NODES?: RedisHostPort[] | undefined;
  REDIS_SENTINELS?: RedisHostPort[] | undefined;
  REDIS_SENTINEL_NAME?: string | undefined;
  REDIS_SENTINEL_PASSWORD?: string | undefined;
  REDIS_USERNAME?: string | undefined;
  REDIS_PASSWORD?: string | undefined;
  REDIS_TLS?: boolean | undefined;
};

/**
 * Exactly one topology: `REDIS_URL` (one server), `REDIS_CLUSTER_NODES` (Cluster) or
 * `REDIS_SENTINELS` + `REDIS_SENTINEL_NAME` (Sentinel); none of them: no Redis (one node only).
 * Returns the Cluster or Sentinel topology, or undefined when `REDIS_URL` (or nothing) decides.
 */
export function redisTopologyConfig(e: RedisEnv): RedisTopologyConfig | undefined {
  const set = [
    e.REDIS_URL !== undefined && 'REDIS_URL',
    e.REDIS_CLUSTER_NODES !== undefined && 'REDIS_CLUSTER_NODES',
    e.REDIS_SENTINELS !== undefined && 'REDIS_SENTINELS',
  ].filter((x): x is string => typeof x === 'string');
  if (set.length > 1) {
    throw new ConfigError(`${set.join(' and ')} are set: choose one Redis topology (one server, a Cluster, or Sentinel)`);
  }
  if (e.REDIS_SENTINEL_NAME !== undefined && e.REDIS_SENTINELS === undefined) {
    throw new ConfigError('REDIS_SENTINEL_NAME is set without REDIS_SENTINELS');
  }
  if (e.REDIS_SENTINEL_PASSWORD !== undefined && e.REDIS_SENTINELS === undefined) {
    throw new ConfigError('REDIS_SENTINEL_PASSWORD is set without REDIS_SENTINELS');
  }
  if (e.REDIS_URL !== undefined || set.length === 0) {
    const extra = (['REDIS_USERNAME', 'REDIS_PASSWORD', 'REDIS_TLS'] as const).filter((k) => e[k] !== undefined);
    if (extra.length > 0) {
      throw new ConfigError(
        e.REDIS_URL !== undefined
          ? `${extra.join(', ')}: with REDIS_URL, put the credentials and TLS in the URL (rediss://user:password@host:port)`
          : `${extra.join(', ')} set without a Redis (REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS)`,
      );
    }
    return undefined;
  }
  const common = { username: e.REDIS_USERNAME, password: e.REDIS_PASSWORD, tls: e.REDIS_TLS ?? false };
  if (e.REDIS_CLUSTER_NODES) {
    // The bus names its Cluster channels `<prefix>{<channel>}` (a hash tag): braces in the prefix would take its place.
    if (/[{}]/.test(e.REDIS_PREFIX)) throw new ConfigError('REDIS_PREFIX must not contain { or } with REDIS_CLUSTER_NODES (hash tags)');
    return { kind: 'cluster', nodes: e.REDIS_CLUSTER_NODES, ...common };
  }
  if (!e.REDIS_SENTINEL_NAME) throw new ConfigError('REDIS_SENTINELS needs REDIS_SENTINEL_NAME (the master name the sentinels monitor)');
  return { kind: 'sentinel', sentinels: e.REDIS_SENTINELS!, name: e.REDIS_SENTINEL_NAME, sentinelPassword: e.REDIS_SENTINEL_PASSWORD, ...common };
}
