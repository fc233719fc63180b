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

export class SendBatcher<I, O> {
  private queue: Pending<I, O>[] = [];
  private busy = false;
  private readonly opts: BatcherOptions;

  constructor(
    /** Does a group at once (one statement); one outcome per item, in item order. */
    private readonly run: (items: I[]) => Promise<O[]>,
    opts: Partial<BatcherOptions> = {},
  ) {
    this.opts = { ...DEFAULT_BATCHER_OPTIONS, ...opts };
  }

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.busy) void this.drain();
    });
  }

  /** Runs groups until the queue is empty. */
  private async drain(): Promise<void> {
    this.busy = true;
    while (this.queue.length > 0) await this.flush(this.queue.splice(0, this.opts.maxBatch));
    this.busy = false;
  }

  /** Runs a group and settles each of its items; never rejects. */
  private async flush(group: Pending<I, O>[]): Promise<void> {
    let outcomes: O[];
    try {
      outcomes = await this.runWithRetry(group.map((p) => p.item));
    } catch (err) {
      if (group.length > 1 && fromOneItem(sqlState(err))) {
        // One after the other, so a room's items still take their seqs in queue order.
        for (const p of group) await this.flush([p]);
      } else {
        for (const p of group) p.reject(err);
      }
      return;
    }
    for (let i = 0; i < group.length; i++) group[i]!.resolve(outcomes[i]!);
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
