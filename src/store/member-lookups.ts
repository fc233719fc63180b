import type { Db } from './database.js';

/**
 * Who is in a room, as meetings and call signals ask it (plain membership rows: support agents and
 * service tokens without a membership are not members here).
 */

/** Whether the user has a membership of the room. */
export async function isMember(db: Db, roomId: string, userId: string): Promise<boolean> {
  const row = await db.selectFrom('membership').select('user_id').where('room_id', '=', roomId).where('user_id', '=', userId).executeTakeFirst();
  return row !== undefined;
}

/** The room's members except one user (e.g. everyone a meeting's creator invites). */
export async function otherMemberIds(db: Db, roomId: string, exceptUserId: string): Promise<string[]> {
  const rows = await db.selectFrom('membership').select('user_id').where('room_id', '=', roomId).where('user_id', '<>', exceptUserId).execute();
  return rows.map((r) => r.user_id);
}

/** The room's members whose user id is longer than `length` characters. */
export async function memberIdsLongerThan(db: Db, roomId: string, length: number): Promise<string[]> {
  const rows = await db
    .selectFrom('membership')
    .select('user_id')
    .where('room_id', '=', roomId)
    .where((eb) => eb(eb.fn<number>('length', ['user_id']), '>', length))
    .execute();
  return rows.map((r) => r.user_id);
}
