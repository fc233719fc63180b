import type { BusPayload, EventBus } from '../realtime/bus.js';
import { decodeEvent, SharedEncoding } from './encoding.js';
import type { EventSource, HubEvent, StreamEvent, StreamKind } from './types.js';

/** A local subscriber of a stream. `push` must be cheap: it is called once per event. */
export interface HubSubscriber<E = HubEvent> {
  readonly userId: string;
  /** An event; `shared` when other local subscribers get the same event in this fan-out. */
  push(event: E, shared: SharedEncoding<E> | undefined): void;
  /** Ends the subscription (e.g. the user was removed from the room). */
  end(): void;
}

/** Told of every event fanned out on this node, with its local subscriber count (metrics). */
export type FanoutObserver = (e: StreamEvent, subscribers: number) => void;

export interface HubStats {
  received: number;
  delivered: number;
  duplicates: number;
  gapFills: number;
  filled: number;
  /** Gaps closed by the bus within `GAP_WAIT_MS` (events of the room that came out of order): no query. */
  gapWaits: number;
  /** Idle hubs found behind PostgreSQL by the position check (a publish that never came). */
  positionCatchUps: number;
  /** Streams overflowed during their replay: more live events came than they may keep for after it (`Flow`). */
  replayQueueOverflows: number;
  /** Streams overflowed during their replay: their socket's queue stayed over the soft limit too long before a page. */
  replayDrainTimeouts: number;
  /** Live events dropped as older than one of theirs delivered before (`StreamKind.versionOf`: presence read by two nodes). */
  staleDropped: number;
}

export const FILL_PAGE = 500;

/**
 * How long a hub holds durable events that came after a gap for the missing ones to come on the bus,
 * before it reads them from PostgreSQL. With senders on several nodes a gap is the common case, not a
 * loss: a node dispatches its own commits at once while the other node's earlier seq is still on its
 * way through Redis. Filled at once, each such gap cost a query on every node with subscribers
 * (docs/DELIVERY.md, "Gaps"). A publish that is really lost delays the room's next events on this
 * node by at most this long.
 */
export const GAP_WAIT_MS = 50;
/** At most this many events held per hub; one more fills from PostgreSQL at once. */
const MAX_HELD = 1000;

/**
 * One per room per process: holds the room's single bus subscription, keeps the last delivered
 * sequence number, holds events after a gap for the missing ones (`GAP_WAIT_MS`) and fills what
 * does not come from PostgreSQL once, and fans each event out to local subscribers.
 */
export class Hub<E extends StreamEvent> {
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
  /** The version of the last live event delivered per key (`StreamKind.versionOf`), once there is one. */
  private versions: Map<string, number> | null = null;
  /** Durable events that came after a gap, by seq, waiting for the missing ones (`GAP_WAIT_MS`). */
  private held: Map<number, E & { seq: number }> | null = null;
  private heldTimer: NodeJS.Timeout | null = null;

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
    this.unsubscribe = await this.listen();
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

  /**
   * Subscribes the stream's channel; with a group channel (StreamKind.groupChannelOf), that one
   * first and released last, so whenever the stream's channel is subscribed its group's is too.
   */
  private async listen(): Promise<() => Promise<void>> {
    const group = this.kind.groupChannelOf?.(this.key);
    const leaveGroup = group === undefined ? null : await this.bus.subscribe(group, ignore);
    try {
      const leave = await this.bus.subscribe(this.kind.channelOf(this.key), (p) => this.onPayload(p));
      return async () => {
        await leave();
        await leaveGroup?.();
      };
    } catch (err) {
      await leaveGroup?.();
      throw err;
    }
  }

  private onPayload(payload: BusPayload): void {
    let e: E;
    try {
      // Published by this process: the event itself; from another node: its text.
      e = typeof payload === 'string' ? decodeEvent<E>(payload) : (payload.value as E);
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
      const v = this.kind.versionOf?.(e);
      if (v) {
        const last = this.versions?.get(v.key);
        if (last !== undefined && v.version < last) {
          this.stats.staleDropped++;
          return;
        }
        this.versions ??= new Map();
        this.versions.set(v.key, v.version);
      }
      this.fanout(e);
      return;
    }
    if (this.busy === 0) {
      if (e.seq === this.seq + 1) {
        this.seq = e.seq;
        this.fanout(e);
        if (this.held) this.releaseHeld();
        return;
      }
      if (e.seq <= this.seq) {
        this.stats.duplicates++;
        return;
      }
      if ((this.held?.size ?? 0) < MAX_HELD) {
        this.hold(e);
        return;
      }
    }
    this.flushHeld();
    this.enqueue(() => this.ordered(e));
  }

  /** Keeps `e` (after a gap) until the events before it come, or `GAP_WAIT_MS` passes. */
  private hold(e: E & { seq: number }): void {
    this.held ??= new Map();
    const held = this.held;
    if (held.has(e.seq)) {
      this.stats.duplicates++;
      return;
    }
    held.set(e.seq, e);
    this.heldTimer ??= setTimeout(() => {
      this.heldTimer = null;
      this.flushHeld();
    }, GAP_WAIT_MS);
  }

  /** Delivers the held events that now follow the position without a gap; the gap is closed when none is left. */
  private releaseHeld(): void {
    const held = this.held!;
    for (let next = held.get(this.seq + 1); next !== undefined; next = held.get(this.seq + 1)) {
      held.delete(next.seq);
      this.seq = next.seq;
      this.fanout(next);
    }
    if (held.size > 0) return;
    this.stats.gapWaits++;
    this.dropHeld();
  }

  /** The wait is over (or too much is held): the held events go the ordered way, which fills the gaps from PostgreSQL. */
  private flushHeld(): void {
    const held = this.held;
    if (!held) return;
    this.dropHeld();
    for (const e of [...held.values()].sort((a, b) => a.seq - b.seq)) this.enqueue(() => this.ordered(e));
  }

  private dropHeld(): void {
    this.held = null;
    if (this.heldTimer) clearTimeout(this.heldTimer);
    this.heldTimer = null;
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
      // Back to 0 after events: the key is gone (a deleted room whose publish the bus missed).
      if (last === 0 && this.seq > 0 && this.kind.gone) return this.gone();
      if (last > this.seq) await this.fill(last);
      this.retryMs = 200;
    });
  }

  /** The key is gone from PostgreSQL: its streams get the kind's last event (`StreamKind.gone`) and end. */
  gone(): void {
    if (this.closed || !this.kind.gone) return;
    this.fanout(this.kind.gone(this.key));
  }

  /** True when no event is being ordered or filled (the position is settled). */
  get idle(): boolean {
    return this.initialized && !this.closed && this.busy === 0 && this.held === null;
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
    const endsAll = this.kind.endsStream?.(e) ?? false;
    for (const s of this.subs) {
      s.push(e, shared);
      if (endsAll || (leaving !== null && s.userId === leaving)) {
        this.subs.delete(s);
        s.end();
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.dropHeld();
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

/** The handler of a group channel: nothing is published there, it is only counted (EventBus.listened). */
function ignore(): void {}
