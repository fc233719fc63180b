import type { Actor } from '../domain/actor.js';
import { UNREAD_MENTIONS_SQL, UNREAD_SQL } from '../store/hot/unread.js';
import { type Deps, em as fork, sql } from './deps.js';
import type { EventPublisher } from './publisher.js';
import type { AccessService } from './access.js';

/** Read receipts and unread counts. */
export class ReceiptService {
  constructor(
    private readonly deps: Deps,
    private readonly publisher: EventPublisher,
    private readonly access: AccessService,
  ) {}

  /** Moves my read position forward (never back; capped at the room's last seq). */
  async markRead(actor: Actor, roomId: string, seq: number): Promise<{ roomId: string; lastReadSeq: number }> {
    await this.deps.limits.consume('action', `${actor.tenant}:${actor.id}`);
    await this.access.requireMember(actor, roomId);
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
      await this.publisher.room({ type: 'receipt.read', roomId, userId: actor.id, seq: lastReadSeq });
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
    await this.access.requireMember(actor, roomId);
    const rows = await sql(
      fork(this.deps),
      'select user_id, last_read_seq, last_read_at from membership where room_id = ? and last_read_seq >= ? order by user_id',
      [roomId, seq],
    );
    return rows.map((r) => ({ userId: r.user_id, lastReadSeq: Number(r.last_read_seq), readAt: r.last_read_at ? new Date(r.last_read_at) : null }));
  }
}
