import { keyOf } from './ids.js';
/**
 * The one place that owns the shapes of room and inbox events. Durable events carry the room's
 * sequence number `seq`; ephemeral ones (typing, presence, receipts) carry none and are never replayed.
 */

export interface Reaction {
  emoji: string;
  count: number;
  me: boolean;
}

/** An external link given by the sender (https only); name, size and type are the sender's word. */
export interface LinkAttachmentDto {
  url: string;
  name: string;
  /** The sender's word, when given (a link is never fetched). */
  size?: number;
  mime?: string;
}

/**
 * An uploaded file (`file.createUpload`, then `attachments: [{ fileId }]`): metadata only, checked
 * by the server; `file.get` gives members short-lived URLs. `width`/`height` of images and
 * `thumbnail` arrive with `file.ready` (history shows them once there).
 */
export interface FileAttachmentDto {
  fileId: string;
  name: string;
  size: number;
  mime: string;
  width: number | null;
  height: number | null;
  /** A thumbnail exists (`file.get` gives its URL). */
  thumbnail: boolean;
}

/** A message's attachment: `'fileId' in a` tells an uploaded file from a link. */
export type AttachmentDto = LinkAttachmentDto | FileAttachmentDto;

/** Structured data of an integration: a plain JSON object (at most 4 KiB serialized). */
export type JsonObject = Record<string, unknown>;

/** The content of a `card` message (sent by service tokens): a title, label/value fields, https links. */
export interface CardDto {
  title: string;
  fields: { label: string; value: string }[];
  links?: { label: string; url: string }[] | undefined;
}

export interface MessageDto {
  id: string;
  roomId: string;
  seq: number;
  senderId: string;
  body: string | null;
  kind: 'text' | 'image' | 'file' | 'system' | 'card';
  attachments: AttachmentDto[];
  /** Structured data given by the sender (null: none). Stored in plain text, also in encrypted rooms. */
  metadata: JsonObject | null;
  /** The card of a `card` message (null for every other kind). Stored in plain text, also in encrypted rooms. */
  card: CardDto | null;
  replyToId: string | null;
  mentions: string[];
  createdAt: Date;
  editedAt: Date | null;
  deletedAt: Date | null;
  reactions: Reaction[];
  replyCount: number;
  lastReplyAt: Date | null;
}

/**
 * A thread's summary right after one of its replies was sent or deleted: what its root's
 * `replyCount` and `lastReplyAt` were then (read under the root's lock, kept with the event, so a
 * replay gives it as it was at that event). Clients set these on the root, never add deltas.
 */
export interface ThreadSummary {
  rootId: string;
  replyCount: number;
  lastReplyAt: Date | null;
}

export type MemberRole = 'owner' | 'admin' | 'moderator' | 'member';

export type PresenceStatus = 'online' | 'away' | 'dnd' | 'offline';

export type DurableRoomEvent =
  /** `thread`: on a reply's event, its root's thread summary with this reply (absent on events recorded before events carried it). */
  | { type: 'message.new'; roomId: string; seq: number; message: MessageDto; thread?: ThreadSummary }
  | { type: 'message.edited'; roomId: string; seq: number; message: MessageDto }
  /** `thread`: on a reply's deletion, its root's thread summary without this reply (absent as on `message.new`). */
  | { type: 'message.deleted'; roomId: string; seq: number; message: MessageDto; thread?: ThreadSummary }
  /** `reactions`: the message's reactions after the change (`me` false); set them, do not add deltas. */
  | { type: 'reaction.added'; roomId: string; seq: number; messageId: string; userId: string; emoji: string; reactions: Reaction[] }
  | { type: 'reaction.removed'; roomId: string; seq: number; messageId: string; userId: string; emoji: string; reactions: Reaction[] }
  | { type: 'member.joined'; roomId: string; seq: number; userId: string; role: MemberRole; by: string | null }
  | { type: 'member.left'; roomId: string; seq: number; userId: string; reason: 'left' | 'removed' | 'banned'; by: string | null }
  | {
      type: 'member.updated';
      roomId: string;
      seq: number;
      userId: string;
      role: MemberRole;
      mutedUntil: Date | null;
      by: string;
    }
  /**
   * The room's name, topic or metadata changed (`room.update`): all three as they are after the
   * change. `metadata` is absent only on events recorded before room events carried it.
   */
  | { type: 'room.updated'; roomId: string; seq: number; name: string; topic: string | null; metadata?: JsonObject | null; by: string }
  /** The room became read-only (`room.archive`) / writable again (`room.unarchive`). */
  | { type: 'room.archived'; roomId: string; seq: number; by: string }
  | { type: 'room.unarchived'; roomId: string; seq: number; by: string }
  /**
   * The previews of an uploaded image are done (after the send, off the request path): its
   * dimensions and whether a thumbnail exists (false: the image could not be decoded). Durable, so
   * a client that was away still learns it on resume.
   */
  | {
      type: 'file.ready';
      roomId: string;
      seq: number;
      fileId: string;
      messageId: string;
      width: number | null;
      height: number | null;
      thumbnail: boolean;
    };

export type EphemeralRoomEvent =
  | { type: 'typing'; roomId: string; userId: string; typing: boolean }
  /**
   * A user's presence as the presence store held it at `version` (one counter for all presence,
   * raised by every change): of two presence events of a user, the one with the higher version is
   * the newer, whatever order they arrive in (they may be published by two nodes).
   */
  | { type: 'presence'; roomId: string; userId: string; status: PresenceStatus; lastSeenAt: Date | null; version: number }
  | { type: 'receipt.read'; roomId: string; userId: string; seq: number }
  /**
   * The room was deleted (`room.delete`): the last event of every open stream, which then completes.
   * `by` is null when a node learned it afterwards, finding the room gone (its bus missed the publish).
   */
  | { type: 'room.deleted'; roomId: string; by: string | null };

/** What `chat.events` yields: `ready` first (without lastEventId), then room events. */
/**
 * What `chat.events` yields. `ready` starts a fresh stream at the room's position; `reset` starts a
 * resumed one whose `lastEventId` cannot be continued exactly (older than what retention kept, or
 * above the room's position): reload the history, then carry on from `seq`.
 */
export type RoomEvent =
  | { type: 'ready'; roomId: string; seq: number }
  | { type: 'reset'; roomId: string; seq: number }
  | DurableRoomEvent
  | EphemeralRoomEvent;

export type DurableEventType = DurableRoomEvent['type'];

/** Every durable type exactly once: adding one to DurableRoomEvent without listing it fails to compile. */
const DURABLE_TYPES: Record<DurableEventType, true> = {
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

/**
 * Which durable events write content (messages and reactions): an archived room takes none of them,
 * whoever checked access before (src/store/tx.ts checks it under the room's lock). Every type is
 * decided here: adding one to DurableRoomEvent without deciding fails to compile.
 */
const WRITES_CONTENT: Record<DurableEventType, boolean> = {
  'message.new': true,
  'message.edited': true,
  'message.deleted': true,
  'reaction.added': true,
  'reaction.removed': true,
  'member.joined': false,
  'member.left': false,
  'member.updated': false,
  'room.updated': false,
  'room.archived': false,
  'room.unarchived': false,
  // A preview of a file sent before the archive is the server's work, not a write by a user.
  'file.ready': false,
};

/** True for events an archived room refuses (messages, edits, deletions, reactions). */
export function writesContent(type: DurableEventType): boolean {
  return WRITES_CONTENT[type];
}

export function isDurable(e: DurableRoomEvent | EphemeralRoomEvent): e is DurableRoomEvent {
  return Object.hasOwn(DURABLE_TYPES, e.type);
}

/** Durable items of a user's inbox (per-user sequence, resumable like room events). */
export type InboxItem =
  | { type: 'mention'; seq: number; roomId: string; messageId: string; messageSeq: number; from: string; excerpt: string }
  | { type: 'room.added'; seq: number; roomId: string; roomName: string; roomKind: string; by: string }
  | { type: 'direct.created'; seq: number; roomId: string; userId: string }
  | { type: 'notification'; seq: number; kind: string; title: string; data: Record<string, unknown> | null; from: string }
  | {
      type: 'meeting.invite';
      seq: number;
      roomId: string;
      meetingId: string;
      title: string | null;
      url: string | null;
      from: string;
    };

/** Live-only inbox events (never replayed). */
export type InboxSignal = {
  type: 'signal';
  roomId: string;
  from: string;
  signal: 'offer' | 'answer' | 'ice' | 'hangup';
  payload: unknown;
};

/**
 * Live-only: my read position of a room changed (read, marked unread, all read), possibly on another
 * of my devices; carries the room's counts after the change, so a room list updates without a query.
 */
export type InboxUnreadChanged = {
  type: 'unread.changed';
  roomId: string;
  lastReadSeq: number;
  unread: number;
  mentions: number;
  /** Orders this room's counts with those of `room.activity` and `room.list`: lower than the counts shown means stale. */
  version: number;
};

/** The newest message of a room as a room list shows it: who, what kind, the start of its text. */
export interface MessagePreview {
  id: string;
  seq: number;
  senderId: string;
  kind: MessageDto['kind'];
  /** The first 140 characters of the body (a card: its title); null when deleted or empty. */
  text: string | null;
  attachmentCount: number;
  createdAt: Date;
  deleted: boolean;
}

/**
 * Live-only: a message landed, was edited or deleted in one of my rooms. Coalesced per room (at most
 * one per room per coalescing window), sent to the members who are online; carries the room list
 * item's live parts after the change. A later one for the same room replaces an earlier one: keep
 * the one with the highest `seq`.
 */
export type InboxRoomActivity = {
  type: 'room.activity';
  roomId: string;
  /** The room's last seq when the counts were taken. */
  seq: number;
  lastMessage: MessagePreview | null;
  unreadCount: number;
  mentionCount: number;
  lastReadSeq: number;
  /**
   * Orders this room's counts with those of `unread.changed` and `room.list`: counts read later never
   * have a lower one. Counts taken before a read on another device may arrive after its
   * `unread.changed`, or after a `room.list` read after it; a client keeps the counts with the
   * highest version (on a tie, the later).
   */
  version: number;
};

/**
 * Live-only: a room became mine (`joined`: I created or joined it, or was added, on any device), one
 * of my rooms changed in a way a room list shows (renamed, archived, unarchived), or it is no longer
 * mine (`left`: I left or was removed; `deleted`). A client refetches `room.list` or drops the room.
 */
export type InboxRoomChanged = {
  type: 'room.changed';
  roomId: string;
  change: 'joined' | 'updated' | 'archived' | 'unarchived' | 'left' | 'deleted';
};

/** What `inbox.events` yields: `ready` first (without lastEventId), then items and live events. */
export type InboxEvent =
  | { type: 'ready'; seq: number }
  /** A resume that cannot continue exactly (see RoomEvent's `reset`): reread what the inbox shows, then carry on from `seq`. */
  | { type: 'reset'; seq: number }
  | InboxItem
  | InboxSignal
  | InboxUnreadChanged
  | InboxRoomActivity
  | InboxRoomChanged;

/** Inbox events published live, never stored (no per-user seq). */
export type InboxLiveEvent = InboxSignal | InboxUnreadChanged | InboxRoomActivity | InboxRoomChanged;

/** The inbox events that are not items (no per-user seq, never replayed); a new one must be listed here. */
const INBOX_LIVE_TYPES: Record<Exclude<InboxEvent, InboxItem>['type'], true> = {
  ready: true,
  reset: true,
  signal: true,
  'unread.changed': true,
  'room.activity': true,
  'room.changed': true,
};

/** True for durable inbox items (per-user seq, replayed on resume). */
export function isInboxItem(e: InboxEvent): e is InboxItem {
  return !Object.hasOwn(INBOX_LIVE_TYPES, e.type);
}

/** Bus channel names (the bus adds its own deployment prefix). */
export const channels = {
  room: (roomId: string) => `room:${roomId}`,
  user: (tenant: string, userId: string) => `user:${keyOf(tenant, userId)}`,
  /** Subscribed on each node while any inbox of the tenant is open there (never published to). */
  inboxes: (tenant: string) => `inboxes:${keyOf(tenant)}`,
};

/** A hit of chat.search. */
export interface SearchHit {
  message: MessageDto;
  roomId: string;
  roomName: string;
  rank: number;
  /** HTML-escaped excerpt with the matches wrapped in <mark>…</mark>. */
  snippet: string;
}

/** An earlier version of a message (`chat.edits`). */
export interface MessageEditDto {
  /** The version's id: the cursor of `chat.edits` (`beforeId`, `afterId`). */
  id: string;
  body: string | null;
  editorId: string;
  replacedAt: Date;
}

/** A user's presence as presence.get answers it. */
export interface PresenceState {
  userId: string;
  status: PresenceStatus;
  lastSeenAt: Date | null;
  /** The presence store's version when this was read: at least as new as every presence event with a version up to it. */
  version: number;
}
