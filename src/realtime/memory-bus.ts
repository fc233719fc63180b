import { ChannelTable, type BusHandler, type BusPayload, type EventBus } from './bus.js';

/** In-process bus: the default when REDIS_URL is unset (a single process only). */
export class MemoryBus implements EventBus {
  readonly kind = 'memory';
  /** One process is all there is. */
  readonly alone = true;
  private readonly table = new ChannelTable();
  private closed = false;

  constructor(private readonly onError: (err: unknown) => void = () => undefined) {}

  async publish(channel: string, payload: BusPayload): Promise<void> {
    if (this.closed) return;
    this.table.dispatch(channel, payload, this.onError);
  }

  async subscribe(channel: string, handler: BusHandler): Promise<() => Promise<void>> {
    this.table.add(channel, handler);
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      this.table.remove(channel, handler);
    };
  }

  async listened(channels: readonly string[]): Promise<Set<string>> {
    return new Set(channels.filter((c) => this.table.has(c)));
  }

  onReconnect(): () => void {
    return () => undefined;
  }

  async ping(): Promise<boolean> {
    return !this.closed;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
