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

/**
 * One slice of a heartbeat in Redis. KEYS[1]: the global set; KEYS[2..]: the slice's users' sets.
 * ARGV[1]: the new expiry; ARGV[2]: the life of a user's set (ms); then for each user the count of
 * its connections and their ids; then the global set's members. Answers the positions (1-based,
 * among the users) of the users of whom a connection was missing: a sweep had removed it.
 */
const HEARTBEAT_SCRIPT = `
local exp = ARGV[1]
local a = 3
local back = {}
for k = 2, #KEYS do
  local n = tonumber(ARGV[a])
  local added = 0
  for j = a + 1, a + n do
    added = added + redis.call('ZADD', KEYS[k], exp, ARGV[j])
  end
  a = a + n + 1
  redis.call('PEXPIRE', KEYS[k], ARGV[2])
  if added > 0 then back[#back + 1] = k - 1 end
end
local all = {}
for j = a, #ARGV do
  all[#all + 1] = exp
  all[#all + 1] = ARGV[j]
end
if #all > 0 then redis.call('ZADD', KEYS[1], unpack(all)) end
return back
`;

/** Connections renewed by one script call of a heartbeat round. */
export const HEARTBEAT_SLICE = 256;

/**
 * The scripts as commands of the client (ioredis `defineCommand`): sent by their SHA1 (EVALSHA),
 * the text only once per Redis server, instead of the whole text with every call.
 */
const ADMIT = 'chatPresenceAdmit';
const HEARTBEAT = 'chatPresenceHeartbeat';
type ScriptCommand = (...args: (string | number)[]) => Promise<unknown>;

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
    this.redis.defineCommand(ADMIT, { numberOfKeys: 2, lua: ADMIT_SCRIPT });
    // Its number of keys is its first argument.
    this.redis.defineCommand(HEARTBEAT, { lua: HEARTBEAT_SCRIPT });
    const commands = this.redis as unknown as Record<string, ScriptCommand>;
    this.admitScript = commands[ADMIT]!.bind(this.redis);
    this.heartbeatScript = commands[HEARTBEAT]!.bind(this.redis);
  }

  private readonly admitScript: ScriptCommand;
  private readonly heartbeatScript: ScriptCommand;

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
    const before = (await this.admitScript(
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
   * Renews the expiry of this node's connections, `HEARTBEAT_SLICE` at a time: one script call per
   * slice (`HEARTBEAT_SCRIPT`: a ZADD per connection and a PEXPIRE per user into the users' sets,
   * one ZADD of the slice into the global set), awaited before the next. A round of 10,000
   * connections in one pipeline held the event loop (and Redis) for tens of milliseconds, and every
   * message in flight with it: it was the rooms benchmark's slowest moment (docs/BENCHMARKS.md).
   * A pipeline of a ZADD and a PEXPIRE per user made a node with 10,000 idle connections allocate
   * about 55 MB per round (ioredis builds an object graph per command), a third of all it allocated
   * while idle; with one script call per slice, about 20 MB (the keys, members and their encoding).
   */
  async heartbeat(conns: PresenceConn[]): Promise<PresenceKey[]> {
    this.guard();
    const exp = String(Date.now() + this.ttlMs);
    const life = String(this.ttlMs * 2);
    const back: PresenceKey[] = [];
    for (let i = 0; i < conns.length; i += HEARTBEAT_SLICE) {
      const end = Math.min(conns.length, i + HEARTBEAT_SLICE);
      const byUser = new Map<string, { k: PresenceKey; ids: string[] }>();
      const members: string[] = [];
      for (let j = i; j < end; j++) {
        const c = conns[j]!;
        const key = this.connKey(c);
        const entry = byUser.get(key);
        if (entry) entry.ids.push(c.connId);
        else byUser.set(key, { k: { tenant: c.tenant, userId: c.userId }, ids: [c.connId] });
        members.push(this.member(c));
      }
      const keys: string[] = [this.allKey];
      const args: string[] = [exp, life];
      const users: PresenceKey[] = [];
      for (const [key, { k, ids }] of byUser) {
        keys.push(key);
        users.push(k);
        args.push(String(ids.length));
        for (const id of ids) args.push(id);
      }
      for (const m of members) args.push(m);
      const found = (await this.heartbeatScript(keys.length, ...keys, ...args)) as number[];
      for (const p of found) {
        const k = users[p - 1];
        if (k) back.push(k);
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
