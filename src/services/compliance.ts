import { type Actor, isAdmin } from '../domain/actor.js';
import { AUDIT_CURSOR, type AuditAction, type AuditEventDto } from '../domain/audit.js';
import { type EraseResult, type ExportRecord, withoutReactionsOf } from '../domain/compliance.js';
import { badRequest, forbidden, notFound } from '../domain/errors.js';
import { meetingNotice } from '../domain/meetings.js';
import type { Logger } from '../logger.js';
import {
  anonymizeUser,
  auditPage,
  bansPage,
  blankInviteTitlesFrom,
  blankMentionExcerptsFrom,
  contentLeft,
  deleteEditsOfSender,
  deleteInboxItems,
  deleteReactionsOf,
  editCounts,
  type EditCursor,
  editsOfMessagesPage,
  eraseMessage,
  filesPage,
  forgetMeetingTitles,
  inboxPage,
  lockMeetingNotices,
  lockMessagesReactedBy,
  lockMessagesReactedTo,
  lockMessagesToErase,
  lockTitledMeetings,
  membershipsPage,
  membersPage,
  messagesOfRoomPage,
  messagesOfUserPage,
  messagesWithReactionEventsOf,
  reactionCounts,
  type ReactionCursor,
  reactionEventsOfMessages,
  reactionsOfMessagesPage,
  reactionsOfUserPage,
  removeFilesOfUploader,
  resetReadPositions,
  rewriteLogRows,
  rewriteNotice,
  roomLogPage,
  roomOfTenant,
  userKnown,
  userOfTenant,
  type UserRow,
} from '../store/compliance.js';
import { removeFilesOfMessages } from '../store/files.js';
import type { MessageRow } from '../store/message-row.js';
import { lockMessage, uncountReply } from '../store/messages.js';
import { reactionSummaries } from '../store/reactions.js';
import type { Store } from '../store/store.js';
import type { Tx } from '../store/tx.js';
import type { InboxService } from './inbox.js';
import type { MessageMapper } from './message-dto.js';

export interface AuditInput {
  since?: Date | null | undefined;
  actorId?: string | null | undefined;
  roomId?: string | null | undefined;
  action?: AuditAction | null | undefined;
  cursor?: string | null | undefined;
  limit: number;
}

/** Rows per export page and per erasure transaction. */
export const COMPLIANCE_PAGE = 200;

const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);
/**
 * An erasure batch runs again on a deadlock or serialization failure (`transact` with `retry`): its
 * locks span several rooms and cross a reply's delete (reply, then root). Its counts are taken from
 * the committed attempt only.
 */
const RETRY = { retry: true } as const;
/**
 * How many rounds of batches an erasure runs at most while the user keeps committing messages or
 * reactions behind it; the last round's transaction then writes the rest without looking again.
 */
const ERASE_ROUNDS = 5;

/**
 * Compliance for tenant admins (docs/SECURITY.md, "Compliance"): exports of a user's or a room's
 * data as JSON Lines, the erasure of a user, and the tenant's audit trail. Every call is scoped to
 * the admin's tenant: another tenant's user or room is NOT_FOUND.
 */
export class ComplianceService {
  constructor(
    private readonly store: Store,
    private readonly mapper: MessageMapper,
    private readonly inbox: InboxService,
    private readonly log: Logger,
    private readonly wakeFiles: () => void,
    private readonly pageSize = COMPLIANCE_PAGE,
  ) {}

  private requireAdmin(actor: Actor, what: string): string {
    if (!isAdmin(actor)) throw forbidden(`only tenant admins may ${what}`);
    return actor.tenant;
  }

  private async record(actor: Actor, action: AuditAction, target: { roomId?: string; targetId?: string }, data: Record<string, unknown> = {}): Promise<void> {
    await this.store.transact((tx) => tx.audit({ tenant: actor.tenant, actorId: actor.id, action, ...target, data }));
    this.log.info({ audit: 'compliance', action, tenant: actor.tenant, by: actor.id, ...target }, `compliance: ${action}`);
  }

  // --- exports -------------------------------------------------------------------------------

  /**
   * Checks the call and records it (`user.export`), then answers the records of everything the
   * tenant holds about the user, one keyset page at a time. `pace` runs before each page (the
   * transport waits there for its socket to drain).
   */
  async exportUser(actor: Actor, userId: string, pace: () => Promise<void> = async () => undefined): Promise<AsyncGenerator<ExportRecord>> {
    const tenant = this.requireAdmin(actor, 'export user data');
    const db = this.store.db();
    if (!(await userKnown(db, tenant, userId))) throw notFound('user');
    const user = (await userOfTenant(db, tenant, userId)) ?? null;
    await this.record(actor, 'user.export', { targetId: userId });
    return this.userRecords(actor, tenant, userId, user, pace);
  }

  private async *userRecords(actor: Actor, tenant: string, userId: string, user: UserRow | null, pace: () => Promise<void>): AsyncGenerator<ExportRecord> {
    const counts: Record<string, number> = {};
    const count = <R extends ExportRecord>(r: R): R => {
      counts[r.type] = (counts[r.type] ?? 0) + 1;
      return r;
    };
    const n = this.pageSize;
    yield { type: 'export', scope: 'user', tenant, userId, exportedAt: new Date().toISOString(), exportedBy: actor.id, format: 1 };
    // No profile row: the user never called the API (added to rooms by others).
    yield count(
      user
        ? { type: 'user', id: userId, name: user.name, email: user.email, roles: user.roles, createdAt: iso(user.created_at), lastSeenAt: iso(user.last_seen_at), erasedAt: iso(user.erased_at) }
        : { type: 'user', id: userId, name: null, email: null, roles: [], createdAt: null, lastSeenAt: null, erasedAt: null },
    );

    for (let after: string | null = null; ; ) {
      await pace();
      const rows = await membershipsPage(this.store.db(), tenant, userId, after, n);
      for (const m of rows) {
        yield count({ type: 'membership', roomId: m.room_id, roomName: m.room_name, role: m.role, joinedAt: iso(m.joined_at), lastReadSeq: m.last_read_seq, lastReadAt: iso(m.last_read_at), mutedUntil: iso(m.muted_until) });
      }
      if (rows.length < n) break;
      after = rows[rows.length - 1]!.room_id;
    }

    for (let after: { roomId: string; seq: number } | null = null; ; ) {
      await pace();
      const db = this.store.db();
      const rows = await messagesOfUserPage(db, tenant, userId, after, n);
      for await (const r of this.messageRecords(db, rows, false)) yield count(r);
      if (rows.length < n) break;
      const last = rows[rows.length - 1]!;
      after = { roomId: last.room_id, seq: last.seq };
    }

    for (let after: { messageId: string; emoji: string } | null = null; ; ) {
      await pace();
      const rows = await reactionsOfUserPage(this.store.db(), tenant, userId, after, n);
      for (const r of rows) yield count({ type: 'reaction', messageId: r.message_id, roomId: r.room_id, emoji: r.emoji, createdAt: iso(r.created_at) });
      if (rows.length < n) break;
      const last = rows[rows.length - 1]!;
      after = { messageId: last.message_id, emoji: last.emoji };
    }

    for (let after = 0; ; ) {
      await pace();
      const rows = await inboxPage(this.store.db(), tenant, userId, after, n);
      for (const r of rows) yield count({ type: 'inbox', seq: r.seq, kind: r.type, data: r.data, createdAt: iso(r.created_at) });
      if (rows.length < n) break;
      after = rows[rows.length - 1]!.seq;
    }

    yield* this.fileRecords(tenant, { uploaderId: userId }, pace, count);
    yield { type: 'end', counts };
  }

  /** Checks the call and records it (`room.export`), then answers the room's records page by page. */
  async exportRoom(actor: Actor, roomId: string, pace: () => Promise<void> = async () => undefined): Promise<AsyncGenerator<ExportRecord>> {
    const tenant = this.requireAdmin(actor, 'export rooms');
    const room = await roomOfTenant(this.store.db(), tenant, roomId);
    if (!room) throw notFound('room');
    await this.record(actor, 'room.export', { roomId });
    return this.roomRecords(actor, room, pace);
  }

  private async *roomRecords(actor: Actor, room: NonNullable<Awaited<ReturnType<typeof roomOfTenant>>>, pace: () => Promise<void>): AsyncGenerator<ExportRecord> {
    const { tenant, id: roomId } = room;
    const counts: Record<string, number> = {};
    const count = <R extends ExportRecord>(r: R): R => {
      counts[r.type] = (counts[r.type] ?? 0) + 1;
      return r;
    };
    const n = this.pageSize;
    yield { type: 'export', scope: 'room', tenant, roomId, exportedAt: new Date().toISOString(), exportedBy: actor.id, format: 1 };
    yield count({
      type: 'room',
      id: room.id,
      kind: room.kind,
      name: room.name,
      topic: room.topic,
      key: room.key,
      createdBy: room.created_by,
      encrypted: room.encrypted,
      visibility: room.visibility,
      metadata: room.metadata,
      retentionDays: room.retention_days,
      lastSeq: room.last_seq,
      archivedAt: iso(room.archived_at),
      createdAt: iso(room.created_at),
    });

    for (let after: string | null = null; ; ) {
      await pace();
      const rows = await membersPage(this.store.db(), roomId, after, n);
      for (const m of rows) {
        yield count({ type: 'member', userId: m.user_id, name: m.name, role: m.role, joinedAt: iso(m.joined_at), lastReadSeq: m.last_read_seq, lastReadAt: iso(m.last_read_at), mutedUntil: iso(m.muted_until) });
      }
      if (rows.length < n) break;
      after = rows[rows.length - 1]!.user_id;
    }
    for (let after: string | null = null; ; ) {
      await pace();
      const rows = await bansPage(this.store.db(), roomId, after, n);
      for (const b of rows) yield count({ type: 'ban', userId: b.user_id, bannedBy: b.banned_by, createdAt: iso(b.created_at) });
      if (rows.length < n) break;
      after = rows[rows.length - 1]!.user_id;
    }

    for (let after = 0; ; ) {
      await pace();
      const db = this.store.db();
      const rows = await messagesOfRoomPage(db, roomId, after, n);
      for await (const r of this.messageRecords(db, rows, true)) yield count(r);
      if (rows.length < n) break;
      after = rows[rows.length - 1]!.seq;
    }

    // The log's events that are not messages: who joined, left, was promoted; renames; archiving.
    for (let after = 0; ; ) {
      await pace();
      const rows = await roomLogPage(this.store.db(), roomId, after, n);
      for (const e of rows) yield count({ type: 'event', seq: e.seq, event: e.type, data: e.data, createdAt: iso(e.created_at) });
      if (rows.length < n) break;
      after = rows[rows.length - 1]!.seq;
    }

    yield* this.fileRecords(tenant, { roomId }, pace, count);
    yield { type: 'end', counts };
  }

  /**
   * Message records of a page: bodies decrypted, edit history (and reactions) attached; deleted ones
   * empty. Their versions and reactions are read for windows of consecutive messages that hold
   * about a page of them each (counted first), in keyset statements of at most a page of rows: a
   * page of messages edited a hundred times each is never in memory at once, a message's own
   * history is (its record holds it).
   */
  private async *messageRecords(db: ReturnType<Store['db']>, rows: MessageRow[], withReactions: boolean): AsyncGenerator<ExportRecord> {
    const n = this.pageSize;
    // A deleted message is exported without versions: none are read for it.
    const live = rows.filter((r) => r.deleted_at === null);
    const editsIn = await editCounts(db, live.map((r) => r.id));
    const reactionsIn = withReactions ? await reactionCounts(db, rows.map((r) => r.id)) : new Map<string, number>();
    for (let i = 0; i < rows.length; ) {
      // From message i on while both fit a page (at least message i, however much it holds).
      let j = i;
      for (let edits = 0, reactions = 0; j < rows.length; j++) {
        edits += editsIn.get(rows[j]!.id) ?? 0;
        reactions += reactionsIn.get(rows[j]!.id) ?? 0;
        if (j > i && (edits > n || reactions > n)) break;
      }
      const window = rows.slice(i, j);
      const liveIds = window.filter((r) => r.deleted_at === null).map((r) => r.id);
      const edits = await this.childrenOf(
        liveIds,
        (after: EditCursor | null) => editsOfMessagesPage(db, liveIds, after, n),
        (e) => ({ messageId: e.message_id, at: e.at, id: e.id }),
      );
      const windowIds = window.map((r) => r.id);
      const reactions = withReactions
        ? await this.childrenOf(
            windowIds,
            (after: ReactionCursor | null) => reactionsOfMessagesPage(db, windowIds, after, n),
            (x) => ({ messageId: x.message_id, at: x.at, userId: x.user_id, emoji: x.emoji }),
          )
        : new Map<string, never[]>();
      for (const r of window) {
        const deleted = r.deleted_at !== null;
        const context = { roomId: r.room_id, messageId: r.id };
        yield {
          type: 'message',
          id: r.id,
          roomId: r.room_id,
          seq: r.seq,
          senderId: r.sender_id,
          kind: r.kind,
          body: deleted ? null : this.mapper.body(r.body, r.key_id, context),
          attachments: deleted ? [] : r.attachments,
          metadata: deleted ? null : r.metadata,
          card: deleted ? null : r.card,
          replyToId: r.reply_to_id,
          mentions: r.mentions,
          createdAt: iso(r.created_at),
          editedAt: iso(r.edited_at),
          deletedAt: iso(r.deleted_at),
          edits: deleted ? [] : (edits.get(r.id) ?? []).map((e) => ({ body: this.mapper.body(e.body, e.key_id, context), editorId: e.editor_id, replacedAt: iso(e.replaced_at) })),
          ...(withReactions ? { reactions: (reactions.get(r.id) ?? []).map((x) => ({ userId: x.user_id, emoji: x.emoji, createdAt: iso(x.created_at) })) } : {}),
        };
      }
      i = j;
    }
  }

  /** The rows `read` answers for these messages, by message, in keyset statements of a page each. */
  private async childrenOf<R extends { message_id: string }, C>(ids: string[], read: (after: C | null) => Promise<R[]>, cursor: (last: R) => C): Promise<Map<string, R[]>> {
    const byMessage = new Map<string, R[]>();
    if (ids.length === 0) return byMessage;
    for (let after: C | null = null; ; ) {
      const rows = await read(after);
      for (const r of rows) {
        const list = byMessage.get(r.message_id);
        if (list) list.push(r);
        else byMessage.set(r.message_id, [r]);
      }
      if (rows.length < this.pageSize) break;
      after = cursor(rows[rows.length - 1]!);
    }
    return byMessage;
  }

  private async *fileRecords(
    tenant: string,
    by: { uploaderId: string } | { roomId: string },
    pace: () => Promise<void>,
    count: (r: ExportRecord) => ExportRecord,
  ): AsyncGenerator<ExportRecord> {
    for (let after: string | null = null; ; ) {
      await pace();
      const rows = await filesPage(this.store.db(), tenant, by, after, this.pageSize);
      for (const f of rows) {
        yield count({
          type: 'file',
          id: f.id,
          roomId: f.room_id,
          messageId: f.message_id,
          uploaderId: f.uploader_id,
          name: f.name,
          size: f.size,
          mime: f.mime,
          state: f.state,
          createdAt: iso(f.created_at),
        });
      }
      if (rows.length < this.pageSize) break;
      after = rows[rows.length - 1]!.id;
    }
  }

  // --- erasure -------------------------------------------------------------------------------

  /**
   * Erases what a user wrote and left behind in the tenant (docs/SECURITY.md, "Compliance"): the
   * bodies of their messages (as deletes: `message.deleted` for each message not deleted before,
   * also in archived and encrypted rooms) with their edit history, their reactions
   * (`reaction.removed`) and who reacted with what in the room logs' reaction events, the titles of
   * their meetings (also where the server's notices and others' invites quote them), read positions,
   * inbox items and uploaded files (handed to the file worker), the excerpts of their mentions in
   * others' inboxes (also where the message is gone) and their name ("deleted user"). Memberships
   * stay. Messages, reactions, reaction events and meetings go in batches of `COMPLIANCE_PAGE`, one
   * transaction each; the last transaction writes the rest and the audit row, or rolls back when the
   * user committed content behind the batches (another round, `eraseRest`). Idempotent: a repeat
   * erases nothing more and answers zeros.
   */
  async eraseUser(actor: Actor, userId: string): Promise<EraseResult> {
    const tenant = this.requireAdmin(actor, 'erase users');
    if (!(await userKnown(this.store.db(), tenant, userId))) throw notFound('user');
    const result: EraseResult = { userId, messages: 0, edits: 0, reactions: 0, readPositions: 0, inboxItems: 0, files: 0, meetings: 0 };
    for (let round = 1; ; round++) {
      for (;;) {
        const done = await this.eraseMessageBatch(actor, userId, result);
        if (done < this.pageSize) break;
      }
      for (;;) {
        const done = await this.eraseReactionBatch(tenant, userId, result);
        if (done < this.pageSize) break;
      }
      // After the reactions: the erasure's own `reaction.removed` events name the user too.
      for (let after: { roomId: string; messageId: string } | null = null; ; ) {
        after = await this.eraseReactionEventBatch(tenant, userId, after);
        if (after === null) break;
      }
      for (;;) {
        const done = await this.eraseMeetingBatch(actor, userId, result);
        if (done < this.pageSize) break;
      }
      if (await this.eraseRest(actor, userId, result, round < ERASE_ROUNDS)) break;
    }
    if (result.files > 0) this.wakeFiles();
    this.log.info({ audit: 'compliance', action: 'user.erase', tenant, by: actor.id, targetId: userId, ...result }, 'compliance: user.erase');
    return result;
  }

  /**
   * The last transaction: the rest and the audit row. With `recheck`, its last statement looks for
   * a message or reaction the user committed after the batches had passed (a send while the
   * erasure ran): then it rolls back and answers false, and the caller erases another round.
   */
  private async eraseRest(actor: Actor, userId: string, result: EraseResult, recheck: boolean): Promise<boolean> {
    const tenant = actor.tenant;
    let rest = { edits: 0, readPositions: 0, inboxItems: 0, files: 0 };
    try {
      await this.store.transact(async (tx) => {
        rest = { edits: 0, readPositions: 0, inboxItems: 0, files: 0 };
        rest.edits = await deleteEditsOfSender(tx.db, tenant, userId);
        rest.readPositions = await resetReadPositions(tx.db, tenant, userId);
        rest.inboxItems = await deleteInboxItems(tx.db, tenant, userId);
        // Their words in others' mention items, also of messages no longer there (room deleted, retention).
        await blankMentionExcerptsFrom(tx.db, tenant, userId);
        // Their meeting titles in others' invites and queued pushes, also of meetings no longer there.
        await blankInviteTitlesFrom(tx.db, tenant, userId);
        rest.files = await removeFilesOfUploader(tx.db, tenant, userId);
        await anonymizeUser(tx.db, tenant, userId);
        const { userId: _u, ...before } = result;
        const counts = { ...before, edits: before.edits + rest.edits, readPositions: rest.readPositions, inboxItems: rest.inboxItems, files: before.files + rest.files };
        await tx.audit({ tenant, actorId: actor.id, action: 'user.erase', targetId: userId, data: counts });
        if (recheck && (await contentLeft(tx.db, tenant, userId))) throw new AnotherRound();
      });
    } catch (err) {
      if (err instanceof AnotherRound) return false;
      throw err;
    }
    result.edits += rest.edits;
    result.readPositions = rest.readPositions;
    result.inboxItems = rest.inboxItems;
    result.files += rest.files;
    return true;
  }

  /** One transaction: the next batch of the user's messages with content. Returns how many were locked. */
  private eraseMessageBatch(actor: Actor, userId: string, result: EraseResult): Promise<number> {
    const tenant = actor.tenant;
    let wake = false;
    let counted = { messages: 0, edits: 0, files: 0 };
    return this.store
      .transact(async (tx) => {
        // Counted anew by each attempt (a deadlocked one runs again).
        wake = false;
        counted = { messages: 0, edits: 0, files: 0 };
        // Lock order (src/store/tx.ts): the messages, then the thread roots of live replies, then
        // the rooms (in id order) as their seqs are taken.
        const rows = await lockMessagesToErase(tx, tenant, userId, this.pageSize);
        if (rows.length === 0) return 0;
        const ids = rows.map((r) => r.id);
        const inBatch = new Set(ids);
        const roots = [...new Set(rows.filter((r) => r.reply_to_id && !r.deleted_at && !inBatch.has(r.reply_to_id)).map((r) => r.reply_to_id!))].sort();
        for (const root of roots) await lockMessage(tx, root);
        counted.files = await removeFilesOfMessages(tx.db, ids);
        wake = counted.files > 0;
        const res = await tx.db.deleteFrom('message_edit').where('message_id', 'in', ids).executeTakeFirst();
        counted.edits = Number(res.numDeletedRows);
        const ordered = [...rows].sort((a, b) => (a.room_id === b.room_id ? a.seq - b.seq : a.room_id < b.room_id ? -1 : 1));
        for (const row of ordered) await this.eraseOne(tx, actor, row);
        counted.messages = rows.length;
        return rows.length;
      }, RETRY)
      .then((n) => {
        result.messages += counted.messages;
        result.edits += counted.edits;
        result.files += counted.files;
        if (wake) this.wakeFiles();
        return n;
      });
  }

  private async eraseOne(tx: Tx, actor: Actor, row: MessageRow): Promise<void> {
    // Deleted before (its body, attachments, card or metadata kept at rest by older versions):
    // erased without an event, clients already show it deleted.
    if (row.deleted_at) {
      await eraseMessage(tx, row.id, actor.id);
      return;
    }
    await tx.appendErasure(row.room_id, async () => {
      const erased = await eraseMessage(tx, row.id, actor.id);
      // A reply: its root's summary without it goes with the event, as with `chat.delete`.
      const thread = row.reply_to_id ? await uncountReply(tx, row.reply_to_id) : null;
      await this.inbox.redactMentions(tx.db, actor.tenant, row.mentions, row.id);
      return { type: 'message.deleted', roomId: row.room_id, message: this.mapper.fromRow(erased), ...(thread ? { thread } : {}) } as const;
    });
  }

  /**
   * One transaction: the room-log reaction events of the next batch of messages the user reacted to,
   * rewritten as if they never had (`withoutReactionsOf`): their own events name nobody, and no
   * event's reactions count theirs, so a replay or a room export tells neither who reacted with what
   * nor, by the counts before and after, their emoji. No row goes (the logs stay gapless), and no
   * event is published: clients already hold the reactions as they are now. Lock order: the
   * messages (a reaction locks its message first). Returns the cursor of the next batch (its last
   * message), null when this one was the last.
   */
  private eraseReactionEventBatch(tenant: string, userId: string, after: { roomId: string; messageId: string } | null): Promise<{ roomId: string; messageId: string } | null> {
    return this.store.transact(async (tx) => {
      const picked = await messagesWithReactionEventsOf(tx.db, tenant, userId, after, this.pageSize);
      if (picked.length === 0) return null;
      // Reacted to again since they were picked: left for the next round, once that reaction is removed.
      const held = await lockMessagesReactedTo(tx, userId, [...new Set(picked.map((p) => p.message_id))].sort());
      const byRoom = new Map<string, string[]>();
      for (const p of picked) {
        if (held.has(p.message_id)) continue;
        const ids = byRoom.get(p.room_id);
        if (ids) ids.push(p.message_id);
        else byRoom.set(p.room_id, [p.message_id]);
      }
      for (const [roomId, ids] of byRoom) {
        const byMessage = new Map<string, Awaited<ReturnType<typeof reactionEventsOfMessages>>>(ids.map((id) => [id, []]));
        for (const row of await reactionEventsOfMessages(tx.db, roomId, ids)) byMessage.get(String(row.data.messageId))?.push(row);
        await rewriteLogRows(tx.db, roomId, [...byMessage.values()].flatMap((rows) => withoutReactionsOf(userId, rows)));
      }
      const last = picked[picked.length - 1]!;
      return picked.length < this.pageSize ? null : { roomId: last.room_id, messageId: last.message_id };
    }, RETRY);
  }

  /**
   * One transaction: the titles of the next batch of the user's meetings, and the server's notices
   * that quote them (`Meeting "<title>" started` / `ended`, sent as whoever started or ended the
   * meeting) rewritten as for a meeting without a title, with `message.edited` (also in archived
   * rooms). Lock order: the meetings, the notices, then the rooms (in id order) as their seqs are
   * taken. Returns how many meetings were locked.
   */
  private eraseMeetingBatch(actor: Actor, userId: string, result: EraseResult): Promise<number> {
    let counted = 0;
    return this.store
      .transact(async (tx) => {
        counted = 0;
        const meetings = await lockTitledMeetings(tx, actor.tenant, userId, this.pageSize);
        if (meetings.length === 0) return 0;
        const notices = await lockMeetingNotices(tx, meetings);
        await forgetMeetingTitles(tx.db, actor.tenant, meetings);
        notices.sort((a, b) => (a.row.room_id === b.row.room_id ? a.row.seq - b.row.seq : a.row.room_id < b.row.room_id ? -1 : 1));
        for (const { row, what } of notices) {
          await tx.appendErasure(row.room_id, async () => {
            const rewritten = await rewriteNotice(tx, row.id, meetingNotice(null, what));
            // With its reactions, as an edit's event carries them.
            const [message] = await this.mapper.many(tx.db, [rewritten], null);
            return { type: 'message.edited', roomId: row.room_id, message: message! } as const;
          });
        }
        counted = meetings.length;
        return meetings.length;
      }, RETRY)
      .then((n) => {
        result.meetings += counted;
        return n;
      });
  }

  /** One transaction: the user's reactions on the next batch of messages. Returns how many messages. */
  private eraseReactionBatch(tenant: string, userId: string, result: EraseResult): Promise<number> {
    let removedCount = 0;
    return this.store
      .transact(async (tx) => {
        removedCount = 0;
        const messages = await lockMessagesReactedBy(tx, tenant, userId, this.pageSize);
        if (messages.length === 0) return 0;
        const roomOf = new Map(messages.map((m) => [m.id, m.room_id]));
        const removed = await deleteReactionsOf(tx, userId, [...roomOf.keys()]);
        removed.sort((a, b) => {
          const ra = roomOf.get(a.message_id)!;
          const rb = roomOf.get(b.message_id)!;
          return ra !== rb ? (ra < rb ? -1 : 1) : a.message_id !== b.message_id ? (a.message_id < b.message_id ? -1 : 1) : a.emoji < b.emoji ? -1 : 1;
        });
        for (const r of removed) {
          const roomId = roomOf.get(r.message_id)!;
          await tx.appendErasure(roomId, async () => {
            const reactions = (await reactionSummaries(tx.db, [r.message_id], null)).get(r.message_id) ?? [];
            return { type: 'reaction.removed', roomId, messageId: r.message_id, userId, emoji: r.emoji, reactions } as const;
          });
        }
        removedCount = removed.length;
        return messages.length;
      }, RETRY)
      .then((n) => {
        result.reactions += removedCount;
        return n;
      });
  }

  // --- audit trail ---------------------------------------------------------------------------

  /** The tenant's audit trail, newest first; `nextCursor` pages on (null: no more). */
  async audit(actor: Actor, input: AuditInput): Promise<{ events: AuditEventDto[]; nextCursor: string | null }> {
    const tenant = this.requireAdmin(actor, 'read the audit trail');
    const rows = await auditPage(this.store.db(), {
      tenant,
      since: input.since ?? null,
      actorId: input.actorId ?? null,
      roomId: input.roomId ?? null,
      action: input.action ?? null,
      before: input.cursor ? parseCursor(input.cursor) : null,
      limit: input.limit + 1,
    });
    const events = rows.slice(0, input.limit);
    const last = events[events.length - 1];
    return { events, nextCursor: rows.length > input.limit && last ? `${last.at.getTime()}_${last.id}` : null };
  }
}

/** Rolls back an erasure's last transaction that found content committed behind its batches. */
class AnotherRound extends Error {}

function parseCursor(cursor: string): { at: Date; id: string } {
  const m = AUDIT_CURSOR.exec(cursor);
  if (!m) throw badRequest('cursor must be a nextCursor of admin.audit');
  return { at: new Date(Number(m[1])), id: m[2]! };
}
