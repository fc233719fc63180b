import type { MemberRole } from './events.js';

/**
 * The permission table: the one place that says which room role may do what.
 * Ranks: owner > admin > moderator > member. Acting on another member additionally needs a
 * strictly higher rank than the target's.
 */
export const ROLE_RANK: Record<MemberRole, number> = { owner: 3, admin: 2, moderator: 1, member: 0 };

export type RoomAction =
  | 'send'
  | 'addMembers'
  | 'removeMember'
  | 'update'
  | 'setRole'
  | 'mute'
  | 'ban'
  | 'deleteOthers'
  /** Archive, unarchive and delete the room (tenant admins and service tokens may too: access.ts). */
  | 'archive'
  | 'delete';

const MIN_ROLE: Record<RoomAction, MemberRole> = {
  send: 'member',
  addMembers: 'admin',
  removeMember: 'moderator',
  update: 'admin',
  setRole: 'admin',
  mute: 'moderator',
  ban: 'moderator',
  deleteOthers: 'moderator',
  archive: 'owner',
  delete: 'owner',
};

export type RoomKind = 'direct' | 'group' | 'support' | 'broadcast';

export function can(role: MemberRole, action: RoomAction, kind: RoomKind): boolean {
  if (kind === 'direct' && action !== 'send') return false;
  if (kind === 'broadcast' && action === 'send') return ROLE_RANK[role] >= ROLE_RANK.admin;
  return ROLE_RANK[role] >= ROLE_RANK[MIN_ROLE[action]];
}

/** True when `actor` outranks `target` (needed to act on another member). */
export function outranks(actor: MemberRole, target: MemberRole): boolean {
  return ROLE_RANK[actor] > ROLE_RANK[target];
}

/**
 * What a token may do in its tenant, whatever its room roles: the tenant-level half of the
 * permission table. Integrations run on `service` tokens; `admin` tokens may link rooms to keys too.
 * - `setRoomKey`: create a room with an external key (`order:4711`), `room.ensure` by key,
 * - `manageAnyRoom`: add and remove members of any room of the tenant without being a member,
 * - `sendSystem`, `sendCard`: post `system` and `card` messages through `chat.send`.
 */
export type TenantAction = 'setRoomKey' | 'manageAnyRoom' | 'sendSystem' | 'sendCard';

const TENANT_ROLES: Record<TenantAction, readonly string[]> = {
  setRoomKey: ['service', 'admin'],
  manageAnyRoom: ['service'],
  sendSystem: ['service'],
  sendCard: ['service'],
};

/** True when a token with `roles` may do `action` in its tenant. */
export function tenantMay(roles: readonly string[], action: TenantAction): boolean {
  return TENANT_ROLES[action].some((r) => roles.includes(r));
}

/** The roles `action` needs, as words for an error message ("service or admin"). */
export function tenantRolesOf(action: TenantAction): string {
  return TENANT_ROLES[action].join(' or ');
}
