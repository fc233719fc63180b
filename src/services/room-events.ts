import type { DurableRoomEvent, MessageDto, ThreadSummary } from '../domain/events.js';
import type { Store } from '../store/store.js';
import { roomEventPage, roomLastSeq, roomLastSeqs, roomOldestSeq } from '../store/room-events.js';
import type { EventSource } from '../stream/types.js';
import type { MessageMapper } from './message-dto.js';
import type { ReadRouting } from './read-routing.js';

/**
 * A room's durable log as the hubs and resumable streams read it: replay pages and committed
 * positions. Message events show the message as it is now (its row is joined, not copied); a
 * reply's `thread` as it was at the event (kept in the log row's data).
 */
export class RoomEventSource implements EventSource {
  constructor(
    private readonly store: Store,
    private readonly mapper: MessageMapper,
    private readonly reads: ReadRouting,
  ) {}

  lastSeq(roomId: string): Promise<number> {
    return roomLastSeq(this.store.db(), roomId);
  }

  lastSeqs(roomIds: string[]): Promise<Map<string, number>> {
    return roomLastSeqs(this.store.db(), roomIds);
  }

  oldestSeq(roomId: string): Promise<number | null> {
    return roomOldestSeq(this.store.db(), roomId);
  }

  /**
   * Replay and gap-fill pages: on a replica only once it has the room up to `upto`
   * (src/services/read-routing.ts). Empty only when nothing is left up to `upto`: a page whose every
   * row is a message event of a message retention removed is read past (the callers take an empty
   * page for the end, and would stop short of the events after it).
   */
  async load(roomId: string, after: number, upto: number, limit: number): Promise<DurableRoomEvent[]> {
    for (;;) {
      const { events, lastRowSeq, full } = await this.page(roomId, after, upto, limit);
      if (events.length > 0 || !full) return events;
      after = lastRowSeq;
    }
  }

  private async page(roomId: string, after: number, upto: number, limit: number): Promise<{ events: DurableRoomEvent[]; lastRowSeq: number; full: boolean }> {
    const { rows, messages } = await this.reads.room(roomId, upto, async (db) => {
      const rows = await roomEventPage(db, roomId, after, upto, limit);
      const messages = await this.mapper.many(
        db,
        rows.flatMap((r) => (r.message ? [r.message] : [])),
        null,
      );
      return { rows, messages };
    });
    const byId = new Map(messages.map((m) => [m.id, m]));
    const events: DurableRoomEvent[] = [];
    for (const r of rows) {
      const type = r.type as DurableRoomEvent['type'];
      if (type === 'message.new' || type === 'message.edited' || type === 'message.deleted') {
        const message: MessageDto | undefined = r.message ? byId.get(r.message.id) : undefined;
        // Removed by retention meanwhile: nothing left to show.
        if (!message) continue;
        const thread = threadOf(r.data);
        events.push(thread ? ({ type, roomId, seq: r.seq, message, thread } as DurableRoomEvent) : { type, roomId, seq: r.seq, message });
        continue;
      }
      const data = r.data;
      if (type === 'member.updated' && data.mutedUntil) data.mutedUntil = new Date(data.mutedUntil as string);
      events.push({ ...data, type, roomId, seq: r.seq } as DurableRoomEvent);
    }
    return { events, lastRowSeq: rows.at(-1)?.seq ?? after, full: rows.length >= limit };
  }
}

/** The `thread` kept in a message event's log row (absent in rows written before events carried it). */
function threadOf(data: Record<string, unknown>): ThreadSummary | null {
  const t = data.thread as { rootId: string; replyCount: number; lastReplyAt: string | null } | undefined;
  return t ? { rootId: t.rootId, replyCount: t.replyCount, lastReplyAt: t.lastReplyAt === null ? null : new Date(t.lastReplyAt) } : null;
}
