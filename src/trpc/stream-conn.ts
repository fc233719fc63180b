import { CloseCode } from '../domain/close-codes.js';
import type { Logger } from '../logger.js';
import type { Session, SessionService, SessionSocket } from '../services/sessions.js';
import type { Flow, StreamConn } from '../stream/streams.js';
import type { Context } from './context.js';

/**
 * A subscription's slot of its connection (TOO_MANY_REQUESTS over the limit, taken in `streamConn`),
 * given back once: when the stream ends, or when the subscription is aborted (the signal's
 * listener): a subscription stopped while it is being set up gets a generator that never runs, so
 * its `finally` never would. An object with methods, not closures: idle connections are most of a
 * node's memory.
 */
class SubscriptionSlot implements StreamConn {
  private released = false;

  constructor(
    private readonly sessions: SessionService,
    private readonly session: Session,
    readonly flow: Flow,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    this.sessions.releaseSubscription(this.session);
  }
}

/** The stream's back-pressure guard on its socket; one per socket, shared by its subscriptions. */
class SocketFlow implements Flow {
  constructor(
    private readonly socket: SessionSocket,
    private readonly log: Logger,
    readonly soft: number,
    readonly hard: number,
    readonly replayQueueEvents: number,
    readonly replayQueueBytes: number,
    readonly replayDrainMs: number,
  ) {}

  buffered(): number {
    return this.socket.bufferedAmount;
  }

  overflow(): void {
    this.log.warn({ bufferedAmount: this.socket.bufferedAmount }, 'closing a slow consumer');
    this.socket.close(CloseCode.SlowConsumer, 'too much data queued: reconnect and resume');
  }
}

const flows = new WeakMap<object, Flow>();

/**
 * Takes a subscription slot of the caller's connection and builds the stream's back-pressure guard
 * from its socket. `createCaller` and HTTP have no session: no slot, no guard.
 */
export function streamConn(ctx: Context, signal?: AbortSignal): StreamConn {
  const session = ctx.session;
  if (!session) return {};
  const { sessions, deps } = ctx.services;
  sessions.acquireSubscription(session);
  const socket = session.socket;
  let flow = flows.get(socket);
  if (!flow) {
    const { wsBufferSoftBytes, wsBufferHardBytes, wsReplayQueueEvents, wsReplayQueueBytes, wsReplayDrainMs } = deps.config.limits;
    flow = new SocketFlow(socket, deps.log, wsBufferSoftBytes, wsBufferHardBytes, wsReplayQueueEvents, wsReplayQueueBytes, wsReplayDrainMs);
    flows.set(socket, flow);
  }
  const slot = new SubscriptionSlot(sessions, session, flow);
  // A bound method: node wraps a listener object (`handleEvent`) in a closure of its own.
  if (signal?.aborted) slot.release();
  else signal?.addEventListener('abort', slot.release.bind(slot));
  return slot;
}
