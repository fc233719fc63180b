import { channels, type DurableRoomEvent, type EphemeralRoomEvent, type InboxItem, type InboxSignal, type InboxUnreadChanged } from '../domain/events.js';
import type { EventBus } from '../realtime/bus.js';
import type { Counters } from '../metrics.js';
import type { Publisher } from '../store/tx.js';
import { encodeEvent } from '../stream/encoding.js';

/**
 * Puts events on the bus: durable ones after their transaction committed (src/store/tx.ts calls
 * it), ephemeral ones (typing, presence, receipts, signals) directly.
 */
export class EventPublisher implements Publisher {
  constructor(
    private readonly bus: EventBus,
    private readonly counters: Counters,
  ) {}

  room(e: DurableRoomEvent | EphemeralRoomEvent): Promise<void> {
    this.counters.busPublished++;
    return this.bus.publish(channels.room(e.roomId), encodeEvent(e));
  }

  inbox(tenant: string, userId: string, e: InboxItem | InboxSignal | InboxUnreadChanged): Promise<void> {
    return this.bus.publish(channels.user(tenant, userId), encodeEvent(e));
  }
}
