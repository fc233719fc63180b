import type { Actor } from '../../domain/actor.js';
import type { AuditAction } from '../../domain/audit.js';
import { badRequest, forbidden, notFound } from '../../domain/errors.js';
import type { MemberRole } from '../../domain/events.js';
import { outranks, ROLE_RANK, type RoomAction } from '../../domain/permissions.js';
import { FOREVER, type MemberDto, type RoomAccess } from '../../domain/rooms.js';
import { deleteBan, insertBan, memberRole, roomBans } from '../../store/members.js';
import type { Store } from '../../store/store.js';
import type { Tx } from '../../store/tx.js';
import { type AccessService, describeAction } from '../access.js';
import type { Logger } from '../../logger.js';
import { systemMessage } from '../system-message.js';
import type { VideoRemovals } from '../meetings/removals.js';
import { changeMember, dropMember } from './member-changes.js';
import { pageLimit } from '../page.js';
import { MEMBERS_DEFAULT_LIMIT, MEMBERS_MAX_LIMIT, type MembersPage, type RoomReads } from './reads.js';

/** Audit log line of a moderation action (who, what, where; never message content). */
export function auditModeration(
  log: Logger,
  action: string,
  actor: Actor,
  roomId: string,
  target: string | null,
  extra: Record<string, unknown> = {},
): void {
  log.info({ audit: 'moderation', action, tenant: actor.tenant, by: actor.id, roomId, target, ...extra }, `moderation: ${action}`);
}

/**
 * Records a moderation action durably (`audit_event`, in the action's transaction). The log line
 * (`auditModeration`) follows after commit.
 */
export function recordModeration(
  tx: Tx,
  action: AuditAction,
  actor: Actor,
  roomId: string,
  target: string | null,
  data: Record<string, unknown> = {},
): Promise<void> {
  return tx.audit({ tenant: actor.tenant, actorId: actor.id, action, roomId, targetId: target, data });
}

/**
 * Moderation and room changes run again on a deadlock (src/store/tx.ts `TransactOptions`): their
 * callbacks write only in the transaction and after commit, and their results come from the
 * committed attempt.
 */
export const RETRY = { retry: true } as const;

/**
 * The actor's right to `action` on the member `userId` in `tx`, held to until the room's lock: the
 * permission is checked, the target's membership row locked (its role then stays as read) and
 * `rule` applied to both roles, then the room's lock is taken (after the membership rows, before
 * any write: src/store/tx.ts `lockRoom`) and, if the room's access changed since the check (the
 * actor demoted, removed or banned meanwhile), the permission and `rule` are checked again under it.
 * `lockActor` also locks the actor's own membership row first (a change that writes it: handing over
 * ownership).
 */
export async function actOnMember(
  access: AccessService,
  tx: Tx,
  actor: Actor,
  roomId: string,
  userId: string,
  action: RoomAction,
  rule: (access: RoomAccess, target: MemberRole | null) => void,
  opts: { lockActor?: boolean } = {},
): Promise<{ access: RoomAccess; target: MemberRole | null }> {
  // The target's role joins the rule once read, for the check under the room's lock.
  let target: { role: MemberRole | null } | null = null;
  const held = await access.requirePermissionInTx(tx, actor, roomId, action, (a) => {
    if (target) rule(a, target.role);
  });
  target = { role: await memberRole(tx, roomId, userId, true) };
  rule(held, target.role);
  if (opts.lockActor) await memberRole(tx, roomId, actor.id, true);
  await tx.lockRoom(roomId);
  // Read again under the room's lock: a join (or leave) that committed while this waited for it
  // changed the target's membership after the read above (every membership write holds the room's
  // lock, so it is stable from here on). A ban must drop a member who joined meanwhile.
  const fresh = await memberRole(tx, roomId, userId);
  if (fresh !== target.role) {
    target = { role: fresh };
    rule(held, fresh);
  }
  return { access: held, target: target.role };
}

/** Roles, mutes and bans: what moderators do to other members (each action audited). */
export class RoomModeration {
  constructor(
    private readonly log: Logger,
    private readonly access: AccessService,
    private readonly store: Store,
    private readonly reads: RoomReads,
    /** Takes a banned user out of the room's meetings on the provider (queued with the ban). */
    private readonly removals: VideoRemovals,
  ) {}

  /**
   * Changes a member's role. Needs `setRole` and to outrank both the target's current and new role;
   * only the owner hands over ownership (and becomes an admin).
   */
  async setRole(actor: Actor, roomId: string, userId: string, role: MemberRole): Promise<MemberDto> {
    if (userId === actor.id) throw badRequest('you cannot change your own role');
    await this.store.transact(async (tx) => {
      const mayChange = (access: RoomAccess, current: MemberRole | null) => {
        if (!current) throw notFound('member');
        if (role === 'owner') {
          if (access.role !== 'owner') throw forbidden('only the owner can hand over ownership');
        } else if (!outranks(access.role, current) || ROLE_RANK[role] >= ROLE_RANK[access.role]) {
          throw forbidden(`a ${access.role} cannot make a ${current} a ${role}`);
        }
      };
      // A hand-over writes the owner's own row too: locked before the room's (lock order).
      const { target } = await actOnMember(this.access, tx, actor, roomId, userId, 'setRole', mayChange, { lockActor: role === 'owner' });
      const current = target!;
      if (role === 'owner') await changeMember(tx, roomId, actor.id, { role: 'admin' }, actor.id);
      if (current !== role) await changeMember(tx, roomId, userId, { role }, actor.id);
      await recordModeration(tx, 'member.set_role', actor, roomId, userId, { role, previous: current });
    }, RETRY);
    this.audit('set_role', actor, roomId, userId, { role });
    return this.reads.member(actor, roomId, userId);
  }

  /** Mutes a member (cannot send) until `until`, or until unmuted. */
  async mute(actor: Actor, roomId: string, userId: string, until: Date | null): Promise<MemberDto> {
    if (until && until.getTime() <= Date.now()) throw badRequest('until must be in the future');
    await this.moderate(actor, roomId, userId, 'mute', async (tx) => {
      await changeMember(tx, roomId, userId, { mutedUntil: until ?? FOREVER }, actor.id);
      await recordModeration(tx, 'member.mute', actor, roomId, userId, { until });
    });
    this.audit('mute', actor, roomId, userId, { until });
    return this.reads.member(actor, roomId, userId);
  }

  async unmute(actor: Actor, roomId: string, userId: string): Promise<MemberDto> {
    await this.moderate(actor, roomId, userId, 'mute', async (tx) => {
      await changeMember(tx, roomId, userId, { mutedUntil: null }, actor.id);
      await recordModeration(tx, 'member.unmute', actor, roomId, userId);
    });
    this.audit('unmute', actor, roomId, userId);
    return this.reads.member(actor, roomId, userId);
  }

  /**
   * Bans a user: removes them (their live subscriptions end) and keeps them out until unbanned. Their
   * removal from the room's meetings not ended (member or not: a support agent reads a support room
   * and joins its meetings without membership) is queued in the same transaction and sent to the
   * provider after commit, retried until it answers (src/services/meetings/removals.ts).
   */
  async ban(actor: Actor, roomId: string, userId: string): Promise<void> {
    if (userId === actor.id) throw badRequest('you cannot ban yourself');
    const queued = await this.store.transact(async (tx) => {
      const { access, target } = await actOnMember(this.access, tx, actor, roomId, userId, 'ban', (a, role) => {
        if (role && !outranks(a.role, role)) throw forbidden(`a ${a.role} cannot ban a ${role}`);
      });
      const added = await insertBan(tx, roomId, userId, actor.id);
      if (target) {
        await dropMember(tx, roomId, userId, 'banned', actor.id);
        await systemMessage(tx, actor, roomId, `${actor.name} banned ${userId}`);
      } else if (added && access.room.kind === 'support') {
        // Support agents read support rooms without being members: the event ends an agent's open
        // streams of this room on every node (the hubs end the subscriptions of a leaving user).
        await tx.append({ type: 'member.left', roomId, userId, reason: 'banned', by: actor.id });
      }
      await recordModeration(tx, 'member.ban', actor, roomId, userId, { wasMember: target !== null, wasBanned: !added });
      return this.removals.queue(tx, { roomId, tenant: access.room.tenant, userId, reason: 'banned' });
    }, RETRY);
    this.audit('ban', actor, roomId, userId);
    if (queued) this.removals.wake();
  }

  async unban(actor: Actor, roomId: string, userId: string): Promise<{ unbanned: boolean }> {
    const unbanned = await this.store.transact(async (tx) => {
      await this.access.requirePermissionInTx(tx, actor, roomId, 'ban');
      // An unban appends no event: the right is held to under the room's lock, taken here.
      await tx.lockRoom(roomId);
      const removed = await deleteBan(tx.db, roomId, userId);
      await recordModeration(tx, 'member.unban', actor, roomId, userId, { wasBanned: removed });
      return removed;
    }, RETRY);
    this.audit('unban', actor, roomId, userId, { wasBanned: unbanned });
    return { unbanned };
  }

  /**
   * A page of the room's bans by user id, as `RoomReads.members` pages members: after the user id
   * `after`, at most `limit` (1..MEMBERS_MAX_LIMIT, default MEMBERS_DEFAULT_LIMIT).
   */
  async bans(actor: Actor, roomId: string, page: MembersPage = {}): Promise<{ userId: string; bannedBy: string; createdAt: Date }[]> {
    const limit = pageLimit(page.limit, MEMBERS_DEFAULT_LIMIT, MEMBERS_MAX_LIMIT);
    await this.access.requirePermission(actor, roomId, 'ban');
    return roomBans(this.store.db(), roomId, { after: page.after, limit });
  }

  /** Runs a moderation action on another member who the actor outranks (`actOnMember`), in one transaction. */
  private async moderate(actor: Actor, roomId: string, userId: string, action: RoomAction, fn: (tx: Tx) => Promise<void>): Promise<void> {
    if (userId === actor.id) throw badRequest(`you cannot ${describeAction(action)} on yourself`);
    await this.store.transact(async (tx) => {
      await actOnMember(this.access, tx, actor, roomId, userId, action, (access, target) => {
        if (!target) throw notFound('member');
        if (!outranks(access.role, target)) throw forbidden(`a ${access.role} cannot ${describeAction(action)} on a ${target}`);
      });
      await fn(tx);
    }, RETRY);
  }

  private audit(action: string, actor: Actor, roomId: string, target: string | null, extra: Record<string, unknown> = {}): void {
    auditModeration(this.log, action, actor, roomId, target, extra);
  }
}
