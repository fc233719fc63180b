import type { Selectable } from 'kysely';
import type { Db, Tables } from './database.js';
import { MESSAGE_FIELDS_M, type MessageRow } from './message-row.js';

/**
 * Reads of the rooms' durable logs: committed positions and replay pages. Log rows are written
 * only by the transaction object (src/store/tx.ts) and the grouped send (src/store/hot/).
 */

/** A log row of a replay page, with its message when it is a message event still stored. */
export interface RoomEventRow {
  seq: number;
  type: string;
  data: Selectable<Tables['room_event']>['data'];
  /** The message the event points at as it is now (null: no message, or retention removed it). */
  message: MessageRow | null;
}

/** The room's committed position (0: no such room). */
export async function roomLastSeq(db: Db, roomId: string): Promise<number> {
  const row = await db.selectFrom('room').select('last_seq').where('id', '=', roomId).executeTakeFirst();
  return row?.last_seq ?? 0;
}

/** Committed positions of several rooms in one query (rooms that do not exist are absent). */
export async function roomLastSeqs(db: Db, roomIds: string[]): Promise<Map<string, number>> {
  if (roomIds.length === 0) return new Map();
  const rows = await db.selectFrom('room').select(['id', 'last_seq']).where('id', 'in', roomIds).execute();
  return new Map(rows.map((r) => [r.id, r.last_seq]));
}

/** The room's log rows with after < seq <= upto, ascending, at most `limit`, messages joined. */
/** The oldest seq of the room's log still stored (retention removes the oldest); null when none is. */
export async function roomOldestSeq(db: Db, roomId: string): Promise<number | null> {
  const row = await db.selectFrom('room_event').select((eb) => eb.fn.min<number>('seq').as('s')).where('room_id', '=', roomId).executeTakeFirst();
  return row?.s ?? null;
}

export async function roomEventPage(db: Db, roomId: string, after: number, upto: number, limit: number): Promise<RoomEventRow[]> {
  const rows = await db
    .selectFrom('room_event as e')
    .leftJoin('message as m', 'm.id', 'e.message_id')
    .select(['e.seq as e_seq', 'e.type as e_type', 'e.data as e_data', ...MESSAGE_FIELDS_M])
    .where('e.room_id', '=', roomId)
    .where('e.seq', '>', after)
    .where('e.seq', '<=', upto)
    .orderBy('e.seq', 'asc')
    .limit(limit)
    .execute();
  return rows.map(({ e_seq, e_type, e_data, ...m }) => ({
    seq: e_seq,
    type: e_type,
    data: e_data,
    // The join found the message: every message column is set (the left join's nulls are only
    // for events without a message, or whose message retention removed).
    message: m.id === null ? null : (m as MessageRow),
  }));
}
