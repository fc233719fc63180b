import { keyOf } from '../domain/ids.js';
import type { Actor } from '../domain/actor.js';
import { advanceReadPosition, readersFrom, readEverything, readPosition, rewindReadPosition, unreadCounts, unreadCountsAfterMove } from '../store/receipts.js';
import { pageLimit } from './page.js';
import type { Store } from '../store/store.js';
import type { AccessService } from './access.js';
import type { RateLimits } from './limits.js';
import type { EventPublisher } from './publisher.js';

/** Read receipts and unread counts. */
export class ReceiptService {
  constructor(
    private readonly limits: RateLimits,
    private readonly store: Store,
    private readonly publisher: EventPublisher,
    private readonly access: AccessService,
  ) {}

  /**
   * Moves my read position and my read receipt forward (never back; capped at the room's last seq).
   * `receipt.read` only when the receipt moved: a read up to where I had read before marking
   * unread moves my position alone.
   */
  async markRead(actor: Actor, roomId: string, seq: number): Promise<{ roomId: string; lastReadSeq: number }> {
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    await this.access.requireMember(actor, roomId);
    const moved = await advanceReadPosition(this.store.db(), roomId, actor.id, seq);
    if (moved !== undefined) {
      // Ephemeral: delivered live, never replayed.
      if (moved.receipt_seq !== null) await this.publisher.room({ type: 'receipt.read', roomId, userId: actor.id, seq: moved.receipt_seq });
      await this.unreadChanged(actor, [roomId]);
      return { roomId, lastReadSeq: moved.last_read_seq };
    }
    return { roomId, lastReadSeq: (await readPosition(this.store.db(), roomId, actor.id)) ?? 0 };
  }

  /**
   * Makes `seq` and what follows unread again for me (my read position moves back, never forward).
   * Personal: my read receipt (`receipt.readers`, `room.members`) stays where it is and no
   * `receipt.read` goes out; my other devices get `unread.changed`.
   */
  async markUnread(actor: Actor, roomId: string, seq: number): Promise<{ roomId: string; lastReadSeq: number }> {
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    await this.access.requireMember(actor, roomId);
    const moved = await rewindReadPosition(this.store.db(), roomId, actor.id, seq);
    if (moved !== undefined) {
      await this.unreadChanged(actor, [roomId]);
      return { roomId, lastReadSeq: moved };
    }
    return { roomId, lastReadSeq: (await readPosition(this.store.db(), roomId, actor.id)) ?? 0 };
  }

  /** Every room of mine read up to its last message (one statement); answers how many rooms moved. */
  async markAllRead(actor: Actor): Promise<{ rooms: number }> {
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    const moved = await readEverything(this.store.db(), actor.tenant, actor.id);
    await Promise.all(
      moved.flatMap((m) => (m.receipt_seq === null ? [] : [this.publisher.room({ type: 'receipt.read', roomId: m.room_id, userId: actor.id, seq: m.receipt_seq })])),
    );
    await this.unreadChanged(
      actor,
      moved.map((m) => m.room_id),
    );
    return { rooms: moved.length };
  }

  /** Unread and unread-mention counts of every room I belong to (rooms with nothing unread included). */
  async unread(actor: Actor): Promise<{ roomId: string; unread: number; mentions: number; lastReadSeq: number }[]> {
    const rows = await unreadCounts(this.store.db(), actor.tenant, actor.id);
    return rows.map((r) => ({ roomId: r.room_id, unread: r.unread, mentions: r.mentions, lastReadSeq: r.last_read_seq }));
  }

  /**
   * Tells my inbox (every device) the new counts of rooms whose read position moved, with a version
   * above that of any `room.activity` counted before the move (which may still arrive after this).
   */
  private async unreadChanged(actor: Actor, roomIds: string[]): Promise<void> {
    const rows = await unreadCountsAfterMove(this.store.db(), actor.tenant, actor.id, roomIds);
    await Promise.all(
      rows.map((r) =>
        this.publisher.inbox(actor.tenant, actor.id, {
          type: 'unread.changed',
          roomId: r.room_id,
          lastReadSeq: r.last_read_seq,
          unread: r.unread,
          mentions: r.mentions,
          version: r.version,
        }),
      ),
    );
  }

  /**
   * Members who have read up to `seq` (inclusive) by their read receipts, with when they last read:
   * a page of at most `limit` (default READERS_PAGE), by user id, after the user id `after`.
   */
  async readers(
    actor: Actor,
    roomId: string,
    seq: number,
    page: { after?: string | null | undefined; limit?: number | null | undefined } = {},
  ): Promise<{ userId: string; lastReadSeq: number; readAt: Date | null }[]> {
    await this.access.requireMember(actor, roomId);
    const rows = await readersFrom(this.store.db(), roomId, seq, { after: page.after, limit: pageLimit(page.limit, READERS_PAGE, READERS_PAGE) });
    return rows.map((r) => ({ userId: r.user_id, lastReadSeq: r.receipt_seq, readAt: r.last_read_at }));
  }
}

/** Readers per page of `receipt.readers` unless the caller asks for fewer (as `room.members`). */
export const READERS_PAGE = 1000;
