import { type Expression, expressionBuilder } from 'kysely';
import type { Db, Tables } from './database.js';
import { now } from './tx.js';

/** The columns of a membership row of the outer query, as the unread counts see it (`eb.ref('mb.room_id')` and so on). */
export interface ReadPosition {
  roomId: Expression<string | null>;
  userId: Expression<string | null>;
  lastReadSeq: Expression<number | null>;
}

/** Messages of the membership's room after its read position, not sent by its user, not deleted. */
function unreadMessages(at: ReadPosition) {
  return expressionBuilder<Tables>()
    .selectFrom('message as u')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('u.room_id', '=', at.roomId)
    .where('u.seq', '>', at.lastReadSeq)
    .where('u.sender_id', '<>', at.userId)
    .where('u.deleted_at', 'is', null);
}

/**
 * The one definition of "unread": messages after my last read seq, not sent by me, not deleted,
 * not `system`. A correlated subquery per membership row of the outer query (`room.list`,
 * `receipt.unread`): it stays on the `message_room_seq_unique` index.
 */
export function unreadCount(at: ReadPosition) {
  return unreadMessages(at).where('u.kind', '<>', 'system').$asScalar();
}

/** Unread messages that mention me. */
export function unreadMentions(at: ReadPosition) {
  return unreadMessages(at)
    .where((eb) => eb.fn<boolean>('jsonb_exists', ['u.mentions', at.userId]))
    .$asScalar();
}

/** Unread and unread-mention counts of every room of the user in the tenant, by room id. */
export function unreadCounts(
  db: Db,
  tenant: string,
  userId: string,
  roomIds?: readonly string[],
): Promise<{ room_id: string; last_read_seq: number; unread: number; mentions: number }[]> {
  if (roomIds?.length === 0) return Promise.resolve([]);
  return db
    .selectFrom('membership as mb')
    .innerJoin('room as r', (j) => j.onRef('r.id', '=', 'mb.room_id').on('r.tenant', '=', tenant))
    .select((eb) => {
      const at = { roomId: eb.ref('mb.room_id'), userId: eb.ref('mb.user_id'), lastReadSeq: eb.ref('mb.last_read_seq') };
      return ['mb.room_id', 'mb.last_read_seq', unreadCount(at).as('unread'), unreadMentions(at).as('mentions')];
    })
    .where('mb.user_id', '=', userId)
    .$if(roomIds !== undefined, (q) => q.where('mb.room_id', 'in', roomIds ?? []))
    .orderBy('mb.room_id')
    .execute();
}

/**
 * Moves the user's read position forward to `seq`, capped at the room's last seq; never back.
 * Returns the new position, or nothing when it did not move (or the user is no member).
 */
export async function advanceReadPosition(db: Db, roomId: string, userId: string, seq: number): Promise<number | undefined> {
  const row = await db
    .updateTable('membership as mb')
    .from('room as r')
    .set((eb) => ({ last_read_seq: eb.fn<number>('least', [eb.val(seq), 'r.last_seq']), last_read_at: now() }))
    .whereRef('r.id', '=', 'mb.room_id')
    .where('mb.room_id', '=', roomId)
    .where('mb.user_id', '=', userId)
    .where((eb) => eb('mb.last_read_seq', '<', eb.fn<number>('least', [eb.val(seq), 'r.last_seq'])))
    .returning('mb.last_read_seq')
    .executeTakeFirst();
  return row?.last_read_seq;
}

/**
 * Moves the user's read position back so that `seq` and what follows are unread again; never
 * forward. Returns the new position, or nothing when it did not move (or the user is no member).
 */
export async function rewindReadPosition(db: Db, roomId: string, userId: string, seq: number): Promise<number | undefined> {
  const row = await db
    .updateTable('membership')
    .set({ last_read_seq: seq - 1 })
    .where('room_id', '=', roomId)
    .where('user_id', '=', userId)
    .where('last_read_seq', '>', seq - 1)
    .returning('last_read_seq')
    .executeTakeFirst();
  return row?.last_read_seq;
}

/** Every room of the user in the tenant read up to its last seq; the rooms that moved, with their new position. */
export function readEverything(db: Db, tenant: string, userId: string): Promise<{ room_id: string; last_read_seq: number }[]> {
  return db
    .updateTable('membership as mb')
    .from('room as r')
    .set((eb) => ({ last_read_seq: eb.ref('r.last_seq'), last_read_at: now() }))
    .whereRef('r.id', '=', 'mb.room_id')
    .where('r.tenant', '=', tenant)
    .where('mb.user_id', '=', userId)
    .whereRef('mb.last_read_seq', '<', 'r.last_seq')
    .returning(['mb.room_id', 'mb.last_read_seq'])
    .execute();
}

/** The user's read position in the room (none: not a member). */
export async function readPosition(db: Db, roomId: string, userId: string): Promise<number | undefined> {
  const row = await db
    .selectFrom('membership')
    .select('last_read_seq')
    .where('room_id', '=', roomId)
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return row?.last_read_seq;
}

/** Members who have read up to `seq` (inclusive), by user id. */
export function readersFrom(db: Db, roomId: string, seq: number): Promise<{ user_id: string; last_read_seq: number; last_read_at: Date | null }[]> {
  return db
    .selectFrom('membership')
    .select(['user_id', 'last_read_seq', 'last_read_at'])
    .where('room_id', '=', roomId)
    .where('last_read_seq', '>=', seq)
    .orderBy('user_id')
    .execute();
}

/** Read positions and unread counts of the given (room, member) pairs (the activity feed's counts). */
export function unreadCountsOfMembers(
  db: Db,
  pairs: readonly { roomId: string; userId: string }[],
): Promise<{ room_id: string; user_id: string; last_read_seq: number; unread: number; mentions: number }[]> {
  if (pairs.length === 0) return Promise.resolve([]);
  return db
    .selectFrom('membership as mb')
    .select((eb) => {
      const at = { roomId: eb.ref('mb.room_id'), userId: eb.ref('mb.user_id'), lastReadSeq: eb.ref('mb.last_read_seq') };
      return ['mb.room_id', 'mb.user_id', 'mb.last_read_seq', unreadCount(at).as('unread'), unreadMentions(at).as('mentions')];
    })
    .where((eb) =>
      eb(
        eb.refTuple('mb.room_id', 'mb.user_id'),
        'in',
        pairs.map((p) => eb.tuple(p.roomId, p.userId)),
      ),
    )
    .execute();
}
