import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { sql } from 'kysely';
import type { AuditAction } from '../domain/audit.js';
import { notFound, roomArchived } from '../domain/errors.js';
import {
  type AttachmentDto,
  type CardDto,
  type DurableRoomEvent,
  type InboxItem,
  type JsonObject,
  type MessageDto,
  type ThreadSummary,
  writesContent,
} from '../domain/events.js';
import { keyOf } from '../domain/ids.js';
import type { DistributiveOmit } from '../util/types.js';
import { type Db, type Em, kysely } from './database.js';
import { MESSAGE_FIELDS, type MessageRow } from './message-row.js';
import { enqueue, type PushItem, type QueuedMessage, type QueueSettings, recipientsOf } from './notify.js';
import { insertOutbox, logEventId } from './webhooks.js';

/** An entry of the audit trail (`Tx.audit`); `data` never holds message bodies or secrets. */
export interface NewAuditEvent {
  tenant: string;
  actorId: string;
  action: AuditAction;
  roomId?: string | null | undefined;
  targetId?: string | null | undefined;
  data?: Record<string, unknown> | undefined;
}

export type NewRoomEvent = DistributiveOmit<DurableRoomEvent, 'seq'>;
export type NewInboxItem = DistributiveOmit<InboxItem, 'seq'>;
type WithSeq<E> = E & { seq: number };
/** Work for after commit (a publish). */
export type Job = () => Promise<void>;

/** Where committed changes go (the bus). Called only after commit, in the order of the changes. */
export interface Publisher {
  room(event: DurableRoomEvent): Promise<void>;
  inbox(tenant: string, userId: string, item: InboxItem): Promise<void>;
}

/** What a transaction needs besides its EntityManager. */
export interface TxContext {
  publisher: Publisher;
  /** Builds the public shape of a written message (decrypts, hides deleted content). */
  toMessage(row: MessageRow): MessageDto;
  /** A job after commit failed (a publish): logged; subscribers fill the gap from PostgreSQL. */
  onJobError(err: unknown): void;
  /** After a commit that wrote webhook outbox rows (wakes the delivery worker). */
  onOutbox?(): void;
  /**
   * The notification queue (web push, e-mail digests): inbox items that may reach someone who is away
   * (mentions, meeting invites, notifications) are queued in their own transaction. Null: nothing queued.
   */
  notifyQueue?(): QueueSettings | null;
  /** After a commit that queued notifications (wakes the notification worker). */
  onNotify?(): void;
  /**
   * A transaction run with `retry` failed on a deadlock or a serialization failure and runs again
   * (`attempt`: the one that failed): logged and counted.
   */
  onRetry?(err: unknown, attempt: number): void;
}

/**
 * A check that runs once the transaction holds a room's row lock (`Tx.whenRoomLocked`), given the
 * room's `access_version` as read under that lock; throwing refuses the change (it rolls back).
 */
export type RoomLockCheck = (accessVersion: number) => Promise<void>;

/** The push queue's item for an inbox item that may reach someone who is away, or null. */
function pushItemOf(tenant: string, userId: string, item: NewInboxItem): PushItem | null {
  const base = { tenant, userId, messageId: null, messageSeq: null, title: null, url: null };
  switch (item.type) {
    case 'mention':
      return { ...base, roomId: item.roomId, kind: 'mention', messageId: item.messageId, messageSeq: item.messageSeq, fromUser: item.from };
    case 'meeting.invite':
      return { ...base, roomId: item.roomId, kind: 'meeting.invite', fromUser: item.from, title: item.title, url: item.url };
    case 'notification':
      return { ...base, roomId: null, kind: 'notification', fromUser: item.from, title: item.title };
    default:
      return null;
  }
}

/** A new message written by `appendMessage` (its body already sealed when the room is encrypted). */
export interface NewMessageRow {
  id: string;
  roomId: string;
  tenant: string;
  senderId: string;
  clientId: string | null;
  body: string;
  keyId: string | null;
  kind: MessageDto['kind'];
  attachments: AttachmentDto[];
  replyToId: string | null;
  mentions: string[];
  metadata?: JsonObject | null | undefined;
  card?: CardDto | null | undefined;
}

/** A jsonb value for the typed query builder (node-postgres would send a JS array as a SQL array). */
export function jsonb<T>(value: T) {
  return sql<T>`${JSON.stringify(value)}::jsonb`;
}

/** Users per statement of `appendInboxMany`: far below PostgreSQL's 65,535 bind parameters. */
const INBOX_SLICE = 1000;

/** The database's clock (the transaction's start), as every write of this schema uses. */
export const now = () => sql<Date>`now()`;

/**
 * One durable change: the only owner of room sequence numbers, inbox sequence numbers and the
 * publish after commit. Services never take a seq or publish a durable event themselves.
 *
 * Lock order (what keeps concurrent writers free of deadlocks, enforced here):
 * 1. message rows that the change reads for update (`lockForUpdate`; a reply before its root),
 *    then uploaded file rows (a send's files, a preview's file: src/store/files.ts),
 * 2. the room row, taken by the first `append*` of that room: its `last_seq` row lock is held until
 *    commit, so commit order equals seq order within a room; the access checked before it is checked
 *    again under it when the room's access changed in between (`whenRoomLocked`). A change that
 *    writes memberships, bans or the room's own row takes it with `lockRoom` first, after the
 *    membership rows it locks and before those writes (their triggers lock the room row too),
 * 3. inbox cursors, several users always in user id order,
 * 4. notification queue rows (src/store/notify.ts): written last, just before commit, in key order
 *    (`flushQueue`); the grouped send's statement writes its rows after its room locks too.
 * An advisory lock (`advisoryLock`: a quota, a cap) is taken before the rows it guards are read, at
 * most one per transaction.
 * Locking a message row after a room's seq was taken throws: it deadlocked with edits, reactions and
 * replies, which lock the message first. Batches that lock many messages in id order (re-encryption,
 * erasure) can still cross a reply's delete (the reply, then its root): those run with `transact`'s
 * `retry`, and PostgreSQL's deadlock detection picks the one that runs again.
 */
export class Tx {
  /** The typed query builder bound to this transaction. */
  readonly db: Db;
  private readonly jobs: Job[] = [];
  private seqTaken = false;
  /** The tenant of each room whose row this transaction locked (read under the lock: `lockRoom`, `nextSeq`). */
  private readonly tenants = new Map<string, string>();
  private outboxWritten = false;
  /** Notification queue rows to write before commit (`flushQueue`). */
  private readonly queuedItems: PushItem[] = [];
  private readonly queuedMessages: QueuedMessage[] = [];
  /** Checks waiting for a room's row lock (`whenRoomLocked`). */
  private readonly lockChecks = new Map<string, RoomLockCheck[]>();

  constructor(
    /** The transaction's EntityManager (entities, QueryBuilder). */
    readonly em: Em,
    private readonly ctx: TxContext,
  ) {
    this.db = kysely(em);
  }

  /**
   * Takes a transaction-scoped advisory lock on the key of `parts` (joined by `keyOf`, so no two
   * different lists of parts share a key), held until commit or rollback. It serializes a count and
   * the write it allows (a quota, a cap per tenant or per user) against the same check in concurrent
   * transactions: each waits for the one before to commit, then counts what it wrote. Take it first
   * in the transaction, before the rows it guards are read; the first part names the rule.
   */
  async advisoryLock(...parts: [string, ...string[]]): Promise<void> {
    await sql`select pg_advisory_xact_lock(hashtextextended(${keyOf(...parts)}, 0))`.execute(this.db);
  }

  /**
   * Guards a row lock of step 1 of the lock order; store modules call it before `FOR UPDATE` on a
   * message row.
   */
  lockForUpdate(what: string): void {
    if (this.seqTaken) throw new Error(`lock order: ${what} must be locked before a room's seq is taken`);
  }

  /**
   * Runs `check` once this transaction holds the room's row lock: in the first `append*` of the room,
   * right after its seq is taken and before anything is written with it, given the room's
   * `access_version` read under that lock. An access check made before the lock (src/services/access.ts
   * `requireInTx`) compares it with the version it saw: a membership, role, mute, ban or room change
   * committed in between bumped it, and the check decides again under the lock. What decides is the
   * caller's; this only calls back. Register before the room's lock is taken (`lockRoom`, or its seq).
   */
  whenRoomLocked(roomId: string, check: RoomLockCheck): void {
    if (this.tenants.has(roomId)) throw new Error(`a check under the lock of room ${roomId} must be registered before its lock is taken`);
    const checks = this.lockChecks.get(roomId);
    if (checks) checks.push(check);
    else this.lockChecks.set(roomId, [check]);
  }

  /**
   * Takes the room's row lock now, without a seq, and runs the checks registered with `whenRoomLocked`
   * under it. For a change decided on the room's access that writes it before its first `append*`
   * (a membership, role, mute or ban: their triggers take this lock with their write; the room's own
   * row) or that appends nothing (an unban, a retention change, a deletion, a meeting's invites): a
   * check at the first `append*` would come after the change's own writes, and see them, or never
   * come. Call it after the membership rows the change locks and before its first write of the
   * room's access; later `append*` of the room run no checks again. NOT_FOUND when the room is gone.
   */
  async lockRoom(roomId: string): Promise<void> {
    if (this.tenants.has(roomId)) return;
    // Held from here on as after a seq: no message row may be locked after it (lock order).
    this.seqTaken = true;
    const row = await this.db.selectFrom('room').select(['tenant', 'access_version']).where('id', '=', roomId).forNoKeyUpdate().executeTakeFirst();
    if (!row) throw notFound('room');
    this.tenants.set(roomId, row.tenant);
    await this.runLockChecks(roomId, Number(row.access_version));
  }

  private async runLockChecks(roomId: string, accessVersion: number): Promise<void> {
    const checks = this.lockChecks.get(roomId);
    if (!checks) return;
    this.lockChecks.delete(roomId);
    for (const check of checks) await check(accessVersion);
  }

  /**
   * Takes the room's next seq (locking its row until the transaction ends) and reads, under that
   * lock, whether the room is archived and its access version: the access check before may have seen
   * it writable, or seen a membership that is gone. The checks registered with `whenRoomLocked` run
   * here, before the seq is used. NOT_FOUND when the room is gone.
   */
  private async nextSeq(roomId: string): Promise<{ seq: number; archived: boolean }> {
    this.seqTaken = true;
    const row = await this.db
      .updateTable('room')
      .set((eb) => ({ last_seq: eb('last_seq', '+', 1), updated_at: now() }))
      .where('id', '=', roomId)
      .returning(['last_seq', 'tenant', 'archived_at', 'access_version'])
      .executeTakeFirst();
    // Deleted since the caller's check (which reads without the room's lock): the room is gone.
    if (!row) throw notFound('room');
    this.tenants.set(roomId, row.tenant);
    await this.runLockChecks(roomId, Number(row.access_version));
    return { seq: row.last_seq, archived: row.archived_at !== null };
  }

  /** Writes the log row and, in the same statement, the webhook outbox rows of the event. */
  private async record(roomId: string, seq: number, type: DurableRoomEvent['type'], messageId: string | null, data: object): Promise<void> {
    const tenant = this.tenants.get(roomId)!;
    const logRow = { room_id: roomId, seq, type, message_id: messageId, data: jsonb(data as Record<string, unknown>), created_at: now() };
    this.outboxed(await insertOutbox(this.db, { tenant, roomId, type, eventId: logEventId(roomId, seq), seq, data: null }, logRow));
  }

  /**
   * Reports an event that is not in a room's log (`room.created`, `meeting.started`, ...) to the
   * tenant's webhooks: outbox rows in this transaction, delivered after commit.
   */
  async webhookEvent(e: { tenant: string; roomId: string; type: string; data: Record<string, unknown> }): Promise<void> {
    this.outboxed(await insertOutbox(this.db, { ...e, eventId: randomUUID(), seq: null }));
  }

  private outboxed(rows: number): void {
    if (rows === 0 || this.outboxWritten) return;
    this.outboxWritten = true;
    this.afterCommit(async () => this.ctx.onOutbox?.());
  }

  /**
   * Appends a durable room event: takes the room's next seq, writes the event's log row (a message
   * event points at its message row, so a replay shows the message as it is then; its other fields,
   * a reply deletion's `thread`, are kept as they are at this event) and publishes it after commit.
   * Given a function, the event is computed once the seq (so the room's lock) is held.
   */
  append<E extends NewRoomEvent>(event: E): Promise<WithSeq<E>>;
  append<E extends NewRoomEvent>(roomId: string, compute: (seq: number) => Promise<E>): Promise<WithSeq<E>>;
  async append<E extends NewRoomEvent>(a: E | string, compute?: (seq: number) => Promise<E>): Promise<WithSeq<E>> {
    return this.appendEvent(a, compute, false);
  }

  /**
   * `append` of an erasure (`admin.eraseUser`): allowed in archived rooms too, since an archive
   * keeps the room read-only for its members, not for the tenant's legal obligations.
   */
  appendErasure<E extends NewRoomEvent>(roomId: string, compute: (seq: number) => Promise<E>): Promise<WithSeq<E>> {
    return this.appendEvent(roomId, compute, true);
  }

  private async appendEvent<E extends NewRoomEvent>(a: E | string, compute: ((seq: number) => Promise<E>) | undefined, evenIfArchived: boolean): Promise<WithSeq<E>> {
    const roomId = typeof a === 'string' ? a : a.roomId;
    const { seq, archived } = await this.nextSeq(roomId);
    const event = typeof a === 'string' ? await compute!(seq) : a;
    if (event.roomId !== roomId) throw new Error('an event computed under a room lock must belong to that room');
    // What a computed event wrote meanwhile (a reaction row) goes with the rollback.
    if (archived && !evenIfArchived && writesContent(event.type)) throw roomArchived();
    const full = { ...event, seq } as WithSeq<E>;
    if ('message' in event) {
      const { type, roomId: _room, message, ...data } = event;
      await this.record(roomId, seq, type, message.id, data);
    } else {
      const { type, roomId: _room, ...data } = event as NewRoomEvent & Record<string, unknown>;
      await this.record(roomId, seq, type, null, data);
    }
    this.afterCommit(() => this.ctx.publisher.room(full as DurableRoomEvent));
    return full;
  }

  /**
   * Writes a new message with the room's next seq and its `message.new` event (published after
   * commit). An archived room (read under the room's lock) takes none, except with `evenIfArchived`:
   * the server's notice of a change an archived room still takes (members added, removed, banned or
   * leaving, a rename, a meeting's start or end; src/services/system-message.ts). A reply's `thread`
   * (its root's summary with it, counted before) is kept with the event and published with it.
   */
  async appendMessage(m: NewMessageRow, opts: { evenIfArchived?: boolean; thread?: ThreadSummary | null } = {}): Promise<MessageDto> {
    const { seq, archived } = await this.nextSeq(m.roomId);
    if (archived && !opts.evenIfArchived) throw roomArchived();
    const extra = opts.thread ? { thread: opts.thread } : {};
    await this.record(m.roomId, seq, 'message.new', m.id, extra);
    const row = await this.db
      .insertInto('message')
      .values({
        id: m.id,
        room_id: m.roomId,
        tenant: m.tenant,
        seq,
        sender_id: m.senderId,
        client_id: m.clientId,
        body: m.body,
        key_id: m.keyId,
        kind: m.kind,
        attachments: jsonb(m.attachments),
        reply_to_id: m.replyToId,
        mentions: jsonb(m.mentions),
        metadata: m.metadata ? jsonb(m.metadata) : null,
        card: m.card ? jsonb(m.card) : null,
        created_at: now(),
      })
      .returning(MESSAGE_FIELDS)
      .executeTakeFirstOrThrow();
    if (m.kind !== 'system') this.queuedMessages.push({ roomId: m.roomId, messageId: m.id, seq, senderId: m.senderId, replyToId: m.replyToId, mentions: m.mentions });
    const message = this.ctx.toMessage(row);
    const event: DurableRoomEvent = { type: 'message.new', roomId: m.roomId, seq, message, ...extra };
    this.afterCommit(() => this.ctx.publisher.room(event));
    return message;
  }

  /**
   * Writes the notification queue rows of this transaction (src/store/notify.ts), last, just before
   * commit (`transact` calls it): for the inbox items that may reach someone who is away (mentions,
   * meeting invites, notifications) and for the new messages written here (a reply, a message with
   * mentions: the other member of a direct room, the thread's writers, members who set the room to
   * `all`; plain messages are queued by the grouped send's statement the same way). Last, in key
   * order, in every transaction: queue rows never sit between other locks, so they add no deadlock.
   */
  async flushQueue(): Promise<void> {
    const queue = this.ctx.notifyQueue?.() ?? null;
    const items = this.queuedItems.splice(0);
    const messages = this.queuedMessages.splice(0);
    if (queue === null || (items.length === 0 && messages.length === 0)) return;
    if (messages.length > 0) {
      for (const r of await recipientsOf(this.db, messages)) {
        const m = messages[r.i]!;
        items.push({
          tenant: r.tenant,
          userId: r.user_id,
          roomId: m.roomId,
          kind: r.reason,
          messageId: m.messageId,
          messageSeq: m.seq,
          fromUser: m.senderId,
          title: null,
          url: null,
        });
      }
    }
    if ((await enqueue(this.db, items, queue)) > 0) this.afterCommit(async () => this.ctx.onNotify?.());
  }

  /** Appends an item to a user's inbox with the user's next inbox seq; published after commit. */
  async appendInbox<I extends NewInboxItem>(tenant: string, userId: string, item: I): Promise<WithSeq<I>> {
    const [full] = await this.appendInboxMany(tenant, [userId], item);
    return full!;
  }

  /**
   * Appends the same item to several users' inboxes (a meeting invite to a whole room, the mentions
   * of a message): each user gets their own next seq; cursors are taken in user id order, and the
   * items come back in that order.
   */
  async appendInboxMany<I extends NewInboxItem>(tenant: string, userIds: string[], item: I): Promise<WithSeq<I>[]> {
    const users = [...new Set(userIds)].sort();
    if (users.length === 0) return [];
    const { type, ...data } = item;
    const payload = jsonb(data);
    const cursors: { user_id: string; last_seq: number }[] = [];
    // In slices, in user id order (the cursors' lock order): one statement for a whole large room
    // would pass PostgreSQL's 65,535 bind parameters per statement (5 per user below).
    for (let i = 0; i < users.length; i += INBOX_SLICE) {
      const slice = users.slice(i, i + INBOX_SLICE);
      const taken = await this.db
        .insertInto('inbox_cursor')
        .values(slice.map((u) => ({ tenant, user_id: u, last_seq: 1 })))
        .onConflict((oc) => oc.columns(['tenant', 'user_id']).doUpdateSet((eb) => ({ last_seq: eb('inbox_cursor.last_seq', '+', 1) })))
        .returning(['user_id', 'last_seq'])
        .execute();
      await this.db
        .insertInto('inbox_event')
        .values(taken.map((c) => ({ tenant, user_id: c.user_id, seq: c.last_seq, type, data: payload, created_at: now() })))
        .execute();
      cursors.push(...taken);
    }
    if (pushItemOf(tenant, users[0]!, item) !== null) for (const u of users) this.queuedItems.push(pushItemOf(tenant, u, item)!);
    const byUser = new Map(cursors.map((c) => [c.user_id, { ...item, seq: c.last_seq } as WithSeq<I>]));
    this.afterCommit(async () => {
      await Promise.all([...byUser].map(([userId, full]) => this.ctx.publisher.inbox(tenant, userId, full as InboxItem)));
    });
    return users.map((u) => byUser.get(u)!);
  }

  /**
   * Records an administrative action in the tenant's durable audit trail (`audit_event`), in this
   * transaction: it commits or rolls back with the action it records. The one writer of that table.
   */
  async audit(e: NewAuditEvent): Promise<void> {
    await this.db
      .insertInto('audit_event')
      .values({
        id: randomUUID(),
        tenant: e.tenant,
        // Millisecond precision, so a JavaScript Date holds it exactly (admin.audit's cursor).
        at: sql<Date>`date_trunc('milliseconds', clock_timestamp())`,
        actor_id: e.actorId,
        action: e.action,
        room_id: e.roomId ?? null,
        target_id: e.targetId ?? null,
        data: jsonb(e.data ?? {}),
      })
      .execute();
  }

  /** Schedules work for after commit (in order; dropped if the transaction rolls back). */
  afterCommit(job: Job): void {
    this.jobs.push(job);
  }

  /**
   * Starts the committed transaction's jobs in order without waiting on each other: local delivery
   * is synchronous and the broker publishes go out in order on one connection.
   */
  committed(): void {
    for (const job of this.jobs) void job().catch((err: unknown) => this.ctx.onJobError(err));
  }
}

/** How `transact` runs its callback. */
export interface TransactOptions {
  /**
   * Runs the callback again, in a new transaction with a new Tx, when PostgreSQL aborts it for a
   * deadlock (40P01) or a serialization failure (40001): at most `TRANSACT_ATTEMPTS` attempts, a
   * short jittered pause before each new one. Only for callbacks whose every effect is in the
   * transaction or scheduled with `afterCommit` (a failed attempt leaves nothing behind: no publish,
   * no seq, no queued job), and whose results are taken from the committed attempt only.
   */
  retry?: boolean;
}

/** Attempts of a `transact` with `retry`. */
export const TRANSACT_ATTEMPTS = 3;

/** PostgreSQL's deadlock_detected (40P01) and serialization_failure (40001): the transaction may simply run again. */
export function isTransientConflict(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '40P01' || code === '40001';
}

/** The pause before attempt `attempt + 1`: a few milliseconds, doubled per attempt, jittered so the two sides of a deadlock do not meet again. */
const retryPause = (attempt: number) => Math.round(5 * 2 ** (attempt - 1) * (0.5 + Math.random()));

/**
 * Runs `fn` in a transaction on a fresh EntityManager; what it appended is published after commit.
 * A retried callback starts with a new Tx (nothing of the failed attempt is published).
 */
export async function transact<T>(root: Em, ctx: TxContext, fn: (tx: Tx) => Promise<T>, opts: TransactOptions = {}): Promise<T> {
  const attempts = opts.retry ? TRANSACT_ATTEMPTS : 1;
  for (let attempt = 1; ; attempt++) {
    let tx: Tx | undefined;
    let result: T;
    try {
      result = await root.fork().transactional(async (em) => {
        const t = new Tx(em as Em, ctx);
        tx = t;
        const out = await fn(t);
        // The notification queue's rows, last (lock order, see Tx).
        await t.flushQueue();
        return out;
      });
    } catch (err) {
      if (attempt >= attempts || !isTransientConflict(err)) throw err;
      ctx.onRetry?.(err, attempt);
      await delay(retryPause(attempt));
      continue;
    }
    tx?.committed();
    return result;
  }
}
