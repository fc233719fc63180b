import type { Store } from '../store/store.js';
import { withRetentionLock } from '../store/retention.js';
import type { Logger } from '../logger.js';

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
 * message (foreign keys cascade); their uploaded files are handed to the file worker, which removes
 * the objects. One node at a time runs it (a PostgreSQL advisory lock).
 */
export class RetentionService {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<RetentionResult> | null = null;

  constructor(
    private readonly store: Store,
    private readonly log: Logger,
    /** RETENTION_INTERVAL_MS, RETENTION_BATCH and RETENTION_DAYS (null: no global default). */
    private readonly opts: { intervalMs: number; batch: number; days: number | null },
    /** Wakes the file worker (messages with uploaded files went). */
    private readonly wakeFiles: () => void = () => {},
  ) {}

  /** Runs the job every RETENTION_INTERVAL_MS (not at all when no retention is configured anywhere). */
  start(): void {
    this.timer = setInterval(() => {
      void this.runOnce().catch((err: unknown) => this.log.warn({ err }, 'retention run failed'));
    }, this.opts.intervalMs);
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
    try {
      const batch = this.opts.batch;
      const global = this.opts.days;
      /** Repeats one batched delete until a batch comes back short. */
      const loop = async (deleteBatch: () => Promise<number>) => {
        let total = 0;
        for (;;) {
          const n = await deleteBatch();
          result.batches++;
          total += n;
          if (n < batch) return total;
        }
      };
      const locked = await withRetentionLock(this.store.db(), async (conn) => {
        let files = 0;
        result.messages = await loop(async () => {
          const r = await conn.deleteOldMessages(global, batch);
          files += r.files;
          return r.messages;
        });
        if (files > 0) this.wakeFiles();
        result.events = await loop(() => conn.deleteOldRoomEvents(global, batch));
        if (global !== null) result.inbox = await loop(() => conn.deleteOldInboxEvents(global, batch));
      });
      result.ran = locked.ran;
    } finally {
      result.ms = Math.round(performance.now() - started);
    }
    if (result.messages || result.events || result.inbox) this.log.info({ retention: result }, 'retention removed old data');
    return result;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
