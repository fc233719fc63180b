import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import type { Deps } from '../deps.js';
import type { Keyring } from '../keyring.js';
import type { MessageMapper } from '../message-dto.js';
import { RoomLifecycle } from './lifecycle.js';
import { RoomMembership } from './membership.js';
import { RoomModeration } from './moderation.js';
import { RoomReads } from './reads.js';

export { RoomLifecycle } from './lifecycle.js';
export { RoomMembership } from './membership.js';
export { RoomModeration } from './moderation.js';
export { RoomReads } from './reads.js';

/**
 * Rooms by capability: `lifecycle` (create, openDirect, update), `membership` (addMembers,
 * removeMember, leave), `moderation` (setRole, mute, unmute, ban, unban, bans) and `read` (get,
 * byKey, list, members). Who may do what is decided by the AccessService (src/services/access.ts).
 */
export interface RoomServices {
  lifecycle: RoomLifecycle;
  membership: RoomMembership;
  moderation: RoomModeration;
  read: RoomReads;
}

export function createRoomServices(deps: Deps, access: AccessService, store: Store, mapper: MessageMapper, keyring: Keyring): RoomServices {
  const read = new RoomReads(access, store, mapper);
  return {
    lifecycle: new RoomLifecycle(deps, access, store, keyring, read),
    membership: new RoomMembership(deps, access, store),
    moderation: new RoomModeration(deps, access, store, read),
    read,
  };
}
