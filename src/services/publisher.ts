import { channels, type DurableRoomEvent, type EphemeralRoomEvent, type InboxItem, type InboxLiveEvent } from '../domain/events.js';
import { LocalValue, type EventBus } from '../realtime/bus.js';
import type { Counters } from '../metrics.js';
import type { Publisher } from '../store/tx.js';
import { encodeEvent } from '../stream/encoding.js';

/**
 * Puts events on the bus: durable ones after their transaction committed (src/store/tx.ts calls
 * it), ephemeral ones (typing, presence, receipts, signals) directly. The hubs of this process get
 * the event object itself (`LocalValue`); it is encoded only for the broker. An event is not
 * changed after it is published (the hubs share it).
 */
export class EventPublisher implements Publisher {
  private readonly observers: ((e: DurableRoomEvent | EphemeralRoomEvent) => void)[] = [];

  constructor(
    private readonly bus: EventBus,
    private readonly counters: Counters,
  ) {}

  /** Lets `fn` see every room event this node publishes (synchronously: it must be cheap and not throw). */
  watch(fn: (e: DurableRoomEvent | EphemeralRoomEvent) => void): void {
    this.observers.push(fn);
  }

  room(e: DurableRoomEvent | EphemeralRoomEvent): Promise<void> {
    for (const fn of this.observers) fn(e);
    this.counters.busPublished++;
    return this.bus.publish(channels.room(e.roomId), new LocalValue(e, encodeEvent));
  }

  inbox(tenant: string, userId: string, e: InboxItem | InboxLiveEvent): Promise<void> {
    return this.bus.publish(channels.user(tenant, userId), new LocalValue(e, encodeEvent));
  }
}
