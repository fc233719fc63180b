import { type Selectable, sql } from 'kysely';
import type { AuditAction, AuditEventDto } from '../domain/audit.js';
import { meetingNotice } from '../domain/meetings.js';
import type { Db, Tables } from './database.js';
import { MESSAGE_FIELDS, type MessageRow } from './message-row.js';
import { jsonb, now, type Tx } from './tx.js';

/**
 * The queries of `admin.*` (src/services/compliance.ts): keyset pages for the exports (one page in
 * memory at a time), the erasure's batches and the audit trail's reads. Every read is scoped to a
 * tenant.
 */

/** The text every erased user's name becomes. */
export const DELETED_USER_NAME = 'deleted user';

export type UserRow = Selectable<Tables['chat_user']>;

export function userOfTenant(db: Db, tenant: string, userId: string): Promise<UserRow | undefined> {
  return db.selectFrom('chat_user').selectAll().where('tenant', '=', tenant).where('id', '=', userId).executeTakeFirst();
}

/**
 * Whether the tenant knows the user: a user row (upserted from their tokens), a membership, a
 * message or an upload (members added by others may never have called the API themselves).
 */
export async function userKnown(db: Db, tenant: string, userId: string): Promise<boolean> {
  const row = await db
    .selectNoFrom((eb) => [
      eb
        .or([
          eb.exists(eb.selectFrom('chat_user').select('id').where('tenant', '=', tenant).where('id', '=', userId)),
          eb.exists(
            eb
              .selectFrom('membership as m')
              .innerJoin('room as r', 'r.id', 'm.room_id')
              .select('m.user_id')
              .where('r.tenant', '=', tenant)
              .where('m.user_id', '=', userId),
          ),
          eb.exists(eb.selectFrom('message').select('id').where('tenant', '=', tenant).where('sender_id', '=', userId)),
          eb.exists(eb.selectFrom('file').select('id').where('tenant', '=', tenant).where('uploader_id', '=', userId)),
        ])
        .as('known'),
    ])
    .executeTakeFirstOrThrow();
  return Boolean(row.known);
}

export function roomOfTenant(db: Db, tenant: string, roomId: string) {
  return db.selectFrom('room').selectAll().where('tenant', '=', tenant).where('id', '=', roomId).executeTakeFirst();
}

/** A user's memberships (with read positions) of the tenant's rooms, after `afterRoomId`. */
export function membershipsPage(db: Db, tenant: string, userId: string, afterRoomId: string | null, limit: number) {
  return db
    .selectFrom('membership as m')
    .innerJoin('room as r', 'r.id', 'm.room_id')
    .select(['m.room_id', 'r.name as room_name', 'm.role', 'm.joined_at', 'm.last_read_seq', 'm.last_read_at', 'm.muted_until'])
    .where('r.tenant', '=', tenant)
    .where('m.user_id', '=', userId)
    .$if(afterRoomId !== null, (qb) => qb.where('m.room_id', '>', afterRoomId!))
    .orderBy('m.room_id')
    .limit(limit)
    .execute();
}

/** A room's members (with read positions), after `afterUserId`. */
export function membersPage(db: Db, roomId: string, afterUserId: string | null, limit: number) {
  return db
    .selectFrom('membership as m')
    .leftJoin('room as r', 'r.id', 'm.room_id')
    .leftJoin('chat_user as u', (j) => j.onRef('u.tenant', '=', 'r.tenant').onRef('u.id', '=', 'm.user_id'))
    .select(['m.user_id', 'u.name', 'm.role', 'm.joined_at', 'm.last_read_seq', 'm.last_read_at', 'm.muted_until'])
    .where('m.room_id', '=', roomId)
    .$if(afterUserId !== null, (qb) => qb.where('m.user_id', '>', afterUserId!))
    .orderBy('m.user_id')
    .limit(limit)
    .execute();
}

/** A room's bans, after `afterUserId`. */
export function bansPage(db: Db, roomId: string, afterUserId: string | null, limit: number) {
  return db
    .selectFrom('room_ban')
    .select(['user_id', 'banned_by', 'created_at'])
    .where('room_id', '=', roomId)
    .$if(afterUserId !== null, (qb) => qb.where('user_id', '>', afterUserId!))
    .orderBy('user_id')
    .limit(limit)
    .execute();
}

/** A user's messages in the tenant, by (room, seq), after the cursor. */
export function messagesOfUserPage(db: Db, tenant: string, userId: string, after: { roomId: string; seq: number } | null, limit: number): Promise<MessageRow[]> {
  return db
    .selectFrom('message')
    .select(MESSAGE_FIELDS)
    .where('tenant', '=', tenant)
    .where('sender_id', '=', userId)
    .$if(after !== null, (qb) => qb.where((eb) => eb.tuple(eb.ref('room_id'), eb.ref('seq')), '>', (eb) => eb.tuple(after!.roomId, after!.seq)))
    .orderBy('room_id')
    .orderBy('seq')
    .limit(limit)
    .execute();
}

/** A room's messages in seq order after `afterSeq`. */
export function messagesOfRoomPage(db: Db, roomId: string, afterSeq: number, limit: number): Promise<MessageRow[]> {
  return db.selectFrom('message').select(MESSAGE_FIELDS).where('room_id', '=', roomId).where('seq', '>', afterSeq).orderBy('seq').limit(limit).execute();
}

/**
 * How many earlier versions each of these messages has (only those with any): an index-only count,
 * so that the export can read them in windows of messages of about a page of rows.
 */
export async function editCounts(db: Db, messageIds: string[]): Promise<Map<string, number>> {
  if (messageIds.length === 0) return new Map();
  const rows = await db
    .selectFrom('message_edit')
    .select((eb) => ['message_id', eb.fn.countAll<string>().as('n')])
    .where('message_id', 'in', messageIds)
    .groupBy('message_id')
    .execute();
  return new Map(rows.map((r) => [r.message_id, Number(r.n)]));
}

/**
 * The last row of a keyset page of messages' children (earlier versions, reactions): its time is
 * compared as the database wrote it (`at`, its text: `replaced_at`/`created_at` keep microseconds,
 * a `Date` does not), not looked up by key (a reaction may be gone by the next page).
 */
export interface EditCursor {
  messageId: string;
  at: string;
  id: string;
}
export interface ReactionCursor {
  messageId: string;
  at: string;
  userId: string;
  emoji: string;
}

/**
 * The earlier versions of these messages after the cursor, by message, then oldest first (by the
 * time each was replaced, then id). Served by `message_edit_message_idx` (message_id, replaced_at).
 */
export function editsOfMessagesPage(db: Db, messageIds: string[], after: EditCursor | null, limit: number) {
  return db
    .selectFrom('message_edit as e')
    .select(['e.id', 'e.message_id', 'e.body', 'e.key_id', 'e.editor_id', 'e.replaced_at', sql<string>`e.replaced_at::text`.as('at')])
    .where('e.message_id', 'in', messageIds)
    .$if(after !== null, (qb) =>
      qb.where(
        (eb) =>
          sql<boolean>`(${eb.ref('e.message_id')} > ${after!.messageId} or (${eb.ref('e.message_id')} = ${after!.messageId} and (${eb.ref('e.replaced_at')}, ${eb.ref('e.id')}) > (${after!.at}::timestamptz, ${after!.id})))`,
      ),
    )
    .orderBy('e.message_id')
    .orderBy('e.replaced_at')
    .orderBy('e.id')
    .limit(limit)
    .execute();
}

/** How many reactions each of these messages has (only those with any), as `editCounts`. */
export async function reactionCounts(db: Db, messageIds: string[]): Promise<Map<string, number>> {
  if (messageIds.length === 0) return new Map();
  const rows = await db
    .selectFrom('reaction')
    .select((eb) => ['message_id', eb.fn.countAll<string>().as('n')])
    .where('message_id', 'in', messageIds)
    .groupBy('message_id')
    .execute();
  return new Map(rows.map((r) => [r.message_id, Number(r.n)]));
}

/** Who reacted with what to these messages after the cursor: by message, then by time, user and emoji. */
export function reactionsOfMessagesPage(db: Db, messageIds: string[], after: ReactionCursor | null, limit: number) {
  return db
    .selectFrom('reaction as x')
    .select(['x.message_id', 'x.user_id', 'x.emoji', 'x.created_at', sql<string>`x.created_at::text`.as('at')])
    .where('x.message_id', 'in', messageIds)
    .$if(after !== null, (qb) =>
      qb.where(
        (eb) =>
          sql<boolean>`(${eb.ref('x.message_id')} > ${after!.messageId} or (${eb.ref('x.message_id')} = ${after!.messageId} and (${eb.ref('x.created_at')}, ${eb.ref('x.user_id')}, ${eb.ref('x.emoji')}) > (${after!.at}::timestamptz, ${after!.userId}, ${after!.emoji})))`,
      ),
    )
    .orderBy('x.message_id')
    .orderBy('x.created_at')
    .orderBy('x.user_id')
    .orderBy('x.emoji')
    .limit(limit)
    .execute();
}

/** A user's reactions in the tenant, by (message, emoji), after the cursor. */
export function reactionsOfUserPage(db: Db, tenant: string, userId: string, after: { messageId: string; emoji: string } | null, limit: number) {
  return db
    .selectFrom('reaction as x')
    .innerJoin('message as m', 'm.id', 'x.message_id')
    .select(['x.message_id', 'm.room_id', 'x.emoji', 'x.created_at'])
    .where('m.tenant', '=', tenant)
    .where('x.user_id', '=', userId)
    .$if(after !== null, (qb) =>
      qb.where((eb) => eb.tuple(eb.ref('x.message_id'), eb.ref('x.emoji')), '>', (eb) => eb.tuple(after!.messageId, after!.emoji)),
    )
    .orderBy('x.message_id')
    .orderBy('x.emoji')
    .limit(limit)
    .execute();
}

/** A user's inbox items after `afterSeq`. */
export function inboxPage(db: Db, tenant: string, userId: string, afterSeq: number, limit: number) {
  return db
    .selectFrom('inbox_event')
    .select(['seq', 'type', 'data', 'created_at'])
    .where('tenant', '=', tenant)
    .where('user_id', '=', userId)
    .where('seq', '>', afterSeq)
    .orderBy('seq')
    .limit(limit)
    .execute();
}

const FILE_EXPORT_FIELDS = ['id', 'room_id', 'message_id', 'uploader_id', 'name', 'size', 'mime', 'state', 'created_at'] as const;

/** Files uploaded by a user (any state) or of a room, after `afterId`. */
export function filesPage(db: Db, tenant: string, by: { uploaderId: string } | { roomId: string }, afterId: string | null, limit: number) {
  return db
    .selectFrom('file')
    .select(FILE_EXPORT_FIELDS)
    .where('tenant', '=', tenant)
    .$if('uploaderId' in by, (qb) => qb.where('uploader_id', '=', (by as { uploaderId: string }).uploaderId))
    .$if('roomId' in by, (qb) => qb.where('room_id', '=', (by as { roomId: string }).roomId))
    .$if(afterId !== null, (qb) => qb.where('id', '>', afterId!))
    .orderBy('id')
    .limit(limit)
    .execute();
}

/** A room's log entries that are not message events (membership, room changes), after `afterSeq`. */
export function roomLogPage(db: Db, roomId: string, afterSeq: number, limit: number) {
  return db
    .selectFrom('room_event')
    .select(['seq', 'type', 'data', 'created_at'])
    .where('room_id', '=', roomId)
    .where('message_id', 'is', null)
    .where('seq', '>', afterSeq)
    .orderBy('seq')
    .limit(limit)
    .execute();
}

// --- erasure ---------------------------------------------------------------------------------

/**
 * Locks the next batch of a user's messages that still hold content (not yet deleted, or deleted
 * but still holding a body, key id, attachments, card or metadata: deleted by an older version),
 * step 1 of the lock order (src/store/tx.ts). Once `eraseMessage` wrote a row it is not found again.
 */
export function lockMessagesToErase(tx: Tx, tenant: string, userId: string, limit: number): Promise<MessageRow[]> {
  tx.lockForUpdate('message');
  return messagesToErase(tx.db, tenant, userId).select(MESSAGE_FIELDS).orderBy('id').limit(limit).forUpdate().execute();
}

/** The user's messages in the tenant that still hold content (what `eraseMessage` clears). */
function messagesToErase(db: Db, tenant: string, userId: string) {
  return db
    .selectFrom('message')
    .where('tenant', '=', tenant)
    .where('sender_id', '=', userId)
    .where((eb) =>
      eb.or([
        eb('deleted_at', 'is', null),
        eb('body', 'is not', null),
        eb('key_id', 'is not', null),
        eb('attachments', '!=', jsonb([])),
        eb('card', 'is not', null),
        eb('metadata', 'is not', null),
      ]),
    );
}

/**
 * Whether the user still has anything the erasure's batches erase in the tenant: a message with
 * content, a reaction, a reaction event of the room logs that names them, a meeting title. Committed
 * after the batches had passed (a send, reaction or meeting while it ran).
 */
export async function contentLeft(db: Db, tenant: string, userId: string): Promise<boolean> {
  const row = await db
    .selectNoFrom((eb) => [
      eb
        .or([
          eb.exists(messagesToErase(db, tenant, userId).select('id')),
          eb.exists(
            eb
              .selectFrom('reaction as x')
              .innerJoin('message as m', 'm.id', 'x.message_id')
              .select('x.message_id')
              .where('m.tenant', '=', tenant)
              .where('x.user_id', '=', userId),
          ),
          eb.exists(reactionEventsOf(db, tenant, userId).select('e.seq')),
          eb.exists(titledMeetingsOf(db, tenant, userId).select('id')),
        ])
        .as('left'),
    ])
    .executeTakeFirstOrThrow();
  return Boolean(row.left);
}

/** Erases a message's content at rest: deleted (if not yet), no body, attachments, card or metadata. */
export function eraseMessage(tx: Tx, id: string, by: string): Promise<MessageRow> {
  return tx.db
    .updateTable('message')
    .set((eb) => ({
      body: null,
      key_id: null,
      attachments: jsonb([]),
      card: null,
      metadata: null,
      deleted_at: eb.fn.coalesce('deleted_at', now()),
      deleted_by: eb.fn.coalesce('deleted_by', eb.val(by)),
    }))
    .where('id', '=', id)
    .returning(MESSAGE_FIELDS)
    .executeTakeFirstOrThrow();
}

/** Removes the edit history of a user's messages in the tenant. Returns how many versions. */
export async function deleteEditsOfSender(db: Db, tenant: string, userId: string): Promise<number> {
  const r = await db
    .deleteFrom('message_edit')
    .where('message_id', 'in', (eb) => eb.selectFrom('message').select('id').where('tenant', '=', tenant).where('sender_id', '=', userId))
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}

/** Locks the next batch of messages of the tenant the user reacted to (step 1 of the lock order). */
export function lockMessagesReactedBy(tx: Tx, tenant: string, userId: string, limit: number): Promise<{ id: string; room_id: string }[]> {
  tx.lockForUpdate('message');
  return tx.db
    .selectFrom('message')
    .select(['id', 'room_id'])
    .where('tenant', '=', tenant)
    .where('id', 'in', (eb) => eb.selectFrom('reaction').select('message_id').where('user_id', '=', userId))
    .orderBy('id')
    .limit(limit)
    .forUpdate()
    .execute();
}

/** Deletes a user's reactions on these messages; returns the removed (message, emoji) pairs. */
export function deleteReactionsOf(tx: Tx, userId: string, messageIds: string[]) {
  return tx.db.deleteFrom('reaction').where('user_id', '=', userId).where('message_id', 'in', messageIds).returning(['message_id', 'emoji']).execute();
}

/** The reaction events of the tenant's room logs that still name the user (`reaction.added` / `reaction.removed`). */
function reactionEventsOf(db: Db, tenant: string, userId: string) {
  return db
    .selectFrom('room_event as e')
    .where('e.room_id', 'in', (eb) => eb.selectFrom('room').select('id').where('tenant', '=', tenant))
    .where('e.type', 'in', ['reaction.added', 'reaction.removed'])
    .where((eb) => eb(eb.ref('e.data', '->>').key('userId'), '=', userId));
}

/**
 * The next batch of messages (with their rooms) whose reactions the tenant's room logs still say the
 * user changed, after the cursor (the last of the batch before), those the user holds no reaction on
 * only (the erasure's reaction batches removed them first; one added meanwhile waits for the next
 * round). By room, then message.
 */
export function messagesWithReactionEventsOf(
  db: Db,
  tenant: string,
  userId: string,
  after: { roomId: string; messageId: string } | null,
  limit: number,
): Promise<{ room_id: string; message_id: string }[]> {
  const messageId = sql<string>`e.data->>'messageId'`;
  return reactionEventsOf(db, tenant, userId)
    .select(['e.room_id', messageId.as('message_id')])
    .$if(after !== null, (qb) =>
      qb.where('e.room_id', '>=', after!.roomId).where((eb) => eb(eb.tuple(eb.ref('e.room_id'), messageId), '>', eb.tuple(after!.roomId, after!.messageId))),
    )
    .where((eb) =>
      eb.not(
        eb.exists(
          eb
            .selectFrom('reaction as x')
            .select('x.message_id')
            .where('x.user_id', '=', userId)
            .where(sql<boolean>`x.message_id = (e.data->>'messageId')::uuid`),
        ),
      ),
    )
    .distinct()
    .orderBy('e.room_id')
    .orderBy('message_id')
    .limit(limit)
    .execute();
}

/**
 * Locks these messages (those still stored), step 1 of the lock order: a reaction locks its message
 * first, so none of theirs changes while their log rows are rewritten. Answers those of them the user
 * holds a reaction on (added since they were picked).
 */
export async function lockMessagesReactedTo(tx: Tx, userId: string, messageIds: string[]): Promise<Set<string>> {
  if (messageIds.length === 0) return new Set();
  tx.lockForUpdate('message');
  await tx.db.selectFrom('message').select('id').where('id', 'in', messageIds).orderBy('id').forUpdate().execute();
  const held = await tx.db.selectFrom('reaction').select('message_id').distinct().where('user_id', '=', userId).where('message_id', 'in', messageIds).execute();
  return new Set(held.map((r) => r.message_id));
}

/** Every reaction event of these messages in their room's log (anyone's), oldest first. */
export function reactionEventsOfMessages(db: Db, roomId: string, messageIds: string[]): Promise<{ seq: number; type: string; data: Record<string, unknown> }[]> {
  return db
    .selectFrom('room_event as e')
    .select(['e.seq', 'e.type', 'e.data'])
    .where('e.room_id', '=', roomId)
    .where('e.type', 'in', ['reaction.added', 'reaction.removed'])
    .where((eb) => eb(eb.ref('e.data', '->>').key('messageId'), 'in', messageIds))
    .orderBy('e.seq')
    .execute();
}

/** Writes new data into these log rows of a room, in one statement (seqs and types stay). */
export async function rewriteLogRows(db: Db, roomId: string, rows: { seq: number; data: Record<string, unknown> }[]): Promise<void> {
  if (rows.length === 0) return;
  await sql`update room_event e set data = v.data
    from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as v(seq bigint, data jsonb)
    where e.room_id = ${roomId} and e.seq = v.seq`.execute(db);
}

/** The tenant's meetings the user created that still have a title. */
function titledMeetingsOf(db: Db, tenant: string, userId: string) {
  return db.selectFrom('meeting').where('tenant', '=', tenant).where('created_by', '=', userId).where('title', 'is not', null);
}

/**
 * Locks the next batch of the user's meetings that still have a title (before the messages that
 * quote it: a meeting's status change locks its row before its room's seq, so these come first).
 */
export function lockTitledMeetings(tx: Tx, tenant: string, userId: string, limit: number) {
  return titledMeetingsOf(tx.db, tenant, userId)
    .select(['id', 'room_id', 'title', 'created_at'])
    .orderBy('id')
    .limit(limit)
    .forUpdate()
    .execute() as Promise<{ id: string; room_id: string; title: string; created_at: Date }[]>;
}

/**
 * Locks the system messages of these meetings' rooms that quote one of their titles (the notices of
 * their start and end, written since the first of them was created, whoever the notice names as its
 * sender), step 1 of the lock order: one statement per room, rooms and messages in id order. With the
 * notice each one stands for.
 */
export async function lockMeetingNotices(
  tx: Tx,
  meetings: { room_id: string; title: string; created_at: Date }[],
): Promise<{ row: MessageRow; what: 'started' | 'ended' }[]> {
  tx.lockForUpdate('message');
  const byRoom = new Map<string, { since: Date; texts: Map<string, 'started' | 'ended'> }>();
  for (const m of meetings) {
    const room = byRoom.get(m.room_id) ?? { since: m.created_at, texts: new Map<string, 'started' | 'ended'>() };
    byRoom.set(m.room_id, room);
    if (m.created_at < room.since) room.since = m.created_at;
    room.texts.set(meetingNotice(m.title, 'started'), 'started');
    room.texts.set(meetingNotice(m.title, 'ended'), 'ended');
  }
  const out: { row: MessageRow; what: 'started' | 'ended' }[] = [];
  for (const [roomId, { since, texts }] of [...byRoom].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const rows = await tx.db
      .selectFrom('message')
      .select(MESSAGE_FIELDS)
      .where('room_id', '=', roomId)
      .where('kind', '=', 'system')
      .where('deleted_at', 'is', null)
      .where('key_id', 'is', null)
      .where('created_at', '>=', since)
      .where('body', 'in', [...texts.keys()])
      .orderBy('id')
      .forUpdate()
      .execute();
    for (const row of rows) out.push({ row, what: texts.get(row.body!)! });
  }
  return out;
}

/** Writes a system message's new text (no edit history, no edit time: the server's own notice). */
export function rewriteNotice(tx: Tx, id: string, body: string): Promise<MessageRow> {
  return tx.db.updateTable('message').set({ body }).where('id', '=', id).returning(MESSAGE_FIELDS).executeTakeFirstOrThrow();
}

/**
 * Clears the titles of these meetings, and in the tenant's webhook outbox the titles their
 * `meeting.started` / `meeting.ended` deliveries carry (pending or sent).
 */
export async function forgetMeetingTitles(db: Db, tenant: string, meetings: { id: string; room_id: string }[]): Promise<void> {
  if (meetings.length === 0) return;
  const ids = meetings.map((m) => m.id);
  await db.updateTable('meeting').set({ title: null }).where('id', 'in', ids).execute();
  await db
    .updateTable('webhook_delivery')
    .set({ data: sql<Record<string, unknown>>`jsonb_set(data, '{title}', 'null')` })
    .where('tenant', '=', tenant)
    .where('room_id', 'in', [...new Set(meetings.map((m) => m.room_id))])
    .where('event_type', 'in', ['meeting.started', 'meeting.ended'])
    .where((eb) => eb(eb.ref('data', '->>').key('meetingId'), 'in', ids))
    .where((eb) => eb(eb.ref('data', '->>').key('title'), 'is not', null))
    .execute();
}

/**
 * Clears the title of every `meeting.invite` the user sent in the tenant, in anyone's inbox and in
 * the push queue: also those whose meeting is gone (room deleted, retention). A room's push row keeps
 * the newest item's sender and title but the most personal kind of its items (a mention queued before
 * the invite), and only an invite gives a room's row a title: every room row whose newest item is
 * the user's is cleared, whatever its kind. Returns how many inbox items.
 */
export async function blankInviteTitlesFrom(db: Db, tenant: string, userId: string): Promise<number> {
  const r = await db
    .updateTable('inbox_event')
    .set({ data: sql<Record<string, unknown>>`jsonb_set(data, '{title}', 'null')` })
    .where('tenant', '=', tenant)
    .where('type', '=', 'meeting.invite')
    .where((eb) => eb(eb.ref('data', '->>').key('from'), '=', userId))
    .where((eb) => eb(eb.ref('data', '->>').key('title'), 'is not', null))
    .executeTakeFirst();
  await db
    .updateTable('notify_push')
    .set({ title: null })
    .where('tenant', '=', tenant)
    .where('room_id', 'is not', null)
    .where('from_user', '=', userId)
    .where('title', 'is not', null)
    .execute();
  return Number(r.numUpdatedRows);
}

/** Forgets a user's read positions in the tenant's rooms, their own and their receipts (memberships stay). Returns how many. */
export async function resetReadPositions(db: Db, tenant: string, userId: string): Promise<number> {
  const r = await db
    .updateTable('membership')
    .set({ last_read_seq: 0, receipt_seq: 0, last_read_at: null })
    .where('user_id', '=', userId)
    .where('room_id', 'in', (eb) => eb.selectFrom('room').select('id').where('tenant', '=', tenant))
    .where((eb) => eb.or([eb('last_read_seq', '>', 0), eb('receipt_seq', '>', 0), eb('last_read_at', 'is not', null)]))
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

/** Deletes a user's inbox items (the cursor stays, so seqs go on). Returns how many. */
export async function deleteInboxItems(db: Db, tenant: string, userId: string): Promise<number> {
  const r = await db.deleteFrom('inbox_event').where('tenant', '=', tenant).where('user_id', '=', userId).executeTakeFirst();
  return Number(r.numDeletedRows);
}

/**
 * Blanks the excerpt of every `mention` item of the tenant that the user wrote, in anyone's inbox:
 * also those whose message is gone (room deleted, retention), which the per-message redaction of the
 * erasure cannot reach. Items already blank are left alone. Returns how many.
 */
export async function blankMentionExcerptsFrom(db: Db, tenant: string, userId: string): Promise<number> {
  const r = await db
    .updateTable('inbox_event')
    .set({ data: sql<Record<string, unknown>>`jsonb_set(data, '{excerpt}', '""')` })
    .where('tenant', '=', tenant)
    .where('type', '=', 'mention')
    .where((eb) => eb(eb.ref('data', '->>').key('from'), '=', userId))
    .where((eb) => eb(eb.ref('data', '->>').key('excerpt'), '!=', ''))
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

/** Hands every file a user uploaded to the file worker for removal. Returns how many. */
export async function removeFilesOfUploader(db: Db, tenant: string, userId: string): Promise<number> {
  const r = await db
    .updateTable('file')
    .set({ state: 'deleting', lease_until: null })
    .where('tenant', '=', tenant)
    .where('uploader_id', '=', userId)
    .where('state', '!=', 'deleting')
    .executeTakeFirst();
  return Number(r.numUpdatedRows);
}

/** Shows the user as "deleted user" (the row and its id stay; created if missing). */
export async function anonymizeUser(db: Db, tenant: string, userId: string): Promise<void> {
  // Also for a user without a row yet, so that a token of theirs later cannot bring the name back.
  await db
    .insertInto('chat_user')
    .values({ tenant, id: userId, name: DELETED_USER_NAME, roles: [], email: null, created_at: now(), last_seen_at: now(), erased_at: now() })
    .onConflict((oc) =>
      oc.columns(['tenant', 'id']).doUpdateSet((eb) => ({ name: DELETED_USER_NAME, roles: [], email: null, erased_at: eb.fn.coalesce('chat_user.erased_at', now()) })),
    )
    .execute();
  // The display names video providers reported for them in the tenant's meetings.
  await db
    .updateTable('meeting_participant')
    .set({ name: null })
    .where('user_id', '=', userId)
    .where('name', 'is not', null)
    .where('meeting_id', 'in', (eb) => eb.selectFrom('meeting').select('id').where('tenant', '=', tenant))
    .execute();
  // What the notifications kept of them: push endpoints, preferences, queued pushes and digests.
  await db.deleteFrom('push_device').where('tenant', '=', tenant).where('user_id', '=', userId).execute();
  await db.deleteFrom('notify_preference').where('tenant', '=', tenant).where('user_id', '=', userId).execute();
  await db.deleteFrom('notify_room_preference').where('tenant', '=', tenant).where('user_id', '=', userId).execute();
  await db.deleteFrom('notify_push').where('tenant', '=', tenant).where('user_id', '=', userId).execute();
  await db.deleteFrom('notify_digest').where('tenant', '=', tenant).where('user_id', '=', userId).execute();
}

// --- audit trail -----------------------------------------------------------------------------

export interface AuditQuery {
  tenant: string;
  since: Date | null;
  actorId: string | null;
  roomId: string | null;
  action: AuditAction | null;
  /** Entries strictly older than this (at, id): the previous page's last. */
  before: { at: Date; id: string } | null;
  limit: number;
}

/** The tenant's audit trail, newest first. */
export async function auditPage(db: Db, q: AuditQuery): Promise<AuditEventDto[]> {
  const rows = await db
    .selectFrom('audit_event')
    .select(['id', 'at', 'actor_id', 'action', 'room_id', 'target_id', 'data'])
    .where('tenant', '=', q.tenant)
    .$if(q.since !== null, (qb) => qb.where('at', '>=', q.since!))
    .$if(q.actorId !== null, (qb) => qb.where('actor_id', '=', q.actorId!))
    .$if(q.roomId !== null, (qb) => qb.where('room_id', '=', q.roomId!))
    .$if(q.action !== null, (qb) => qb.where('action', '=', q.action!))
    .$if(q.before !== null, (qb) => qb.where((eb) => eb.tuple(eb.ref('at'), eb.ref('id')), '<', (eb) => eb.tuple(q.before!.at, q.before!.id)))
    .orderBy('at', 'desc')
    .orderBy('id', 'desc')
    .limit(q.limit)
    .execute();
  return rows.map((r) => ({
    id: r.id,
    at: r.at,
    actorId: r.actor_id,
    action: r.action as AuditAction,
    roomId: r.room_id,
    targetId: r.target_id,
    data: r.data,
  }));
}
