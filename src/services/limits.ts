import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Config } from '../config.js';
import type { Counters } from '../metrics.js';
import { AppError } from '../domain/errors.js';
import type { RedisLink } from '../realtime/redis.js';

export type LimitKind = 'send' | 'typing' | 'signal' | 'roomCreate' | 'connect' | 'action' | 'read';

const WHAT: Record<LimitKind, string> = {
  send: 'too many messages in this room',
  typing: 'too many typing updates',
  action: 'too many changes (edits, deletes, reactions, reads, presence, management)',
  signal: 'too many call signals',
  roomCreate: 'too many rooms created',
  connect: 'too many connection attempts from this address',
  read: 'too many reads (queries and subscriptions)',
};

interface Limiter {
  consume(key: string): Promise<unknown>;
}

/**
 * Rate limits (rate-limiter-flexible): Redis-backed when given a Redis connection (limits hold
 * across nodes), in memory otherwise. Over a limit: TOO_MANY_REQUESTS with the time to wait.
 *
 * With Redis, a node that is alone on it (`alone`, the bus's node announcements:
 * src/realtime/redis-bus.ts) counts in memory instead: the same limits, exact on one node, without
 * a Redis round trip per request. The counts start over when that changes (a second node joins, the
 * last other one leaves): at that moment a key can get up to one more budget.
 */
export class RateLimits {
  private readonly limiters: Record<LimitKind, Limiter>;

  constructor(
    config: Config,
    private readonly counters: Counters,
    /** Where the counts live: a Redis connection shared by all nodes, or null for this process. */
    private readonly redis: RedisLink | null,
    /** Audit hook: a limit was hit (kind, key, retry after ms). */
    private readonly onLimited?: (kind: LimitKind, key: string, retryAfterMs: number) => void,
    /** True while this node is the only one on its Redis: count in memory then. */
    alone?: () => boolean,
  ) {
    type Make = (name: string, points: number, duration: number) => RateLimiterAbstract;
    const memory: Make = (name, points, duration) => new RateLimiterMemory({ keyPrefix: name, points, duration });
    const shared = (redis: RedisLink): Make => (name, points, duration) =>
      new RateLimiterRedis({
        storeClient: redis.client,
        keyPrefix: `${config.redisPrefix}rl:${name}`,
        points,
        duration,
        // Redis down: fall back to a per-node limit instead of refusing everyone. At once: without
        // this, commands wait in ioredis' offline queue and every send took 1-4 s during an outage.
        insuranceLimiter: new RateLimiterMemory({ points, duration }),
        rejectIfRedisNotReady: true,
      });
    /** One limit, built by `build` on the store(s) in use. */
    const limit = (build: (make: Make) => Limiter): Limiter => {
      if (!this.redis) return build(memory);
      const onRedis = build(shared(this.redis));
      if (!alone) return onRedis;
      const inMemory = build(memory);
      return { consume: (key) => (alone() ? inMemory : onRedis).consume(key) };
    };
    const l = config.limits;
    this.limiters = {
      // A sustained rate per second plus a burst allowance refilled over a minute.
      send: limit((make) => new BurstyRateLimiter(make('send', l.sendPerSecond, 1), make('send-burst', l.sendBurst, 60))),
      typing: limit((make) => make('typing', l.typingPer10s, 10)),
      action: limit((make) => make('action', l.actionsPer10s, 10)),
      signal: limit((make) => make('signal', l.signalsPer10s, 10)),
      roomCreate: limit((make) => make('room', l.roomCreatesPerMinute, 60)),
      connect: limit((make) => make('connect', l.connectAttemptsPerIpPerMinute, 60)),
      read: limit((make) => make('read', l.readsPer10s, 10)),
    };
  }

  /** Takes one point; throws TOO_MANY_REQUESTS (with retryAfterMs) when over the limit. */
  async consume(kind: LimitKind, key: string): Promise<void> {
    try {
      await this.limiters[kind].consume(key);
    } catch (res) {
      if (res instanceof RateLimiterRes || (res && typeof (res as RateLimiterRes).msBeforeNext === 'number')) {
        this.counters.rateLimited++;
        const ms = Math.max(1, (res as RateLimiterRes).msBeforeNext);
        this.onLimited?.(kind, key, ms);
        throw new AppError('TOO_MANY_REQUESTS', `${WHAT[kind]}: retry in ${(ms / 1000).toFixed(1)} s`, ms);
      }
      throw res;
    }
  }

  /** Like consume, but answers instead of throwing (for the WebSocket upgrade path). */
  async allow(kind: LimitKind, key: string): Promise<{ ok: true } | { ok: false; retryAfterMs: number }> {
    try {
      await this.consume(kind, key);
      return { ok: true };
    } catch (err) {
      if (err instanceof AppError && err.retryAfterMs !== undefined) return { ok: false, retryAfterMs: err.retryAfterMs };
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.redis?.close();
  }
}
