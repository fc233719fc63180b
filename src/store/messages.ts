import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { ThreadSummary } from '../domain/events.js';
import { type Db, violatesUnique } from './database.js';
import { MESSAGE_FIELDS, MESSAGE_FIELDS_M, type MessageRow } from './message-row.js';
import { jsonb, now, type Tx } from './tx.js';

/** A page of messages in ascending seq, and whether there are more beyond it. */
export interface MessagePage {
  rows: MessageRow[];
  hasMore: boolean;
}

/**
 * True for the error of a message insert whose (tenant, sender, clientId) is taken: a concurrent or
 * earlier send of the same clientId won. The transaction rolled back, so no seq was used up.
 */
export const isClientIdTaken = (err: unknown) => violatesUnique(err, 'message_sender_client_id_unique');

/** The message a sender wrote with `clientId`, if any. */
export function messageByClientId(db: Db, tenant: string, senderId: string, clientId: string): Promise<MessageRow | undefined> {
  return db
    .selectFrom('message')
    .select(MESSAGE_FIELDS)
    .where('tenant', '=', tenant)
    .where('sender_id', '=', senderId)
    .where('client_id', '=', clientId)
    .executeTakeFirst();
}

/** A message of the tenant (whoever may read it: the caller checks the room's access). */
export function messageOfTenant(db: Db, tenant: string, id: string): Promise<MessageRow | undefined> {
  return db.selectFrom('message').select(MESSAGE_FIELDS).where('id', '=', id).where('tenant', '=', tenant).executeTakeFirst();
}

/** `messageOfTenant`, its row locked until the transaction ends (step 1 of the lock order, src/store/tx.ts). */
export function lockMessageOfTenant(tx: Tx, tenant: string, id: string): Promise<MessageRow | undefined> {
  tx.lockForUpdate('message');
  return tx.db.selectFrom('message').select(MESSAGE_FIELDS).where('id', '=', id).where('tenant', '=', tenant).forUpdate().executeTakeFirst();
}

/**
 * Locks a message row until the transaction ends (a deleted reply's root, an erased reply's root).
 * False when there is no such message. A new reply's target: `lockReplyTarget`.
 */
export async function lockMessage(tx: Tx, id: string): Promise<boolean> {
  tx.lockForUpdate('message');
  const row = await tx.db.selectFrom('message').select('id').where('id', '=', id).forUpdate().executeTakeFirst();
  return row !== undefined;
}

/**
 * Locks the message a reply names until the transaction ends (step 1 of the lock order), only in
 * `roomId`, and tells whether it is deleted: read under the lock, so a delete that committed while
 * the reply waited for it is seen. Undefined when the room has no such message.
 */
export async function lockReplyTarget(tx: Tx, id: string, roomId: string): Promise<{ deleted: boolean } | undefined> {
  tx.lockForUpdate('message');
  const row = await tx.db
    .selectFrom('message')
    .select('deleted_at')
    .where('id', '=', id)
    .where('room_id', '=', roomId)
    .forUpdate()
    .executeTakeFirst();
  return row && { deleted: row.deleted_at !== null };
}

/** The thread summary columns of a root row as `countReply` and `uncountReply` return them. */
const THREAD_FIELDS = ['id', 'reply_count', 'last_reply_at'] as const;

const threadSummary = (r: { id: string; reply_count: number; last_reply_at: Date | null }): ThreadSummary => ({
  rootId: r.id,
  replyCount: r.reply_count,
  lastReplyAt: r.last_reply_at,
});

/**
 * Counts a new reply in its root's thread summary (its time is the transaction's, as the reply's
 * `created_at`) and returns the summary after it (null: no such root). The root is locked by the caller.
 */
export async function countReply(tx: Tx, rootId: string): Promise<ThreadSummary | null> {
  const row = await tx.db
    .updateTable('message')
    .set((eb) => ({ reply_count: eb('reply_count', '+', 1), last_reply_at: now() }))
    .where('id', '=', rootId)
    .returning(THREAD_FIELDS)
    .executeTakeFirst();
  return row ? threadSummary(row) : null;
}

/**
 * Takes a deleted reply out of its root's thread summary: the summary counts live replies only, and
 * its last reply time falls back to the latest one left. Returns the summary after it (null: the
 * root is gone, e.g. removed by retention before its replies); the root is locked by the caller.
 */
export async function uncountReply(tx: Tx, rootId: string): Promise<ThreadSummary | null> {
  const row = await tx.db
    .updateTable('message')
    .set((eb) => ({
      reply_count: eb.fn<number>('greatest', [eb('reply_count', '-', 1), eb.lit(0)]),
      last_reply_at: eb
        .selectFrom('message as r')
        .select((r) => r.fn.max('r.created_at').as('latest'))
        .where('r.reply_to_id', '=', rootId)
        .where('r.deleted_at', 'is', null),
    }))
    .where('id', '=', rootId)
    .returning(THREAD_FIELDS)
    .executeTakeFirst();
  return row ? threadSummary(row) : null;
}

/** Keeps the current version of a message in its edit history (replaced now, by `editorId`). */
export async function recordEdit(tx: Tx, message: Pick<MessageRow, 'id' | 'body' | 'key_id'>, editorId: string): Promise<void> {
  // The clock when the row is written, after the message's lock (not now(), the transaction's start):
  // an edit that waited for another one's lock started before that one committed, and its version
  // must still sort after it.
  await tx.db
    .insertInto('message_edit')
    .values({ id: randomUUID(), message_id: message.id, body: message.body, key_id: message.key_id, editor_id: editorId, replaced_at: sql<Date>`clock_timestamp()` })
    .execute();
}

/** Whether the message has `n` or more earlier versions (reads at most `n` index entries). */
export async function hasEditsAtLeast(tx: Tx, messageId: string, n: number): Promise<boolean> {
  const row = await tx.db.selectFrom('message_edit').select('id').where('message_id', '=', messageId).offset(n - 1).limit(1).executeTakeFirst();
  return row !== undefined;
}

/** Replaces a message's body (sealed when its room is encrypted); marks it edited now. */
export function rewriteBody(tx: Tx, id: string, body: string, keyId: string | null): Promise<MessageRow> {
  return tx.db
    .updateTable('message')
    .set({ body, key_id: keyId, edited_at: sql<Date>`clock_timestamp()` })
    .where('id', '=', id)
    .returning(MESSAGE_FIELDS)
    .executeTakeFirstOrThrow();
}

/** One earlier version of a message as `editsPage` reads it. */
export interface EditRow {
  id: string;
  body: string | null;
  key_id: string | null;
  editor_id: string;
  replaced_at: Date;
}

/**
 * A page of a message's earlier versions, oldest first (by the time each was replaced, then id):
 * the newest `limit` without a cursor, those before the version `beforeId` (paging back), those
 * after the version `afterId` (paging forward); with both, strictly between them. The cursors are
 * ids of versions of this message, compared in the database (replaced_at keeps microseconds, a
 * `Date` does not); null when one is not. Served by `message_edit_message_idx` (message_id,
 * replaced_at).
 */
export async function editsPage(
  db: Db,
  q: { messageId: string; beforeId?: string | null | undefined; afterId?: string | null | undefined; limit: number },
): Promise<EditRow[] | null> {
  const { afterId, beforeId } = q;
  const forward = afterId != null;
  const at = (id: string) =>
    db
      .selectFrom('message_edit as c')
      .select(['c.replaced_at', 'c.id'])
      .where('c.id', '=', id)
      .where('c.message_id', '=', q.messageId);
  const order = forward ? 'asc' : 'desc';
  const rows = await db
    .selectFrom('message_edit as e')
    .select(['e.id', 'e.body', 'e.key_id', 'e.editor_id', 'e.replaced_at'])
    .where('e.message_id', '=', q.messageId)
    .$if(afterId != null, (qb) => qb.where(sql<boolean>`(e.replaced_at, e.id) > ${at(afterId!)}`))
    .$if(beforeId != null, (qb) => qb.where(sql<boolean>`(e.replaced_at, e.id) < ${at(beforeId!)}`))
    .orderBy('e.replaced_at', order)
    .orderBy('e.id', order)
    .limit(q.limit)
    .execute();
  // Nothing after (or before) a cursor: the end, or a cursor that is not a version of this message.
  if (rows.length === 0 && (afterId != null || beforeId != null)) {
    const named = [afterId, beforeId].filter((id) => id != null);
    const found = await db.selectFrom('message_edit').select('id').where('message_id', '=', q.messageId).where('id', 'in', named).execute();
    if (found.length < new Set(named).size) return null;
  }
  if (!forward) rows.reverse();
  return rows;
}

/**
 * Soft-deletes a message: the row and its seq stay, deleted now by `deletedBy`; its content is
 * erased at rest (body, key id, attachments, card, metadata, edit history), not only hidden, as the
 * erasure writes it (`eraseMessage`, src/store/compliance.ts). Its uploaded files are found by their
 * rows' `message_id` (`removeFilesOfMessages`), not through the attachments.
 */
export async function markDeleted(tx: Tx, id: string, deletedBy: string): Promise<MessageRow> {
  const row = await tx.db
    .updateTable('message')
    .set({ deleted_at: now(), deleted_by: deletedBy, body: null, key_id: null, attachments: jsonb([]), card: null, metadata: null })
    .where('id', '=', id)
    .returning(MESSAGE_FIELDS)
    .executeTakeFirstOrThrow();
  await tx.db.deleteFrom('message_edit').where('message_id', '=', id).execute();
  return row;
}

/**
 * A page of a room's messages in ascending seq: the newest `limit` without a cursor, those before
 * `beforeSeq` (newest first, paging back), those after `afterSeq` (oldest first, paging forward);
 * with both, strictly between them.
 */
export async function historyPage(
  db: Db,
  q: { roomId: string; beforeSeq?: number | null | undefined; afterSeq?: number | null | undefined; limit: number },
): Promise<MessagePage> {
  const { afterSeq, beforeSeq } = q;
  const forward = afterSeq != null;
  const rows = await db
    .selectFrom('message')
    .select(MESSAGE_FIELDS)
    .where('room_id', '=', q.roomId)
    .$if(afterSeq != null, (qb) => qb.where('seq', '>', afterSeq!))
    .$if(beforeSeq != null, (qb) => qb.where('seq', '<', beforeSeq!))
    .orderBy('seq', forward ? 'asc' : 'desc')
    .limit(q.limit + 1)
    .execute();
  const hasMore = rows.length > q.limit;
  const page = rows.slice(0, q.limit);
  if (!forward) page.reverse();
  return { rows: page, hasMore };
}

/** The replies to a message after `afterSeq`, ascending seq. */
export async function threadPage(db: Db, rootId: string, afterSeq: number, limit: number): Promise<MessagePage> {
  const rows = await db
    .selectFrom('message')
    .select(MESSAGE_FIELDS)
    .where('reply_to_id', '=', rootId)
    .where('seq', '>', afterSeq)
    .orderBy('seq', 'asc')
    .limit(limit + 1)
    .execute();
  return { rows: rows.slice(0, limit), hasMore: rows.length > limit };
}

/** How `ts_headline` marks the matches of a search hit's body. */
export interface Highlight {
  /** ts_headline's options (the start and stop marks, HighlightAll). */
  options: string;
  /** Characters removed from the body first (the marks themselves, so a body cannot fake one). */
  strip: string;
}

/** A search hit: the message, its room's name, its rank and its body with the matches marked. */
export type SearchRow = MessageRow & { room_name: string; rank: number; marked: string };

/**
 * Full-text search (`websearch_to_tsquery`, configuration `simple`) over the generated `search`
 * column of the messages in `userId`'s rooms of the tenant, or only in `roomId` (whose access the
 * caller checked: a support agent reads a support room without a membership), best rank first, then
 * newest. The column is null for deleted and encrypted messages, and encrypted rooms are left out.
 */
export function searchMessages(
  db: Db,
  q: { query: string; tenant: string; userId: string; roomId: string | null; limit: number; highlight: Highlight },
): Promise<SearchRow[]> {
  const tsquery = sql<string>`websearch_to_tsquery('simple', ${q.query})`.as('q');
  const search = sql.ref('m.search');
  const query = sql.ref('q');
  return db
    .selectFrom([tsquery, 'message as m'])
    .innerJoin('room as r', 'r.id', 'm.room_id')
    .$if(q.roomId === null, (qb) => qb.innerJoin('membership as mb', (join) => join.onRef('mb.room_id', '=', 'm.room_id').on('mb.user_id', '=', q.userId)))
    .select(MESSAGE_FIELDS_M)
    .select([
      'r.name as room_name',
      sql<number>`ts_rank(${search}, ${query})`.as('rank'),
      sql<string>`ts_headline('simple', translate(${sql.ref('m.body')}, ${q.highlight.strip}, ''), ${query}, ${q.highlight.options})`.as('marked'),
    ])
    .where('r.tenant', '=', q.tenant)
    .where((eb) => eb.not(eb.ref('r.encrypted')))
    .$if(q.roomId !== null, (qb) => qb.where('r.id', '=', q.roomId!))
    .where(sql<boolean>`${search} @@ ${query}`)
    .orderBy('rank', 'desc')
    .orderBy('m.seq', 'desc')
    .limit(q.limit)
    .execute();
}

/**
 * Whether the query has a part the full-text index can look up (`querytree` is `T` for one made only
 * of negations, `-word`, which would read every message of the rooms instead).
 */
export async function usesSearchIndex(db: Db, query: string): Promise<boolean> {
  const row = await db
    .selectNoFrom(sql<string>`querytree(websearch_to_tsquery('simple', ${query}))`.as('tree'))
    .executeTakeFirst();
  const tree = row?.tree ?? '';
  return tree !== '' && tree !== 'T';
}

/**
 * How many of `userId`'s rooms of the tenant are encrypted; with `roomId` (access checked by the
 * caller, as in `searchMessages`), whether that room is (0 or 1).
 */
export async function encryptedRoomCount(db: Db, tenant: string, userId: string, roomId: string | null): Promise<number> {
  const row = await db
    .selectFrom('room as r')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('r.tenant', '=', tenant)
    .where((eb) => eb.ref('r.encrypted'))
    .$if(roomId !== null, (qb) => qb.where('r.id', '=', roomId!))
    .$if(roomId === null, (qb) =>
      qb.where((eb) => eb.exists(eb.selectFrom('membership as mb').select('mb.room_id').whereRef('mb.room_id', '=', 'r.id').where('mb.user_id', '=', userId))),
    )
    .executeTakeFirstOrThrow();
  return row.n;
}
