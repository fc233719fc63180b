import type { RedisOptions } from 'ioredis';
import { AppError } from '../domain/errors.js';
import type { Logger } from '../logger.js';
import { withTimeout } from '../util/async.js';
import { createRedisClient, isCluster, type RedisClient, type RedisTopology } from './redis-topology.js';
import { keySlot } from './redis-slot.js';

/**
 * Every Redis connection of a node is built here, with one reconnect policy and one way of
 * reporting an outage, on the topology src/realtime/redis-topology.ts decides (one server,
 * Sentinel or Cluster). A node opens five when Redis is configured (src/realtime/infrastructure.ts):
 * the bus's publisher and subscriber, presence, rate limits and sessions. On a Cluster each of
 * them is an ioredis `Cluster` (a connection per master, the bus subscriber one per master it
 * listens on).
 */
export type RedisRole = 'bus-pub' | 'bus-sub' | 'presence' | 'limits' | 'sessions';

/** What differs between the roles; everything else is the common policy above. */
/** A connection ioredis ended by itself is connected again after this pause. */
const RECONNECT_AFTER_END_MS = 1000;

const ROLE_OPTIONS: Record<RedisRole, (nodeId: string) => RedisOptions> = {
  // Auto-pipelining: the publishes of one tick (a group commit publishes a whole group) leave in
  // one socket write; one connection, so their order is kept.
  'bus-pub': (nodeId) => ({ maxRetriesPerRequest: 1, enableAutoPipelining: true, connectionName: `chat-pub-${nodeId}` }),
  // A subscription waits for the connection however long it takes. After a reconnect the bus
  // subscribes its channels again itself (RedisBus.resubscribeAndNotify): ioredis' own resubscription
  // leaves a refused SUBSCRIBE (an ACL that took a channel away) as an unhandled rejection, which
  // ends the process.
  'bus-sub': (nodeId) => ({ maxRetriesPerRequest: null, autoResubscribe: false, connectionName: `chat-sub-${nodeId}` }),
  presence: () => ({ maxRetriesPerRequest: 1, connectionName: 'chat-presence' }),
  // Auto-pipelining: the commands of concurrent requests share socket writes (one write per tick,
  // and while a pipeline is in flight the next one gathers), the same commands either way.
  limits: () => ({ maxRetriesPerRequest: 1, enableOfflineQueue: true, enableAutoPipelining: true, connectionName: 'chat-ratelimit' }),
  sessions: () => ({ maxRetriesPerRequest: 1, connectionName: 'chat-sessions' }),
};

export interface RedisLinkOptions {
  /** Names the bus connections (`chat-pub-<nodeId>`, `chat-sub-<nodeId>`). */
  nodeId?: string;
  /** Logs when the connection is lost and when it is back (once per outage, not per retry). */
  log?: Logger;
  /** Called with every error the connection reports (e.g. the bus counts them). */
  onError?: (err: unknown) => void;
}

/**
 * One Redis connection and the one answer to "Redis went away": while a connection that was up
 * is down, callers fail at once (`ensureUp`, `down`) instead of waiting in ioredis' offline queue,
 * which held every request 1-4 s during an outage. Before the first connect, commands wait for it.
 */
export class RedisLink {
  readonly client: RedisClient;
  /** True on a Redis Cluster (the bus then uses sharded pub/sub). */
  readonly cluster: boolean;
  private wasReady = false;
  /** An outage was logged and its end is not yet (or a first connect failed and was logged). */
  private lost = false;
  private closing = false;

  constructor(
    readonly role: RedisRole,
    topology: RedisTopology | string,
    opts: RedisLinkOptions = {},
  ) {
    const t: RedisTopology = typeof topology === 'string' ? { kind: 'single', url: topology } : topology;
    this.client = createRedisClient(t, { redis: ROLE_OPTIONS[role](opts.nodeId ?? 'node'), shardedSubscriber: role === 'bus-sub' });
    this.cluster = isCluster(this.client);
    const { log, onError } = opts;
    const lost = (err?: Error) => {
      if (this.lost || this.closing) return;
      this.lost = true;
      log?.warn({ err, redis: role }, this.wasReady ? 'redis connection lost' : 'redis not reachable yet');
    };
    this.client.on('error', (err: Error) => {
      onError?.(err);
      // A Cluster reports a failed node (a master being replaced, a sharded subscriber that cannot
      // connect yet) while it stays ready for the other slots: not an outage of the connection.
      if (this.cluster && this.client.status === 'ready') {
        log?.warn({ err, redis: role }, 'redis cluster node error');
        return;
      }
      lost(err);
    });
    this.client.on('close', () => {
      if (this.wasReady) lost();
    });
    this.client.on('ready', () => {
      if (this.lost) log?.info({ redis: role }, 'redis connection restored');
      this.lost = false;
      this.wasReady = true;
    });
    // ioredis ends a connection for good when a reconnect attempt itself fails in some ways (seen: a
    // Sentinel reconnect cut short while it asked the sentinels, status "end"): nothing would ever
    // connect it again. Unless we are closing, start over after a pause.
    this.client.on('end', () => {
      if (this.closing) return;
      lost();
      const timer = setTimeout(() => {
        if (!this.closing) this.client.connect().catch(() => undefined);
      }, RECONNECT_AFTER_END_MS);
      timer.unref();
    });
  }

  /** True while a connection that was up once is not ready (an outage, not the first connect). */
  get down(): boolean {
    return this.wasReady && this.client.status !== 'ready';
  }

  /** Throws SERVICE_UNAVAILABLE at once while the connection is down. */
  ensureUp(): void {
    if (this.down) throw new AppError('SERVICE_UNAVAILABLE', `redis (${this.role}) unavailable, retry later`);
  }

  /**
   * The values of `keys` (null where none), in order: one MGET, or on a Cluster (which takes a
   * multi-key command only within one slot) one MGET per slot, all sent at once.
   */
  async mget(keys: string[]): Promise<(string | null)[]> {
    if (!this.cluster) return this.client.mget(keys);
    const bySlot = new Map<number, number[]>();
    keys.forEach((key, i) => {
      const slot = keySlot(key);
      const at = bySlot.get(slot);
      if (at) at.push(i);
      else bySlot.set(slot, [i]);
    });
    const out = new Array<string | null>(keys.length).fill(null);
    await Promise.all(
      [...bySlot.values()].map(async (at) => {
        const values = await this.client.mget(at.map((i) => keys[i]!));
        at.forEach((i, j) => {
          out[i] = values[j] ?? null;
        });
      }),
    );
    return out;
  }

  /**
   * True when Redis answers on this connection within `timeoutMs`. During an outage (or while a
   * first connect is being retried) it is false without a round trip: a PING would only pile up
   * in the offline queue. While the first connect is under way, the PING waits for it.
   */
  async ping(timeoutMs = 1000): Promise<boolean> {
    if (this.down || this.closing || this.client.status === 'reconnecting') return false;
    try {
      // A subscriber connection answers ['pong', ''] instead of 'PONG': any answer will do.
      await withTimeout(this.client.ping(), timeoutMs, `redis ping (${this.role})`);
      return true;
    } catch {
      return false;
    }
  }

  /** Waits until the connection is ready (now or after a reconnect). */
  ready(): Promise<void> {
    if (this.client.status === 'ready') return Promise.resolve();
    return new Promise((resolve) => this.client.once('ready', () => resolve()));
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.client.quit().catch(() => undefined);
    this.client.disconnect();
  }
}
