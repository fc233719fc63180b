import type { Actor } from '../domain/actor.js';
import type { RoomEvent } from '../domain/events.js';
import type { RoomHubs } from '../stream/room-hubs.js';
import type { HubEvent } from '../stream/types.js';
import { parseLastEventId, type Pushable, resumableStream, type StreamConn, type Wrap } from '../stream/streams.js';
import type { AccessService } from './access.js';
import type { RoomEventSource } from './room-events.js';

/**
 * Room event streams (`chat.events`): the access check, then a resumable stream of the room's hub,
 * with access checked again once attached (a ban between the two cannot leave a live stream).
 */
export class StreamService {
  constructor(
    private readonly access: AccessService,
    private readonly events: RoomEventSource,
    private readonly hubs: RoomHubs,
  ) {}

  /** Checks access, then returns the stream (errors before the first event are typed). */
  async open<T>(
    actor: Actor,
    roomId: string,
    lastEventId: string | null | undefined,
    signal: AbortSignal | undefined,
    wrap: Wrap<T>,
    conn?: StreamConn,
  ): Promise<Pushable<T>> {
    const after = parseLastEventId(lastEventId);
    await this.access.requireAccess(actor, roomId, 'read');
    return resumableStream<HubEvent, T, RoomEvent>({
      hubs: this.hubs,
      source: this.events,
      key: roomId,
      userId: actor.id,
      after,
      signal,
      ready: (seq) => ({ type: 'ready', roomId, seq }),
      reset: (seq) => ({ type: 'reset', roomId, seq }),
      wrap,
      conn,
      attached: () => this.access.requireAccess(actor, roomId, 'read'),
    });
  }
}
