import { keyOf } from '../domain/ids.js';
import type { PresenceState } from '../domain/events.js';
import type { PresenceConn, PresenceKey, PresenceStore } from '../realtime/presence-store.js';
import type { PresenceStatus } from '../domain/events.js';
import { type Actor, isIntegration } from '../domain/actor.js';
import type { Logger } from '../logger.js';
import type { RateLimits } from './limits.js';
import { AppError } from '../domain/errors.js';
import type { EventPublisher } from './publisher.js';
import { presenceRoomsOfUser, sharingRoomWith } from '../store/members.js';
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
    const beat = setInterval(() => void this.store.heartbeat([...this.local.values()]).catch(this.warn), Math.floor(ttlMs / 3));
    const sweep = setInterval(() => void this.sweep(), Math.floor(ttlMs / 2));
    beat.unref();
    sweep.unref();
    this.timers.push(beat, sweep);
  }

  private warn = (err: unknown) => this.log.warn({ err }, 'presence store error');

  async connected(actor: Actor, connId: string): Promise<void> {
    const c = { tenant: actor.tenant, userId: actor.id, connId };
    this.local.set(connId, c);
    if (await this.store.connect(c)) {
      const [state] = await this.store.get(actor.tenant, [actor.id]);
      await this.broadcast(c, state?.status ?? 'online', null);
    }
  }

  /**
   * `connected`, unless the user already has `max` connections open on all nodes (checked and
   * registered in one atomic step of the store). False, with nothing registered, at the limit.
   */
  async admit(actor: Actor, connId: string, max: number): Promise<boolean> {
    const c = { tenant: actor.tenant, userId: actor.id, connId };
    const r = await this.store.admit(c, max);
    if (r === 'full') return false;
    this.local.set(connId, c);
    if (r === 'first') {
      const [state] = await this.store.get(actor.tenant, [actor.id]);
      await this.broadcast(c, state?.status ?? 'online', null);
    }
    return true;
  }

  async disconnected(connId: string): Promise<void> {
    const c = this.local.get(connId);
    if (!c) return;
    this.local.delete(connId);
    if (await this.store.disconnect(c)) await this.broadcast(c, 'offline', new Date());
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
    if (state && state.status !== 'offline') await this.broadcast({ tenant: actor.tenant, userId: actor.id }, state.status, null);
    return state!;
  }

  /** Open connections of the user on every node. */
  connections(actor: Actor): Promise<number> {
    return this.store.count({ tenant: actor.tenant, userId: actor.id });
  }

  /**
   * Presence of users who share a room with the caller (the caller included); anyone else of the
   * tenant is left out of the answer, as if unknown. The tenant's integration (admins, service
   * tokens) sees everyone's.
   */
  async get(actor: Actor, userIds: string[]) {
    const wanted = [...new Set(userIds)];
    const visible = isIntegration(actor) ? wanted : [...(await sharingRoomWith(this.data.db(), actor.tenant, actor.id, wanted))];
    try {
      return await this.store.get(actor.tenant, visible);
    } catch (err) {
      this.warn(err);
      throw new AppError('SERVICE_UNAVAILABLE', 'presence is unavailable right now, retry');
    }
  }

  async sweep(): Promise<void> {
    try {
      for (const k of await this.store.sweep()) await this.broadcast(k, 'offline', new Date());
    } catch (err) {
      this.warn(err);
    }
  }

  /**
   * Publishes a presence change to the user's rooms of at most PRESENCE_ROOM_MAX_MEMBERS members.
   * Bigger rooms get none: when the members of a room of n come online, each change would reach the
   * n members (n² deliveries in all); their clients ask `presence.get` for the users they show.
   */
  private async broadcast(k: PresenceKey, status: PresenceStatus, lastSeenAt: Date | null): Promise<void> {
    try {
      const rooms = await presenceRoomsOfUser(this.data.db(), k.tenant, k.userId, this.roomMaxMembers);
      await Promise.all(rooms.map((roomId) => this.publisher.room({ type: 'presence', roomId, userId: k.userId, status, lastSeenAt })));
    } catch (err) {
      this.warn(err);
    }
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    await Promise.allSettled([...this.local.keys()].map((id) => this.disconnected(id)));
    await this.store.close();
  }
}
