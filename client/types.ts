/**
 * The API's types, derived from the server's `AppRouter` *type* (nothing of the server is bundled:
 * `import type` is erased). A frontend narrows events with `switch (event.type)`.
 */
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';
import type { AppRouter } from '../src/trpc/router.js';
import type { DurableEventType, InboxItem as ServerInboxItem } from '../src/domain/events.js';

export type { AppRouter };
export type RouterInputs = inferRouterInputs<AppRouter>;
export type RouterOutputs = inferRouterOutputs<AppRouter>;

type Yielded<T> = T extends AsyncIterable<infer U> ? U : never;
type DataOf<T> = T extends { data: infer D } ? D : never;

/** What `chat.events` delivers to `onData`: `{ id, data }` with `id` the room seq as a string. */
export type RoomEventEnvelope = Yielded<RouterOutputs['chat']['events']>;
/** A room event: switch on `event.type` for full narrowing. */
export type RoomEvent = DataOf<RoomEventEnvelope>;
export type RoomEventType = RoomEvent['type'];
/** One kind of room event, e.g. `RoomEventOf<'message.new'>`. */
export type RoomEventOf<T extends RoomEventType> = Extract<RoomEvent, { type: T }>;
/** Room events that take a seq and are replayed on resume. */
export type DurableRoomEvent = RoomEventOf<DurableEventType>;
/** Live-only room events (never replayed). */
export type EphemeralRoomEvent = Exclude<RoomEvent, DurableRoomEvent | { type: 'ready' }>;

/** What `inbox.events` delivers to `onData`: `{ id, data }`. */
export type InboxEventEnvelope = Yielded<RouterOutputs['inbox']['events']>;
/** An inbox event (mentions, new rooms, meeting invites, WebRTC signals, ...). */
export type InboxEvent = DataOf<InboxEventEnvelope>;
export type InboxEventType = InboxEvent['type'];
export type InboxEventOf<T extends InboxEventType> = Extract<InboxEvent, { type: T }>;
/** Inbox items: take the inbox's seq and are replayed on resume (mentions, new rooms, notifications, invites). */
export type InboxItem = InboxEventOf<ServerInboxItem['type']>;
/** Live-only inbox events (signals, `unread.changed`, `room.activity`, `room.changed`), never replayed. */
export type InboxLiveEvent = Exclude<InboxEvent, InboxItem | { type: 'ready' }>;
/** The newest message of a room as `room.activity` carries it. */
export type MessagePreview = NonNullable<InboxEventOf<'room.activity'>['lastMessage']>;

export type Message = RouterOutputs['chat']['send'];
/** A thread's summary as the event of a reply, or of a reply's deletion, carries it: set it on the root. */
export type ThreadSummary = NonNullable<RoomEventOf<'message.new'>['thread']>;
export type Reaction = Message['reactions'][number];
export type Attachment = Message['attachments'][number];
/** An uploaded file in a message: `'fileId' in attachment`. */
export type FileAttachment = Extract<Attachment, { fileId: string }>;
/** An external link in a message (https). */
export type LinkAttachment = Exclude<Attachment, FileAttachment>;
/** `file.get`: metadata and short-lived URLs (members of the file's room only). */
export type FileInfo = RouterOutputs['file']['get'];
/** `file.createUpload`: where to PUT the bytes. */
export type UploadTicket = RouterOutputs['file']['createUpload'];
export type Room = RouterOutputs['room']['get'];
export type RoomKind = Room['kind'];
export type RoomListItem = RouterOutputs['room']['list'][number];
export type Member = RouterOutputs['room']['members'][number];
/** A room of the tenant's directory of public rooms (`room.directory`). */
export type DirectoryRoom = RouterOutputs['room']['directory'][number];
export type MemberRole = Member['role'];
export type History = RouterOutputs['chat']['history'];
export type SearchHit = RouterOutputs['chat']['search']['hits'][number];
export type Me = RouterOutputs['auth']['me'];
export type LoginResult = RouterOutputs['auth']['devLogin'];
export type PresenceInfo = RouterOutputs['presence']['get'][number];
export type PresenceStatus = PresenceInfo['status'];
export type UnreadCount = RouterOutputs['receipt']['unread'][number];

/**
 * The durable types (a runtime copy: the client imports no server code). Typed against the server's
 * event union, so a type added there and missing here fails to compile.
 */
const DURABLE: Record<DurableRoomEvent['type'], true> = {
  'message.new': true,
  'message.edited': true,
  'message.deleted': true,
  'reaction.added': true,
  'reaction.removed': true,
  'member.joined': true,
  'member.left': true,
  'member.updated': true,
  'room.updated': true,
  'room.archived': true,
  'room.unarchived': true,
  'file.ready': true,
};

/** True for events that carry a room seq (and are replayed on resume). */
export function isDurableEvent(event: RoomEvent): event is DurableRoomEvent {
  return Object.hasOwn(DURABLE, event.type);
}

/** The inbox item types (a runtime copy, typed against the server's union like `DURABLE`). */
const INBOX_ITEMS: Record<InboxItem['type'], true> = {
  mention: true,
  'room.added': true,
  'direct.created': true,
  notification: true,
  'meeting.invite': true,
};

/** True for inbox items (they carry the inbox's seq and are replayed on resume). */
export function isInboxItem(event: InboxEvent): event is InboxItem {
  return Object.hasOwn(INBOX_ITEMS, event.type);
}
