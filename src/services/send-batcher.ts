/**
 * Group commit for sends. One group is in flight at a time; an item that arrives meanwhile waits in
 * a queue, and when the group is done the next one takes everything queued (up to `maxBatch`, across
 * rooms) and does it at once. An item that arrives when nothing is in flight goes at once: no timer
 * ever waits for company, so a lone send gets no added latency, and groups only form under load (the
 * busier, the larger).
 *
 * One group at a time also orders the writes of this process: a room's groups are written, and
 * their events published, one after the other, in the order the items were queued. (Two groups in
 * flight, of disjoint rooms, were measured: smaller groups, more CPU per send, no more throughput.)
 *
 * When a group is done, the next one is started before anything else happens with the finished one:
 * the database writes group k+1 while this process publishes group k's events (`committed`) and
 * answers its callers. (Before, the database sat idle while the process did that, and the process
 * waited while the database wrote: docs/BENCHMARKS.md, "Issue 18, twelfth pass".) The events are still
 * published in group order: `committed` of group k runs in the same turn as the start of k+1, before
 * k+1 can have an outcome.
 */
export interface BatcherOptions {
  /** Most items in one group. */
  maxBatch: number;
  /** Attempts of a group that fails with a transient error (serialization, deadlock, clientId race). */
  maxAttempts: number;
}

export const DEFAULT_BATCHER_OPTIONS: BatcherOptions = { maxBatch: 256, maxAttempts: 3 };

interface Pending<I, O> {
  item: I;
  resolve: (o: O) => void;
  reject: (err: unknown) => void;
}

/** SQLSTATE of the error, if the database sent one. */
function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * A group that failed with one of these is done again as it is: serialization failure, deadlock
 * (rooms are locked in a fixed order, so only a cross-node clientId race can cause one) and a unique
 * violation (a concurrent repeat of a clientId on another node committed meanwhile; the next attempt
 * sees it as a repeat).
 */
const TRANSIENT = new Set(['40001', '40P01', '23505']);

/**
 * Data exceptions (class 22: a NUL character, say) and integrity violations (class 23) come from one
 * item's data: the group is split and each item done alone, so only that one fails. Anything else
 * (the connection, the server) fails every item of the group with that error.
 */
const fromOneItem = (code: string | undefined) => code !== undefined && (code.startsWith('22') || code.startsWith('23'));

/** What became of one item of a group: its outcome or its error. */
type Settled<I, O> = { p: Pending<I, O>; ok: true; value: O } | { p: Pending<I, O>; ok: false; err: unknown };

/** A finished group: its items and its outcomes (null when it failed, or was split and settled item by item). */
interface Done<I, O> {
  items: Settled<I, O>[];
  outcomes: O[] | null;
}

export class SendBatcher<I, O> {
  private queue: Pending<I, O>[] = [];
  private busy = false;
  private readonly opts: BatcherOptions;

  constructor(
    /** Does a group at once (one statement); one outcome per item, in item order. */
    private readonly run: (items: I[]) => Promise<O[]>,
    opts: Partial<BatcherOptions> = {},
    /**
     * Called with the outcomes of every group (every successful run), in group order, after the next
     * group has started and before the group's callers are answered (the write's events are
     * published here). Must not throw.
     */
    private readonly committed?: (outcomes: O[]) => void,
  ) {
    this.opts = { ...DEFAULT_BATCHER_OPTIONS, ...opts };
  }

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.busy) void this.drain();
    });
  }

  /** Runs groups until the queue is empty; the next group starts before the last one is settled. */
  private async drain(): Promise<void> {
    this.busy = true;
    let running: Promise<Done<I, O>> | null = this.flush(this.queue.splice(0, this.opts.maxBatch));
    while (running !== null) {
      const done: Done<I, O> = await running;
      running = this.queue.length > 0 ? this.flush(this.queue.splice(0, this.opts.maxBatch)) : null;
      this.settle(done);
    }
    this.busy = false;
  }

  /** Hands a finished group's outcomes to `committed`, then answers its callers. */
  private settle(done: Done<I, O>): void {
    if (done.outcomes) this.committed?.(done.outcomes);
    for (const s of done.items) {
      if (s.ok) s.p.resolve(s.value);
      else s.p.reject(s.err);
    }
  }

  /** Runs a group: what became of each item (nothing answered, nothing `committed` yet); never rejects. */
  private async flush(group: Pending<I, O>[]): Promise<Done<I, O>> {
    let outcomes: O[];
    try {
      outcomes = await this.runWithRetry(group.map((p) => p.item));
    } catch (err) {
      if (group.length > 1 && fromOneItem(sqlState(err))) {
        // One after the other, so a room's items still take their seqs in queue order; each one is
        // settled when done (the group before was settled when this one started).
        for (const p of group) this.settle(await this.flush([p]));
        return { items: [], outcomes: null };
      }
      return { items: group.map((p) => ({ p, ok: false, err })), outcomes: null };
    }
    return { items: group.map((p, i) => ({ p, ok: true, value: outcomes[i]! })), outcomes };
  }

  private async runWithRetry(items: I[]): Promise<O[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.run(items);
      } catch (err) {
        if (attempt >= this.opts.maxAttempts || !TRANSIENT.has(sqlState(err) ?? '')) throw err;
      }
    }
  }
}
