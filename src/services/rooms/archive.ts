import type { Actor } from '../../domain/actor.js';
import { notFound } from '../../domain/errors.js';
import type { ArchiveState } from '../../domain/rooms.js';
import type { Logger } from '../../logger.js';
import { memberIdsOfTenantRoom } from '../../store/members.js';
import { removeFilesOfRoom } from '../../store/files.js';
import { archivedAt, deleteRoom, setArchived } from '../../store/rooms.js';
import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import type { MeetingLifecycle, OpenMeeting } from '../meetings/lifecycle.js';
import type { ActivityFeed } from '../activity.js';
import type { EventPublisher } from '../publisher.js';
import { auditModeration, RETRY, recordModeration } from './moderation.js';

/**
 * A room's end of life: archiving (read-only, see the access check), unarchiving and deleting. Each
 * is for the room's owner, an admin of the tenant or a service token of the tenant.
 */
export class RoomArchive {
  constructor(
    private readonly log: Logger,
    private readonly access: AccessService,
    private readonly store: Store,
    private readonly publisher: EventPublisher,
    private readonly activity: ActivityFeed,
    private readonly wakeFiles: () => void,
    /** Ends the provider rooms of the meetings a deletion removes. */
    private readonly meetings: Pick<MeetingLifecycle, 'openOf' | 'endProviderRooms'>,
  ) {}

  /**
   * Makes the room read-only (`room.archived`). Idempotent: archiving an archived room changes
   * nothing. Answers the room's id and state only: tenant admins and service tokens may archive
   * rooms they cannot read.
   */
  archive(actor: Actor, roomId: string): Promise<ArchiveState> {
    return this.setArchived(actor, roomId, true);
  }

  /** Makes an archived room writable again (`room.unarchived`). Idempotent like `archive`. */
  unarchive(actor: Actor, roomId: string): Promise<ArchiveState> {
    return this.setArchived(actor, roomId, false);
  }

  private async setArchived(actor: Actor, roomId: string, archive: boolean): Promise<ArchiveState> {
    await this.store.transact(async (tx) => {
      // Held to under the room's lock, taken before the write: an owner who handed over ownership
      // meanwhile is refused.
      await this.access.requireRoomManagerInTx(tx, actor, roomId, 'archive');
      await tx.lockRoom(roomId);
      const changed = await setArchived(tx, roomId, archive);
      if (changed) {
        await tx.append({ type: archive ? 'room.archived' : 'room.unarchived', roomId, by: actor.id });
      }
      await recordModeration(tx, archive ? 'room.archive' : 'room.unarchive', actor, roomId, null, { changed });
    }, RETRY);
    auditModeration(this.log, archive ? 'archive' : 'unarchive', actor, roomId, null);
    return { roomId, archivedAt: await archivedAt(this.store.db(), roomId) };
  }

  /**
   * Deletes the room and everything in it (src/store/rooms.ts `deleteRoom`). After commit, every
   * node ends the room's open `chat.events` streams: their last event is `room.deleted`, then they
   * complete; any later call about the room answers NOT_FOUND. The provider rooms of its meetings
   * not ended are ended after commit (their rows go with the room): nobody stays in a call of a room
   * that is gone, and join tokens minted for it stop working.
   */
  async delete(actor: Actor, roomId: string): Promise<void> {
    let meetings: OpenMeeting[] = [];
    await this.store.transact(async (tx) => {
      await this.access.requireRoomManagerInTx(tx, actor, roomId, 'delete');
      // Its files (sent or not) go with it: the file worker removes the objects after commit.
      if ((await removeFilesOfRoom(tx.db, roomId)) > 0) tx.afterCommit(async () => this.wakeFiles());
      // The deletion appends no event: the right is held to under the room's lock, taken here (after
      // the file rows, lock order); the members are read under it.
      await tx.lockRoom(roomId);
      const members = (await memberIdsOfTenantRoom(tx.db, actor.tenant, roomId)) ?? [];
      // Under the lock too: a meeting created before it is seen; one created after finds no room.
      meetings = await this.meetings.openOf(tx, roomId);
      if (!(await deleteRoom(tx, roomId))) throw notFound('room');
      // The room's rows are gone; its audit rows stay (they have no foreign key).
      await recordModeration(tx, 'room.delete', actor, roomId, null, { members: members.length });
      tx.afterCommit(async () => {
        this.activity.roomDeleted(actor.tenant, roomId, members);
        await this.publisher.room({ type: 'room.deleted', roomId, by: actor.id });
      });
    }, RETRY);
    auditModeration(this.log, 'delete_room', actor, roomId, null);
    // Off the transaction: provider calls are slow and may fail; the deletion stands either way.
    await this.meetings.endProviderRooms(meetings);
  }
}
