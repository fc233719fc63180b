/**
 * The event bus carries serialized events between processes. It is fire-and-forget by design
 * (Redis pub/sub); the delivery guarantee comes from sequence numbers and gap fills from PostgreSQL,
 * which is why subscribers learn about reconnects (anything may have been missed while down).
 */
export type BusHandler = (payload: BusPayload) => void;

/**
 * A value published by this process: the handlers of this process take the value itself (no
 * decoding), the broker its text, encoded once and only when a broker publish needs it (a node alone
 * on its Redis never encodes it). Handlers must treat the value as read-only: it is shared.
 */
export class LocalValue<T = unknown> {
  private encoded: string | null = null;
  private readonly encode: () => string;
  constructor(
    readonly value: T,
    encode: (v: T) => string,
  ) {
    this.encode = () => encode(value);
  }

  get text(): string {
    this.encoded ??= this.encode();
    return this.encoded;
  }
}

/** What a handler receives: the text from the broker (another node's publish), or this process's `LocalValue`. */
export type BusPayload = string | LocalValue;

/** The text of a payload, however it came. */
export const textOf = (p: BusPayload): string => (typeof p === 'string' ? p : p.text);

export interface EventBus {
  /** 'redis' or 'memory'. */
  readonly kind: string;
  /**
   * True while no other node shares this bus (always for the memory bus): publishes stay in this
   * process, and per-node state (the rate limits) is exact. See src/realtime/redis-bus.ts.
   */
  readonly alone: boolean;
  /**
   * Publishes a payload to a channel. Local subscribers of this process receive it synchronously;
   * other processes receive it through the broker. Never throws: a lost publish is repaired by the
   * subscribers' gap fill.
   */
  publish(channel: string, payload: BusPayload): Promise<void>;
  /**
   * Subscribes a handler to a channel. Resolves once the subscription is live on the broker; rejects
   * when the broker refused it, for every handler that waited for it (none of them stays added).
   * Returns the function that removes this handler (the broker subscription is reference-counted).
   */
  subscribe(channel: string, handler: BusHandler): Promise<() => Promise<void>>;
  /**
   * Which of the channels some process subscribes to now (one broker round trip for all). Lets a
   * producer skip the work for channels nobody listens to; on a broker error, none.
   */
  listened(channels: readonly string[]): Promise<Set<string>>;
  /** Registers a listener called after the bus reconnected (messages may have been lost). */
  onReconnect(listener: () => void): () => void;
  /** True when the broker answers. */
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

/** Reference-counted handler sets per channel; shared by both implementations. */
export class ChannelTable {
  private readonly table = new Map<string, Set<BusHandler>>();

  /** Adds a handler; returns true when it is the channel's first one. */
  add(channel: string, handler: BusHandler): boolean {
    let set = this.table.get(channel);
    const first = !set;
    if (!set) {
      set = new Set();
      this.table.set(channel, set);
    }
    set.add(handler);
    return first;
  }

  /** Removes a handler; returns true when the channel has no handler left. */
  remove(channel: string, handler: BusHandler): boolean {
    const set = this.table.get(channel);
    if (!set) return false;
    set.delete(handler);
    if (set.size === 0) {
      this.table.delete(channel);
      return true;
    }
    return false;
  }

  has(channel: string): boolean {
    return this.table.has(channel);
  }

  channels(): string[] {
    return [...this.table.keys()];
  }

  dispatch(channel: string, payload: BusPayload, onError: (err: unknown) => void): void {
    const set = this.table.get(channel);
    if (!set) return;
    for (const h of set) {
      try {
        h(payload);
      } catch (err) {
        onError(err);
      }
    }
  }
}
