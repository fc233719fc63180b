import { channels, type DurableRoomEvent, type EphemeralRoomEvent, type InboxRoomChanged, type MessagePreview } from '../domain/events.js';
import { clip } from '../domain/text.js';
import type { Logger } from '../logger.js';
import type { Counters } from '../metrics.js';
import type { EventBus } from '../realtime/bus.js';
import type { MessageRow } from '../store/message-row.js';
import { unreadCountsOfMembers } from '../store/receipts.js';
import { messageRowsByIds, roomHeads, roomTenant } from '../store/rooms.js';
import type { Store } from '../store/store.js';
import type { MessageMapper } from './message-dto.js';
import type { EventPublisher } from './publisher.js';

/** Characters of a body a preview keeps. */
export const PREVIEW_CHARS = 140;

/**
 * A room's coalescing window grows by one `coalesceMs` per this many listening members, so the counts
 * of a big room (one unread count per listening member) cost about what a small room's cost per second.
 */
export const ACTIVITY_MEMBERS_PER_WINDOW = 100;

export interface ActivityOptions {
  /** Off: nothing is sent (the publisher is not watched, deletions tell nobody). */
  enabled: boolean;
  /** The shortest time between two `room.activity` of one room from this node. */
  coalesceMs: number;
}

type RoomChange = InboxRoomChanged['change'];

/** Rooms whose activity is sent by one batch (a few queries whatever their number). */
export const ACTIVITY_BATCH = 200;

/** How long a batch waits for more rooms after its first (the first activity of a quiet room is this late). */
export const ACTIVITY_BATCH_MS = 20;

/** Rooms whose tenant is remembered (a room's tenant never changes); the oldest is forgotten first. */
const TENANTS_KEPT = 100_000;

/** A room with activity in progress: queued, being sent, or waiting out its window (`dirty`: more happened since). */
interface RoomState {
  /** Something happened in the room since its activity last went out (it goes out again after its window). */
  dirty: boolean;
}

/**
 * The room list's live feed on `inbox.events` (docs/API.md, "Inbox"). It watches the room events
 * this node publishes after commit and, off the request path:
 *
 * - after a message is sent, edited or deleted, sends `room.activity` (newest message preview, the
 *   member's unread and mention counts) to each member whose `inbox.events` is open on any node
 *   (the bus knows which user channels are subscribed: nobody listening, no counts); the first change
 *   of a quiet room goes out at once, what follows within the room's window is coalesced into one;
 * - after a rename, archive or unarchive, sends `room.changed` to the listening members; after a member
 *   joined (created the room, joined it, was added), left (or was removed, banned) and after the
 *   room was deleted, to the members concerned.
 *
 * Rooms ready at the same time go out together (at most one batch in flight, like the grouped
 * sends): one bus question whether any inbox of the rooms' tenants is open anywhere (each node
 * holds a tenant's group channel while one of its inboxes is open there; a room whose tenant has
 * none costs nothing more), then two queries for the rooms' heads and members, one presence check,
 * one query for the counts, whatever the number of rooms. Live only: a client that reconnects reads `room.list`
 * again. Several nodes writing to one room each send their own (a later one replaces an earlier
 * one, by `seq`).
 */
export class ActivityFeed {
  private readonly rooms = new Map<string, RoomState>();
  /** Rooms whose activity goes out with the next batch. */
  private readonly ready = new Set<string>();
  private draining = false;
  /** Members of a room listening at its last activity (sizes its window). */
  private readonly listeners = new Map<string, number>();
  private readonly running = new Set<Promise<void>>();
  private closed = false;
  /** Rooms' tenants (they never change): which tenant's inboxes to ask about, `room.changed` to one member. */
  private readonly tenants = new Map<string, string>();
  /** The rooms' windows running now (`wait`). */
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly store: Store,
    private readonly bus: EventBus,
    private readonly publisher: EventPublisher,
    private readonly mapper: MessageMapper,
    private readonly log: Logger,
    private readonly counters: Counters,
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
        this.run(() => this.toMember(e.roomId, e.userId, 'left'));
        break;
      case 'member.joined':
        this.run(() => this.toMember(e.roomId, e.userId, 'joined'));
        break;
      default:
        break;
    }
  }

  /** The room was deleted: its former members (read before the deletion) drop it from their lists. */
  roomDeleted(tenant: string, roomId: string, memberIds: readonly string[]): void {
    if (!this.opts.enabled) return;
    this.run(() => this.tell(tenant, memberIds, roomId, 'deleted'));
  }

  private touch(roomId: string): void {
    if (this.closed) return;
    const state = this.rooms.get(roomId);
    if (state) {
      state.dirty = true;
      return;
    }
    this.rooms.set(roomId, { dirty: false });
    this.enqueue(roomId);
  }

  /**
   * Queues the room for the next batch. A batch starts `ACTIVITY_BATCH_MS` after its first room, so
   * the rooms of the sends of those milliseconds go together: at 500 lone messages a second over a
   * thousand rooms, one query and one bus round trip serve about ten rooms instead of one each.
   */
  private enqueue(roomId: string): void {
    this.ready.add(roomId);
    if (this.draining) return;
    this.draining = true;
    setTimeout(() =>
      this.run(async () => {
        try {
          while (this.ready.size > 0 && !this.closed) {
            const batch = [...this.ready].slice(0, ACTIVITY_BATCH);
            for (const id of batch) {
              this.ready.delete(id);
              const st = this.rooms.get(id);
              if (st) st.dirty = false;
            }
            try {
              await this.activity(batch);
            } catch (err) {
              this.log.warn({ err }, 'room activity feed error');
            }
            this.wait(batch);
          }
        } finally {
          this.draining = false;
        }
      }),
    ACTIVITY_BATCH_MS).unref();
  }

  /**
   * The rooms' windows after their activity went out; what happened meanwhile goes out after it.
   * One timer per window length for the batch's rooms (nearly always one), not one per room.
   */
  private wait(roomIds: readonly string[]): void {
    if (this.closed) return;
    const byWait = new Map<number, string[]>();
    for (const id of roomIds) {
      if (!this.rooms.has(id)) continue;
      const members = this.listeners.get(id) ?? 0;
      const wait = this.opts.coalesceMs * Math.max(1, Math.ceil(members / ACTIVITY_MEMBERS_PER_WINDOW));
      const ids = byWait.get(wait);
      if (ids) ids.push(id);
      else byWait.set(wait, [id]);
    }
    for (const [wait, ids] of byWait) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        for (const id of ids) this.windowEnded(id);
      }, wait);
      timer.unref();
      this.timers.add(timer);
    }
  }

  private windowEnded(roomId: string): void {
    const state = this.rooms.get(roomId);
    if (!state || this.closed) return;
    if (state.dirty) this.enqueue(roomId);
    else {
      this.rooms.delete(roomId);
      this.listeners.delete(roomId);
    }
  }

  /**
   * `room.activity` to each member of the rooms who has an inbox subscription open on some node:
   * the newest message and their own counts. Rooms of tenants without any open inbox cost one bus
   * round trip for the whole batch; otherwise nobody listening costs one query and one more.
   */
  private async activity(batch: string[]): Promise<void> {
    const roomIds = await this.ofListeningTenants(batch);
    if (roomIds.length === 0) return;
    const db = this.store.db();
    const heads = await roomHeads(db, roomIds);
    for (const h of heads) this.rememberTenant(h.id, h.tenant);
    const listening = await this.listening(heads.flatMap((h) => h.members.map((userId) => ({ tenant: h.tenant, userId }))));
    const pairs: { roomId: string; userId: string }[] = [];
    for (const h of heads) {
      const here = h.members.filter((m) => listening.has(channels.user(h.tenant, m)));
      this.listeners.set(h.id, here.length);
      for (const userId of here) pairs.push({ roomId: h.id, userId });
    }
    if (pairs.length === 0) return;
    const wanted = new Set(pairs.map((p) => p.roomId));
    const [counts, rows] = await Promise.all([
      unreadCountsOfMembers(db, pairs),
      messageRowsByIds(
        db,
        heads.filter((h) => wanted.has(h.id) && h.last_message_id !== null).map((h) => h.last_message_id!),
      ),
    ]);
    const previews = new Map(rows.map((r) => [r.room_id, this.preview(r)]));
    const byId = new Map(heads.map((h) => [h.id, h]));
    await Promise.all(
      counts.map((c) => {
        const head = byId.get(c.room_id)!;
        return this.publisher.inbox(head.tenant, c.user_id, {
          type: 'room.activity',
          roomId: c.room_id,
          seq: head.last_seq,
          lastMessage: previews.get(c.room_id) ?? null,
          unreadCount: c.unread,
          mentionCount: c.mentions,
          lastReadSeq: c.last_read_seq,
          version: c.version,
        });
      }),
    );
  }

  /**
   * The rooms of the batch whose tenant has an inbox open on some node now, and those whose tenant
   * this node does not know yet (their heads tell it). Exact like the per-user check that follows:
   * an inbox's tenant channel is subscribed before the inbox's own and released after it.
   */
  private async ofListeningTenants(roomIds: string[]): Promise<string[]> {
    const out: string[] = [];
    const byTenant = new Map<string, string[]>();
    for (const id of roomIds) {
      const tenant = this.tenants.get(id);
      if (tenant === undefined) out.push(id);
      else {
        const list = byTenant.get(tenant);
        if (list) list.push(id);
        else byTenant.set(tenant, [id]);
      }
    }
    if (byTenant.size === 0) return out;
    const open = await this.bus.listened([...byTenant.keys()].map(channels.inboxes));
    for (const [tenant, ids] of byTenant) {
      if (open.has(channels.inboxes(tenant))) {
        out.push(...ids);
        continue;
      }
      this.counters.activityRoomsSkipped += ids.length;
      for (const id of ids) this.listeners.set(id, 0);
    }
    return out;
  }

  private rememberTenant(roomId: string, tenant: string): void {
    if (this.tenants.has(roomId)) return;
    if (this.tenants.size >= TENANTS_KEPT) this.tenants.delete(this.tenants.keys().next().value!);
    this.tenants.set(roomId, tenant);
  }

  /** The user channels (inboxes) some node listens to now, among these users'. */
  private listening(users: readonly { tenant: string; userId: string }[]): Promise<Set<string>> {
    return this.bus.listened([...new Set(users.map((u) => channels.user(u.tenant, u.userId)))]);
  }

  /** `room.changed` to the room's members whose inbox is open. */
  private async changed(roomId: string, change: RoomChange): Promise<void> {
    const [head] = await roomHeads(this.store.db(), [roomId]);
    if (head) await this.tell(head.tenant, head.members, roomId, change);
  }

  /**
   * `room.changed` to the member who joined or left. Only the room's tenant is needed (never its
   * member list: adding the 2,000 members of a big room would read 2,000 lists of 2,000); a room's
   * tenant never changes, so it is kept.
   */
  private async toMember(roomId: string, userId: string, change: 'joined' | 'left'): Promise<void> {
    let tenant = this.tenants.get(roomId);
    if (tenant === undefined) {
      const found = await roomTenant(this.store.db(), roomId);
      if (found === null) return;
      this.rememberTenant(roomId, found);
      tenant = found;
    }
    await this.tell(tenant, [userId], roomId, change);
  }

  private async tell(tenant: string, userIds: readonly string[], roomId: string, change: RoomChange): Promise<void> {
    const listening = await this.listening(userIds.map((userId) => ({ tenant, userId })));
    await Promise.all(
      userIds
        .filter((userId) => listening.has(channels.user(tenant, userId)))
        .map((userId) => this.publisher.inbox(tenant, userId, { type: 'room.changed', roomId, change })),
    );
  }

  /** The newest message as a room list shows it (an encrypted body is decrypted, as in `room.list`). */
  preview(row: MessageRow): MessagePreview {
    const deleted = row.deleted_at !== null;
    const body = deleted ? null : this.mapper.body(row.body, row.key_id, { roomId: row.room_id, messageId: row.id });
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

  /**
   * Stops the timers, waits for what is being sent, then sends what this node still owes: the rooms
   * queued for the next batch and those changed within their window (a node shut down inside a
   * room's window would otherwise leave the members' lists on the burst's next-to-last message until
   * the room's next change). Called before the bus closes.
   */
  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const owed = new Set(this.ready);
    for (const [id, state] of this.rooms) if (state.dirty) owed.add(id);
    this.ready.clear();
    this.closed = true;
    await Promise.all([...this.running]);
    this.rooms.clear();
    const ids = [...owed];
    for (let i = 0; i < ids.length; i += ACTIVITY_BATCH) {
      await this.activity(ids.slice(i, i + ACTIVITY_BATCH)).catch((err: unknown) => this.log.warn({ err }, 'room activity feed error'));
    }
  }
}

/** The first `n` characters (code points, so no half emoji), with an ellipsis when cut. */
function cut(text: string, n: number): string {
  const head = clip(text, n);
  return head.length === text.length ? text : `${head}…`;
}
