import type { Actor } from '../../domain/actor.js';
import { AppError, notFound } from '../../domain/errors.js';
import type { MemberRole } from '../../domain/events.js';
import type { MemberDto, RoomDto, RoomListItem } from '../../domain/rooms.js';
import { roomMember, roomMembers } from '../../store/members.js';
import { messageRowsByIds, roomIdsByKey, type RoomListCursor, roomListRows, roomRow, toRoomDto } from '../../store/rooms.js';
import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import type { MessageMapper } from '../message-dto.js';
import type { ReadRouting } from '../read-routing.js';
import { keyOf } from '../../domain/ids.js';
import { pageLimit } from '../page.js';

/** A page of a room's members (or bans): after a user id, at most `limit`. */
export interface MembersPage {
  after?: string | null | undefined;
  limit?: number | null | undefined;
}

/** A page of my room list: archived ones or the others, after a room (`roomListCursor` of the last of the page before), at most `limit`. */
export interface RoomListPage {
  archived?: boolean | undefined;
  before?: RoomListCursor | null | undefined;
  limit?: number | null | undefined;
}

/**
 * Rooms per page of the room list: whoever has up to this many rooms reads them in one call, as
 * before the list was paged. Each room costs an unread count, a member count and its last message
 * (with reactions); a support agent of a big tenant reads the rest a page at a time.
 */
export const ROOMS_DEFAULT_LIMIT = 500;
export const ROOMS_MAX_LIMIT = 500;

/** Members (and bans) per page: a room of up to this many members is read in one call. */
export const MEMBERS_DEFAULT_LIMIT = 1000;
export const MEMBERS_MAX_LIMIT = 1000;

/** Reading rooms: one room, rooms by external key, my room list, a room's members. */
export class RoomReads {
  constructor(
    private readonly access: AccessService,
    private readonly store: Store,
    private readonly mapper: MessageMapper,
    private readonly reads: ReadRouting,
  ) {}

  /** A room as the caller sees it (`manage`: also a service token that is not a member). */
  async get(actor: Actor, roomId: string, purpose: 'read' | 'manage' = 'read'): Promise<RoomDto> {
    const access = await this.access.requireAccess(actor, roomId, purpose);
    const row = await roomRow(this.store.db(), roomId);
    if (!row) throw notFound('room');
    return toRoomDto(row, access.role);
  }

  /** Rooms linked to an external entity (`order:123`) that the caller can see (service tokens: every one of the tenant). */
  async byKey(actor: Actor, key: string): Promise<RoomDto[]> {
    const out: RoomDto[] = [];
    for (const id of await roomIdsByKey(this.store.db(), actor.tenant, key)) {
      try {
        out.push(await this.get(actor, id, 'manage'));
      } catch (err) {
        if (!(err instanceof AppError && err.code === 'NOT_FOUND')) throw err;
      }
    }
    return out;
  }

  /**
   * A page of the caller's rooms, most recently active first (a room's activity: its newest
   * message's time, else its creation), ties by room id (descending), with unread counts and the
   * last message. Support agents also see every support room of their tenant. Archived rooms are
   * left out; with `archived: true`, only archived rooms are listed. At most `limit` rooms
   * (1..ROOMS_MAX_LIMIT, default ROOMS_DEFAULT_LIMIT) after `before` (none: from the most recent):
   * pass the last room of a page as `before` (`roomListCursor`) for the next; a page shorter than
   * `limit` is the last. Each room's counts carry the `version` of the read (src/store/receipts.ts),
   * to be ordered with those of `room.activity` and `unread.changed`.
   */
  async list(actor: Actor, input: RoomListPage = {}): Promise<RoomListItem[]> {
    const limit = pageLimit(input.limit, ROOMS_DEFAULT_LIMIT, ROOMS_MAX_LIMIT);
    const query = { supportRooms: actor.roles.includes('support'), archived: input.archived ?? false, before: input.before ?? null, limit };
    // Across rooms: a replica serves it once it has the caller's last write (src/services/read-routing.ts).
    const { rows, last } = await this.reads.user(keyOf(actor.tenant, actor.id), async (db) => {
      const rows = await roomListRows(db, actor.tenant, actor.id, query);
      const ids = rows.map((r) => r.last_message_id).filter((id) => id !== null);
      const last = new Map((await this.mapper.many(db, await messageRowsByIds(db, ids), actor.id)).map((m) => [m.id, m]));
      return { rows, last };
    });
    // In the query's order.
    return rows.map((r) => ({
      ...toRoomDto(r, r.role as MemberRole),
      unreadCount: r.unread_count,
      lastReadSeq: r.last_read_seq,
      lastMessage: (r.last_message_id && last.get(r.last_message_id)) || null,
      version: r.version,
    }));
  }

  /**
   * A page of the room's members by user id: those after the user id `after` (none: from the first),
   * at most `limit` (1..MEMBERS_MAX_LIMIT, default MEMBERS_DEFAULT_LIMIT). Pass the last user id of a
   * page as `after` for the next; a page shorter than `limit` is the last.
   */
  async members(actor: Actor, roomId: string, page: MembersPage = {}): Promise<MemberDto[]> {
    const limit = pageLimit(page.limit, MEMBERS_DEFAULT_LIMIT, MEMBERS_MAX_LIMIT);
    await this.access.requireMember(actor, roomId);
    return roomMembers(this.store.db(), actor.tenant, roomId, { after: page.after, limit });
  }

  /** One member of a room as `members` shows it (after a change by a moderator); NOT_FOUND when not a member. */
  async member(actor: Actor, roomId: string, userId: string): Promise<MemberDto> {
    await this.access.requireMember(actor, roomId);
    const member = await roomMember(this.store.db(), actor.tenant, roomId, userId);
    if (!member) throw notFound('member');
    return member;
  }
}
