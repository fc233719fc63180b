import type { MessageDto, Reaction } from '../domain/events.js';
import { type Em, sql } from './deps.js';
import type { Keyring } from './keyring.js';
import type { MessageRow } from '../store/message-row.js';

/** Columns of `message m` selected wherever a MessageDto is built. */
export const MESSAGE_COLUMNS = `m.id, m.room_id, m.seq, m.sender_id, m.body, m.key_id, m.kind, m.attachments, m.reply_to_id,
  m.mentions, m.reply_count, m.last_reply_at, m.created_at, m.edited_at, m.deleted_at`;

/** The same columns without the table alias (for RETURNING). */
export const MESSAGE_RETURNING = MESSAGE_COLUMNS.replaceAll('m.', '');

/**
 * Builds the public message shape (the one place that does). A deleted message keeps its row and
 * seq but shows no content; encrypted bodies are decrypted here.
 */
export class MessageMapper {
  constructor(
    private readonly keyring: Keyring,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {}

  body(text: string | null, keyId: string | null): string | null {
    if (text === null || keyId === null) return text;
    try {
      return this.keyring.decrypt(keyId, text);
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
      body: deleted ? null : this.body(r.body, r.key_id),
      kind: r.kind as MessageDto['kind'],
      attachments: deleted ? [] : r.attachments,
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

  /** Maps rows, loading their reactions (`me` relative to `viewerId`; false for broadcast events). */
  async many(em: Em, rows: MessageRow[], viewerId: string | null): Promise<MessageDto[]> {
    const reactions = await loadReactions(
      em,
      rows.map((r) => r.id),
      viewerId,
    );
    return rows.map((r) => this.fromRow(r, reactions.get(r.id)));
  }
}

/** Reaction summaries per message: `[{ emoji, count, me }]` in order of first use. */
export async function loadReactions(em: Em, messageIds: string[], viewerId: string | null): Promise<Map<string, Reaction[]>> {
  const out = new Map<string, Reaction[]>();
  if (messageIds.length === 0) return out;
  const rows = await sql(
    em,
    `select message_id, emoji, count(*) as n, bool_or(user_id = ?) as me, min(created_at) as first
       from reaction where message_id = any(array[?]::uuid[])
      group by message_id, emoji order by message_id, first, emoji`,
    [viewerId ?? '', messageIds],
  );
  for (const r of rows) {
    let list = out.get(r.message_id);
    if (!list) out.set(r.message_id, (list = []));
    list.push({ emoji: r.emoji, count: Number(r.n), me: !!r.me });
  }
  return out;
}

/**
 * Rows of the hand-written message reads that are not yet moved to the typed query builder: the
 * columns of MESSAGE_COLUMNS. Goes away with the last of them.
 */
export function legacyMessageRows(rows: Record<string, any>[]): MessageRow[] {
  return rows as MessageRow[];
}
