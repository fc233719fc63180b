import { keyOf } from '../../domain/ids.js';
import type { Actor } from '../../domain/actor.js';
import { type AppError, badRequest, forbidden, notFound } from '../../domain/errors.js';
import type { MessageDto } from '../../domain/events.js';
import { can } from '../../domain/permissions.js';
import type { RoomAccess } from '../../domain/rooms.js';
import type { MessageRow } from '../../store/message-row.js';
import { hasEditsAtLeast, lockMessage, lockMessageOfTenant, markDeleted, recordEdit, rewriteBody, uncountReply } from '../../store/messages.js';
import { removeFilesOfMessages } from '../../store/files.js';
import { addReaction, reactionCounts, reactionSummaries, removeReaction } from '../../store/reactions.js';

/** Different emoji on one message, and reactions of one user on one message, at most. */
export const MAX_REACTION_EMOJI = 50;
export const MAX_REACTIONS_PER_USER = 20;
/**
 * Earlier versions kept per message: an edit beyond it is refused. Each version is a whole body
 * (up to 4,000 characters) that `chat.edits` and every export of the message carry, and the action
 * rate limit alone would let one message gather tens of thousands of them in a day.
 */
export const MAX_EDITS_PER_MESSAGE = 100;
import type { Store } from '../../store/store.js';
import type { Tx } from '../../store/tx.js';
import type { AccessService } from '../access.js';
import type { InboxService } from '../inbox.js';
import type { Keyring } from '../keyring.js';
import type { RateLimits } from '../limits.js';
import type { MessageMapper } from '../message-dto.js';
import { authorView, changeable, readable, sealBody } from './shared.js';

/**
 * Edits, deletes and reactions run again on a deadlock: each locks a message (a deleted reply, then
 * its root) that a re-encryption or erasure batch may lock in another order, and every effect of
 * theirs is in the transaction or after commit (the file worker's wake-up, the publish).
 */
const RETRY = { retry: true } as const;

/** A refused access to the room of a message: the caller is told the message is not found (src/services/messages/shared.ts). */
const hideRoom = (err: AppError): AppError => (err.code === 'NOT_FOUND' || err.code === 'FORBIDDEN' ? notFound('message') : err);

/**
 * Changes to sent messages: edits (the author), deletes (the author or a moderator), reactions. Each
 * locks the message first, so concurrent changes of one message take their seqs one after the other.
 */
export class MessageChanges {
  constructor(
    private readonly store: Store,
    private readonly access: AccessService,
    private readonly inbox: InboxService,
    private readonly mapper: MessageMapper,
    private readonly keyring: Keyring,
    private readonly limits: RateLimits,
    private readonly wakeFiles: () => void,
  ) {}

  /** The message, locked until the transaction ends, if the caller can read it (NOT_FOUND otherwise). */
  private async lockReadable(tx: Tx, actor: Actor, messageId: string): Promise<{ row: MessageRow; access: RoomAccess }> {
    return readable(this.access, actor, await lockMessageOfTenant(tx, actor.tenant, messageId), tx.em);
  }

  /**
   * The message, locked until the transaction ends, if the caller may edit or delete it: one it can
   * read, or a service token's own post in a room it posts in without reading it (`reads: false`,
   * src/services/messages/shared.ts `changeable`). NOT_FOUND otherwise.
   */
  private async lockChangeable(tx: Tx, actor: Actor, messageId: string): Promise<{ row: MessageRow; access: RoomAccess; reads: boolean }> {
    return changeable(this.access, actor, await lockMessageOfTenant(tx, actor.tenant, messageId), tx.em);
  }

  /** Edits my message; the previous version goes to the edit history. A no-op edit takes no seq. */
  async edit(actor: Actor, messageId: string, body: string): Promise<MessageDto> {
    if (body.trim().length === 0) throw badRequest('body must not be empty (delete the message instead)');
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    return this.store.transact(async (tx) => {
      const { row, access, reads } = await this.lockChangeable(tx, actor, messageId);
      // In a room the caller cannot read, the answer is its post as written (src/services/messages/shared.ts).
      const answer = async (r: MessageRow) => (reads ? (await this.mapper.many(tx.db, [r], actor.id))[0]! : authorView(this.mapper.fromRow(r)));
      if (row.sender_id !== actor.id) throw forbidden('only the author can edit a message');
      if (row.kind === 'system') throw forbidden('system messages cannot be edited');
      if (row.deleted_at) throw badRequest('a deleted message cannot be edited');
      await this.access.requireInTx(tx, actor, row.room_id, 'send', { rule: (a) => this.access.requirePoster(a) });
      if (this.mapper.body(row.body, row.key_id, { roomId: row.room_id, messageId: row.id }) === body) return answer(row);
      if (await hasEditsAtLeast(tx, row.id, MAX_EDITS_PER_MESSAGE)) {
        throw badRequest(`a message can be edited at most ${MAX_EDITS_PER_MESSAGE} times (send a new message instead)`);
      }
      await recordEdit(tx, row, actor.id);
      const sealed = sealBody(this.keyring, access, body, row.id);
      let edited: MessageRow | undefined;
      await tx.append(row.room_id, async () => {
        edited = await rewriteBody(tx, messageId, sealed.body, sealed.keyId);
        const [broadcast] = await this.mapper.many(tx.db, [edited], null);
        return { type: 'message.edited', roomId: row.room_id, message: broadcast! };
      });
      return answer(edited!);
    }, RETRY);
  }

  /**
   * Soft-deletes a message (author, or moderator and above; a system message: moderator and above
   * only). Idempotent.
   */
  async delete(actor: Actor, messageId: string): Promise<MessageDto> {
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    return this.store.transact(async (tx) => {
      const { row, access, reads } = await this.lockChangeable(tx, actor, messageId);
      const mayDelete = (a: RoomAccess) => {
        this.access.requireWritable(a);
        // A service token that cannot read the room deletes its own posts as their author: the
        // admin role it posts with there is not a moderator's.
        const moderates = reads && can(a.role, 'deleteOthers', a.room.kind);
        // A notice's sender is the member it is about (joined, left) or who acted (added, renamed):
        // it is the room's record of that change, not their message to erase.
        if (row.kind === 'system' && !moderates) throw forbidden('only a moderator can delete a system message');
        if (row.sender_id !== actor.id && !moderates) {
          throw forbidden('only the author or a moderator can delete a message');
        }
      };
      mayDelete(access);
      const answer = (m: MessageDto) => (reads ? m : authorView(m));
      if (row.deleted_at) return answer(this.mapper.fromRow(row));
      // Held to until the room's lock: checked again there if its access changed meanwhile (a
      // moderator demoted, a member removed).
      await this.access.requireInTx(tx, actor, row.room_id, reads ? 'read' : 'send', { refused: hideRoom, rule: mayDelete });
      // Lock order: message rows (a reply before its root), then the room's seq (src/store/tx.ts).
      if (row.reply_to_id) await lockMessage(tx, row.reply_to_id);
      // Its uploaded files go with it: the file worker removes the objects after commit.
      if (row.attachments.some((a) => 'fileId' in a) && (await removeFilesOfMessages(tx.db, [messageId])) > 0) {
        tx.afterCommit(async () => this.wakeFiles());
      }
      const event = await tx.append(row.room_id, async () => {
        const deleted = await markDeleted(tx, messageId, actor.id);
        // A reply: its root's summary without it, under the root's lock, goes with the event.
        const thread = row.reply_to_id ? await uncountReply(tx, row.reply_to_id) : null;
        await this.inbox.redactMentions(tx.db, actor.tenant, row.mentions, messageId);
        return { type: 'message.deleted', roomId: row.room_id, message: this.mapper.fromRow(deleted), ...(thread ? { thread } : {}) } as const;
      });
      return answer(event.message);
    }, RETRY);
  }

  /** Adds my reaction (idempotent: a repeat changes nothing and takes no seq). */
  react(actor: Actor, messageId: string, emoji: string): Promise<MessageDto> {
    return this.reaction(actor, messageId, emoji, true);
  }

  /** Takes my reaction back (idempotent like `react`). */
  unreact(actor: Actor, messageId: string, emoji: string): Promise<MessageDto> {
    return this.reaction(actor, messageId, emoji, false);
  }

  private async reaction(actor: Actor, messageId: string, emoji: string, add: boolean): Promise<MessageDto> {
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    return this.store.transact(async (tx) => {
      // Locked like edit and delete: a concurrent delete commits first (and this sees the message
      // deleted) or waits; without the lock a reaction could land on a message deleted meanwhile.
      const { row } = await this.lockReadable(tx, actor, messageId);
      if (row.deleted_at) throw badRequest('cannot react to a deleted message');
      await this.access.requireInTx(tx, actor, row.room_id, 'send');
      const changed = add ? await addReaction(tx, messageId, actor.id, emoji) : await removeReaction(tx, messageId, actor.id, emoji);
      if (changed && add) {
        // Bounded: every history page and every reaction event carries the message's reactions.
        // Counted under the message's lock (reactions of one message are serialized by it).
        const { emojis, mine } = await reactionCounts(tx, messageId, actor.id);
        if (emojis > MAX_REACTION_EMOJI) throw badRequest(`a message has at most ${MAX_REACTION_EMOJI} different reactions`);
        if (mine > MAX_REACTIONS_PER_USER) throw badRequest(`you can add at most ${MAX_REACTIONS_PER_USER} reactions to one message`);
      }
      if (changed) {
        const type = add ? 'reaction.added' : 'reaction.removed';
        // The event carries the message's reactions after this change (read under the seq lock), so
        // clients set them instead of adding deltas: a message event replayed from PostgreSQL (or a
        // history page) already holds the current reactions, and deltas on top would count twice.
        await tx.append(row.room_id, async () => {
          const reactions = (await reactionSummaries(tx.db, [messageId], null)).get(messageId) ?? [];
          return { type, roomId: row.room_id, messageId, userId: actor.id, emoji, reactions };
        });
      }
      return (await this.mapper.many(tx.db, [row], actor.id))[0]!;
    }, RETRY);
  }
}
