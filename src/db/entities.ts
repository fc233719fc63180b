import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

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
    createdAt: p.datetime().onCreate(() => new Date()),
    lastSeenAt: p.datetime().onCreate(() => new Date()),
  },
});
export type UserEntity = InferEntity<typeof User>;

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
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
  uniques: [
    { name: 'room_tenant_key_unique', properties: ['tenant', 'key'] },
    { name: 'room_tenant_direct_key_unique', properties: ['tenant', 'directKey'] },
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
    lastReadSeq: p.bigint('number').default(0),
  },
  indexes: [{ name: 'membership_user_idx', properties: ['userId'] }],
});
export type MembershipEntity = InferEntity<typeof Membership>;

export interface Attachment {
  url: string;
  name: string;
  size: number;
  mime: string;
}

/** A chat message. `seq` is the room sequence number taken by its `message.new` event. */
export const Message = defineEntity({
  name: 'Message',
  tableName: 'message',
  properties: {
    id: p.uuid().primary(),
    room: () => p.manyToOne(Room).deleteRule('cascade'),
    tenant: p.string().length(64),
    seq: p.bigint('number'),
    senderId: p.string().length(128),
    clientId: p.uuid().nullable(),
    body: p.text().nullable(),
    kind: p.string().length(16).default('text'),
    attachments: p.json<Attachment[]>().default('[]'),
    replyToId: p.uuid().nullable(),
    mentions: p.json<string[]>().default('[]'),
    createdAt: p.datetime().onCreate(() => new Date()),
    editedAt: p.datetime().nullable(),
    deletedAt: p.datetime().nullable(),
  },
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
    room: () => p.manyToOne(Room).primary().deleteRule('cascade'),
    seq: p.bigint('number').primary(),
    type: p.string().length(32),
    messageId: p.uuid().nullable(),
    data: p.json<Record<string, unknown>>().default('{}'),
    createdAt: p.datetime().onCreate(() => new Date()),
  },
});
export type RoomEventEntity = InferEntity<typeof RoomEvent>;

export const entities = [User, Room, Membership, Message, RoomEvent];
