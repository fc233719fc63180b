import { sql } from 'kysely';
import type { Db } from './database.js';

/**
 * Where PostgreSQL's write-ahead log stands, on the primary and on a streaming replica: what the
 * read routing (src/services/read-routing.ts) compares to decide whether a replica has a write.
 * Positions (LSNs, `16/B374D848`) are returned as bigints so they compare as numbers.
 */

/** An LSN's text form as a number. */
export function lsnValue(text: string): bigint {
  const [hi, lo] = text.split('/');
  return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
}

/** The primary's current WAL write position: every transaction committed before the call lies at or before it. */
export async function primaryLsn(db: Db): Promise<bigint> {
  const row = await db.selectNoFrom(sql<string>`pg_current_wal_lsn()::text`.as('lsn')).executeTakeFirstOrThrow();
  return lsnValue(row.lsn);
}

/** Whether the server is a standby, and the position its replay has applied (null: not a standby). */
export async function replayState(db: Db): Promise<{ standby: boolean; lsn: bigint | null }> {
  const row = await db
    .selectNoFrom([sql<boolean>`pg_is_in_recovery()`.as('standby'), sql<string | null>`pg_last_wal_replay_lsn()::text`.as('lsn')])
    .executeTakeFirstOrThrow();
  return { standby: row.standby, lsn: row.lsn === null ? null : lsnValue(row.lsn) };
}
