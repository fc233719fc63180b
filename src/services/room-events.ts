import type { DurableRoomEvent, MessageDto } from '../domain/events.js';
import type { Store } from '../store/store.js';
import { MESSAGE_FIELDS_M, type MessageRow } from '../store/message-row.js';
import type { EventSource } from '../stream/types.js';
import type { MessageMapper } from './message-dto.js';

/**
 * A room's durable log as the hubs and resumable streams read it: replay pages and committed
 * positions. Message events show the message as it is now (its row is joined, not copied).
 */
export class RoomEventSource implements EventSource {
  constructor(
    private readonly store: Store,
    private readonly mapper: MessageMapper,
  ) {}

  async lastSeq(roomId: string): Promise<number> {
    const row = await this.store.db().selectFrom('room').select('last_seq').where('id', '=', roomId).executeTakeFirst();
    return row?.last_seq ?? 0;
  }

  async lastSeqs(roomIds: string[]): Promise<Map<string, number>> {
    if (roomIds.length === 0) return new Map();
    const rows = await this.store.db().selectFrom('room').select(['id', 'last_seq']).where('id', 'in', roomIds).execute();
    return new Map(rows.map((r) => [r.id, r.last_seq]));
  }

  async load(roomId: string, after: number, upto: number, limit: number): Promise<DurableRoomEvent[]> {
    const em = this.store.em();
    const rows = await this.store
      .db()
      .selectFrom('room_event as e')
      .leftJoin('message as m', 'm.id', 'e.message_id')
      .select(['e.seq as e_seq', 'e.type as e_type', 'e.data as e_data', ...MESSAGE_FIELDS_M])
      .where('e.room_id', '=', roomId)
      .where('e.seq', '>', after)
      .where('e.seq', '<=', upto)
      .orderBy('e.seq', 'asc')
      .limit(limit)
      .execute();
    // A row whose join found its message carries every message column (the left join's nulls are
    // only for events without a message, or whose message retention removed).
    const messages = await this.mapper.many(em, rows.filter((r) => r.id !== null) as MessageRow[], null);
    const byId = new Map(messages.map((m) => [m.id, m]));
    return rows
      .map((r) => {
        const seq = r.e_seq;
        const type = r.e_type as DurableRoomEvent['type'];
        if (type === 'message.new' || type === 'message.edited' || type === 'message.deleted') {
          const message: MessageDto | undefined = r.id ? byId.get(r.id) : undefined;
          // Removed by retention meanwhile: nothing left to show.
          if (!message) return null;
          return { type, roomId, seq, message } as DurableRoomEvent;
        }
        const data = r.e_data;
        if (type === 'member.updated' && data.mutedUntil) data.mutedUntil = new Date(data.mutedUntil as string);
        return { ...data, type, roomId, seq } as DurableRoomEvent;
      })
      .filter((e): e is DurableRoomEvent => e !== null);
  }
}
