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
}
