import { type InsertObject, type QueryCreator, sql } from 'kysely';
import { clip } from '../domain/text.js';
import type { Db, Tables } from './database.js';

/**
 * Outgoing webhooks: the tenants' endpoints and the delivery outbox (`webhook_delivery`). Outbox
 * rows are written in the transaction of the event they report (src/store/tx.ts and the grouped
 * send in hot/append-messages.ts) by an INSERT ... SELECT over the tenant's enabled endpoints that
 * subscribe to the type, so a tenant without webhooks costs an index probe, never a round trip.
 */

export interface EndpointRow {
  id: string;
  tenant: string;
  url: string;
  events: string[];
  description: string | null;
  enabled: boolean;
  failing_since: Date | null;
  created_at: Date;
  updated_at: Date;
}

// As in tx.ts (which imports this module): the database's clock.
const now = () => sql<Date>`now()`;

const ENDPOINT_FIELDS = ['id', 'tenant', 'url', 'events', 'description', 'enabled', 'failing_since', 'created_at', 'updated_at'] as const;

/** The id under which a room log event is delivered (`webhook-id`): the same on every retry. */
export const logEventId = (roomId: string, seq: number) => `${roomId}:${seq}`;

export interface OutboxEvent {
  tenant: string;
  roomId: string;
  type: string;
  eventId: string;
  /** A room log event: its seq (its data is read from the log when it is sent). */
  seq: number | null;
  /** Any other event: its data. */
  data: Record<string, unknown> | null;
}

/**
 * Inserts the outbox rows of one event for the tenant's enabled endpoints subscribed to its type.
 * Given the event's room log row, that row is inserted by the same statement (a data-modifying
 * CTE): appending a room event costs no extra round trip, webhooks or not. Returns how many outbox
 * rows were written.
 */
export async function insertOutbox(db: Db, e: OutboxEvent, logRow?: InsertObject<Tables, 'room_event'>): Promise<number> {
  const qc: QueryCreator<Tables> = logRow ? db.with('ev', (q) => q.insertInto('room_event').values(logRow)) : db;
  const res = await qc
    .insertInto('webhook_delivery')
    .columns(['endpoint_id', 'tenant', 'room_id', 'seq', 'event_id', 'event_type', 'data', 'status', 'attempts', 'next_attempt_at', 'created_at'])
    .expression((eb) =>
      eb
        .selectFrom('webhook_endpoint as w')
        .select([
          'w.id',
          sql<string>`${e.tenant}`.as('tenant'),
          sql<string>`${e.roomId}::uuid`.as('room_id'),
          sql<number | null>`${e.seq}::bigint`.as('seq'),
          sql<string>`${e.eventId}`.as('event_id'),
          sql<string>`${e.type}`.as('event_type'),
          sql<Record<string, unknown> | null>`${e.data === null ? null : JSON.stringify(e.data)}::jsonb`.as('data'),
          sql<string>`'pending'`.as('status'),
          sql<number>`0`.as('attempts'),
          now().as('next_attempt_at'),
          now().as('created_at'),
        ])
        .where('w.tenant', '=', e.tenant)
        .where('w.enabled', '=', true)
        .where(sql<boolean>`w.events && array[${e.type}, '*']::text[]`),
    )
    .executeTakeFirst();
  return Number(res.numInsertedOrUpdatedRows ?? 0);
}

export async function insertEndpoint(
  db: Db,
  e: { id: string; tenant: string; url: string; events: string[]; description: string | null; secret: string },
): Promise<EndpointRow> {
  return db
    .insertInto('webhook_endpoint')
    .values({ ...e, events: sql<string[]>`${e.events}::text[]`, enabled: true, created_at: now(), updated_at: now() })
    .returning(ENDPOINT_FIELDS)
    .executeTakeFirstOrThrow();
}

export function listEndpoints(db: Db, tenant: string): Promise<EndpointRow[]> {
  return db.selectFrom('webhook_endpoint').select(ENDPOINT_FIELDS).where('tenant', '=', tenant).orderBy('created_at').orderBy('id').execute();
}

export function countEndpoints(db: Db, tenant: string): Promise<number> {
  return db
    .selectFrom('webhook_endpoint')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('tenant', '=', tenant)
    .executeTakeFirstOrThrow()
    .then((r) => Number(r.n));
}

export function findEndpoint(db: Db, tenant: string, id: string): Promise<EndpointRow | undefined> {
  return db.selectFrom('webhook_endpoint').select(ENDPOINT_FIELDS).where('tenant', '=', tenant).where('id', '=', id).executeTakeFirst();
}

/** Changes an endpoint of the tenant; re-enabling clears its failure run. Undefined: no such endpoint. */
export function updateEndpoint(
  db: Db,
  tenant: string,
  id: string,
  set: { url?: string | undefined; events?: string[] | undefined; enabled?: boolean | undefined; description?: string | null | undefined },
): Promise<EndpointRow | undefined> {
  return db
    .updateTable('webhook_endpoint')
    .set({
      ...(set.url !== undefined ? { url: set.url } : {}),
      ...(set.events !== undefined ? { events: sql<string[]>`${set.events}::text[]` } : {}),
      ...(set.description !== undefined ? { description: set.description } : {}),
      ...(set.enabled !== undefined ? { enabled: set.enabled } : {}),
      ...(set.enabled === true ? { failing_since: null } : {}),
      updated_at: now(),
    })
    .where('tenant', '=', tenant)
    .where('id', '=', id)
    .returning(ENDPOINT_FIELDS)
    .executeTakeFirst();
}

export async function setEndpointSecret(db: Db, tenant: string, id: string, secret: string): Promise<boolean> {
  const res = await db.updateTable('webhook_endpoint').set({ secret, updated_at: now() }).where('tenant', '=', tenant).where('id', '=', id).executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}

export async function deleteEndpoint(db: Db, tenant: string, id: string): Promise<boolean> {
  const res = await db.deleteFrom('webhook_endpoint').where('tenant', '=', tenant).where('id', '=', id).executeTakeFirst();
  return Number(res.numDeletedRows) > 0;
}

export interface DeliveryRow {
  id: number;
  event_id: string;
  event_type: string;
  room_id: string;
  status: 'pending' | 'delivered' | 'failed';
  attempts: number;
  last_error: string | null;
  last_status_code: number | null;
  next_attempt_at: Date;
  created_at: Date;
  delivered_at: Date | null;
}

/** The endpoint's most recent outbox rows, newest first. */
export async function recentDeliveries(db: Db, endpointId: string, limit: number): Promise<DeliveryRow[]> {
  const rows = await db
    .selectFrom('webhook_delivery')
    .select(['id', 'event_id', 'event_type', 'room_id', 'status', 'attempts', 'last_error', 'last_status_code', 'next_attempt_at', 'created_at', 'delivered_at'])
    .where('endpoint_id', '=', endpointId)
    .orderBy('id', 'desc')
    .limit(limit)
    .execute();
  return rows as DeliveryRow[];
}

/** A claimed outbox row with what sending it needs. */
export interface ClaimedDelivery {
  id: number;
  endpoint_id: string;
  tenant: string;
  room_id: string;
  seq: number | null;
  event_id: string;
  event_type: string;
  data: Record<string, unknown> | null;
  attempts: number;
  created_at: Date;
}

/**
 * Claims up to `limit` due rows for `leaseMs` (attempts + 1). Each row is claimed by one worker:
 * FOR UPDATE SKIP LOCKED leaves rows another worker is claiming, and the lease keeps a claimed row
 * from being taken again until it expires (a worker that died: the row is retried elsewhere). A row
 * is due only when no earlier row of the same endpoint and room is still pending (order per room).
 */
export async function claimDue(db: Db, limit: number, leaseMs: number): Promise<ClaimedDelivery[]> {
  const rows = await db
    .updateTable('webhook_delivery')
    .set((eb) => ({ attempts: eb('attempts', '+', 1), lease_until: sql<Date>`now() + ${leaseMs} * interval '1 millisecond'` }))
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('webhook_delivery as d')
        .select('d.id')
        .where('d.status', '=', 'pending')
        .where('d.next_attempt_at', '<=', now())
        .where((w) => w.or([w('d.lease_until', 'is', null), w('d.lease_until', '<', now())]))
        .where((w) => w.exists(w.selectFrom('webhook_endpoint as e').select('e.id').whereRef('e.id', '=', 'd.endpoint_id').where('e.enabled', '=', true)))
        .where((w) =>
          w.not(
            w.exists(
              w
                .selectFrom('webhook_delivery as p')
                .select('p.id')
                .whereRef('p.endpoint_id', '=', 'd.endpoint_id')
                .whereRef('p.room_id', '=', 'd.room_id')
                .whereRef('p.id', '<', 'd.id')
                .where('p.status', '=', 'pending'),
            ),
          ),
        )
        .orderBy('d.id')
        .limit(limit)
        .forUpdate()
        .skipLocked(),
    )
    .returning(['id', 'endpoint_id', 'tenant', 'room_id', 'seq', 'event_id', 'event_type', 'data', 'attempts', 'created_at'])
    .execute();
  return rows as ClaimedDelivery[];
}

/** The endpoint as a delivery needs it (undefined: deleted meanwhile). */
export function endpointForDelivery(db: Db, id: string) {
  return db.selectFrom('webhook_endpoint').select(['id', 'tenant', 'url', 'secret', 'enabled']).where('id', '=', id).executeTakeFirst();
}

/**
 * A claim (`claimDue`) is identified by the `attempts` it set: each claim adds one and nothing else
 * changes it. A completion applies only while the row is still that claim's: a worker whose lease ran
 * out (slow before or after its request) may find the row claimed, sent and finished by another node,
 * and must not put it back. False (or null for `markFailed`): another claim owns the row now, nothing written.
 */
export type ClaimRef = Pick<ClaimedDelivery, 'id' | 'attempts'>;
const claimedRow = (db: Db, claim: ClaimRef) =>
  db.updateTable('webhook_delivery').where('id', '=', claim.id).where('attempts', '=', claim.attempts).where('status', '=', 'pending');

export async function markDelivered(db: Db, row: ClaimRef & { endpointId: string; statusCode: number }): Promise<boolean> {
  const res = await claimedRow(db, row)
    .set({ status: 'delivered', delivered_at: now(), lease_until: null, last_status_code: row.statusCode, last_error: null })
    .executeTakeFirst();
  if (Number(res.numUpdatedRows) === 0) return false;
  await db.updateTable('webhook_endpoint').set({ failing_since: null }).where('id', '=', row.endpointId).where('failing_since', 'is not', null).execute();
  return true;
}

/**
 * Records a failed attempt: retried after `retryInMs`, or given up (`retryInMs` null). An endpoint
 * whose deliveries have failed without a success for `disableAfterMs` is disabled; a failure that is
 * not the endpoint's (`endpointAtFault` false: the event was gone before the request) leaves its
 * failure clock as it is. Returns whether it was disabled now, or null when the claim no longer
 * holds (nothing written, see `ClaimRef`).
 */
export async function markFailed(
  db: Db,
  row: ClaimRef & {
    endpointId: string;
    error: string;
    statusCode: number | null;
    retryInMs: number | null;
    disableAfterMs: number;
    endpointAtFault: boolean;
  },
): Promise<boolean | null> {
  const res = await claimedRow(db, row)
    .set({
      status: row.retryInMs === null ? 'failed' : 'pending',
      next_attempt_at: row.retryInMs === null ? now() : sql<Date>`now() + ${row.retryInMs} * interval '1 millisecond'`,
      lease_until: null,
      last_error: clip(row.error, 500),
      last_status_code: row.statusCode,
    })
    .executeTakeFirst();
  if (Number(res.numUpdatedRows) === 0) return null;
  if (!row.endpointAtFault) return false;
  const ep = await db
    .updateTable('webhook_endpoint')
    .set((eb) => ({
      failing_since: eb.fn.coalesce('failing_since', now()),
      enabled: sql<boolean>`enabled and coalesce(failing_since, now()) > now() - ${row.disableAfterMs} * interval '1 millisecond'`,
    }))
    .where('id', '=', row.endpointId)
    .returning(['enabled'])
    .executeTakeFirst();
  return ep !== undefined && !ep.enabled;
}

/** Deletes up to `batch` finished rows (delivered or given up) older than `olderThanMs`; returns how many. */
export async function pruneDeliveries(db: Db, olderThanMs: number, batch: number): Promise<number> {
  const res = await db
    .deleteFrom('webhook_delivery')
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('webhook_delivery')
        .select('id')
        .where('created_at', '<', sql<Date>`now() - ${olderThanMs} * interval '1 millisecond'`)
        .where('status', '<>', 'pending')
        .limit(batch),
    )
    .executeTakeFirst();
  return Number(res.numDeletedRows);
}
