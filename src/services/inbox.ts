import { channels, type InboxEvent, type InboxItem } from '../domain/events.js';
import { StreamHubs } from '../stream/hubs.js';
import type { EventSource, StreamKind } from '../stream/types.js';
import type { Actor } from '../domain/actor.js';
import type { EventBus } from '../realtime/bus.js';
import type { Logger } from '../logger.js';
import { forbidden } from '../domain/errors.js';
import type { Db } from '../store/database.js';
import { blankMentionExcerpts, inboxEvents, inboxLastSeq, inboxLastSeqs } from '../store/inbox.js';
import type { Store } from '../store/store.js';
import { parseLastEventId, resumableStream, type StreamConn } from '../stream/streams.js';

/** Inbox stream keys: tenant and user id, unambiguous. */
export const inboxKey = (tenant: string, userId: string) => JSON.stringify([tenant, userId]);
const parseKey = (key: string) => JSON.parse(key) as [string, string];

export const inboxStreamKind: StreamKind<InboxEvent> = {
  channelOf: (key) => {
    const [tenant, userId] = parseKey(key);
    return channels.user(tenant, userId);
  },
  isDurable: (e): e is InboxItem => e.type !== 'signal' && e.type !== 'unread.changed' && e.type !== 'ready',
  kickUserOf: () => null,
  // Signals (offers, ICE candidates) are a sequence, not a state: never coalesced. A room's unread
  // state is: on a slow socket only its latest counts go out.
  coalesceKey: (e) => (e.type === 'unread.changed' ? `unread:${e.roomId}` : null),
};

/**
 * A user's inbox: what concerns them across rooms. Durable items take a per-user sequence number in
 * the transaction that causes them and are resumable like room events; signals are live only.
 */
export class InboxService implements EventSource<InboxItem> {
  readonly hubs: StreamHubs<InboxEvent>;

  constructor(
    bus: EventBus,
    log: Logger,
    private readonly store: Store,
  ) {
    this.hubs = new StreamHubs<InboxEvent>(inboxStreamKind, bus, this, (err) => log.warn({ err }, 'inbox hub error'));
  }

  /**
   * Blanks the excerpt of the mention items of a deleted message (the deleted body must leave no
   * read path, and inbox replay is one). `userIds` are the message's mentions: exactly who got one.
   */
  redactMentions(db: Db, tenant: string, userIds: string[], messageId: string): Promise<void> {
    return blankMentionExcerpts(db, tenant, userIds, messageId);
  }

  /** `inbox.notify` (service and admin tokens): a notification in a user's inbox. */
  async notify(actor: Actor, input: { userId: string; kind: string; title: string; data?: Record<string, unknown> | null }) {
    if (!actor.roles.includes('service') && !actor.roles.includes('admin')) {
      throw forbidden('only service or admin tokens may send notifications');
    }
    return this.store.transact((tx) =>
      tx.appendInbox(actor.tenant, input.userId, {
        type: 'notification',
        kind: input.kind,
        title: input.title,
        data: input.data ?? null,
        from: actor.id,
      }),
    );
  }

  lastSeq(key: string): Promise<number> {
    const [tenant, userId] = parseKey(key);
    return inboxLastSeq(this.store.db(), tenant, userId);
  }

  /** Committed positions of many inboxes in one query (the hubs' periodic position check). */
  async lastSeqs(keys: string[]): Promise<Map<string, number>> {
    if (keys.length === 0) return new Map();
    const rows = await inboxLastSeqs(this.store.db(), keys.map(parseKey));
    return new Map(rows.map((r) => [inboxKey(r.tenant, r.user_id), r.last_seq]));
  }

  async load(key: string, after: number, upto: number, limit: number): Promise<InboxItem[]> {
    const [tenant, userId] = parseKey(key);
    const rows = await inboxEvents(this.store.db(), tenant, userId, after, upto, limit);
    return rows.map((r) => ({ ...r.data, type: r.type, seq: r.seq }) as InboxItem);
  }

  /** `inbox.events`: the caller's own inbox, resumable by `lastEventId`. */
  open<T>(
    actor: Actor,
    lastEventId: string | null | undefined,
    signal: AbortSignal | undefined,
    wrap: (id: string, e: InboxEvent) => T,
    conn?: StreamConn,
  ) {
    const after = parseLastEventId(lastEventId);
    return resumableStream<InboxEvent, T>({
      hubs: this.hubs,
      source: this,
      key: inboxKey(actor.tenant, actor.id),
      userId: actor.id,
      after,
      signal,
      ready: (seq) => ({ type: 'ready', seq }),
      wrap,
      conn,
    });
  }

  close() {
    return this.hubs.close();
  }
}
