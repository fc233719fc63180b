/**
 * Typed client for the chat server. Imports only the AppRouter *type* from the server.
 *
 *   const chat = createChatClient({ url: 'http://127.0.0.1:3000', token });
 *   const room = await chat.trpc.room.create.mutate({ kind: 'group', name: 'ops' });
 *   chat.trpc.chat.events.subscribe({ roomId: room.id }, { onData: ({ id, data }) => ... });
 */
import { createTRPCClient, createWSClient, httpBatchLink, splitLink, wsLink, type TRPCClient } from '@trpc/client';
import type { inferRouterInputs, inferRouterOutputs } from '@trpc/server';
import superjson from 'superjson';
import type { AppRouter } from '../src/trpc/router.js';

export type { AppRouter };
export type RouterInputs = inferRouterInputs<AppRouter>;
export type RouterOutputs = inferRouterOutputs<AppRouter>;
/** What `chat.events` delivers to `onData`: `{ id, data }` with `id` the room seq as a string. */
export type RoomEventEnvelope = RouterOutputs['chat']['events'] extends AsyncIterable<infer T> ? T : never;
/** A room event: switch on `event.type` for full narrowing. */
export type RoomEvent = RoomEventEnvelope extends { data: infer D } ? D : never;
export type Message = RouterOutputs['chat']['send'];
export type Room = RouterOutputs['room']['get'];

export interface ChatClientOptions {
  /** Server base URL, e.g. http://127.0.0.1:3000 (tRPC is served at /trpc). */
  url: string;
  /** A fixed access token, or a function called on every (re)connect to get a fresh one. */
  token?: string;
  getToken?: () => string | Promise<string>;
  /** Send queries and mutations over the WebSocket too (default: HTTP batching). */
  allOverWebSocket?: boolean;
  /** WebSocket implementation (Node < 22 or custom); defaults to the global one. */
  WebSocket?: typeof WebSocket;
  /** Reconnect delay for attempt n: jittered exponential backoff with a floor by default. */
  retryDelayMs?: (attempt: number) => number;
  onOpen?: () => void;
  onClose?: (cause?: { code?: number }) => void;
}

/** Jittered exponential backoff: 250 ms floor, 10 s cap, never a tight loop. */
export function backoff(attempt: number): number {
  const base = Math.min(10_000, 250 * 2 ** Math.min(attempt, 6));
  return Math.max(250, Math.round(base / 2 + Math.random() * (base / 2)));
}

export interface ChatClient {
  trpc: TRPCClient<AppRouter>;
  ws: ReturnType<typeof createWSClient>;
  close(): Promise<void>;
}

export function createChatClient(opts: ChatClientOptions): ChatClient {
  const base = opts.url.replace(/\/+$/, '');
  const tokenOf = async () => (opts.getToken ? await opts.getToken() : opts.token);
  const ws = createWSClient({
    url: `${base.replace(/^http/, 'ws')}/trpc`,
    connectionParams: async () => {
      const token = await tokenOf();
      return token ? { token } : {};
    },
    retryDelayMs: opts.retryDelayMs ?? backoff,
    ...(opts.WebSocket ? { WebSocket: opts.WebSocket } : {}),
    ...(opts.onOpen ? { onOpen: opts.onOpen } : {}),
    ...(opts.onClose ? { onClose: opts.onClose } : {}),
  });
  const wsl = wsLink<AppRouter>({ client: ws, transformer: superjson });
  const trpc = createTRPCClient<AppRouter>({
    links: [
      opts.allOverWebSocket
        ? wsl
        : splitLink({
            condition: (op) => op.type === 'subscription',
            true: wsl,
            false: httpBatchLink({
              url: `${base}/trpc`,
              transformer: superjson,
              headers: async () => {
                const token = await tokenOf();
                return token ? { authorization: `Bearer ${token}` } : {};
              },
            }),
          }),
    ],
  });
  return {
    trpc,
    ws,
    async close() {
      await ws.close();
    },
  };
}
