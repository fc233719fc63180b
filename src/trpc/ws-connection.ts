import type { IncomingMessage } from 'node:http';
import { type AnyRouter, callTRPCProcedure, getErrorShape, getTRPCErrorFromUnknown, isTrackedEnvelope, transformTRPCResponse, TRPCError } from '@trpc/server';
import { parseTRPCMessage } from '@trpc/server/rpc';
import type { RawData, WebSocket } from 'ws';
import type { SharedEncoding } from '../stream/encoding.js';
import { isPushable, PUSH } from '../stream/streams.js';
import { frameHead, trackedTail, writeTextFrame, type FrameWriteCounters } from './frames.js';
import type { LiveConnection } from './ws-keepalive.js';
import { BINARY, FALLBACK_ERROR, isAbortError, isAsyncIterable, isAsyncIterableOrObservable, isObject, OPEN, parseConnectionParams, type RequestId, type RequestMessage, type TransportErrorInfo, type WsTransportOptions } from './ws-protocol.js';
import { InputNotPlainJson } from './transformer.js';

/**
 * The class of one transport's connections, made once per transport by createWsTransport
 * (ws-transport.ts); its methods read the options, the connection set and the write counters from
 * this closure. A connection creates its context, answers queries and mutations, runs
 * subscriptions and writes their frames (the hot path: `sendValue` and `cork`).
 */
export function connectionClass<TRouter extends AnyRouter, TCtx>(opts: WsTransportOptions<TRouter, TCtx>, connections: Set<LiveConnection>, counters: FrameWriteCounters) {
  const config = opts.router._def._config;
  const limits = opts.limits;
  const transformer = config.transformer;

  type CtxResult = { ok: true } | { ok: false; error: TRPCError };

  /** Connections whose socket is corked until the end of the current tick (see `cork`). */
  let corked: Connection[] = [];
  const uncorkAll = () => {
    const list = corked;
    corked = [];
    for (const c of list) {
      c.corked = false;
      (c.ws as unknown as { _socket: { uncork(): void } })._socket.uncork();
    }
  };

  class Subscription {
    readonly abort = new AbortController();
    constructor(readonly head: Buffer) {}
  }

  /** One WebSocket client. Small on purpose: idle connections are most of a server's memory. */
  class Connection {
    ctx: TCtx | undefined = undefined;
    ctxReady: Promise<CtxResult> | null = null;
    subs: Map<RequestId, Subscription> | null = null;
    /** Date.now() of the last message from the client; a ping's time while one is unanswered. */
    lastSeen = Date.now();
    pingedAt = 0;
    corked = false;
    /** Queries and mutations being answered (see `limits.maxInflight`). */
    inflight = 0;

    constructor(
      readonly ws: WebSocket,
      public req: IncomingMessage | null,
    ) {}

    reportError(error: TRPCError, path: string | undefined, type: TransportErrorInfo<TCtx>['type'], input: unknown): void {
      try {
        opts.onError?.({ error, path, type, ctx: this.ctx, req: this.req, input });
      } catch {
        // onError must never take the connection down.
      }
    }

    /** Sends a response object through the transformer, as tRPC's adapter does. */
    respond(message: object): void {
      if (this.ws.readyState !== OPEN) return;
      this.ws.send(JSON.stringify(transformTRPCResponse(config, message as never)));
      // Every write counts against the socket's limit, replies included (not only live events).
      if (limits && this.ws.bufferedAmount > limits.hardBytes) limits.onOverflow(this.ws, this.ws.bufferedAmount);
    }

    errorShape(error: TRPCError, type: TransportErrorInfo<TCtx>['type'], path: string | undefined, input: unknown): object {
      try {
        return getErrorShape({ config, error, type, path, input, ctx: this.ctx });
      } catch (cause) {
        this.reportError(getTRPCErrorFromUnknown(cause), path, type, input);
        return FALLBACK_ERROR;
      }
    }

    respondError(id: RequestId | null, jsonrpc: '2.0' | undefined, cause: unknown, type: TransportErrorInfo<TCtx>['type'], path: string | undefined, input: unknown) {
      const error = getTRPCErrorFromUnknown(cause);
      this.reportError(error, path, type, input);
      try {
        this.respond({ id, jsonrpc, error: this.errorShape(error, type, path, input) });
      } catch {
        this.respond({ id, jsonrpc, error: FALLBACK_ERROR });
      }
    }

    async createContext(connectionParams: () => Record<string, string> | null): Promise<CtxResult> {
      try {
        this.ctx = await opts.createContext({ req: this.req!, res: this.ws, info: { connectionParams: connectionParams() } });
        this.req = null;
        return { ok: true };
      } catch (cause) {
        const error = getTRPCErrorFromUnknown(cause);
        this.respondError(null, undefined, error, 'unknown', undefined, undefined);
        setImmediate(() => this.ws.close());
        return { ok: false, error };
      }
    }

    onMessage(raw: RawData, isBinary: boolean): void {
      this.lastSeen = Date.now();
      this.pingedAt = 0;
      if (!isBinary && Buffer.isBuffer(raw) && raw.length === 4) {
        const s = raw.toString();
        if (s === 'PONG') return;
        if (s === 'PING') {
          if (this.ws.readyState === OPEN) this.ws.send('PONG');
          return;
        }
      }
      if (!Buffer.isBuffer(raw)) {
        this.respondError(null, undefined, new TRPCError({ code: 'UNPROCESSABLE_CONTENT', message: 'Unexpected WebSocket message format' }), 'unknown', undefined, undefined);
        return;
      }
      if (!this.ctxReady) {
        // `?connectionParams=1`: the first message carries them, and the context waits for it.
        this.ctxReady = this.createContext(() => {
          let msg: unknown;
          try {
            if (isBinary) throw new Error(BINARY);
            msg = JSON.parse(raw.toString('utf8'));
            if (!isObject(msg)) throw new Error('Message was not an object');
          } catch (cause) {
            throw new TRPCError({ code: 'PARSE_ERROR', message: 'Malformed TRPCConnectionParamsMessage', cause });
          }
          return parseConnectionParams(msg.data);
        });
        return;
      }
      let msgs: RequestMessage[];
      try {
        if (isBinary) throw new Error(BINARY);
        const json: unknown = JSON.parse(raw.toString('utf8'));
        msgs = [];
        for (const m of Array.isArray(json) ? json : [json]) {
          try {
            msgs.push(parseTRPCMessage(m, transformer) as RequestMessage);
          } catch (cause) {
            // An input refused for not being plain JSON is answered under its own id (tRPC's
            // adapter answers every undecodable input with a parse error of no id, which leaves
            // the client's call waiting); anything else is that parse error, as before.
            const id = isObject(m) ? m.id : undefined;
            if (!(cause instanceof InputNotPlainJson) || (typeof id !== 'number' && typeof id !== 'string')) throw cause;
            const method = isObject(m) && typeof m.method === 'string' ? m.method : 'unknown';
            const path = isObject(m) && isObject(m.params) && typeof m.params.path === 'string' ? m.params.path : undefined;
            this.respondError(id, m.jsonrpc === '2.0' ? '2.0' : undefined, cause, method as never, path, undefined);
          }
        }
      } catch (cause) {
        this.respondError(null, undefined, new TRPCError({ code: 'PARSE_ERROR', cause: cause as Error }), 'unknown', undefined, undefined);
        return;
      }
      const ready = this.ctxReady;
      const max = limits?.maxBatch ?? Number.POSITIVE_INFINITY;
      for (let i = 0; i < msgs.length; i++) {
        const m = msgs[i]!;
        if (i >= max && m.id !== null && m.method !== 'subscription.stop') {
          const error = new TRPCError({ code: 'BAD_REQUEST', message: `at most ${max} calls in one message: send the rest in another` });
          this.respondError(m.id, m.jsonrpc, error, m.method, m.params?.path, undefined);
          continue;
        }
        void this.handle(m, i, ready);
      }
    }

    async handle(msg: RequestMessage, batchIndex: number, ready: Promise<CtxResult>): Promise<void> {
      const { id, jsonrpc } = msg;
      if (id === null) {
        this.respondError(null, jsonrpc, new TRPCError({ code: 'PARSE_ERROR', message: '`id` is required' }), 'unknown', undefined, undefined);
        return;
      }
      if (msg.method === 'subscription.stop') {
        this.subs?.get(id)?.abort.abort();
        return;
      }
      const type = msg.method;
      const params = msg.params!;
      const path = params.path;
      let input = params.input;
      if (params.lastEventId !== undefined) {
        // The client sends the resume point outside the input; procedures read it from the input.
        if (isObject(input)) input = { ...input, lastEventId: params.lastEventId };
        else input ??= { lastEventId: params.lastEventId };
      }
      if (type !== 'subscription') {
        if (limits && this.inflight >= limits.maxInflight) {
          const error = new TRPCError({ code: 'TOO_MANY_REQUESTS', message: `at most ${limits.maxInflight} calls in flight per connection: wait for answers` });
          this.respondError(id, jsonrpc, error, type, path, input);
          return;
        }
        this.inflight++;
        try {
          const res = await ready;
          if (!res.ok) throw res.error;
          const data = await callTRPCProcedure({ router: opts.router, path, getRawInput: async () => input, ctx: this.ctx, type, signal: undefined, batchIndex });
          if (isAsyncIterableOrObservable(data)) {
            throw new TRPCError({ code: 'UNSUPPORTED_MEDIA_TYPE', message: `Cannot return an async iterable or observable from a ${type} procedure with WebSockets` });
          }
          this.respond({ id, jsonrpc, result: { type: 'data', data } });
        } catch (cause) {
          this.respondError(id, jsonrpc, cause, type, path, input);
        } finally {
          this.inflight--;
        }
        return;
      }
      return this.subscribe(id, jsonrpc, path, input, batchIndex, ready);
    }

    async subscribe(id: RequestId, jsonrpc: '2.0' | undefined, path: string, input: unknown, batchIndex: number, ready: Promise<CtxResult>): Promise<void> {
      this.subs ??= new Map();
      const subs = this.subs;
      if (subs.has(id)) {
        this.respondError(id, jsonrpc, new TRPCError({ code: 'BAD_REQUEST', message: `Duplicate id ${id}` }), 'subscription', path, input);
        return;
      }
      const sub = new Subscription(frameHead(id, jsonrpc));
      const signal = sub.abort.signal;
      subs.set(id, sub);
      let result: unknown = null;
      try {
        const res = await ready;
        if (!res.ok) throw res.error;
        if (!signal.aborted && this.ws.readyState === OPEN) {
          result = await callTRPCProcedure({ router: opts.router, path, getRawInput: async () => input, ctx: this.ctx, type: 'subscription', signal, batchIndex });
          if (!isAsyncIterable(result)) {
            throw new TRPCError({ code: 'INTERNAL_SERVER_ERROR', message: `Subscription ${path} did not return an AsyncGenerator` });
          }
        }
      } catch (cause) {
        // Before the first value: the call's own error and no `stopped` (as with tRPC's adapter),
        // unless the subscription was stopped while it was being set up.
        sub.abort.abort();
        if (subs.get(id) === sub) subs.delete(id);
        const error = getTRPCErrorFromUnknown(cause);
        if (!(signal.aborted && error.code === 'INTERNAL_SERVER_ERROR' && isAbortError(error.cause))) {
          this.respondError(id, jsonrpc, error, 'subscription', path, input);
          return;
        }
      }
      const started = result !== null && !signal.aborted && this.ws.readyState === OPEN;
      if (started) this.respond({ id, jsonrpc, result: { type: 'started' } });
      const failed = (cause: unknown) => {
        // An error during iteration: the client gets it, then `stopped` (as with tRPC's adapter).
        if (!signal.aborted) this.respondError(id, jsonrpc, cause, 'subscription', path, input);
      };
      if (isPushable(result)) {
        // Our streams: values are written from the hub's fan-out loop; the stream ends itself on abort.
        if (started) {
          await new Promise<void>((resolve) => {
            result[PUSH]({
              data: (value, shared) => {
                if (!signal.aborted) this.sendValue(sub, id, jsonrpc, value, shared);
              },
              end: (error) => {
                if (error !== undefined) failed(error);
                resolve();
              },
            });
          });
        }
        sub.abort.abort();
      } else if (result !== null) {
        let iterator: AsyncIterator<unknown> | null = (result as AsyncIterable<unknown>)[Symbol.asyncIterator]();
        try {
          while (started) {
            const next = await iterator.next();
            if (next.done) {
              iterator = null;
              break;
            }
            if (signal.aborted) break;
            this.sendValue(sub, id, jsonrpc, next.value, undefined);
          }
        } catch (cause) {
          iterator = null;
          failed(cause);
        } finally {
          sub.abort.abort();
          if (iterator?.return) {
            await iterator.return().catch((cause: unknown) => this.reportError(getTRPCErrorFromUnknown(cause), path, 'subscription', input));
          }
        }
      }
      if (subs.get(id) === sub) subs.delete(id);
      // A stop, a natural end or an error during iteration: the client waits for this frame.
      this.respond({ id, jsonrpc, result: { type: 'stopped' } });
    }

    /** The hot path: one subscription value (and the fan-out's shared encoding, if any) to its socket. */
    sendValue(sub: Subscription, id: RequestId, jsonrpc: '2.0' | undefined, value: unknown, shared: SharedEncoding | undefined): void {
      const ws = this.ws;
      if (ws.readyState !== OPEN) return;
      if (!this.corked) this.cork();
      if (isTrackedEnvelope(value)) {
        writeTextFrame(ws as never, sub.head, trackedTail(value[0], value[1], shared), counters);
        return;
      }
      this.respond({ id, jsonrpc, result: { type: 'data', data: value } });
    }

    /**
     * Write coalescing: frames written to this socket until the current batch of microtasks has
     * run go out in one system call (a hub fans out every event that one read from the bus
     * brought, and every subscription of the socket writes its frames in that same batch). At a
     * low rate this is one frame per call as before; under load the calls per frame drop.
     */
    cork(): void {
      const socket = (this.ws as unknown as { _socket?: { cork?(): void; uncork(): void } })._socket;
      if (typeof socket?.cork !== 'function') {
        // ws's socket is not where the fast path expects it: every frame leaves on its own.
        counters.wsFallbackWrites++;
        return;
      }
      socket.cork();
      this.corked = true;
      corked.push(this);
      if (corked.length === 1) process.nextTick(uncorkAll);
    }

    closed(): void {
      connections.delete(this);
      if (this.subs) {
        for (const sub of this.subs.values()) sub.abort.abort();
      }
    }
  }

  return Connection;
}
