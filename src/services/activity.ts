import type { DurableRoomEvent, EphemeralRoomEvent, InboxRoomChanged, MessagePreview } from '../domain/events.js';
import type { Logger } from '../logger.js';
import type { PresenceStore } from '../realtime/presence-store.js';
import type { MessageRow } from '../store/message-row.js';
import { memberIdsOfTenantRoom } from '../store/members.js';
import { unreadCountsOfMembers } from '../store/receipts.js';
import { roomHead } from '../store/rooms.js';
import type { Store } from '../store/store.js';
import type { MessageMapper } from './message-dto.js';
import type { EventPublisher } from './publisher.js';

/** Characters of a body a preview keeps. */
export const PREVIEW_CHARS = 140;

/**
 * A room's coalescing window grows by one `coalesceMs` per this many online members, so the counts
 * of a big room (one unread count per online member) cost about what a small room's cost per second.
 */
export const ACTIVITY_MEMBERS_PER_WINDOW = 100;

export interface ActivityOptions {
  /** The shortest time between two `room.activity` of one room from this node. */
  coalesceMs: number;
}

type RoomChange = InboxRoomChanged['change'];

/** A room whose activity went out: whether more happened since, and the wait before the next one. */
interface RoomState {
  dirty: boolean;
  timer: NodeJS.Timeout | null;
}

/**
 * The room list's live feed on `inbox.events` (docs/API.md, "Inbox"). It watches the room events
 * this node publishes after commit and, off the request path:
 *
 * - after a message is sent, edited or deleted, sends `room.activity` (newest message preview, the
 *   member's unread and mention counts) to each member who is online on any node; the first change
 *   of a quiet room goes out at once, what follows within the room's window is coalesced into one;
 * - after a rename, archive or unarchive, sends `room.changed` to the online members; after a member
 *   left (or was removed, banned) and after the room was deleted, to the members concerned.
 *
 * Live only: a client that reconnects reads `room.list` again. Several nodes writing to one room
 * each send their own coalesced activity (a later one replaces an earlier one, by `seq`).
 */
export class ActivityFeed {
  private readonly rooms = new Map<string, RoomState>();
  /** Online members of a room at its last activity (sizes its window). */
  private readonly online = new Map<string, number>();
  private readonly running = new Set<Promise<void>>();
  private closed = false;

  constructor(
    private readonly store: Store,
    private readonly presence: PresenceStore,
    private readonly publisher: EventPublisher,
    private readonly mapper: MessageMapper,
    private readonly log: Logger,
    private readonly opts: ActivityOptions,
  ) {}

  /** Sees every room event published by this node (EventPublisher's observer): constant work. */
  observe(e: DurableRoomEvent | EphemeralRoomEvent): void {
    switch (e.type) {
      case 'message.new':
      case 'message.edited':
      case 'message.deleted':
        this.touch(e.roomId);
        break;
      case 'room.updated':
        this.run(() => this.changed(e.roomId, 'updated'));
        break;
      case 'room.archived':
        this.run(() => this.changed(e.roomId, 'archived'));
        break;
      case 'room.unarchived':
        this.run(() => this.changed(e.roomId, 'unarchived'));
        break;
      case 'member.left':
        this.run(() => this.left(e.roomId, e.userId));
        break;
      default:
        break;
    }
  }

  /** The room was deleted: its former members (read before the deletion) drop it from their lists. */
  roomDeleted(tenant: string, roomId: string, memberIds: readonly string[]): void {
    this.run(async () => {
      const online = await this.presence.online(tenant, memberIds);
      await Promise.all([...online].map((userId) => this.publisher.inbox(tenant, userId, { type: 'room.changed', roomId, change: 'deleted' })));
    });
  }

  private touch(roomId: string): void {
    if (this.closed) return;
    const state = this.rooms.get(roomId);
    if (state) {
      state.dirty = true;
      return;
    }
    const fresh: RoomState = { dirty: false, timer: null };
    this.rooms.set(roomId, fresh);
    this.cycle(roomId, fresh);
  }

  /** Sends the room's activity, then waits its window; what happened meanwhile goes out after it. */
  private cycle(roomId: string, state: RoomState): void {
    state.dirty = false;
    this.run(async () => {
      try {
        await this.activity(roomId);
      } finally {
        this.wait(roomId, state);
      }
    });
  }

  private wait(roomId: string, state: RoomState): void {
    if (this.closed) return;
    const members = this.online.get(roomId) ?? 0;
    const wait = this.opts.coalesceMs * Math.max(1, Math.ceil(members / ACTIVITY_MEMBERS_PER_WINDOW));
    state.timer = setTimeout(() => {
      state.timer = null;
      if (state.dirty) this.cycle(roomId, state);
      else {
        this.rooms.delete(roomId);
        this.online.delete(roomId);
      }
    }, wait);
    state.timer.unref();
  }

  /** `room.activity` to each online member: the newest message and their counts, one query for all. */
  private async activity(roomId: string): Promise<void> {
    const db = this.store.db();
    const head = await roomHead(db, roomId);
    if (!head) return;
    const members = (await memberIdsOfTenantRoom(db, head.tenant, roomId)) ?? [];
    const online = await this.presence.online(head.tenant, members);
    this.online.set(roomId, online.size);
    if (online.size === 0) return;
    const counts = await unreadCountsOfMembers(db, roomId, [...online]);
    const lastMessage = head.last ? this.preview(head.last) : null;
    await Promise.all(
      counts.map((c) =>
        this.publisher.inbox(head.tenant, c.user_id, {
          type: 'room.activity',
          roomId,
          seq: head.last_seq,
          lastMessage,
          unreadCount: c.unread,
          mentionCount: c.mentions,
          lastReadSeq: c.last_read_seq,
        }),
      ),
    );
  }

  private async changed(roomId: string, change: RoomChange): Promise<void> {
    const db = this.store.db();
    const head = await roomHead(db, roomId);
    if (!head) return;
    const members = (await memberIdsOfTenantRoom(db, head.tenant, roomId)) ?? [];
    const online = await this.presence.online(head.tenant, members);
    await Promise.all([...online].map((userId) => this.publisher.inbox(head.tenant, userId, { type: 'room.changed', roomId, change })));
  }

  private async left(roomId: string, userId: string): Promise<void> {
    const head = await roomHead(this.store.db(), roomId);
    if (!head) return;
    await this.publisher.inbox(head.tenant, userId, { type: 'room.changed', roomId, change: 'left' });
  }

  /** The newest message as a room list shows it (an encrypted body is decrypted, as in `room.list`). */
  preview(row: MessageRow): MessagePreview {
    const deleted = row.deleted_at !== null;
    const body = deleted ? null : this.mapper.body(row.body, row.key_id);
    const text = deleted ? null : body || row.card?.title || null;
    return {
      id: row.id,
      seq: row.seq,
      senderId: row.sender_id,
      kind: row.kind as MessagePreview['kind'],
      text: text === null ? null : cut(text, PREVIEW_CHARS),
      attachmentCount: deleted ? 0 : row.attachments.length,
      createdAt: row.created_at,
      deleted,
    };
  }

  /** Runs a job off the caller's path; its failure is logged, `close` waits for it. */
  private run(job: () => Promise<void>): void {
    if (this.closed) return;
    const p: Promise<void> = job()
      .catch((err: unknown) => this.log.warn({ err }, 'room activity feed error'))
      .finally(() => {
        this.running.delete(p);
      });
    this.running.add(p);
  }

  /** Stops the timers and waits for what is being sent. */
  async close(): Promise<void> {
    this.closed = true;
    for (const s of this.rooms.values()) if (s.timer) clearTimeout(s.timer);
    this.rooms.clear();
    await Promise.all([...this.running]);
  }
}

/** The first `n` characters (code points, so no half emoji), with an ellipsis when cut. */
function cut(text: string, n: number): string {
  const chars = Array.from(text);
  return chars.length <= n ? text : `${chars.slice(0, n).join('')}…`;
}
