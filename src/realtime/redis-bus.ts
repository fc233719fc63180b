import { randomBytes } from 'node:crypto';
import type { Logger } from '../logger.js';
import { withTimeout } from '../util/async.js';
import { ChannelTable, type BusHandler, type EventBus } from './bus.js';
import { RedisLink } from './redis.js';

export interface RedisBusOptions {
  /** Prefix of every channel name, so deployments and test files can share one Redis. */
  prefix: string;
  onError?: (err: unknown) => void;
  /** How long a publish may wait for Redis before it is given up (the gap fill repairs it). */
  publishTimeoutMs?: number;
  /**
   * The bus's two connections (`busConnections`), as src/realtime/infrastructure.ts opens them;
   * or `url` to let the bus open them itself.
   */
  connections?: BusConnections;
  url?: string;
  log?: Logger;
}

/** The publisher and the dedicated subscriber connection of one node's bus, named by its node id. */
export interface BusConnections {
  nodeId: string;
  pub: RedisLink;
  sub: RedisLink;
}

/** Opens a bus's two connections (src/realtime/redis.ts sets their options). */
export function busConnections(url: string, opts: { log?: Logger; onError?: (err: unknown) => void } = {}): BusConnections {
  const nodeId = randomBytes(8).toString('hex');
  return {
    nodeId,
    pub: new RedisLink('bus-pub', url, { ...opts, nodeId }),
    sub: new RedisLink('bus-sub', url, { ...opts, nodeId }),
  };
}

/**
 * Redis pub/sub bus: one publisher and one dedicated subscriber connection per process, channels
 * reference-counted. Local handlers get a publish synchronously; the broker's echo of our own
 * publishes is skipped by node id, so every process sees each payload once.
 */
export class RedisBus implements EventBus {
  readonly kind = 'redis';
  readonly nodeId: string;
  readonly links: BusConnections;
  private readonly pub: RedisLink['client'];
  private readonly sub: RedisLink['client'];
  private readonly table = new ChannelTable();
  private readonly pending = new Map<string, Promise<void>>();
  private readonly reconnectListeners = new Set<() => void>();
  private readonly onError: (err: unknown) => void;
  private readonly publishTimeoutMs: number;
  /** The subscriber was ready once: its next `ready` is a reconnect. */
  private readyOnce: boolean;
  private closed = false;

  constructor(private readonly opts: RedisBusOptions) {
    this.onError = opts.onError ?? (() => undefined);
    this.publishTimeoutMs = opts.publishTimeoutMs ?? 2000;
    if (!opts.connections && !opts.url) throw new Error('RedisBus needs its connections or a url');
    this.links = opts.connections ?? busConnections(opts.url!, { log: opts.log, onError: this.onError });
    this.nodeId = this.links.nodeId;
    this.pub = this.links.pub.client;
    this.sub = this.links.sub.client;
    this.readyOnce = this.sub.status === 'ready';
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

  async listened(channels: readonly string[]): Promise<Set<string>> {
    if (this.closed || channels.length === 0) return new Set();
    try {
      const reply = (await withTimeout(
        this.pub.call('PUBSUB', 'NUMSUB', ...channels.map((c) => this.opts.prefix + c)),
        this.publishTimeoutMs,
        'redis pubsub numsub',
      )) as (string | number)[];
      const out = new Set<string>();
      for (let i = 0; i + 1 < reply.length; i += 2) if (Number(reply[i + 1]) > 0) out.add(channels[i / 2]!);
      return out;
    } catch (err) {
      this.onError(err);
      return new Set();
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

  /** True when both connections answer (the publisher and the subscriber). */
  async ping(timeoutMs = 1000): Promise<boolean> {
    const [pub, sub] = await Promise.all([this.links.pub.ping(timeoutMs), this.links.sub.ping(timeoutMs)]);
    return pub && sub;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([this.links.pub.close(), this.links.sub.close()]);
  }
}
