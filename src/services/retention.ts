import type { Store } from '../store/store.js';
import { LeaseLostError, withRetentionLock } from '../store/retention.js';
import type { Logger } from '../logger.js';

export interface RetentionResult {
  /** False when another node holds the lease, or the service is stopping (nothing done here). */
  ran: boolean;
  messages: number;
  events: number;
  inbox: number;
  /** Video meetings (with their participant rows). */
  meetings: number;
  batches: number;
  ms: number;
  /**
   * Why a run ended before it was done: `stopping` (stop(), at shutdown) or `lease lost` (the
   * lease ran out and another node took it); null when it went through (or did not run).
   */
  interrupted: 'stopping' | 'lease lost' | null;
}

export interface RetentionOptions {
  /** RETENTION_INTERVAL_MS. */
  intervalMs: number;
  /** RETENTION_BATCH. */
  batch: number;
  /** RETENTION_DAYS (null: no global default). */
  days: number | null;
  /** How long the lease lasts unless renewed (default: RETENTION_LEASE_MS of src/store/retention.ts). */
  leaseMs?: number;
  /** Called after each batch with the run's progress so far; the run goes on once it has returned. */
  onBatch?: (progress: Readonly<RetentionResult>) => void | Promise<void>;
}

/**
 * Deletes messages older than their room's retention (`room.retention_days`, else RETENTION_DAYS)
 * in small batches, each its own short transaction, so no lock is held for long and sends go on.
 * Room events, inbox items and video meetings (with their participants) past the same age go too; reactions and edit history follow their
 * message (foreign keys cascade); their uploaded files are handed to the file worker, which removes
 * the objects. One node at a time runs it: a lease row (`job_lease`), taken, renewed by every batch
 * and released with plain statements, so that it also holds behind a transaction-mode pooler.
 */
export class RetentionService {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<RetentionResult> | null = null;
  /** Set by stop(): no new run starts, and the one in progress ends after its current batch. */
  private stopping = false;

  constructor(
    /** Only its query builder is used (each batch on a fresh one). */
    private readonly store: Pick<Store, 'db'>,
    private readonly log: Logger,
    private readonly opts: RetentionOptions,
    /** Wakes the file worker (messages with uploaded files went). */
    private readonly wakeFiles: () => void = () => {},
  ) {}

  /** Runs the job every RETENTION_INTERVAL_MS (not at all when no retention is configured anywhere). */
  start(): void {
    this.stopping = false;
    this.timer = setInterval(() => {
      void this.runOnce().catch((err: unknown) => this.log.warn({ err }, 'retention run failed'));
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  /** A run now (or the one in progress); `ran: false` when another node holds the lease or the service is stopping. */
  runOnce(): Promise<RetentionResult> {
    if (this.stopping && this.running === null) return Promise.resolve(emptyResult());
    this.running ??= this.run().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async run(): Promise<RetentionResult> {
    const started = performance.now();
    const result = emptyResult();
    try {
      const batch = this.opts.batch;
      const global = this.opts.days;
      /** Repeats one batched delete, counting into `field`, until a batch comes back short or the run has to stop. */
      const loop = async (field: 'messages' | 'events' | 'inbox' | 'meetings', deleteBatch: () => Promise<number>) => {
        for (;;) {
          if (this.stopping) {
            result.interrupted = 'stopping';
            return;
          }
          const n = await deleteBatch();
          result.batches++;
          result[field] += n;
          await this.opts.onBatch?.(result);
          if (n < batch) return;
        }
      };
      const locked = await withRetentionLock(
        this.store.db(),
        async (conn) => {
          let files = 0;
          try {
            await loop('messages', async () => {
              const r = await conn.deleteOldMessages(global, batch);
              files += r.files;
              return r.messages;
            });
            if (files > 0) this.wakeFiles();
            files = 0;
            if (result.interrupted) return;
            await loop('events', () => conn.deleteOldRoomEvents(global, batch));
            if (result.interrupted) return;
            await loop('meetings', () => conn.deleteOldMeetings(global, batch));
            if (result.interrupted) return;
            if (global !== null) await loop('inbox', () => conn.deleteOldInboxEvents(global, batch));
          } catch (err) {
            if (!(err instanceof LeaseLostError)) throw err;
            result.interrupted = 'lease lost';
          } finally {
            // The messages a lost lease or a failure cut short had their files handed over too.
            if (files > 0) this.wakeFiles();
          }
        },
        this.opts.leaseMs === undefined ? {} : { leaseMs: this.opts.leaseMs },
      );
      result.ran = locked.ran;
    } finally {
      result.ms = Math.round(performance.now() - started);
    }
    if (result.messages || result.events || result.inbox || result.meetings || result.interrupted) {
      this.log.info({ retention: result }, result.interrupted ? `retention ended early (${result.interrupted})` : 'retention removed old data');
    }
    return result;
  }

  /**
   * Stops the schedule and the run in progress: it ends after its current batch (each batch is
   * its own transaction: what went, went) and releases the lease. Resolves once it has ended, so
   * that the database can be closed after this.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running?.catch(() => {});
  }
}

function emptyResult(): RetentionResult {
  return { ran: false, messages: 0, events: 0, inbox: 0, meetings: 0, batches: 0, ms: 0, interrupted: null };
}
