import type { Actor } from '../../domain/actor.js';
import { badRequest, forbidden, notFound } from '../../domain/errors.js';
import { outranks } from '../../domain/permissions.js';
import { bannedAmong, memberRole } from '../../store/members.js';
import type { Store } from '../../store/store.js';
import type { RoomAccess } from '../../domain/rooms.js';
import type { AccessService } from '../access.js';
import type { Logger } from '../../logger.js';
import type { VideoRemovals } from '../meetings/removals.js';
import { systemMessage } from '../system-message.js';
import { dropMember, joinMember, keepAnOwner } from './member-changes.js';
import { actOnMember, auditModeration, RETRY, recordModeration } from './moderation.js';

/** Joining and leaving rooms: adding and removing members, leaving (with the owner's hand-over). */
export class RoomMembership {
  constructor(
    private readonly log: Logger,
    private readonly access: AccessService,
    private readonly store: Store,
    /** Takes a removed member out of the room's meetings on the provider (queued with the removal). */
    private readonly removals: VideoRemovals,
  ) {}

  async addMembers(actor: Actor, roomId: string, userIds: string[]): Promise<{ added: string[] }> {
    const added = await this.store.transact(async (tx) => {
      const access = await this.access.requirePermissionInTx(tx, actor, roomId, 'addMembers');
      // Held to under the room's lock, taken before the first membership is written; the bans are
      // read under it too, so a ban committed meanwhile is seen. The new rows come after it: a
      // self-join of one of the users at the same moment (its row, then the room's) may deadlock
      // with this, which then runs again (RETRY: the added users are the committed attempt's).
      await tx.lockRoom(roomId);
      // Sorted: rows of several users are always locked in the same order.
      const unique = [...new Set(userIds)].sort();
      const banned = await bannedAmong(tx, roomId, unique);
      if (banned.length) throw forbidden(`banned from this room: ${banned.join(', ')} (unban first)`);
      const joined: string[] = [];
      for (const u of unique) {
        if (await joinMember(tx, actor, roomId, u, 'member', { name: access.room.name, kind: access.room.kind })) {
          joined.push(u);
          await systemMessage(tx, actor, roomId, `${actor.name} added ${u}`);
          await recordModeration(tx, 'member.add', actor, roomId, u);
        }
      }
      if (joined.length > 0) await keepAnOwner(tx, roomId, actor.id);
      return joined;
    }, RETRY);
    return { added };
  }

  /**
   * Removes a member. Their removal from the room's meetings not ended is queued in the same
   * transaction and sent to the provider after commit, retried until it answers
   * (src/services/meetings/removals.ts): the answer does not wait for the provider.
   */
  async removeMember(actor: Actor, roomId: string, userId: string): Promise<void> {
    if (userId === actor.id) throw badRequest('use room.leave to leave a room');
    const queued = await this.store.transact(async (tx) => {
      // The target's row is locked (its role stays as read) before the room's, like every membership change.
      const { target } = await actOnMember(this.access, tx, actor, roomId, userId, 'removeMember', (access, role) => {
        if (!role) throw notFound('member');
        if (!outranks(access.role, role)) throw forbidden(`a ${access.role} cannot remove a ${role}`);
      });
      await dropMember(tx, roomId, userId, 'removed', actor.id);
      await systemMessage(tx, actor, roomId, `${actor.name} removed ${userId}`);
      await recordModeration(tx, 'member.remove', actor, roomId, userId, { role: target });
      return this.removals.queue(tx, { roomId, tenant: actor.tenant, userId, reason: 'removed' });
    }, RETRY);
    auditModeration(this.log, 'remove', actor, roomId, userId);
    if (queued) this.removals.wake();
  }

  /**
   * Leaves a room; an owner who leaves hands the room to the successor. Like every membership change
   * (src/store/tx.ts): the caller's own row is locked before the room's, the role is read again under
   * the room's lock (a hand-over that committed meanwhile made this caller the owner, who must then
   * hand it on in turn: the room always keeps one owner), and a deadlock runs the call again (RETRY).
   */
  async leave(actor: Actor, roomId: string): Promise<void> {
    const leaving = (access: RoomAccess) => {
      if (!access.member) throw badRequest('you are not a member of this room');
      if (access.room.kind === 'direct') throw badRequest('a direct room cannot be left');
    };
    await this.store.transact(async (tx) => {
      await this.access.requireInTx(tx, actor, roomId, 'read', { rule: leaving });
      await memberRole(tx, roomId, actor.id, true);
      await tx.lockRoom(roomId);
      const role = await memberRole(tx, roomId, actor.id);
      if (!role) throw badRequest('you are not a member of this room');
      await dropMember(tx, roomId, actor.id, 'left', actor.id);
      // Hand ownership to the longest-standing remaining member of the highest role.
      if (role === 'owner') await keepAnOwner(tx, roomId, actor.id);
      await systemMessage(tx, actor, roomId, `${actor.name} left`);
    }, RETRY);
  }
}
