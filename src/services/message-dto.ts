import type { MessageDto } from '../realtime/events.js';

/** Columns of `message m` selected wherever a MessageDto is built. */
export const MESSAGE_COLUMNS = `m.id, m.room_id, m.seq, m.sender_id, m.body, m.kind, m.attachments, m.reply_to_id,
  m.mentions, m.created_at, m.edited_at, m.deleted_at`;

/** Builds the public message shape; a deleted message keeps its row and seq but shows no content. */
export function messageFromRow(r: Record<string, any>): MessageDto {
  const deleted = r.deleted_at != null;
  return {
    id: r.id,
    roomId: r.room_id,
    seq: Number(r.seq),
    senderId: r.sender_id,
    body: deleted ? null : r.body,
    kind: r.kind,
    attachments: deleted ? [] : (r.attachments ?? []),
    replyToId: r.reply_to_id ?? null,
    mentions: deleted ? [] : (r.mentions ?? []),
    createdAt: new Date(r.created_at),
    editedAt: r.edited_at ? new Date(r.edited_at) : null,
    deletedAt: deleted ? new Date(r.deleted_at) : null,
    reactions: [],
    replyCount: 0,
  };
}
