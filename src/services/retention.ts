import type { Pool, PoolClient } from 'pg';
import type { Deps } from './deps.js';

/** Arbitrary constant key of the advisory lock that lets one node at a time run retention. */
const RETENTION_LOCK_KEY = 7_305_118_200_002;

export interface RetentionResult {
  /** False when another node holds the lock (nothing done here). */
  ran: boolean;
  messages: number;
  events: number;
  inbox: number;
  batches: number;
  ms: number;
}

/**
 * Deletes messages older than their room's retention (`room.retention_days`, else RETENTION_DAYS)
 * in small batches, each its own short transaction, so no lock is held for long and sends go on.
 * Room events and inbox items past the same age go too; reactions and edit history follow their
 * message (foreign keys cascade). One node at a time runs it (a PostgreSQL advisory lock).
 */
export class RetentionService {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<RetentionResult> | null = null;

  constructor(
    private readonly deps: Deps,
    private readonly pool: () => Promise<Pool>,
  ) {}

  /** Runs the job every RETENTION_INTERVAL_MS (not at all when no retention is configured anywhere). */
  start(): void {
    this.timer = setInterval(() => {
      void this.runOnce().catch((err) => this.deps.log.warn({ err }, 'retention run failed'));
    }, this.deps.config.retentionIntervalMs);
    this.timer.unref();
  }

  runOnce(): Promise<RetentionResult> {
    this.running ??= this.run().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async run(): Promise<RetentionResult> {
    const started = performance.now();
    const result: RetentionResult = { ran: false, messages: 0, events: 0, inbox: 0, batches: 0, ms: 0 };
    const client: PoolClient = await (await this.pool()).connect();
    try {
      const lock = await client.query<{ ok: boolean }>('select pg_try_advisory_lock($1) as ok', [RETENTION_LOCK_KEY]);
      if (!lock.rows[0]?.ok) return result;
      result.ran = true;
      try {
        const batch = this.deps.config.retentionBatch;
        const global = this.deps.config.retentionDays ?? null;
        const loop = async (sql: string, params: unknown[]) => {
          let total = 0;
          for (;;) {
            const r = await client.query(sql, params);
            result.batches++;
            total += r.rowCount ?? 0;
            if ((r.rowCount ?? 0) < batch) return total;
          }
        };
        result.messages = await loop(
          `delete from message where id in (
             select m.id from message m join room r on r.id = m.room_id
              where m.created_at < now() - make_interval(days => coalesce(r.retention_days, $1::int))
              limit $2)`,
          [global, batch],
        );
        result.events = await loop(
          `delete from room_event where (room_id, seq) in (
             select e.room_id, e.seq from room_event e join room r on r.id = e.room_id
              where e.created_at < now() - make_interval(days => coalesce(r.retention_days, $1::int))
              limit $2)`,
          [global, batch],
        );
        if (global !== null) {
          result.inbox = await loop(
            `delete from inbox_event where (tenant, user_id, seq) in (
               select tenant, user_id, seq from inbox_event where created_at < now() - make_interval(days => $1::int) limit $2)`,
            [global, batch],
          );
        }
      } finally {
        await client.query('select pg_advisory_unlock($1)', [RETENTION_LOCK_KEY]);
      }
    } finally {
      client.release();
      result.ms = Math.round(performance.now() - started);
    }
    if (result.messages || result.events || result.inbox) this.deps.log.info({ retention: result }, 'retention removed old data');
    return result;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
