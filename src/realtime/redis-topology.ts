import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { Config, RedisTopologyConfig } from '../config.js';
import { ConfigError } from '../config.js';

/**
 * The one place that decides how a node reaches Redis: one server (`REDIS_URL`), a primary found
 * through Redis Sentinel (`REDIS_SENTINELS` + `REDIS_SENTINEL_NAME`), or a Redis Cluster
 * (`REDIS_CLUSTER_NODES`). Every connection of a node (src/realtime/redis.ts, RedisLink) is built
 * by `createRedisClient` from it.
 */
export type RedisTopology = { kind: 'single'; url: string } | RedisTopologyConfig;

/** A connection of any topology: ioredis' `Redis` (one server, Sentinel) or `Cluster`. */
export type RedisClient = Redis | Cluster;

/** The node's Redis, or null without one (in-process stores, one node only). */
export function redisTopologyOf(config: Pick<Config, 'redisUrl' | 'redisTopology'>): RedisTopology | null {
  if (config.redisTopology && config.redisUrl) {
    throw new ConfigError(`REDIS_URL and ${config.redisTopology.kind === 'cluster' ? 'REDIS_CLUSTER_NODES' : 'REDIS_SENTINELS'} are both set: choose one Redis topology`);
  }
  if (config.redisTopology) return config.redisTopology;
  return config.redisUrl ? { kind: 'single', url: config.redisUrl } : null;
}

/** A short description for logs and /readyz (never a password). */
export function describeTopology(t: RedisTopology): string {
  switch (t.kind) {
    case 'single': {
      try {
        const u = new URL(t.url);
        return `${u.protocol}//${u.host}`;
      } catch {
        return 'redis';
      }
    }
    case 'cluster':
      return `cluster ${t.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`;
    case 'sentinel':
      return `sentinel ${t.name}@${t.sentinels.map((n) => `${n.host}:${n.port}`).join(',')}`;
  }
}

/** What a role asks of its connection, whatever the topology. */
export interface ClientOptions {
  /** Per-connection options (retries, offline queue, auto-pipelining, name). */
  redis: RedisOptions;
  /** Cluster only: a connection for sharded pub/sub (`SSUBSCRIBE`), one subscriber per master. */
  shardedSubscriber?: boolean;
}

/** Backoff shared by every topology: 100 ms doubling up to 2 s, forever (a node outlives a Redis outage). */
export const retryStrategy = (times: number) => Math.min(50 * 2 ** Math.min(times, 6), 2000);

/** How often a Cluster subscriber re-reads the slot map by itself (a slot moved under its channels). */
const SUBSCRIBER_SLOTS_REFRESH_MS = 2000;

export function createRedisClient(t: RedisTopology, opts: ClientOptions): RedisClient {
  const common: RedisOptions = {
    lazyConnect: false,
    enableReadyCheck: true,
    retryStrategy,
    // After a failover the old primary answers writes with READONLY: reconnect to the new one.
    reconnectOnError: (err) => err.message.startsWith('READONLY'),
    ...opts.redis,
  };
  switch (t.kind) {
    case 'single':
      return new Redis(t.url, common);
    case 'sentinel':
      return new Redis({
        ...common,
        sentinels: t.sentinels,
        name: t.name,
        username: t.username,
        password: t.password,
        sentinelPassword: t.sentinelPassword,
        tls: t.tls ? {} : undefined,
        enableTLSForSentinelMode: t.tls,
        sentinelRetryStrategy: retryStrategy,
        // No failoverDetector: ioredis's detector disconnects the connector when +switch-master
        // arrives, and when that happens during a reconnect the connection ends for good (status
        // "end", reproduced in test/redis-sentinel.test.ts under load). A dead primary fails the
        // connection anyway, and a demoted one answers writes with READONLY (reconnectOnError).
      });
    case 'cluster': {
      const { enableAutoPipelining, enableOfflineQueue, ...perNode } = common;
      const clusterOpts: ClusterOptions = {
        scaleReads: 'master',
        enableReadyCheck: true,
        enableOfflineQueue: enableOfflineQueue ?? true,
        enableAutoPipelining: enableAutoPipelining ?? false,
        clusterRetryStrategy: retryStrategy,
        redisOptions: {
          ...perNode,
          username: t.username,
          password: t.password,
          tls: t.tls ? {} : undefined,
        },
      };
      if (opts.shardedSubscriber) {
        clusterOpts.shardedSubscribers = true;
        clusterOpts.slotsRefreshInterval = SUBSCRIBER_SLOTS_REFRESH_MS;
      }
      return new Cluster(t.nodes, clusterOpts);
    }
  }
}

export function isCluster(client: RedisClient): client is Cluster {
  return client instanceof Cluster;
}
