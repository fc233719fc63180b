import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { type Expression, sql } from 'kysely';
import type { Db } from './database.js';

/** The row of `job_lease` (src/store/lease-entities.ts) that lets one node at a time run retention. */
const RETENTION_JOB = 'retention';
/**
 * How long a lease lasts unless renewed: each batch renews it, so it only has to outlast one batch
 * (and even a batch that runs longer cannot overlap another node's, see `withRetentionLock`); it is
 * how long a node that died mid-run keeps the others from running.
 */
export const RETENTION_LEASE_MS = 60_000;

/** `now() - <days> days`; null days give null (nothing is that old). */
const olderThan = (days: Expression<number | null>) => sql<Date>`now() - make_interval(days => ${days})`;
/** A number of days as a parameter (typed, so that null is an int too). */
const days = (n: number | null) => sql<number | null>`${n}::int`;
/** `now()` plus a number of milliseconds (the database's clock). */
const inMs = (ms: number) => sql<Date>`now() + ${ms} * interval '1 millisecond'`;

/**
 * What one retention run may do while it holds the lease. Every batch is its own short transaction
 * that first renews the lease (and so checks it is still this run's): no lock is held for long,
 * sends go on, and a run whose lease another node took (it ran out) deletes nothing more.
 */
export interface RetentionConnection {
  /**
   * Deletes up to `batch` messages older than their room's retention (`room.retention_days`, else
   * `defaultDays`; null: rooms without their own keep everything); their uploaded files are handed
   * to the file worker. Returns how many messages went, and how many files.
   */
  deleteOldMessages(defaultDays: number | null, batch: number): Promise<{ messages: number; files: number }>;
  /** The same for room events (the same per-room override). */
  deleteOldRoomEvents(defaultDays: number | null, batch: number): Promise<number>;
  /** Deletes up to `batch` inbox items older than `days`. */
  deleteOldInboxEvents(days: number, batch: number): Promise<number>;
  /**
   * Deletes up to `batch` video meetings over (ended, or past their expiry) for longer than their
   * room's retention (the same per-room override), with their participant rows (cascade): the call
   * records of who joined when are kept no longer than the room's messages.
   */
  deleteOldMeetings(defaultDays: number | null, batch: number): Promise<number>;
}

/** A batch found the lease gone (it ran out and another node took it, or it was deleted): the run must end. */
export class LeaseLostError extends Error {
  constructor() {
    super('the retention lease was lost (it ran out and another node took it)');
    this.name = 'LeaseLostError';
  }
}

/** Takes the lease of `name` for `owner` when nobody holds it or its holder's lease ran out; true when taken. */
async function takeLease(db: Db, name: string, owner: string, leaseMs: number): Promise<boolean> {
  const row = await db
    .insertInto('job_lease')
    .values({ name, owner, lease_until: inMs(leaseMs) })
    .onConflict((oc) =>
      oc
        .column('name')
        .doUpdateSet((eb) => ({ owner: eb.ref('excluded.owner'), lease_until: eb.ref('excluded.lease_until') }))
        .where('job_lease.lease_until', '<', sql<Date>`now()`),
    )
    .returning('owner')
    .executeTakeFirst();
  return row !== undefined;
}

/** Extends `owner`'s lease (in the caller's transaction, whose row lock keeps anyone from taking it until commit); false when it is not `owner`'s any more. */
async function renewLease(db: Db, name: string, owner: string, leaseMs: number): Promise<boolean> {
  const r = await db.updateTable('job_lease').set({ lease_until: inMs(leaseMs) }).where('name', '=', name).where('owner', '=', owner).executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

/** Frees `owner`'s lease (someone else's, taken after it ran out, stays). */
async function releaseLease(db: Db, name: string, owner: string): Promise<void> {
  await db.deleteFrom('job_lease').where('name', '=', name).where('owner', '=', owner).execute();
}

/**
 * Runs `fn` holding the retention lease (a `job_lease` row), unless another node holds it: then
 * `fn` does not run and the result is `{ ran: false }`. Every statement stands alone (taking the
 * lease, each batch's transaction, releasing it), so it works behind a transaction-mode pooler
 * such as PgBouncer, where a session advisory lock may be taken on one server connection and
 * "released" on another. Each batch renews the lease in its own transaction: the row lock it takes
 * keeps another node from taking the lease until the batch commits, so two nodes' batches never
 * overlap, and a batch that finds the lease gone throws LeaseLostError (nothing deleted). A node
 * that dies leaves a lease that runs out after `leaseMs`.
 */
export async function withRetentionLock<T>(
  db: Db,
  fn: (conn: RetentionConnection) => Promise<T>,
  opts: { leaseMs?: number } = {},
): Promise<{ ran: true; value: T } | { ran: false }> {
  const leaseMs = opts.leaseMs ?? RETENTION_LEASE_MS;
  const owner = `${hostname()}/${process.pid}/${randomUUID()}`.slice(-200);
  if (!(await takeLease(db, RETENTION_JOB, owner, leaseMs))) return { ran: false };
  try {
    const batch = <R>(work: (trx: Db) => Promise<R>): Promise<R> =>
      db.transaction().execute(async (trx) => {
        if (!(await renewLease(trx, RETENTION_JOB, owner, leaseMs))) throw new LeaseLostError();
        return work(trx);
      });
    return { ran: true, value: await fn(retentionConnection(batch)) };
  } finally {
    // A lease that cannot be released (the database is gone) runs out by itself.
    await releaseLease(db, RETENTION_JOB, owner).catch(() => {});
  }
}

/** The deletes, each run through `batch` (its own transaction, holding the lease). */
function retentionConnection(batch: <R>(work: (db: Db) => Promise<R>) => Promise<R>): RetentionConnection {
  return {
    async deleteOldMessages(defaultDays, limit) {
      // One statement: the messages go, and their uploaded files are handed to the file worker.
      const r = await batch((db) =>
        db
          .with('gone', (q) =>
            q
              .deleteFrom('message')
              .where('id', 'in', (eb) =>
                eb
                  .selectFrom('message as m')
                  .innerJoin('room as r', 'r.id', 'm.room_id')
                  .select('m.id')
                  .where((w) => w('m.created_at', '<', olderThan(w.fn.coalesce('r.retention_days', days(defaultDays)))))
                  .orderBy('m.created_at')
                  .limit(limit),
              )
              .returning('id'),
          )
          .with('files', (q) =>
            q
              .updateTable('file')
              .set({ state: 'deleting', lease_until: null })
              .where('message_id', 'in', (eb) => eb.selectFrom('gone').select('gone.id'))
              .returning('file.id'),
          )
          .selectNoFrom((eb) => [
            eb.selectFrom('gone').select((x) => x.fn.countAll<number>().as('n')).as('messages'),
            eb.selectFrom('files').select((x) => x.fn.countAll<number>().as('n')).as('files'),
          ])
          .executeTakeFirstOrThrow(),
      );
      return { messages: Number(r.messages), files: Number(r.files) };
    },
    // A room's log (and a user's inbox) only ever loses its oldest events: a batch takes the oldest
    // expired rows, then every row of their room up to the highest seq taken (a row committed just
    // before an expired one but started a moment after it goes with it). Rows taken in any other
    // order left holes in the middle of a log between two batches, and a resume across such a hole
    // got a partial replay without `reset` (test/retention.test.ts).
    async deleteOldRoomEvents(defaultDays, limit) {
      const r = await batch((db) =>
        db
          .with('taken', (q) =>
            q
              .selectFrom('room_event as e')
              .innerJoin('room as r', 'r.id', 'e.room_id')
              .select(['e.room_id', 'e.seq'])
              .where((w) => w('e.created_at', '<', olderThan(w.fn.coalesce('r.retention_days', days(defaultDays)))))
              .orderBy('e.created_at')
              .limit(limit),
          )
          .with('upto', (q) => q.selectFrom('taken').select(['room_id', (eb) => eb.fn.max('seq').as('seq')]).groupBy('room_id'))
          .deleteFrom('room_event')
          .using('upto')
          .whereRef('room_event.room_id', '=', 'upto.room_id')
          .whereRef('room_event.seq', '<=', 'upto.seq')
          .executeTakeFirst(),
      );
      return Number(r.numDeletedRows);
    },
    async deleteOldMeetings(defaultDays, limit) {
      const r = await batch((db) =>
        db
          .deleteFrom('meeting')
          .where('id', 'in', (eb) =>
            eb
              .selectFrom('meeting as m')
              .innerJoin('room as r', 'r.id', 'm.room_id')
              .select('m.id')
              .where((w) =>
                w(w.fn.coalesce('m.ended_at', 'm.expires_at'), '<', olderThan(w.fn.coalesce('r.retention_days', days(defaultDays)))),
              )
              .limit(limit),
          )
          .executeTakeFirst(),
      );
      return Number(r.numDeletedRows);
    },
    async deleteOldInboxEvents(maxDays, limit) {
      const r = await batch((db) =>
        db
          .with('taken', (q) =>
            q
              .selectFrom('inbox_event')
              .select(['tenant', 'user_id', 'seq'])
              .where('created_at', '<', olderThan(days(maxDays)))
              .orderBy('created_at')
              .limit(limit),
          )
          .with('upto', (q) => q.selectFrom('taken').select(['tenant', 'user_id', (eb) => eb.fn.max('seq').as('seq')]).groupBy(['tenant', 'user_id']))
          .deleteFrom('inbox_event')
          .using('upto')
          .whereRef('inbox_event.tenant', '=', 'upto.tenant')
          .whereRef('inbox_event.user_id', '=', 'upto.user_id')
          .whereRef('inbox_event.seq', '<=', 'upto.seq')
          .executeTakeFirst(),
      );
      return Number(r.numDeletedRows);
    },
  };
}
