import { keyOf } from '../domain/ids.js';
import { CloseCode } from '../domain/close-codes.js';
import { type Actor, isExpired } from '../domain/actor.js';
import { type ClientInfo, NO_CLIENT_INFO } from '../domain/client-info.js';
import { textOf, type EventBus } from '../realtime/bus.js';
import type { Logger } from '../logger.js';
import type { Counters } from '../metrics.js';
import { AppError, forbidden } from '../domain/errors.js';
import type { RedisLink } from '../realtime/redis.js';
import type { Store } from '../store/store.js';
import type { Tx } from '../store/tx.js';
import { deleteDevicesOfUser } from '../store/notify.js';

/** What the sessions service needs of a WebSocket (ws calls a listener with the socket as `this`). */
export interface SessionSocket {
  readonly bufferedAmount: number;
  close(code: number, reason: string): void;
  on(event: 'close', fn: (this: SessionSocket, code: number) => void): unknown;
}

/** What else a session's close does (the connection's audit line and presence): one function for all. */
export type SessionClosed = (s: Session, code: number) => void;

/**
 * One WebSocket connection: its current identity (swappable by `auth.refresh`), its subscription
 * count and its expiry timer. Idle connections are most of a node's memory: a session holds no
 * closures (its socket's close listener and its expiry timer are shared functions).
 */
export class Session {
  subscriptions = 0;
  expiryTimer: NodeJS.Timeout | null = null;
  closed = false;

  constructor(
    public actor: Actor,
    readonly socket: SessionSocket,
    /** What the client said about itself (connection parameters). */
    readonly client: ClientInfo = NO_CLIENT_INFO,
    /** The connection's id (presence, the audit lines); '' when opened without one. */
    readonly connId = '',
    readonly service: SessionService | null = null,
    readonly onClosed: SessionClosed | null = null,
  ) {}
}

/** The session of each open socket, for the close listener below. */
const sessionOf = new WeakMap<SessionSocket, Session>();

/** The one 'close' listener of every session's socket. */
function socketClosed(this: SessionSocket, code: number): void {
  const s = sessionOf.get(this);
  if (!s) return;
  sessionOf.delete(this);
  s.service?.ended(s, code);
}

/** The token expiry timer's callback (the session and its service are the timer's arguments). */
function expiryDue(service: SessionService, s: Session): void {
  if (isExpired(s.actor)) s.socket.close(CloseCode.TokenExpired, 'access token expired');
  else service.armExpiry(s);
}

/** Distinct client types and versions counted in `clientStats` (the rest are `other`). */
const MAX_CLIENT_KEYS = 50;

const CONTROL_CHANNEL = 'control';
const userKey = (tenant: string, userId: string) => `${tenant}\u0000${userId}`;
/**
 * The rule of every revocation check: a token issued at or before the revocation (`at`, ms) is
 * revoked. iat has one-second resolution: a token from the same second as the revocation is revoked too.
 */
const issuedBy = (actor: Actor, at: number): boolean => (actor.iat ?? 0) * 1000 <= at;
/** Revocations are kept long enough to outlive any token issued before them. */
const REVOCATION_TTL_S = 30 * 24 * 3600;
/** Users whose stored revocations one MGET reads when the open sessions are checked after a bus reconnect. */
const RECHECK_BATCH = 500;

/**
 * Live WebSocket sessions of this node: token expiry enforced on open sockets, admin revocation
 * of all of a user's sessions (on every node, through the bus), per-connection subscription limits
 * and the slow-consumer guard.
 */
export class SessionService {
  private readonly byUser = new Map<string, Set<Session>>();
  /** Revocations this node knows of (user key → time), forgotten once Redis forgets them too (`remember`). */
  private readonly revokedLocal = new Map<string, number>();
  private readonly cache = new Map<string, { at: number; value: number }>();
  private unsubscribe: (() => Promise<void>) | null = null;
  private offReconnect: (() => void) | null = null;
  /** The checks after bus reconnects under way (`close` waits for them). */
  private readonly rechecks = new Set<Promise<number>>();

  constructor(
    /** Carries revocations to every node (control channel). */
    private readonly bus: EventBus,
    private readonly log: Logger,
    private readonly counters: Counters,
    private readonly opts: { redisPrefix: string; subscriptionsPerConnection: number },
    /** Where revocations outlive this node (shared by all nodes); null: this process only. */
    private readonly redis: RedisLink | null,
    /** The durable audit trail: the revocation's row is written around the Redis write (null: not recorded). */
    private readonly store: Store | null = null,
  ) {}

  async start(): Promise<void> {
    this.unsubscribe = await this.bus.subscribe(CONTROL_CHANNEL, (payload) => {
      try {
        const msg = JSON.parse(textOf(payload)) as { type: string; tenant: string; userId: string; at: number };
        if (msg.type === 'revoke') {
          // Remember it here too: this node's 1 s cache of the Redis denylist may hold "not revoked"
          // for this user, and would let the old token in again for up to a second.
          // Only tokens issued until the revocation: the user may have logged in again since (the
          // message can come late), and that newer token is not revoked here either.
          const key = userKey(msg.tenant, msg.userId);
          this.remember(key, msg.at);
          this.closeRevoked(key, msg.at);
        }
      } catch (err) {
        this.log.warn({ err }, 'bad control message');
      }
    });
    // Pub/sub is fire-and-forget: a revocation published while this node's subscriber was cut from
    // Redis never arrives. It is stored in Redis before it is published, so after the bus reconnects
    // the open sessions are checked against what is stored.
    // Each reconnect checks again: one that started before a later outage may have read before it.
    this.offReconnect = this.bus.onReconnect(() => {
      const run = this.recheck().finally(() => this.rechecks.delete(run));
      this.rechecks.add(run);
    });
  }

  /**
   * Checks every user with a session on this node against the revocations stored in Redis (an MGET
   * per 500 users, per slot on a Cluster) and closes, with 4003 as the bus's message would have,
   * each session whose token was issued at or before its user's revocation; a session with a newer
   * token (the user logged in again after an older revocation) stays. Run after the bus
   * reconnected; answers how many sessions it closed. A Redis error is logged: the next reconnect
   * checks again.
   */
  async recheck(): Promise<number> {
    if (!this.redis) return 0;
    const users = [...this.byUser.entries()];
    let closed = 0;
    try {
      for (let i = 0; i < users.length; i += RECHECK_BATCH) {
        const batch = users.slice(i, i + RECHECK_BATCH);
        const stored = await this.redis.mget(batch.map(([, set]) => this.redisKeyOf(set)));
        batch.forEach(([key], j) => {
          const at = Number(stored[j] ?? 0);
          if (!at) return;
          this.remember(key, at);
          closed += this.closeRevoked(key, at);
        });
      }
    } catch (err) {
      this.log.warn({ err }, 'could not check open sessions against revocations after the bus reconnected');
    }
    if (closed > 0) this.log.warn({ audit: 'sessions_revoked_on_reconnect', sessions: closed }, 'closed sessions revoked while the bus was cut');
    return closed;
  }

  /** The Redis key of the revocation of a set's user (every session of a set is of one user). */
  private redisKeyOf(set: Set<Session>): string {
    const { tenant, id } = set.values().next().value!.actor;
    return this.redisKey(tenant, id);
  }

  /**
   * Registers a connection; arms the close at token expiry. When its socket closes the session is
   * forgotten, then `onClosed` runs (once).
   */
  open(actor: Actor, socket: SessionSocket, client: ClientInfo = NO_CLIENT_INFO, connId = '', onClosed: SessionClosed | null = null): Session {
    const s = new Session(actor, socket, client, connId, this, onClosed);
    const key = userKey(actor.tenant, actor.id);
    let set = this.byUser.get(key);
    if (!set) {
      set = new Set();
      this.byUser.set(key, set);
    }
    set.add(s);
    this.armExpiry(s);
    sessionOf.set(socket, s);
    socket.on('close', socketClosed);
    return s;
  }

  /** The socket of a session closed (`socketClosed`): it is forgotten, then its `onClosed` runs. */
  ended(s: Session, code: number): void {
    s.closed = true;
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    s.expiryTimer = null;
    const cur = this.byUser.get(userKey(s.actor.tenant, s.actor.id));
    cur?.delete(s);
    if (cur && cur.size === 0) this.byUser.delete(userKey(s.actor.tenant, s.actor.id));
    s.onClosed?.(s, code);
  }

  /**
   * This node's open sessions by client type and version (/admin/stats): `{ web: { connections: 3,
   * versions: { '1.2.0': 3 } }, unknown: ... }`, bounded in keys.
   */
  clientStats(): Record<string, { connections: number; devices: number; versions: Record<string, number> }> {
    // Objects without a prototype: the names are the clients' own words ('constructor', 'toString',
    // '__proto__' are valid client types), never an inherited member (one made the node throw).
    const out: Record<string, { connections: number; devices: number; versions: Record<string, number> }> = Object.create(null);
    const devices = new Map<string, Set<string>>();
    for (const set of this.byUser.values()) {
      for (const s of set) {
        let type = s.client.clientType ?? 'unknown';
        if (!Object.hasOwn(out, type) && Object.keys(out).length >= MAX_CLIENT_KEYS) type = 'other';
        const entry = Object.hasOwn(out, type) ? out[type]! : { connections: 0, devices: 0, versions: Object.create(null) as Record<string, number> };
        out[type] = entry;
        entry.connections++;
        let version = s.client.clientVersion ?? 'unknown';
        if (!Object.hasOwn(entry.versions, version) && Object.keys(entry.versions).length >= MAX_CLIENT_KEYS) version = 'other';
        entry.versions[version] = (Object.hasOwn(entry.versions, version) ? entry.versions[version]! : 0) + 1;
        if (s.client.deviceId) {
          const seen = devices.get(type) ?? new Set<string>();
          seen.add(`${s.actor.tenant}\u0000${s.actor.id}\u0000${s.client.deviceId}`);
          devices.set(type, seen);
        }
      }
    }
    for (const [type, seen] of devices) out[type]!.devices = seen.size;
    return out;
  }

  /** (Re)arms the close of a session at its token's expiry (`expiryDue`). */
  armExpiry(s: Session): void {
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    s.expiryTimer = null;
    // A refresh answered after its socket closed: a timer now would hold the session until the
    // token's expiry (nothing clears it any more).
    if (s.closed || !s.actor.exp) return;
    const ms = s.actor.exp * 1000 - Date.now();
    // setTimeout holds at most ~24.8 days; longer tokens are re-armed when they get closer.
    const delay = Math.max(0, Math.min(ms, 2 ** 31 - 1));
    s.expiryTimer = setTimeout(expiryDue, delay, this, s);
    s.expiryTimer.unref();
  }

  /** `auth.refresh`: swaps the token of a live connection (same user and tenant) and re-arms expiry. */
  refresh(s: Session, next: Actor): Actor {
    if (next.id !== s.actor.id || next.tenant !== s.actor.tenant) {
      throw forbidden('a refreshed token must be for the same user and tenant');
    }
    const lost = s.actor.roles.filter((r) => !next.roles.includes(r));
    s.actor = next;
    this.armExpiry(s);
    if (lost.length > 0) {
      // Streams opened with a role the new token lacks (a support agent's support rooms) must not
      // outlive it: after this call's answer, the connection is closed and every subscription is
      // checked again on reconnect.
      this.log.info({ audit: 'roles_changed', tenant: next.tenant, userId: next.id, lost }, 'closing a connection whose token lost roles');
      setImmediate(() => s.socket.close(CloseCode.RolesChanged, 'the token lost roles: reconnect'));
    }
    return next;
  }

  /** `auth.revoke` (admins): every token of the user issued until now stops working on every node. */
  async revoke(admin: Actor, userId: string): Promise<{ revokedAt: Date }> {
    if (!admin.roles.includes('admin')) throw forbidden('only admins can revoke sessions');
    // Redis down: refused before anything happens (retryable), not half-applied on this node only.
    this.redis?.ensureUp();
    const at = Date.now();
    const key = userKey(admin.tenant, userId);
    // The audit row is written first and commits only once the revocation is stored: a failed
    // Redis write leaves no row.
    const store = async (tx: Tx | null) => {
      await tx?.audit({ tenant: admin.tenant, actorId: admin.id, action: 'session.revoke', targetId: userId, data: { revokedAt: new Date(at).toISOString() } });
      // The user's push devices go too: a revoked browser (a lost laptop) would go on receiving
      // previews of messages at its push endpoint. Each device registers again after its next login.
      if (tx) await deleteDevicesOfUser(tx.db, admin.tenant, userId);
      if (this.redis) {
        await this.redis.client.set(this.redisKey(admin.tenant, userId), String(at), 'EX', REVOCATION_TTL_S);
      }
    };
    await (this.store ? this.store.transact(store) : store(null));
    this.remember(key, at);
    await this.bus.publish(CONTROL_CHANNEL, JSON.stringify({ type: 'revoke', tenant: admin.tenant, userId, at }));
    this.log.warn({ audit: 'sessions_revoked', tenant: admin.tenant, user: userId, by: admin.id }, 'sessions revoked');
    return { revokedAt: new Date(at) };
  }

  /**
   * Keeps a revocation here (made here, brought by the bus, or read back after a reconnect): the
   * latest per user, and the user's 1 s cache entry of the Redis denylist dropped (it may say "not
   * revoked"). Entries past REVOCATION_TTL_S (when Redis forgets them too) go, checked every 1,000
   * revocations, so a long-lived node's map does not grow without end.
   */
  private remember(key: string, at: number): void {
    const latest = Math.max(this.revokedLocal.get(key) ?? 0, at);
    this.revokedLocal.delete(key);
    this.revokedLocal.set(key, latest);
    this.cache.delete(key);
    if (this.revokedLocal.size % 1000 !== 0) return;
    const oldest = Date.now() - REVOCATION_TTL_S * 1000;
    for (const [k, v] of this.revokedLocal) if (v < oldest) this.revokedLocal.delete(k);
  }

  /**
   * `isRevoked` from what this node already knows (its own revocations and those the bus brought),
   * without a round trip. A connection checks it right before `open` in the same tick: a revocation
   * that arrived while the connection was being admitted is then seen here, and one that arrives
   * later finds the session registered and closes it, so none slips between the two.
   */
  revokedHere(actor: Actor): boolean {
    const at = this.revokedLocal.get(userKey(actor.tenant, actor.id));
    return at !== undefined && issuedBy(actor, at);
  }

  /** True when the token was issued at or before a revocation of its user. */
  async isRevoked(actor: Actor): Promise<boolean> {
    const key = userKey(actor.tenant, actor.id);
    let at = this.revokedLocal.get(key) ?? 0;
    if (this.redis) {
      const hit = this.cache.get(key);
      if (hit && Date.now() - hit.at < 1000) at = Math.max(at, hit.value);
      else {
        // Redis down (after it had answered once): answer at once from the last known value
        // (waiting in ioredis' offline queue held every request 1-4 s), and never forget a known
        // revocation because of an outage.
        const v = this.redis.down ? undefined : await this.redis.client.get(this.redisKey(actor.tenant, actor.id)).catch(() => undefined);
        if (v === undefined) at = Math.max(at, hit?.value ?? 0);
        else {
          const value = v ? Number(v) : 0;
          if (this.cache.size > 10_000) this.cache.clear();
          this.cache.set(key, { at: Date.now(), value });
          at = Math.max(at, value);
        }
      }
    }
    return at > 0 && issuedBy(actor, at);
  }

  private redisKey(tenant: string, userId: string) {
    return `${this.opts.redisPrefix}revoked:${keyOf(tenant, userId)}`;
  }

  /** Closes (4003) the user's sessions on this node whose token a revocation at `at` revokes; answers how many. */
  private closeRevoked(key: string, at: number): number {
    let closed = 0;
    for (const s of this.byUser.get(key) ?? []) {
      if (!issuedBy(s.actor, at)) continue;
      closed++;
      s.socket.close(CloseCode.Revoked, 'sessions revoked');
    }
    return closed;
  }

  /**
   * Counts a new subscription of a connection; TOO_MANY_REQUESTS over the limit. The caller gives
   * it back once with `releaseSubscription` (src/trpc/stream-conn.ts).
   */
  acquireSubscription(s: Session): void {
    const max = this.opts.subscriptionsPerConnection;
    if (s.subscriptions >= max) {
      this.counters.rateLimited++;
      throw new AppError('TOO_MANY_REQUESTS', `at most ${max} subscriptions per connection`);
    }
    s.subscriptions++;
  }

  releaseSubscription(s: Session): void {
    s.subscriptions--;
  }

  connectionsOf(tenant: string, userId: string): number {
    return this.byUser.get(userKey(tenant, userId))?.size ?? 0;
  }

  async close(): Promise<void> {
    this.offReconnect?.();
    await this.unsubscribe?.();
    await Promise.allSettled([...this.rechecks]);
    for (const set of this.byUser.values()) for (const s of set) if (s.expiryTimer) clearTimeout(s.expiryTimer);
    await this.redis?.close();
  }
}
