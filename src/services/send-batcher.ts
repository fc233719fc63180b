/**
 * Group commit for sends. An item that arrives while the writes in flight are busy waits in a queue;
 * the next write takes everything queued (up to `maxBatch`, across rooms) and does it at once. An
 * item that arrives when a write slot is free is written at once: no timer ever waits for company,
 * so a lone send gets no added latency, and groups only form under load.
 *
 * With `exclusive` (the room of a message), writes in flight never share a key: a queued item whose
 * key is being written waits for the next write. So within this process a room's groups are written
 * (and their events published) one after the other, in the order the items were queued.
 */
export interface BatcherOptions<I> {
  /** Most sends written in one statement. */
  maxBatch: number;
  /** Most writes in flight at once (each holds one database connection). */
  maxInFlight: number;
  /** Attempts of a group that fails with a transient error (serialization, deadlock, clientId race). */
  maxAttempts: number;
  /** Items with the same key are never in two writes in flight at once. */
  exclusive?: (item: I) => string;
}

export const DEFAULT_BATCHER_OPTIONS: BatcherOptions<unknown> = { maxBatch: 256, maxInFlight: 2, maxAttempts: 3 };

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
 * A group that failed with one of these is written again as it is: serialization failure, deadlock
 * (the rooms are locked in a fixed order, so only a cross-node clientId race can cause one) and a
 * unique violation (a concurrent repeat of a clientId committed meanwhile; the next attempt sees it).
 */
const TRANSIENT = new Set(['40001', '40P01', '23505']);

/**
 * Data exceptions (class 22: a NUL character, say) and integrity violations (class 23) come from one
 * send's data: the group is split and each send written alone, so only that send fails. Anything
 * else (the connection, the server) fails every send of the group with that error.
 */
const fromOneSend = (code: string | undefined) => code !== undefined && (code.startsWith('22') || code.startsWith('23'));

export class SendBatcher<I, O> {
  private queue: Pending<I, O>[] = [];
  private inFlight = 0;
  /** Keys of the writes in flight. */
  private readonly busy = new Set<string>();
  private readonly opts: BatcherOptions<I>;

  constructor(
    /** Does a group at once (one statement); one outcome per item, in item order. */
    private readonly write: (items: I[]) => Promise<O[]>,
    opts: Partial<BatcherOptions<I>> = {},
  ) {
    this.opts = { ...DEFAULT_BATCHER_OPTIONS, ...opts };
  }

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.pump();
    });
  }

  /** Sends waiting for a write (for metrics and tests). */
  get queued(): number {
    return this.queue.length;
  }

  private pump(): void {
    while (this.inFlight < this.opts.maxInFlight && this.queue.length > 0) {
      const group = this.take();
      if (group.length === 0) return; // every queued send waits for a room in flight
      this.inFlight++;
      const keys = this.opts.exclusive ? group.map((p) => this.opts.exclusive!(p.item)) : [];
      for (const k of keys) this.busy.add(k);
      void this.flush(group).then(() => {
        for (const k of keys) this.busy.delete(k);
        this.inFlight--;
        this.pump();
      });
    }
  }

  /** The oldest queued items whose key is not in flight, in queue order (so in seq order per room). */
  private take(): Pending<I, O>[] {
    const { exclusive, maxBatch } = this.opts;
    if (!exclusive) return this.queue.splice(0, maxBatch);
    const group: Pending<I, O>[] = [];
    const rest: Pending<I, O>[] = [];
    for (const p of this.queue) {
      if (group.length < maxBatch && !this.busy.has(exclusive(p.item))) group.push(p);
      else rest.push(p);
    }
    this.queue = rest;
    return group;
  }

  /** Writes a group and settles each of its sends; never rejects. */
  private async flush(group: Pending<I, O>[]): Promise<void> {
    let outcomes: O[];
    try {
      outcomes = await this.writeWithRetry(group.map((p) => p.item));
    } catch (err) {
      if (group.length > 1 && fromOneSend(sqlState(err))) {
        // One after the other, so a room's sends still take their seqs in queue order.
        for (const p of group) await this.flush([p]);
      } else {
        for (const p of group) p.reject(err);
      }
      return;
    }
    group.forEach((p, i) => p.resolve(outcomes[i]!));
  }

  private async writeWithRetry(items: I[]): Promise<O[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.write(items);
      } catch (err) {
        if (attempt >= this.opts.maxAttempts || !TRANSIENT.has(sqlState(err) ?? '')) throw err;
      }
    }
  }
}
