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
 * (coalescing window, quiet hours, retry backoff).
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
    attempts: p.integer().default(0),
    lastError: p.string().length(500).nullable(),
    updatedAt: p.datetime().onCreate(() => new Date()),
  },
  indexes: [{ name: 'notify_push_due_idx', properties: ['dueAt'] }],
});

/** A pending e-mail digest of a user: unread mentions and direct messages since `since`, sent at `dueAt` if still away. */
export const NotifyDigest = defineEntity({
  name: 'NotifyDigest',
  tableName: 'notify_digest',
  properties: {
    tenant: p.string().length(64).primary(),
    userId: p.string().length(128).primary(),
    since: p.datetime(),
    dueAt: p.datetime(),
    leaseUntil: p.datetime().nullable(),
    attempts: p.integer().default(0),
    lastError: p.string().length(500).nullable(),
  },
  indexes: [{ name: 'notify_digest_due_idx', properties: ['dueAt'] }],
});
