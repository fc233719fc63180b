import { keyOf } from '../domain/ids.js';
import type { PresenceStatus } from '../domain/events.js';
import type { PresenceState } from '../domain/events.js';
import { SEP, type PresenceConn, type PresenceKey, type PresenceStore } from './presence-store.js';
import type { RedisLink } from './redis.js';

/** `admit` in Redis: drop expired entries, count, add unless at the limit; -1 when full, else the count before. */
const ADMIT_SCRIPT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[4]) then return -1 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
return n
`;

/** Connections renewed by one pipeline of a heartbeat round. */
export const HEARTBEAT_SLICE = 256;

/**
 * Redis presence: per user a sorted set of connection ids scored by expiry, plus one global sorted
 * set of all connections so any node can sweep those of a dead node.
 *
 * Every key carries the hash tag `{presence}` (`<prefix>{presence}:conn:<user>`, ...): the
 * transactions, the admit script and the pipelines touch a user's keys together with the global
 * set, which a Redis Cluster allows only within one slot. Presence therefore lives on one shard
 * of a Cluster (a few commands per connect, disconnect and heartbeat round).
 */
export class RedisPresenceStore implements PresenceStore {
  private readonly redis: RedisLink['client'];

  constructor(
    private readonly link: RedisLink,
    private readonly prefix: string,
    private readonly ttlMs: number,
  ) {
    this.redis = link.client;
  }

  /**
   * Fails at once while Redis is down (after it was up once), instead of queueing behind the
   * reconnect: presence is best-effort, and connections must not wait for it.
   */
  private guard(): void {
    this.link.ensureUp();
  }

  private connKey(k: PresenceKey) {
    return `${this.prefix}{presence}:conn:${keyOf(k.tenant, k.userId)}`;
  }
  private statusKey(k: PresenceKey) {
    return `${this.prefix}{presence}:status:${keyOf(k.tenant, k.userId)}`;
  }
  private seenKey(k: PresenceKey) {
    return `${this.prefix}{presence}:seen:${keyOf(k.tenant, k.userId)}`;
  }
  private get allKey() {
    return `${this.prefix}{presence}:all`;
  }
  private member(c: PresenceConn) {
    return `${c.tenant}${SEP}${c.userId}${SEP}${c.connId}`;
  }

  async connect(c: PresenceConn): Promise<boolean> {
    this.guard();
    const now = Date.now();
    const exp = now + this.ttlMs;
    const key = this.connKey(c);
    const res = await this.redis
      .multi()
      .zremrangebyscore(key, '-inf', now)
      .zcard(key)
      .zadd(key, exp, c.connId)
      .pexpire(key, this.ttlMs * 2)
      .zadd(this.allKey, exp, this.member(c))
      .exec();
    const before = Number(res?.[1]?.[1] ?? 0);
    return before === 0;
  }

  async admit(c: PresenceConn, max: number): Promise<'full' | 'first' | 'more'> {
    this.guard();
    const now = Date.now();
    const before = (await this.redis.eval(
      ADMIT_SCRIPT,
      2,
      this.connKey(c),
      this.allKey,
      String(now),
      String(now + this.ttlMs),
      c.connId,
      String(max),
      String(this.ttlMs * 2),
      this.member(c),
    )) as number;
    return before < 0 ? 'full' : before === 0 ? 'first' : 'more';
  }

  async disconnect(c: PresenceConn): Promise<boolean> {
    this.guard();
    const now = Date.now();
    const key = this.connKey(c);
    const res = await this.redis
      .multi()
      .zrem(key, c.connId)
      .zrem(this.allKey, this.member(c))
      .zremrangebyscore(key, '-inf', now)
      .zcard(key)
      .set(this.seenKey(c), String(now), 'EX', 30 * 24 * 3600)
      .exec();
    const removed = Number(res?.[0]?.[1] ?? 0);
    const left = Number(res?.[3]?.[1] ?? 0);
    return removed === 1 && left === 0;
  }

  /**
   * Renews the expiry of this node's connections, `HEARTBEAT_SLICE` at a time: one pipeline per
   * slice (a ZADD and a PEXPIRE per user, one ZADD of the slice into the global set), awaited
   * before the next. A round of 10,000 connections in one pipeline held the event loop (and Redis)
   * for tens of milliseconds, and every message in flight with it: it was the rooms benchmark's
   * slowest moment (docs/BENCHMARKS.md).
   */
  async heartbeat(conns: PresenceConn[]): Promise<PresenceKey[]> {
    this.guard();
    const exp = Date.now() + this.ttlMs;
    const back: PresenceKey[] = [];
    for (let i = 0; i < conns.length; i += HEARTBEAT_SLICE) {
      const byUser = new Map<string, { k: PresenceKey; scored: (string | number)[] }>();
      const all: (string | number)[] = [];
      for (const c of conns.slice(i, i + HEARTBEAT_SLICE)) {
        const key = this.connKey(c);
        const entry = byUser.get(key);
        if (entry) entry.scored.push(exp, c.connId);
        else byUser.set(key, { k: { tenant: c.tenant, userId: c.userId }, scored: [exp, c.connId] });
        all.push(exp, this.member(c));
      }
      const m = this.redis.pipeline();
      for (const [key, { scored }] of byUser) {
        m.zadd(key, ...scored);
        m.pexpire(key, this.ttlMs * 2);
      }
      m.zadd(this.allKey, ...all);
      const res = await m.exec();
      // ZADD answers how many members were new: a connection of ours a sweep had removed.
      let j = 0;
      for (const { k } of byUser.values()) {
        if (Number(res?.[j]?.[1] ?? 0) > 0) back.push(k);
        j += 2;
      }
    }
    return back;
  }

  async sweep(): Promise<PresenceKey[]> {
    this.guard();
    const now = Date.now();
    const expired = await this.redis.zrangebyscore(this.allKey, '-inf', now, 'LIMIT', 0, 500);
    const gone: PresenceKey[] = [];
    for (const member of expired) {
      // Whoever removes the entry owns its cleanup: nodes sweeping together never double-report.
      if ((await this.redis.zrem(this.allKey, member)) !== 1) continue;
      const [tenant, userId, connId] = member.split(SEP) as [string, string, string];
      const k = { tenant, userId };
      const key = this.connKey(k);
      const res = await this.redis.multi().zrem(key, connId).zremrangebyscore(key, '-inf', now).zcard(key).exec();
      if (Number(res?.[2]?.[1] ?? 0) === 0) {
        await this.redis.set(this.seenKey(k), String(now), 'EX', 30 * 24 * 3600);
        gone.push(k);
      }
    }
    return gone;
  }

  async setStatus(k: PresenceKey, status: Exclude<PresenceStatus, 'offline'>): Promise<void> {
    this.guard();
    await this.redis.set(this.statusKey(k), status, 'EX', 30 * 24 * 3600);
  }

  async count(k: PresenceKey): Promise<number> {
    this.guard();
    return this.redis.zcount(this.connKey(k), `(${Date.now()}`, '+inf');
  }

  async get(tenant: string, userIds: string[]): Promise<PresenceState[]> {
    this.guard();
    if (userIds.length === 0) return [];
    const now = Date.now();
    const m = this.redis.pipeline();
    for (const userId of userIds) {
      const k = { tenant, userId };
      m.zcount(this.connKey(k), `(${now}`, '+inf');
      m.get(this.statusKey(k));
      m.get(this.seenKey(k));
    }
    const res = (await m.exec()) ?? [];
    return userIds.map((userId, i) => {
      const live = Number(res[i * 3]?.[1] ?? 0) > 0;
      const status = (res[i * 3 + 1]?.[1] as string | null) ?? 'online';
      const seen = res[i * 3 + 2]?.[1] as string | null;
      return {
        userId,
        status: live ? (status as PresenceStatus) : 'offline',
        lastSeenAt: live ? new Date(now) : seen ? new Date(Number(seen)) : null,
      };
    });
  }

  ping(timeoutMs?: number): Promise<boolean> {
    return this.link.ping(timeoutMs);
  }

  close(): Promise<void> {
    return this.link.close();
  }
}
