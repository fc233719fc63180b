import type { Store } from '../../store/store.js';
import type { ActivityFeed } from '../activity.js';
import type { EventPublisher } from '../publisher.js';
import { RoomArchive } from './archive.js';
import { RoomDirectory } from './directory.js';
import type { AccessService } from '../access.js';
import type { Logger } from '../../logger.js';
import type { RateLimits } from '../limits.js';
import type { Keyring } from '../keyring.js';
import type { MessageMapper } from '../message-dto.js';
import { RoomLifecycle } from './lifecycle.js';
import { RoomMembership } from './membership.js';
import { RoomModeration } from './moderation.js';
import { RoomReads } from './reads.js';
import type { ReadRouting } from '../read-routing.js';
import type { MeetingLifecycle } from '../meetings/lifecycle.js';
import type { VideoRemovals } from '../meetings/removals.js';

export { RoomArchive } from './archive.js';
export { DIRECTORY_DEFAULT_LIMIT, DIRECTORY_MAX_LIMIT, RoomDirectory } from './directory.js';
export { RoomLifecycle } from './lifecycle.js';
export { RoomMembership } from './membership.js';
export { RoomModeration } from './moderation.js';
export { MEMBERS_DEFAULT_LIMIT, MEMBERS_MAX_LIMIT, type MembersPage, ROOMS_DEFAULT_LIMIT, ROOMS_MAX_LIMIT, type RoomListPage, RoomReads } from './reads.js';

/**
 * Rooms by capability: `lifecycle` (create, ensure, openDirect, update), `membership` (addMembers,
 * removeMember, leave), `moderation` (setRole, mute, unmute, ban, unban, bans) and `read` (get,
 * byKey, list, members), `archive` (archive, unarchive, delete) and `directory` (public rooms:
 * directory, join). Who may do what is decided by the AccessService (src/services/access.ts).
 */
export interface RoomServices {
  lifecycle: RoomLifecycle;
  membership: RoomMembership;
  moderation: RoomModeration;
  read: RoomReads;
  archive: RoomArchive;
  directory: RoomDirectory;
}

export function createRoomServices(
  parts: {
    log: Logger;
    limits: RateLimits;
    publisher: EventPublisher;
    activity: ActivityFeed;
    wakeFiles: () => void;
    reads: ReadRouting;
    /** Ends the provider rooms of a deleted room's meetings. */
    meetings: MeetingLifecycle;
    /** Takes banned and removed users out of the room's meetings (queued in their transaction). */
    removals: VideoRemovals;
  },
  access: AccessService,
  store: Store,
  mapper: MessageMapper,
  keyring: Keyring,
): RoomServices {
  const read = new RoomReads(access, store, mapper, parts.reads);
  const membership = new RoomMembership(parts.log, access, store, parts.removals);
  return {
    lifecycle: new RoomLifecycle(parts.log, parts.limits, access, store, keyring, read, membership),
    membership,
    moderation: new RoomModeration(parts.log, access, store, read, parts.removals),
    read,
    archive: new RoomArchive(parts.log, access, store, parts.publisher, parts.activity, parts.wakeFiles, parts.meetings),
    directory: new RoomDirectory(parts.limits, store, read),
  };
}
