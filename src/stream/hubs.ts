import type { EventBus } from '../realtime/bus.js';
import { Hub, type FanoutObserver, type HubStats, type HubSubscriber } from './hub.js';
import type { EventSource, StreamEvent, StreamKind } from './types.js';

/**
 * How often idle hubs compare their position with PostgreSQL. A durable event committed but never
 * published (its node was SIGKILLed between COMMIT and PUBLISH, or the publish was lost while the
 * other nodes' bus connections stayed up) has no live successor to reveal the gap in an otherwise
 * quiet room; this check delivers it within two intervals. One query per node per interval.
 */
export const POSITION_CHECK_MS = 2000;
/** Keys per `lastSeqs` query. */
const POSITION_CHECK_BATCH = 1000;

/** The registry of the hubs of one kind of stream in this process. */
export class StreamHubs<E extends StreamEvent> {
  private readonly hubs = new Map<string, Hub<E>>();
  readonly stats: HubStats = { received: 0, delivered: 0, duplicates: 0, gapFills: 0, filled: 0, gapWaits: 0, positionCatchUps: 0, replayQueueOverflows: 0, replayDrainTimeouts: 0, staleDropped: 0 };
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
   * fills the ones that are behind (busy hubs need no check: their next live event reveals a gap);
   * the streams of a hub whose key is gone are ended (`StreamKind.gone`).
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
          // No position: the key is gone (a deleted room whose publish this node missed).
          if (seq !== undefined) h.catchUp(seq);
          else h.gone();
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

  /** The subscribers of one stream's hub on this process (0 when it has none). */
  subscribersOf(key: string): number {
    return this.hubs.get(key)?.subs.size ?? 0;
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
