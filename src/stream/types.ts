import type { DurableRoomEvent, EphemeralRoomEvent } from '../domain/events.js';

/**
 * What the stream engine asks of the streams it carries: their events, where the committed ones are
 * read from, and what tells one kind of stream from another. The per-room hub is in hub.ts, the
 * registry of one kind's hubs in hubs.ts, the room kind in room-hubs.ts.
 */

export type HubEvent = DurableRoomEvent | EphemeralRoomEvent;

/** Any event a hub carries: durable ones have a `seq`. */
export interface StreamEvent {
  type: string;
  seq?: number;
}

/** Where a hub reads committed durable events from (PostgreSQL, through the services). */
export interface EventSource<D = DurableRoomEvent> {
  /** The stream's committed last sequence number. */
  lastSeq(key: string): Promise<number>;
  /** Durable events with after < seq <= upto, ascending, at most `limit`. */
  load(key: string, after: number, upto: number, limit: number): Promise<D[]>;
  /**
   * The committed last sequence numbers of many streams in one query (keys not found are absent).
   * When present, idle hubs compare their position with it periodically (see `POSITION_CHECK_MS`).
   */
  lastSeqs?(keys: string[]): Promise<Map<string, number>>;
  /** The oldest sequence number still stored (older ones were removed by retention); null when none is. */
  oldestSeq(key: string): Promise<number | null>;
}

/** What distinguishes one kind of stream (room, inbox) from another. */
export interface StreamKind<E extends StreamEvent> {
  channelOf(key: string): string;
  /**
   * A channel shared by a group of streams (e.g. every inbox of a tenant), subscribed on a node for
   * as long as any stream of the group is live there: subscribed before the stream's own channel
   * and released after it, so a producer can ask the bus once whether any stream of the group
   * listens (`EventBus.listened`). Nothing is published on it.
   */
  groupChannelOf?(key: string): string;
  isDurable(e: E): e is E & { seq: number };
  /** The user whose subscriptions end after this event (e.g. `member.left`), or null. */
  kickUserOf(e: E): string | null;
  /** True for an event after which every subscription of the stream ends (e.g. `room.deleted`). */
  endsStream?(e: E): boolean;
  /**
   * For a live-only event that may be coalesced on a slow socket (only the latest per key is
   * delivered), its key; null when every one must go out (call signals).
   */
  coalesceKey(e: E): string | null;
  /**
   * For a live-only event that states something at a version (a user's presence), its key and
   * version: of two events of one key, one with a lower version than the last delivered is stale
   * (published by another node before the newer one, arriving after it) and dropped.
   */
  versionOf?(e: E): { key: string; version: number } | null;
  /**
   * The event that ends the streams of a key found gone from PostgreSQL (a deleted room whose
   * publish this node missed: its bus was cut, or the deleting node died between commit and publish).
   */
  gone?(key: string): E;
}
