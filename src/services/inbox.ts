import { createHash } from 'node:crypto';
import { channels, isInboxItem, type InboxEvent, type InboxItem } from '../domain/events.js';
import { StreamHubs } from '../stream/hubs.js';
import type { EventSource, StreamKind } from '../stream/types.js';
import { type Actor, isIntegration } from '../domain/actor.js';
import type { EventBus } from '../realtime/bus.js';
import type { Logger } from '../logger.js';
import { conflict, forbidden, notFound } from '../domain/errors.js';
import { memberIdsOfTenantRoom } from '../store/members.js';
import type { Db } from '../store/database.js';
import {
  blankMentionExcerpts,
  inboxEvents,
  inboxLastSeq,
  inboxLastSeqs,
  inboxOldestSeq,
  notificationByClientId,
  type NotifyRequest,
  recordNotifyRequest,
} from '../store/inbox.js';
import type { Store } from '../store/store.js';
import { parseLastEventId, resumableStream, type StreamConn } from '../stream/streams.js';

/** Users whose notification items are written by one statement. */
const NOTIFY_SLICE = 1000;

/** What a notification says (`inbox.notify`), and the sender's idempotency key for it. */
export interface NotifyInput {
  kind: string;
  title: string;
  data?: Record<string, unknown> | null | undefined;
  clientId?: string | undefined;
}

type NotifyTarget = { userId: string } | { userIds: string[] } | { roomId: string };

/** JSON with every object's keys sorted: the same value gives the same text, whatever its key order. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

/**
 * The hash a repeat of a notification is compared with: its target as given (a list of users as a
 * set) and everything it says. `data` is plain JSON (the router's schema), so its canonical text is
 * exactly its value.
 */
function requestHash(input: NotifyInput & NotifyTarget): string {
  const target = 'userId' in input ? { userId: input.userId } : 'userIds' in input ? { userIds: [...new Set(input.userIds)].sort() } : { roomId: input.roomId };
  const what = { target, kind: input.kind, title: input.title, data: input.data ?? null };
  return createHash('sha256').update(canonicalJson(what)).digest('hex');
}

/** Inbox stream keys: tenant and user id, unambiguous. */
export const inboxKey = (tenant: string, userId: string) => JSON.stringify([tenant, userId]);
const parseKey = (key: string) => JSON.parse(key) as [string, string];

export const inboxStreamKind: StreamKind<InboxEvent> = {
  channelOf: (key) => {
    const [tenant, userId] = parseKey(key);
    return channels.user(tenant, userId);
  },
  // The room list feed asks once per batch whether any inbox of a tenant is open anywhere (activity.ts).
  groupChannelOf: (key) => channels.inboxes(parseKey(key)[0]),
  isDurable: isInboxItem,
  kickUserOf: () => null,
  // Signals (offers, ICE candidates) are a sequence, not a state: never coalesced. A room's unread
  // state is, and so is its activity: on a slow socket only the latest go out.
  coalesceKey: (e) => (e.type === 'unread.changed' ? `unread:${e.roomId}` : e.type === 'room.activity' ? `activity:${e.roomId}` : null),
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

  /**
   * `inbox.notify` (service and admin tokens): a notification in the inbox of one user (`userId`:
   * answers the item and `delivered: 1`), of several users (`userIds`, duplicates once) or of every
   * current member of a room of the tenant (`roomId`); the latter two answer `{ delivered }`. All
   * items are written in one transaction; users are always those of the caller's tenant.
   *
   * With a `clientId`, idempotent per sender like `chat.send`: a repeat with the same target and
   * content answers what the first call did and writes nothing; other content is CONFLICT. The key
   * lives on the items (kept as long as they are).
   */
  async notify(actor: Actor, input: NotifyInput & NotifyTarget) {
    if (!isIntegration(actor)) {
      throw forbidden('only service or admin tokens may send notifications');
    }
    const item = { type: 'notification', kind: input.kind, title: input.title, data: input.data ?? null, from: actor.id } as const;
    type Written = typeof item & { seq: number };
    const request: NotifyRequest | null =
      input.clientId === undefined ? null : { senderId: actor.id, clientId: input.clientId, requestHash: requestHash(input) };
    const answer = (items: Written[], delivered: number) => ('userId' in input ? { ...items[0]!, delivered: 1 } : { delivered });
    return this.store.transact(async (tx) => {
      if (request) {
        // Repeats of one clientId one after the other (also across nodes): the first writes, the
        // ones after it find its items. The unique index on the items backs this up per user.
        await tx.advisoryLock('inbox.notify', actor.tenant, request.senderId, request.clientId);
        const earlier = await notificationByClientId(tx.db, actor.tenant, request.senderId, request.clientId);
        if (earlier) {
          if (earlier.request_hash !== request.requestHash) throw conflict('clientId was already used for a notification with other content');
          return answer([{ ...earlier.data, type: earlier.type, seq: earlier.seq } as Written], earlier.items);
        }
      }
      let userIds: string[];
      if ('userId' in input) {
        userIds = [input.userId];
      } else if ('userIds' in input) {
        userIds = input.userIds;
      } else {
        const members = await memberIdsOfTenantRoom(tx.db, actor.tenant, input.roomId);
        if (members === null) throw notFound('room');
        userIds = members;
      }
      // In slices (a big room's members would exceed a statement's parameters), sorted first so the
      // cursors are still locked in user id order (src/store/tx.ts).
      const sorted = [...new Set(userIds)].sort();
      const written: Written[] = [];
      for (let i = 0; i < sorted.length; i += NOTIFY_SLICE) {
        const slice = sorted.slice(i, i + NOTIFY_SLICE);
        // In the slice's (user id) order, as appendInboxMany answers.
        const items = await tx.appendInboxMany(actor.tenant, slice, item);
        if (request) await recordNotifyRequest(tx.db, actor.tenant, items.map((x, j) => ({ userId: slice[j]!, seq: x.seq })), request);
        written.push(...items);
      }
      return answer(written, written.length);
    });
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

  oldestSeq(key: string): Promise<number | null> {
    const [tenant, userId] = parseKey(key);
    return inboxOldestSeq(this.store.db(), tenant, userId);
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
      reset: (seq) => ({ type: 'reset', seq }),
      wrap,
      conn,
    });
  }

  close() {
    return this.hubs.close();
  }
}
