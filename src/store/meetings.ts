import { type Selectable, sql } from 'kysely';
import type { Db, Tables } from './database.js';
import { now, type Tx } from './tx.js';

/** The columns of `meeting` every meeting read selects: what a MeetingDto is built from. */
export const MEETING_FIELDS = [
  'id',
  'tenant',
  'room_id',
  'created_by',
  'title',
  'provider',
  'url',
  'status',
  'created_at',
  'started_at',
  'ended_at',
  'expires_at',
] as const satisfies readonly (keyof Tables['meeting'])[];

/** A meeting row as read: typed by the entity (src/store/entities.ts). */
export type MeetingRow = Pick<Selectable<Tables['meeting']>, (typeof MEETING_FIELDS)[number]>;

/** One provider connection of a meeting, as its DTO needs it. */
export type ParticipantRow = Pick<Selectable<Tables['meeting_participant']>, 'meeting_id' | 'user_id' | 'joined_at' | 'left_at'>;

export interface NewMeeting {
  id: string;
  tenant: string;
  roomId: string;
  createdBy: string;
  title: string | null;
  provider: string;
  providerRoomId: string | null;
  url: string;
  expiresAt: Date;
}

/** Writes a new meeting, `scheduled`, created at the database's now(). */
export async function insertMeeting(tx: Tx, m: NewMeeting): Promise<void> {
  await tx.db
    .insertInto('meeting')
    .values({
      id: m.id,
      tenant: m.tenant,
      room_id: m.roomId,
      created_by: m.createdBy,
      title: m.title,
      provider: m.provider,
      provider_room_id: m.providerRoomId,
      url: m.url,
      status: 'scheduled',
      created_at: now(),
      expires_at: m.expiresAt,
    })
    .execute();
}

/** The meeting of a tenant by id (none: absent or another tenant's). */
export function findMeeting(db: Db, meetingId: string, tenant: string): Promise<MeetingRow | undefined> {
  return db.selectFrom('meeting').select(MEETING_FIELDS).where('id', '=', meetingId).where('tenant', '=', tenant).executeTakeFirst();
}

/**
 * The meetings of a room not ended yet (scheduled or live, expired or not): read in a room deletion's
 * transaction (what it ends on the provider after commit, the rows go with the room, so one past its
 * expiry that the expiry sweep has not reached yet is ended there).
 */
export function openMeetingsOfRoom(db: Db, roomId: string): Promise<{ id: string; provider: string }[]> {
  return db.selectFrom('meeting').select(['id', 'provider']).where('room_id', '=', roomId).where('status', '<>', 'ended').orderBy('id').execute();
}

/**
 * In a room deletion's transaction, before the room's rows go: keeps every meeting of the room whose
 * join tokens may still be valid (not past `expires_at` + `marginMs` by the database's clock: no
 * token outlives its meeting's expiry), ended or not, in `deleted_meeting` until then. A provider
 * webhook of such a meeting's provider room (a join with one of those tokens, which makes LiveKit
 * create the room anew) then finds it (`findDeletedMeeting`). Returns how many were kept.
 */
export async function keepDeletedMeetings(tx: Tx, roomId: string, marginMs: number): Promise<number> {
  const keepUntil = sql<Date>`${sql.ref('expires_at')} + ${marginMs} * interval '1 millisecond'`;
  const res = await tx.db
    .insertInto('deleted_meeting')
    .columns(['meeting_id', 'provider', 'tenant', 'room_id', 'keep_until'])
    .expression((eb) =>
      eb
        .selectFrom('meeting')
        .select(['id', 'provider', 'tenant', 'room_id', keepUntil.as('keep_until')])
        .where('room_id', '=', roomId)
        .where(keepUntil, '>', now()),
    )
    .onConflict((oc) => oc.column('meeting_id').doNothing())
    .executeTakeFirst();
  return Number(res.numInsertedOrUpdatedRows ?? 0);
}

/** The meeting of a deleted room that a webhook of `provider` names, while it is kept (`keepDeletedMeetings`). */
export function findDeletedMeeting(db: Db, meetingId: string, provider: string): Promise<{ room_id: string; tenant: string } | undefined> {
  return db
    .selectFrom('deleted_meeting')
    .select(['room_id', 'tenant'])
    .where('meeting_id', '=', meetingId)
    .where('provider', '=', provider)
    .where('keep_until', '>', now())
    .executeTakeFirst();
}

/** Forgets the deleted rooms' meetings kept past `keep_until` (their tokens have expired). Returns how many. */
export async function forgetDeletedMeetings(db: Db): Promise<number> {
  const res = await db.deleteFrom('deleted_meeting').where('keep_until', '<=', now()).executeTakeFirst();
  return Number(res.numDeletedRows);
}

/**
 * The meetings of a room whose calls may still run: not ended and not past their expiry (by the
 * database's clock; an expired one's provider room is ended at its expiry). Read after a ban or
 * removal has committed: the meetings the user is removed from.
 */
export function runningMeetingsOfRoom(db: Db, roomId: string): Promise<{ id: string; provider: string }[]> {
  return db
    .selectFrom('meeting')
    .select(['id', 'provider'])
    .where('room_id', '=', roomId)
    .where('status', '<>', 'ended')
    .where('expires_at', '>', now())
    .orderBy('id')
    .execute();
}

/**
 * The meetings of `provider` not ended, soonest to expire first, at most `limit`, each with the
 * milliseconds until its expiry by the database's clock (0 or less: expired). The expiry sweep
 * (src/services/meetings/expiry.ts) ends the expired ones and wakes at the next.
 */
export async function meetingsByExpiry(db: Db, provider: string, limit: number): Promise<{ id: string; dueInMs: number }[]> {
  const rows = await meetingsByExpiryQuery(db, provider, limit).execute();
  return rows.map((r) => ({ id: r.id, dueInMs: Number(r.ms) }));
}

/** The statement of `meetingsByExpiry`, not run: a range of `meeting_open_expiry_idx` (a test explains it). */
export function meetingsByExpiryQuery(db: Db, provider: string, limit: number) {
  return db
    .selectFrom('meeting')
    .select(['id', sql<string>`ceil(extract(epoch from expires_at - clock_timestamp()) * 1000)`.as('ms')])
    .where('provider', '=', provider)
    .where('status', '<>', 'ended')
    .orderBy('expires_at')
    .orderBy('id')
    .limit(limit);
}

/** A room's meetings, newest first, at most `limit`. */
export function listMeetings(db: Db, roomId: string, limit: number): Promise<MeetingRow[]> {
  return db
    .selectFrom('meeting')
    .select(MEETING_FIELDS)
    .where('room_id', '=', roomId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'asc')
    .limit(limit)
    .execute();
}

/** The participants of several meetings, oldest connection first (ties by session id). */
export function participantsOf(db: Db, meetingIds: string[]): Promise<ParticipantRow[]> {
  if (meetingIds.length === 0) return Promise.resolve([]);
  return db
    .selectFrom('meeting_participant')
    .select(['meeting_id', 'user_id', 'joined_at', 'left_at'])
    .where('meeting_id', 'in', meetingIds)
    .orderBy('joined_at', 'asc')
    .orderBy('session_id', 'asc')
    .execute();
}

/** The meeting a webhook of `provider` names, locked for the rest of the transaction. */
export function lockProviderMeeting(tx: Tx, meetingId: string, provider: string): Promise<MeetingRow | undefined> {
  return tx.db
    .selectFrom('meeting')
    .select(MEETING_FIELDS)
    .where('id', '=', meetingId)
    .where('provider', '=', provider)
    .forUpdate()
    .executeTakeFirst();
}

/** scheduled -> live; only from scheduled. Returns the meeting's title when it moved, else undefined. */
export function markMeetingLive(tx: Tx, meetingId: string, at: Date): Promise<{ title: string | null; tenant: string } | undefined> {
  return tx.db
    .updateTable('meeting')
    .set({ status: 'live', started_at: at })
    .where('id', '=', meetingId)
    .where('status', '=', 'scheduled')
    .returning(['title', 'tenant'])
    .executeTakeFirst();
}

/** -> ended, unless it already is. Returns the meeting's room and title when it moved, else undefined. */
export function markMeetingEnded(
  tx: Tx,
  meetingId: string,
  at: Date,
  by: string,
): Promise<{ room_id: string; title: string | null; tenant: string } | undefined> {
  return tx.db
    .updateTable('meeting')
    .set({ status: 'ended', ended_at: at, ended_by: by })
    .where('id', '=', meetingId)
    .where('status', '<>', 'ended')
    .returning(['room_id', 'title', 'tenant'])
    .executeTakeFirst();
}

export interface ParticipantSeen {
  meetingId: string;
  sessionId: string;
  userId: string;
  name: string | null;
  joinedAt: Date;
  /** Null for a join. */
  leftAt: Date | null;
}

/**
 * Merges a join or a leave into the participant row of its provider session, whatever order they
 * arrive in: the earliest join wins, a leave only moves the end later, a name once known stays.
 */
export async function upsertParticipant(tx: Tx, p: ParticipantSeen): Promise<void> {
  await tx.db
    .insertInto('meeting_participant')
    .values({ meeting_id: p.meetingId, session_id: p.sessionId, user_id: p.userId, name: p.name, joined_at: p.joinedAt, left_at: p.leftAt })
    .onConflict((oc) =>
      oc.columns(['meeting_id', 'session_id']).doUpdateSet((eb) => ({
        joined_at: eb.fn<Date>('least', [eb.ref('meeting_participant.joined_at'), eb.ref('excluded.joined_at')]),
        left_at: eb
          .case()
          .when('excluded.left_at', 'is', null)
          .then(eb.ref('meeting_participant.left_at'))
          .else(
            eb.fn<Date>('greatest', [eb.fn.coalesce('meeting_participant.left_at', 'excluded.left_at'), eb.ref('excluded.left_at')]),
          )
          .end(),
        name: eb.fn.coalesce('excluded.name', 'meeting_participant.name'),
      })),
    )
    .execute();
}

/** Records a webhook delivery's event id; false when it was recorded before (a duplicate). */
export async function recordWebhookEvent(tx: Tx, provider: string, eventId: string): Promise<boolean> {
  const fresh = await tx.db
    .insertInto('video_webhook_event')
    .values({ provider, event_id: eventId, received_at: now() })
    .onConflict((oc) => oc.doNothing())
    .returning('event_id')
    .execute();
  return fresh.length > 0;
}

/** Forgets webhook event ids received more than a week ago. */
export async function forgetOldWebhookEvents(db: Db): Promise<void> {
  await db
    .deleteFrom('video_webhook_event')
    .where('received_at', '<', sql<Date>`now() - interval '7 days'`)
    .execute();
}

/**
 * Who a hashed provider identity in a meeting may stand for besides the room's members
 * (`memberIdsLongerThan`): users banned from the room, users recorded in the meeting's earlier
 * sessions, and, in a support room, the tenant's support agents (by the roles of the last token the
 * server saw of them). User ids longer than `length` only (shorter ones are their own identity).
 */
export async function nonMemberIdsLongerThan(db: Db, meeting: { id: string; room_id: string }, length: number): Promise<string[]> {
  const longer = sql<boolean>`length(${sql.ref('user_id')}) > ${length}`;
  const rows = await db
    .selectFrom('room_ban')
    .select('user_id')
    .where('room_id', '=', meeting.room_id)
    .where(longer)
    .union(db.selectFrom('meeting_participant').select('user_id').where('meeting_id', '=', meeting.id).where(longer))
    .union(
      db
        .selectFrom('chat_user as u')
        .innerJoin('room as r', 'r.tenant', 'u.tenant')
        .select('u.id as user_id')
        .where('r.id', '=', meeting.room_id)
        .where('r.kind', '=', 'support')
        .where(sql<boolean>`'support' = any(${sql.ref('u.roles')})`)
        .where(sql<boolean>`length(${sql.ref('u.id')}) > ${length}`),
    )
    .execute();
  return rows.map((r) => r.user_id);
}
