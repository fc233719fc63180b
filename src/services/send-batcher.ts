/**
 * Group commit for sends. A group is written while the items that arrive meanwhile wait in a queue;
 * when it is done the next group takes everything queued (up to `maxBatch`, across rooms) and writes
 * it at once. An item that arrives when nothing is in flight goes at once: no timer ever waits for
 * company, so a lone send gets no added latency, and groups only form under load (the busier, the
 * larger).
 *
 * With `maxInflight` 2 (the store's pipelined send connection, src/store/hot/pipe.ts) a second group
 * may start while one is in flight, once as many items are queued as that group holds: it then
 * waits in the database's input, written right behind the first, instead of waiting for this
 * process to read the first one's answer (with one group at a time the database sat idle about a
 * third of the time under load, waiting for this process's turn: docs/BENCHMARKS.md, "twentieth
 * pass"). Fewer queued items wait for the group in flight to finish, so groups stay as large as the
 * load makes them. With 1 (the default; the pool, where two groups would run side by side), one
 * group is in flight at a time.
 *
 * Either way the groups of this process are written one after the other, in the order they
 * started: a room's messages take their seqs, and their events are published, in the order the
 * items were queued. (Two groups side by side on two connections, of disjoint rooms, were measured:
 * smaller groups, more CPU per send, no more throughput.) The exceptions are failures: a group run
 * again after a transient error, or split item by item after a data error, is written after a group
 * that was already behind it in the pipeline.
 *
 * When a group is done, the next one is started before anything else happens with the finished one:
 * the database writes group k+1 while this process publishes group k's events (`committed`) and
 * answers its callers. Groups are settled in the order they started, so `committed` sees them in
 * write order.
 */
export interface BatcherOptions {
  /** Most items in one group. */
  maxBatch: number;
  /** Attempts of a group that fails with a transient error (serialization, deadlock, clientId race). */
  maxAttempts: number;
  /** Groups in flight at most: 1, or 2 when the runner writes its groups one after the other on one pipelined connection. */
  maxInflight: number;
  /** Told of every group written (its size and the seconds from its start to its outcomes); not of a failed one. */
  onGroup?: ((items: number, seconds: number) => void) | undefined;
}

export const DEFAULT_BATCHER_OPTIONS: BatcherOptions = { maxBatch: 256, maxAttempts: 3, maxInflight: 1 };

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

/** A group in flight: its size, and what became of it once it is done (settled in start order). */
interface Slot<I, O> {
  size: number;
  done: Done<I, O> | null;
}

export class SendBatcher<I, O> {
  private queue: Pending<I, O>[] = [];
  /** The groups in flight, in the order they started. */
  private readonly inflight: Slot<I, O>[] = [];
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
      this.pump();
    });
  }

  /**
   * Starts groups while the queue has items and a group may start: at once when none is in flight;
   * behind the last one in flight (`maxInflight` > 1) once as many items are queued as it holds.
   */
  private pump(): void {
    while (this.queue.length > 0 && this.inflight.length < this.opts.maxInflight) {
      const last = this.inflight[this.inflight.length - 1];
      if (last !== undefined && this.queue.length < last.size) return;
      this.start(this.queue.splice(0, this.opts.maxBatch));
    }
  }

  private start(group: Pending<I, O>[]): void {
    const slot: Slot<I, O> = { size: group.length, done: null };
    this.inflight.push(slot);
    void this.flush(group).then((done) => {
      slot.done = done;
      this.finished();
    });
  }

  /** Settles the finished groups at the head of the line, in start order; the next group starts first. */
  private finished(): void {
    const ready: Done<I, O>[] = [];
    while (this.inflight[0]?.done) ready.push(this.inflight.shift()!.done!);
    if (ready.length === 0) return;
    this.pump();
    for (const done of ready) this.settle(done);
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
      const start = this.opts.onGroup ? performance.now() : 0;
      outcomes = await this.runWithRetry(group.map((p) => p.item));
      this.opts.onGroup?.(group.length, (performance.now() - start) / 1000);
    } catch (err) {
      if (group.length > 1 && fromOneItem(sqlState(err))) {
        // One after the other, so a room's items still take their seqs in queue order; each one is
        // settled when done (the groups before were settled by then: their answers came before this
        // group's failure, and each single waits for the database).
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
