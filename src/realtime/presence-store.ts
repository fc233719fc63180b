import type { PresenceState, PresenceStatus } from '../domain/events.js';

export interface PresenceKey {
  tenant: string;
  userId: string;
}

export interface PresenceConn extends PresenceKey {
  connId: string;
}

/**
 * Where presence lives: which connections of a user are open (on any node), their chosen status and
 * when they were last seen. Connection entries expire (`ttlMs`) unless the owning node heartbeats
 * them, so a node that dies without saying goodbye cannot keep its users online. In this process's
 * memory: memory-presence.ts; in Redis, shared by every node: redis-presence.ts.
 *
 * Every change (a connection admitted, removed, renewed or swept, a status set) raises one version
 * counter for the whole store, in the same atomic step; `get` reads the users' state and the version
 * in one atomic step. So a state read at version v reflects every change up to v, and of two reads
 * of a user the one with the higher version is the newer: presence events carry it, and whoever
 * receives two out of order keeps the newer (the hubs, src/stream/hub.ts; clients).
 */
export interface PresenceStore {
  /** Registers a connection; true when the user just came online. */
  connect(c: PresenceConn): Promise<boolean>;
  /**
   * Registers a connection unless the user already has `max` live ones, in one atomic step (a count
   * then a connect would let connections opened at the same moment all slip under the limit).
   */
  admit(c: PresenceConn, max: number): Promise<'full' | 'first' | 'more'>;
  /** Admits connections, in order, as `admit` one after the other would: one answer per connection. */
  admitMany(items: { c: PresenceConn; max: number }[]): Promise<('full' | 'first' | 'more')[]>;
  /** Removes a connection; true when the user just went offline. */
  disconnect(c: PresenceConn): Promise<boolean>;
  /**
   * Removes connections, in order, as `disconnect` one after the other would: one answer per
   * connection, true for the one whose removal left its user with none (at most one per user).
   */
  disconnectMany(conns: PresenceConn[]): Promise<boolean[]>;
  /**
   * Extends the life of the given (live, local) connections, and registers again those a sweep
   * removed meanwhile (this node stalled past the entries' life: another node, or this one, took
   * them for a dead node's and may have reported the user offline). Returns the users with a
   * connection registered again, so that they are reported online again.
   */
  heartbeat(conns: PresenceConn[]): Promise<PresenceKey[]>;
  /**
   * Removes every expired connection (of dead nodes), however many; returns the users left with none,
   * each once. `onGone` is given them as they are found, batch by batch: when the sweep fails part
   * way (Redis), the users of the batches done before were handed over already.
   */
  sweep(onGone?: (users: PresenceKey[]) => void): Promise<PresenceKey[]>;
  setStatus(k: PresenceKey, status: Exclude<PresenceStatus, 'offline'>): Promise<void>;
  /** Live connections of a user on all nodes. */
  count(k: PresenceKey): Promise<number>;
  get(tenant: string, userIds: string[]): Promise<PresenceState[]>;
  /** True when the store answers (the in-memory one always does). */
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

/** Connections one script call of the Redis store renews (a heartbeat) or removes; the service's removal groups are as big. */
export const PRESENCE_SLICE = 256;

/** Separates the parts of a presence key (tenant, user, connection) inside one string. */
export const SEP = '\u0001';
