import { EventQueue } from '../realtime/queue.js';
import { isDurable, type RoomEvent } from '../realtime/events.js';
import type { HubEvent, HubSubscriber, RoomHubs } from '../realtime/room-hub.js';
import type { Actor } from './actor.js';
import { badRequest } from './errors.js';
import type { RoomLog } from './room-log.js';
import type { RoomService } from './rooms.js';

/** Page size of a resume replay: a client far behind never pulls its whole backlog into memory. */
export const REPLAY_PAGE = 200;

/** Wraps an event with its id (the transport's tracked envelope); keeps services transport-free. */
export type Wrap<T> = (id: string, event: RoomEvent) => T;

export function parseLastEventId(lastEventId: string | null | undefined): number | null {
  if (lastEventId === null || lastEventId === undefined) return null;
  if (!/^\d{1,15}$/.test(lastEventId)) throw badRequest('lastEventId must be a room sequence number');
  return Number(lastEventId);
}

/**
 * Room event streams with the delivery guarantee: listen first (attach to the room hub), replay
 * what the client missed from PostgreSQL up to the hub's position, then go live; duplicates are
 * dropped by seq. Without lastEventId the stream starts with `ready` at the room's current seq.
 */
export class StreamService {
  constructor(
    private readonly rooms: RoomService,
    private readonly log: RoomLog,
    private readonly hubs: RoomHubs,
  ) {}

  /** Checks access, then returns the stream (errors before the first event are typed). */
  async open<T>(
    actor: Actor,
    roomId: string,
    lastEventId: string | null | undefined,
    signal: AbortSignal | undefined,
    wrap: Wrap<T>,
  ): Promise<AsyncGenerator<T>> {
    const after = parseLastEventId(lastEventId);
    await this.rooms.requireMember(actor, roomId);
    return this.stream(actor, roomId, after, signal, wrap);
  }

  private async *stream<T>(
    actor: Actor,
    roomId: string,
    after: number | null,
    signal: AbortSignal | undefined,
    wrap: Wrap<T>,
  ): AsyncGenerator<T> {
    const queue = new EventQueue<HubEvent>();
    const sub: HubSubscriber = { userId: actor.id, push: (e) => queue.push(e), end: () => queue.end() };
    const onAbort = () => queue.end();
    signal?.addEventListener('abort', onAbort, { once: true });
    let attached = false;
    try {
      if (signal?.aborted) return;
      const position = await this.hubs.attach(roomId, sub);
      attached = true;
      let last: number;
      if (after === null) {
        last = position;
        yield wrap(String(last), { type: 'ready', roomId, seq: last });
      } else {
        last = after;
        while (last < position && !signal?.aborted && !queue.closed) {
          const page = await this.log.load(roomId, last, position, REPLAY_PAGE);
          if (page.length === 0) break;
          for (const e of page) {
            if (e.seq <= last) continue;
            last = e.seq;
            yield wrap(String(last), e);
          }
        }
      }
      while (true) {
        const r = await queue.next();
        if (r.done) return;
        const e = r.value;
        if (isDurable(e)) {
          if (e.seq <= last) continue;
          last = e.seq;
        }
        yield wrap(String(last), e);
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (attached) this.hubs.detach(roomId, sub);
      void queue.return();
    }
  }
}
