/**
 * A minimal single-consumer async queue: the per-subscriber iterator of the fan-out path.
 * One array and at most one pending promise per subscriber (no event-emitter queues).
 */
export class EventQueue<T> implements AsyncIterableIterator<T> {
  private buf: T[] = [];
  private head = 0;
  private waiter: ((r: IteratorResult<T>) => void) | null = null;
  private failWaiter: ((err: unknown) => void) | null = null;
  private ended = false;
  /** Set by `fail`: the error the iteration ends with once the buffered values are consumed. */
  private error: { value: unknown } | null = null;

  get size(): number {
    return this.buf.length - this.head;
  }

  get closed(): boolean {
    return this.ended;
  }

  push(value: T): void {
    if (this.ended) return;
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w({ value, done: false });
      return;
    }
    this.buf.push(value);
  }

  /** Ends the iteration once the buffered values are consumed. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      if (this.error) {
        const error = this.error.value;
        this.error = null;
        const fail = this.failWaiter!;
        this.failWaiter = null;
        fail(error);
      } else {
        w({ value: undefined, done: true });
      }
    }
  }

  /** Ends the iteration with an error (next() rejects once the buffered values are consumed). */
  fail(error: unknown): void {
    if (this.ended) return;
    this.error = { value: error };
    this.end();
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.buf.length) {
      const value = this.buf[this.head] as T;
      this.buf[this.head] = undefined as T;
      this.head++;
      if (this.head === this.buf.length) {
        this.buf = [];
        this.head = 0;
      } else if (this.head > 1024 && this.head * 2 > this.buf.length) {
        this.buf = this.buf.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) {
      if (this.error) {
        const error = this.error.value;
        this.error = null;
        return Promise.reject(error);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.buf = [];
    this.head = 0;
    this.error = null;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
