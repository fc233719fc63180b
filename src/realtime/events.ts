/**
 * The one place that owns the shapes of room and inbox events. Durable events carry the room's
 * sequence number `seq`; ephemeral ones (typing, presence, receipts) carry none and are never replayed.
 */

export interface Reaction {
  emoji: string;
  count: number;
  me: boolean;
}

export interface AttachmentDto {
  url: string;
  name: string;
  size: number;
  mime: string;
}

export interface MessageDto {
  id: string;
  roomId: string;
  seq: number;
  senderId: string;
  body: string | null;
  kind: 'text' | 'image' | 'file' | 'system';
  attachments: AttachmentDto[];
  replyToId: string | null;
  mentions: string[];
  createdAt: Date;
  editedAt: Date | null;
  deletedAt: Date | null;
  reactions: Reaction[];
  replyCount: number;
}

export type MemberRole = 'owner' | 'admin' | 'moderator' | 'member';

export type DurableRoomEvent =
  | { type: 'message.new'; roomId: string; seq: number; message: MessageDto }
  | { type: 'message.edited'; roomId: string; seq: number; message: MessageDto }
  | { type: 'message.deleted'; roomId: string; seq: number; message: MessageDto }
  | { type: 'reaction.added'; roomId: string; seq: number; messageId: string; userId: string; emoji: string }
  | { type: 'reaction.removed'; roomId: string; seq: number; messageId: string; userId: string; emoji: string }
  | { type: 'member.joined'; roomId: string; seq: number; userId: string; role: MemberRole; by: string | null }
  | { type: 'member.left'; roomId: string; seq: number; userId: string; reason: 'left' | 'removed' | 'banned'; by: string | null }
  | { type: 'room.updated'; roomId: string; seq: number; name: string; topic: string | null; by: string };

export type EphemeralRoomEvent =
  | { type: 'typing'; roomId: string; userId: string; typing: boolean }
  | { type: 'presence'; roomId: string; userId: string; status: 'online' | 'away' | 'offline' }
  | { type: 'receipt.read'; roomId: string; userId: string; seq: number };

/** What `chat.events` yields: `ready` first (without lastEventId), then room events. */
export type RoomEvent = { type: 'ready'; roomId: string; seq: number } | DurableRoomEvent | EphemeralRoomEvent;

export type DurableEventType = DurableRoomEvent['type'];

const DURABLE_TYPES: ReadonlySet<string> = new Set<DurableEventType>([
  'message.new',
  'message.edited',
  'message.deleted',
  'reaction.added',
  'reaction.removed',
  'member.joined',
  'member.left',
  'room.updated',
]);

export function isDurable(e: DurableRoomEvent | EphemeralRoomEvent): e is DurableRoomEvent {
  return DURABLE_TYPES.has(e.type);
}

/** Bus channel names (the bus adds its own deployment prefix). */
export const channels = {
  room: (roomId: string) => `room:${roomId}`,
  user: (tenant: string, userId: string) => `user:${tenant}:${userId}`,
};
