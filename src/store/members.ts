import type { MemberRole } from '../domain/events.js';
import type { MemberDto } from '../domain/rooms.js';
import type { ExpressionBuilder } from 'kysely';
import type { Db, Tables } from './database.js';
import { now, type Tx } from './tx.js';

/**
 * Memberships and bans. Reads take a `Db` (`store.db()`, or `tx.db` to see a transaction); writes
 * and row locks take the `Tx` of the durable change they belong to.
 */

/** A page of a keyed list: the rows after `after` (none: from the start), at most `limit` of them. */
export interface KeyPage {
  after?: string | null | undefined;
  limit: number;
}

/** A membership row with the member's name, as `MemberDto` shows it. */
function memberQuery(db: Db, tenant: string, roomId: string) {
  return db
    .selectFrom('membership as mb')
    .leftJoin('chat_user as u', (j) => j.on('u.tenant', '=', tenant).onRef('u.id', '=', 'mb.user_id'))
    .select(['mb.user_id', 'u.name', 'mb.role', 'mb.joined_at', 'mb.receipt_seq', 'mb.muted_until'])
    .where('mb.room_id', '=', roomId);
}

type MemberRow = Awaited<ReturnType<ReturnType<typeof memberQuery>['executeTakeFirstOrThrow']>>;

/** A membership row as `MemberDto`: an expired mute (before `at`) reads as none. */
function toMemberDto(r: MemberRow, at: number): MemberDto {
  return {
    userId: r.user_id,
    name: r.name,
    role: r.role as MemberRole,
    joinedAt: r.joined_at,
    // The read receipt the room sees, not the member's own position (src/store/receipts.ts).
    lastReadSeq: r.receipt_seq,
    mutedUntil: r.muted_until && r.muted_until.getTime() > at ? r.muted_until : null,
  };
}

/**
 * A page of the members of a room with their names (as last seen in their tokens), by user id: those
 * whose user id sorts after `page.after` (in the database's order), at most `page.limit`. Served by
 * the membership's primary key (room_id, user_id). An expired mute reads as none.
 */
export async function roomMembers(db: Db, tenant: string, roomId: string, page: KeyPage): Promise<MemberDto[]> {
  const rows = await memberQuery(db, tenant, roomId)
    .$if(page.after != null, (qb) => qb.where('mb.user_id', '>', page.after!))
    .orderBy('mb.user_id')
    .limit(page.limit)
    .execute();
  const at = Date.now();
  return rows.map((r) => toMemberDto(r, at));
}

/** One member of a room as `roomMembers` shows it (none: not a member). */
export async function roomMember(db: Db, tenant: string, roomId: string, userId: string): Promise<MemberDto | undefined> {
  const row = await memberQuery(db, tenant, roomId).where('mb.user_id', '=', userId).executeTakeFirst();
  return row && toMemberDto(row, Date.now());
}

/** A member's role (none: not a member); with `lock`, the membership row stays locked until commit. */
export async function memberRole(tx: Tx, roomId: string, userId: string, lock = false): Promise<MemberRole | null> {
  const q = tx.db.selectFrom('membership').select('role').where('room_id', '=', roomId).where('user_id', '=', userId);
  const row = await (lock ? q.forUpdate() : q).executeTakeFirst();
  return (row?.role as MemberRole | undefined) ?? null;
}

/**
 * The member who inherits a room's ownership: the highest role, then the longest-standing (none:
 * the room has no members left).
 */
export async function successor(tx: Tx, roomId: string): Promise<{ userId: string; role: MemberRole } | undefined> {
  const row = await tx.db
    .selectFrom('membership')
    .select(['user_id', 'role'])
    .where('room_id', '=', roomId)
    .orderBy((eb) => eb.case('role').when('owner').then(0).when('admin').then(1).when('moderator').then(2).else(3).end())
    .orderBy('joined_at')
    .orderBy('user_id')
    .limit(1)
    .executeTakeFirst();
  return row && { userId: row.user_id, role: row.role as MemberRole };
}

/**
 * Adds a member who reads from the room's current seq on (`last_read_seq` and the receipt,
 * `receipt_seq`: src/store/receipts.ts). False when the user
 * is a member already (nothing written).
 */
export async function insertMember(tx: Tx, roomId: string, userId: string, role: MemberRole): Promise<boolean> {
  const row = await tx.db
    .insertInto('membership')
    .values((eb) => ({
      room_id: roomId,
      user_id: userId,
      role,
      joined_at: now(),
      last_read_seq: eb.selectFrom('room').select('last_seq').where('id', '=', roomId),
      receipt_seq: eb.selectFrom('room').select('last_seq').where('id', '=', roomId),
    }))
    .onConflict((oc) => oc.doNothing())
    .returning('user_id')
    .executeTakeFirst();
  return row !== undefined;
}

/** Removes a membership; false when there was none. */
export async function deleteMember(tx: Tx, roomId: string, userId: string): Promise<boolean> {
  const row = await tx.db.deleteFrom('membership').where('room_id', '=', roomId).where('user_id', '=', userId).returning('user_id').executeTakeFirst();
  return row !== undefined;
}

/** A change of a membership: a new role and/or a new mute end (null: not muted). */
export interface MemberChange {
  role?: MemberRole;
  mutedUntil?: Date | null;
}

/**
 * Applies a change to a membership (its row locked first). Returns the membership's new state and
 * whether anything changed, or nothing when the user is not a member.
 */
export async function updateMember(
  tx: Tx,
  roomId: string,
  userId: string,
  change: MemberChange,
): Promise<{ role: MemberRole; mutedUntil: Date | null; changed: boolean } | undefined> {
  const before = await tx.db
    .selectFrom('membership')
    .select(['role', 'muted_until'])
    .where('room_id', '=', roomId)
    .where('user_id', '=', userId)
    .forUpdate()
    .executeTakeFirst();
  if (!before) return undefined;
  const role = change.role ?? (before.role as MemberRole);
  const mutedUntil = change.mutedUntil === undefined ? before.muted_until : change.mutedUntil;
  const changed = role !== before.role || mutedUntil?.getTime() !== before.muted_until?.getTime();
  if (changed) {
    await tx.db
      .updateTable('membership')
      .set({ role, muted_until: mutedUntil })
      .where('room_id', '=', roomId)
      .where('user_id', '=', userId)
      .execute();
  }
  return { role, mutedUntil, changed };
}

/** Those of `userIds` banned from the room. */
export async function bannedAmong(tx: Tx, roomId: string, userIds: string[]): Promise<string[]> {
  if (userIds.length === 0) return [];
  const rows = await tx.db.selectFrom('room_ban').select('user_id').where('room_id', '=', roomId).where('user_id', 'in', userIds).execute();
  return rows.map((r) => r.user_id);
}

/** Bans a user from a room; false when they were banned already. */
export async function insertBan(tx: Tx, roomId: string, userId: string, by: string): Promise<boolean> {
  const row = await tx.db
    .insertInto('room_ban')
    .values({ room_id: roomId, user_id: userId, banned_by: by, created_at: now() })
    .onConflict((oc) => oc.doNothing())
    .returning('user_id')
    .executeTakeFirst();
  return row !== undefined;
}

/** Lifts a ban; false when there was none. */
export async function deleteBan(db: Db, roomId: string, userId: string): Promise<boolean> {
  const row = await db.deleteFrom('room_ban').where('room_id', '=', roomId).where('user_id', '=', userId).returning('user_id').executeTakeFirst();
  return row !== undefined;
}

/**
 * A page of a room's bans by user id: those whose user id sorts after `page.after` (in the database's
 * order), at most `page.limit`. Served by the ban's primary key (room_id, user_id).
 */
export async function roomBans(db: Db, roomId: string, page: KeyPage): Promise<{ userId: string; bannedBy: string; createdAt: Date }[]> {
  const rows = await db
    .selectFrom('room_ban')
    .select(['user_id', 'banned_by', 'created_at'])
    .where('room_id', '=', roomId)
    .$if(page.after != null, (qb) => qb.where('user_id', '>', page.after!))
    .orderBy('user_id')
    .limit(page.limit)
    .execute();
  return rows.map((r) => ({ userId: r.user_id, bannedBy: r.banned_by, createdAt: r.created_at }));
}

// Plain membership lookups (support agents and service tokens without a membership are not members here).

/** Whether the user has a membership of the room. */
export async function isMember(db: Db, roomId: string, userId: string): Promise<boolean> {
  const row = await db.selectFrom('membership').select('user_id').where('room_id', '=', roomId).where('user_id', '=', userId).executeTakeFirst();
  return row !== undefined;
}

/** The room's members except one user (e.g. everyone a meeting's creator invites). */
export async function otherMemberIds(db: Db, roomId: string, exceptUserId: string): Promise<string[]> {
  const rows = await db.selectFrom('membership').select('user_id').where('room_id', '=', roomId).where('user_id', '<>', exceptUserId).execute();
  return rows.map((r) => r.user_id);
}

/** The room's members whose user id is longer than `length` characters. */
export async function memberIdsLongerThan(db: Db, roomId: string, length: number): Promise<string[]> {
  const rows = await db
    .selectFrom('membership')
    .select('user_id')
    .where('room_id', '=', roomId)
    .where((eb) => eb(eb.fn<number>('length', ['user_id']), '>', length))
    .execute();
  return rows.map((r) => r.user_id);
}

/** Those of `userIds` who are members of the room (e.g. the mentions of a message that count). */
export async function membersAmong(db: Db, roomId: string, userIds: string[]): Promise<string[]> {
  if (userIds.length === 0) return [];
  const rows = await db.selectFrom('membership').select('user_id').where('room_id', '=', roomId).where('user_id', 'in', userIds).execute();
  return rows.map((r) => r.user_id);
}

/** Every member of a room of the tenant (null: the tenant has no such room). */
export async function memberIdsOfTenantRoom(db: Db, tenant: string, roomId: string): Promise<string[] | null> {
  const room = await db.selectFrom('room').select('id').where('id', '=', roomId).where('tenant', '=', tenant).executeTakeFirst();
  if (!room) return null;
  const rows = await db.selectFrom('membership').select('user_id').where('room_id', '=', roomId).execute();
  return rows.map((r) => r.user_id);
}

/**
 * Which of the users share at least one room of the tenant with `me` (`me` included when asked). With
 * `supportRooms` (a support agent), also the members of every support room of the tenant `me` is not
 * banned from: the rooms the agent reads without a membership (the rule of `decideAccess` in
 * src/services/access.ts, as `roomListRows` lists them).
 */
export async function sharingRoomWith(db: Db, tenant: string, me: string, userIds: readonly string[], opts: { supportRooms?: boolean } = {}): Promise<Set<string>> {
  if (userIds.length === 0) return new Set();
  const rows = await db
    .selectFrom('membership as them')
    .innerJoin('membership as mine', 'mine.room_id', 'them.room_id')
    .innerJoin('room as r', 'r.id', 'them.room_id')
    .select('them.user_id')
    .distinct()
    .where('mine.user_id', '=', me)
    .where('r.tenant', '=', tenant)
    .where('them.user_id', 'in', userIds)
    .execute();
  const out = new Set(rows.map((r) => r.user_id));
  if (userIds.includes(me)) out.add(me);
  const rest = opts.supportRooms ? userIds.filter((id) => !out.has(id)) : [];
  if (rest.length > 0) {
    const customers = await db
      .selectFrom('membership as them')
      .innerJoin('room as r', 'r.id', 'them.room_id')
      .select('them.user_id')
      .distinct()
      .where('r.tenant', '=', tenant)
      .where('r.kind', '=', 'support')
      .where('them.user_id', 'in', rest)
      .where((eb) => supportRoomOf(eb, me))
      .execute();
    for (const r of customers) out.add(r.user_id);
  }
  return out;
}

/**
 * The room `r` is a support room its tenant's support agent `userId` reads without a membership: one
 * the agent is not banned from (the rule of `decideAccess` in src/services/access.ts: a ban also
 * shuts out a support agent). The room list (`roomListRows`) and `presence.get` (`sharingRoomWith`)
 * take it from here.
 */
export function supportRoomOf(eb: ExpressionBuilder<Tables & { r: Tables['room'] }, 'r'>, userId: string) {
  return eb.and([
    eb('r.kind', '=', 'support'),
    eb.not(eb.exists(eb.selectFrom('room_ban as b').select('b.room_id').whereRef('b.room_id', '=', 'r.id').where('b.user_id', '=', userId))),
  ]);
}
