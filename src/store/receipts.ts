import { type Expression, expressionBuilder, type RawBuilder, sql } from 'kysely';
import type { Db, Tables } from './database.js';
import { now } from './tx.js';
import type { KeyPage } from './members.js';
import { UNREAD_CAP, UNREAD_WINDOW } from './unread-bounds.js';

/** The columns of a membership row of the outer query, as the unread counts see it (`eb.ref('mb.room_id')` and so on). */
export interface ReadPosition {
  roomId: Expression<string | null>;
  userId: Expression<string | null>;
  lastReadSeq: Expression<number | null>;
  /** The room's `last_seq` (the counts look at its newest `UNREAD_WINDOW` seqs only). */
  lastSeq: Expression<number | null>;
}

export { UNREAD_CAP, UNREAD_WINDOW };

/** The membership's room's messages in its newest `UNREAD_WINDOW` seqs after its read position, not sent by its user, not deleted. */
function unreadWindow(at: ReadPosition) {
  return expressionBuilder<Tables>()
    .selectFrom('message as u')
    .where('u.room_id', '=', at.roomId)
    .where('u.seq', '>', sql<number>`greatest(${at.lastReadSeq}, ${at.lastSeq} - ${sql.lit(UNREAD_WINDOW)})`)
    .where('u.sender_id', '<>', at.userId)
    .where('u.deleted_at', 'is', null);
}

/** `count(*)` of the window's rows that match `filter`, at most `UNREAD_CAP`. */
const capped = (filter: RawBuilder<unknown>) => sql<number>`least(count(*) filter (where ${filter}), ${sql.lit(UNREAD_CAP)})::int`;

/** The one definition of an unread message in the window: not `system`. */
const isUnread = () => sql`u.kind <> 'system'`;

/** An unread mention of the membership's user: an unread message that mentions them (so never more than the unread). */
const mentions = (at: ReadPosition) => sql`${isUnread()} and jsonb_exists(u.mentions, ${at.userId})`;

/**
 * The one definition of "unread": messages after my last read seq, not sent by me, not deleted,
 * not `system`, among the room's newest `UNREAD_WINDOW`, counted up to `UNREAD_CAP`. A correlated
 * subquery per membership row of the outer query (`room.list`).
 */
export function unreadCount(at: ReadPosition) {
  return unreadWindow(at).select(capped(isUnread()).as('n')).$asScalar();
}

/**
 * The unread count and the unread mentions (in the same window, up to `UNREAD_CAP`) in one read of
 * the window: a lateral subquery of one row per membership row (`receipt.unread`, `unread.changed`,
 * `room.activity`).
 */
function unreadAndMentions(at: ReadPosition) {
  return unreadWindow(at).select([capped(isUnread()).as('unread'), capped(mentions(at)).as('mentions')]);
}

/** The query of `unreadCounts` (for every room of the user when `roomIds` is not given). */
export function unreadCountsQuery(db: Db, tenant: string, userId: string, roomIds?: readonly string[]) {
  return db
    .selectFrom('membership as mb')
    .innerJoin('room as r', (j) => j.onRef('r.id', '=', 'mb.room_id').on('r.tenant', '=', tenant))
    .innerJoinLateral(
      (eb) =>
        unreadAndMentions({ roomId: eb.ref('mb.room_id'), userId: eb.ref('mb.user_id'), lastReadSeq: eb.ref('mb.last_read_seq'), lastSeq: eb.ref('r.last_seq') }).as('c'),
      (j) => j.onTrue(),
    )
    .select(['mb.room_id', 'mb.last_read_seq', 'c.unread', 'c.mentions'])
    .where('mb.user_id', '=', userId)
    .$if(roomIds !== undefined, (q) => q.where('mb.room_id', 'in', roomIds ?? []))
    .orderBy('mb.room_id');
}

/**
 * The column `version` of the counts a statement reads (`unread.changed`, `room.activity`, each
 * `room.list` entry): its snapshot's xmax, one past the newest transaction id finished when the
 * snapshot was taken (64 bits with the epoch, far below 2^53: an int8, read as a number). A later
 * snapshot never has a lower one, so counts read later never get a lower version, whatever moved
 * the read position (a read, a mark unread). On a streaming replica (`room.list` may be read there)
 * it is the xmax of the primary's history the replica has replayed: a replica behind gives a lower
 * version, as it gives older counts. Computed once per statement (an InitPlan), not per row.
 */
export const countsVersion = () => sql<number>`(select pg_snapshot_xmax(pg_current_snapshot())::text::int8)`.as('version');

/**
 * My counts of the rooms right after my read position moved (`unread.changed`), with their version.
 * A statement of its own takes a transaction id first (after the move committed; it writes nothing,
 * so its commit does not wait for the disk), so the counts' snapshot has a higher version than any
 * snapshot that could not see the move, even one taken while the move was committing: counts read
 * before the move (a `room.activity` on its way) always have a lower version.
 */
export async function unreadCountsAfterMove(
  db: Db,
  tenant: string,
  userId: string,
  roomIds: readonly string[],
): Promise<{ room_id: string; last_read_seq: number; unread: number; mentions: number; version: number }[]> {
  if (roomIds.length === 0) return [];
  await sql`select pg_current_xact_id()`.execute(db);
  return unreadCountsQuery(db, tenant, userId, roomIds).select(countsVersion()).execute();
}

/** Unread and unread-mention counts of every room of the user in the tenant, by room id. */
export function unreadCounts(
  db: Db,
  tenant: string,
  userId: string,
  roomIds?: readonly string[],
): Promise<{ room_id: string; last_read_seq: number; unread: number; mentions: number }[]> {
  if (roomIds?.length === 0) return Promise.resolve([]);
  return unreadCountsQuery(db, tenant, userId, roomIds).execute();
}

// A membership's two read positions: `last_read_seq` is the user's own (the unread counts above,
// `unread.changed`, the room list, push and digests count from it; `receipt.markUnread` moves it
// back); `receipt_seq` is the read receipt the room sees (`receipt.read`, `receipt.readers`,
// `room.members`) and only ever moves forward. `last_read_seq <= receipt_seq` always: reads move
// both, marking unread moves only the first. `last_read_at` is when the receipt last moved.

/** A read that moved: my new position and, when the room's receipt moved with it, the new receipt (else null). */
export interface ReadMove {
  room_id: string;
  last_read_seq: number;
  receipt_seq: number | null;
}

/**
 * Moves both of the user's read positions forward to `seq`, capped at the room's last seq; never
 * back. Nothing when neither moved (or the user is no member).
 */
export async function advanceReadPosition(db: Db, roomId: string, userId: string, seq: number): Promise<ReadMove | undefined> {
  return (await moveForward(db, userId, { roomId, seq }))[0];
}

/**
 * Moves my read position back so that `seq` and what follows are unread again for me; never
 * forward. The receipt (`receipt_seq`) stays: the room does not see it. Returns my new position, or
 * nothing when it did not move (or the user is no member).
 */
export async function rewindReadPosition(db: Db, roomId: string, userId: string, seq: number): Promise<number | undefined> {
  const row = await db
    .updateTable('membership')
    .set({ last_read_seq: seq - 1 })
    .where('room_id', '=', roomId)
    .where('user_id', '=', userId)
    .where('last_read_seq', '>', seq - 1)
    .returning('last_read_seq')
    .executeTakeFirst();
  return row?.last_read_seq;
}

/** Every room of the user in the tenant read up to its last seq (both positions); the rooms that moved. */
export function readEverything(db: Db, tenant: string, userId: string): Promise<ReadMove[]> {
  return moveForward(db, userId, { tenant });
}

/**
 * One statement for both positions, up to the target (`seq` capped at the room's last seq, or the
 * last seq). The rows are locked as they are read (in room order), so whether a receipt moved is
 * exact when reads of the same user race; the time of the read (`last_read_at`) is set only when
 * the receipt moves.
 */
function moveForward(db: Db, userId: string, where: { roomId: string; seq: number } | { tenant: string }): Promise<ReadMove[]> {
  return db
    .with('cur', (qb) =>
      qb
        .selectFrom('membership as o')
        .innerJoin('room as r', 'r.id', 'o.room_id')
        .select((eb) => [
          'o.room_id',
          'o.user_id',
          'o.receipt_seq',
          ('seq' in where ? eb.fn<number>('least', [eb.val(where.seq), 'r.last_seq']) : eb.ref('r.last_seq')).as('target'),
        ])
        .where('o.user_id', '=', userId)
        .where((eb) => ('roomId' in where ? eb('o.room_id', '=', where.roomId) : eb('r.tenant', '=', where.tenant)))
        .where((eb) => {
          const target = 'seq' in where ? eb.fn<number>('least', [eb.val(where.seq), 'r.last_seq']) : eb.ref('r.last_seq');
          return eb.or([eb('o.last_read_seq', '<', target), eb('o.receipt_seq', '<', target)]);
        })
        .orderBy('o.room_id')
        .forUpdate('o'),
    )
    .updateTable('membership as mb')
    .from('cur')
    .set((eb) => ({
      last_read_seq: eb.fn<number>('greatest', ['mb.last_read_seq', 'cur.target']),
      receipt_seq: eb.fn<number>('greatest', ['cur.receipt_seq', 'cur.target']),
      last_read_at: eb.case().when('cur.receipt_seq', '<', eb.ref('cur.target')).then(now()).else(eb.ref('mb.last_read_at')).end(),
    }))
    .whereRef('mb.room_id', '=', 'cur.room_id')
    .whereRef('mb.user_id', '=', 'cur.user_id')
    .returning((eb) => [
      'mb.room_id',
      'mb.last_read_seq',
      eb.case().when('cur.receipt_seq', '<', eb.ref('cur.target')).then(eb.ref('mb.receipt_seq')).else(null).end().as('receipt_seq'),
    ])
    .execute();
}

/** The user's own read position in the room (none: not a member). */
export async function readPosition(db: Db, roomId: string, userId: string): Promise<number | undefined> {
  const row = await db
    .selectFrom('membership')
    .select('last_read_seq')
    .where('room_id', '=', roomId)
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return row?.last_read_seq;
}

/** Members whose read receipt is at `seq` or later, by user id (a member's `markUnread` does not take them off). */
export function readersFrom(
  db: Db,
  roomId: string,
  seq: number,
  page: KeyPage,
): Promise<{ user_id: string; receipt_seq: number; last_read_at: Date | null }[]> {
  return db
    .selectFrom('membership')
    .select(['user_id', 'receipt_seq', 'last_read_at'])
    .where('room_id', '=', roomId)
    .where('receipt_seq', '>=', seq)
    .$if(page.after != null, (q) => q.where('user_id', '>', page.after!))
    .orderBy('user_id')
    .limit(page.limit)
    .execute();
}

/** Read positions and unread counts of the given (room, member) pairs (the activity feed's counts), with their version. */
export async function unreadCountsOfMembers(
  db: Db,
  pairs: readonly { roomId: string; userId: string }[],
): Promise<{ room_id: string; user_id: string; last_read_seq: number; unread: number; mentions: number; version: number }[]> {
  if (pairs.length === 0) return [];
  return db
    .selectFrom('membership as mb')
    .innerJoin('room as r', 'r.id', 'mb.room_id')
    .innerJoinLateral(
      (eb) =>
        unreadAndMentions({ roomId: eb.ref('mb.room_id'), userId: eb.ref('mb.user_id'), lastReadSeq: eb.ref('mb.last_read_seq'), lastSeq: eb.ref('r.last_seq') }).as('c'),
      (j) => j.onTrue(),
    )
    .select(['mb.room_id', 'mb.user_id', 'mb.last_read_seq', 'c.unread', 'c.mentions', countsVersion()])
    .where((eb) =>
      eb(
        eb.refTuple('mb.room_id', 'mb.user_id'),
        'in',
        pairs.map((p) => eb.tuple(p.roomId, p.userId)),
      ),
    )
    .execute();
}
