import { keyOf } from '../../domain/ids.js';
import { randomUUID } from 'node:crypto';
import { type Actor, isService } from '../../domain/actor.js';
import { AppError, badRequest, conflict, notFound } from '../../domain/errors.js';
import type { AttachmentDto, CardDto, JsonObject, LinkAttachmentDto, MessageDto } from '../../domain/events.js';
import type { RoomAccess } from '../../domain/rooms.js';
import { excerpt as excerptOf } from '../../domain/text.js';
import type { Counters, Observers } from '../../metrics.js';
import { membersAmong } from '../../store/members.js';
import { countReply, isClientIdTaken, lockReplyTarget, messageByClientId } from '../../store/messages.js';
import type { AppendOutcome, NewMessage, Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import { roomArchived } from '../../domain/errors.js';
import type { AttachmentInput, FileService, PreparedAttachments } from '../files/index.js';
import type { Keyring } from '../keyring.js';
import type { RateLimits } from '../limits.js';
import type { MessageMapper } from '../message-dto.js';
import { SendBatcher } from '../send-batcher.js';
import { authorView, sealBody } from './shared.js';

export interface SendInput {
  roomId: string;
  clientId: string;
  body: string;
  /** `system` and `card`: service tokens only (the permission table, src/domain/permissions.ts). */
  kind?: MessageDto['kind'] | undefined;
  /** Uploaded files (`{ fileId }`, checked and attached once) and https links. */
  attachments?: AttachmentInput[] | undefined;
  replyToId?: string | null | undefined;
  mentions?: string[] | undefined;
  metadata?: JsonObject | null | undefined;
  /** Required with kind `card`, refused otherwise. */
  card?: CardDto | null | undefined;
}

/** Sending messages: idempotent by clientId; plain sends grouped, replies and mentions one by one. */
export class MessageSender {
  /** Plain sends, written in groups (group commit). */
  private readonly writes: SendBatcher<NewMessage, AppendOutcome>;
  /** The latest send per (tenant, sender, clientId) still running in this process. */
  private readonly sending = new Map<string, Promise<void>>();

  constructor(
    private readonly store: Store,
    private readonly access: AccessService,
    private readonly mapper: MessageMapper,
    private readonly keyring: Keyring,
    private readonly limits: RateLimits,
    private readonly counters: Counters,
    private readonly files: FileService,
    observers?: Pick<Observers, 'sendGroup'>,
  ) {
    this.writes = new SendBatcher(
      (messages) => store.appendMessages(messages),
      { maxInflight: store.sendGroupsInFlight, onGroup: observers && ((items, seconds) => observers.sendGroup(items, seconds)) },
      (outcomes) => store.publishAppended(outcomes),
    );
  }

  /**
   * Sends a message. The message and its room sequence number are written in one transaction and
   * published after commit. A repeat of the same clientId by the same sender returns the original.
   * Sends of one clientId by one sender run one after the other in this process.
   */
  send(actor: Actor, input: SendInput): Promise<MessageDto> {
    const key = `${actor.tenant}\n${actor.id}\n${input.clientId}`;
    const before = this.sending.get(key);
    const run = before !== undefined ? before.then(() => this.sendOnce(actor, input)) : this.sendOnce(actor, input);
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
      const inTransaction = input.replyToId || input.mentions?.length || hasFiles(input);
      const sent = inTransaction ? await this.sendInTransaction(actor, input) : await this.sendPlain(actor, input);
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
    // The caller must still see the room (a member, or a service token that may post in it); the
    // room archived or the caller muted since does not refuse the repeat of what went through.
    await this.access.requireAccess(actor, input.roomId, 'repeat');
    // A service token that posts in the room without reading it is answered its post as written
    // (src/services/messages/shared.ts `authorView`); everyone else who may repeat a send reads the room.
    if (isService(actor) && (await this.access.checkGrouped({ actor, roomId: input.roomId, purpose: 'read' })) instanceof AppError) {
      return authorView(original);
    }
    return original;
  }

  /** The kind's rules: who may send it (system and card: service tokens), a card exactly with kind `card`, some content. */
  private requireContent(actor: Actor, input: SendInput): void {
    if (input.kind === 'system') this.access.requireTenant(actor, 'sendSystem');
    if (input.kind === 'card') {
      this.access.requireTenant(actor, 'sendCard');
      if (!input.card) throw badRequest('a card message needs card: { title, fields, links? }');
      return;
    }
    if (input.card) throw badRequest('card is only allowed with kind "card"');
    if (input.body.trim().length === 0 && !input.attachments?.length) throw badRequest('body must not be empty');
  }

  /** The new message row of a send: a fresh id, its body sealed when the room is encrypted. */
  private draft(actor: Actor, input: SendInput, access: RoomAccess, attachments: AttachmentDto[], accessVersion: number | null = null): NewMessage {
    const id = randomUUID();
    const sealed = sealBody(this.keyring, access, input.body, id);
    return {
      id,
      roomId: input.roomId,
      tenant: actor.tenant,
      senderId: actor.id,
      clientId: input.clientId,
      body: sealed.body,
      keyId: sealed.keyId,
      kind: input.kind ?? 'text',
      attachments,
      metadata: input.metadata ?? null,
      card: input.kind === 'card' ? (input.card ?? null) : null,
      accessVersion,
    };
  }

  /**
   * A message without reply and mentions. Its rate limit and its access check run at once (the
   * limit's refusal wins, as it came first before); then it is written with whatever else is queued.
   * The access check of a sender who sent to the room from this node before is the node's cached row
   * (no query; the write verifies the room's access version under its lock, and a send found `stale`
   * is checked against the database and written again); otherwise checks and writes are each grouped
   * (see send-batcher.ts): one query checks the access of every send waiting for a check, one
   * statement writes every send waiting for a write (src/store/hot/append-messages.ts).
   */
  private async sendPlain(actor: Actor, input: SendInput): Promise<MessageDto | null> {
    this.requireContent(actor, input);
    const [limit, checked] = await Promise.allSettled([
      this.limits.consume('send', keyOf(actor.tenant, actor.id, input.roomId)),
      this.access.checkSend(actor, input.roomId),
    ]);
    if (limit.status === 'rejected') throw limit.reason;
    if (checked.status === 'rejected') throw checked.reason;
    let sendAccess = checked.value;
    for (let write = 1; ; write++) {
      if (sendAccess instanceof AppError) throw sendAccess;
      const { access, version } = sendAccess;
      this.access.requirePoster(access);
      const outcome = await this.writes.submit(this.draft(actor, input, access, linksOnly(input), version));
      if (outcome.kind !== 'stale') return this.sent(outcome);
      // The room's members, roles, mutes, bans or state changed since the row the check decided on
      // (cached, or read a moment before the write): the database decides again, and the write
      // verifies that row's version too. Changes that keep coming between check and write (a big
      // room many join) end the grouped tries: the send is then checked under the room's lock.
      this.access.forgetSend(actor, input.roomId);
      if (write >= PLAIN_WRITES) return this.writeInTransaction(actor, input);
      sendAccess = await this.access.checkSend(actor, input.roomId);
    }
  }

  /** What a plain send's write came to: the message, a repeat (null), or the error. */
  private sent(outcome: Exclude<AppendOutcome, { kind: 'stale' }>): MessageDto | null {
    if (outcome.kind === 'gone') throw notFound('room');
    if (outcome.kind === 'archived') throw roomArchived();
    if (outcome.kind === 'repeat') return null;
    this.counters.messagesSent++;
    return outcome.message;
  }

  /**
   * A reply or a message with mentions, in a transaction of its own: the parent locked first (lock
   * order, src/store/tx.ts), mentions kept for members only, the parent's thread summary, the message
   * with its seq and that summary in its event, an inbox item per mention. Null when the clientId is taken.
   */
  private async sendInTransaction(actor: Actor, input: SendInput): Promise<MessageDto | null> {
    this.requireContent(actor, input);
    await this.limits.consume('send', keyOf(actor.tenant, actor.id, input.roomId));
    return this.writeInTransaction(actor, input);
  }

  /** The transaction of `sendInTransaction` (also of a plain send found stale `PLAIN_WRITES` times). */
  private async writeInTransaction(actor: Actor, input: SendInput): Promise<MessageDto | null> {
    let message: MessageDto;
    try {
      // Run again on a deadlock (with a re-encryption or erasure batch locking the parent, say): every
      // effect is in the transaction, and a file moved from its upload key stays moved (prepare).
      message = await this.store.transact(async (tx) => {
        // Checked again under the room's lock if its access changed meanwhile (a ban, a demotion).
        const access = await this.access.requireInTx(tx, actor, input.roomId, 'send', { rule: (a) => this.access.requirePoster(a) });
        if (input.replyToId) {
          const target = await lockReplyTarget(tx, input.replyToId, input.roomId);
          if (!target) throw badRequest('replyToId does not name a message of this room');
          // Its content is gone: a reply would answer nothing and count in a deleted message's summary.
          if (target.deleted) throw badRequest('replyToId names a deleted message');
        }
        // Uploaded files: their rows locked after the parent message and before the room's seq (lock
        // order), their bytes checked (size, type sniffed) while locked, attached with the message.
        const prepared: PreparedAttachments = hasFiles(input)
          ? await this.files.prepare(tx, actor, input.roomId, input.attachments ?? [])
          : { attachments: linksOnly(input), files: [] };
        const draft = this.draft(actor, input, access, prepared.attachments);
        await this.files.attach(tx, draft.id, prepared.files);
        const mentions = input.mentions?.length
          ? (await membersAmong(tx.db, input.roomId, [...new Set(input.mentions)])).filter((u) => u !== actor.id).sort()
          : [];
        // The root's summary with this reply, counted under the root's lock: the reply's event
        // carries it (clients set it on the root, a replay gives it as it was then).
        const thread = input.replyToId ? await countReply(tx, input.replyToId) : null;
        const message = await tx.appendMessage({ ...draft, replyToId: input.replyToId ?? null, mentions }, { thread });
        // At most 140 characters, never half a surrogate pair (the inbox item is jsonb).
        const excerpt = excerptOf(input.body, 140);
        await tx.appendInboxMany(actor.tenant, mentions, {
          type: 'mention',
          roomId: input.roomId,
          messageId: message.id,
          messageSeq: message.seq,
          from: actor.id,
          excerpt: access.room.encrypted ? '' : excerpt,
        });
        return message;
      }, { retry: true });
    } catch (err) {
      // A concurrent or earlier send of the same clientId won (rolled back: no seq used up).
      if (isClientIdTaken(err)) return null;
      throw err;
    }
    this.counters.messagesSent++;
    return message;
  }

  private async findByClientId(actor: Actor, clientId: string): Promise<MessageDto | null> {
    const db = this.store.db();
    const row = await messageByClientId(db, actor.tenant, actor.id, clientId);
    return row ? (await this.mapper.many(db, [row], actor.id))[0]! : null;
  }
}

/**
 * Grouped writes of a plain send found `stale` (its access changed between check and write) before
 * it is written in a transaction of its own, checked under the room's lock.
 */
const PLAIN_WRITES = 3;

/** Whether a send attaches uploaded files (those take the per-send transaction). */
const hasFiles = (input: SendInput) => input.attachments?.some((a) => 'fileId' in a) ?? false;

/** The attachments of a send without uploaded files: links only. */
const linksOnly = (input: SendInput): LinkAttachmentDto[] => (input.attachments ?? []).filter((a): a is LinkAttachmentDto => !('fileId' in a));
