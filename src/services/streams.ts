import { EventQueue } from '../realtime/queue.js';
import type { RoomEvent } from '../realtime/events.js';
import type { EventSource, HubSubscriber, StreamEvent, StreamHubs } from '../realtime/room-hub.js';
import type { Actor } from './actor.js';
import { badRequest } from './errors.js';
import type { RoomLog } from './room-log.js';
import type { RoomService } from './rooms.js';

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

/**
 * A resumable stream with the delivery guarantee: listen first (attach to the hub), replay what the
 * client missed from PostgreSQL up to the hub's position, then go live; duplicates are dropped by
 * seq. Without `after` the stream starts with `ready(position)`.
 */
export async function* resumableStream<E extends StreamEvent, T>(opts: {
  hubs: StreamHubs<E>;
  source: EventSource<E & { seq: number }>;
  key: string;
  userId: string;
  after: number | null;
  signal: AbortSignal | undefined;
  ready: (seq: number) => E;
  wrap: (id: string, event: E) => T;
  conn?: StreamConn | undefined;
}): AsyncGenerator<T> {
  const { hubs, source, key, signal, wrap } = opts;
  const flow = opts.conn?.flow;
  let coalesced: Map<string, E> | null = null;
  const queue = new EventQueue<E>();
  const sub: HubSubscriber<E> = { userId: opts.userId, push: (e) => queue.push(e), end: () => queue.end() };
  const onAbort = () => queue.end();
  signal?.addEventListener('abort', onAbort, { once: true });
  let attached = false;
  try {
    if (signal?.aborted) return;
    const position = await hubs.attach(key, sub);
    attached = true;
    let last: number;
    if (opts.after === null) {
      last = position;
      yield wrap(String(last), opts.ready(last));
    } else {
      last = opts.after;
      while (last < position && !signal?.aborted && !queue.closed) {
        const page = await source.load(key, last, position, REPLAY_PAGE);
        if (page.length === 0) break;
        for (const e of page) {
          if (e.seq <= last) continue;
          last = e.seq;
          yield wrap(String(last), e);
        }
      }
    }
    // The next event, kept across a wake-up for a drained socket (a dropped `next()` would lose one).
    let pending: Promise<IteratorResult<E>> | null = null;
    while (true) {
      pending ??= queue.next();
      // Coalesced events wait for the socket to drain, not for the room's next event: in a quiet
      // room the latest typing/presence state would otherwise never be delivered.
      const r = coalesced?.size && flow ? await nextOrDrained(pending, flow, signal) : await pending;
      if (r === DRAINED) {
        for (const c of coalesced!.values()) yield wrap(String(last), c);
        coalesced!.clear();
        continue;
      }
      pending = null;
      if (r.done) return;
      const e = r.value;
      const durable = hubs.kind.isDurable(e);
      if (durable && e.seq <= last) continue;
      if (flow) {
        const queued = flow.buffered();
        if (queued > flow.hard) {
          flow.overflow();
          return;
        }
        if (queued > flow.soft) {
          const key = durable ? null : hubs.kind.coalesceKey(e);
          if (key !== null) {
            (coalesced ??= new Map()).set(key, e);
            continue;
          }
        } else if (coalesced?.size) {
          for (const c of coalesced.values()) yield wrap(String(last), c);
          coalesced.clear();
        }
      }
      if (durable) last = e.seq;
      yield wrap(String(last), e);
    }
  } finally {
    opts.conn?.release?.();
    signal?.removeEventListener('abort', onAbort);
    if (attached) hubs.detach(key, sub);
    void queue.return();
  }
}

const DRAINED = Symbol('drained');
/** How often a stream holding coalesced events checks whether its socket drained. */
export const DRAIN_CHECK_MS = 50;

/** The next event, or DRAINED as soon as the socket's queue is back under the soft limit. */
async function nextOrDrained<T>(next: Promise<T>, flow: Flow, signal: AbortSignal | undefined): Promise<T | typeof DRAINED> {
  let timer: NodeJS.Timeout | undefined;
  const drained = new Promise<typeof DRAINED>((resolve) => {
    const check = () => {
      if (signal?.aborted) return;
      if (flow.buffered() <= flow.soft) resolve(DRAINED);
      else timer = setTimeout(check, DRAIN_CHECK_MS);
    };
    timer = setTimeout(check, DRAIN_CHECK_MS);
  });
  try {
    return await Promise.race([next, drained]);
  } finally {
    clearTimeout(timer);
  }
}

/** Room event streams (`chat.events`). */
export class StreamService {
  constructor(
    private readonly rooms: RoomService,
    private readonly log: RoomLog,
    private readonly hubs: StreamHubs<any>,
  ) {}

  /** Checks access, then returns the stream (errors before the first event are typed). */
  async open<T>(
    actor: Actor,
    roomId: string,
    lastEventId: string | null | undefined,
    signal: AbortSignal | undefined,
    wrap: Wrap<T>,
    conn?: StreamConn,
  ): Promise<AsyncGenerator<T>> {
    const after = parseLastEventId(lastEventId);
    await this.rooms.requireAccess(actor, roomId, 'read');
    return resumableStream<any, T>({
      hubs: this.hubs,
      source: this.log,
      key: roomId,
      userId: actor.id,
      after,
      signal,
      ready: (seq) => ({ type: 'ready', roomId, seq }),
      wrap: wrap as (id: string, e: any) => T,
      conn,
    });
  }
}
