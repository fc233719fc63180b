import { defineEntity, p } from '@mikro-orm/core';

/** The tables of notifications for people who are away (listed in `entities`, src/store/entities.ts). */

/** A web push subscription of a user's browser (`device.register`). One row per push endpoint. */
export const PushDevice = defineEntity({
  name: 'PushDevice',
  tableName: 'push_device',
  properties: {
    id: p.uuid().primary(),
    tenant: p.string().length(64),
    userId: p.string().length(128),
    kind: p.string().length(16),
    endpoint: p.string().length(2000),
    p256dh: p.string().length(200),
    auth: p.string().length(100),
    label: p.string().length(100).nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    lastPushAt: p.datetime().nullable(),
  },
  indexes: [{ name: 'push_device_user_idx', properties: ['tenant', 'userId'] }],
  uniques: [{ name: 'push_device_endpoint_unique', properties: ['endpoint'] }],
});

/** A user's notification settings (no row: the defaults, digest e-mails and pushes on, no quiet hours). */
export const NotifyPreference = defineEntity({
  name: 'NotifyPreference',
  tableName: 'notify_preference',
  properties: {
    tenant: p.string().length(64).primary(),
    userId: p.string().length(128).primary(),
    email: p.string().length(16).default('digest'),
    push: p.boolean().default(true),
    /** Quiet hours `HH:MM`-`HH:MM` in an IANA time zone (all three or none). */
    quietStart: p.string().length(5).nullable(),
    quietEnd: p.string().length(5).nullable(),
    quietTimeZone: p.string().length(64).nullable(),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
});

/** A user's level for one room (no row: `mentions`) and a mute until a time. */
export const NotifyRoomPreference = defineEntity({
  name: 'NotifyRoomPreference',
  tableName: 'notify_room_preference',
  properties: {
    roomId: p.uuid().primary(),
    userId: p.string().length(128).primary(),
    tenant: p.string().length(64),
    level: p.string().length(16).default('mentions'),
    muteUntil: p.datetime().nullable(),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
  indexes: [{ name: 'notify_room_preference_user_idx', properties: ['tenant', 'userId'] }],
  checks: [{ name: 'notify_room_preference_level_check', expression: `"level" in ('all', 'mentions', 'none')` }],
});

/**
 * The push queue: one row per user and room (`roomKey`: the room id, or `-` for items without a
 * room). `pending` counts what arrived since the last push; the newest item is kept for the text.
 * Written in the transaction (or the grouped send's statement) of what it is about; claimed by a worker
 * with a lease (`leaseUntil`), so a node that dies leaves it to another. `dueAt`: not before then
 * (coalescing window, quiet hours, retry backoff). `claimKind`: the kind the claim holding the lease
 * was taken with (null without a lease), so that a takeover from a dead node keeps it (src/store/notify.ts).
 */
export const NotifyPush = defineEntity({
  name: 'NotifyPush',
  tableName: 'notify_push',
  properties: {
    tenant: p.string().length(64).primary(),
    userId: p.string().length(128).primary(),
    roomKey: p.string().length(36).primary(),
    roomId: p.uuid().nullable(),
    pending: p.integer().default(0),
    kind: p.string().length(32),
    messageId: p.uuid().nullable(),
    messageSeq: p.bigint('number').nullable(),
    fromUser: p.string().length(128).nullable(),
    title: p.string().length(300).nullable(),
    url: p.string().length(2000).nullable(),
    dueAt: p.datetime(),
    lastSentAt: p.datetime().nullable(),
    leaseUntil: p.datetime().nullable(),
    claimKind: p.string().length(32).nullable(),
    attempts: p.integer().default(0),
    lastError: p.string().length(500).nullable(),
    updatedAt: p.datetime().onCreate(() => new Date()),
  },
  indexes: [{ name: 'notify_push_due_idx', properties: ['dueAt'] }],
});

/**
 * Written by every writer of a digest row, whatever its statement says on conflict (src/store/notify.ts
 * `enqueue`, the grouped send of src/store/hot/append-messages.ts): an item queued for a user whose row
 * exists bumps `queued` (and so holds the row's lock until its transaction commits: a worker's delete
 * waits for it, then sees the bump and keeps the row), and moves the cursor back to the item's time when
 * its transaction began before the cursor (it committed after a digest that went past it).
 */
const DIGEST_QUEUED =
  'update notify_digest set queued = queued + 1, since = least(since, new.since), after_room_id = case when new.since < since then null else after_room_id end, after_seq = case when new.since < since then null else after_seq end where tenant = new.tenant and user_id = new.user_id; return new;';

/**
 * A pending e-mail digest of a user: unread mentions and direct messages after its cursor, sent at
 * `dueAt` if still away. The cursor is a key of the items' order (created_at, room, seq): `since`
 * alone (from it on, inclusive) until a digest went out, then (`since`, `afterRoomId`, `afterSeq`), the
 * last item mailed (after it, exclusive). `queued` counts items queued while the row existed.
 */
export const NotifyDigest = defineEntity({
  name: 'NotifyDigest',
  tableName: 'notify_digest',
  properties: {
    tenant: p.string().length(64).primary(),
    userId: p.string().length(128).primary(),
    since: p.datetime(),
    afterRoomId: p.uuid().nullable(),
    afterSeq: p.bigint('number').nullable(),
    dueAt: p.datetime(),
    leaseUntil: p.datetime().nullable(),
    attempts: p.integer().default(0),
    queued: p.bigint('number').default(0),
    lastError: p.string().length(500).nullable(),
  },
  indexes: [{ name: 'notify_digest_due_idx', properties: ['dueAt'] }],
  triggers: [{ name: 'queued', timing: 'before', events: ['insert'], body: DIGEST_QUEUED }],
});
