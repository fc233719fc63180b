import { bodyContext } from './messages/shared.js';
import type { MessageDto, Reaction } from '../domain/events.js';
import type { Db } from '../store/database.js';
import type { MessageRow } from '../store/message-row.js';
import { reactionSummaries } from '../store/reactions.js';
import type { Keyring } from './keyring.js';

/**
 * Builds the public message shape (the one place that does). A deleted message keeps its row and
 * seq but shows no content; encrypted bodies are decrypted here.
 */
export class MessageMapper {
  constructor(
    private readonly keyring: Keyring,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  /** A stored body as plain text (decrypted, checked against its room and message). */
  body(text: string | null, keyId: string | null, of: { roomId: string; messageId: string }): string | null {
    if (text === null || keyId === null) return text;
    try {
      return this.keyring.decrypt(keyId, text, bodyContext(of.roomId, of.messageId));
    } catch (err) {
      this.onError(err);
      return null;
    }
  }

  fromRow(r: MessageRow, reactions: Reaction[] = []): MessageDto {
    const deleted = r.deleted_at !== null;
    return {
      id: r.id,
      roomId: r.room_id,
      seq: r.seq,
      senderId: r.sender_id,
      body: deleted ? null : this.body(r.body, r.key_id, { roomId: r.room_id, messageId: r.id }),
      kind: r.kind as MessageDto['kind'],
      attachments: deleted ? [] : r.attachments,
      metadata: deleted ? null : r.metadata,
      card: deleted ? null : r.card,
      replyToId: r.reply_to_id,
      mentions: deleted ? [] : r.mentions,
      createdAt: r.created_at,
      editedAt: r.edited_at,
      deletedAt: r.deleted_at,
      reactions: deleted ? [] : reactions,
      replyCount: r.reply_count,
      lastReplyAt: r.last_reply_at,
    };
  }

  /**
   * Maps rows, loading their reactions (`me` relative to `viewerId`; false for broadcast events)
   * through the typed query builder given (a transaction's `tx.db` sees its own writes).
   */
  async many(db: Db, rows: MessageRow[], viewerId: string | null): Promise<MessageDto[]> {
    const reactions = await reactionSummaries(
      db,
      rows.map((r) => r.id),
      viewerId,
    );
    return rows.map((r) => this.fromRow(r, reactions.get(r.id)));
  }
}
