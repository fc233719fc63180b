/**
 * A minimal single-consumer async queue: the per-subscriber iterator of the fan-out path.
 * One array and at most one pending promise per subscriber (no event-emitter queues).
 */
export class EventQueue<T> implements AsyncIterableIterator<T> {
  private buf: T[] = [];
  private head = 0;
  private waiter: ((r: IteratorResult<T>) => void) | null = null;
  private ended = false;

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
      w({ value: undefined, done: true });
    }
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
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.buf = [];
    this.head = 0;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
