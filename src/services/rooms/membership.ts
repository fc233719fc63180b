import type { Actor } from '../../domain/actor.js';
import { badRequest, forbidden, notFound } from '../../domain/errors.js';
import { outranks } from '../../domain/permissions.js';
import { bannedAmong, memberRole, successor } from '../../store/members.js';
import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import type { Logger } from '../../logger.js';
import { systemMessage } from '../system-message.js';
import { changeMember, dropMember, joinMember } from './member-changes.js';
import { auditModeration, recordModeration } from './moderation.js';

/** Joining and leaving rooms: adding and removing members, leaving (with the owner's hand-over). */
export class RoomMembership {
  constructor(
    private readonly log: Logger,
    private readonly access: AccessService,
    private readonly store: Store,
  ) {}

  async addMembers(actor: Actor, roomId: string, userIds: string[]): Promise<{ added: string[] }> {
    const added: string[] = [];
    await this.store.transact(async (tx) => {
      const access = await this.access.requirePermission(actor, roomId, 'addMembers', tx.em);
      // Sorted: rows of several users are always locked in the same order.
      const unique = [...new Set(userIds)].sort();
      const banned = await bannedAmong(tx, roomId, unique);
      if (banned.length) throw forbidden(`banned from this room: ${banned.join(', ')} (unban first)`);
      for (const u of unique) {
        if (await joinMember(tx, actor, roomId, u, 'member', { name: access.room.name, kind: access.room.kind })) {
          added.push(u);
          await systemMessage(tx, actor, roomId, `${actor.name} added ${u}`);
          await recordModeration(tx, 'member.add', actor, roomId, u);
        }
      }
    });
    return { added };
  }

  async removeMember(actor: Actor, roomId: string, userId: string): Promise<void> {
    if (userId === actor.id) throw badRequest('use room.leave to leave a room');
    await this.store.transact(async (tx) => {
      const access = await this.access.requirePermission(actor, roomId, 'removeMember', tx.em);
      const target = await memberRole(tx, roomId, userId);
      if (!target) throw notFound('member');
      if (!outranks(access.role, target)) throw forbidden(`a ${access.role} cannot remove a ${target}`);
      await dropMember(tx, roomId, userId, 'removed', actor.id);
      await systemMessage(tx, actor, roomId, `${actor.name} removed ${userId}`);
      await recordModeration(tx, 'member.remove', actor, roomId, userId, { role: target });
    });
    auditModeration(this.log, 'remove', actor, roomId, userId);
  }

  async leave(actor: Actor, roomId: string): Promise<void> {
    await this.store.transact(async (tx) => {
      const access = await this.access.requireMember(actor, roomId, tx.em);
      if (!access.member) throw badRequest('you are not a member of this room');
      if (access.room.kind === 'direct') throw badRequest('a direct room cannot be left');
      await dropMember(tx, roomId, actor.id, 'left', actor.id);
      if (access.role === 'owner') {
        // Hand ownership to the longest-standing remaining member of the highest role.
        const next = await successor(tx, roomId);
        if (next && next.role !== 'owner') await changeMember(tx, roomId, next.userId, { role: 'owner' }, actor.id);
      }
      await systemMessage(tx, actor, roomId, `${actor.name} left`);
    });
  }
}
