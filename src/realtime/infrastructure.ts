import type { Config } from '../config.js';
import type { Logger } from '../logger.js';
import type { EventBus } from './bus.js';
import { MemoryBus } from './memory-bus.js';
import { MemoryPresenceStore } from './memory-presence.js';
import type { PresenceStore } from './presence-store.js';
import { RedisLink } from './redis.js';
import { RedisPresenceStore } from './redis-presence.js';
import { busConnections, RedisBus } from './redis-bus.js';
import { describeTopology, redisTopologyOf } from './redis-topology.js';

/** 'up' or 'down', as /readyz reports each store. */
export type StoreStatus = 'up' | 'down';

/** Every Redis-backed store of the node and its state; all 'up' in memory mode. */
export interface RedisHealth {
  /** 'memory' without Redis: every store below lives in this process. */
  kind: 'redis' | 'memory';
  /** With Redis Sentinel or Cluster: which (absent with one server). */
  topology?: 'sentinel' | 'cluster';
  bus: { publisher: StoreStatus; subscriber: StoreStatus };
  presence: StoreStatus;
  limits: StoreStatus;
  sessions: StoreStatus;
}

/**
 * The shared stores a node depends on besides PostgreSQL, chosen once: Redis when it is configured
 * (`REDIS_URL`, `REDIS_SENTINELS` or `REDIS_CLUSTER_NODES`: state shared by every node), this
 * process's memory otherwise (one node only). Each store
 * is handed to the service that uses it, which closes it with itself.
 */
export interface Infrastructure {
  bus: EventBus;
  presence: PresenceStore;
  /** The rate limits' counters: Redis, or null to count in memory. */
  limits: RedisLink | null;
  /** The sessions' revocation list: Redis, or null to keep it in memory. */
  sessions: RedisLink | null;
  /** Every Redis connection in use (none in memory mode). */
  redis: readonly RedisLink[];
  /** Pings every store (in parallel, each bounded by `timeoutMs`). */
  health(timeoutMs: number): Promise<RedisHealth>;
}

export interface InfrastructureOptions {
  log: Logger;
  /** How long a presence entry lives without a heartbeat. */
  presenceTtlMs: number;
  /** Every error of the bus (its connections' and failed publishes). */
  onBusError: (err: unknown) => void;
}

const status = (up: boolean): StoreStatus => (up ? 'up' : 'down');

export function createInfrastructure(config: Config, opts: InfrastructureOptions): Infrastructure {
  const { log, presenceTtlMs, onBusError } = opts;
  const topology = redisTopologyOf(config);
  if (!topology) {
    const bus = new MemoryBus(onBusError);
    return {
      bus,
      presence: new MemoryPresenceStore(presenceTtlMs),
      limits: null,
      sessions: null,
      redis: [],
      async health() {
        const up = status(await bus.ping());
        return { kind: 'memory', bus: { publisher: up, subscriber: up }, presence: 'up', limits: 'up', sessions: 'up' };
      },
    };
  }
  const url = topology;
  log.info({ redis: describeTopology(topology) }, 'redis');
  const busLinks = busConnections(url, { log, onError: onBusError });
  const presenceLink = new RedisLink('presence', url, { log });
  const limits = new RedisLink('limits', url, { log });
  const sessions = new RedisLink('sessions', url, { log });
  return {
    bus: new RedisBus({ connections: busLinks, prefix: config.redisPrefix, onError: onBusError, solo: config.redisSolo }),
    presence: new RedisPresenceStore(presenceLink, config.redisPrefix, presenceTtlMs),
    limits,
    sessions,
    redis: [busLinks.pub, busLinks.sub, presenceLink, limits, sessions],
    async health(timeoutMs) {
      const [pub, sub, presence, lim, ses] = await Promise.all(
        [busLinks.pub, busLinks.sub, presenceLink, limits, sessions].map((l) => l.ping(timeoutMs)),
      );
      return {
        kind: 'redis',
        ...(topology.kind === 'single' ? {} : { topology: topology.kind }),
        bus: { publisher: status(pub!), subscriber: status(sub!) },
        presence: status(presence!),
        limits: status(lim!),
        sessions: status(ses!),
      };
    },
  };
}

/** True when every store of `h` is up. */
export function allUp(h: RedisHealth): boolean {
  return h.bus.publisher === 'up' && h.bus.subscriber === 'up' && h.presence === 'up' && h.limits === 'up' && h.sessions === 'up';
}
