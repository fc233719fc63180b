import { createHash } from 'node:crypto';
import { type ExpressionBuilder, type Selectable, sql } from 'kysely';
import type { JsonObject, MemberRole } from '../domain/events.js';
import type { RoomKind } from '../domain/permissions.js';
import type { RoomDto, RoomVisibility } from '../domain/rooms.js';
import { clip } from '../domain/text.js';
import { type Db, type Tables, violatesUnique } from './database.js';
import { supportRoomOf } from './members.js';
import { MESSAGE_FIELDS, type MessageRow } from './message-row.js';
import { countsVersion, unreadCount } from './receipts.js';
import { jsonb, now, type Tx } from './tx.js';

/** The columns of `room` a RoomDto is built from. */
const ROOM_FIELDS = [
  'r.id',
  'r.kind',
  'r.name',
  'r.topic',
  'r.key',
  'r.encrypted',
  'r.retention_days',
  'r.metadata',
  'r.created_by',
  'r.created_at',
  'r.last_seq',
  'r.archived_at',
  'r.visibility',
] as const;

type RoomFields = Pick<
  Selectable<Tables['room']>,
  'id' | 'kind' | 'name' | 'topic' | 'key' | 'encrypted' | 'retention_days' | 'metadata' | 'created_by' | 'created_at' | 'last_seq' | 'archived_at' | 'visibility'
>;

/** A room as read for its public shape: its columns and how many members it has. */
export type RoomRow = RoomFields & { member_count: number };

/** `(select count(*) from membership x where x.room_id = r.id)`: the member count of the room `r`. */
export function memberCount(eb: ExpressionBuilder<Tables & { r: Tables['room'] }, 'r'>) {
  return eb
    .selectFrom('membership as x')
    .select((x) => x.fn.countAll<number>().as('n'))
    .whereRef('x.room_id', '=', 'r.id')
    .$asScalar();
}

/** The public shape of a room, as seen by a caller with `role`. */
export function toRoomDto(r: RoomRow, role: MemberRole): RoomDto {
  return {
    id: r.id,
    kind: r.kind as RoomKind,
    name: r.name,
    topic: r.topic,
    key: r.key,
    encrypted: r.encrypted,
    retentionDays: r.retention_days,
    metadata: r.metadata,
    createdBy: r.created_by,
    createdAt: r.created_at,
    lastSeq: r.last_seq,
    myRole: role,
    memberCount: r.member_count,
    archivedAt: r.archived_at,
    visibility: r.visibility as RoomVisibility,
  };
}

/** A room's row with its member count (none: no such room). */
export function roomRow(db: Db, roomId: string): Promise<RoomRow | undefined> {
  return db
    .selectFrom('room as r')
    .select([...ROOM_FIELDS, (eb) => memberCount(eb).as('member_count')])
    .where('r.id', '=', roomId)
    .executeTakeFirst();
}

/** The rooms of a tenant linked to an external key (`order:123`). */
export async function roomIdsByKey(db: Db, tenant: string, key: string): Promise<string[]> {
  const rows = await db.selectFrom('room').select('id').where('tenant', '=', tenant).where('key', '=', key).execute();
  return rows.map((r) => r.id);
}

/** The direct room of a pair of users (`directKey`, see `directKeyOf`), if it exists. */
export async function directRoomId(db: Db, tenant: string, directKey: string): Promise<string | undefined> {
  const row = await db.selectFrom('room').select('id').where('tenant', '=', tenant).where('direct_key', '=', directKey).executeTakeFirst();
  return row?.id;
}

/** The length of `room.direct_key` and of `room.name` (src/store/entities.ts). */
const DIRECT_KEY_LENGTH = 300;
const ROOM_NAME_LENGTH = 200;

/**
 * The key that makes a direct room unique per pair of users (in either order): the sorted pair as
 * JSON. Two user ids of up to 128 characters, escaped in JSON (`"` and `\` take two, a lone
 * surrogate six), can make it longer than the column: such a key is replaced by its SHA-256
 * (`sha256:<hex>`, stable, so the pair still has exactly one room; a JSON key starts with `[`, so
 * the two forms never meet). Keys that fit keep their form, so existing rooms keep their key.
 */
export function directKeyOf(pair: readonly [string, string]): string {
  const key = JSON.stringify([...pair].sort());
  return key.length <= DIRECT_KEY_LENGTH ? key : `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

/** The name of a pair's direct room: the sorted ids joined by a comma, cut to the column's length (at a character boundary). */
export function directRoomName(pair: readonly [string, string]): string {
  return clip([...pair].sort().join(', '), ROOM_NAME_LENGTH);
}

export interface NewRoom {
  id: string;
  tenant: string;
  kind: RoomKind;
  name: string;
  topic: string | null;
  key: string | null;
  /** For direct rooms only: `directKeyOf` the pair. */
  directKey: string | null;
  encrypted: boolean;
  metadata: JsonObject | null;
  createdBy: string;
  /** Default `private`. */
  visibility?: RoomVisibility;
}

/**
 * Inserts a room (no members, `last_seq` 0). A second room with the same external key or the
 * same direct pair in the tenant fails the unique key: see `isRoomKeyTaken`, `isDirectRoomTaken`.
 */
export async function insertRoom(tx: Tx, room: NewRoom): Promise<void> {
  await tx.db
    .insertInto('room')
    .values({
      id: room.id,
      tenant: room.tenant,
      kind: room.kind,
      name: room.name,
      topic: room.topic,
      key: room.key,
      direct_key: room.directKey,
      encrypted: room.encrypted,
      metadata: room.metadata === null ? null : jsonb(room.metadata),
      visibility: room.visibility ?? 'private',
      created_by: room.createdBy,
      last_seq: 0,
      created_at: now(),
      updated_at: now(),
    })
    .execute();
}

/** The insert failed because the tenant already has a room with this external key. */
export const isRoomKeyTaken = (err: unknown) => violatesUnique(err, 'room_tenant_key_unique');

/** The insert failed because the pair's direct room exists already (created concurrently). */
export const isDirectRoomTaken = (err: unknown) => violatesUnique(err, 'room_tenant_direct_key_unique');

/** The room's name, topic, metadata, retention and visibility, its row locked until the transaction ends (none: no such room). */
export async function lockRoomNaming(
  tx: Tx,
  roomId: string,
): Promise<{ name: string; topic: string | null; metadata: JsonObject | null; retention_days: number | null; visibility: RoomVisibility } | undefined> {
  const row = await tx.db.selectFrom('room').select(['name', 'topic', 'metadata', 'retention_days', 'visibility']).where('id', '=', roomId).forUpdate().executeTakeFirst();
  return row && { ...row, visibility: row.visibility as RoomVisibility };
}

/** Sets the room's name and topic. */
export async function setRoomNaming(tx: Tx, roomId: string, naming: { name: string; topic: string | null }): Promise<void> {
  await tx.db.updateTable('room').set({ name: naming.name, topic: naming.topic }).where('id', '=', roomId).execute();
}

/** Replaces the room's metadata (null: none). */
export async function setRoomMetadata(tx: Tx, roomId: string, metadata: JsonObject | null): Promise<void> {
  await tx.db
    .updateTable('room')
    .set({ metadata: metadata === null ? null : jsonb(metadata) })
    .where('id', '=', roomId)
    .execute();
}

/** Sets how many days the room's messages are kept (null: the server default). */
export async function setRetentionDays(tx: Tx, roomId: string, days: number | null): Promise<void> {
  await tx.db.updateTable('room').set({ retention_days: days }).where('id', '=', roomId).execute();
}

/** A row of a user's room list: the room, the user's membership (if any), unread count and newest message id. */
export type RoomListRow = RoomRow & {
  /** A MemberRole (`member` without a membership). */
  role: string;
  last_read_seq: number;
  unread_count: number;
  /** The version of the counts (src/store/receipts.ts `countsVersion`): the same for every row of one read. */
  version: number;
  last_message_id: string | null;
};

/**
 * Where a page of a room list starts: strictly after the room `roomId` whose activity was
 * `activityAt` (the last room of the page before). A room's activity is the `created_at` of its
 * newest message (by seq), else its own `created_at`, to the millisecond: exactly the
 * `lastMessage.createdAt ?? createdAt` of its list item (a JavaScript date holds milliseconds).
 */
export interface RoomListCursor {
  activityAt: Date;
  roomId: string;
}

/** Which rooms of a user's list, and which page of them. */
export interface RoomListQuery {
  /** Also every support room of the tenant the user is not banned from (support agents). */
  supportRooms: boolean;
  /** The archived rooms only, or only the others. */
  archived: boolean;
  /** The page starts after this room (none: with the most recently active room). */
  before: RoomListCursor | null;
  limit: number;
}

/**
 * A page of the rooms of a user in a tenant (with `supportRooms`, also every support room of the
 * tenant the user is not banned from), the archived ones or the others (`archived`), by activity
 * (see `RoomListCursor`), newest first, then by room id (descending): at most `limit` rooms after
 * `before`. Each with the user's role and read position (`member` and 0 without a membership), the
 * unread count and its version (src/store/receipts.ts) and the id of the newest message.
 *
 * Two steps in one statement: `page` picks the page's rooms (each room's activity from the newest
 * message on `message_room_seq_unique`, one index probe per candidate room); member and unread
 * counts are computed for the page's rooms only, after its ORDER BY and LIMIT.
 */
export function roomListRows(db: Db, tenant: string, userId: string, q: RoomListQuery): Promise<RoomListRow[]> {
  const { before } = q;
  return db
    .with('page', (qc) =>
      qc
        .selectFrom('room as r')
        .leftJoin('membership as mb', (j) => j.onRef('mb.room_id', '=', 'r.id').on('mb.user_id', '=', userId))
        .leftJoinLateral(
          (eb) => eb.selectFrom('message as m').select(['m.id', 'm.created_at']).whereRef('m.room_id', '=', 'r.id').orderBy('m.seq', 'desc').limit(1).as('lm'),
          (j) => j.onTrue(),
        )
        .select((eb) => ['r.id', 'lm.id as last_message_id', activityOf(eb).as('activity_at')])
        .where('r.tenant', '=', tenant)
        // Support agents: every support room of the tenant they are not banned from (`supportRoomOf`).
        .where((eb) => (q.supportRooms ? eb.or([eb('mb.user_id', 'is not', null), supportRoomOf(eb, userId)]) : eb('mb.user_id', 'is not', null)))
        .where('r.archived_at', q.archived ? 'is not' : 'is', null)
        .$if(before !== null, (qb) =>
          qb.where((eb) => sql<boolean>`(${activityOf(eb)}, ${eb.ref('r.id')}) < (${before!.activityAt}::timestamptz, ${before!.roomId}::uuid)`),
        )
        .orderBy('activity_at', 'desc')
        .orderBy('r.id', 'desc')
        .limit(q.limit),
    )
    .selectFrom('page as p')
    .innerJoin('room as r', 'r.id', 'p.id')
    .leftJoin('membership as mb', (j) => j.onRef('mb.room_id', '=', 'r.id').on('mb.user_id', '=', userId))
    .select((eb) => [
      ...ROOM_FIELDS,
      memberCount(eb).as('member_count'),
      eb.fn.coalesce('mb.role', eb.val('member')).as('role'),
      eb.fn.coalesce('mb.last_read_seq', eb.val(0)).as('last_read_seq'),
      eb
        .case()
        .when('mb.user_id', 'is', null)
        .then(0)
        .else(unreadCount({ roomId: eb.ref('mb.room_id'), userId: eb.ref('mb.user_id'), lastReadSeq: eb.ref('mb.last_read_seq'), lastSeq: eb.ref('r.last_seq') }))
        .end()
        .as('unread_count'),
      countsVersion(),
      'p.last_message_id',
    ])
    .orderBy('p.activity_at', 'desc')
    .orderBy('p.id', 'desc')
    .execute();
}

/** A room's activity in the room list's page query: its newest message's `created_at`, else its own, cut to the millisecond. */
function activityOf(eb: ExpressionBuilder<{ r: Tables['room']; lm: { created_at: Date | null } }, 'r' | 'lm'>) {
  return sql<Date>`date_trunc('milliseconds', coalesce(${eb.ref('lm.created_at')}, ${eb.ref('r.created_at')}))`;
}

/** Message rows by id (the newest messages of a room list), in no particular order. */
export function messageRowsByIds(db: Db, ids: string[]): Promise<MessageRow[]> {
  if (ids.length === 0) return Promise.resolve([]);
  return db.selectFrom('message').select(MESSAGE_FIELDS).where('id', 'in', ids).execute();
}

/**
 * Archives (`at` a date: the database's clock is used) or unarchives (null) the room, its row locked
 * until the transaction ends. False when nothing changed (archived already / not archived).
 */
export async function setArchived(tx: Tx, roomId: string, archive: boolean): Promise<boolean> {
  const row = await tx.db
    .updateTable('room')
    .set({ archived_at: archive ? now() : null })
    .where('id', '=', roomId)
    .where('archived_at', archive ? 'is' : 'is not', null)
    .returning('id')
    .executeTakeFirst();
  return row !== undefined;
}

/** Sets the room's visibility. */
export async function setVisibility(tx: Tx, roomId: string, visibility: RoomVisibility): Promise<void> {
  await tx.db.updateTable('room').set({ visibility }).where('id', '=', roomId).execute();
}

/**
 * Deletes the room: its memberships, bans, meetings (with participants) and everything else holding
 * a `room_id` go with it through the foreign keys' `on delete cascade` (src/store/entities.ts); its
 * messages (with their edits and reactions, by their keys) and its events have no foreign key to the
 * room and are deleted here, after the room's row: from then on the row is locked (no send can add
 * to the room), and each statement sees what committed before it. Inbox items are per user and keep
 * no key to the room; they stay. False when there was no such room.
 */
export async function deleteRoom(tx: Tx, roomId: string): Promise<boolean> {
  const row = await tx.db.deleteFrom('room').where('id', '=', roomId).returning('id').executeTakeFirst();
  if (row === undefined) return false;
  await tx.db.deleteFrom('message').where('room_id', '=', roomId).execute();
  await tx.db.deleteFrom('room_event').where('room_id', '=', roomId).execute();
  return true;
}

/** Where a page of the directory starts: strictly after the room `roomId` named `name` (the last room of the page before). */
export interface DirectoryCursor {
  name: string;
  roomId: string;
}

/**
 * Public, non-archived rooms of a tenant whose name or topic contains `query` (case-insensitive;
 * none: all), by name then id, at most `limit` after `after` (none: from the first); with their
 * member count and whether `userId` is a member.
 */
export function directoryRows(db: Db, tenant: string, userId: string, query: string | null, limit: number, after: DirectoryCursor | null = null) {
  return directoryQuery(db, tenant, userId, query, limit, after).execute();
}

/**
 * The statement of `directoryRows`, not run (a benchmark explains it). The cursor is a row-value
 * comparison on the order's own columns, so `room_directory_idx` (tenant, name, id) starts its scan
 * at the cursor instead of reading and skipping the pages before.
 */
export function directoryQuery(db: Db, tenant: string, userId: string, query: string | null, limit: number, after: DirectoryCursor | null = null) {
  const pattern = query === null ? null : `%${query.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  return db
    .selectFrom('room as r')
    .select((eb) => [
      'r.id',
      'r.kind',
      'r.name',
      'r.topic',
      'r.metadata',
      'r.created_at',
      memberCount(eb).as('member_count'),
      eb.exists(eb.selectFrom('membership as y').select('y.user_id').whereRef('y.room_id', '=', 'r.id').where('y.user_id', '=', userId)).as('member'),
    ])
    .where('r.tenant', '=', tenant)
    .where('r.visibility', '=', 'public')
    .where('r.archived_at', 'is', null)
    .$if(pattern !== null, (q) => q.where((eb) => eb.or([eb('r.name', 'ilike', pattern!), eb('r.topic', 'ilike', pattern!)])))
    .$if(after !== null, (q) => q.where((eb) => eb(eb.refTuple('r.name', 'r.id'), '>', eb.tuple(after!.name, after!.roomId))))
    .orderBy('r.name')
    .orderBy('r.id')
    .limit(limit);
}

/** What `room.join` checks of a room (none: no such room). */
export function joinableRoom(tx: Tx, roomId: string): Promise<{ tenant: string; visibility: string; archived_at: Date | null } | undefined> {
  return tx.db.selectFrom('room').select(['tenant', 'visibility', 'archived_at']).where('id', '=', roomId).executeTakeFirst();
}

/** When the room was archived (null: it is not; also null when there is no such room). */
export async function archivedAt(db: Db, roomId: string): Promise<Date | null> {
  const row = await db.selectFrom('room').select('archived_at').where('id', '=', roomId).executeTakeFirst();
  return row?.archived_at ?? null;
}

/** What the activity feed needs of a room: its tenant, last seq, members and newest message's id (null in an empty room). */
export interface RoomHead {
  id: string;
  tenant: string;
  last_seq: number;
  members: string[];
  last_message_id: string | null;
}

/** The heads of the rooms that still exist, in one query whatever their number. */
/** The tenant of a room (null: no such room). */
export async function roomTenant(db: Db, roomId: string): Promise<string | null> {
  const row = await db.selectFrom('room').select('tenant').where('id', '=', roomId).executeTakeFirst();
  return row?.tenant ?? null;
}

export function roomHeads(db: Db, roomIds: readonly string[]): Promise<RoomHead[]> {
  if (roomIds.length === 0) return Promise.resolve([]);
  return db
    .selectFrom('room as r')
    .select((eb) => [
      'r.id',
      'r.tenant',
      'r.last_seq',
      eb.selectFrom('message as m').select('m.id').whereRef('m.room_id', '=', 'r.id').orderBy('m.seq', 'desc').limit(1).as('last_message_id'),
      eb
        .selectFrom('membership as mb')
        .select((ib) => ib.fn.coalesce(ib.fn.agg<string[]>('array_agg', ['mb.user_id']), ib.val<string[]>([])).as('ids'))
        .whereRef('mb.room_id', '=', 'r.id')
        .$asScalar()
        .as('members'),
    ])
    .where('r.id', 'in', roomIds)
    .execute() as Promise<RoomHead[]>;
}
