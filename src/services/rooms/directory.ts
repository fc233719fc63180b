import { keyOf } from '../../domain/ids.js';
import type { Actor } from '../../domain/actor.js';
import { forbidden, notFound } from '../../domain/errors.js';
import type { DirectoryRoomDto, RoomDto } from '../../domain/rooms.js';
import { bannedAmong, memberRole } from '../../store/members.js';
import { type DirectoryCursor, directoryRows, joinableRoom } from '../../store/rooms.js';
import type { Store } from '../../store/store.js';
import { roomArchived } from '../../domain/errors.js';
import type { RateLimits } from '../limits.js';
import { systemMessage } from '../system-message.js';
import { RETRY } from './moderation.js';
import { joinMember, keepAnOwner } from './member-changes.js';
import type { RoomReads } from './reads.js';

export const DIRECTORY_DEFAULT_LIMIT = 50;
export const DIRECTORY_MAX_LIMIT = 100;

/** Public rooms: the tenant's directory and joining a public room by oneself. */
export class RoomDirectory {
  constructor(
    private readonly limits: RateLimits,
    private readonly store: Store,
    private readonly reads: RoomReads,
  ) {}

  /**
   * A page of the caller's tenant's public, non-archived rooms, by name then id; `query` matches name
   * or topic (case-insensitive). At most `limit` (1..DIRECTORY_MAX_LIMIT, default
   * DIRECTORY_DEFAULT_LIMIT) after `after` (none: from the first): pass the last room of a page as
   * `after` (`{ name, roomId }`) for the next; a page shorter than `limit` is the last.
   */
  async list(
    actor: Actor,
    input: { query?: string | undefined; limit?: number | undefined; after?: DirectoryCursor | null | undefined },
  ): Promise<DirectoryRoomDto[]> {
    const query = input.query?.trim() || null;
    const rows = await directoryRows(this.store.db(), actor.tenant, actor.id, query, input.limit ?? DIRECTORY_DEFAULT_LIMIT, input.after ?? null);
    return rows.map((r) => ({
      id: r.id,
      kind: r.kind as DirectoryRoomDto['kind'],
      name: r.name,
      topic: r.topic,
      metadata: r.metadata,
      memberCount: r.member_count,
      member: Boolean(r.member),
      createdAt: r.created_at,
    }));
  }

  /**
   * Joins a public room of the caller's tenant as a member (`member.joined`); idempotent. A room
   * that is not public (or of another tenant) is NOT_FOUND, so its existence does not leak; a
   * banned user is refused; an archived room is PRECONDITION_FAILED (but for a member: a no-op).
   */
  async join(actor: Actor, roomId: string): Promise<RoomDto> {
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    await this.store.transact(async (tx) => {
      // The room's lock first: a ban, archive or deletion that commits meanwhile is seen by the checks
      // below (a ban read before the lock let a banned user in as a member; a deletion was a foreign
      // key error), and a ban waiting behind this join finds the new member and drops it.
      await tx.lockRoom(roomId);
      const room = await joinableRoom(tx, roomId);
      if (!room || room.tenant !== actor.tenant || room.visibility !== 'public') throw notFound('room');
      if ((await bannedAmong(tx, roomId, [actor.id])).length) throw forbidden('you are banned from this room');
      // A member's join is a no-op, archived room or not: only a join that would add a member is refused.
      if (room.archived_at && !(await memberRole(tx, roomId, actor.id))) throw roomArchived();
      if (await joinMember(tx, actor, roomId, actor.id, 'member', null)) {
        await systemMessage(tx, actor, roomId, `${actor.name} joined`);
        // A room its last member left has no owner: the first to come back owns it.
        await keepAnOwner(tx, roomId, actor.id);
      }
    }, RETRY);
    return this.reads.get(actor, roomId);
  }
}
