import { channels, isDurable, type DurableRoomEvent } from '../domain/events.js';
import type { EventBus } from '../realtime/bus.js';
import type { FanoutObserver } from './hub.js';
import { POSITION_CHECK_MS, StreamHubs } from './hubs.js';
import type { EventSource, HubEvent, StreamKind } from './types.js';

/**
 * Room streams: durable room events are ordered; `member.left` ends the leaver's subscriptions,
 * `room.deleted` every subscription.
 */
export const roomStreamKind: StreamKind<HubEvent> = {
  channelOf: channels.room,
  isDurable: (e): e is DurableRoomEvent => isDurable(e),
  kickUserOf: (e) => (e.type === 'member.left' ? e.userId : null),
  endsStream: (e) => e.type === 'room.deleted',
  // typing, presence, receipts: state-like, the latest per type and user says it all.
  coalesceKey: (e) => ('userId' in e ? `${e.type}\u0000${e.userId}` : null),
  // Presence is read with the store's version: an older reading that comes second is dropped.
  versionOf: (e) => (e.type === 'presence' ? { key: e.userId, version: e.version } : null),
  gone: (roomId) => ({ type: 'room.deleted', roomId, by: null }),
};

export class RoomHubs extends StreamHubs<HubEvent> {
  constructor(bus: EventBus, source: EventSource<DurableRoomEvent>, onError?: (err: unknown) => void, onFanout?: FanoutObserver) {
    super(roomStreamKind, bus, source as EventSource<HubEvent & { seq: number }>, onError, POSITION_CHECK_MS, onFanout);
  }
}
