/**
 * A minimal single-consumer async queue: how a pushed stream is pulled as an async iterator
 * (services/streams.ts; `createCaller` and any tRPC adapter). One array and at most one pending
 * `next()`; the iteration ends, or fails with an error, once the buffered values are consumed.
 */
export class EventQueue<T> implements AsyncIterableIterator<T> {
  private buf: T[] = [];
  private head = 0;
  private waiter: { resolve: (r: IteratorResult<T>) => void; reject: (err: unknown) => void } | null = null;
  private ended = false;
  /** Set by `fail`: the error the iteration ends with (reported once). */
  private error: { value: unknown } | null = null;

  push(value: T): void {
    if (this.ended) return;
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w.resolve({ value, done: false });
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
      this.settleEnd(w.resolve, w.reject);
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
    return new Promise((resolve, reject) => {
      if (this.ended) this.settleEnd(resolve, reject);
      else this.waiter = { resolve, reject };
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

  /** The end of the iteration: the error once if it failed, then done. */
  private settleEnd(resolve: (r: IteratorResult<T>) => void, reject: (err: unknown) => void): void {
    const error = this.error;
    this.error = null;
    if (error) reject(error.value);
    else resolve({ value: undefined, done: true });
  }
}
