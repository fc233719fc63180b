import { randomBytes } from 'node:crypto';
import type { Cluster } from 'ioredis';
import type { Logger } from '../logger.js';
import { withTimeout } from '../util/async.js';
import { ChannelTable, textOf, type BusHandler, type BusPayload, type EventBus } from './bus.js';
import { RedisLink } from './redis.js';
import { keySlot } from './redis-slot.js';
import type { RedisTopology } from './redis-topology.js';

export interface RedisBusOptions {
  /** Prefix of every channel name, so deployments and test files can share one Redis. */
  prefix: string;
  onError?: (err: unknown) => void;
  /** How long a publish may wait for Redis before it is given up (the gap fill repairs it). */
  publishTimeoutMs?: number;
  /**
   * The bus's two connections (`busConnections`), as src/realtime/infrastructure.ts opens them;
   * or `url` (a Redis URL or topology) to let the bus open them itself.
   */
  connections?: BusConnections;
  url?: string | RedisTopology;
  log?: Logger;
  /**
   * A node alone on its Redis (no other bus on the same prefix) skips the broker for its publishes
   * (default true; `REDIS_SOLO=0` turns it off). One server and Sentinel only: a Cluster always publishes.
   */
  solo?: boolean;
  /** How long an announcement waits for the other nodes' acknowledgements (default 2000 ms). */
  announceTimeoutMs?: number;
  /** How often a node that is not alone asks Redis whether the others are gone (default 10 s). */
  soloCheckMs?: number;
}

/** The control channel's messages (`<nodeId>\n<verb>`): a node announces itself, is acknowledged, leaves. */
const HELLO = 'hello';
const BYE = 'bye';
const ACK = 'ack:';

/** A channel's broker subscription once Redis answered it (one settled promise for all). */
const LIVE = Promise.resolve();

/** Backoff of a resubscription Redis refused (an ACL that took a channel away): 200 ms doubling up to 30 s. */
const REFUSED_RETRY_MIN_MS = 200;
const REFUSED_RETRY_MAX_MS = 30_000;

/** The publisher and the dedicated subscriber connection of one node's bus, named by its node id. */
export interface BusConnections {
  nodeId: string;
  pub: RedisLink;
  sub: RedisLink;
}

/** Opens a bus's two connections (src/realtime/redis.ts sets their options). */
export function busConnections(url: string | RedisTopology, opts: { log?: Logger; onError?: (err: unknown) => void } = {}): BusConnections {
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
 *
 * On a Redis Cluster the bus uses sharded pub/sub (`SPUBLISH` / `SSUBSCRIBE`): a channel lives on
 * the shard that owns its slot, so a room's events touch one shard instead of every node of the
 * cluster. Its broker name is `<prefix>{<channel>}`: the hash tag makes the slot depend on the
 * room (or user) alone, so keys of the same room could join it in one slot. The subscriber is an
 * ioredis `Cluster` with `shardedSubscribers` (one connection per master); when the slot map
 * changes (resharding, failover) it resubscribes there, and the bus tells its listeners as after
 * a reconnect (they fill what the move may have lost from PostgreSQL).
 *
 * **Alone on Redis.** A node that is the only bus on its prefix would publish every event to Redis
 * only to read its own echo back and drop it. So the nodes announce themselves on a control channel
 * and a node that knows it is alone (`alone`) dispatches its publishes locally and skips the broker
 * (and answers `listened` from its own table). The rule that keeps this exact: a node's
 * subscriptions go live only after every other node has acknowledged its `hello`, and a node
 * acknowledges only after it stopped skipping. So whatever a node skipped was committed before the
 * newcomer's subscribers read their replay from PostgreSQL. `PUBLISH` answers how many subscribers
 * got the `hello`: the newcomer waits for that many acknowledgements less its own (bounded by
 * `announceTimeoutMs`; a silent subscriber keeps everyone publishing until a check finds it gone).
 * A node whose subscriber connection drops stops skipping at once and announces itself again after
 * the reconnect, before it tells its listeners to fill gaps. A node that leaves says `bye`; one that
 * crashed is noticed by the check every `soloCheckMs` (`PUBSUB NUMSUB` of the control channel
 * answers 1: only this node listens). The rate limits follow `alone` too (src/services/limits.ts).
 */
export class RedisBus implements EventBus {
  readonly kind = 'redis';
  readonly nodeId: string;
  readonly links: BusConnections;
  private readonly pub: RedisLink['client'];
  private readonly sub: RedisLink['client'];
  private readonly table = new ChannelTable();
  /**
   * The broker subscription of each channel with handlers: from its SUBSCRIBE until the last
   * handler leaves. A SUBSCRIBE that fails is dropped at once (before any waiting handler hears
   * of it), so nothing says subscribed that Redis did not subscribe: the next handler sends its own.
   */
  private readonly brokerSubs = new Map<string, Promise<void>>();
  /** Channels whose resubscription Redis refused after a reconnect, retried with backoff. */
  private readonly refused = new Set<string>();
  private refusedTimer: NodeJS.Timeout | null = null;
  private refusedRetryMs = REFUSED_RETRY_MIN_MS;
  private readonly reconnectListeners = new Set<() => void>();
  private readonly onError: (err: unknown) => void;
  private readonly publishTimeoutMs: number;
  /** The subscriber was ready once: its next `ready` is a reconnect. */
  private readyOnce: boolean;
  private closed = false;
  /** Sharded pub/sub (Redis Cluster). */
  readonly sharded: boolean;
  /** The sharded subscribers were set up once: the next set-up follows a change of the slot map. */
  private shardsReadyOnce = false;
  /** The control channel of the node announcements (checked for every message received). */
  private readonly controlName: string;
  /** Node announcements are on (see the class comment); false on a Cluster or with `solo: false`. */
  private readonly soloEnabled: boolean;
  private soloNow = false;
  /** Other nodes known by their hello, acknowledgement or bye. */
  private readonly peers = new Set<string>();
  /** Some subscriber of the control channel did not acknowledge: it may be a node. */
  private unknownPeers = false;
  /** The subscriber connection is up and this node's last announcement finished. */
  private announcedLive = false;
  /** Counts announcements and subscriber drops: an announcement outlived by either decides nothing. */
  private announceGen = 0;
  /** Counts the hellos heard: an answer to a check that was asked before the latest hello is stale. */
  private hellosHeard = 0;
  /** The acknowledgements the running announcement waits for. */
  private acks: { got: Set<string>; want: number; done: () => void } | null = null;
  /** The first announcement: subscriptions go live after it. */
  private readonly announced: Promise<void>;
  private checkTimer: NodeJS.Timeout | null = null;
  private readonly aloneListeners = new Set<(alone: boolean) => void>();

  constructor(private readonly opts: RedisBusOptions) {
    this.onError = opts.onError ?? (() => undefined);
    this.publishTimeoutMs = opts.publishTimeoutMs ?? 2000;
    if (!opts.connections && !opts.url) throw new Error('RedisBus needs its connections or a url');
    this.links = opts.connections ?? busConnections(opts.url!, { log: opts.log, onError: this.onError });
    this.nodeId = this.links.nodeId;
    this.pub = this.links.pub.client;
    this.sub = this.links.sub.client;
    this.sharded = this.links.sub.cluster;
    this.readyOnce = this.sub.status === 'ready';
    this.sub.on(this.sharded ? 'smessage' : 'message', (channel: string, message: string) => this.receive(channel, message));
    this.controlName = `${opts.prefix}@nodes`;
    this.soloEnabled = (opts.solo ?? true) && !this.sharded;
    this.sub.on('ready', () => {
      if (!this.readyOnce) {
        this.readyOnce = true;
        return;
      }
      void this.resubscribeAndNotify();
    });
    if (this.soloEnabled) {
      // Whatever the others published meanwhile, and whoever joined, is unknown: publish again.
      this.sub.on('close', () => {
        this.announceGen++;
        this.announcedLive = false;
        this.reconsider();
      });
    }
    this.announced = this.soloEnabled ? this.announce() : Promise.resolve();
    if (this.sharded) {
      // ioredis resubscribes the sharded channels itself after it rebuilt its subscribers for a
      // new slot map (a moved slot, a promoted replica); what was published meanwhile may be lost.
      this.sub.on('subscribersReady', () => {
        if (!this.shardsReadyOnce) {
          this.shardsReadyOnce = true;
          return;
        }
        this.notifyReconnect();
      });
    }
  }

  /** The channel's name on the broker. */
  private brokerName(channel: string): string {
    return this.sharded ? `${this.opts.prefix}{${channel}}` : this.opts.prefix + channel;
  }

  private async resubscribeAndNotify(): Promise<void> {
    // Sharded: ioredis' subscriber group resubscribes every channel itself.
    if (!this.sharded) {
      this.refused.clear();
      await this.subscribeAgain(this.table.channels());
    }
    // Known to every node again before the listeners read what they missed (see the class comment).
    if (this.soloEnabled) await this.announce();
    this.notifyReconnect();
  }

  /**
   * Subscribes channels that have handlers again (after a reconnect), in one SUBSCRIBE. Redis
   * refuses a whole SUBSCRIBE for one channel it refuses (an ACL), so then one per channel: the
   * others are back at once, and the refused ones are retried with backoff (the next subscribe of
   * one of them sends its own SUBSCRIBE and is told if refused). Returns how many came back.
   */
  private async subscribeAgain(channels: string[]): Promise<number> {
    if (channels.length === 0) return 0;
    try {
      await this.sub.subscribe(...channels.map((c) => this.brokerName(c)));
      for (const c of channels) this.subscribedAgain(c);
      return channels.length;
    } catch (err) {
      this.onError(err);
    }
    let back = 0;
    await Promise.all(
      channels.map(async (c) => {
        try {
          await this.sub.subscribe(this.brokerName(c));
          this.subscribedAgain(c);
          back++;
        } catch {
          if (!this.table.has(c)) return;
          this.refused.add(c);
          this.brokerSubs.delete(c);
        }
      }),
    );
    this.retryRefused();
    return back;
  }

  /** A channel subscribed again whose last subscription was refused: live for the next handler too. */
  private subscribedAgain(channel: string): void {
    if (this.table.has(channel) && !this.brokerSubs.has(channel)) this.brokerSubs.set(channel, LIVE);
  }

  private retryRefused(): void {
    if (this.refusedTimer || this.closed || this.refused.size === 0) return;
    this.refusedTimer = setTimeout(() => {
      this.refusedTimer = null;
      // Down again: the resubscription after the next reconnect covers them.
      if (this.closed || this.sub.status !== 'ready') return;
      const channels = [...this.refused].filter((c) => this.table.has(c));
      this.refused.clear();
      void this.subscribeAgain(channels).then((back) => {
        if (this.refused.size === 0) this.refusedRetryMs = REFUSED_RETRY_MIN_MS;
        // Their handlers missed what was published meanwhile: the listeners fill it as after a reconnect.
        if (back > 0) this.notifyReconnect();
      });
    }, this.refusedRetryMs);
    this.refusedTimer.unref();
    this.refusedRetryMs = Math.min(this.refusedRetryMs * 2, REFUSED_RETRY_MAX_MS);
  }

  /** True while this node knows it is the only bus on its Redis prefix: publishes skip the broker. */
  get alone(): boolean {
    return this.soloNow;
  }

  /** Tells `fn` each time `alone` changes; returns the function that stops it. */
  onAloneChange(fn: (alone: boolean) => void): () => void {
    this.aloneListeners.add(fn);
    return () => this.aloneListeners.delete(fn);
  }

  /** The other nodes this node knows of (by their hello or acknowledgement). */
  get peerCount(): number {
    return this.peers.size;
  }


  private reconsider(): void {
    const alone = this.soloEnabled && !this.closed && this.announcedLive && !this.unknownPeers && this.peers.size === 0 && this.sub.status === 'ready';
    if (alone === this.soloNow) return;
    this.soloNow = alone;
    if (!alone) this.scheduleCheck();
    for (const fn of this.aloneListeners) {
      try {
        fn(alone);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  /**
   * Says `hello` on the control channel and waits until every other subscriber of it acknowledged
   * (they have stopped skipping the broker by then). Never throws: on an error the node publishes.
   */
  private async announce(): Promise<void> {
    const gen = ++this.announceGen;
    this.announcedLive = false;
    this.unknownPeers = false;
    this.reconsider();
    const wait: { got: Set<string>; want: number; done: () => void } = { got: new Set(), want: Number.POSITIVE_INFINITY, done: () => undefined };
    const acked = new Promise<void>((resolve) => {
      wait.done = resolve;
    });
    try {
      await this.sub.subscribe(this.controlName);
      // Set before the hello: an acknowledgement may come before PUBLISH answers.
      this.acks = wait;
      const receivers = Number(
        await withTimeout(this.pub.publish(this.controlName, `${this.nodeId}\n${HELLO}`), this.publishTimeoutMs, 'redis publish (hello)'),
      );
      // Our own subscriber is one of them; zero means ours was not subscribed: someone may be missed.
      wait.want = receivers - 1;
      if (receivers < 1) this.unknownPeers = true;
      if (wait.got.size < wait.want) {
        try {
          await withTimeout(acked, this.opts.announceTimeoutMs ?? 2000, 'node announcement');
        } catch (err) {
          this.unknownPeers = true;
          this.onError(err);
        }
      }
    } catch (err) {
      this.unknownPeers = true;
      this.onError(err);
    } finally {
      // A later announcement (after a reconnect) may have its own wait by now.
      if (this.acks === wait) this.acks = null;
    }
    // Closed, or the subscriber dropped meanwhile (the announcement after its reconnect decides).
    if (this.closed || gen !== this.announceGen) return;
    this.announcedLive = this.sub.status === 'ready';
    this.reconsider();
    if (!this.soloNow) this.scheduleCheck();
  }

  private control(from: string, verb: string): void {
    if (verb === HELLO) {
      this.hellosHeard++;
      this.peers.add(from);
      // Skipping stops before the newcomer hears the acknowledgement.
      this.reconsider();
      this.pub.publish(this.controlName, `${this.nodeId}\n${ACK}${from}`).catch((err) => this.onError(err));
    } else if (verb === BYE) {
      this.peers.delete(from);
      this.reconsider();
    } else if (verb.startsWith(ACK)) {
      // Whoever acknowledges anyone is a node (more peers only ever means publishing).
      this.peers.add(from);
      this.reconsider();
      const wait = this.acks;
      if (wait && verb === ACK + this.nodeId) {
        wait.got.add(from);
        if (wait.got.size >= wait.want) wait.done();
      }
    }
  }

  /**
   * While not alone, asks Redis now and then whether this node is the control channel's only
   * subscriber (the others left without a bye: crashed, killed). A hello heard since the question
   * makes the answer stale.
   */
  private scheduleCheck(): void {
    if (!this.soloEnabled || this.closed || this.checkTimer) return;
    this.checkTimer = setTimeout(() => {
      this.checkTimer = null;
      void this.checkAlone();
    }, this.opts.soloCheckMs ?? 10_000);
    this.checkTimer.unref();
  }

  private async checkAlone(): Promise<void> {
    if (this.closed || this.soloNow) return;
    const heard = this.hellosHeard;
    try {
      if (this.announcedLive) {
        const reply = (await withTimeout(this.pub.call('PUBSUB', 'NUMSUB', this.controlName), this.publishTimeoutMs, 'redis pubsub numsub')) as (string | number)[];
        if (Number(reply[1]) === 1 && heard === this.hellosHeard && this.announcedLive) {
          this.peers.clear();
          this.unknownPeers = false;
          this.reconsider();
        }
      }
    } catch (err) {
      this.onError(err);
    }
    if (!this.soloNow) this.scheduleCheck();
  }

  private notifyReconnect(): void {
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
    if (this.soloEnabled && fullChannel === this.controlName) {
      this.control(message.slice(0, nl), message.slice(nl + 1));
      return;
    }
    let channel = fullChannel.slice(this.opts.prefix.length);
    if (this.sharded) {
      if (!channel.startsWith('{') || !channel.endsWith('}')) return;
      channel = channel.slice(1, -1);
    }
    this.table.dispatch(channel, message.slice(nl + 1), this.onError);
  }

  async publish(channel: string, payload: BusPayload): Promise<void> {
    if (this.closed) return;
    this.table.dispatch(channel, payload, this.onError);
    // Alone on Redis: nobody else would read it (see the class comment).
    if (this.soloNow) return;
    try {
      const name = this.brokerName(channel);
      const message = `${this.nodeId}\n${textOf(payload)}`;
      await withTimeout(this.sharded ? this.pub.spublish(name, message) : this.pub.publish(name, message), this.publishTimeoutMs, 'redis publish');
    } catch (err) {
      this.onError(err);
    }
  }

  async listened(channels: readonly string[]): Promise<Set<string>> {
    if (this.closed || channels.length === 0) return new Set();
    if (this.soloNow) return new Set(channels.filter((c) => this.table.has(c)));
    if (this.sharded) return this.listenedSharded(channels);
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

  /**
   * Cluster: `PUBSUB SHARDNUMSUB` asked of the master that owns each channel's slot (the command is
   * answered by the node it reaches, for its own shard). Whatever cannot be asked (no slot map
   * yet, a node failing) counts as listened: over-reporting only costs a publish nobody reads,
   * under-reporting would lose events.
   */
  private async listenedSharded(channels: readonly string[]): Promise<Set<string>> {
    const out = new Set<string>();
    const cluster = this.pub as Cluster;
    // A bus just made has no slot map until its cluster client is ready: wait for it (bounded)
    // rather than count every channel as listened.
    if (cluster.status !== 'ready') {
      let onReady = (): void => undefined;
      const ready = new Promise<void>((resolve) => {
        onReady = resolve;
        cluster.once('ready', onReady);
      });
      try {
        await withTimeout(ready, this.publishTimeoutMs, 'redis cluster ready');
      } catch (err) {
        this.onError(err);
      } finally {
        // Not left behind when the wait timed out (listened() runs often; the cluster may stay down).
        cluster.off('ready', onReady);
      }
    }
    const byNode = new Map<string, string[]>();
    for (const c of channels) {
      const owner = cluster.slots[keySlot(this.brokerName(c))]?.[0];
      if (!owner) {
        out.add(c);
        continue;
      }
      const list = byNode.get(owner) ?? [];
      list.push(c);
      byNode.set(owner, list);
    }
    const masters = new Map(cluster.nodes('master').map((n) => [`${n.options.host}:${n.options.port}`, n]));
    await Promise.all(
      [...byNode].map(async ([owner, list]) => {
        const node = masters.get(owner);
        try {
          if (!node) throw new Error(`no connection to the owner ${owner}`);
          const reply = (await withTimeout(
            node.call('PUBSUB', 'SHARDNUMSUB', ...list.map((c) => this.brokerName(c))),
            this.publishTimeoutMs,
            'redis pubsub shardnumsub',
          )) as (string | number)[];
          for (let i = 0; i + 1 < reply.length; i += 2) if (Number(reply[i + 1]) > 0) out.add(list[i / 2]!);
        } catch (err) {
          this.onError(err);
          for (const c of list) out.add(c);
        }
      }),
    );
    return out;
  }

  async subscribe(channel: string, handler: BusHandler): Promise<() => Promise<void>> {
    // Live only once every other node knows this one (they stopped skipping the broker).
    await this.announced;
    this.table.add(channel, handler);
    // The channel's broker subscription, or a new one: its first handler's, or after a failed one.
    let live = this.brokerSubs.get(channel);
    if (!live) {
      const name = this.brokerName(channel);
      const p = (this.sharded ? this.sub.ssubscribe(name) : this.sub.subscribe(name)).then(() => undefined);
      // First reaction: a failure is forgotten before any waiting handler hears of it.
      p.then(
        () => {
          if (this.brokerSubs.get(channel) === p) this.brokerSubs.set(channel, LIVE);
        },
        () => {
          if (this.brokerSubs.get(channel) === p) this.brokerSubs.delete(channel);
        },
      );
      this.brokerSubs.set(channel, p);
      live = p;
    }
    try {
      // Every handler waits for it, and every one is told when it fails.
      await live;
    } catch (err) {
      this.table.remove(channel, handler);
      throw err;
    }
    let done = false;
    return async () => {
      if (done) return;
      done = true;
      const last = this.table.remove(channel, handler);
      if (last) {
        // A handler joining from now on sends its own SUBSCRIBE (after this UNSUBSCRIBE, on the same connection).
        this.brokerSubs.delete(channel);
        this.refused.delete(channel);
        if (this.closed) return;
        const name = this.brokerName(channel);
        await (this.sharded ? this.sub.sunsubscribe(name) : this.sub.unsubscribe(name)).catch((err) => this.onError(err));
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
    this.reconsider();
    if (this.checkTimer) clearTimeout(this.checkTimer);
    if (this.refusedTimer) clearTimeout(this.refusedTimer);
    if (this.soloEnabled && this.pub.status === 'ready') {
      // The others may be alone again (a crashed node is found by their check instead).
      await withTimeout(this.pub.publish(this.controlName, `${this.nodeId}\n${BYE}`), 500, 'redis publish (bye)').catch(() => undefined);
    }
    await Promise.all([this.links.pub.close(), this.links.sub.close()]);
  }
}
