import { randomBytes } from 'node:crypto';
import { Redis, type RedisOptions } from 'ioredis';
import { withTimeout } from '../util/async.js';
import { ChannelTable, type BusHandler, type EventBus } from './bus.js';

export interface RedisBusOptions {
  url: string;
  /** Prefix of every channel name, so deployments and test files can share one Redis. */
  prefix: string;
  onError?: (err: unknown) => void;
  /** How long a publish may wait for Redis before it is given up (the gap fill repairs it). */
  publishTimeoutMs?: number;
}

/**
 * Redis pub/sub bus: one publisher and one dedicated subscriber connection per process, channels
 * reference-counted. Local handlers get a publish synchronously; the broker's echo of our own
 * publishes is skipped by node id, so every process sees each payload once.
 */
export class RedisBus implements EventBus {
  readonly kind = 'redis';
  readonly nodeId = randomBytes(8).toString('hex');
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly table = new ChannelTable();
  private readonly pending = new Map<string, Promise<void>>();
  private readonly reconnectListeners = new Set<() => void>();
  private readonly onError: (err: unknown) => void;
  private readonly publishTimeoutMs: number;
  private readyOnce = false;
  private closed = false;

  constructor(private readonly opts: RedisBusOptions) {
    this.onError = opts.onError ?? (() => undefined);
    this.publishTimeoutMs = opts.publishTimeoutMs ?? 2000;
    const common: RedisOptions = {
      lazyConnect: false,
      enableReadyCheck: true,
      retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
      reconnectOnError: () => true,
    };
    // Auto-pipelining: the publishes of one tick (a group commit publishes a whole group) leave in
    // one socket write; one connection, so their order is kept.
    this.pub = new Redis(opts.url, {
      ...common,
      maxRetriesPerRequest: 1,
      enableAutoPipelining: true,
      connectionName: `chat-pub-${this.nodeId}`,
    });
    this.sub = new Redis(opts.url, {
      ...common,
      maxRetriesPerRequest: null,
      autoResubscribe: true,
      connectionName: `chat-sub-${this.nodeId}`,
    });
    this.pub.on('error', (err) => this.onError(err));
    this.sub.on('error', (err) => this.onError(err));
    this.sub.on('message', (channel: string, message: string) => this.receive(channel, message));
    this.sub.on('ready', () => {
      if (!this.readyOnce) {
        this.readyOnce = true;
        return;
      }
      void this.resubscribeAndNotify();
    });
  }

  private async resubscribeAndNotify(): Promise<void> {
    const chans = this.table.channels().map((c) => this.opts.prefix + c);
    try {
      if (chans.length) await this.sub.subscribe(...chans);
    } catch (err) {
      this.onError(err);
    }
    for (const l of this.reconnectListeners) {
      try {
        l();
      } catch (err) {
        this.onError(err);
      }
    }
  }

  private receive(fullChannel: string, message: string): void {
    if (!fullChannel.startsWith(this.opts.prefix)) return;
    const nl = message.indexOf('\n');
    if (nl < 0) return;
    if (message.startsWith(this.nodeId) && nl === this.nodeId.length) return; // our own echo
    const channel = fullChannel.slice(this.opts.prefix.length);
    this.table.dispatch(channel, message.slice(nl + 1), this.onError);
  }

  async publish(channel: string, payload: string): Promise<void> {
    if (this.closed) return;
    this.table.dispatch(channel, payload, this.onError);
    try {
      await withTimeout(
        this.pub.publish(this.opts.prefix + channel, `${this.nodeId}\n${payload}`),
        this.publishTimeoutMs,
        'redis publish',
      );
    } catch (err) {
      this.onError(err);
    }
  }

  async subscribe(channel: string, handler: BusHandler): Promise<() => Promise<void>> {
    const first = this.table.add(channel, handler);
    if (first) {
      const p = this.sub.subscribe(this.opts.prefix + channel).then(() => undefined);
      this.pending.set(channel, p);
      try {
        await p;
      } catch (err) {
        this.table.remove(channel, handler);
        throw err;
      } finally {
        if (this.pending.get(channel) === p) this.pending.delete(channel);
      }
    } else {
      // Another handler's broker subscription may still be on its way: live only once it is.
      await this.pending.get(channel)?.catch(() => undefined);
    }
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      const last = this.table.remove(channel, handler);
      if (last && !this.closed) {
        await this.sub.unsubscribe(this.opts.prefix + channel).catch((err) => this.onError(err));
      }
    };
  }

  onReconnect(listener: () => void): () => void {
    this.reconnectListeners.add(listener);
    return () => this.reconnectListeners.delete(listener);
  }

  async ping(timeoutMs = 1000): Promise<boolean> {
    try {
      return (await withTimeout(this.pub.ping(), timeoutMs, 'redis ping')) === 'PONG';
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([this.pub.quit(), this.sub.quit()]);
    this.pub.disconnect();
    this.sub.disconnect();
  }
}
