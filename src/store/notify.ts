import { type Expression, sql } from 'kysely';
import { clip } from '../domain/text.js';
import type { Db } from './database.js';
import { UNREAD_WINDOW } from './unread-bounds.js';

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

/**
 * Removes every push device of a user (`auth.revoke`: a lost laptop's push endpoint would go on
 * receiving previews of messages); how many there were.
 */
export async function deleteDevicesOfUser(db: Db, tenant: string, userId: string): Promise<number> {
  const r = await db.deleteFrom('push_device').where('tenant', '=', tenant).where('user_id', '=', userId).executeTakeFirst();
  return Number(r.numDeletedRows);
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

/**
 * How personal each kind is, most first. A queue row stands for every item since its last push but
 * keeps one kind, by which its push is decided (a room set to `mentions` tells of all kinds but
 * `message`), made urgent and titled: the most personal of its items', so that a mention followed by
 * chatter is still a mention. A mention names the user; a direct message is to them alone; a reply is
 * in a thread they wrote in; a meeting invite goes to every member; an `inbox.notify` item (a row of
 * its own: no room) and a message of a room set to `all` come last.
 */
const PERSONAL_RANK: Record<PushKind, number> = { mention: 0, direct: 1, reply: 2, 'meeting.invite': 3, notification: 4, message: 5 };
const RANKED = `array[${(Object.keys(PERSONAL_RANK) as PushKind[])
  .sort((a, b) => PERSONAL_RANK[a] - PERSONAL_RANK[b])
  .map((k) => `'${k}'`)
  .join(', ')}]::text[]`;
/** SQL: the rank of the kind `kind` (an SQL expression) in PERSONAL_RANK. */
const rankOf = (kind: string) => `array_position(${RANKED}, (${kind})::text)`;

/**
 * SQL of `kind` when an item is upserted into a queue row (`enqueue`, and the grouped send of
 * src/store/hot/append-messages.ts): the more personal of the row's and the item's while the row has
 * items pending, the item's when it is idle. A row claimed by a push in flight (`claimPushes` marks it:
 * `updated_at` is its `lease_until` until an item comes) takes the first item since the claim as it
 * is: the claim stands for the items it read, and if its push ends them (sent, dropped), what remains
 * is what came since; a claim that keeps its items (held, retried, or left to its lease:
 * `abandonPush`) puts their kind back (`withClaimedKind`). A claim whose node died writes nothing:
 * the claim that takes the row over puts it back from `claim_kind` (`claimPushes`), so a new item
 * still writes `kind` alone.
 */
export const PUSH_KIND_ON_CONFLICT = `case when notify_push.pending > 0
      and (notify_push.lease_until is null or notify_push.lease_until <= now() or notify_push.updated_at <> notify_push.lease_until)
      and ${rankOf('notify_push.kind')} < ${rankOf('excluded.kind')} then notify_push.kind else excluded.kind end`;

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
 * the newest item is kept, with the most personal kind of the row's items: PUSH_KIND_ON_CONFLICT; a
 * row that was idle is due at once, or when the coalescing window of its last push ends) and one
 * upsert of digest rows for mentions and direct messages of users with an e-mail address who did not
 * turn digests off (the earliest pending digest is kept). Rows are written in user and room order
 * (deadlock-free between concurrent writers).
 */
export async function enqueue(db: Db, items: PushItem[], s: QueueSettings): Promise<number> {
  if (items.length === 0) return 0;
  let written = 0;
  if (s.push) {
    const folded = new Map<string, PushItem & { n: number }>();
    for (const it of items) {
      const key = `${it.tenant}\u0000${it.userId}\u0000${roomKeyOf(it.roomId)}`;
      const prev = folded.get(key);
      // The newest item, of the most personal kind of them (as PUSH_KIND_ON_CONFLICT folds them into the row).
      const kind = prev && PERSONAL_RANK[prev.kind] < PERSONAL_RANK[it.kind] ? prev.kind : it.kind;
      folded.set(key, { ...it, kind, n: (prev?.n ?? 0) + 1 });
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
        title: typeof r.title === 'string' ? clip(r.title, 300) : null,
        url: typeof r.url === 'string' ? clip(r.url, 2000) : null,
      })),
    );
    // The rows as a table (one parameter whatever their number).
    const i = sql<{
      tenant: string;
      user_id: string;
      room_key: string;
      room_id: string | null;
      n: number;
      kind: string;
      message_id: string | null;
      message_seq: number | null;
      from_user: string | null;
      title: string | null;
      url: string | null;
    }>`json_to_recordset(${input}::json)`.as<'i'>(
      sql`i(tenant text, user_id text, room_key text, room_id uuid, n int, kind text, message_id uuid, message_seq bigint, from_user text, title text, url text)`,
    );
    const res = await db
      .insertInto('notify_push')
      .columns(['tenant', 'user_id', 'room_key', 'room_id', 'pending', 'kind', 'message_id', 'message_seq', 'from_user', 'title', 'url', 'due_at', 'attempts', 'updated_at'])
      .expression((eb) =>
        eb
          .selectFrom(i)
          .select([
            'i.tenant',
            'i.user_id',
            'i.room_key',
            'i.room_id',
            'i.n',
            'i.kind',
            'i.message_id',
            'i.message_seq',
            'i.from_user',
            'i.title',
            'i.url',
            now().as('due_at'),
            sql.lit(0).as('attempts'),
            now().as('updated_at'),
          ])
          .where((w) => w.exists(w.selectFrom('push_device as d').select('d.id').whereRef('d.tenant', '=', 'i.tenant').whereRef('d.user_id', '=', 'i.user_id'))),
      )
      .onConflict((oc) =>
        oc.columns(['tenant', 'user_id', 'room_key']).doUpdateSet((eb) => {
          const idle = eb('notify_push.pending', '<=', 0);
          return {
            pending: eb('notify_push.pending', '+', eb.ref('excluded.pending')),
            room_id: eb.ref('excluded.room_id'),
            kind: sql.raw<string>(PUSH_KIND_ON_CONFLICT),
            message_id: eb.ref('excluded.message_id'),
            message_seq: eb.ref('excluded.message_seq'),
            from_user: eb.ref('excluded.from_user'),
            title: eb.ref('excluded.title'),
            url: eb.ref('excluded.url'),
            updated_at: now(),
            // An idle row is due at once, or when the coalescing window of its last push ends; a row with items pending keeps its time.
            due_at: eb
              .case()
              .when(idle)
              .then(sql<Date>`greatest(now(), coalesce(${eb.ref('notify_push.last_sent_at')} + ${s.coalesceMs} * interval '1 millisecond', now()))`)
              .else(eb.ref('notify_push.due_at'))
              .end(),
            attempts: eb.case().when(idle).then(0).else(eb.ref('notify_push.attempts')).end(),
          };
        }),
      )
      .executeTakeFirst();
    written += Number(res.numInsertedOrUpdatedRows ?? 0);
  }
  if (s.digest) {
    // Queued in the transaction of what it is about: now() is that item's time, where the digest starts.
    // A user's existing row is left as it is here, but bumped by the table's trigger (NotifyDigest).
    const users = [...new Set(items.filter((it) => it.kind === 'mention' || it.kind === 'direct').map((it) => `${it.tenant}\u0000${it.userId}`))].sort();
    if (users.length > 0) {
      const input = JSON.stringify(users.map((u) => ({ tenant: u.split('\u0000')[0], user_id: u.split('\u0000')[1] })));
      const i = sql<{ tenant: string; user_id: string }>`json_to_recordset(${input}::json)`.as<'i'>(sql`i(tenant text, user_id text)`);
      const res = await db
        .insertInto('notify_digest')
        .columns(['tenant', 'user_id', 'since', 'due_at', 'attempts'])
        .expression((eb) =>
          eb
            .selectFrom(i)
            .innerJoin('chat_user as u', (j) => j.onRef('u.tenant', '=', 'i.tenant').onRef('u.id', '=', 'i.user_id').on('u.email', 'is not', null))
            .select(['i.tenant', 'i.user_id', now().as('since'), inMs(s.digestDelayMs).as('due_at'), sql.lit(0).as('attempts')])
            .where((w) =>
              w.not(
                w.exists(
                  w
                    .selectFrom('notify_preference as p')
                    .select('p.user_id')
                    .whereRef('p.tenant', '=', 'i.tenant')
                    .whereRef('p.user_id', '=', 'i.user_id')
                    .where('p.email', '=', 'off'),
                ),
              ),
            )
            // In the database's order of the key, as the grouped send writes them (the trigger locks existing rows).
            .orderBy('i.tenant')
            .orderBy('i.user_id'),
        )
        .onConflict((oc) => oc.columns(['tenant', 'user_id']).doNothing())
        .executeTakeFirst();
      written += Number(res.numInsertedOrUpdatedRows ?? 0);
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

type Reason = 'direct' | 'reply' | 'message';

/**
 * Who is to be told about new messages besides the mentioned (who get an inbox item): the other member
 * of a direct room, members who wrote in the thread a reply belongs to, and members who set the room
 * to `all`. One query for a batch of messages; each user once per message (direct before reply before
 * message).
 */
export async function recipientsOf(db: Db, messages: QueuedMessage[]): Promise<{ i: number; tenant: string; user_id: string; reason: Reason }[]> {
  if (messages.length === 0) return [];
  const input = JSON.stringify(
    messages.map((m, i) => ({ i, room_id: m.roomId, sender_id: m.senderId, reply_to_id: m.replyToId, mentions: m.mentions })),
  );
  // The messages as a table (one parameter whatever their number).
  const x = sql<{ i: number; room_id: string; sender_id: string; reply_to_id: string | null; mentions: string[] }>`json_to_recordset(${input}::json)`.as<'x'>(
    sql`x(i int, room_id uuid, sender_id text, reply_to_id uuid, mentions jsonb)`,
  );
  const reason = (r: Reason, rank: number) => [sql<Reason>`${sql.lit(r)}::text`.as('reason'), sql<number>`${sql.lit(rank)}`.as('rank')] as const;
  return db
    .selectFrom(x)
    .innerJoin('room as r', 'r.id', 'x.room_id')
    .innerJoinLateral(
      (eb) =>
        eb
          // The other member of a direct room,
          .selectFrom('membership as mb')
          .select(['mb.user_id', ...reason('direct', 1)])
          .where('r.kind', '=', 'direct')
          .whereRef('mb.room_id', '=', 'x.room_id')
          // who wrote in the thread a reply belongs to (its root or a reply),
          .unionAll(
            eb
              .selectFrom('message as m')
              .select(['m.sender_id as user_id', ...reason('reply', 2)])
              .where('x.reply_to_id', 'is not', null)
              .whereRef('m.room_id', '=', 'x.room_id')
              .where((w) => w.or([w('m.id', '=', w.ref('x.reply_to_id')), w('m.reply_to_id', '=', w.ref('x.reply_to_id'))]))
              .where('m.kind', '<>', 'system'),
          )
          // and who set the room to `all`.
          .unionAll(eb.selectFrom('notify_room_preference as p').select(['p.user_id', ...reason('message', 3)]).whereRef('p.room_id', '=', 'x.room_id').where('p.level', '=', 'all'))
          .as('u'),
      (join) => join.onTrue(),
    )
    .distinctOn(['x.i', 'u.user_id'])
    .select(['x.i', 'r.tenant', 'u.user_id', 'u.reason'])
    .whereRef('u.user_id', '<>', 'x.sender_id')
    .where((w) => w.not(sql<boolean>`${w.ref('x.mentions')} ? ${w.ref('u.user_id')}`))
    .where((w) => w.exists(w.selectFrom('membership as mb2').select('mb2.user_id').whereRef('mb2.room_id', '=', 'x.room_id').whereRef('mb2.user_id', '=', 'u.user_id')))
    .orderBy('x.i')
    .orderBy('u.user_id')
    .orderBy('u.rank')
    .execute();
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
  /** The lease this claim set: identifies the claim (see `PushClaim`). */
  lease_until: Date;
}

/**
 * The kind a claim takes (SQL, in `claimPushes`): the row's, or, taking the row over from a claim that
 * ended with no outcome (its lease is still set: its node died, or it was abandoned), the more personal
 * of the row's and the one that claim was taken with (`claim_kind`): the row's kind is then that of
 * the items queued since that claim (PUSH_KIND_ON_CONFLICT), and that claim's items are still pending.
 */
const TAKEN_KIND = `case when q.lease_until is not null and ${rankOf('q.claim_kind')} < ${rankOf('q.kind')} then q.claim_kind else q.kind end`;

/**
 * Claims up to `limit` due rows for `leaseMs` (FOR UPDATE SKIP LOCKED: each row by one worker; a dead
 * worker's row is taken again after its lease, with the kind of all its items: TAKEN_KIND). The claim
 * keeps its kind in `claim_kind` while it holds the lease (every outcome but `abandonPush` clears both).
 */
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
    // In whole milliseconds, so that the Date handed back names it exactly (see `PushClaim`); `updated_at`
    // the same: nothing queued since the claim (PUSH_KIND_ON_CONFLICT).
    .set((eb) => {
      const lease = sql<Date>`date_trunc('milliseconds', ${inMs(leaseMs)})`;
      const kind = sql.raw<string>(TAKEN_KIND);
      return { lease_until: lease, updated_at: lease, attempts: eb('q.attempts', '+', 1), kind, claim_kind: kind };
    })
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
      'q.lease_until',
    ])
    .execute() as Promise<ClaimedPush[]>;
}

/**
 * A claim is identified by the lease it set (`attempts` is not enough: finishing, holding and a new
 * item on an idle row reset it). A later claim of the row sets a later lease: it is taken only once
 * this one has run out. The outcome of a claim (finish, hold, fail) is written only while the row is
 * still that claim's: a worker whose lease ran out may find the row handled by another node and new
 * items queued since, which it must not drop. False: another claim owns the row now, nothing written.
 */
export type PushClaim = Pick<ClaimedPush, 'tenant' | 'user_id' | 'room_key' | 'lease_until'>;
const pushRow = (db: Db, k: PushClaim) =>
  db
    .updateTable('notify_push')
    .where('tenant', '=', k.tenant)
    .where('user_id', '=', k.user_id)
    .where('room_key', '=', k.room_key)
    .where('lease_until', '=', k.lease_until);
const applied = (res: { numUpdatedRows: bigint }) => Number(res.numUpdatedRows) > 0;
/** `pending` less what was handled (never below 0: an item may have been folded in meanwhile). */
const pendingLess = (handled: number) => sql<number>`greatest(pending - ${handled}, 0)`;
/** When the coalescing window after the last push ends (now if it has or there was none). */
const afterWindow = (coalesceMs: number) => sql<Date>`greatest(now(), coalesce(last_sent_at + ${coalesceMs} * interval '1 millisecond', now()))`;

/**
 * A claimed row is done with `handled` of its items: sent (the coalescing window starts now) or
 * dropped (nobody to tell). Items that arrived meanwhile stay pending, due after the window.
 */
export async function finishPush(db: Db, k: PushClaim, handled: number, sent: boolean, coalesceMs: number): Promise<boolean> {
  const res = await pushRow(db, k)
    .set({
      pending: pendingLess(handled),
      lease_until: null,
      claim_kind: null,
      attempts: 0,
      last_error: null,
      ...(sent ? { last_sent_at: now(), due_at: inMs(coalesceMs) } : { due_at: afterWindow(coalesceMs) }),
    })
    .executeTakeFirst();
  return applied(res);
}

/**
 * The kind of a row whose claim keeps its items (held, retried): the more personal of the claimed
 * kind and the row's, which an item queued since the claim set to its own (PUSH_KIND_ON_CONFLICT).
 */
const withClaimedKind = (claimed: PushKind) =>
  sql<string>`case when array_position(${sql.raw(RANKED)}, ${claimed}::text) < ${sql.raw(rankOf('kind'))} then ${claimed}::text else kind end`;

/**
 * Holds a claimed row for `holdMs` (quiet hours): due at the database's now() plus that, never at an
 * instant of the node's clock, which may be behind the database's (the row would be due again at
 * once, and claimed over and over until the node's clock caught up).
 */
export async function holdPush(db: Db, k: PushClaim & Pick<ClaimedPush, 'kind'>, holdMs: number): Promise<boolean> {
  return applied(await pushRow(db, k).set({ due_at: inMs(holdMs), lease_until: null, claim_kind: null, attempts: 0, kind: withClaimedKind(k.kind) }).executeTakeFirst());
}

/** A failed attempt: retried in `retryInMs`, or given up (its items dropped) when null. */
export async function failPush(db: Db, k: PushClaim & Pick<ClaimedPush, 'kind'>, handled: number, retryInMs: number | null, error: string): Promise<boolean> {
  const lastError = clip(error, 500);
  if (retryInMs === null) {
    return applied(await pushRow(db, k).set({ pending: pendingLess(handled), lease_until: null, claim_kind: null, attempts: 0, last_error: lastError }).executeTakeFirst());
  }
  return applied(
    await pushRow(db, k).set({ due_at: inMs(retryInMs), lease_until: null, claim_kind: null, last_error: lastError, kind: withClaimedKind(k.kind) }).executeTakeFirst(),
  );
}

/**
 * A claim that ends with no outcome while its node lives (its deadline passed before the request,
 * shutdown aborted the requests, an error): the row stays leased and is claimed again once the lease
 * ends, with the claimed items' kind put back as a held claim does (an item queued since the claim set
 * the row to its own kind, PUSH_KIND_ON_CONFLICT), and the claim's mark ended (`updated_at`), so that
 * what comes until then folds into that kind too. A node that dies cannot: the next claim does it
 * (`claimPushes`).
 */
export async function abandonPush(db: Db, k: PushClaim & Pick<ClaimedPush, 'kind'>): Promise<boolean> {
  return applied(await pushRow(db, k).set({ kind: withClaimedKind(k.kind), updated_at: now() }).executeTakeFirst());
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
        .select(['r.name', 'r.kind', 'r.encrypted', 'm.last_read_seq', 'm.last_read_at', 'm.user_id as member'])
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

/** What of a claimed room row the user has not read (`unreadOfRow`). */
export interface UnreadItems {
  count: number;
  kind: PushKind;
}

/**
 * The items of a claimed room row the user has not read, when their read position is before the
 * row's newest message (read up to it, the whole row is read). The row keeps a count and its newest
 * item only, so they are counted from the room, at most `pending`: its messages after the read
 * position up to the newest, not the user's nor `system` (a deleted one counts, as in the row), that
 * the user is told about (`everyMessage`: a direct room or level `all`; else those that mention them
 * or reply in a thread they wrote in, as `recipientsOf` picks them), and the meetings others created
 * in the room since the user's last read (an invite has no message to read past). With fewer than
 * `pending`, the kind is the most personal of theirs, never more than the row's (the row's may be
 * that of an item read). Null, the row as it is: the newest message is not among them (the level
 * changed since it was queued), or the read position is more than UNREAD_WINDOW seqs behind.
 */
export async function unreadOfRow(
  db: Db,
  q: Pick<ClaimedPush, 'user_id' | 'room_id' | 'pending' | 'kind' | 'message_seq'>,
  read: { seq: number; at: Date | null },
  everyMessage: boolean,
  direct: boolean,
): Promise<UnreadItems | null> {
  const newest = q.message_seq;
  if (q.room_id === null || newest === null || read.seq >= newest || newest - read.seq > UNREAD_WINDOW) return null;
  const { rows } = await sql<{ n: number; newest: boolean; mention: boolean; reply: boolean; invites: number }>`
    select count(*)::int as n, coalesce(bool_or(s.seq = ${newest}), false) as newest,
           coalesce(bool_or(s.mention), false) as mention, coalesce(bool_or(s.reply), false) as reply,
           (select count(*)::int from (select 1 from meeting g
              where g.room_id = ${q.room_id} and g.created_by <> ${q.user_id}
                and g.created_at > coalesce(${read.at}::timestamptz, '-infinity') limit ${q.pending}) i) as invites
      from (select m.seq, m.mention, m.reply
              from (select u.seq, jsonb_exists(u.mentions, ${q.user_id}) as mention,
                           u.reply_to_id is not null and exists (select 1 from message t
                             where t.room_id = u.room_id and t.sender_id = ${q.user_id} and t.kind <> 'system'
                               and (t.id = u.reply_to_id or t.reply_to_id = u.reply_to_id)) as reply
                      from message u
                     where u.room_id = ${q.room_id} and u.seq > ${read.seq} and u.seq <= ${newest}
                       and u.sender_id <> ${q.user_id} and u.kind <> 'system') m
             where ${everyMessage} or m.mention or m.reply
             order by m.seq desc
             limit ${q.pending}) s`.execute(db);
  const r = rows[0];
  if (!r?.newest) return null;
  const count = Math.min(q.pending, r.n + r.invites);
  if (count === q.pending) return { count, kind: q.kind };
  const kinds: [PushKind, boolean][] = [
    ['mention', r.mention],
    ['direct', direct],
    ['reply', r.reply],
    ['meeting.invite', r.invites > 0],
    ['message', true],
  ];
  const theirs = kinds.find(([, has]) => has)![0];
  return { count, kind: PERSONAL_RANK[theirs] < PERSONAL_RANK[q.kind] ? q.kind : theirs };
}

// ---------------------------------------------------------------------------------------------
// E-mail digests

/**
 * A timestamp as text with all its microseconds (a JavaScript Date keeps milliseconds only), in UTC:
 * a digest cursor goes back to the database exactly as it came.
 */
const exactTime = (t: Expression<Date>) => sql<string>`to_char(${t} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/**
 * Where a user's next digest starts, in the items' order (created_at, room id, seq): from `at` on
 * (inclusive) while `roomId` and `seq` are null, else after that item (exclusive). Exact (`at` keeps
 * its microseconds), so items that share a created_at (a transaction's or a grouped send's messages
 * all have its now()) are neither skipped past the limit of a digest nor mailed twice.
 */
export interface DigestCursor {
  at: string;
  roomId: string | null;
  seq: number | null;
}

export interface ClaimedDigest {
  tenant: string;
  user_id: string;
  cursor: DigestCursor;
  /**
   * Claims since the last digest went out, this one included: failed sends, and claims that ended
   * with no outcome (a node that died); a postponement for presence takes its claim's count back.
   */
  attempts: number;
  /** Items queued while the row existed, as of the claim (see `deleteDigest`). */
  queued: number;
  /** The lease this claim set: identifies the claim, as for pushes (see `PushClaim`). */
  lease_until: Date;
}

export async function claimDigests(db: Db, limit: number, leaseMs: number): Promise<ClaimedDigest[]> {
  const rows = await db
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
    // In whole milliseconds, so that the Date handed back names it exactly (see `PushClaim`).
    .set((eb) => ({ lease_until: sql<Date>`date_trunc('milliseconds', ${inMs(leaseMs)})`, attempts: eb('q.attempts', '+', 1) }))
    .whereRef('q.tenant', '=', 'd.tenant')
    .whereRef('q.user_id', '=', 'd.user_id')
    .returning((eb) => [
      'q.tenant',
      'q.user_id',
      exactTime(eb.ref('q.since')).as('since'),
      'q.after_room_id',
      sql<number | null>`${eb.ref('q.after_seq')}::float8`.as('after_seq'),
      'q.attempts',
      sql<number>`${eb.ref('q.queued')}::float8`.as('queued'),
      'q.lease_until',
    ])
    .execute();
  return rows.map((r) => ({
    tenant: r.tenant,
    user_id: r.user_id,
    cursor: { at: r.since, roomId: r.after_room_id, seq: r.after_seq },
    attempts: r.attempts,
    queued: r.queued,
    lease_until: r.lease_until as Date,
  }));
}

/**
 * As for pushes (`PushClaim`): the outcome of a digest claim is written only while the row is still
 * that claim's; false (nothing written) when another node claimed it after this claim's lease ran out.
 */
export type DigestClaim = Pick<ClaimedDigest, 'tenant' | 'user_id' | 'lease_until'>;
const digestRow = (db: Db, k: DigestClaim) =>
  db.updateTable('notify_digest').where('tenant', '=', k.tenant).where('user_id', '=', k.user_id).where('lease_until', '=', k.lease_until);

/**
 * The user is around (connected, or seen within the delay): checked again in `inMsFromNow` (from the
 * database's now()). Not a failed attempt: the claim's count is taken back, so that only failed sends
 * use up NOTIFY_MAX_ATTEMPTS.
 */
export async function postponeDigest(db: Db, k: DigestClaim, inMsFromNow: number): Promise<boolean> {
  return applied(await digestRow(db, k).set({ due_at: inMs(inMsFromNow), lease_until: null, attempts: sql<number>`greatest(attempts - 1, 0)` }).executeTakeFirst());
}

/** A failed send, tried again in `retryInMs` (from the database's now()). */
export async function retryDigest(db: Db, k: DigestClaim, retryInMs: number, error: string): Promise<boolean> {
  return applied(await digestRow(db, k).set({ due_at: inMs(retryInMs), lease_until: null, last_error: clip(error, 500) }).executeTakeFirst());
}

/** The cursor after the last of `items` (oldest first, as `digestItems` returns them). */
export function cursorAfter(items: DigestItem[]): DigestCursor {
  const last = items.at(-1);
  if (!last) throw new Error('a cursor after no item');
  return { at: last.created_at_exact, roomId: last.room_id, seq: last.seq };
}

/**
 * A digest went out: the next one covers what comes after its last item (`next`), and is checked
 * in `dueInMs`. The cursor moves only if it is still the one the claim read: an item that committed
 * meanwhile from a transaction that began before it moved the cursor back to itself (the trigger
 * of `NotifyDigest`), and stays to be mailed.
 */
export async function digestSent(db: Db, k: DigestClaim & Pick<ClaimedDigest, 'cursor'>, next: DigestCursor, dueInMs: number): Promise<boolean> {
  const same = sql<boolean>`(since = ${k.cursor.at}::timestamptz and after_room_id is not distinct from ${k.cursor.roomId}::uuid and after_seq is not distinct from ${k.cursor.seq}::bigint)`;
  const res = await digestRow(db, k)
    .set({
      since: sql<Date>`case when ${same} then ${next.at}::timestamptz else since end`,
      after_room_id: sql<string | null>`case when ${same} then ${next.roomId}::uuid else after_room_id end`,
      after_seq: sql<number | null>`case when ${same} then ${next.seq}::bigint else after_seq end`,
      due_at: inMs(dueInMs),
      lease_until: null,
      attempts: 0,
      last_error: null,
    })
    .executeTakeFirst();
  return applied(res);
}

/**
 * Nothing to send (nothing new, digests off, given up): the row goes, unless an item was queued
 * since the claim. A writer that meets an existing row bumps `queued` and holds the row until it
 * commits (the trigger of `NotifyDigest`): the delete waits for it and then leaves the row, which
 * is released instead (due in `dueInMs`, as a new row would be), so the new item is mailed.
 * `lost`: another node claimed the row since, nothing written.
 */
export async function deleteDigest(db: Db, k: DigestClaim & Pick<ClaimedDigest, 'queued'>, dueInMs: number): Promise<'deleted' | 'queued' | 'lost'> {
  const res = await db
    .deleteFrom('notify_digest')
    .where('tenant', '=', k.tenant)
    .where('user_id', '=', k.user_id)
    .where('lease_until', '=', k.lease_until)
    .where('queued', '=', k.queued)
    .executeTakeFirst();
  if (Number(res.numDeletedRows) > 0) return 'deleted';
  const kept = await digestRow(db, k).set({ due_at: inMs(dueInMs), lease_until: null, attempts: 0 }).executeTakeFirst();
  return applied(kept) ? 'queued' : 'lost';
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
  /** `created_at` with its microseconds (see `DigestCursor`). */
  created_at_exact: string;
}

/**
 * The unread mentions and direct messages of a user after `cursor` (not deleted, not system, not
 * theirs, in rooms not set to `none` nor muted now), in the cursor's order, at most `limit`.
 */
export function digestItems(db: Db, tenant: string, userId: string, cursor: DigestCursor, limit: number): Promise<DigestItem[]> {
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
      exactTime(eb.ref('m.created_at')).as('created_at_exact'),
    ])
    .where('mb.user_id', '=', userId)
    .where((w) =>
      cursor.roomId === null || cursor.seq === null
        ? w('m.created_at', '>=', sql<Date>`${cursor.at}::timestamptz`)
        : sql<boolean>`(${w.ref('m.created_at')}, ${w.ref('m.room_id')}, ${w.ref('m.seq')}) > (${cursor.at}::timestamptz, ${cursor.roomId}::uuid, ${cursor.seq}::bigint)`,
    )
    .where('m.sender_id', '<>', userId)
    .where('m.deleted_at', 'is', null)
    .where('m.kind', '<>', 'system')
    .where((w) => w.or([w('r.kind', '=', 'direct'), sql<boolean>`${w.ref('m.mentions')} ? ${userId}`]))
    .where((w) => w(w.fn.coalesce('p.level', sql.lit('mentions')), '<>', 'none'))
    .where((w) => w.or([w('p.mute_until', 'is', null), w('p.mute_until', '<=', now())]))
    .orderBy('m.created_at')
    .orderBy('m.room_id')
    .orderBy('m.seq')
    .limit(limit)
    .execute();
}
