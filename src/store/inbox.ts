import { type Selectable, sql } from 'kysely';
import type { Db, Tables } from './database.js';

/**
 * Reads of the users' inboxes (cursors and items), the redaction of mention excerpts and the
 * clientId of `inbox.notify` items. Inbox items themselves are written only by
 * `Tx.appendInbox`/`appendInboxMany` (src/store/tx.ts).
 */

/** An inbox item as stored: its type, seq and the rest of the item as jsonb. */
export type InboxEventRow = Pick<Selectable<Tables['inbox_event']>, 'seq' | 'type' | 'data'>;

/** The user's committed inbox position (0: nothing ever appended). */
export async function inboxLastSeq(db: Db, tenant: string, userId: string): Promise<number> {
  const row = await db.selectFrom('inbox_cursor').select('last_seq').where('tenant', '=', tenant).where('user_id', '=', userId).executeTakeFirst();
  return row?.last_seq ?? 0;
}

/** Committed positions of many inboxes in one query; inboxes never appended to are absent. */
export async function inboxLastSeqs(
  db: Db,
  inboxes: readonly (readonly [tenant: string, userId: string])[],
): Promise<{ tenant: string; user_id: string; last_seq: number }[]> {
  if (inboxes.length === 0) return [];
  const tenants = inboxes.map((p) => p[0]);
  const users = inboxes.map((p) => p[1]);
  // Two array parameters whatever the number of inboxes (a hub check covers up to a thousand).
  const keys = sql<{ tenant: string; user_id: string }>`unnest(${tenants}::text[], ${users}::text[])`.as<'k'>(sql`k(tenant, user_id)`);
  return db
    .selectFrom('inbox_cursor as c')
    .innerJoin(keys, (join) => join.onRef('k.tenant', '=', 'c.tenant').onRef('k.user_id', '=', 'c.user_id'))
    .select(['c.tenant', 'c.user_id', 'c.last_seq'])
    .execute();
}

/** The oldest seq of the user's inbox still stored; null when none is. */
export async function inboxOldestSeq(db: Db, tenant: string, userId: string): Promise<number | null> {
  const row = await db
    .selectFrom('inbox_event')
    .select((eb) => eb.fn.min<number>('seq').as('s'))
    .where('tenant', '=', tenant)
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return row?.s ?? null;
}

/** The user's items with after < seq <= upto, ascending, at most `limit`. */
export function inboxEvents(db: Db, tenant: string, userId: string, after: number, upto: number, limit: number): Promise<InboxEventRow[]> {
  return db
    .selectFrom('inbox_event')
    .select(['seq', 'type', 'data'])
    .where('tenant', '=', tenant)
    .where('user_id', '=', userId)
    .where('seq', '>', after)
    .where('seq', '<=', upto)
    .orderBy('seq', 'asc')
    .limit(limit)
    .execute();
}

/** Blanks the excerpt of the `mention` items of a message in the given users' inboxes. */
export async function blankMentionExcerpts(db: Db, tenant: string, userIds: string[], messageId: string): Promise<void> {
  if (userIds.length === 0) return;
  await db
    .updateTable('inbox_event')
    .set({ data: sql<Record<string, unknown>>`jsonb_set(data, '{excerpt}', '""')` })
    .where('tenant', '=', tenant)
    .where('user_id', 'in', userIds)
    .where('type', '=', 'mention')
    .where((eb) => eb(eb.ref('data', '->>').key('messageId'), '=', messageId))
    .execute();
}

/** What an `inbox.notify` item written with a clientId is recorded under (src/store/entities.ts, InboxEvent). */
export interface NotifyRequest {
  senderId: string;
  clientId: string;
  /** The hash of the request's target and content: a repeat must bring the same. */
  requestHash: string;
}

/**
 * Records the request of the items just appended (`Tx.appendInboxMany`, same transaction) on their
 * rows: `items` are their users and seqs.
 */
export async function recordNotifyRequest(db: Db, tenant: string, items: { userId: string; seq: number }[], request: NotifyRequest): Promise<void> {
  if (items.length === 0) return;
  // Two array parameters whatever the number of items (up to a slice of a thousand users).
  const keys = sql<{ user_id: string; seq: number }>`unnest(${items.map((i) => i.userId)}::text[], ${items.map((i) => i.seq)}::bigint[])`.as<'k'>(
    sql`k(user_id, seq)`,
  );
  await db
    .updateTable('inbox_event')
    .from(keys)
    .set({ sender_id: request.senderId, client_id: request.clientId, request_hash: request.requestHash })
    .where('inbox_event.tenant', '=', tenant)
    .whereRef('inbox_event.user_id', '=', 'k.user_id')
    .whereRef('inbox_event.seq', '=', 'k.seq')
    .execute();
}

/**
 * One item a sender wrote with `clientId` (any of its users), with how many of its items are still
 * kept (retention and erasure remove them like any item); undefined when none is.
 */
export function notificationByClientId(
  db: Db,
  tenant: string,
  senderId: string,
  clientId: string,
): Promise<(InboxEventRow & { request_hash: string | null; items: number }) | undefined> {
  return db
    .selectFrom('inbox_event')
    .select(['seq', 'type', 'data', 'request_hash', sql<number>`(count(*) over ())::int`.as('items')])
    .where('tenant', '=', tenant)
    .where('sender_id', '=', senderId)
    .where('client_id', '=', clientId)
    .limit(1)
    .executeTakeFirst();
}
