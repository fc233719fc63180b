import { type Actor, isService } from '../../domain/actor.js';
import { AppError, notFound } from '../../domain/errors.js';
import type { MessageDto } from '../../domain/events.js';
import type { RoomAccess } from '../../domain/rooms.js';
import type { Em } from '../../store/database.js';
import type { MessageRow } from '../../store/message-row.js';
import type { AccessService } from '../access.js';
import type { Keyring } from '../keyring.js';

/** What a message body's ciphertext is bound to (AES-GCM associated data): its room and its id. */
export const bodyContext = (roomId: string, messageId: string) => `message:${roomId}:${messageId}`;

/** A body as stored: sealed with the keyring's active key when the room is encrypted, bound to its message. */
export function sealBody(keyring: Keyring, access: RoomAccess, body: string, messageId: string): { body: string; keyId: string | null } {
  if (!access.room.encrypted) return { body, keyId: null };
  const sealed = keyring.encrypt(body, bodyContext(access.room.id, messageId));
  return { body: sealed.text, keyId: sealed.keyId };
}

/**
 * A message the caller can read, with the caller's access to its room (in a transaction given its
 * EntityManager). No such message, or no access to its room: NOT_FOUND('message'), like rooms; the
 * caller learns nothing of a room it cannot see. Any other failure (PostgreSQL out of reach, say)
 * propagates as it is, so the caller sees it as retryable instead of a final NOT_FOUND.
 */
export async function readable(
  access: AccessService,
  actor: Actor,
  row: MessageRow | undefined,
  em?: Em,
): Promise<{ row: MessageRow; access: RoomAccess }> {
  if (!row) throw notFound('message');
  try {
    return { row, access: await access.requireMember(actor, row.room_id, em) };
  } catch (err) {
    if (err instanceof AppError && (err.code === 'NOT_FOUND' || err.code === 'FORBIDDEN')) throw notFound('message');
    throw err;
  }
}

/** A refused access to a message's room, told as the message not found (the caller learns nothing of the room). */
const hidden = (err: unknown): unknown => (err instanceof AppError && (err.code === 'NOT_FOUND' || err.code === 'FORBIDDEN') ? notFound('message') : err);

/**
 * A message the caller may edit or delete, with the access it acts with (in a transaction given
 * its EntityManager): one it can read (`readable`, `reads: true`), or a service token's own post in
 * a room of its tenant it may post in without reading it (`reads: false`, the access it posts with:
 * archived rooms and bans refuse it as they refuse its posts). Such a token changes its own posts as
 * their author, not as the room admin it posts as, and reads nothing more of the room. NOT_FOUND
 * ('message') otherwise, like `readable`.
 */
export async function changeable(
  access: AccessService,
  actor: Actor,
  row: MessageRow | undefined,
  em?: Em,
): Promise<{ row: MessageRow; access: RoomAccess; reads: boolean }> {
  try {
    return { ...(await readable(access, actor, row, em)), reads: true };
  } catch (err) {
    if (!row || row.sender_id !== actor.id || !isService(actor) || !(err instanceof AppError) || err.code !== 'NOT_FOUND') throw err;
  }
  try {
    return { row, access: await access.requireAccess(actor, row.room_id, 'send', em), reads: false };
  } catch (err) {
    throw hidden(err);
  }
}

/**
 * A service token's own post as it is answered in a room the token posts in without reading it
 * (`changeable`'s `reads: false`, a repeat of its send): what it wrote, not what the members did
 * with it. Their reactions and the thread's replies are reads of the room: left out.
 */
export function authorView(message: MessageDto): MessageDto {
  return { ...message, reactions: [], replyCount: 0, lastReplyAt: null };
}
