import { type Expression, sql } from 'kysely';
import type { Db } from './database.js';

/** Arbitrary constant key of the advisory lock that lets one node at a time run retention. */
const RETENTION_LOCK_KEY = 7_305_118_200_002;

/** `now() - <days> days`; null days give null (nothing is that old). */
const olderThan = (days: Expression<number | null>) => sql<Date>`now() - make_interval(days => ${days})`;
/** A number of days as a parameter (typed, so that null is an int too). */
const days = (n: number | null) => sql<number | null>`${n}::int`;

/**
 * What one retention run may do, on the one connection that holds the advisory lock. Every delete
 * is its own short statement (autocommit): no lock is held for long, sends go on.
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
}

/**
 * Runs `fn` on one connection of the pool holding the retention advisory lock, unless another node
 * holds it: then `fn` does not run and the result is `{ ran: false }`. The lock is a session lock:
 * taken, used and released on the same connection.
 */
export async function withRetentionLock<T>(db: Db, fn: (conn: RetentionConnection) => Promise<T>): Promise<{ ran: true; value: T } | { ran: false }> {
  return db.connection().execute(async (conn) => {
    const lock = await conn.selectNoFrom((eb) => eb.fn<boolean>('pg_try_advisory_lock', [eb.val(RETENTION_LOCK_KEY)]).as('ok')).executeTakeFirst();
    if (!lock?.ok) return { ran: false };
    try {
      return { ran: true, value: await fn(retentionConnection(conn)) };
    } finally {
      await conn.selectNoFrom((eb) => eb.fn<boolean>('pg_advisory_unlock', [eb.val(RETENTION_LOCK_KEY)]).as('ok')).execute();
    }
  });
}

function retentionConnection(db: Db): RetentionConnection {
  return {
    async deleteOldMessages(defaultDays, batch) {
      // One statement: the messages go, and their uploaded files are handed to the file worker.
      const r = await db
        .with('gone', (q) =>
          q
            .deleteFrom('message')
            .where('id', 'in', (eb) =>
              eb
                .selectFrom('message as m')
                .innerJoin('room as r', 'r.id', 'm.room_id')
                .select('m.id')
                .where((w) => w('m.created_at', '<', olderThan(w.fn.coalesce('r.retention_days', days(defaultDays)))))
                .limit(batch),
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
        .executeTakeFirstOrThrow();
      return { messages: Number(r.messages), files: Number(r.files) };
    },
    async deleteOldRoomEvents(defaultDays, batch) {
      const r = await db
        .deleteFrom('room_event')
        .where((eb) =>
          eb(
            eb.refTuple('room_id', 'seq'),
            'in',
            eb
              .selectFrom('room_event as e')
              .innerJoin('room as r', 'r.id', 'e.room_id')
              .select(['e.room_id', 'e.seq'])
              .where((w) => w('e.created_at', '<', olderThan(w.fn.coalesce('r.retention_days', days(defaultDays)))))
              .limit(batch)
              .$asTuple('room_id', 'seq'),
          ),
        )
        .executeTakeFirst();
      return Number(r.numDeletedRows);
    },
    async deleteOldInboxEvents(maxDays, batch) {
      const r = await db
        .deleteFrom('inbox_event')
        .where((eb) =>
          eb(
            eb.refTuple('tenant', 'user_id', 'seq'),
            'in',
            eb
              .selectFrom('inbox_event')
              .select(['tenant', 'user_id', 'seq'])
              .where('created_at', '<', olderThan(days(maxDays)))
              .limit(batch)
              .$asTuple('tenant', 'user_id', 'seq'),
          ),
        )
        .executeTakeFirst();
      return Number(r.numDeletedRows);
    },
  };
}
