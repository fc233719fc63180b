import type { IncomingMessage } from 'node:http';
import {
  type AnyRouter,
  getErrorShape,
  getTRPCErrorFromUnknown,
  type inferRouterContext,
  isTrackedEnvelope,
  transformTRPCResponse,
  TRPCError,
} from '@trpc/server';
import { isObservable, observableToAsyncIterable } from '@trpc/server/observable';
import { parseTRPCMessage } from '@trpc/server/rpc';
import type { RawData, WebSocket } from 'ws';
import { callProcedure } from './call.js';
import { type FrameWriteCounters, frameHead, trackedTail, writeTextFrame } from './frames.js';
import type { LiveConnection, LiveConnections } from './keepalive.js';
import {
  BINARY,
  FALLBACK_ERROR,
  isAbortError,
  isAsyncIterable,
  isObject,
  isPromiseLike,
  OPEN,
  parseConnectionParams,
  type RequestId,
  type RequestMessage,
  TOO_MANY_CALLS,
  type TransportErrorInfo,
  type TransportOptions,
} from './protocol.js';
import { isPushable, PUSH, type PushSink, type SharedFrame } from './push.js';

type ErrorType = TransportErrorInfo['type'];

/** Where a subscription's server-side work is (see `Subscription.work`). */
type Work = 0 | 1 | 2;
const RUNNING = 0;
const STOPPING = 1;
const ENDED = 2;

/**
 * The class of one transport's connections, made once per transport (transport.ts); its methods
 * read the options, the connection set and the write counters from this closure. A connection
 * creates its context, answers queries and mutations, runs subscriptions and writes their frames
 * (the hot path: `sendValue` and `cork`).
 */
export function connectionClass<TRouter extends AnyRouter>(opts: TransportOptions<TRouter>, connections: LiveConnections, counters: FrameWriteCounters) {
  type TCtx = inferRouterContext<TRouter>;
  const router = opts.router;
  const config = router._def._config;
  const limits = opts.limits;
  const transformer = config.transformer;
  const encoder = opts.experimental_encoder;
  const encode = encoder ? (m: unknown) => encoder.encode(m) : (m: unknown) => JSON.stringify(m);
  /** Tracked frames are assembled from bytes only for JSON text frames (no custom encoder). */
  const fastFrames = encoder === undefined;
  const serialize = (v: unknown) => transformer.output.serialize(v);
  const onError = opts.onError as ((info: TransportErrorInfo<TCtx>) => unknown) | undefined;
  /** The fewest calls one message may carry: tRPC's `maxBatchSize` or our `limits.maxBatch`. */
  const batchLimit = Math.min(typeof opts.maxBatchSize === 'number' ? opts.maxBatchSize : Number.POSITIVE_INFINITY, limits?.maxBatch ?? Number.POSITIVE_INFINITY);
  /** Calls in one message past which the connection is closed (1009) instead of answered one by one. */
  const messageLimit = limits?.maxCalls ?? 2 * batchLimit;
  /** Stopped subscriptions whose work has not ended, at most, per connection (with `limits`). */
  const maxStopping = limits ? (limits.maxStopping ?? limits.maxInflight) : Number.POSITIVE_INFINITY;

  type CtxResult = { ok: true } | { ok: false; error: TRPCError };
  /** Every connection's resolved `ctxReady` holds this one object (not one per connection). */
  const CTX_OK: CtxResult = Object.freeze({ ok: true });

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

  /** Calls `onError`; neither a throw nor a rejection of it ever escapes (nor is unhandled). */
  const callOnError = (info: TransportErrorInfo<TCtx>, onFailure?: (cause: unknown) => void) => {
    try {
      const result = onError?.(info);
      if (isPromiseLike(result)) Promise.resolve(result).catch((cause: unknown) => onFailure?.(cause));
    } catch (cause) {
      onFailure?.(cause);
    }
  };

  /**
   * One subscription; for a pushed stream, also the sink it writes to (no closures per subscription).
   * `work`: RUNNING until the client stops it; STOPPING from the stop until the server's work for it
   * has ended (its set-up, and its iterator's `return()`), which may come long after `stopped`;
   * ENDED then, or as soon as it ended any other way.
   */
  class Subscription implements PushSink<unknown> {
    readonly abort = new AbortController();
    work: Work = RUNNING;
    /** The head's UTF-8 length, once (every frame of the subscription writes the head). */
    readonly headBytes: number;
    constructor(
      readonly head: string | null,
      readonly conn: Connection,
      readonly id: RequestId,
      readonly jsonrpc: '2.0' | undefined,
      readonly path: string,
      readonly input: unknown,
    ) {
      this.headBytes = head === null ? 0 : Buffer.byteLength(head);
    }

    /**
     * A value that cannot be written (its serialization throws) fails this subscription only: the
     * client gets the error, and the stream ends on the abort (its `end()` sends `stopped`); the
     * throw never reaches the producer's fan-out loop, where it would skip the other subscribers.
     */
    data(value: unknown, shared?: SharedFrame): void {
      if (this.abort.signal.aborted) return;
      try {
        this.conn.sendValue(this, this.id, this.jsonrpc, value, shared);
      } catch (cause) {
        this.conn.subscriptionFailed(this, cause);
        this.abort.abort();
      }
    }

    end(error?: unknown): void {
      if (error !== undefined) this.conn.subscriptionFailed(this, error);
      this.abort.abort();
      this.conn.workEnded(this);
      this.conn.subscriptionEnded(this);
    }
  }

  /** One WebSocket client. Small on purpose: idle connections are most of a server's memory. */
  class Connection implements LiveConnection {
    ctx: TCtx | undefined = undefined;
    ctxReady: Promise<CtxResult> | null = null;
    /**
     * The live subscriptions: the first in `sub` (most connections hold one), the others by id in
     * `subs`, made only for a second one (an empty `Map` is about 0.3 KB of every idle connection).
     */
    sub: Subscription | null = null;
    subs: Map<RequestId, Subscription> | null = null;
    /** Aborted when the socket closes: the signal of createContext, queries and mutations. */
    life: AbortController | null = null;
    /** Date.now() of the last message from the client. */
    lastSeen = Date.now();
    pingedAt = 0;
    corked = false;
    /** Queries and mutations being answered (see `limits.maxInflight`). */
    inflight = 0;
    /** Subscriptions stopped by the client whose work has not ended yet (see `limits.maxStopping`). */
    stopping = 0;

    constructor(
      readonly ws: WebSocket,
      public req: IncomingMessage | null,
    ) {}

    get signal(): AbortSignal {
      this.life ??= new AbortController();
      return this.life.signal;
    }

    info(error: TRPCError, path: string | undefined, type: ErrorType, input: unknown): TransportErrorInfo<TCtx> {
      return { error, path, type, ctx: this.ctx, req: this.req as IncomingMessage, input };
    }

    reportError(error: TRPCError, path: string | undefined, type: ErrorType, input: unknown): void {
      callOnError(this.info(error, path, type, input));
    }

    /** A failure of the error handling itself: to `onError`, or logged when there is none or it fails. */
    reportInternalError(error: TRPCError, path: string | undefined, type: ErrorType, input: unknown): void {
      const log = () => console.error('[trpc-ws-transport]', error);
      if (!onError) log();
      else callOnError(this.info(error, path, type, input), log);
    }

    /**
     * Writes one reply and checks the socket's limit: every write counts against it, replies
     * included (not only live events), down to the `PONG` of a client's `PING` (a client that
     * never reads and keeps pinging would otherwise grow the queue without bound) and the
     * keep-alive's own `PING` (keepalive.ts).
     */
    write(frame: Parameters<WebSocket['send']>[0]): void {
      this.ws.send(frame);
      if (limits && this.ws.bufferedAmount > limits.hardBytes) limits.onOverflow(this.ws, this.ws.bufferedAmount);
    }

    /** Sends a response object through the transformer and the encoder, as tRPC's adapter does. */
    respond(message: object): void {
      if (this.ws.readyState !== OPEN) return;
      this.write(encode(transformTRPCResponse(config, message as never)));
    }

    /** A query's or mutation's result (or a plain subscription value): what `transformTRPCResponse` builds, without its generic spreads. */
    respondData(id: RequestId, jsonrpc: '2.0' | undefined, data: unknown): void {
      if (this.ws.readyState !== OPEN) return;
      this.write(encode({ id, jsonrpc, result: { type: 'data', data: serialize(data) } }));
    }

    errorShape(error: TRPCError, type: ErrorType, path: string | undefined, input: unknown): object {
      try {
        return getErrorShape({ config, error, type, path, input, ctx: this.ctx });
      } catch (cause) {
        this.reportInternalError(getTRPCErrorFromUnknown(cause), path, type, input);
        return FALLBACK_ERROR;
      }
    }

    respondError(id: RequestId | null, jsonrpc: '2.0' | undefined, cause: unknown, type: ErrorType, path: string | undefined, input: unknown, report = true) {
      const error = getTRPCErrorFromUnknown(cause);
      if (report) this.reportError(error, path, type, input);
      try {
        this.respond({ id, jsonrpc, error: this.errorShape(error, type, path, input) });
      } catch (failure) {
        this.reportInternalError(getTRPCErrorFromUnknown(failure), path, type, input);
        try {
          this.respond({ id, jsonrpc, error: FALLBACK_ERROR });
        } catch {
          // the same failure, reported above
        }
      }
    }

    async createContext(connectionParams: () => Record<string, string> | null): Promise<CtxResult> {
      try {
        // tRPC's `info`; its `signal` is made on first read (most contexts never read it, and an
        // idle connection then holds no AbortController).
        const conn = this;
        const info = {
          connectionParams: connectionParams(),
          calls: [],
          isBatchCall: false,
          accept: null,
          type: 'unknown',
          get signal() {
            return conn.signal;
          },
          url: null,
        };
        this.ctx = (await opts.createContext?.({ req: this.req!, res: this.ws, info } as never)) as TCtx;
        if (opts.releaseRequest) this.req = null;
        return CTX_OK;
      } catch (cause) {
        const error = getTRPCErrorFromUnknown(cause);
        this.respondError(null, undefined, error, 'unknown', undefined, undefined);
        setImmediate(() => this.ws.close());
        return { ok: false, error };
      }
    }

    decode(raw: Buffer, isBinary: boolean): unknown {
      if (encoder) return encoder.decode(isBinary ? raw : raw.toString('utf8'));
      if (isBinary) throw new Error(BINARY);
      return JSON.parse(raw.toString('utf8'));
    }

    onMessage(raw: RawData, isBinary: boolean): void {
      this.lastSeen = Date.now();
      this.pingedAt = 0;
      // Closing (refused, overflowed, failed): what the client sent after it is not served.
      if (this.ws.readyState !== OPEN) return;
      if (!isBinary && Buffer.isBuffer(raw) && raw.length === 4) {
        const s = raw.toString();
        if (s === 'PONG') return;
        if (s === 'PING') {
          if (!opts.dangerouslyDisablePong && this.ws.readyState === OPEN) this.write('PONG');
          return;
        }
      }
      if (!Buffer.isBuffer(raw)) {
        this.respondError(null, undefined, new TRPCError({ code: 'UNPROCESSABLE_CONTENT', message: 'Unexpected WebSocket message format' }), 'unknown', undefined, undefined, false);
        return;
      }
      if (!this.ctxReady) {
        // `?connectionParams=1`: the first message carries them, and the context waits for it.
        this.ctxReady = this.createContext(() => {
          let msg: unknown;
          try {
            msg = this.decode(raw, isBinary);
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
        const json: unknown = this.decode(raw, isBinary);
        const list = Array.isArray(json) ? json : [json];
        if (Array.isArray(json) && list.length > messageLimit) {
          // Answering each call past the limit would cost a write per call: a message of 100,000
          // calls 100,000 writes. Up to `messageLimit` they are answered one by one (below); a
          // longer message is too big, and closing answers all its calls on the client at once.
          this.refuseMessage(list.length);
          return;
        }
        if (Array.isArray(json) && typeof opts.maxBatchSize === 'number' && list.length > opts.maxBatchSize) {
          this.refuseBatch(list);
          return;
        }
        msgs = [];
        for (const m of list) {
          try {
            msgs.push(parseTRPCMessage(m, transformer) as RequestMessage);
          } catch (cause) {
            // A call whose input the transformer refuses may be answered under its own id (see
            // `answerDecodeErrorById`); anything else is the parse error of the whole message.
            const id = isObject(m) ? m.id : undefined;
            if (!opts.answerDecodeErrorById?.(cause) || (typeof id !== 'number' && typeof id !== 'string')) throw cause;
            const method = isObject(m) && typeof m.method === 'string' ? m.method : 'unknown';
            const path = isObject(m) && isObject(m.params) && typeof m.params.path === 'string' ? m.params.path : undefined;
            this.respondError(id, m.jsonrpc === '2.0' ? '2.0' : undefined, cause, method as never, path, undefined);
          }
        }
      } catch (cause) {
        this.respondError(null, undefined, new TRPCError({ code: 'PARSE_ERROR', cause: cause as Error }), 'unknown', undefined, undefined, false);
        return;
      }
      const ready = this.ctxReady;
      const max = limits?.maxBatch ?? Number.POSITIVE_INFINITY;
      // Queries and mutations count; subscriptions do not (the client sends all of its own again in
      // one message when it reconnects; the application's per-connection limit bounds them), nor do stops.
      let calls = 0;
      for (let i = 0; i < msgs.length; i++) {
        const m = msgs[i]!;
        if ((m.method === 'query' || m.method === 'mutation') && calls++ >= max && m.id !== null) {
          const error = new TRPCError({ code: 'BAD_REQUEST', message: `at most ${max} calls in one message: send the rest in another` });
          this.respondError(m.id, m.jsonrpc, error, m.method, m.params?.path, undefined);
          continue;
        }
        this.handle(m, i, ready).catch((cause: unknown) => this.reportInternalError(getTRPCErrorFromUnknown(cause), undefined, 'unknown', undefined));
      }
    }

    /**
     * A message of more than twice the batch limit: refused before any input is decoded, with one
     * close (1009, Message Too Big) instead of an answer per call. The client's wsLink fails the
     * calls pending on the socket, reconnects and sends its subscriptions again.
     */
    refuseMessage(calls: number): void {
      const error = new TRPCError({ code: 'BAD_REQUEST', message: `${calls} calls in one message: the limit is ${messageLimit}` });
      this.reportError(error, undefined, 'unknown', undefined);
      this.ws.close(TOO_MANY_CALLS, `more than ${messageLimit} calls in one message`);
    }

    /** tRPC's `maxBatchSize`: a longer batch is refused whole, before any input is decoded. */
    refuseBatch(list: unknown[]): void {
      const error = new TRPCError({ code: 'BAD_REQUEST', message: 'Batch call exceeds maximum size' });
      this.reportError(error, undefined, 'unknown', undefined);
      const shape = this.errorShape(error, 'unknown', undefined, undefined);
      let responded = false;
      for (const raw of list) {
        if (isObject(raw) && raw.method !== 'subscription.stop' && (typeof raw.id === 'number' || typeof raw.id === 'string')) {
          this.respond({ id: raw.id, jsonrpc: raw.jsonrpc === '2.0' ? '2.0' : undefined, error: shape });
          responded = true;
        }
      }
      if (!responded) this.respond({ id: null, error: shape });
    }

    async handle(msg: RequestMessage, batchIndex: number, ready: Promise<CtxResult>): Promise<void> {
      const { id, jsonrpc } = msg;
      if (id === null) {
        this.respondError(null, jsonrpc, new TRPCError({ code: 'PARSE_ERROR', message: '`id` is required' }), 'unknown', undefined, undefined);
        return;
      }
      if (msg.method === 'subscription.stop') {
        const sub = this.subOf(id);
        if (sub) this.stop(sub);
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
          const data = await callProcedure({ router, path, getRawInput: async () => input, ctx: this.ctx, type, signal: this.signal, batchIndex });
          if (isAsyncIterable(data) || isObservable(data)) {
            throw new TRPCError({ code: 'UNSUPPORTED_MEDIA_TYPE', message: `Cannot return an async iterable or observable from a ${type} procedure with WebSockets` });
          }
          this.respondData(id, jsonrpc, data);
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
      if (this.subOf(id) !== undefined) {
        this.respondError(id, jsonrpc, new TRPCError({ code: 'BAD_REQUEST', message: `Duplicate id ${id}` }), 'subscription', path, input);
        return;
      }
      if (this.stopping >= maxStopping) {
        // The client sees a stop at once (`stopped`), but an iterator that ignores its signal goes
        // on until it ends: without this, subscribe and stop in a loop would pile them up.
        const error = new TRPCError({ code: 'TOO_MANY_REQUESTS', message: `at most ${maxStopping} stopped subscriptions still ending per connection: wait for them to end` });
        this.respondError(id, jsonrpc, error, 'subscription', path, input);
        return;
      }
      const sub = new Subscription(fastFrames ? frameHead(id, jsonrpc) : null, this, id, jsonrpc, path, input);
      const signal = sub.abort.signal;
      this.addSub(sub);
      let result: unknown = null;
      try {
        const res = await ready;
        if (!res.ok) throw res.error;
        if (!signal.aborted && this.ws.readyState === OPEN) {
          result = await callProcedure({ router, path, getRawInput: async () => input, ctx: this.ctx, type: 'subscription', signal, batchIndex });
          if (!isAsyncIterable(result) && !isObservable(result)) {
            throw new TRPCError({ code: 'INTERNAL_SERVER_ERROR', message: `Subscription ${path} did not return an observable or a AsyncGenerator` });
          }
        }
      } catch (cause) {
        // Before the first value: the call's own error and no `stopped` (as with tRPC's adapter),
        // unless the subscription was stopped while it was being set up.
        result = null;
        sub.abort.abort();
        this.workEnded(sub);
        this.removeSub(sub);
        const error = getTRPCErrorFromUnknown(cause);
        if (!(signal.aborted && error.code === 'INTERNAL_SERVER_ERROR' && isAbortError(error.cause))) {
          this.respondError(id, jsonrpc, error, 'subscription', path, input);
          return;
        }
      }
      const started = result !== null && !signal.aborted && this.ws.readyState === OPEN;
      if (result !== null && !started) {
        // Stopped or disconnected during set-up: an observable is left unsubscribed, an iterator
        // is disposed without being consumed (its work ends when its `return()` settles).
        sub.abort.abort();
        if (!isObservable(result) && !isPushable(result)) this.dispose((result as AsyncIterable<unknown>)[Symbol.asyncIterator](), path, input, sub);
        else this.workEnded(sub);
        result = null;
      } else if (result === null) {
        // Nothing was set up (stopped or disconnected before the procedure was called).
        this.workEnded(sub);
      }
      if (started) this.respond({ id, jsonrpc, result: { type: 'started' } });
      if (started && isPushable(result)) {
        // Pushed streams: values are written from the producer's loop into the subscription (its
        // sink); the stream ends itself on abort, and its end sends `stopped` (subscriptionEnded).
        const pushed = result;
        result = null;
        pushed[PUSH](sub);
        return;
      }
      const failed = (cause: unknown) => this.subscriptionFailed(sub, cause);
      if (started) {
        const iterable = isObservable(result) ? observableToAsyncIterable(result, signal) : (result as AsyncIterable<unknown>);
        result = null;
        await this.pull(iterable[Symbol.asyncIterator](), sub, id, jsonrpc, path, input, failed);
      }
      this.subscriptionEnded(sub);
    }

    /** An error during iteration: the client gets it, then `stopped` (as with tRPC's adapter). */
    subscriptionFailed(sub: Subscription, cause: unknown): void {
      if (!sub.abort.signal.aborted) this.respondError(sub.id, sub.jsonrpc, cause, 'subscription', sub.path, sub.input);
      else if (!isAbortError(getTRPCErrorFromUnknown(cause).cause)) this.reportError(getTRPCErrorFromUnknown(cause), sub.path, 'subscription', sub.input);
    }

    /** A stop, a natural end or an error during iteration: the client waits for `stopped`. */
    subscriptionEnded(sub: Subscription): void {
      this.removeSub(sub);
      this.respond({ id: sub.id, jsonrpc: sub.jsonrpc, result: { type: 'stopped' } });
    }

    subOf(id: RequestId): Subscription | undefined {
      return this.sub !== null && this.sub.id === id ? this.sub : this.subs?.get(id);
    }

    addSub(sub: Subscription): void {
      if (this.sub === null) {
        this.sub = sub;
        return;
      }
      this.subs ??= new Map();
      this.subs.set(sub.id, sub);
    }

    /** Forgets a subscription, if it is still the one registered under its id. */
    removeSub(sub: Subscription): void {
      if (this.sub === sub) this.sub = null;
      else if (this.subs?.get(sub.id) === sub) this.subs.delete(sub.id);
    }

    /**
     * Pulls an iterator until it ends, fails or its subscription is stopped. Callbacks instead of
     * an `await` loop: no value outlives its own delivery (nothing holds the last value until the
     * next one comes), and a stop ends the subscription at once, even when the iterator ignores
     * its `signal` and never settles its pending `next()`: its `return()` is then called without
     * being waited for.
     */
    pull(iterator: AsyncIterator<unknown>, sub: Subscription, id: RequestId, jsonrpc: '2.0' | undefined, path: string, input: unknown, failed: (cause: unknown) => void): Promise<void> {
      const signal = sub.abort.signal;
      return new Promise<void>((resolve) => {
        let settled = false;
        /** A `next()` has not settled yet. */
        let pending = false;
        const canReturn = typeof iterator.return === 'function';
        const finish = (iteratorDone: boolean) => {
          if (settled) return;
          settled = true;
          signal.removeEventListener('abort', onAbort);
          // Cleanup that waits for cancellation is woken before the iterator is disposed.
          sub.abort.abort();
          // The iterator's work ends when it is done, when its `return()` settles, or (without
          // `return()`) when its pending `next()` settles.
          if (iteratorDone || (!canReturn && !pending)) this.workEnded(sub);
          else if (canReturn) this.dispose(iterator, path, input, sub);
          resolve();
        };
        const onAbort = () => finish(false);
        const onResult = (r: IteratorResult<unknown>) => {
          pending = false;
          if (settled) {
            if (!canReturn) this.workEnded(sub);
            return;
          }
          if (r.done) return finish(true);
          try {
            this.sendValue(sub, id, jsonrpc, r.value, undefined);
          } catch (cause) {
            // A value that cannot be serialized (a BigInt, a cycle): the client gets the error and
            // `stopped`, as with tRPC's adapter, and the iterator is disposed (it is not done).
            failed(cause);
            return finish(false);
          }
          step();
        };
        const onFailure = (cause: unknown) => {
          pending = false;
          if (settled) {
            if (!canReturn) this.workEnded(sub);
            // A rejection after the stop: reported to the server only (an AbortError is expected).
            const error = getTRPCErrorFromUnknown(cause);
            if (!isAbortError(error.cause) && !isAbortError(cause)) this.reportError(error, path, 'subscription', input);
            return;
          }
          failed(cause);
          finish(true);
        };
        const step = () => {
          try {
            pending = true;
            iterator.next().then(onResult, onFailure);
          } catch (cause) {
            onFailure(cause);
          }
        };
        if (signal.aborted) return finish(false);
        signal.addEventListener('abort', onAbort, { once: true });
        step();
      });
    }

    /**
     * Disposes an iterator without waiting for it; a failure is reported to the server only. The
     * subscription's work ends when `return()` settles (for a generator: once its `finally` ran).
     */
    dispose(iterator: AsyncIterator<unknown>, path: string, input: unknown, sub: Subscription): void {
      if (typeof iterator.return !== 'function') {
        this.workEnded(sub);
        return;
      }
      const report = (cause: unknown) => {
        const error = getTRPCErrorFromUnknown(cause);
        if (!isAbortError(error.cause) && !isAbortError(cause)) this.reportError(error, path, 'subscription', input);
        this.workEnded(sub);
      };
      try {
        Promise.resolve(iterator.return()).then(() => this.workEnded(sub), report);
      } catch (cause) {
        report(cause);
      }
    }

    /** A stop from the client: the subscription ends at once for it, its work is counted until it ends. */
    stop(sub: Subscription): void {
      if (sub.work === RUNNING) {
        sub.work = STOPPING;
        this.stopping++;
      }
      sub.abort.abort();
    }

    /** The server's work for a subscription has ended (idempotent). */
    workEnded(sub: Subscription): void {
      if (sub.work === STOPPING) this.stopping--;
      sub.work = ENDED;
    }

    /** The hot path: one subscription value (and the fan-out's shared encoding, if any) to its socket. */
    sendValue(sub: Subscription, id: RequestId, jsonrpc: '2.0' | undefined, value: unknown, shared: SharedFrame | undefined): void {
      const ws = this.ws;
      if (ws.readyState !== OPEN) return;
      if (!this.corked) this.cork();
      if (isTrackedEnvelope(value)) {
        if (sub.head !== null) {
          writeTextFrame(ws as never, sub.head, trackedTail(value[0], value[1], shared, serialize), counters, sub.headBytes);
          return;
        }
        this.respond({ id, jsonrpc, result: { type: 'data', data: { id: value[0], data: value[1] }, id: value[0] } });
        return;
      }
      this.respondData(id, jsonrpc, value);
    }

    /**
     * Write coalescing: frames written to this socket until the current batch of microtasks has
     * run go out in one system call (a fan-out loop writes every subscriber's frame in the same
     * batch). At a low rate this is one frame per call as before; under load the calls per frame drop.
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
      this.sub?.abort.abort();
      if (this.subs) {
        for (const sub of this.subs.values()) sub.abort.abort();
      }
      this.life?.abort();
    }
  }

  return Connection;
}
