import type { Actor } from '../domain/actor.js';
import { type Deps, em as fork, sql } from './deps.js';
import type { RoomLog } from './room-log.js';
import type { RoomService } from './rooms.js';

/**
 * The one definition of "unread" (used by room.list and receipt.unread): messages after my last read
 * seq, not sent by me, not deleted, not `system`. Expects `mb` (my membership) in scope.
 */
export const UNREAD_SQL = `(select count(*) from message u where u.room_id = mb.room_id and u.seq > mb.last_read_seq
   and u.sender_id <> mb.user_id and u.deleted_at is null and u.kind <> 'system')`;
export const UNREAD_MENTIONS_SQL = `(select count(*) from message u where u.room_id = mb.room_id and u.seq > mb.last_read_seq
   and u.sender_id <> mb.user_id and u.deleted_at is null and jsonb_exists(u.mentions, mb.user_id))`;

/** Read receipts and unread counts. */
export class ReceiptService {
  constructor(
    private readonly deps: Deps,
    private readonly log: RoomLog,
    private readonly rooms: RoomService,
  ) {}

  /** Moves my read position forward (never back; capped at the room's last seq). */
  async markRead(actor: Actor, roomId: string, seq: number): Promise<{ roomId: string; lastReadSeq: number }> {
    await this.deps.limits.consume('action', `${actor.tenant}:${actor.id}`);
    await this.rooms.requireMember(actor, roomId);
    const rows = await sql<{ last_read_seq: string }>(
      fork(this.deps),
      `update membership mb set last_read_seq = least(?, r.last_seq), last_read_at = now()
         from room r
        where r.id = mb.room_id and mb.room_id = ? and mb.user_id = ? and mb.last_read_seq < least(?, r.last_seq)
        returning mb.last_read_seq`,
      [seq, roomId, actor.id, seq],
    );
    if (rows[0]) {
      const lastReadSeq = Number(rows[0].last_read_seq);
      await this.log.publish({ type: 'receipt.read', roomId, userId: actor.id, seq: lastReadSeq });
      return { roomId, lastReadSeq };
    }
    const cur = await sql<{ last_read_seq: string }>(fork(this.deps), 'select last_read_seq from membership where room_id = ? and user_id = ?', [
      roomId,
      actor.id,
    ]);
    return { roomId, lastReadSeq: Number(cur[0]?.last_read_seq ?? 0) };
  }

  /** Unread and unread-mention counts of every room I belong to (rooms with nothing unread included). */
  async unread(actor: Actor): Promise<{ roomId: string; unread: number; mentions: number; lastReadSeq: number }[]> {
    const rows = await sql(
      fork(this.deps),
      `select mb.room_id, mb.last_read_seq, ${UNREAD_SQL} as unread, ${UNREAD_MENTIONS_SQL} as mentions
         from membership mb join room r on r.id = mb.room_id and r.tenant = ?
        where mb.user_id = ? order by mb.room_id`,
      [actor.tenant, actor.id],
    );
    return rows.map((r) => ({
      roomId: r.room_id,
      unread: Number(r.unread),
      mentions: Number(r.mentions),
      lastReadSeq: Number(r.last_read_seq),
    }));
  }

  /** Members who have read up to `seq` (inclusive), with when they last read. */
  async readers(actor: Actor, roomId: string, seq: number): Promise<{ userId: string; lastReadSeq: number; readAt: Date | null }[]> {
    await this.rooms.requireMember(actor, roomId);
    const rows = await sql(
      fork(this.deps),
      'select user_id, last_read_seq, last_read_at from membership where room_id = ? and last_read_seq >= ? order by user_id',
      [roomId, seq],
    );
    return rows.map((r) => ({ userId: r.user_id, lastReadSeq: Number(r.last_read_seq), readAt: r.last_read_at ? new Date(r.last_read_at) : null }));
  }
}
