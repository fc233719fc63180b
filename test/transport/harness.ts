/**
 * The server and client resources of tRPC's own tests (packages/server/src/__tests__/
 * trpcServerResource.ts, packages/client/src/__tests__/testClientResource.ts and
 * packages/server/src/__tests__/waitError.ts of https://github.com/trpc/trpc, MIT licence,
 * copyright the tRPC contributors), ported so that every test runs on two WebSocket handlers:
 * tRPC's `applyWSSHandler` and ours (src/transport/). HTTP links are served by tRPC's standalone
 * handler as upstream; the WebSocket server is the one under test.
 *
 * One change from upstream: each server resource serves only its own path (`wssUrl` ends with it),
 * and `wssPort` can be given. Many upstream tests never close their wsClient: it goes on dialing
 * its server's URL after the test (every 50 ms with the factory's `retryDelayMs`), and a later
 * server that the OS gave the same port took it as a client of its own, so a test that counts
 * `wss.clients` saw one too many (harness.test.ts shows it).
 */
import http, { type IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import {
  type CreateTRPCClientOptions,
  createTRPCClient,
  createWSClient,
  httpBatchLink,
  httpBatchStreamLink,
  httpLink,
  type Operation,
  type OperationResultEnvelope,
  splitLink,
  type TRPCClientError,
  type WebSocketClientOptions,
  wsLink,
} from '@trpc/client';
import type { AnyTRPCRouter } from '@trpc/server';
import { type CreateHTTPHandlerOptions, createHTTPHandler } from '@trpc/server/adapters/standalone';
import { applyWSSHandler as trpcApplyWSSHandler, type WSSHandlerOptions } from '@trpc/server/adapters/ws';
import type { HTTPErrorHandler } from '@trpc/server/http';
import { tap } from '@trpc/server/observable';
import { makeAsyncResource } from '@trpc/server/unstable-core-do-not-import';
import { expect, type Mock, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { applyWSSHandler as ourApplyWSSHandler } from '../../src/transport/index.js';

globalThis.WebSocket = WebSocket as never;

/** A WebSocket handler under test: tRPC's `applyWSSHandler` or ours (same options). */
export type ApplyWSSHandler = (opts: WSSHandlerOptions<AnyTRPCRouter>) => { broadcastReconnectNotification(): void };

/** Every ported test runs once per entry: `describe.each(ADAPTERS)('%s', (_name, apply) => ...)`. */
export const ADAPTERS: [string, ApplyWSSHandler][] = [
  ['trpc applyWSSHandler', (opts) => trpcApplyWSSHandler(opts)],
  ['ours', (opts) => ourApplyWSSHandler(opts)],
];

export interface TRPCServerResourceOpts<TRouter extends AnyTRPCRouter> {
  server?: Partial<CreateHTTPHandlerOptions<TRouter>>;
  wssServer?: Partial<WSSHandlerOptions<TRouter>>;
  /** The WebSocket server's port (default: any free one). */
  wssPort?: number;
}

/** Server resources made by this process: each gets a path of its own (see the top of the file). */
let serverResources = 0;

export const __getSpy = <T extends (...args: any[]) => void>(): Mock<T> => vi.fn(() => {}) as unknown as Mock<T>;

export function trpcServerResource<TRouter extends AnyTRPCRouter>(apply: ApplyWSSHandler, router: TRouter, opts?: TRPCServerResourceOpts<TRouter>) {
  type OnError = HTTPErrorHandler<TRouter, IncomingMessage>;
  type CreateContext = NonNullable<CreateHTTPHandlerOptions<TRouter>['createContext']>;
  const onErrorSpy = __getSpy<OnError>();
  const createContextSpy = __getSpy<CreateContext>();
  const serverOverrides: Partial<CreateHTTPHandlerOptions<TRouter>> = opts?.server ?? {};
  const onReqAborted = __getSpy();
  const handler = createHTTPHandler({
    router,
    ...serverOverrides,
    onError(it) {
      onErrorSpy(it);
      return opts?.server?.onError?.(it);
    },
    async createContext(it) {
      (createContextSpy as any)(it);
      it.req.on('aborted', onReqAborted);
      return opts?.server?.createContext?.(it) ?? it;
    },
  } as CreateHTTPHandlerOptions<TRouter>);
  const onRequestSpy = __getSpy<typeof handler>();
  const httpServer = http.createServer((...args) => {
    onRequestSpy(...args);
    handler(...args);
  });
  const connections = new Set<Socket>();
  httpServer.on('connection', (conn) => {
    connections.add(conn);
    conn.once('close', () => connections.delete(conn));
  });

  const wssPath = `/${process.pid}-${++serverResources}`;
  let wss = new WebSocketServer({ port: opts?.wssPort ?? 0, path: wssPath });
  const wssPort = (wss.address() as AddressInfo).port;
  const applyWSSHandlerOpts: WSSHandlerOptions<TRouter> = {
    get wss() {
      return wss;
    },
    router,
    ...((opts?.wssServer as any) ?? {}),
    createContext(it: any) {
      return opts?.wssServer?.createContext?.(it) ?? it;
    },
  } as WSSHandlerOptions<TRouter>;
  let wssHandler = apply(applyWSSHandlerOpts as never);
  const wssUrl = `ws://localhost:${wssPort}${wssPath}`;
  const server = httpServer.listen(0);
  const httpPort = (server.address() as AddressInfo).port;
  const httpUrl = `http://localhost:${httpPort}`;

  const ctx = {
    close: async () => {
      if (!server.listening) throw new Error('Server is not running');
      ctx.destroyConnections();
      await Promise.all([new Promise((resolve) => server.close(resolve)), new Promise((resolve) => wss.close(resolve))]);
    },
    open: () => {
      if (server.listening) throw new Error('Server is already running');
      server.listen(httpPort);
      wss = new WebSocketServer({ port: wssPort, path: wssPath });
      wssHandler = apply(applyWSSHandlerOpts as never);
    },
    router,
    wssPort,
    httpUrl,
    wssUrl,
    applyWSSHandlerOpts,
    get wssHandler() {
      return wssHandler;
    },
    connections,
    get wss() {
      return wss;
    },
    onErrorSpy,
    createContextSpy,
    onRequestSpy,
    onReqAborted,
    /** Destroys all open connections to the server. */
    destroyConnections: () => {
      for (const client of ctx.wss.clients) client.close();
      for (const conn of connections) {
        conn.emit('close');
        conn.destroy();
      }
    },
  };
  return makeAsyncResource(ctx, ctx.close);
}

export interface TestServerAndClientResourceOpts<TRouter extends AnyTRPCRouter> extends TRPCServerResourceOpts<TRouter> {
  wsClient?: Partial<WebSocketClientOptions>;
  client?: Partial<CreateTRPCClientOptions<TRouter>> | ((opts: { httpUrl: string; wssUrl: string; wsClient: ReturnType<typeof createWSClient>; transformer: any }) => Partial<CreateTRPCClientOptions<TRouter>>);
  clientLink?: 'httpBatchLink' | 'httpBatchStreamLink' | 'httpLink' | 'wsLink';
}

export function testServerAndClientResource<TRouter extends AnyTRPCRouter>(apply: ApplyWSSHandler, router: TRouter, opts?: TestServerAndClientResourceOpts<TRouter>) {
  const serverResource = trpcServerResource(apply, router, opts);
  const linkSpy = {
    up: __getSpy<(op: Operation<unknown>) => void>(),
    next: __getSpy<(result: OperationResultEnvelope<unknown, TRPCClientError<TRouter>>) => void>(),
    error: __getSpy<(result: TRPCClientError<TRouter>) => void>(),
    complete: __getSpy<() => void>(),
  };
  const wsClient = createWSClient({ url: serverResource.wssUrl, lazy: { enabled: true, closeMs: 0 }, ...opts?.wsClient });
  const transformer = router._def._config.transformer as any;
  const links = {
    httpLink: httpLink({ url: serverResource.httpUrl, transformer }),
    httpBatchLink: httpBatchLink({ url: serverResource.httpUrl, transformer }),
    wsLink: wsLink({ client: wsClient, transformer }),
    httpBatchStreamLink: httpBatchStreamLink({ url: serverResource.httpUrl, transformer }),
  };
  const trpcClientOptions = {
    links: [
      () => (o: any) => {
        linkSpy.up(o.op);
        return o.next(o.op).pipe(
          tap({
            next: (result: any) => linkSpy.next(result),
            error: (error: any) => linkSpy.error(error),
            complete: () => linkSpy.complete(),
          }),
        );
      },
      opts?.clientLink
        ? links[opts.clientLink]
        : splitLink({
            condition: (op) => op.context?.['ws'] === true || op.type === 'subscription',
            true: links.wsLink,
            false: splitLink({
              condition: (op) => op.context['batch'] === false,
              true: links.httpLink,
              false: splitLink({ condition: (op) => op.context['stream'] === false, true: links.httpBatchLink, false: links.httpBatchStreamLink }),
            }),
          }),
    ],
    ...(opts?.client
      ? typeof opts.client === 'function'
        ? opts.client({ httpUrl: serverResource.httpUrl, wssUrl: serverResource.wssUrl, wsClient, transformer })
        : opts.client
      : {}),
  } as CreateTRPCClientOptions<TRouter>;
  const client = createTRPCClient<TRouter>(trpcClientOptions);
  return Object.assign(serverResource, { wsClient, client, trpcClientOptions, linkSpy });
}

type Constructor<T extends object = object> = new (...args: any[]) => T;

export async function waitError<TError extends Error = Error>(fnOrPromise: Promise<unknown> | (() => unknown), errorConstructor?: Constructor<TError>): Promise<TError> {
  let res: unknown;
  try {
    res = typeof fnOrPromise === 'function' ? await fnOrPromise() : await fnOrPromise;
  } catch (cause) {
    if (!(cause instanceof Error) && !(cause instanceof DOMException)) throw new Error('Expected function to throw an error, but it threw something else');
    if (errorConstructor) expect((cause as Error).name).toBe(errorConstructor.name);
    return cause as TError;
  }
  console.warn('Expected function to throw, but it did not. Result:', res);
  throw new Error('Function did not throw');
}

/**
 * `vi.waitFor` with a 15 s timeout instead of 1 s: the ported tests wait on conditions, and on a
 * loaded machine a condition met after a second is not a failure (nothing here asserts timing).
 */
export const waitFor = (<T>(callback: () => T | Promise<T>, options?: number | { timeout?: number; interval?: number }) =>
  vi.waitFor(callback, { timeout: 15_000, interval: 20, ...(typeof options === 'number' ? { timeout: options } : options) })) as typeof vi.waitFor;
