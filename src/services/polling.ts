/**
 * The loop of a queue worker (webhook outbox, notification queue, video removals): a round every
 * `pollMs`, one at a time, started at once by `wake()` after a local commit wrote work (or queued
 * right after the round in flight), earlier than the next poll by `wakeIn()` (a retry's due time),
 * and stopped cleanly. The worker's round claims rows with a lease; the loop only decides when
 * rounds run.
 */
export class PollingLoop {
  private timer: NodeJS.Timeout | null = null;
  /** When the scheduled round runs (`Date.now()` time; meaningful while `timer` is set). */
  private due = 0;
  /** The earliest round asked for by `wakeIn` while a round was running (null: none). */
  private soonest: number | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private halted = true;

  constructor(
    private readonly round: () => Promise<void>,
    private readonly pollMs: number,
  ) {}

  /** True once `stop` was called (rounds check it to end early). */
  get stopped(): boolean {
    return this.halted;
  }

  start(): void {
    this.halted = false;
    this.schedule(0);
  }

  /** A round now, or right after the one in flight. */
  wake(): void {
    if (this.halted) return;
    if (this.running !== null) {
      this.again = true;
      return;
    }
    this.schedule(0);
  }

  /** A round in `ms` at the latest (sooner when one is due sooner). */
  wakeIn(ms: number): void {
    if (this.halted) return;
    const at = Date.now() + ms;
    if (this.running !== null) {
      this.soonest = Math.min(this.soonest ?? at, at);
      return;
    }
    if (this.timer && this.due <= at) return;
    this.schedule(ms);
  }

  /** Stops scheduling at once; the promise resolves when the round in flight has ended. */
  stop(): Promise<void> {
    this.halted = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.soonest = null;
    return this.running ?? Promise.resolve();
  }

  private schedule(ms: number): void {
    if (this.halted) return;
    if (this.timer) clearTimeout(this.timer);
    this.due = Date.now() + ms;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.round().finally(() => {
        this.running = null;
        const more = this.again;
        const soonest = this.soonest;
        this.again = false;
        this.soonest = null;
        this.schedule(more ? 0 : soonest === null ? this.pollMs : Math.min(this.pollMs, Math.max(0, soonest - Date.now())));
      });
    }, ms);
    this.timer.unref();
  }
}
