import { keyOf } from '../domain/ids.js';
import type { PresenceState } from '../domain/events.js';
import { PRESENCE_SLICE, type PresenceConn, type PresenceKey, type PresenceStore } from '../realtime/presence-store.js';
import type { PresenceStatus } from '../domain/events.js';
import { type Actor, isIntegration } from '../domain/actor.js';
import type { Logger } from '../logger.js';
import type { RateLimits } from './limits.js';
import { AppError } from '../domain/errors.js';
import type { EventPublisher } from './publisher.js';
import { presenceRoomsOfUsers } from '../store/hot/connect.js';
import { sharingRoomWith } from '../store/members.js';
import { SendBatcher } from './send-batcher.js';
import { OneAtATime } from '../util/async.js';
import type { Store } from '../store/store.js';

export const PRESENCE_TTL_MS = 60_000;

/**
 * Presence: a user is online while any of their connections is open on any node. This node
 * heartbeats its own connections and sweeps expired ones of dead nodes; changes reach the members
 * of the user's rooms as `presence` events.
 */
export class PresenceService {
  private readonly local = new Map<string, PresenceConn>();
  private readonly timers: NodeJS.Timeout[] = [];
  /**
   * Each user's presence broadcasts, one after the other (an `offline` never overtakes the
   * `online` before it), off the connect's path: a connection is admitted once it is registered,
   * not once its members were told.
   */
  private readonly chains = new Map<string, Promise<void>>();
  /** The small rooms of users coming online or going offline together, read in one query. */
  private readonly roomsOf: SendBatcher<PresenceKey, string[]>;
  /**
   * Closed connections, removed from the store in groups: the ones that close while a removal is
   * under way go together in the next (many clients leaving at once cost one script call per 256).
   */
  private readonly leaves: SendBatcher<PresenceConn, boolean>;
  /**
   * Connections opening, admitted by the store in groups the same way: the first goes at once, the
   * ones that open while it is under way go together next (a room's members coming online at once
   * cost one script call per 256, not one each).
   */
  private readonly admits: SendBatcher<{ c: PresenceConn; max: number }, 'full' | 'first' | 'more'>;
  /** The heartbeat under way, if any (`close` waits for it). */
  private readonly beating = new OneAtATime();
  /** The sweep under way, if any (`close` waits for it). */
  private readonly sweeping = new OneAtATime();
  /** Removals of closed connections from the store under way (`close` waits for them). */
  private readonly leaving = new Set<Promise<boolean>>();
  /** Set by `close`: no more `online` announcements. */
  private closing = false;

  constructor(
    private readonly log: Logger,
    private readonly limits: RateLimits,
    private readonly store: PresenceStore,
    private readonly publisher: EventPublisher,
    /** Where the user's rooms are read. */
    private readonly data: Store,
    ttlMs = PRESENCE_TTL_MS,
    /** Rooms with more members get no presence events (PRESENCE_ROOM_MAX_MEMBERS). */
    private readonly roomMaxMembers = 200,
  ) {
    const beat = setInterval(() => void this.heartbeat(), Math.floor(ttlMs / 3));
    const sweep = setInterval(() => void this.sweep(), Math.floor(ttlMs / 2));
    beat.unref();
    sweep.unref();
    this.timers.push(beat, sweep);
    this.leaves = new SendBatcher((conns) => this.store.disconnectMany(conns), { maxBatch: PRESENCE_SLICE });
    this.admits = new SendBatcher((items) => this.store.admitMany(items), { maxBatch: PRESENCE_SLICE });
    this.roomsOf = new SendBatcher(async (keys) => {
      const tenants = [...new Set(keys.map((k) => k.tenant))];
      const found = await Promise.all(tenants.map((t) => presenceRoomsOfUsers(this.data.hot, t, keys.filter((k) => k.tenant === t).map((k) => k.userId), this.roomMaxMembers)));
      const byTenant = new Map(tenants.map((t, i) => [t, found[i]!]));
      return keys.map((k) => byTenant.get(k.tenant)?.get(k.userId) ?? []);
    });
  }

  /** Runs a broadcast of the user's after the ones already queued for them; never rejects. */
  private queueBroadcast(k: PresenceKey, job: () => Promise<void>): Promise<void> {
    const key = keyOf(k.tenant, k.userId);
    const next: Promise<void> = (this.chains.get(key) ?? Promise.resolve())
      .then(job)
      .catch(this.warn)
      .finally(() => {
        if (this.chains.get(key) === next) this.chains.delete(key);
      });
    this.chains.set(key, next);
    return next;
  }

  private warn = (err: unknown) => this.log.warn({ err }, 'presence store error');

  async connected(actor: Actor, connId: string): Promise<void> {
    const c = { tenant: actor.tenant, userId: actor.id, connId };
    this.local.set(connId, c);
    if (await this.store.connect(c)) this.queueOnline(c);
  }

  /** `online` (or the status the user set) to the user's small rooms, queued. */
  private queueOnline(c: PresenceKey): void {
    if (this.closing) return;
    void this.queueBroadcast(c, () => this.broadcast(c));
  }

  /**
   * `connected`, unless the user already has `max` connections open on all nodes (checked and
   * registered in one atomic step of the store). False, with nothing registered, at the limit.
   */
  async admit(actor: Actor, connId: string, max: number): Promise<boolean> {
    const c = { tenant: actor.tenant, userId: actor.id, connId };
    const r = await this.admits.submit({ c, max });
    if (r === 'full') return false;
    this.local.set(connId, c);
    if (r === 'first') this.queueOnline(c);
    return true;
  }

  async disconnected(connId: string): Promise<void> {
    const c = this.local.get(connId);
    if (!c) return;
    this.local.delete(connId);
    const removed = this.leaves.submit(c);
    this.leaving.add(removed);
    try {
      if (await removed) void this.queueBroadcast(c, () => this.broadcast(c));
    } finally {
      this.leaving.delete(removed);
    }
  }

  async set(actor: Actor, status: Exclude<PresenceStatus, 'offline'>) {
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    let state: PresenceState | undefined;
    try {
      await this.store.setStatus({ tenant: actor.tenant, userId: actor.id }, status);
      [state] = await this.store.get(actor.tenant, [actor.id]);
    } catch (err) {
      this.warn(err);
      throw new AppError('SERVICE_UNAVAILABLE', 'presence is unavailable right now, retry');
    }
    if (state && state.status !== 'offline') await this.queueBroadcast({ tenant: actor.tenant, userId: actor.id }, () => this.broadcast({ tenant: actor.tenant, userId: actor.id }));
    return state!;
  }

  /** Open connections of the user on every node. */
  connections(actor: Actor): Promise<number> {
    return this.store.count({ tenant: actor.tenant, userId: actor.id });
  }

  /**
   * Presence of the users whose `presence` events the caller's room streams carry: those who share a
   * room with the caller (the caller included) and, for a support agent, the members of the support
   * rooms the agent reads without a membership (not those of a room the agent is banned from).
   * Anyone else of the tenant is left out of the answer, as if unknown. The tenant's integration
   * (admins, service tokens) sees everyone's.
   */
  async get(actor: Actor, userIds: string[]) {
    const wanted = [...new Set(userIds)];
    const visible = isIntegration(actor)
      ? wanted
      : [...(await sharingRoomWith(this.data.db(), actor.tenant, actor.id, wanted, { supportRooms: actor.roles.includes('support') }))];
    try {
      return await this.store.get(actor.tenant, visible);
    } catch (err) {
      this.warn(err);
      throw new AppError('SERVICE_UNAVAILABLE', 'presence is unavailable right now, retry');
    }
  }

  /**
   * Renews this node's connections; users of whom a connection had been swept meanwhile (this node
   * stalled past the entries' life, and a sweep may have reported them offline) are reported
   * online again, with the status they set.
   */
  heartbeat(): Promise<void> {
    return this.beating.run(() => this.beat());
  }

  private async beat(): Promise<void> {
    const conns = [...this.local.values()];
    try {
      const back = await this.store.heartbeat(conns);
      // A connection that closed while the heartbeat was under way may have been written back by it
      // after its own removal (the Redis store renews in slices, a round trip each): removed again,
      // or its user would stay online until the entry expired and a sweep found it.
      const closed = conns.filter((c) => !this.local.has(c.connId));
      if (closed.length > 0) await this.store.disconnectMany(closed);
      // Announced again: users with a connection still open here (not one that closed meanwhile).
      // Almost every round has none to announce: the set of open users is built only when needed.
      if (back.length > 0) {
        const open = new Set<string>();
        for (const c of this.local.values()) open.add(keyOf(c.tenant, c.userId));
        for (const k of back) if (open.has(keyOf(k.tenant, k.userId))) this.queueOnline(k);
      }
    } catch (err) {
      this.warn(err);
    }
  }

  /**
   * Removes the expired connections of dead nodes and tells the rooms of the users left with none,
   * a batch of the store's at a time (each user after their broadcasts already queued): their rooms
   * are then read in groups (`roomsOf`), not one query per user. A sweep that fails part way (Redis)
   * still announces the users of the batches it removed. One sweep at a time: a call while one is
   * under way gets that one (the Redis store keeps a failed batch for its next sweep).
   */
  sweep(): Promise<void> {
    return this.sweeping.run(() => this.sweepOnce());
  }

  private async sweepOnce(): Promise<void> {
    const announced: Promise<void>[] = [];
    try {
      await this.store.sweep((gone) => {
        for (const k of gone) announced.push(this.queueBroadcast(k, () => this.broadcast(k)));
      });
    } catch (err) {
      this.warn(err);
    }
    await Promise.all(announced);
  }

  /**
   * Publishes the user's presence, as the store holds it now with its version, to the user's rooms
   * of at most PRESENCE_ROOM_MAX_MEMBERS members. What is published is read, not what the change
   * was: a user who went offline on one node and came back on another meanwhile is announced online
   * by both, and an announcement read before the other node's change carries an older version, so
   * the hubs drop it if it comes second (src/stream/hub.ts). Bigger rooms get none: when the members
   * of a room of n come online, each change would reach the n members (n² deliveries in all); their
   * clients ask `presence.get` for the users they show.
   */
  private async broadcast(k: PresenceKey): Promise<void> {
    try {
      // The rooms first: a user whose rooms are all above the size limit costs no read of the store.
      const rooms = this.roomMaxMembers > 0 ? await this.roomsOf.submit({ tenant: k.tenant, userId: k.userId }) : [];
      if (rooms.length === 0) return;
      const [state] = await this.store.get(k.tenant, [k.userId]);
      if (!state) return;
      const { status, version } = state;
      const lastSeenAt = status === 'offline' ? state.lastSeenAt : null;
      await Promise.all(rooms.map((roomId) => this.publisher.room({ type: 'presence', roomId, userId: k.userId, status, lastSeenAt, version })));
    } catch (err) {
      this.warn(err);
    }
  }

  /**
   * Reports this node's connections gone and waits for everything that still uses the store: a
   * heartbeat or a sweep under way, removals of connections that closed just before, and every broadcast
   * queued meanwhile (a broadcast queued while the ones before ran included).
   */
  async close(): Promise<void> {
    this.closing = true;
    for (const t of this.timers) clearInterval(t);
    await this.beating.current;
    await this.sweeping.current;
    await Promise.allSettled([...this.local.keys()].map((id) => this.disconnected(id)));
    await Promise.allSettled([...this.leaving]);
    while (this.chains.size > 0) await Promise.allSettled([...this.chains.values()]);
    await this.store.close();
  }
}
