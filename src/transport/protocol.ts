import type { IncomingMessage } from 'node:http';
import { type AnyRouter, TRPCError } from '@trpc/server';
import type { WSSHandlerOptions } from '@trpc/server/adapters/ws';
import type { WebSocket } from 'ws';
import type { FrameWriteCounters } from './frames.js';

/**
 * tRPC's WebSocket protocol as the transport speaks it: the shapes of its messages, its fallback
 * error, the checks of what a client sent or a procedure returned; and the transport's options.
 */

export const OPEN = 1;
/**
 * The close code of a message with more than twice the batch limit in calls (RFC 6455 1009,
 * Message Too Big): one close instead of an answer per call.
 */
export const TOO_MANY_CALLS = 1009;
/** tRPC's wording for a binary frame (the default protocol is JSON in text frames). */
export const BINARY = 'jsonEncoder received binary data. JSON uses text frames. Use a binary encoder for binary data.';

export type ProcedureType = 'query' | 'mutation' | 'subscription';
export type RequestId = number | string;

/** What `onError` gets (the same fields as tRPC's adapter passes). */
export interface TransportErrorInfo<TCtx = unknown> {
  error: TRPCError;
  path: string | undefined;
  type: ProcedureType | 'unknown';
  ctx: TCtx | undefined;
  /** The upgrade request (null once the context exists when `releaseRequest` is set). */
  req: IncomingMessage;
  input: unknown;
}

/** Options of this transport beyond tRPC's own (`WSSHandlerOptions`). */
export interface TransportExtraOptions {
  /** Counts tracked frames written by the fast path and by the fallback (for metrics). */
  counters?: FrameWriteCounters | undefined;
  /**
   * Per connection: queries and mutations answered at once (`maxInflight`, more get
   * TOO_MANY_REQUESTS), queries and mutations served from one message (`maxBatch`, those beyond it
   * get BAD_REQUEST each while the first ones are served; subscriptions do not count, since a
   * client sends all of its own again in one message when it reconnects; tRPC's `maxBatchSize`
   * refuses the whole message instead), calls of any kind in one message (`maxCalls`, default twice
   * the batch limit: a longer message closes the connection with 1009, one close instead of a reply
   * per call),
   * subscriptions the client stopped whose work has not ended yet (`maxStopping`, default
   * `maxInflight`: a new subscription over it gets TOO_MANY_REQUESTS), and the bytes queued on the
   * socket after which any write, a `PONG` and the keep-alive's `PING` included, calls `onOverflow`
   * (`hardBytes`, e.g. to close a slow consumer).
   */
  limits?:
    | {
        maxInflight: number;
        maxBatch: number;
        maxCalls?: number | undefined;
        maxStopping?: number | undefined;
        hardBytes: number;
        onOverflow: (ws: WebSocket, bufferedAmount: number) => void;
      }
    | undefined;
  /**
   * Drop the upgrade request once the connection's context is created (an idle connection then
   * holds no request and no headers); `onError` gets `req: null` after that. tRPC keeps it.
   */
  releaseRequest?: boolean | undefined;
  /**
   * A call of a message whose input cannot be decoded is answered under that call's id when this
   * returns true for the transformer's error (tRPC answers every such failure with a parse error
   * of no id, which leaves the client's call waiting). The other calls of the message are served.
   */
  answerDecodeErrorById?: ((cause: unknown) => boolean) | undefined;
}

/** The options: tRPC's `applyWSSHandler` options plus ours. */
export type TransportOptions<TRouter extends AnyRouter> = WSSHandlerOptions<TRouter> & TransportExtraOptions;

/** What a request of a batch looks like once parsed (parseTRPCMessage). */
export interface RequestMessage {
  id: RequestId | null;
  jsonrpc?: '2.0' | undefined;
  method: ProcedureType | 'subscription.stop';
  params?: { path: string; input: unknown; lastEventId?: string | undefined };
}

export const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

export const FALLBACK_ERROR = {
  code: -32603,
  message: 'Internal server error',
  data: { code: 'INTERNAL_SERVER_ERROR', httpStatus: 500 },
};

export function parseConnectionParams(data: unknown): Record<string, string> | null {
  if (data === null) return null;
  try {
    if (!isObject(data)) throw new Error('Expected object');
    const bad = Object.entries(data).filter(([, v]) => typeof v !== 'string');
    if (bad.length > 0) {
      throw new Error(`Expected connectionParams to be string values. Got ${bad.map(([k, v]) => `${k}: ${typeof v}`).join(', ')}`);
    }
    return data as Record<string, string>;
  } catch (cause) {
    throw new TRPCError({ code: 'PARSE_ERROR', message: 'Invalid connection params shape', cause: cause as Error });
  }
}

export function isAsyncIterable(v: unknown): v is AsyncIterable<unknown> {
  return !!v && typeof v === 'object' && Symbol.asyncIterator in v;
}

export function isAbortError(e: unknown): boolean {
  return !!e && typeof e === 'object' && (e as { name?: unknown }).name === 'AbortError';
}

export function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return !!v && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}
