import { randomUUID } from 'node:crypto';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { AttachmentDto, MessageDto } from '../domain/events.js';
import { type Actor, isService } from '../domain/actor.js';
import { type Deps, type Em, em as fork, sql } from './deps.js';
import { AppError, badRequest, conflict, forbidden, notFound } from '../domain/errors.js';
import type { InboxService } from './inbox.js';
import type { Keyring } from './keyring.js';
import { legacyMessageRows, loadReactions, MESSAGE_COLUMNS, MESSAGE_RETURNING, type MessageMapper } from './message-dto.js';
import { can } from '../domain/permissions.js';
import type { AppendOutcome, NewMessage, Store } from '../store/store.js';
import type { MessageRow } from '../store/message-row.js';
import type { RoomAccess } from '../domain/rooms.js';
import type { AccessRequest, AccessService } from './access.js';
import { SendBatcher } from './send-batcher.js';
import { buildSnippet, HEADLINE_OPTIONS, MARK_START, MARK_STOP } from './snippet.js';

export interface SendInput {
  roomId: string;
  clientId: string;
  body: string;
  kind?: 'text' | 'image' | 'file' | undefined;
  attachments?: AttachmentDto[] | undefined;
  replyToId?: string | null | undefined;
  mentions?: string[] | undefined;
}

export interface HistoryInput {
  roomId: string;
  beforeSeq?: number | null | undefined;
  afterSeq?: number | null | undefined;
  limit?: number | null | undefined;
}

export interface SearchHit {
  message: MessageDto;
  roomId: string;
  roomName: string;
  rank: number;
  /** HTML-escaped excerpt with the matches wrapped in <mark>…</mark>. */
  snippet: string;
}

export const HISTORY_DEFAULT_LIMIT = 50;
export const HISTORY_MAX_LIMIT = 100;

/** Messages: sending (idempotent by clientId), history, edits, deletes, reactions, threads, search. */
export class MessageService {
  /** Access checks of plain sends, grouped. */
  private readonly checks: SendBatcher<AccessRequest, RoomAccess | AppError>;
  /** Plain sends, written in groups (group commit). */
  private readonly writes: SendBatcher<NewMessage, AppendOutcome>;
  /** The latest send per (tenant, sender, clientId) still running in this process. */
  private readonly sending = new Map<string, Promise<void>>();

  constructor(
    private readonly deps: Deps,
    private readonly store: Store,
    private readonly access: AccessService,
    private readonly inbox: InboxService,
    private readonly mapper: MessageMapper,
    private readonly keyring: Keyring,
  ) {
    this.checks = new SendBatcher((requests) => access.checkAccess(requests));
    this.writes = new SendBatcher((messages) => store.appendMessages(messages));
  }

  private sealBody(access: RoomAccess, body: string): { body: string; keyId: string | null } {
    if (!access.room.encrypted) return { body, keyId: null };
    const sealed = this.keyring.encrypt(body);
    return { body: sealed.text, keyId: sealed.keyId };
  }

  /**
   * Sends a message. The message and its room sequence number are written in one transaction and
   * published after commit. A repeat of the same clientId by the same sender returns the original.
   * Sends of one clientId by one sender run one after the other in this process.
   */
  send(actor: Actor, input: SendInput): Promise<MessageDto> {
    const key = `${actor.tenant}\n${actor.id}\n${input.clientId}`;
    const before = this.sending.get(key);
    const run = before ? before.then(() => this.sendOnce(actor, input)) : this.sendOnce(actor, input);
    const done = (): void => {
      if (this.sending.get(key) === settled) this.sending.delete(key);
    };
    const settled: Promise<void> = run.then(done, done);
    this.sending.set(key, settled);
    return run;
  }

  private async sendOnce(actor: Actor, input: SendInput, again = false): Promise<MessageDto> {
    let failure: AppError | null = null;
    try {
      // Plain messages (the common case) are written in groups; replies and mentions one by one.
      const sent = input.replyToId || input.mentions?.length ? await this.sendInTransaction(actor, input) : await this.sendPlain(actor, input);
      if (sent) return sent;
    } catch (err) {
      if (!(err instanceof AppError)) throw err;
      failure = err;
    }
    // The clientId is taken, or the send was refused: a repeat of a message that went through before
    // is answered with the original even if a new send would now be refused (muted since, over the
    // rate limit, ...). There is no lookup in front of the write: repeats are rare.
    const original = await this.findByClientId(actor, input.clientId);
    if (!original) {
      if (failure) throw failure;
      // Taken a moment ago, gone now (retention): nothing to repeat, so it is a new send after all.
      if (!again) return this.sendOnce(actor, input, true);
      throw conflict('clientId is in use');
    }
    if (original.roomId !== input.roomId) throw conflict('clientId was already used for a message in another room');
    // The caller must still have access to the room; a service token's only access is to post.
    await this.access.requireAccess(actor, input.roomId, isService(actor) ? 'send' : 'read');
    return original;
  }

  private requireContent(input: SendInput): void {
    if (input.body.trim().length === 0 && !input.attachments?.length) throw badRequest('body must not be empty');
  }

  private requirePoster(access: RoomAccess): void {
    if (!can(access.role, 'send', access.room.kind)) {
      throw forbidden(`only admins and the owner may post in a ${access.room.kind} room`);
    }
  }

  /**
   * A message without reply and mentions. Its rate limit and its access check run at once (the
   * limit's refusal wins, as it came first before); then it is written with whatever else is queued.
   * Access checks and writes are each grouped (see send-batcher.ts): one query checks the access of
   * every send waiting for a check, one statement writes every send waiting for a write.
   */
  private async sendPlain(actor: Actor, input: SendInput): Promise<MessageDto | null> {
    this.requireContent(input);
    const [limit, checked] = await Promise.allSettled([
      this.deps.limits.consume('send', `${actor.tenant}:${actor.id}:${input.roomId}`),
      this.checks.submit({ actor, roomId: input.roomId, purpose: 'send' }),
    ]);
    if (limit.status === 'rejected') throw limit.reason;
    if (checked.status === 'rejected') throw checked.reason;
    const access = checked.value;
    if (access instanceof AppError) throw access;
    this.requirePoster(access);
    const sealed = this.sealBody(access, input.body);
    const outcome = await this.writes.submit({
      id: randomUUID(),
      roomId: input.roomId,
      tenant: actor.tenant,
      senderId: actor.id,
      clientId: input.clientId,
      body: sealed.body,
      keyId: sealed.keyId,
      kind: input.kind ?? 'text',
      attachments: input.attachments ?? [],
    });
    if (outcome.kind === 'gone') throw notFound('room');
    if (outcome.kind === 'repeat') return null;
    this.deps.counters.messagesSent++;
    return outcome.message;
  }

  /** A reply or a message with mentions, in a transaction of its own. Null when the clientId is taken. */
  private async sendInTransaction(actor: Actor, input: SendInput): Promise<MessageDto | null> {
    this.requireContent(input);
    await this.deps.limits.consume('send', `${actor.tenant}:${actor.id}:${input.roomId}`);
    const id = randomUUID();
    try {
      return await this.store.transact(async (tx) => {
        const access = await this.access.requireAccess(actor, input.roomId, 'send', tx.em);
        this.requirePoster(access);
        if (input.replyToId) {
          const parent = await sql(tx.em, 'select 1 from message where id = ? and room_id = ? for update', [input.replyToId, input.roomId]);
          if (!parent.length) throw badRequest('replyToId does not name a message of this room');
        }
        const mentions = input.mentions?.length
          ? (
              await sql<{ user_id: string }>(tx.em, 'select user_id from membership where room_id = ? and user_id = any(array[?]::text[])', [
                input.roomId,
                [...new Set(input.mentions)],
              ])
            )
              .map((r) => r.user_id)
              .filter((u) => u !== actor.id)
              .sort()
          : [];
        const sealed = this.sealBody(access, input.body);
        const message = await tx.appendMessage({
          id,
          roomId: input.roomId,
          tenant: actor.tenant,
          senderId: actor.id,
          clientId: input.clientId,
          body: sealed.body,
          keyId: sealed.keyId,
          kind: input.kind ?? 'text',
          attachments: input.attachments ?? [],
          replyToId: input.replyToId ?? null,
          mentions,
        });
        if (input.replyToId) {
          await sql(tx.em, 'update message set reply_count = reply_count + 1, last_reply_at = now() where id = ?', [input.replyToId]);
        }
        const excerpt = input.body.length > 140 ? `${input.body.slice(0, 139)}…` : input.body;
        for (const u of mentions) {
          await tx.appendInbox(actor.tenant, u, {
            type: 'mention',
            roomId: input.roomId,
            messageId: id,
            messageSeq: message.seq,
            from: actor.id,
            excerpt: access.room.encrypted ? '' : excerpt,
          });
        }
        this.deps.counters.messagesSent++;
        return message;
      });
    } catch (err) {
      // A concurrent send of the same clientId won (rolled back: no seq used up).
      if (err instanceof UniqueConstraintViolationException) return null;
      throw err;
    }
  }

  private async findByClientId(actor: Actor, clientId: string): Promise<MessageDto | null> {
    const em = fork(this.deps);
    const rows = await sql(em, `select ${MESSAGE_COLUMNS} from message m where m.tenant = ? and m.sender_id = ? and m.client_id = ?`, [
      actor.tenant,
      actor.id,
      clientId,
    ]);
    return rows[0] ? (await this.mapper.many(em, legacyMessageRows(rows), actor.id))[0]! : null;
  }

  /** Loads a message the caller can read (NOT_FOUND otherwise, like rooms), locking it when asked. */
  private async readable(actor: Actor, messageId: string, em: Em, lock = false) {
    const rows = await sql(
      em,
      `select ${MESSAGE_COLUMNS} from message m where m.id = ? and m.tenant = ?${lock ? ' for update' : ''}`,
      [messageId, actor.tenant],
    );
    const row = legacyMessageRows(rows)[0];
    if (!row) throw notFound('message');
    try {
      const access = await this.access.requireMember(actor, row.room_id, em);
      return { row, access };
    } catch {
      throw notFound('message');
    }
  }

  /** Edits my message; the previous version goes to the edit history. */
  async edit(actor: Actor, messageId: string, body: string): Promise<MessageDto> {
    if (body.trim().length === 0) throw badRequest('body must not be empty (delete the message instead)');
    await this.deps.limits.consume('action', `${actor.tenant}:${actor.id}`);
    return this.store.transact(async (tx) => {
      const { row, access } = await this.readable(actor, messageId, tx.em, true);
      if (row.sender_id !== actor.id) throw forbidden('only the author can edit a message');
      if (row.kind === 'system') throw forbidden('system messages cannot be edited');
      if (row.deleted_at) throw badRequest('a deleted message cannot be edited');
      await this.access.requireAccess(actor, row.room_id, 'send', tx.em);
      if (this.mapper.body(row.body, row.key_id) === body) return (await this.mapper.many(tx.em, [row], actor.id))[0]!;
      await sql(tx.em, 'insert into message_edit (id, message_id, body, key_id, editor_id, replaced_at) values (?, ?, ?, ?, ?, now())', [
        randomUUID(),
        messageId,
        row.body,
        row.key_id,
        actor.id,
      ]);
      const sealed = this.sealBody(access, body);
      let rows: MessageRow[] = [];
      await tx.append(row.room_id, async () => {
        rows = legacyMessageRows(
          await sql(tx.em, `update message set body = ?, key_id = ?, edited_at = now() where id = ? returning ${MESSAGE_RETURNING}`, [
            sealed.body,
            sealed.keyId,
            messageId,
          ]),
        );
        const [broadcast] = await this.mapper.many(tx.em, rows, null);
        return { type: 'message.edited', roomId: row.room_id, message: broadcast! };
      });
      return (await this.mapper.many(tx.em, rows, actor.id))[0]!;
    });
  }

  /** The earlier versions of a message, oldest first (empty for a deleted message). */
  async edits(actor: Actor, messageId: string): Promise<{ body: string | null; editorId: string; replacedAt: Date }[]> {
    const em = fork(this.deps);
    const { row } = await this.readable(actor, messageId, em);
    if (row.deleted_at) return [];
    const rows = await sql(em, 'select body, key_id, editor_id, replaced_at from message_edit where message_id = ? order by replaced_at, id', [
      messageId,
    ]);
    return rows.map((r) => ({ body: this.mapper.body(r.body, r.key_id), editorId: r.editor_id, replacedAt: new Date(r.replaced_at) }));
  }

  /** Soft-deletes a message (author, or moderator and above). Idempotent. */
  async delete(actor: Actor, messageId: string): Promise<MessageDto> {
    await this.deps.limits.consume('action', `${actor.tenant}:${actor.id}`);
    return this.store.transact(async (tx) => {
      const { row, access } = await this.readable(actor, messageId, tx.em, true);
      if (row.sender_id !== actor.id && !can(access.role, 'deleteOthers', access.room.kind)) {
        throw forbidden("only the author or a moderator can delete a message");
      }
      if (row.deleted_at) return this.mapper.fromRow(row);
      // Lock order everywhere: message rows (a reply before its root), then the room's seq. Locking the
      // root only after the seq deadlocked with edits, reactions and replies on the root.
      if (row.reply_to_id) await sql(tx.em, 'select 1 from message where id = ? for update', [row.reply_to_id]);
      let message: MessageDto | undefined;
      await tx.append(row.room_id, async () => {
        const rows = await sql(tx.em, `update message set deleted_at = now(), deleted_by = ? where id = ? returning ${MESSAGE_RETURNING}`, [
          actor.id,
          messageId,
        ]);
        if (row.reply_to_id) {
          // The root's summary counts live replies only: its last reply time falls back to the latest one left.
          await sql(
            tx.em,
            `update message set reply_count = greatest(reply_count - 1, 0),
                    last_reply_at = (select max(r.created_at) from message r where r.reply_to_id = ? and r.deleted_at is null)
              where id = ?`,
            [row.reply_to_id, row.reply_to_id],
          );
        }
        await this.inbox.redactMentions(tx.em, actor.tenant, row.mentions ?? [], messageId);
        message = this.mapper.fromRow(legacyMessageRows(rows)[0]!);
        return { type: 'message.deleted', roomId: row.room_id, message };
      });
      return message!;
    });
  }

  /** Adds my reaction (idempotent: a repeat changes nothing and takes no seq). */
  async react(actor: Actor, messageId: string, emoji: string): Promise<MessageDto> {
    return this.reaction(actor, messageId, emoji, true);
  }

  async unreact(actor: Actor, messageId: string, emoji: string): Promise<MessageDto> {
    return this.reaction(actor, messageId, emoji, false);
  }

  private async reaction(actor: Actor, messageId: string, emoji: string, add: boolean): Promise<MessageDto> {
    await this.deps.limits.consume('action', `${actor.tenant}:${actor.id}`);
    return this.store.transact(async (tx) => {
      // Locked like edit and delete: a concurrent delete commits first (and this sees the message
      // deleted) or waits; without the lock a reaction could land on a message deleted meanwhile.
      const { row } = await this.readable(actor, messageId, tx.em, true);
      if (row.deleted_at) throw badRequest('cannot react to a deleted message');
      await this.access.requireAccess(actor, row.room_id, 'send', tx.em);
      const changed = add
        ? await sql(
            tx.em,
            'insert into reaction (message_id, user_id, emoji, created_at) values (?, ?, ?, now()) on conflict do nothing returning emoji',
            [messageId, actor.id, emoji],
          )
        : await sql(tx.em, 'delete from reaction where message_id = ? and user_id = ? and emoji = ? returning emoji', [messageId, actor.id, emoji]);
      if (changed.length) {
        const type = add ? 'reaction.added' : 'reaction.removed';
        // The event carries the message's reactions after this change (read under the seq lock), so
        // clients set them instead of adding deltas: a message event replayed from PostgreSQL (or a
        // history page) already holds the current reactions, and deltas on top would count twice.
        await tx.append(row.room_id, async () => {
          const reactions = (await loadReactions(tx.em, [messageId], null)).get(messageId) ?? [];
          return { type, roomId: row.room_id, messageId, userId: actor.id, emoji, reactions };
        });
      }
      return (await this.mapper.many(tx.em, [row], actor.id))[0]!;
    });
  }

  /**
   * A page of history, always in ascending seq. No cursor: the newest page. `beforeSeq` pages back,
   * `afterSeq` pages forward; both together give the messages strictly between them.
   */
  async history(actor: Actor, input: HistoryInput): Promise<{ messages: MessageDto[]; hasMore: boolean }> {
    const limit = input.limit ?? HISTORY_DEFAULT_LIMIT;
    if (limit < 1 || limit > HISTORY_MAX_LIMIT) throw badRequest(`limit must be between 1 and ${HISTORY_MAX_LIMIT}`);
    await this.access.requireMember(actor, input.roomId);
    const conds = ['m.room_id = ?'];
    const params: unknown[] = [input.roomId];
    if (input.afterSeq != null) {
      conds.push('m.seq > ?');
      params.push(input.afterSeq);
    }
    if (input.beforeSeq != null) {
      conds.push('m.seq < ?');
      params.push(input.beforeSeq);
    }
    const forward = input.afterSeq != null;
    const em = fork(this.deps);
    const rows = await sql(em, `select ${MESSAGE_COLUMNS} from message m where ${conds.join(' and ')} order by m.seq ${forward ? 'asc' : 'desc'} limit ?`, [
      ...params,
      limit + 1,
    ]);
    const hasMore = rows.length > limit;
    const page = rows.slice(0, limit);
    if (!forward) page.reverse();
    return { messages: await this.mapper.many(em, legacyMessageRows(page), actor.id), hasMore };
  }

  /** The replies to a message (ascending seq), with the root. */
  async thread(actor: Actor, input: { messageId: string; afterSeq?: number | null | undefined; limit?: number | null | undefined }) {
    const limit = input.limit ?? HISTORY_DEFAULT_LIMIT;
    const em = fork(this.deps);
    const { row } = await this.readable(actor, input.messageId, em);
    const rows = await sql(em, `select ${MESSAGE_COLUMNS} from message m where m.reply_to_id = ? and m.seq > ? order by m.seq asc limit ?`, [
      input.messageId,
      input.afterSeq ?? 0,
      limit + 1,
    ]);
    const [root] = await this.mapper.many(em, [row], actor.id);
    return { root: root!, replies: await this.mapper.many(em, legacyMessageRows(rows.slice(0, limit)), actor.id), hasMore: rows.length > limit };
  }

  /**
   * Full-text search over the rooms the caller belongs to, ranked, with a highlighted snippet.
   * Deleted messages never match; encrypted rooms are skipped (and counted in the answer).
   */
  async search(actor: Actor, input: { query: string; roomId?: string | null | undefined; limit?: number | null | undefined }) {
    const limit = input.limit ?? 20;
    if (input.roomId) await this.access.requireMember(actor, input.roomId);
    const em = fork(this.deps);
    const roomFilter = input.roomId ? 'and r.id = ?' : '';
    const params: unknown[] = [MARK_START + MARK_STOP, HEADLINE_OPTIONS, input.query, actor.id, actor.tenant];
    if (input.roomId) params.push(input.roomId);
    const rows = await sql(
      em,
      `select ${MESSAGE_COLUMNS}, r.name as room_name, ts_rank(m.search, q) as rank,
              ts_headline('simple', translate(m.body, ?, ''), q, ?) as marked
         from websearch_to_tsquery('simple', ?) q,
              message m
         join room r on r.id = m.room_id
         join membership mb on mb.room_id = m.room_id and mb.user_id = ?
        where r.tenant = ? and not r.encrypted ${roomFilter} and m.search @@ q
        order by rank desc, m.seq desc limit ?`,
      [...params, limit],
    );
    const skipped = await sql<{ n: string }>(
      em,
      `select count(*) as n from membership mb join room r on r.id = mb.room_id
        where mb.user_id = ? and r.tenant = ? and r.encrypted ${roomFilter}`,
      input.roomId ? [actor.id, actor.tenant, input.roomId] : [actor.id, actor.tenant],
    );
    const messages = await this.mapper.many(em, legacyMessageRows(rows), actor.id);
    const hits: SearchHit[] = rows.map((r, i) => ({
      message: messages[i]!,
      roomId: r.room_id,
      roomName: r.room_name,
      rank: Number(r.rank),
      snippet: buildSnippet(r.marked),
    }));
    return { hits, skippedEncryptedRooms: Number(skipped[0]?.n ?? 0) };
  }
}
