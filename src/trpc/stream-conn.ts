import { CloseCode } from '../domain/close-codes.js';
import type { Flow, StreamConn } from '../stream/streams.js';
import type { Context } from './context.js';

/**
 * Takes a subscription slot of the caller's connection (TOO_MANY_REQUESTS over the limit) and
 * builds the stream's back-pressure guard from its socket. `createCaller` and HTTP have no session.
 * The slot is released when the stream ends, or when the subscription is aborted: a subscription
 * stopped while it is being set up gets a generator that never runs, so its `finally` never would.
 */
/** One back-pressure guard per socket, shared by its subscriptions (no closures per subscription). */
const flows = new WeakMap<object, Flow>();

export function streamConn(ctx: Context, signal?: AbortSignal): StreamConn {
  const { sessions, deps } = ctx.services;
  const release = sessions.acquireSubscription(ctx.session);
  if (signal?.aborted) release();
  else signal?.addEventListener('abort', release, { once: true });
  const socket = ctx.session?.socket;
  if (!socket) return { release };
  let flow = flows.get(socket);
  if (!flow) {
    const { wsBufferSoftBytes: soft, wsBufferHardBytes: hard, wsReplayQueueEvents, wsReplayQueueBytes, wsReplayDrainMs } = deps.config.limits;
    flow = {
      soft,
      hard,
      replayQueueEvents: wsReplayQueueEvents,
      replayQueueBytes: wsReplayQueueBytes,
      replayDrainMs: wsReplayDrainMs,
      buffered: () => socket.bufferedAmount,
      overflow: () => {
        deps.log.warn({ bufferedAmount: socket.bufferedAmount }, 'closing a slow consumer');
        socket.close(CloseCode.SlowConsumer, 'too much data queued: reconnect and resume');
      },
    };
    flows.set(socket, flow);
  }
  return { release, flow };
}
