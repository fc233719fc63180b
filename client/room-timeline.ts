/**
 * A room's state on the client, built from history and kept current by applying room events:
 * messages in seq order, reactions, typing, presence and read receipts. Applying is idempotent
 * (a durable event at or below the last applied seq is ignored; edits and reactions carry the
 * full new state), so history and a resumed subscription can overlap without duplicates. A page
 * of history never undoes an event applied to one of its messages, and never moves `lastSeq`.
 *
 * Framework-free: `subscribe` + `getSnapshot` fit React's `useSyncExternalStore`; the CLI uses
 * `apply`'s return value to decide what to print; the browser page (web/src/main.ts) renders from it.
 */
import { isDurableEvent, type Message, type PresenceStatus, type RoomEvent, type ThreadSummary } from './types.js';

/** How long a typing indicator lasts without a refresh (the server's TTL). */
export const TYPING_TTL_MS = 10_000;

export interface RoomSnapshot {
  /** Loaded messages, ascending seq (deleted ones keep their place with `body: null`). */
  readonly messages: readonly Message[];
  /** The last durable seq applied (from `ready`, `reset` or events) or set as the starting point; -1 before anything. */
  readonly lastSeq: number;
  /** Users typing right now (never yourself). */
  readonly typing: readonly string[];
  readonly presence: ReadonlyMap<string, PresenceStatus>;
  /** userId -> last seq they have read (from `receipt.read` events). */
  readonly readUpTo: ReadonlyMap<string, number>;
  readonly name: string | null;
  readonly topic: string | null;
}

/** Changes to messages not loaded that a timeline keeps for when a page brings them. */
const HELD_CHANGES = 1000;

/** A change to one message, kept while the message is not loaded (`seq` null: not a durable event). */
interface MessageChange {
  event: Extract<RoomEvent, { type: 'message.edited' | 'message.deleted' | 'reaction.added' | 'reaction.removed' | 'file.ready' }>;
  seq: number | null;
}

export class RoomTimeline {
  private readonly list: Message[] = [];
  private readonly byId = new Map<string, Message>();
  private readonly bySeqMap = new Map<number, Message>();
  private readonly typingUntil = new Map<string, number>();
  private readonly presenceMap = new Map<string, PresenceStatus>();
  /** The presence store's version of each user's presence shown (events and `presence.get` carry it). */
  private readonly presenceVersions = new Map<string, number>();
  private readonly reads = new Map<string, number>();
  /**
   * Changes to messages not loaded (edits, deletions, reactions, thumbnails), kept until a page
   * brings the message: a page the server read before such a change committed would otherwise put
   * back the older state (a deleted message's body) with nothing left to correct it.
   */
  private readonly held = new Map<string, MessageChange[]>();
  private heldCount = 0;
  /**
   * The seq of the last durable event applied to each loaded message (its own `message.new`, an
   * edit, a deletion, a reaction, a thumbnail, a reply that changed its thread summary): a page
   * whose newest message is below it may have been read before that event committed, and its copy
   * would undo the change.
   */
  private readonly changedAt = new Map<string, number>();
  private listeners = new Set<() => void>();
  private snapshot: RoomSnapshot | null = null;
  private name: string | null = null;
  private topic: string | null = null;
  /**
   * The last durable seq applied; -1 before anything. History does not move it (a page says nothing
   * of the events of messages it does not hold): whoever subscribes after loading a page sets the
   * starting point here, the higher of the page's newest seq and the room's `lastSeq` read before it.
   */
  lastSeq = -1;

  /** @param selfId your user id: your own typing is not shown, and `reaction.*` events keep your `me` flags right. */
  constructor(public selfId: string | null = null) {}

  /**
   * Adds a page of history (any order, any overlap with what is loaded). A loaded message is
   * replaced only when the page is at least as new as the last event applied to it (the page's
   * newest seq at or above that event's seq: the page was read after the event committed); an older
   * page's copy could undo an edit, a deletion or a reaction. A change to one of its messages that
   * came as an event while the message was not loaded is applied on top when its seq is above the
   * page's newest message (the page may have been read before it; one at or below was seen by the
   * page, and the events after it come, or came, in seq order). `lastSeq` does not move.
   */
  load(messages: readonly Message[]): void {
    const top = messages.reduce((max, m) => Math.max(max, m.seq), -1);
    for (const m of messages) if ((this.changedAt.get(m.id) ?? -1) <= top) this.put(m);
    for (const m of messages) {
      const changes = this.held.get(m.id);
      if (!changes) continue;
      this.held.delete(m.id);
      this.heldCount -= changes.length;
      for (const c of changes) if (c.seq === null || c.seq > top) this.change(c.event);
    }
    this.changed();
  }

  /**
   * Applies one event. Returns false when it changes nothing new (a durable event already
   * applied, e.g. replayed after a reconnect), true otherwise.
   */
  apply(event: RoomEvent, now = Date.now()): boolean {
    if (event.type === 'ready') {
      if (event.seq > this.lastSeq) this.lastSeq = event.seq;
      this.changed();
      return true;
    }
    if (event.type === 'reset') {
      // The server cannot continue from where this timeline was: what is loaded may have holes.
      // Start over at the room's position; the caller reloads history (`openRoom` does).
      this.clear();
      this.lastSeq = event.seq;
      this.changed();
      return true;
    }
    if (isDurableEvent(event)) {
      if (event.seq <= this.lastSeq) return false;
      this.lastSeq = event.seq;
    }
    switch (event.type) {
      case 'message.new': {
        const fresh = !this.byId.has(event.message.id);
        this.put(event.message);
        this.changedBy(event.message.id, event.seq);
        if (event.thread) this.setThread(event.thread, event.seq);
        else if (fresh) this.countReply(event.message, 1, event.seq);
        this.typingUntil.delete(event.message.senderId);
        break;
      }
      case 'message.edited':
      case 'message.deleted':
      case 'reaction.added':
      case 'reaction.removed':
      case 'file.ready': {
        const id = 'message' in event ? event.message.id : event.messageId;
        // A reply's deletion sets its root's summary whether the reply itself is loaded or not.
        if (event.type === 'message.deleted' && event.thread) this.setThread(event.thread, event.seq);
        if (this.byId.has(id)) this.change(event);
        else this.hold(id, event);
        break;
      }
      case 'room.updated':
        this.name = event.name;
        this.topic = event.topic;
        break;
      case 'typing':
        if (event.userId === this.selfId) return false;
        if (event.typing) this.typingUntil.set(event.userId, now + TYPING_TTL_MS);
        else if (!this.typingUntil.delete(event.userId)) return false;
        break;
      case 'presence':
        if (!this.newerPresence(event.userId, event.version)) return false;
        if (this.presenceMap.get(event.userId) === event.status) return false;
        this.presenceMap.set(event.userId, event.status);
        break;
      case 'receipt.read':
        if ((this.reads.get(event.userId) ?? -1) >= event.seq) return false;
        this.reads.set(event.userId, event.seq);
        break;
      case 'member.joined':
      case 'member.left':
      case 'member.updated':
      case 'room.archived':
      case 'room.unarchived':
      case 'room.deleted':
        break;
      default: {
        // A new event type from a newer server: nothing to apply, but not an error either.
        const unknown: never = event;
        void unknown;
      }
    }
    this.changed();
    return true;
  }

  /**
   * Adds a message known from a call's answer (e.g. `chat.send`'s), which can arrive before or after
   * its `message.new` event. A message already in the timeline is left alone (events carry its
   * newer state), and `lastSeq` does not move: events below the message's seq may still be on
   * their way. Returns whether the message was added.
   */
  insert(message: Message): boolean {
    if (this.byId.has(message.id)) return false;
    this.put(message);
    // The root's summary counts this reply as of the reply's own seq.
    this.countReply(message, 1, message.seq);
    this.changed();
    return true;
  }

  /**
   * Sets a user's presence (e.g. from `presence.get` when the view opens). With its `version` (what
   * `presence.get` answers), a state older than one already shown is ignored: a `presence` event
   * that came while the call was on its way wins when it is newer.
   */
  setPresence(userId: string, status: PresenceStatus, version?: number): void {
    if (version !== undefined && !this.newerPresence(userId, version)) return;
    if (this.presenceMap.get(userId) === status) return;
    this.presenceMap.set(userId, status);
    this.changed();
  }

  /** Whether a presence of `version` is not older than the one shown (and records it if so). */
  private newerPresence(userId: string, version: number | undefined): boolean {
    if (version === undefined) return true;
    const known = this.presenceVersions.get(userId);
    if (known !== undefined && version < known) return false;
    this.presenceVersions.set(userId, version);
    return true;
  }

  /**
   * Raises a user's read position (e.g. from `room.members`' `lastReadSeq` when the view opens);
   * a lower seq than the one known is ignored, as for `receipt.read` events.
   */
  setReadUpTo(userId: string, seq: number): void {
    if ((this.reads.get(userId) ?? -1) >= seq) return;
    this.reads.set(userId, seq);
    this.changed();
  }

  /**
   * Typing indicators run out without an event when a stop is lost. Drops the ones that have run
   * out (subscribers are told when any did) and returns when the next one runs out, in ms since
   * the epoch, or null when nobody is typing: call it again then to keep a view (or a snapshot) right.
   */
  expireTyping(now = Date.now()): number | null {
    let next: number | null = null;
    let dropped = false;
    for (const [user, until] of this.typingUntil) {
      if (until <= now) {
        this.typingUntil.delete(user);
        dropped = true;
      } else if (next === null || until < next) next = until;
    }
    if (dropped) this.changed();
    return next;
  }

  messages(): readonly Message[] {
    return this.list;
  }

  bySeq(seq: number): Message | undefined {
    return this.bySeqMap.get(seq);
  }

  byMessageId(id: string): Message | undefined {
    return this.byId.get(id);
  }

  /** Forgets every message (a `reset`); presence, read positions and typing stay. */
  clear(): void {
    this.list.length = 0;
    this.byId.clear();
    this.bySeqMap.clear();
    this.held.clear();
    this.heldCount = 0;
    this.changedAt.clear();
    this.changed();
  }

  /** A change to a loaded message. */
  private change(event: MessageChange['event']): void {
    if (isDurableEvent(event)) this.changedBy('message' in event ? event.message.id : event.messageId, event.seq);
    switch (event.type) {
      case 'message.edited':
      case 'message.deleted': {
        const prev = this.byId.get(event.message.id);
        if (!prev) return;
        // A reply deleted now leaves its root's count (the server counts live replies only): an
        // event recorded before events carried the root's summary (`thread`, set by `apply`).
        if (event.type === 'message.deleted' && !event.thread && prev.deletedAt === null) this.countReply(event.message, -1, event.seq);
        this.put(this.keepMe(event.message));
        return;
      }
      case 'reaction.added':
      case 'reaction.removed': {
        const m = this.byId.get(event.messageId);
        if (!m) return;
        const mine = new Set(m.reactions.filter((r) => r.me).map((r) => r.emoji));
        if (event.userId === this.selfId) {
          if (event.type === 'reaction.added') mine.add(event.emoji);
          else mine.delete(event.emoji);
        }
        this.put({ ...m, reactions: event.reactions.map((r) => ({ ...r, me: mine.has(r.emoji) })) });
        return;
      }
      case 'file.ready': {
        // An uploaded image's dimensions and thumbnail are known now: set them on its attachment.
        const m = this.byId.get(event.messageId);
        if (!m) return;
        const attachments = m.attachments.map((a) =>
          'fileId' in a && a.fileId === event.fileId ? { ...a, width: event.width, height: event.height, thumbnail: event.thumbnail } : a,
        );
        this.put({ ...m, attachments });
        return;
      }
    }
  }

  /** Keeps a change to a message not loaded (at most HELD_CHANGES, the oldest message's dropped first). */
  private hold(messageId: string, event: MessageChange['event']): void {
    const changes = this.held.get(messageId);
    const c: MessageChange = { event, seq: isDurableEvent(event) ? event.seq : null };
    if (changes) changes.push(c);
    else this.held.set(messageId, [c]);
    this.heldCount++;
    while (this.heldCount > HELD_CHANGES) {
      const [oldest, dropped] = this.held.entries().next().value!;
      this.held.delete(oldest);
      this.heldCount -= dropped.length;
    }
  }

  /** The oldest loaded message's seq (to page history back), or null. */
  oldestSeq(): number | null {
    return this.list[0]?.seq ?? null;
  }

  typing(now = Date.now()): string[] {
    return [...this.typingUntil].filter(([, until]) => until > now).map(([user]) => user);
  }

  presence(userId: string): PresenceStatus | undefined {
    return this.presenceMap.get(userId);
  }

  /** For `useSyncExternalStore`: called after every change. Returns the unsubscribe function. */
  subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** An immutable view, the same object until the next change. */
  getSnapshot = (): RoomSnapshot => {
    this.snapshot ??= {
      messages: [...this.list],
      lastSeq: this.lastSeq,
      typing: this.typing(),
      presence: new Map(this.presenceMap),
      readUpTo: new Map(this.reads),
      name: this.name,
      topic: this.topic,
    };
    return this.snapshot;
  };

  /**
   * Thread summaries stay live: the event of a reply, and of a reply's deletion, carries its root's
   * summary as the server counted it then (`thread`), and the root takes it as it is; nothing is
   * added up, so a replay (whose messages are as they are now: a reply deleted since, a root that
   * counts replies after it) cannot count twice. Applied in seq order, the last one is the server's.
   */
  private setThread(thread: ThreadSummary, seq: number): void {
    const root = this.byId.get(thread.rootId);
    if (!root) return;
    this.changedBy(root.id, seq);
    this.put({ ...root, replyCount: thread.replyCount, lastReplyAt: thread.lastReplyAt });
  }

  /**
   * Counts a reply on its root where no summary came with it: a send's answer (shown at once; its
   * event then sets the server's summary), and events recorded before events carried one (a reply
   * that comes in after its root was loaded raises `replyCount` and `lastReplyAt`; a deleted one
   * lowers it). History pages never do (a root read from the server counts its replies already),
   * and neither does a message seen twice. The root's own message events carry the server's count.
   */
  private countReply(reply: Message, delta: 1 | -1, seq: number): void {
    if (!reply.replyToId) return;
    const root = this.byId.get(reply.replyToId);
    if (!root) return;
    this.changedBy(root.id, seq);
    const replyCount = Math.max(0, root.replyCount + delta);
    const lastReplyAt = delta > 0 && (!root.lastReplyAt || root.lastReplyAt < reply.createdAt) ? reply.createdAt : root.lastReplyAt;
    this.put({ ...root, replyCount, lastReplyAt });
  }

  /** Records that the durable event at `seq` changed a loaded message (see `changedAt`). */
  private changedBy(messageId: string, seq: number): void {
    if ((this.changedAt.get(messageId) ?? -1) < seq) this.changedAt.set(messageId, seq);
  }

  /** The loaded replies of a thread, ascending seq (the thread panel's live part). */
  replies(rootId: string): Message[] {
    return this.list.filter((m) => m.replyToId === rootId);
  }

  private keepMe(next: Message): Message {
    const prev = this.byId.get(next.id);
    if (!prev) return next;
    const mine = new Set(prev.reactions.filter((r) => r.me).map((r) => r.emoji));
    return { ...next, reactions: next.reactions.map((r) => ({ ...r, me: r.me || mine.has(r.emoji) })) };
  }

  private put(m: Message): void {
    const prev = this.byId.get(m.id);
    this.byId.set(m.id, m);
    this.bySeqMap.set(m.seq, m);
    if (prev) {
      const i = this.indexOf(prev.seq);
      if (i >= 0) this.list[i] = m;
      return;
    }
    if (this.list.length === 0 || this.list[this.list.length - 1]!.seq < m.seq) {
      this.list.push(m);
      return;
    }
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.list[mid]!.seq < m.seq) lo = mid + 1;
      else hi = mid;
    }
    this.list.splice(lo, 0, m);
  }

  private indexOf(seq: number): number {
    let lo = 0;
    let hi = this.list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.list[mid]!.seq;
      if (s === seq) return mid;
      if (s < seq) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  private changed(): void {
    this.snapshot = null;
    for (const l of this.listeners) l();
  }
}
