/**
 * The loop of a queue worker (webhook outbox, notification queue): a round every `pollMs`, one at
 * a time, started at once by `wake()` after a local commit wrote work (or queued right after the
 * round in flight), and stopped cleanly. The worker's round claims rows with a lease; the loop only
 * decides when rounds run.
 */
export class PollingLoop {
  private timer: NodeJS.Timeout | null = null;
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

  /** Stops scheduling at once; the promise resolves when the round in flight has ended. */
  stop(): Promise<void> {
    this.halted = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    return this.running ?? Promise.resolve();
  }

  private schedule(ms: number): void {
    if (this.halted) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.round().finally(() => {
        this.running = null;
        const more = this.again;
        this.again = false;
        this.schedule(more ? 0 : this.pollMs);
      });
    }, ms);
    this.timer.unref();
  }
}
