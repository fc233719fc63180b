/**
 * The shapes of `admin.*` exports and erasures (docs/SECURITY.md, "Compliance"); the audit
 * trail's are in audit.ts.
 */

/** The kinds of record of an export, one JSON line each. */
export type ExportRecordType =
  | 'export'
  | 'user'
  | 'membership'
  | 'message'
  | 'reaction'
  | 'inbox'
  | 'file'
  | 'room'
  | 'member'
  | 'ban'
  | 'event'
  | 'end';

/**
 * One line of an export (JSON Lines: each record is one JSON object; dates are ISO strings). The
 * first record is `export`, the last `end` (with the count of each record type), so a consumer can
 * tell a complete export from a cut one.
 */
export type ExportRecord = { type: ExportRecordType } & { [field: string]: unknown };

/** What `admin.eraseUser` erased (0 everywhere on a repeat). */
export interface EraseResult {
  userId: string;
  messages: number;
  edits: number;
  reactions: number;
  readPositions: number;
  inboxItems: number;
  files: number;
  /** Meetings the user created whose title was cleared. */
  meetings: number;
}

/** A reaction event's row of a room log, as stored (`reaction.added` / `reaction.removed`). */
export interface ReactionLogRow {
  seq: number;
  type: string;
  data: Record<string, unknown>;
}

/**
 * A message's reaction events (anyone's, oldest first) rewritten as if `userId` had never reacted to
 * it: their own events keep their place (seq) but name nobody (`userId` and `emoji` are `''`), and
 * every event's `reactions` (the message's reactions after it) loses what the user held then. What
 * they held is read backwards from the end, where they hold nothing (the erasure removed their
 * reactions first): before their `reaction.added` they did not hold that emoji, before their
 * `reaction.removed` they did. So it holds also when retention removed the log's oldest events.
 * Returns the rows that change.
 */
export function withoutReactionsOf(userId: string, rows: ReactionLogRow[]): { seq: number; data: Record<string, unknown> }[] {
  const held = new Set<string>();
  const changed: { seq: number; data: Record<string, unknown> }[] = [];
  for (let i = rows.length - 1; i >= 0; i--) {
    const { seq, type, data } = rows[i]!;
    // `held`: what the user held right after this event.
    let next = data;
    if (held.size > 0 && Array.isArray(data.reactions)) {
      next = { ...next, reactions: (data.reactions as { emoji: string; count: number }[]).map((r) => (held.has(r.emoji) ? { ...r, count: r.count - 1 } : r)).filter((r) => r.count > 0) };
    }
    if (data.userId === userId) {
      next = { ...next, userId: '', emoji: '' };
      const emoji = String(data.emoji);
      if (type === 'reaction.removed') held.add(emoji);
      else held.delete(emoji);
    }
    if (next !== data) changed.push({ seq, data: next });
  }
  return changed;
}
