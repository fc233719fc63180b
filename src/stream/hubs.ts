import superjson from 'superjson';
import type { EventBus } from '../realtime/bus.js';
import { channels, isDurable, type DurableRoomEvent, type EphemeralRoomEvent } from '../domain/events.js';

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
}

/**
 * One event fanned out to more than one local subscriber, created once per fan-out and handed to
 * every subscriber with the event. Whoever encodes the event for the wire first (the WebSocket
 * transport, src/trpc/frames.ts) keeps the bytes here with the event id they were built for; the
 * other subscribers reuse them, so an event is serialized once per process, not once per
 * subscriber: the hot path of fan-out.
 */
export class SharedEncoding<E = unknown> {
  /** The event id `bytes` were built with (a live-only event carries each subscriber's position). */
  id: string | null = null;
  bytes: Buffer | null = null;
  constructor(readonly event: E) {}
}

/** A local subscriber of a stream. `push` must be cheap: it is called once per event. */
export interface HubSubscriber<E = HubEvent> {
  readonly userId: string;
  /** An event; `shared` when other local subscribers get the same event in this fan-out. */
  push(event: E, shared: SharedEncoding<E> | undefined): void;
  /** Ends the subscription (e.g. the user was removed from the room). */
  end(): void;
}

/** What distinguishes one kind of stream (room, inbox) from another. */
export interface StreamKind<E extends StreamEvent> {
  channelOf(key: string): string;
  isDurable(e: E): e is E & { seq: number };
  /** The user whose subscriptions end after this event (e.g. `member.left`), or null. */
  kickUserOf(e: E): string | null;
  /**
   * For a live-only event that may be coalesced on a slow socket (only the latest per key is
   * delivered), its key; null when every one must go out (call signals).
   */
  coalesceKey(e: E): string | null;
}

export const FILL_PAGE = 500;

/**
 * How often idle hubs compare their position with PostgreSQL. A durable event committed but never
 * published (its node was SIGKILLed between COMMIT and PUBLISH, or the publish was lost while the
 * other nodes' bus connections stayed up) has no live successor to reveal the gap in an otherwise
 * quiet room; this check delivers it within two intervals. One query per node per interval.
 */
export const POSITION_CHECK_MS = 2000;
/** Keys per `lastSeqs` query. */
const POSITION_CHECK_BATCH = 1000;

export function encodeEvent(e: StreamEvent): string {
  return superjson.stringify(e);
}

function decodeEvent<E>(payload: string): E {
  return superjson.parse<E>(payload);
}

/**
 * One per room per process: holds the room's single bus subscription, keeps the last delivered
 * sequence number, fills gaps from PostgreSQL once, and fans each event out to local subscribers.
 */
class Hub<E extends StreamEvent> {
  readonly subs = new Set<HubSubscriber<E>>();
  /** Attaches waiting for `ready`. */
  pending = 0;
  seq = 0;
  ready: Promise<void>;
  private initialized = false;
  private early: E[] = [];
  private chain: Promise<void> = Promise.resolve();
  private busy = 0;
  private unsubscribe: (() => Promise<void>) | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs = 200;
  closed = false;
  /** The position at the previous position check (-1: not idle then). */
  checkedSeq = -1;

  constructor(
    readonly key: string,
    private readonly kind: StreamKind<E>,
    private readonly bus: EventBus,
    private readonly source: EventSource<E & { seq: number }>,
    private readonly onError: (err: unknown) => void,
    private readonly stats: HubStats,
    private readonly onFanout: FanoutObserver | undefined,
  ) {
    this.ready = this.start();
  }

  private async start(): Promise<void> {
    // Listen first, then read the committed position: nothing committed after it can be missed.
    this.unsubscribe = await this.bus.subscribe(this.kind.channelOf(this.key), (p) => this.onPayload(p));
    try {
      this.seq = await this.source.lastSeq(this.key);
    } catch (err) {
      await this.unsubscribe();
      throw err;
    }
    this.initialized = true;
    const early = this.early;
    this.early = [];
    for (const e of early) this.accept(e);
  }

  private onPayload(payload: string): void {
    let e: E;
    try {
      e = decodeEvent<E>(payload);
    } catch (err) {
      this.onError(err);
      return;
    }
    this.stats.received++;
    if (!this.initialized) {
      this.early.push(e);
      return;
    }
    this.accept(e);
  }

  private accept(e: E): void {
    if (!this.kind.isDurable(e)) {
      this.fanout(e);
      return;
    }
    if (this.busy === 0) {
      if (e.seq === this.seq + 1) {
        this.seq = e.seq;
        this.fanout(e);
        return;
      }
      if (e.seq <= this.seq) {
        this.stats.duplicates++;
        return;
      }
    }
    this.enqueue(() => this.ordered(e));
  }

  private enqueue(task: () => Promise<void>): void {
    this.busy++;
    this.chain = this.chain
      .then(task)
      .catch((err) => {
        this.onError(err);
        this.scheduleResync();
      })
      .finally(() => {
        this.busy--;
      });
  }

  private async ordered(e: E & { seq: number }): Promise<void> {
    if (e.seq <= this.seq) {
      this.stats.duplicates++;
      return;
    }
    if (e.seq > this.seq + 1) await this.fill(e.seq - 1);
    if (e.seq > this.seq) {
      this.seq = e.seq;
      this.fanout(e);
    }
  }

  /** Delivers committed events up to `upto` from PostgreSQL, in pages. */
  private async fill(upto: number): Promise<void> {
    this.stats.gapFills++;
    while (this.seq < upto && !this.closed) {
      const page = await this.source.load(this.key, this.seq, upto, FILL_PAGE);
      if (page.length === 0) break;
      for (const e of page) {
        if (e.seq <= this.seq) continue;
        this.seq = e.seq;
        this.stats.filled++;
        this.fanout(e);
      }
    }
  }

  /** Catches up with PostgreSQL (after a bus reconnect or a failed fill). */
  resync(): void {
    if (this.closed || !this.initialized) return;
    this.enqueue(async () => {
      const last = await this.source.lastSeq(this.key);
      if (last > this.seq) await this.fill(last);
      this.retryMs = 200;
    });
  }

  /** True when no event is being ordered or filled (the position is settled). */
  get idle(): boolean {
    return this.initialized && !this.closed && this.busy === 0;
  }

  /** Fills up to a committed position read from PostgreSQL, if the hub is behind it. */
  catchUp(last: number): void {
    if (this.closed || !this.initialized || last <= this.seq) return;
    this.stats.positionCatchUps++;
    this.enqueue(async () => {
      if (last > this.seq) await this.fill(last);
    });
  }

  private scheduleResync(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.resync();
    }, this.retryMs);
    this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, 5000);
  }

  private fanout(e: E): void {
    const n = this.subs.size;
    this.stats.delivered += n;
    this.onFanout?.(e, n);
    // One encoding for all local subscribers (one object per event, nothing per subscriber).
    const shared = n > 1 ? new SharedEncoding(e) : undefined;
    const leaving = this.kind.kickUserOf(e);
    for (const s of this.subs) {
      s.push(e, shared);
      if (leaving !== null && s.userId === leaving) {
        this.subs.delete(s);
        s.end();
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    for (const s of this.subs) s.end();
    this.subs.clear();
    await this.unsubscribe?.().catch(this.onError);
  }

  /** Ends the live subscriptions of one user (removed, banned, revoked). */
  kick(userId: string): void {
    for (const s of this.subs) {
      if (s.userId === userId) {
        this.subs.delete(s);
        s.end();
      }
    }
  }
}

/** Told of every event fanned out on this node, with its local subscriber count (metrics). */
export type FanoutObserver = (e: StreamEvent, subscribers: number) => void;

export interface HubStats {
  received: number;
  delivered: number;
  duplicates: number;
  gapFills: number;
  filled: number;
  /** Idle hubs found behind PostgreSQL by the position check (a publish that never came). */
  positionCatchUps: number;
}

/** The registry of the hubs of one kind of stream in this process. */
export class StreamHubs<E extends StreamEvent> {
  private readonly hubs = new Map<string, Hub<E>>();
  readonly stats: HubStats = { received: 0, delivered: 0, duplicates: 0, gapFills: 0, filled: 0, positionCatchUps: 0 };
  private readonly offReconnect: () => void;
  private readonly checkTimer: NodeJS.Timeout | null = null;
  private checking = false;

  constructor(
    readonly kind: StreamKind<E>,
    private readonly bus: EventBus,
    private readonly source: EventSource<E & { seq: number }>,
    private readonly onError: (err: unknown) => void = () => undefined,
    positionCheckMs = POSITION_CHECK_MS,
    private readonly onFanout?: FanoutObserver,
  ) {
    this.offReconnect = bus.onReconnect(() => {
      for (const h of this.hubs.values()) h.resync();
    });
    if (source.lastSeqs && positionCheckMs > 0) {
      this.checkTimer = setInterval(() => void this.checkPositions(), positionCheckMs);
      this.checkTimer.unref();
    }
  }

  /**
   * Compares the position of every hub that stayed idle for a whole interval with PostgreSQL and
   * fills the ones that are behind (busy hubs need no check: their next live event reveals a gap).
   */
  async checkPositions(): Promise<void> {
    if (this.checking || !this.source.lastSeqs) return;
    this.checking = true;
    try {
      const stale: Hub<E>[] = [];
      for (const h of this.hubs.values()) {
        if (!h.idle) {
          h.checkedSeq = -1;
          continue;
        }
        if (h.checkedSeq === h.seq) stale.push(h);
        h.checkedSeq = h.seq;
      }
      for (let i = 0; i < stale.length; i += POSITION_CHECK_BATCH) {
        const batch = stale.slice(i, i + POSITION_CHECK_BATCH);
        const last = await this.source.lastSeqs(batch.map((h) => h.key));
        for (const h of batch) {
          const seq = last.get(h.key);
          if (seq !== undefined) h.catchUp(seq);
        }
      }
    } catch (err) {
      this.onError(err);
    } finally {
      this.checking = false;
    }
  }

  /**
   * Attaches a subscriber to the room's hub. Returns the hub's position: every event after it is
   * pushed to the subscriber; the caller replays what is at or before it from PostgreSQL.
   */
  async attach(roomId: string, sub: HubSubscriber<E>): Promise<number> {
    let hub = this.hubs.get(roomId);
    if (!hub || hub.closed) {
      hub = new Hub<E>(roomId, this.kind, this.bus, this.source, this.onError, this.stats, this.onFanout);
      this.hubs.set(roomId, hub);
    }
    hub.pending++;
    try {
      await hub.ready;
    } catch (err) {
      hub.pending--;
      if (this.hubs.get(roomId) === hub) this.hubs.delete(roomId);
      hub.closed = true;
      throw err;
    } finally {
      // (pending is decremented below on success)
    }
    hub.pending--;
    hub.subs.add(sub);
    return hub.seq;
  }

  detach(roomId: string, sub: HubSubscriber<E>): void {
    const hub = this.hubs.get(roomId);
    if (!hub) return;
    hub.subs.delete(sub);
    this.maybeClose(hub);
  }

  private maybeClose(hub: Hub<E>): void {
    if (hub.subs.size === 0 && hub.pending === 0 && !hub.closed) {
      hub.closed = true;
      if (this.hubs.get(hub.key) === hub) this.hubs.delete(hub.key);
      void hub.close();
    }
  }

  /** Ends one user's live subscriptions to a room on this process. */
  kick(roomId: string, userId: string): void {
    const hub = this.hubs.get(roomId);
    if (!hub) return;
    hub.kick(userId);
    this.maybeClose(hub);
  }

  get roomCount(): number {
    return this.hubs.size;
  }

  get subscriberCount(): number {
    let n = 0;
    for (const h of this.hubs.values()) n += h.subs.size;
    return n;
  }

  async close(): Promise<void> {
    this.offReconnect();
    if (this.checkTimer) clearInterval(this.checkTimer);
    const all = [...this.hubs.values()];
    this.hubs.clear();
    await Promise.all(all.map((h) => h.close()));
  }
}

/** Room streams: durable room events are ordered; `member.left` ends the leaver's subscriptions. */
export const roomStreamKind: StreamKind<HubEvent> = {
  channelOf: channels.room,
  isDurable: (e): e is DurableRoomEvent => isDurable(e),
  kickUserOf: (e) => (e.type === 'member.left' ? e.userId : null),
  // typing, presence, receipts: state-like, the latest per type and user says it all.
  coalesceKey: (e) => ('userId' in e ? `${e.type}\u0000${e.userId}` : null),
};

export class RoomHubs extends StreamHubs<HubEvent> {
  constructor(bus: EventBus, source: EventSource<DurableRoomEvent>, onError?: (err: unknown) => void, onFanout?: FanoutObserver) {
    super(roomStreamKind, bus, source as EventSource<HubEvent & { seq: number }>, onError, POSITION_CHECK_MS, onFanout);
  }
}
