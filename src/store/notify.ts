import { sql } from 'kysely';
import type { Db } from './database.js';

/**
 * Notifications for people who are away (docs/OPERATIONS.md, "Notifications"): push devices,
 * preferences, the push queue (`notify_push`, one row per user and room, claimed with a lease like
 * the webhook outbox) and pending e-mail digests (`notify_digest`, one row per user).
 */

const now = () => sql<Date>`now()`;
const inMs = (ms: number) => sql<Date>`now() + ${ms} * interval '1 millisecond'`;

// ---------------------------------------------------------------------------------------------
// Devices

export interface DeviceRow {
  id: string;
  tenant: string;
  user_id: string;
  kind: string;
  endpoint: string;
  p256dh: string;
  auth: string;
  label: string | null;
  created_at: Date;
  last_push_at: Date | null;
}
const DEVICE_FIELDS = ['id', 'tenant', 'user_id', 'kind', 'endpoint', 'p256dh', 'auth', 'label', 'created_at', 'last_push_at'] as const;

/** Registers a push subscription; an endpoint registered before (by anyone: it is one browser) is taken over. */
export function upsertDevice(
  db: Db,
  d: { id: string; tenant: string; userId: string; kind: string; endpoint: string; p256dh: string; auth: string; label: string | null },
): Promise<DeviceRow> {
  return db
    .insertInto('push_device')
    .values({ id: d.id, tenant: d.tenant, user_id: d.userId, kind: d.kind, endpoint: d.endpoint, p256dh: d.p256dh, auth: d.auth, label: d.label, created_at: now() })
    .onConflict((oc) =>
      oc.column('endpoint').doUpdateSet((eb) => ({
        tenant: eb.ref('excluded.tenant'),
        user_id: eb.ref('excluded.user_id'),
        p256dh: eb.ref('excluded.p256dh'),
        auth: eb.ref('excluded.auth'),
        label: eb.ref('excluded.label'),
      })),
    )
    .returning(DEVICE_FIELDS)
    .executeTakeFirstOrThrow();
}

export function listDevices(db: Db, tenant: string, userId: string): Promise<DeviceRow[]> {
  return db.selectFrom('push_device').select(DEVICE_FIELDS).where('tenant', '=', tenant).where('user_id', '=', userId).orderBy('created_at').orderBy('id').execute();
}

export async function countDevices(db: Db, tenant: string, userId: string): Promise<number> {
  const r = await db
    .selectFrom('push_device')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('tenant', '=', tenant)
    .where('user_id', '=', userId)
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

export async function deleteDevice(db: Db, tenant: string, userId: string, id: string): Promise<boolean> {
  const r = await db.deleteFrom('push_device').where('tenant', '=', tenant).where('user_id', '=', userId).where('id', '=', id).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

/** Removes a device its push service no longer knows (404/410). */
export async function forgetDevice(db: Db, id: string): Promise<void> {
  await db.deleteFrom('push_device').where('id', '=', id).execute();
}

export async function markDevicePushed(db: Db, ids: string[]): Promise<void> {
  if (ids.length > 0) await db.updateTable('push_device').set({ last_push_at: now() }).where('id', 'in', ids).execute();
}

// ---------------------------------------------------------------------------------------------
// Preferences

export interface PreferenceRow {
  email: string;
  push: boolean;
  quiet_start: string | null;
  quiet_end: string | null;
  quiet_time_zone: string | null;
}

export function findPreference(db: Db, tenant: string, userId: string): Promise<PreferenceRow | undefined> {
  return db
    .selectFrom('notify_preference')
    .select(['email', 'push', 'quiet_start', 'quiet_end', 'quiet_time_zone'])
    .where('tenant', '=', tenant)
    .where('user_id', '=', userId)
    .executeTakeFirst();
}

export async function savePreference(db: Db, tenant: string, userId: string, p: PreferenceRow): Promise<void> {
  await db
    .insertInto('notify_preference')
    .values({ tenant, user_id: userId, ...p, updated_at: now() })
    .onConflict((oc) => oc.columns(['tenant', 'user_id']).doUpdateSet({ ...p, updated_at: now() }))
    .execute();
}

export interface RoomPreferenceRow {
  room_id: string;
  level: string;
  mute_until: Date | null;
}

/** The user's room preferences, of rooms they are still a member of (a left or deleted room's row is ignored). */
export function listRoomPreferences(db: Db, tenant: string, userId: string): Promise<RoomPreferenceRow[]> {
  return db
    .selectFrom('notify_room_preference as p')
    .innerJoin('membership as m', (j) => j.onRef('m.room_id', '=', 'p.room_id').onRef('m.user_id', '=', 'p.user_id'))
    .select(['p.room_id', 'p.level', 'p.mute_until'])
    .where('p.tenant', '=', tenant)
    .where('p.user_id', '=', userId)
    .orderBy('p.room_id')
    .execute();
}

export function findRoomPreference(db: Db, roomId: string, userId: string): Promise<RoomPreferenceRow | undefined> {
  return db.selectFrom('notify_room_preference').select(['room_id', 'level', 'mute_until']).where('room_id', '=', roomId).where('user_id', '=', userId).executeTakeFirst();
}

export async function saveRoomPreference(db: Db, p: { tenant: string; userId: string; roomId: string; level: string; muteUntil: Date | null }): Promise<void> {
  const set = { level: p.level, mute_until: p.muteUntil, updated_at: now() };
  await db
    .insertInto('notify_room_preference')
    .values({ room_id: p.roomId, user_id: p.userId, tenant: p.tenant, ...set })
    .onConflict((oc) => oc.columns(['room_id', 'user_id']).doUpdateSet(set))
    .execute();
}

// ---------------------------------------------------------------------------------------------
// The push queue

export type PushKind = 'mention' | 'direct' | 'reply' | 'message' | 'meeting.invite' | 'notification';

/** One thing a user may be told about. */
export interface PushItem {
  tenant: string;
  userId: string;
  roomId: string | null;
  kind: PushKind;
  messageId: string | null;
  messageSeq: number | null;
  fromUser: string | null;
  title: string | null;
  url: string | null;
}

/** The key of a user's queue row for a room. */
export const roomKeyOf = (roomId: string | null) => roomId ?? '-';

/** What the queue needs to know: which channels are configured, the coalescing window and the digest delay. */
export interface QueueSettings {
  push: boolean;
  digest: boolean;
  coalesceMs: number;
  digestDelayMs: number;
}

/**
 * Queues items: one upsert of the users' push rows (only users with a device; `pending` counts up,
 * the newest item is kept; a row that was idle is due at once, or when the coalescing window of its
 * last push ends) and one upsert of digest rows for mentions and direct messages of users with an
 * e-mail address who did not turn digests off (the earliest pending digest is kept). Rows are written
 * in user and room order (deadlock-free between concurrent writers).
 */
export async function enqueue(db: Db, items: PushItem[], s: QueueSettings): Promise<number> {
  if (items.length === 0) return 0;
  let written = 0;
  if (s.push) {
    const folded = new Map<string, PushItem & { n: number }>();
    for (const it of items) {
      const key = `${it.tenant}\u0000${it.userId}\u0000${roomKeyOf(it.roomId)}`;
      const prev = folded.get(key);
      folded.set(key, { ...it, n: (prev?.n ?? 0) + 1 });
    }
    const rows = [...folded.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, r]) => r);
    const input = JSON.stringify(
      rows.map((r) => ({
        tenant: r.tenant,
        user_id: r.userId,
        room_key: roomKeyOf(r.roomId),
        room_id: r.roomId,
        n: r.n,
        kind: r.kind,
        message_id: r.messageId,
        message_seq: r.messageSeq,
        from_user: r.fromUser,
        title: r.title?.slice(0, 300) ?? null,
        url: r.url?.slice(0, 2000) ?? null,
      })),
    );
    const res = await sql`
      insert into notify_push (tenant, user_id, room_key, room_id, pending, kind, message_id, message_seq, from_user, title, url, due_at, attempts, updated_at)
      select i.tenant, i.user_id, i.room_key, i.room_id, i.n, i.kind, i.message_id, i.message_seq, i.from_user, i.title, i.url, now(), 0, now()
      from json_to_recordset(${input}::json) as i(tenant text, user_id text, room_key text, room_id uuid, n int, kind text, message_id uuid,
        message_seq bigint, from_user text, title text, url text)
      where exists (select 1 from push_device d where d.tenant = i.tenant and d.user_id = i.user_id)
      on conflict (tenant, user_id, room_key) do update set
        pending = notify_push.pending + excluded.pending,
        room_id = excluded.room_id, kind = excluded.kind, message_id = excluded.message_id, message_seq = excluded.message_seq,
        from_user = excluded.from_user, title = excluded.title, url = excluded.url, updated_at = now(),
        due_at = case when notify_push.pending > 0 then notify_push.due_at
          else greatest(now(), coalesce(notify_push.last_sent_at + ${s.coalesceMs} * interval '1 millisecond', now())) end,
        attempts = case when notify_push.pending > 0 then notify_push.attempts else 0 end`.execute(db);
    written += Number(res.numAffectedRows ?? 0);
  }
  if (s.digest) {
    // Queued in the transaction of what it is about: now() is that item's time, where the digest starts.
    const users = [...new Set(items.filter((i) => i.kind === 'mention' || i.kind === 'direct').map((i) => `${i.tenant}\u0000${i.userId}`))].sort();
    if (users.length > 0) {
      const input = JSON.stringify(users.map((u) => ({ tenant: u.split('\u0000')[0], user_id: u.split('\u0000')[1] })));
      const res = await sql`
        insert into notify_digest (tenant, user_id, since, due_at, attempts)
        select i.tenant, i.user_id, now(), now() + ${s.digestDelayMs} * interval '1 millisecond', 0
        from json_to_recordset(${input}::json) as i(tenant text, user_id text)
        join chat_user u on u.tenant = i.tenant and u.id = i.user_id and u.email is not null
        where not exists (select 1 from notify_preference p where p.tenant = i.tenant and p.user_id = i.user_id and p.email = 'off')
        on conflict (tenant, user_id) do nothing`.execute(db);
      written += Number(res.numAffectedRows ?? 0);
    }
  }
  return written;
}

/** A new message as the queue sees it (in its transaction). */
export interface QueuedMessage {
  roomId: string;
  messageId: string;
  seq: number;
  senderId: string;
  replyToId: string | null;
  mentions: string[];
}

/**
 * Who is to be told about new messages besides the mentioned (who get an inbox item): the other member
 * of a direct room, members who wrote in the thread a reply belongs to, and members who set the room
 * to `all`. One query for a batch of messages; each user once per message (direct before reply before
 * message).
 */
export async function recipientsOf(db: Db, messages: QueuedMessage[]): Promise<{ i: number; tenant: string; user_id: string; reason: 'direct' | 'reply' | 'message' }[]> {
  if (messages.length === 0) return [];
  const input = JSON.stringify(
    messages.map((m, i) => ({ i, room_id: m.roomId, sender_id: m.senderId, reply_to_id: m.replyToId, mentions: m.mentions })),
  );
  const res = await sql<{ i: number; tenant: string; user_id: string; reason: 'direct' | 'reply' | 'message' }>`
    select distinct on (x.i, u.user_id) x.i, r.tenant, u.user_id, u.reason
    from json_to_recordset(${input}::json) as x(i int, room_id uuid, sender_id text, reply_to_id uuid, mentions jsonb)
    join room r on r.id = x.room_id
    cross join lateral (
      select mb.user_id, 'direct' as reason, 1 as rank from membership mb where r.kind = 'direct' and mb.room_id = x.room_id
      union all
      select m.sender_id, 'reply', 2 from message m
        where x.reply_to_id is not null and m.room_id = x.room_id and (m.id = x.reply_to_id or m.reply_to_id = x.reply_to_id) and m.kind <> 'system'
      union all
      select p.user_id, 'message', 3 from notify_room_preference p where p.room_id = x.room_id and p.level = 'all'
    ) u
    where u.user_id <> x.sender_id
      and not (x.mentions ? u.user_id)
      and exists (select 1 from membership mb2 where mb2.room_id = x.room_id and mb2.user_id = u.user_id)
    order by x.i, u.user_id, u.rank`.execute(db);
  return res.rows;
}

export interface ClaimedPush {
  tenant: string;
  user_id: string;
  room_key: string;
  room_id: string | null;
  pending: number;
  kind: PushKind;
  message_id: string | null;
  message_seq: number | null;
  from_user: string | null;
  title: string | null;
  url: string | null;
  attempts: number;
}

/** Claims up to `limit` due rows for `leaseMs` (FOR UPDATE SKIP LOCKED: each row by one worker; a dead worker's row is taken again after its lease). */
export function claimPushes(db: Db, limit: number, leaseMs: number): Promise<ClaimedPush[]> {
  return db
    .updateTable('notify_push as q')
    .from((qc) =>
      qc
        .selectFrom('notify_push')
        .select(['tenant', 'user_id', 'room_key'])
        .where('pending', '>', 0)
        .where('due_at', '<=', now())
        .where((w) => w.or([w('lease_until', 'is', null), w('lease_until', '<', now())]))
        .orderBy('due_at')
        .limit(limit)
        .forUpdate()
        .skipLocked()
        .as('d'),
    )
    .set((eb) => ({ lease_until: inMs(leaseMs), attempts: eb('q.attempts', '+', 1) }))
    .whereRef('q.tenant', '=', 'd.tenant')
    .whereRef('q.user_id', '=', 'd.user_id')
    .whereRef('q.room_key', '=', 'd.room_key')
    .returning((eb) => [
      'q.tenant',
      'q.user_id',
      'q.room_key',
      'q.room_id',
      'q.pending',
      sql<PushKind>`${eb.ref('q.kind')}`.as('kind'),
      'q.message_id',
      sql<number | null>`${eb.ref('q.message_seq')}::float8`.as('message_seq'),
      'q.from_user',
      'q.title',
      'q.url',
      'q.attempts',
    ])
    .execute();
}

type PushKey = Pick<ClaimedPush, 'tenant' | 'user_id' | 'room_key'>;
const pushRow = (db: Db, k: PushKey) =>
  db.updateTable('notify_push').where('tenant', '=', k.tenant).where('user_id', '=', k.user_id).where('room_key', '=', k.room_key);
/** `pending` less what was handled (never below 0: an item may have been folded in meanwhile). */
const pendingLess = (handled: number) => sql<number>`greatest(pending - ${handled}, 0)`;
/** When the coalescing window after the last push ends (now if it has or there was none). */
const afterWindow = (coalesceMs: number) => sql<Date>`greatest(now(), coalesce(last_sent_at + ${coalesceMs} * interval '1 millisecond', now()))`;

/**
 * A claimed row is done with `handled` of its items: sent (the coalescing window starts now) or
 * dropped (nobody to tell). Items that arrived meanwhile stay pending, due after the window.
 */
export async function finishPush(db: Db, k: PushKey, handled: number, sent: boolean, coalesceMs: number): Promise<void> {
  await pushRow(db, k)
    .set({
      pending: pendingLess(handled),
      lease_until: null,
      attempts: 0,
      last_error: null,
      ...(sent ? { last_sent_at: now(), due_at: inMs(coalesceMs) } : { due_at: afterWindow(coalesceMs) }),
    })
    .execute();
}

/** Holds a claimed row until `until` (quiet hours). */
export async function holdPush(db: Db, k: PushKey, until: Date): Promise<void> {
  await pushRow(db, k).set({ due_at: until, lease_until: null, attempts: 0 }).execute();
}

/** A failed attempt: retried in `retryInMs`, or given up (its items dropped) when null. */
export async function failPush(db: Db, k: PushKey, handled: number, retryInMs: number | null, error: string): Promise<void> {
  const lastError = error.slice(0, 500);
  if (retryInMs === null) {
    await pushRow(db, k).set({ pending: pendingLess(handled), lease_until: null, attempts: 0, last_error: lastError }).execute();
    return;
  }
  await pushRow(db, k).set({ due_at: inMs(retryInMs), lease_until: null, last_error: lastError }).execute();
}

/** Rows with nothing pending for a week: gone (the coalescing state they keep is long stale). */
export async function pruneIdlePushes(db: Db): Promise<void> {
  await db
    .deleteFrom('notify_push')
    .where('pending', '=', 0)
    .where('updated_at', '<', sql<Date>`now() - interval '7 days'`)
    .where((w) => w.or([w('lease_until', 'is', null), w('lease_until', '<', now())]))
    .execute();
}

/** What a push needs to say: the room, its kind, whether it is encrypted, the user's read position, the message and the sender's name. */
export async function pushContext(db: Db, q: ClaimedPush) {
  const room = q.room_id
    ? await db
        .selectFrom('room as r')
        .leftJoin('membership as m', (j) => j.onRef('m.room_id', '=', 'r.id').on('m.user_id', '=', q.user_id))
        .select(['r.name', 'r.kind', 'r.encrypted', 'm.last_read_seq', 'm.user_id as member'])
        .where('r.id', '=', q.room_id)
        .where('r.tenant', '=', q.tenant)
        .executeTakeFirst()
    : undefined;
  const message = q.message_id
    ? await db.selectFrom('message').select(['body', 'key_id', 'deleted_at', 'kind']).where('id', '=', q.message_id).executeTakeFirst()
    : undefined;
  const from = q.from_user
    ? await db.selectFrom('chat_user').select('name').where('tenant', '=', q.tenant).where('id', '=', q.from_user).executeTakeFirst()
    : undefined;
  return { room, message, fromName: from?.name ?? q.from_user };
}

// ---------------------------------------------------------------------------------------------
// E-mail digests

export interface ClaimedDigest {
  tenant: string;
  user_id: string;
  since: Date;
  attempts: number;
}

export function claimDigests(db: Db, limit: number, leaseMs: number): Promise<ClaimedDigest[]> {
  return db
    .updateTable('notify_digest as q')
    .from((qc) =>
      qc
        .selectFrom('notify_digest')
        .select(['tenant', 'user_id'])
        .where('due_at', '<=', now())
        .where((w) => w.or([w('lease_until', 'is', null), w('lease_until', '<', now())]))
        .orderBy('due_at')
        .limit(limit)
        .forUpdate()
        .skipLocked()
        .as('d'),
    )
    .set((eb) => ({ lease_until: inMs(leaseMs), attempts: eb('q.attempts', '+', 1) }))
    .whereRef('q.tenant', '=', 'd.tenant')
    .whereRef('q.user_id', '=', 'd.user_id')
    .returning(['q.tenant', 'q.user_id', 'q.since', 'q.attempts'])
    .execute();
}

export async function rescheduleDigest(db: Db, k: { tenant: string; user_id: string }, at: Date, error: string | null): Promise<void> {
  await db
    .updateTable('notify_digest')
    .set({ due_at: at, lease_until: null, last_error: error?.slice(0, 500) ?? null })
    .where('tenant', '=', k.tenant)
    .where('user_id', '=', k.user_id)
    .execute();
}

/** A digest went out: the next one covers what arrives after its last message, and is checked at `dueAt`. */
export async function digestSent(db: Db, k: { tenant: string; user_id: string }, since: Date, dueAt: Date): Promise<void> {
  await db
    .updateTable('notify_digest')
    .set({ since, due_at: dueAt, lease_until: null, attempts: 0, last_error: null })
    .where('tenant', '=', k.tenant)
    .where('user_id', '=', k.user_id)
    .execute();
}

export async function deleteDigest(db: Db, k: { tenant: string; user_id: string }): Promise<void> {
  await db.deleteFrom('notify_digest').where('tenant', '=', k.tenant).where('user_id', '=', k.user_id).execute();
}

export function userEmail(db: Db, tenant: string, userId: string) {
  return db.selectFrom('chat_user').select(['email', 'name']).where('tenant', '=', tenant).where('id', '=', userId).executeTakeFirst();
}

export interface DigestItem {
  room_id: string;
  room_name: string;
  room_kind: string;
  encrypted: boolean;
  message_id: string;
  seq: number;
  sender_id: string;
  sender_name: string | null;
  body: string | null;
  key_id: string | null;
  created_at: Date;
}

/**
 * The unread mentions and direct messages of a user since `since` (not deleted, not system, not
 * theirs, in rooms not set to `none` nor muted now), oldest first, at most `limit`.
 */
export function digestItems(db: Db, tenant: string, userId: string, since: Date, limit: number): Promise<DigestItem[]> {
  return db
    .selectFrom('membership as mb')
    .innerJoin('room as r', (j) => j.onRef('r.id', '=', 'mb.room_id').on('r.tenant', '=', tenant))
    .innerJoin('message as m', (j) => j.onRef('m.room_id', '=', 'mb.room_id').onRef('m.seq', '>', 'mb.last_read_seq'))
    .leftJoin('chat_user as u', (j) => j.onRef('u.tenant', '=', 'r.tenant').onRef('u.id', '=', 'm.sender_id'))
    .leftJoin('notify_room_preference as p', (j) => j.onRef('p.room_id', '=', 'mb.room_id').onRef('p.user_id', '=', 'mb.user_id'))
    .select((eb) => [
      'm.room_id',
      'r.name as room_name',
      'r.kind as room_kind',
      'r.encrypted',
      'm.id as message_id',
      sql<number>`${eb.ref('m.seq')}::float8`.as('seq'),
      'm.sender_id',
      'u.name as sender_name',
      'm.body',
      'm.key_id',
      'm.created_at',
    ])
    .where('mb.user_id', '=', userId)
    .where('m.created_at', '>=', since)
    .where('m.sender_id', '<>', userId)
    .where('m.deleted_at', 'is', null)
    .where('m.kind', '<>', 'system')
    .where((w) => w.or([w('r.kind', '=', 'direct'), sql<boolean>`${w.ref('m.mentions')} ? ${userId}`]))
    .where((w) => w(w.fn.coalesce('p.level', sql.lit('mentions')), '<>', 'none'))
    .where((w) => w.or([w('p.mute_until', 'is', null), w('p.mute_until', '<=', now())]))
    .orderBy('m.created_at')
    .orderBy('m.seq')
    .limit(limit)
    .execute();
}
