/**
 * The test resources themselves (harness.ts): a server resource must only ever count its own test's
 * clients. Many ported upstream tests never close their wsClient, which then goes on dialing its
 * server's URL after the test; a later test whose server got the same port from the OS counted it
 * among its `wss.clients` ("reconnect with async auth and pending subscriptions" waits for exactly
 * one client after a reconnect, and failed once that way in CI: two clients after its 15 s wait).
 */
import { createWSClient } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { describe, expect, test, vi } from 'vitest';
import { ADAPTERS, trpcServerResource, waitFor } from './harness.js';

describe.each(ADAPTERS)('%s', (_name, apply) => {
  const t = initTRPC.create();
  const router = t.router({ q: t.procedure.query(() => 'ok') });

  test('a wsClient an earlier test left running is refused by a later server on the same port: it never counts among its clients', async () => {
    const onOpen = vi.fn();
    const onClose = vi.fn();
    let port: number;
    let leaked: ReturnType<typeof createWSClient>;
    {
      await using earlier = trpcServerResource(apply, router);
      port = earlier.wssPort;
      leaked = createWSClient({ url: earlier.wssUrl, retryDelayMs: () => 10, onOpen, onClose });
      await waitFor(() => expect(earlier.wss.clients.size).toBe(1));
    }
    try {
      // Its server is gone; the client is not closed and keeps dialing the same URL.
      await waitFor(() => expect(onClose.mock.calls.length).toBeGreaterThanOrEqual(3));
      await using later = trpcServerResource(apply, router, { wssPort: port });
      const dials = onClose.mock.calls.length;
      // Either it connects to the later server, or that server refuses it (each dial then closes).
      await waitFor(() => expect(onOpen.mock.calls.length > 1 || onClose.mock.calls.length > dials + 1).toBe(true));
      expect(onOpen).toHaveBeenCalledTimes(1);
      expect(later.wss.clients.size).toBe(0);
    } finally {
      await leaked.close();
    }
  });
});
