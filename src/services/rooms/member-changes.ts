import type { Actor } from '../../domain/actor.js';
import type { MemberRole } from '../../domain/events.js';
import { notFound } from '../../domain/errors.js';
import { deleteMember, insertMember, type MemberChange, successor, updateMember } from '../../store/members.js';
import type { Tx } from '../../store/tx.js';

/**
 * Membership changes as durable room events, shared by the room services: each writes the
 * membership and appends its event in the caller's transaction.
 */

/**
 * Adds a member with its `member.joined` event and, given `invite`, a `room.added` inbox item for
 * the new member (never for the actor). False when the user is a member already.
 */
export async function joinMember(
  tx: Tx,
  actor: Actor,
  roomId: string,
  userId: string,
  role: MemberRole,
  invite: { name: string; kind: string } | null,
): Promise<boolean> {
  if (!(await insertMember(tx, roomId, userId, role))) return false;
  await tx.append({ type: 'member.joined', roomId, userId, role, by: actor.id });
  if (invite && userId !== actor.id) {
    await tx.appendInbox(actor.tenant, userId, { type: 'room.added', roomId, roomName: invite.name, roomKind: invite.kind, by: actor.id });
  }
  return true;
}

/** Removes a member with its `member.left` event (NOT_FOUND when not a member). */
export async function dropMember(tx: Tx, roomId: string, userId: string, reason: 'left' | 'removed' | 'banned', by: string): Promise<void> {
  if (!(await deleteMember(tx, roomId, userId))) throw notFound('member');
  await tx.append({ type: 'member.left', roomId, userId, reason, by });
}

/** Changes a membership and, when anything changed, appends `member.updated` with its new state. */
export async function changeMember(tx: Tx, roomId: string, userId: string, change: MemberChange, by: string): Promise<void> {
  const r = await updateMember(tx, roomId, userId, change);
  if (!r) throw notFound('member');
  if (!r.changed) return;
  await tx.append({ type: 'member.updated', roomId, userId, role: r.role, mutedUntil: r.mutedUntil, by });
}

/**
 * Gives a room without an owner one: its longest-standing member of the highest role becomes the
 * owner (`member.updated`). Run under the room's lock after members left (an owner leaving) or came
 * (a room its last member left is empty: whoever comes first owns it, as its creator did; a room
 * left without owner by an older version gets one with its next member). Nothing when the room has
 * an owner or no member.
 */
export async function keepAnOwner(tx: Tx, roomId: string, by: string): Promise<void> {
  const next = await successor(tx, roomId);
  if (next && next.role !== 'owner') await changeMember(tx, roomId, next.userId, { role: 'owner' }, by);
}
