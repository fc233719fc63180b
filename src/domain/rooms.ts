import type { JsonObject, MemberRole, MessageDto } from './events.js';
import type { RoomKind } from './permissions.js';

/** Muting without an end date lasts until unmuted (stored as this far date). */
export const FOREVER = new Date('9999-12-31T00:00:00Z');

/** `public` rooms are listed in the tenant's directory (`room.directory`) and joinable (`room.join`). */
export type RoomVisibility = 'public' | 'private';

export interface RoomDto {
  id: string;
  kind: RoomKind;
  name: string;
  topic: string | null;
  key: string | null;
  encrypted: boolean;
  /** Messages older than this many days are removed (null: the server default). */
  retentionDays: number | null;
  /** Structured data of the integration (null: none). */
  metadata: JsonObject | null;
  createdBy: string;
  createdAt: Date;
  lastSeq: number;
  /** The caller's role in the room (support agents and service tokens get a role without membership). */
  myRole: MemberRole;
  memberCount: number;
  /** Set while the room is archived: read-only (history, search and subscriptions stay readable). */
  archivedAt: Date | null;
  visibility: RoomVisibility;
}

/** What `room.archive` / `room.unarchive` answer. */
export interface ArchiveState {
  roomId: string;
  /** Null: the room is writable. */
  archivedAt: Date | null;
}

/** A public room as the tenant's directory lists it. */
export interface DirectoryRoomDto {
  id: string;
  kind: RoomKind;
  name: string;
  topic: string | null;
  /** The room's metadata (null: none), as members see it: anyone of the tenant may join a public room. */
  metadata: JsonObject | null;
  memberCount: number;
  /** Whether the caller is a member already. */
  member: boolean;
  createdAt: Date;
}

export interface RoomListItem extends RoomDto {
  unreadCount: number;
  lastReadSeq: number;
  lastMessage: MessageDto | null;
  /**
   * The version of `unreadCount` and `lastReadSeq`, as `room.activity` and `unread.changed` carry
   * it: counts read later never have a lower one, so a client keeps, of the list's and the events'
   * counts, those of the highest version (on a tie, the later).
   */
  version: number;
}

export interface MemberDto {
  userId: string;
  name: string | null;
  role: MemberRole;
  joinedAt: Date;
  lastReadSeq: number;
  mutedUntil: Date | null;
}

/** The caller's access to a room, as resolved by `requireAccess`. */
export interface RoomAccess {
  /** `lastSeq`: the room's position when the access was checked (on the primary). */
  room: { id: string; kind: RoomKind; name: string; tenant: string; encrypted: boolean; archived: boolean; lastSeq: number };
  role: MemberRole;
  /** False for support agents and service tokens acting without a membership. */
  member: boolean;
  mutedUntil: Date | null;
}
