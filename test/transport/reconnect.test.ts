/**
 * A server-requested reconnect with the real wsLink (`@trpc/client`): the client moves its
 * subscriptions to the new socket, and once the new socket confirms one (`started`) it sends
 * `subscription.stop` then `PING` on the old socket, and closes that socket on the first of
 * `stopped` or `PONG`. Here the server handles the old socket's two messages in each order it can
 * (in one read, `PONG` goes out before `stopped`; in two reads, `stopped` before `PONG`), with a
 * generator that ignores its signal, as in the ported "reconnect with async auth and pending
 * subscriptions": the old socket closes in both. Ours only: tRPC's handler never sends `stopped`
 * for such a generator (it waits for its `return()`), so the second order cannot happen there.
 */
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { describe, expect, test, vi } from 'vitest';
import type { RawData, WebSocket } from 'ws';
import { applyWSSHandler } from '../../src/transport/index.js';
import { testServerAndClientResource, waitFor } from './harness.js';

const t = initTRPC.context<{ user: string | null }>().create();
const router = t.router({
  iterable: t.procedure.subscription(async function* () {
    // Never resolves, and ignores its signal.
    await new Promise(() => {});
    yield null;
  }),
});

/** How the old socket's `subscription.stop` and `PING` are handled (see the top of the file). */
type Order = 'one read' | 'two reads' | 'no stopped';

describe('ours: the old socket of a server-requested reconnect closes whatever the order of its last messages', () => {
  test.each<Order>(['one read', 'two reads', 'no stopped'])('stop and PING on the old socket handled in %s', async (order) => {
    await using ctx = testServerAndClientResource((opts) => applyWSSHandler(opts), router, {
      wssServer: { createContext: async ({ info }) => ({ user: info.connectionParams?.token ?? null }) },
    });
    const sockets: WebSocket[] = [];
    const written: string[][] = [];
    const handled = vi.fn();
    /** Called once the old socket has written `stopped` (two reads). */
    let onStopped: (() => void) | null = null;
    ctx.wss.on('connection', (ws: WebSocket) => {
      const index = sockets.push(ws) - 1;
      written.push([]);
      const send = ws.send.bind(ws);
      ws.send = ((data: unknown, ...rest: never[]) => {
        written[index]!.push(String(data));
        const sent = (send as (...a: unknown[]) => void)(data, ...rest);
        if (index === 0 && String(data).includes('"stopped"')) onStopped?.();
        return sent;
      }) as typeof ws.send;
      if (index !== 0) return;
      // The old socket: its stop is held until its PING comes (one read), or its PING until the
      // server has answered the stop (two reads); or the stop never reaches the server, as for an
      // id it no longer has (no stopped: the PONG alone releases the socket).
      const emit = ws.emit.bind(ws) as (event: string, ...args: unknown[]) => boolean;
      let heldStop: unknown[] | null = null;
      ws.emit = ((event: string, ...args: unknown[]) => {
        if (event !== 'message') return emit(event, ...args);
        const text = (args[0] as RawData).toString();
        if (order === 'one read' && text.includes('"subscription.stop"')) {
          heldStop = args;
          return true;
        }
        if (order === 'one read' && text === 'PING' && heldStop) {
          emit('message', ...heldStop);
          handled();
          return emit(event, ...args);
        }
        if (order === 'no stopped' && text.includes('"subscription.stop"')) {
          handled();
          return true;
        }
        if (order === 'two reads' && text === 'PING') {
          const deliver = () => {
            handled();
            emit(event, ...args);
          };
          // Read in a later turn than the stop, once `stopped` is written.
          if (written[0]!.includes('{"id":1,"result":{"type":"stopped"}}')) setImmediate(deliver);
          else onStopped = () => setImmediate(deliver);
          return true;
        }
        return emit(event, ...args);
      }) as typeof ws.emit;
    });
    const wsClient = createWSClient({ url: ctx.wssUrl, connectionParams: { token: 'user' } });
    const client = createTRPCClient<typeof router>({ links: [wsLink({ client: wsClient })] });
    const onStarted = vi.fn();
    const sub = client.iterable.subscribe(undefined, { onStarted });
    try {
      await waitFor(() => expect(onStarted).toHaveBeenCalledTimes(1));
      ctx.wssHandler.broadcastReconnectNotification();
      await waitFor(() => expect(handled).toHaveBeenCalledTimes(1));
      await waitFor(() => expect(sockets[0]?.readyState).toBe(3));
      expect(ctx.wss.clients.size).toBe(1);
      const last = written[0]!.slice(written[0]!.indexOf('{"id":null,"method":"reconnect"}') + 1);
      // One read: PONG, then stopped. Two reads: stopped, on which the client closes the socket;
      // the PING that follows is answered only if it is read before the close.
      if (order === 'one read') expect(last).toEqual(['PONG', '{"id":1,"result":{"type":"stopped"}}']);
      else if (order === 'two reads') expect(last[0]).toBe('{"id":1,"result":{"type":"stopped"}}');
      else expect(last).toEqual(['PONG']);
      expect(written[1]).toEqual(['{"id":1,"result":{"type":"started"}}']);
      expect(onStarted).toHaveBeenCalledTimes(1);
    } finally {
      sub.unsubscribe();
      await wsClient.close();
    }
  });
});
