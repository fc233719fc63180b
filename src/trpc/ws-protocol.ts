import type { IncomingMessage } from 'node:http';
import { type AnyRouter, TRPCError } from '@trpc/server';
import type { WebSocket, WebSocketServer } from 'ws';
import type { FrameWriteCounters } from './frames.js';

/**
 * tRPC's WebSocket protocol as the transport (ws-transport.ts) speaks it: the shapes of its
 * messages, its fallback error, the checks of what a client sent or a procedure returned; and the
 * transport's options.
 */

export const OPEN = 1;
/** tRPC's wording for a binary frame (the protocol is JSON in text frames). */
export const BINARY = 'jsonEncoder received binary data. JSON uses text frames. Use a binary encoder for binary data.';

export type ProcedureType = 'query' | 'mutation' | 'subscription';
export type RequestId = number | string;

export interface TransportErrorInfo<TCtx> {
  error: TRPCError;
  path: string | undefined;
  type: ProcedureType | 'unknown';
  ctx: TCtx | undefined;
  /** The upgrade request, until the connection's context is created (not kept for idle sockets). */
  req: IncomingMessage | null;
  input: unknown;
}

export interface WsTransportOptions<TRouter extends AnyRouter, TCtx> {
  wss: WebSocketServer;
  router: TRouter;
  createContext: (opts: {
    req: IncomingMessage;
    res: WebSocket;
    info: { connectionParams: Record<string, string> | null };
  }) => Promise<TCtx>;
  /** Ping after `pingMs` without a message from the client; close when no message follows within `pongWaitMs`. */
  keepAlive?: { pingMs: number; pongWaitMs: number };
  onError?: (info: TransportErrorInfo<TCtx>) => void;
  /** Counts tracked frames written by the fast path and by the fallback (the metrics' counters). */
  counters?: FrameWriteCounters;
  /**
   * Per connection: queries and mutations answered at once (`maxInflight`, more get
   * TOO_MANY_REQUESTS), calls in one frame (`maxBatch`, more get BAD_REQUEST), and the bytes queued
   * on the socket after which any reply closes it (`hardBytes`, then `onOverflow`).
   */
  limits?: { maxInflight: number; maxBatch: number; hardBytes: number; onOverflow: (ws: WebSocket, bufferedAmount: number) => void };
}

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

export function isAsyncIterableOrObservable(v: unknown): boolean {
  return isAsyncIterable(v) || (!!v && typeof v === 'object' && typeof (v as { subscribe?: unknown }).subscribe === 'function');
}

export function isAbortError(e: unknown): boolean {
  return !!e && typeof e === 'object' && (e as { name?: unknown }).name === 'AbortError';
}
