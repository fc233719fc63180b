import { EventQueue } from './queue.js';
import type { RoomEvent } from '../domain/events.js';
import { encodeEvent, type SharedEncoding } from './encoding.js';
import { PUSH, type Pushable, type PushSink } from '../transport/push.js';
import type { HubSubscriber } from './hub.js';
import type { StreamHubs } from './hubs.js';
import type { EventSource, StreamEvent } from './types.js';
import { badRequest } from '../domain/errors.js';

/** Page size of a resume replay: a client far behind never pulls its whole backlog into memory. */
export const REPLAY_PAGE = 200;

/**
 * Back-pressure of the connection a stream writes to. Over `soft` bytes queued, live-only events
 * are coalesced (the latest per type and user is kept); over `hard`, `overflow()` closes the
 * connection and the client resumes from its last event id (durable events are never dropped).
 *
 * A replay (a resume) goes at the socket's pace, and the live events that come meanwhile wait for
 * its end. Both are bounded: over `replayQueueEvents` such events, or over `replayQueueBytes` of
 * their encoding, and when the queue has stayed over `soft` for `replayDrainMs` before a page, the
 * stream overflows as above (it drops nothing: the client resumes where it got to).
 */
export interface Flow {
  buffered(): number;
  soft: number;
  hard: number;
  /** Live events a replaying stream keeps for after the replay, at most (WS_REPLAY_QUEUE_EVENTS). */
  replayQueueEvents: number;
  /** Bytes of the encoding of those events, at most (WS_REPLAY_QUEUE_BYTES). */
  replayQueueBytes: number;
  /** How long a replay waits, before a page, for the queue to fall to `soft` (WS_REPLAY_DRAIN_MS). */
  replayDrainMs: number;
  overflow(): void;
}

/** Per-connection bookkeeping of a stream: its flow and the release of its subscription slot. */
export interface StreamConn {
  flow?: Flow | undefined;
  release?: (() => void) | undefined;
}

/** Wraps an event with its id (the transport's tracked envelope); keeps services transport-free. */
export type Wrap<T, E = RoomEvent> = (id: string, event: E) => T;

export function parseLastEventId(lastEventId: string | null | undefined): number | null {
  if (lastEventId === null || lastEventId === undefined) return null;
  if (!/^\d{1,15}$/.test(lastEventId)) throw badRequest('lastEventId must be a sequence number (a string of digits)');
  return Number(lastEventId);
}

// The push protocol is the WebSocket transport's (src/transport/push.ts, which imports nothing):
// a stream pushes its values into the transport's sink, with the fan-out's `SharedEncoding`.
export { isPushable, PUSH, type Pushable, type PushSink } from '../transport/push.js';

/** `E`: the events of the hub; `R`: the `ready` event a fresh stream starts with. */
export interface StreamOptions<E extends StreamEvent, T, R extends StreamEvent = E> {
  hubs: StreamHubs<E>;
  source: EventSource<E & { seq: number }>;
  key: string;
  userId: string;
  after: number | null;
  signal: AbortSignal | undefined;
  ready: (seq: number) => R;
  /** The first event of a resume that cannot continue exactly: the client reloads, then goes on from `seq`. */
  reset: (seq: number) => R;
  wrap: (id: string, event: E | R) => T;
  conn?: StreamConn | undefined;
  /**
   * Runs once the stream is attached to its hub, before anything is sent; a throw ends the stream
   * with that error. The room streams check access again here: a ban that committed between the
   * first check and the attach is seen, one that commits after it reaches the hub as `member.left`.
   */
  attached?: (() => Promise<unknown>) | undefined;
}

/**
 * A resumable stream with the delivery guarantee: listen first (attach to the hub), replay what the
 * client missed from PostgreSQL up to the hub's position, then go live; duplicates are dropped by
 * seq. Without `after` the stream starts with `ready(position)`. Consumed once, either way.
 */
export function resumableStream<E extends StreamEvent, T, R extends StreamEvent = E>(opts: StreamOptions<E, T, R>): Pushable<T> {
  return new ResumableStream(opts);
}

/**
 * Idle subscriptions are most of a server's memory: a stream is two objects with their methods on
 * prototypes (no closures per subscription), and it keeps of its options only what it needs once live.
 */
class ResumableStream<E extends StreamEvent, T, R extends StreamEvent> implements Pushable<T> {
  private opts: StreamOptions<E, T, R> | null;
  constructor(opts: StreamOptions<E, T, R>) {
    this.opts = opts;
  }

  private claim(): StreamOptions<E, T, R> {
    const opts = this.opts;
    if (!opts) throw new Error('a stream is consumed once');
    this.opts = null;
    return opts;
  }

  [PUSH](sink: PushSink<T>): void {
    new Stream(this.claim(), sink).start();
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    const opts = this.claim();
    const queue = new EventQueue<T>();
    const stream = new Stream(opts, new QueueSink(queue));
    stream.start();
    return {
      next: () => queue.next(),
      return: () => {
        stream.finish();
        return queue.return();
      },
    };
  }
}

/** A pulled stream's sink: its values wait in a queue for `next()`. */
class QueueSink<T> implements PushSink<T> {
  constructor(private readonly queue: EventQueue<T>) {}
  data(value: T): void {
    this.queue.push(value);
  }
  end(error?: unknown): void {
    if (error === undefined) this.queue.end();
    else this.queue.fail(error);
  }
}

/**
 * The stream itself, and its hub subscriber. Live events are handled in the hub's fan-out loop
 * (synchronously): dropped when already delivered, coalesced when the connection is congested,
 * written otherwise. `finish` ends it.
 */
class Stream<E extends StreamEvent, T, R extends StreamEvent> implements HubSubscriber<E> {
  readonly userId: string;
  private readonly hubs: StreamHubs<E>;
  private readonly key: string;
  private readonly wrap: (id: string, event: E | R) => T;
  private readonly flow: Flow | undefined;
  private readonly conn: StreamConn | undefined;
  private readonly signal: AbortSignal | undefined;
  /** Until the stream goes live (see `start`); dropped then. */
  private opts: StreamOptions<E, T, R> | null;
  private last = 0;
  /**
   * Live: events go out as they come. Before that (attach, replay) they wait in `early`, with the
   * bytes of their encoding when the stream has a flow (which bounds both; see `Flow`).
   */
  private live = false;
  private early: { events: E[]; bytes: number } | null = null;
  /** The hub ended this subscriber (a kick, a shutdown): stop after what is queued. */
  private closing = false;
  private ended = false;
  private attached = false;
  private coalesced: Map<string, E> | null = null;
  private drainTimer: NodeJS.Timeout | null = null;

  constructor(
    opts: StreamOptions<E, T, R>,
    private readonly sink: PushSink<T>,
  ) {
    this.userId = opts.userId;
    this.hubs = opts.hubs;
    this.key = opts.key;
    this.wrap = opts.wrap;
    this.flow = opts.conn?.flow;
    this.conn = opts.conn;
    this.signal = opts.signal;
    this.opts = opts;
  }

  /** The abort listener (an object with `handleEvent`: no closure). */
  handleEvent(): void {
    this.finish();
  }

  finish(error?: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.signal?.removeEventListener('abort', this);
    if (this.drainTimer) clearTimeout(this.drainTimer);
    if (this.attached) this.hubs.detach(this.key, this);
    this.conn?.release?.();
    this.sink.end(error);
  }

  push(e: E, shared: SharedEncoding<E> | undefined): void {
    if (this.ended) return;
    if (!this.live) {
      this.early ??= { events: [], bytes: 0 };
      const early = this.early;
      early.events.push(e);
      const flow = this.flow;
      if (!flow) return;
      try {
        early.bytes += encodedSize(e);
      } catch (err) {
        this.finish(err);
        return;
      }
      if (early.events.length > flow.replayQueueEvents || early.bytes > flow.replayQueueBytes) {
        // A replay that cannot keep up with the room (its socket is slow or not read): the client
        // resumes from what it got, and the events kept here are replayed from PostgreSQL then.
        this.hubs.stats.replayQueueOverflows++;
        flow.overflow();
        this.finish();
      }
      return;
    }
    try {
      this.deliver(e, shared);
    } catch (err) {
      // Never into the hub's fan-out loop: the other subscribers must still get the event.
      this.finish(err);
    }
  }

  end(): void {
    if (this.live) this.finish();
    else this.closing = true;
  }

  private flushCoalesced(): void {
    const coalesced = this.coalesced!;
    for (const c of coalesced.values()) this.sink.data(this.wrap(String(this.last), c));
    coalesced.clear();
  }

  /**
   * Coalesced events wait for the socket to drain, not for the room's next event: in a quiet room
   * the latest typing/presence state would otherwise never be delivered.
   */
  checkDrained(): void {
    this.drainTimer = null;
    if (this.ended || !this.coalesced?.size) return;
    if (this.flow!.buffered() <= this.flow!.soft) this.flushCoalesced();
    else this.drainTimer = setTimeout(checkDrained, DRAIN_CHECK_MS, this);
  }

  private deliver(e: E, shared: SharedEncoding<E> | undefined): void {
    const durable = this.hubs.kind.isDurable(e);
    if (durable && e.seq <= this.last) return;
    const flow = this.flow;
    if (flow) {
      const queued = flow.buffered();
      if (queued > flow.hard) {
        flow.overflow();
        this.finish();
        return;
      }
      if (queued > flow.soft) {
        const k = durable ? null : this.hubs.kind.coalesceKey(e);
        if (k !== null) {
          this.coalesced ??= new Map();
          // Moved to the end: the flush follows the order of each key's latest event (a room's
          // newer `room.activity` must not go out ahead of an `unread.changed` that came after the
          // older one; a Map keeps a replaced key at its first place).
          this.coalesced.delete(k);
          this.coalesced.set(k, e);
          this.drainTimer ??= setTimeout(checkDrained, DRAIN_CHECK_MS, this);
          return;
        }
      } else if (this.coalesced?.size) {
        this.flushCoalesced();
      }
    }
    if (durable) this.last = e.seq;
    this.sink.data(this.wrap(String(this.last), e), shared);
  }

  start(): void {
    this.signal?.addEventListener('abort', this, { once: true });
    this.run().catch((err: unknown) => this.finish(err));
  }

  /** Attach, replay or `ready`, then live. */
  private async run(): Promise<void> {
    const opts = this.opts!;
    this.opts = null;
    const { hubs, key, sink, wrap, flow } = this;
    if (this.signal?.aborted) return this.finish();
    const position = await hubs.attach(key, this);
    this.attached = true;
    if (this.ended) return hubs.detach(key, this);
    if (opts.attached) await opts.attached();
    if (this.ended) return;
    if (opts.after === null) {
      this.last = position;
      sink.data(wrap(String(position), opts.ready(position)));
    } else if (opts.after > position) {
      // This node's hub can be behind what is committed (a publish not here yet, a gap being
      // filled, a writer that died between COMMIT and PUBLISH): a client that already has more
      // goes on from where it is, and what the hub delivers up to there is dropped by seq. Only a
      // position the stream never had (another room's id, a restored backup) is a reset.
      const committed = await opts.source.lastSeq(key);
      if (this.ended) return;
      if (opts.after > committed) {
        this.last = position;
        sink.data(wrap(String(position), opts.reset(position)));
      } else {
        this.last = opts.after;
      }
    } else {
      this.last = opts.after;
      while (this.last < position && !this.ended && !this.closing) {
        // A replay goes at the socket's pace: the next page waits until the queue is below the
        // soft limit (a client far behind on a slow link never piles its backlog into memory),
        // for `replayDrainMs` at most.
        if (flow && !(await this.drained(flow))) return this.finish();
        if (this.ended) return;
        if (this.closing) break;
        const page = await opts.source.load(key, this.last, position, REPLAY_PAGE);
        if (this.ended) return;
        // Ended by the hub meanwhile (the user removed, the room deleted: an empty page of a deleted
        // room would read as retention's and reset): nothing more of the replay.
        if (this.closing) break;
        // The log is gapless but for retention, which removes each log's oldest events only: a page
        // whose first event is after last + 1 may mean the next ones were removed (before the
        // replay, or by a retention run between two of its pages). Then the replay would be
        // partial: reset instead.
        if ((page[0]?.seq ?? position + 1) > this.last + 1) {
          const oldest = await opts.source.oldestSeq(key);
          if (this.ended) return;
          if (oldest === null || oldest > this.last + 1) {
            this.last = position;
            sink.data(wrap(String(position), opts.reset(position)));
            break;
          }
        }
        if (page.length === 0) break;
        for (const e of page) {
          if (this.ended) return;
          if (e.seq <= this.last) continue;
          this.last = e.seq;
          sink.data(wrap(String(e.seq), e));
          if (flow && flow.buffered() > flow.hard) {
            flow.overflow();
            return this.finish();
          }
          // Replayed as live: the user's own removal ends the stream (a later re-join is read by
          // resuming after it, with a fresh access check).
          if (hubs.kind.kickUserOf(e) === this.userId) return this.finish();
        }
      }
    }
    if (this.ended) return;
    // Ended while replaying (the user removed, the hub closed): the events kept for after the
    // replay would skip what the replay did not reach. The client resumes from its last id. An
    // event that ends every stream of the key (`room.deleted`) is live-only and says nothing
    // follows: it still goes out, last, so a replaying stream ends as a live one does.
    if (this.closing && this.last < position) {
      const final = this.early?.events.find((e) => hubs.kind.endsStream?.(e));
      if (final) sink.data(wrap(String(this.last), final));
      return this.finish();
    }
    this.live = true;
    const queued = this.early;
    this.early = null;
    if (queued) {
      for (const e of queued.events) {
        this.deliver(e, undefined);
        if (this.ended) return;
      }
    }
    if (this.closing) this.finish();
  }

  /**
   * Resolves true once the socket's queue is at or below the soft limit; false when the stream
   * ended meanwhile, or when it overflows: the queue went over the hard limit, or stayed over the
   * soft one for `replayDrainMs` (a client that stopped reading would otherwise hold the replay,
   * and the live events kept for after it, for as long as it keeps its socket open).
   */
  private async drained(flow: Flow): Promise<boolean> {
    const deadline = Date.now() + flow.replayDrainMs;
    while (flow.buffered() > flow.soft) {
      const late = Date.now() >= deadline;
      if (late || flow.buffered() > flow.hard) {
        if (late) this.hubs.stats.replayDrainTimeouts++;
        flow.overflow();
        return false;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(DRAIN_CHECK_MS, Math.max(1, deadline - Date.now()))));
      if (this.ended) return false;
    }
    return true;
  }
}

/**
 * The bytes of an event's encoding, computed once per event: a hub hands the same object to every
 * local subscriber, so streams replaying in the same room share the figure.
 */
const encodedSizes = new WeakMap<object, number>();
function encodedSize(e: StreamEvent): number {
  let n = encodedSizes.get(e);
  if (n === undefined) {
    n = Buffer.byteLength(encodeEvent(e));
    encodedSizes.set(e, n);
  }
  return n;
}

/** A timer's callback with its stream as argument: no closure per timer. */
function checkDrained(stream: { checkDrained(): void }): void {
  stream.checkDrained();
}

/** How often a stream holding coalesced events checks whether its socket drained. */
export const DRAIN_CHECK_MS = 50;

