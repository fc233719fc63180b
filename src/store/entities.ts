import { defineEntity, p, type InferEntity } from '@mikro-orm/core';
import type { AttachmentDto } from '../domain/events.js';
import { AuditEvent } from './audit-entities.js';
import { StoredFile } from './file-entities.js';
import { JobLease } from './lease-entities.js';
import { NotifyDigest, NotifyPreference, NotifyPush, NotifyRoomPreference, PushDevice } from './notify-entities.js';
import { WebhookDelivery, WebhookEndpoint } from './webhook-entities.js';

/**
 * A user as known to this server. Identity belongs to the embedding product: the row is upserted
 * from the access token's claims. Users are scoped by tenant; (tenant, id) is the key.
 */
export const User = defineEntity({
  name: 'User',
  tableName: 'chat_user',
  properties: {
    tenant: p.string().length(64).primary(),
    id: p.string().length(128).primary(),
    name: p.string().length(200),
    roles: p.array().default([]),
    /** The last e-mail address a token of the user carried (e-mail digests); null: none known. */
    email: p.string().length(254).nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    lastSeenAt: p.datetime().onCreate(() => new Date()),
    /** Set by `admin.eraseUser`: the name stays "deleted user" whatever later tokens claim. */
    erasedAt: p.datetime().nullable(),
  },
});
export type UserEntity = InferEntity<typeof User>;

/**
 * `room.access_version` is kept by these triggers, in the transaction of every change a send's access
 * check reads (src/services/access.ts): a membership added or removed, a role or mute changed, a ban
 * added or lifted, the room archived, unarchived, renamed, or its kind or encryption changed. In the
 * schema, so no write path can forget it (members added in bulk, a user erased, a room deleted with
 * its members), once per room and transaction (`access_tx`). Written as PostgreSQL normalizes them,
 * so the schema check compares them as equal.
 */
const BUMP_ROOM_ACCESS =
  "update room set access_version = access_version + 1, access_tx = pg_current_xact_id()::text::bigint where id = case when tg_op = 'DELETE' then old.room_id else new.room_id end and access_tx is distinct from pg_current_xact_id()::text::bigint; return null;";
const ACCESS_MEMBER_CHANGED =
  '(((old.role)::text IS DISTINCT FROM (new.role)::text) OR (old.muted_until IS DISTINCT FROM new.muted_until))';
const ACCESS_ROOM_CHANGED =
  '((old.archived_at IS DISTINCT FROM new.archived_at) OR ((old.name)::text IS DISTINCT FROM (new.name)::text) OR ((old.kind)::text IS DISTINCT FROM (new.kind)::text) OR (old.encrypted IS DISTINCT FROM new.encrypted))';

/** A room: direct, group, support or broadcast. `lastSeq` is the room's durable event sequence. */
export const Room = defineEntity({
  name: 'Room',
  tableName: 'room',
  properties: {
    id: p.uuid().primary(),
    tenant: p.string().length(64),
    kind: p.string().length(16),
    name: p.string().length(200),
    topic: p.string().length(1000).nullable(),
    key: p.string().length(200).nullable(),
    /** For direct rooms: the two user ids, sorted and joined, unique per tenant. */
    directKey: p.string().length(300).nullable(),
    createdBy: p.string().length(128),
    lastSeq: p.bigint('number').default(0),
    /**
     * Bumped by the triggers below (BUMP_ROOM_ACCESS) with every change a send's access check reads.
     * A send checked against a node's cached access row writes only while this still matches
     * (src/store/hot/append-messages.ts).
     */
    accessVersion: p.bigint('number').default(0),
    /**
     * The transaction that last bumped `accessVersion`: a transaction bumps it once per room, however
     * many members it adds (a room created with 5,000 members is one new row version, not 5,000).
     */
    accessTx: p.bigint('number').nullable(),
    /** Bodies of this room are stored encrypted (AES-256-GCM, keys from MESSAGE_KEYS). */
    encrypted: p.boolean().default(false),
    /** Messages older than this are deleted by the retention job (null: the RETENTION_DAYS default). */
    retentionDays: p.integer().nullable(),
    /** Structured data of the integration (a JSON object, at most 4 KiB; null: none). */
    metadata: p.json<Record<string, unknown>>().nullable(),
    /** Set while the room is archived (read-only: no sends, edits, deletes or reactions). */
    archivedAt: p.datetime().nullable(),
    /** `public`: listed in the tenant's room directory and joinable by anyone of the tenant. */
    visibility: p.string().length(16).default('private'),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
  indexes: [
    { name: 'room_tenant_visibility_idx', properties: ['tenant', 'visibility'] },
    /**
     * `room.directory` (src/store/rooms.ts, `directoryRows`): the tenant's listed rooms in name order,
     * and name or topic containing the query (pg_trgm, which `ILIKE '%...%'` can use from three
     * characters on); partial, so private and archived rooms cost them nothing. `npm run bench:directory`.
     */
    {
      name: 'room_directory_idx',
      expression: `create index "room_directory_idx" on "room" ("tenant", "name", "id") where "visibility" = 'public' and "archived_at" is null`,
    },
    {
      name: 'room_directory_name_trgm_idx',
      expression: `create index "room_directory_name_trgm_idx" on "room" using gin ("name" gin_trgm_ops) where "visibility" = 'public' and "archived_at" is null`,
    },
    {
      name: 'room_directory_topic_trgm_idx',
      expression: `create index "room_directory_topic_trgm_idx" on "room" using gin ("topic" gin_trgm_ops) where "visibility" = 'public' and "archived_at" is null`,
    },
  ],
  uniques: [
    { name: 'room_tenant_key_unique', properties: ['tenant', 'key'] },
    { name: 'room_tenant_direct_key_unique', properties: ['tenant', 'directKey'] },
  ],
  triggers: [
    {
      name: 'access_version',
      timing: 'before',
      events: ['update'],
      when: ACCESS_ROOM_CHANGED,
      body: 'new.access_version := old.access_version + 1; return new;',
    },
  ],
});
export type RoomEntity = InferEntity<typeof Room>;

/** A user's membership of a room (the user's tenant is the room's tenant). */
export const Membership = defineEntity({
  name: 'Membership',
  tableName: 'membership',
  properties: {
    room: () => p.manyToOne(Room).primary().deleteRule('cascade'),
    userId: p.string().length(128).primary(),
    role: p.string().length(16),
    joinedAt: p.datetime().onCreate(() => new Date()),
    /**
     * My own read position: my unread counts, `unread.changed`, the room list, push and digests
     * count from it. `receipt.markUnread` moves it back; never ahead of `receiptSeq`.
     */
    lastReadSeq: p.bigint('number').default(0),
    /**
     * The read receipt the room sees (`receipt.read`, `receipt.readers`, `room.members`): only ever
     * moves forward, a personal `markUnread` leaves it where it is.
     */
    receiptSeq: p.bigint('number').default(0),
    /** When the read receipt last moved. */
    lastReadAt: p.datetime().nullable(),
    /** Cannot send until then. */
    mutedUntil: p.datetime().nullable(),
  },
  indexes: [{ name: 'membership_user_idx', properties: ['userId'] }],
  triggers: [
    { name: 'access_version', timing: 'after', events: ['insert', 'delete'], body: BUMP_ROOM_ACCESS },
    { name: 'access_version_change', timing: 'after', events: ['update'], when: ACCESS_MEMBER_CHANGED, body: BUMP_ROOM_ACCESS },
  ],
});
export type MembershipEntity = InferEntity<typeof Membership>;

export type Attachment = AttachmentDto;

export interface MessageCard {
  title: string;
  fields: { label: string; value: string }[];
  links?: { label: string; url: string }[] | undefined;
}

/** A chat message. `seq` is the room sequence number taken by its `message.new` event. */
export const Message = defineEntity({
  name: 'Message',
  tableName: 'message',
  properties: {
    id: p.uuid().primary(),
    /**
     * No foreign key (nor on `room_event.room`): every writer of a room's messages and events holds
     * the room's row lock (the grouped send locks it in its own statement), so a room that is gone
     * takes none, and `deleteRoom` (src/store/rooms.ts) deletes them itself. The two key checks cost
     * the grouped send about a tenth of its PostgreSQL CPU per message (docs/BENCHMARKS.md, tenth pass).
     */
    room: () => p.manyToOne(Room).createForeignKeyConstraint(false),
    tenant: p.string().length(64),
    seq: p.bigint('number'),
    senderId: p.string().length(128),
    clientId: p.uuid().nullable(),
    body: p.text().nullable(),
    kind: p.string().length(16).default('text'),
    attachments: p.json<Attachment[]>().default('[]'),
    replyToId: p.uuid().nullable(),
    mentions: p.json<string[]>().default('[]'),
    /** Structured data of the integration (a JSON object, at most 4 KiB; null: none). Never encrypted. */
    metadata: p.json<Record<string, unknown>>().nullable(),
    /** The card of a `card` message (title, fields, links; null otherwise). Never encrypted. */
    card: p.json<MessageCard>().nullable(),
    /** Key id when the body is encrypted at rest (null: plain text). */
    keyId: p.string().length(32).nullable(),
    replyCount: p.integer().default(0),
    lastReplyAt: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    editedAt: p.datetime().nullable(),
    deletedAt: p.datetime().nullable(),
    deletedBy: p.string().length(128).nullable(),
    /**
     * Full-text search vector, computed by PostgreSQL: null for deleted and encrypted messages, so
     * they never match. Never loaded into entities (lazy) and never written.
     */
    search: p
      .string()
      .columnType('tsvector')
      .generated(`(case when "deleted_at" is null and "key_id" is null then to_tsvector('simple', coalesce("body", '')) else null end) stored`)
      .nullable()
      .lazy(),
  },
  indexes: [
    /** A thread's replies in order; partial, so a message that is not a reply (most) adds no entry. */
    {
      name: 'message_reply_to_idx',
      expression: `create index "message_reply_to_idx" on "message" ("reply_to_id", "seq") where "reply_to_id" is not null`,
    },
    /** Walked by the retention job. */
    { name: 'message_created_at_idx', properties: ['createdAt'] },
    /**
     * Full-text search. New entries go to the index's pending list and are merged into it in bulk
     * (GIN's fast update: cheaper per message than one insertion per word); the insert that finds
     * the list over `gin_pending_list_limit` merges it while its statement waits. At the default
     * 4 MB such a merge held a grouped send for up to about 100 ms (the sends' p999 73-107 ms); at
     * 512 kB merges are more frequent and shorter: p999 12-42 ms in sends-only runs (29-59 ms in full
     * runs), p99 a few ms higher (15-19 ms at 64 senders), the same PostgreSQL CPU per send:
     * docs/BENCHMARKS.md, "twelfth pass".
     */
    {
      name: 'message_search_idx',
      expression: `create index "message_search_idx" on "message" using gin ("search") with (gin_pending_list_limit = 512)`,
    },
  ],
  uniques: [
    { name: 'message_room_seq_unique', properties: ['room', 'seq'] },
    { name: 'message_sender_client_id_unique', properties: ['tenant', 'senderId', 'clientId'] },
  ],
});
export type MessageEntity = InferEntity<typeof Message>;

/**
 * The room's durable event log: one row per sequence number. Replay reads it; message events
 * point at the message row so that a replay always shows the message's current state.
 */
export const RoomEvent = defineEntity({
  name: 'RoomEvent',
  tableName: 'room_event',
  properties: {
    /** No foreign key: see `Message.room`. */
    room: () => p.manyToOne(Room).primary().createForeignKeyConstraint(false),
    seq: p.bigint('number').primary(),
    type: p.string().length(32),
    messageId: p.uuid().nullable(),
    data: p.json<Record<string, unknown>>().default('{}'),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
  indexes: [{ name: 'room_event_created_at_idx', properties: ['createdAt'] }],
});
export type RoomEventEntity = InferEntity<typeof RoomEvent>;

/** Users banned from a room: removed and cannot be re-added until unbanned. */
export const RoomBan = defineEntity({
  name: 'RoomBan',
  tableName: 'room_ban',
  properties: {
    room: () => p.manyToOne(Room).primary().deleteRule('cascade'),
    userId: p.string().length(128).primary(),
    bannedBy: p.string().length(128),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
  triggers: [{ name: 'access_version', timing: 'after', events: ['insert', 'delete'], body: BUMP_ROOM_ACCESS }],
});

/** Every earlier version of an edited message (audit and `chat.edits`). */
export const MessageEdit = defineEntity({
  name: 'MessageEdit',
  tableName: 'message_edit',
  properties: {
    id: p.uuid().primary(),
    message: () => p.manyToOne(Message).deleteRule('cascade'),
    body: p.text().nullable(),
    keyId: p.string().length(32).nullable(),
    editorId: p.string().length(128),
    /** When this version was replaced. */
    replacedAt: p.datetime().onCreate(() => new Date()),
  },
  indexes: [{ name: 'message_edit_message_idx', properties: ['message', 'replacedAt'] }],
});

/** One reaction per user per emoji per message. */
export const Reaction = defineEntity({
  name: 'Reaction',
  tableName: 'reaction',
  properties: {
    message: () => p.manyToOne(Message).primary().deleteRule('cascade'),
    userId: p.string().length(128).primary(),
    emoji: p.string().length(64).primary(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});

/** Per-user inbox sequence (mentions, new rooms, notifications, invites, signals). */
export const InboxCursor = defineEntity({
  name: 'InboxCursor',
  tableName: 'inbox_cursor',
  properties: {
    tenant: p.string().length(64).primary(),
    userId: p.string().length(128).primary(),
    lastSeq: p.bigint('number').default(0),
  },
});

/** A user's durable inbox items, resumable by seq like room events. */
export const InboxEvent = defineEntity({
  name: 'InboxEvent',
  tableName: 'inbox_event',
  properties: {
    tenant: p.string().length(64).primary(),
    userId: p.string().length(128).primary(),
    seq: p.bigint('number').primary(),
    type: p.string().length(32),
    data: p.json<Record<string, unknown>>().default('{}'),
    createdAt: p.datetime().onCreate(() => new Date()),
    /**
     * An `inbox.notify` item written with a `clientId`: the service that sent it, the clientId, and
     * the hash of the request (its target and content) that a repeat is compared with. Null otherwise.
     */
    senderId: p.string().length(128).nullable(),
    clientId: p.uuid().nullable(),
    requestHash: p.string().length(64).nullable(),
  },
  indexes: [
    { name: 'inbox_event_created_at_idx', properties: ['createdAt'] },
    {
      // One item per user and clientId of a sender: a repeat never notifies twice. Partial: most
      // items have no clientId, and they cost the index nothing.
      name: 'inbox_event_client_id_unique',
      expression: `create unique index "inbox_event_client_id_unique" on "inbox_event" ("tenant", "sender_id", "client_id", "user_id") where "client_id" is not null`,
    },
  ],
});

/**
 * A video meeting on the external provider. Our id is also the provider's room name, so creating
 * the provider room twice for one meeting is harmless. Status: scheduled -> live -> ended (never back).
 */
export const Meeting = defineEntity({
  name: 'Meeting',
  tableName: 'meeting',
  properties: {
    id: p.uuid().primary(),
    tenant: p.string().length(64),
    room: () => p.manyToOne(Room).deleteRule('cascade'),
    createdBy: p.string().length(128),
    title: p.string().length(200).nullable(),
    provider: p.string().length(16),
    providerRoomId: p.string().length(128).nullable(),
    url: p.string().length(1000),
    status: p.string().length(16).default('scheduled'),
    createdAt: p.datetime().onCreate(() => new Date()),
    startedAt: p.datetime().nullable(),
    endedAt: p.datetime().nullable(),
    endedBy: p.string().length(128).nullable(),
    expiresAt: p.datetime(),
  },
  indexes: [
    { name: 'meeting_room_idx', properties: ['room', 'createdAt'] },
    /**
     * The expiry sweep (src/services/meetings/expiry.ts, `meetingsByExpiry`: every node, every
     * VIDEO_REMOVAL_POLL_MS): a provider's meetings not ended, by expiry. Partial, so the ended ones
     * (nearly all of a table that only retention shrinks) cost it nothing.
     */
    {
      name: 'meeting_open_expiry_idx',
      expression: `create index "meeting_open_expiry_idx" on "meeting" ("provider", "expires_at", "id") where "status" <> 'ended'`,
    },
  ],
  checks: [{ name: 'meeting_status_check', expression: `"status" in ('scheduled', 'live', 'ended')` }],
});

/** One provider connection (session) of a user in a meeting, fed by webhooks. */
export const MeetingParticipant = defineEntity({
  name: 'MeetingParticipant',
  tableName: 'meeting_participant',
  properties: {
    meeting: () => p.manyToOne(Meeting).primary().deleteRule('cascade'),
    sessionId: p.string().length(128).primary(),
    userId: p.string().length(128),
    name: p.string().length(200).nullable(),
    joinedAt: p.datetime(),
    leftAt: p.datetime().nullable(),
  },
});

/** Video webhook deliveries already processed (de-duplication by the provider's event id). */
export const VideoWebhookEvent = defineEntity({
  name: 'VideoWebhookEvent',
  tableName: 'video_webhook_event',
  properties: {
    provider: p.string().length(16).primary(),
    eventId: p.string().length(200).primary(),
    receivedAt: p.datetime().onCreate(() => new Date()),
  },
  indexes: [{ name: 'video_webhook_event_received_at_idx', properties: ['receivedAt'] }],
});

/**
 * Users to take out of a room's video calls on the provider (banned or removed from the room, or
 * refused on a join webhook whose removal failed): written in the transaction of the ban or removal,
 * sent by a worker on any node (src/services/meetings/removals.ts) and retried until the provider
 * answers; the row is deleted once done. One row per room and user (a new ban resets it).
 */
export const VideoRemoval = defineEntity({
  name: 'VideoRemoval',
  tableName: 'video_removal',
  properties: {
    id: p.bigint('number').primary().autoincrement(),
    room: () => p.manyToOne(Room).deleteRule('cascade'),
    tenant: p.string().length(64),
    userId: p.string().length(128),
    /** `banned`, `removed`, or `refused` (a join the webhook refused and could not take out at once). */
    reason: p.string().length(16),
    attempts: p.integer().default(0),
    nextAttemptAt: p.datetime(),
    leaseUntil: p.datetime().nullable(),
    lastError: p.string().length(500).nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
  uniques: [{ name: 'video_removal_room_user_key', properties: ['room', 'userId'] }],
  indexes: [{ name: 'video_removal_due_idx', properties: ['nextAttemptAt'] }],
  checks: [{ name: 'video_removal_reason_check', expression: `"reason" in ('banned', 'removed', 'refused')` }],
});

/**
 * The meetings of deleted rooms whose join tokens may still be valid: the meeting rows go with
 * their room, but a token minted before the deletion lets its holder into the provider room until it
 * expires, and LiveKit creates a room anew on such a join. Written in the deletion's transaction
 * (src/services/meetings/lifecycle.ts, `openOf`), read by the provider's webhooks (a join or start of
 * such a provider room ends it again), forgotten after `keepUntil` (the meeting's expiry, which no
 * token outlives, plus a margin) by the expiry sweep. Our meeting id is the provider's room name.
 */
export const DeletedMeeting = defineEntity({
  name: 'DeletedMeeting',
  tableName: 'deleted_meeting',
  properties: {
    meetingId: p.uuid().primary(),
    provider: p.string().length(16),
    tenant: p.string().length(64),
    /** The deleted room's id (no foreign key: the room is gone). */
    roomId: p.uuid(),
    keepUntil: p.datetime(),
  },
  indexes: [{ name: 'deleted_meeting_keep_until_idx', properties: ['keepUntil'] }],
});

export const entities = [
  User,
  Room,
  Membership,
  Message,
  RoomEvent,
  RoomBan,
  MessageEdit,
  Reaction,
  InboxCursor,
  InboxEvent,
  Meeting,
  MeetingParticipant,
  VideoWebhookEvent,
  VideoRemoval,
  DeletedMeeting,
  WebhookEndpoint,
  WebhookDelivery,
  StoredFile,
  PushDevice,
  NotifyPreference,
  NotifyRoomPreference,
  NotifyPush,
  NotifyDigest,
  AuditEvent,
  JobLease,
];
