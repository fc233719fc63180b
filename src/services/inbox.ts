import type { DistributiveOmit } from '../util/types.js';
import { channels, type InboxEvent, type InboxItem, type InboxSignal } from '../domain/events.js';
import { encodeEvent, StreamHubs, type EventSource, type StreamKind } from '../stream/hubs.js';
import type { Actor } from '../domain/actor.js';
import { type Deps, type Em, em as fork, sql } from './deps.js';
import { forbidden } from '../domain/errors.js';
import type { AfterCommit } from './room-log.js';
import { parseLastEventId, resumableStream, type StreamConn } from '../stream/streams.js';

export type NewInboxItem = DistributiveOmit<InboxItem, 'seq'>;

/** Inbox stream keys: tenant and user id, unambiguous. */
export const inboxKey = (tenant: string, userId: string) => JSON.stringify([tenant, userId]);
const parseKey = (key: string) => JSON.parse(key) as [string, string];

export const inboxStreamKind: StreamKind<InboxEvent> = {
  channelOf: (key) => {
    const [tenant, userId] = parseKey(key);
    return channels.user(tenant, userId);
  },
  isDurable: (e): e is InboxItem => e.type !== 'signal' && e.type !== 'ready',
  kickUserOf: () => null,
  // Signals (offers, ICE candidates) are a sequence, not a state: never coalesced.
  coalesceKey: () => null,
};

/**
 * A user's inbox: what concerns them across rooms. Durable items take a per-user sequence number in
 * the transaction that causes them and are resumable like room events; signals are live only.
 */
export class InboxService implements EventSource<InboxItem> {
  readonly hubs: StreamHubs<InboxEvent>;

  constructor(private readonly deps: Deps) {
    this.hubs = new StreamHubs<InboxEvent>(inboxStreamKind, deps.bus, this as EventSource<any>, (err) =>
      deps.log.warn({ err }, 'inbox hub error'),
    );
  }

  /** Appends an item in the caller's transaction; it is published after commit. */
  async append(em: Em, after: AfterCommit, tenant: string, userId: string, item: NewInboxItem): Promise<InboxItem> {
    const rows = await sql<{ last_seq: string }>(
      em,
      `insert into inbox_cursor (tenant, user_id, last_seq) values (?, ?, 1)
       on conflict (tenant, user_id) do update set last_seq = inbox_cursor.last_seq + 1 returning last_seq`,
      [tenant, userId],
    );
    const seq = Number(rows[0]!.last_seq);
    const { type, ...data } = item;
    await sql(em, 'insert into inbox_event (tenant, user_id, seq, type, data, created_at) values (?, ?, ?, ?, ?, now())', [
      tenant,
      userId,
      seq,
      type,
      JSON.stringify(data),
    ]);
    const full = { ...item, seq } as InboxItem;
    after(() => this.publish(tenant, userId, full));
    return full;
  }

  /**
   * Appends the same item to many users' inboxes in one statement (e.g. a meeting invite to a whole
   * room); each user gets their own next seq. Cursors are taken in user id order.
   */
  async appendMany(em: Em, after: AfterCommit, tenant: string, userIds: string[], item: NewInboxItem): Promise<void> {
    const users = [...new Set(userIds)].sort();
    if (users.length === 0) return;
    const { type, ...data } = item;
    const rows = await sql<{ user_id: string; seq: string }>(
      em,
      `with c as (
         insert into inbox_cursor (tenant, user_id, last_seq)
         select ?, u.id, 1 from unnest(array[?]::text[]) as u(id) order by u.id
         on conflict (tenant, user_id) do update set last_seq = inbox_cursor.last_seq + 1
         returning user_id, last_seq)
       insert into inbox_event (tenant, user_id, seq, type, data, created_at)
       select ?, c.user_id, c.last_seq, ?, ?::jsonb, now() from c
       returning user_id, seq`,
      [tenant, users, tenant, type, JSON.stringify(data)],
    );
    after(async () => {
      await Promise.all(rows.map((r) => this.publish(tenant, r.user_id, { ...item, seq: Number(r.seq) } as InboxItem)));
    });
  }

  /**
   * Blanks the excerpt of the mention items of a deleted message (the deleted body must leave no
   * read path, and inbox replay is one). `userIds` are the message's mentions: exactly who got one.
   */
  async redactMentions(em: Em, tenant: string, userIds: string[], messageId: string): Promise<void> {
    if (userIds.length === 0) return;
    await sql(
      em,
      `update inbox_event set data = jsonb_set(data, '{excerpt}', '""')
        where tenant = ? and user_id = any(array[?]::text[]) and type = 'mention' and data->>'messageId' = ?`,
      [tenant, userIds, messageId],
    );
  }

  publish(tenant: string, userId: string, e: InboxItem | InboxSignal): Promise<void> {
    return this.deps.bus.publish(channels.user(tenant, userId), encodeEvent(e));
  }

  /** `inbox.notify` (service tokens only): a notification in a user's inbox. */
  async notify(actor: Actor, input: { userId: string; kind: string; title: string; data?: Record<string, unknown> | null }) {
    if (!actor.roles.includes('service') && !actor.roles.includes('admin')) {
      throw forbidden('only service tokens may send notifications');
    }
    let jobs: (() => Promise<void>)[] = [];
    const item = await fork(this.deps).transactional((em) => {
      jobs = [];
      return this.append(em, (j) => jobs.push(j), actor.tenant, input.userId, {
        type: 'notification',
        kind: input.kind,
        title: input.title,
        data: input.data ?? null,
        from: actor.id,
      });
    });
    for (const j of jobs) void j();
    return item;
  }

  async lastSeq(key: string): Promise<number> {
    const [tenant, userId] = parseKey(key);
    const rows = await sql<{ last_seq: string }>(fork(this.deps), 'select last_seq from inbox_cursor where tenant = ? and user_id = ?', [tenant, userId]);
    return rows[0] ? Number(rows[0].last_seq) : 0;
  }

  /** Committed positions of many inboxes in one query (the hubs' periodic position check). */
  async lastSeqs(keys: string[]): Promise<Map<string, number>> {
    if (keys.length === 0) return new Map();
    const pairs = keys.map(parseKey);
    const rows = await sql<{ tenant: string; user_id: string; last_seq: string }>(
      fork(this.deps),
      `select c.tenant, c.user_id, c.last_seq from inbox_cursor c
         join unnest(array[?]::text[], array[?]::text[]) as k(tenant, user_id) on k.tenant = c.tenant and k.user_id = c.user_id`,
      [pairs.map((p) => p[0]), pairs.map((p) => p[1])],
    );
    return new Map(rows.map((r) => [inboxKey(r.tenant, r.user_id), Number(r.last_seq)]));
  }

  async load(key: string, after: number, upto: number, limit: number): Promise<InboxItem[]> {
    const [tenant, userId] = parseKey(key);
    const rows = await sql(
      fork(this.deps),
      `select seq, type, data from inbox_event where tenant = ? and user_id = ? and seq > ? and seq <= ? order by seq limit ?`,
      [tenant, userId, after, upto, limit],
    );
    return rows.map((r) => ({ ...(r.data as object), type: r.type, seq: Number(r.seq) }) as InboxItem);
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
      source: this as EventSource<any>,
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
