import { EventQueue } from './queue.js';
import type { RoomEvent } from '../domain/events.js';
import type { SharedEncoding } from './encoding.js';
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
 */
export interface Flow {
  buffered(): number;
  soft: number;
  hard: number;
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
  let used = false;
  const claim = () => {
    if (used) throw new Error('a stream is consumed once');
    used = true;
  };
  return {
    [PUSH](sink: PushSink<T>) {
      claim();
      runStream(opts, sink);
    },
    [Symbol.asyncIterator](): AsyncIterator<T> {
      claim();
      const queue = new EventQueue<T>();
      const stop = runStream(opts, { data: (v) => queue.push(v), end: (err) => (err === undefined ? queue.end() : queue.fail(err)) });
      return {
        next: () => queue.next(),
        return: () => {
          stop();
          return queue.return();
        },
      };
    },
  };
}

/**
 * The stream itself. Live events are handled in the hub's fan-out loop (synchronously): dropped
 * when already delivered, coalesced when the connection is congested, written otherwise. Returns
 * a function that ends the stream.
 */
function runStream<E extends StreamEvent, T, R extends StreamEvent>(opts: StreamOptions<E, T, R>, sink: PushSink<T>): () => void {
  const { hubs, source, key, signal, wrap } = opts;
  const flow = opts.conn?.flow;
  let last = 0;
  /** Live: events go out as they come. Before that (attach, replay) they wait in `early`. */
  let live = false;
  let early: E[] = [];
  /** The hub ended this subscriber (a kick, a shutdown): stop after what is queued. */
  let closing = false;
  let ended = false;
  let attached = false;
  let coalesced: Map<string, E> | null = null;
  let drainTimer: NodeJS.Timeout | null = null;

  const finish = (error?: unknown) => {
    if (ended) return;
    ended = true;
    signal?.removeEventListener('abort', onAbort);
    if (drainTimer) clearTimeout(drainTimer);
    if (attached) hubs.detach(key, sub);
    opts.conn?.release?.();
    sink.end(error);
  };
  const onAbort = () => finish();

  const flushCoalesced = () => {
    for (const c of coalesced!.values()) sink.data(wrap(String(last), c));
    coalesced!.clear();
  };
  // Coalesced events wait for the socket to drain, not for the room's next event: in a quiet room
  // the latest typing/presence state would otherwise never be delivered.
  const checkDrained = () => {
    drainTimer = null;
    if (ended || !coalesced?.size) return;
    if (flow!.buffered() <= flow!.soft) flushCoalesced();
    else drainTimer = setTimeout(checkDrained, DRAIN_CHECK_MS);
  };

  const deliver = (e: E, shared: SharedEncoding<E> | undefined) => {
    const durable = hubs.kind.isDurable(e);
    if (durable && e.seq <= last) return;
    if (flow) {
      const queued = flow.buffered();
      if (queued > flow.hard) {
        flow.overflow();
        finish();
        return;
      }
      if (queued > flow.soft) {
        const k = durable ? null : hubs.kind.coalesceKey(e);
        if (k !== null) {
          coalesced ??= new Map();
          coalesced.set(k, e);
          drainTimer ??= setTimeout(checkDrained, DRAIN_CHECK_MS);
          return;
        }
      } else if (coalesced?.size) {
        flushCoalesced();
      }
    }
    if (durable) last = e.seq;
    sink.data(wrap(String(last), e), shared);
  };

  const sub: HubSubscriber<E> = {
    userId: opts.userId,
    push(e, shared) {
      if (ended) return;
      if (!live) {
        early.push(e);
        return;
      }
      try {
        deliver(e, shared);
      } catch (err) {
        // Never into the hub's fan-out loop: the other subscribers must still get the event.
        finish(err);
      }
    },
    end() {
      if (live) finish();
      else closing = true;
    },
  };

  signal?.addEventListener('abort', onAbort, { once: true });
  void (async () => {
    if (signal?.aborted) return finish();
    const position = await hubs.attach(key, sub);
    attached = true;
    if (ended) return hubs.detach(key, sub);
    if (opts.attached) await opts.attached();
    if (ended) return;
    if (opts.after === null) {
      last = position;
      sink.data(wrap(String(last), opts.ready(last)));
    } else if (opts.after > position) {
      // A position this stream never had (another room's id, a restored backup): say so.
      last = position;
      sink.data(wrap(String(last), opts.reset(last)));
    } else {
      last = opts.after;
      let first = true;
      while (last < position && !ended && !closing) {
        // A replay goes at the socket's pace: the next page waits until the queue is below the
        // soft limit (a client far behind on a slow link never piles its backlog into memory).
        if (flow && !(await drained(flow, () => ended))) return finish();
        if (ended) return;
        const page = await source.load(key, last, position, REPLAY_PAGE);
        if (first) {
          first = false;
          // The log is gapless but for retention: a first event after last + 1 may mean the next
          // ones were removed. Then the replay would be partial: reset instead.
          if ((page[0]?.seq ?? position + 1) > last + 1) {
            const oldest = await source.oldestSeq(key);
            if (ended) return;
            if (oldest === null || oldest > last + 1) {
              last = position;
              sink.data(wrap(String(last), opts.reset(last)));
              break;
            }
          }
        }
        if (page.length === 0) break;
        for (const e of page) {
          if (ended) return;
          if (e.seq <= last) continue;
          last = e.seq;
          sink.data(wrap(String(last), e));
          if (flow && flow.buffered() > flow.hard) {
            flow.overflow();
            return finish();
          }
          // Replayed as live: the user's own removal ends the stream (a later re-join is read by
          // resuming after it, with a fresh access check).
          if (hubs.kind.kickUserOf(e) === opts.userId) return finish();
        }
      }
    }
    if (ended) return;
    live = true;
    const queued = early;
    early = [];
    for (const e of queued) {
      deliver(e, undefined);
      if (ended) return;
    }
    if (closing) finish();
  })().catch((err: unknown) => finish(err));
  return () => finish();
}

/** How often a stream holding coalesced events checks whether its socket drained. */
export const DRAIN_CHECK_MS = 50;

/**
 * Resolves true once the socket's queue is at or below the soft limit, false when it went over the
 * hard one (the caller overflows) or the stream ended meanwhile.
 */
async function drained(flow: Flow, ended: () => boolean): Promise<boolean> {
  while (flow.buffered() > flow.soft) {
    if (flow.buffered() > flow.hard) {
      flow.overflow();
      return false;
    }
    await new Promise((resolve) => setTimeout(resolve, DRAIN_CHECK_MS));
    if (ended()) return false;
  }
  return true;
}
