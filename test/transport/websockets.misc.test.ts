/**
 * Ported from tRPC's own tests: the WebSocket tests of packages/tests/server/transformer.test.ts
 * ('wsLink: empty superjson up and down', 'transformer on router' > 'ws' and 'subscription'),
 * packages/tests/server/index.test.ts ('void mutation response', its wsLink half) and
 * packages/tests/server/smoke.test.ts ('subscriptions') of https://github.com/trpc/trpc at
 * 340811ba5320637fbaf48fccf3dbfdd258bd34db (MIT licence, copyright the tRPC contributors). Each test
 * runs on tRPC's `applyWSSHandler` and on ours (src/transport/), with the resources of harness.ts.
 * Changes: the imports, the handler passed to the resources, `vi.waitFor` with a longer timeout
 * (harness.ts); 'void mutation response' keeps only
 * its WebSocket half (its HTTP half does not touch a WebSocket handler) and dials the resource's
 * `wssUrl` instead of its port (each resource serves only its own path, harness.ts).
 */
import { EventEmitter } from 'node:events';
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import type { Unsubscribable } from '@trpc/server/observable';
import { observable } from '@trpc/server/observable';
import superjson from 'superjson';
import { describe, expect, expectTypeOf, test, vi } from 'vitest';
import { WebSocket } from 'ws';
import { z } from 'zod';
import { ADAPTERS, testServerAndClientResource, waitFor } from './harness.js';

describe.each(ADAPTERS)('%s', (_name, apply) => {
  describe('transformer.test.ts', () => {
    test('wsLink: empty superjson up and down', async () => {
      const transformer = superjson;
      let ws: any = null;

      const t = initTRPC.create({ transformer });

      const router = t.router({
        emptyUp: t.procedure.query(() => 'hello world'),
        emptyDown: t.procedure.input(z.string()).query(() => 'hello world'),
      });

      await using ctx = testServerAndClientResource(apply, router, {
        client({ wssUrl }) {
          ws = createWSClient({ url: wssUrl });
          return {
            links: [wsLink({ client: ws, transformer })],
          };
        },
      });
      const res1 = await ctx.client.emptyUp.query();
      expect(res1).toBe('hello world');
      const res2 = await ctx.client.emptyDown.query('');
      expect(res2).toBe('hello world');
    });

    describe('transformer on router', () => {
      test('ws', async () => {
        let wsClient: any;
        const date = new Date();
        const fn = vi.fn();
        const transformer = superjson;

        const t = initTRPC.create({ transformer });

        const router = t.router({
          hello: t.procedure.input(z.date()).query(({ input }) => {
            fn(input);
            return input;
          }),
        });

        await using ctx = testServerAndClientResource(apply, router, {
          client({ wssUrl }) {
            wsClient = createWSClient({
              url: wssUrl,
            });
            return {
              links: [wsLink({ client: wsClient, transformer })],
            };
          },
        });

        const res = await ctx.client.hello.query(date);
        expect(res.getTime()).toBe(date.getTime());
        expect((fn.mock.calls[0]![0]! as Date).getTime()).toBe(date.getTime());

        void wsClient.close(); // ported: void (the lint's floating-promise rule)
      });

      test('subscription', async () => {
        let wsClient: any;
        const date = new Date();
        const fn = vi.fn();
        const transformer = superjson;

        const t = initTRPC.create({ transformer });

        const router = t.router({
          hello: t.procedure.input(z.date()).subscription(({ input }) => {
            return observable<Date>((emit) => {
              fn(input);
              emit.next(input);
              return () => {
                // noop
              };
            });
          }),
        });

        await using ctx = testServerAndClientResource(apply, router, {
          client({ wssUrl }) {
            wsClient = createWSClient({
              url: wssUrl,
            });
            return {
              links: [wsLink({ client: wsClient, transformer })],
            };
          },
        });

        const data = await new Promise<Date>((resolve) => {
          const subscription = ctx.client.hello.subscribe(date, {
            onData: (data) => {
              subscription.unsubscribe();
              resolve(data);
            },
          });
        });

        expect(data.getTime()).toBe(date.getTime());
        expect((fn.mock.calls[0]![0]! as Date).getTime()).toBe(date.getTime());

        void wsClient.close(); // ported: void (the lint's floating-promise rule)
      });
    });
  });

  describe('index.test.ts', () => {
    // regression https://github.com/trpc/trpc/issues/527
    test('void mutation response', async () => {
      const t = initTRPC.create();

      const newRouter = t.router({
        undefined: t.procedure.mutation(() => {}),
        null: t.procedure.mutation(() => null),
      });

      await using ctx2 = testServerAndClientResource(apply, newRouter);
      const { wssUrl, router } = ctx2;

      const ws = createWSClient({
        url: wssUrl, // ported: the resource's URL (each server resource serves only its own path, harness.ts)
        WebSocket: WebSocket as any,
      });
      const wsClient = createTRPCClient<typeof router>({
        links: [wsLink({ client: ws })],
      });

      expect(await wsClient.undefined.mutate()).toMatchInlineSnapshot(`undefined`);
      expect(await wsClient.null.mutate()).toMatchInlineSnapshot(`null`);
      void ws.close(); // ported: void (the lint's floating-promise rule)
    });
  });

  describe('smoke.test.ts', () => {
    const t = initTRPC
      .context<{
        foo?: 'bar';
      }>()
      .create({
        errorFormatter({ shape }) {
          return {
            ...shape,
            data: {
              ...shape.data,
              foo: 'bar' as const,
            },
          };
        },
      });

    test('subscriptions', async () => {
      const ee = new EventEmitter();

      const subscriptionMock = vi.fn();
      const onStartedMock = vi.fn();
      const onDataMock = vi.fn();
      const onCompleteMock = vi.fn();

      const router = t.router({
        onEvent: t.procedure.input(z.number()).subscription(({ input }) => {
          subscriptionMock(input);
          return observable<number>((emit) => {
            const onData = (data: number) => {
              emit.next(data + input);
            };
            ee.on('data', onData);
            return () => {
              ee.off('data', onData);
            };
          });
        }),
      });

      await using ctx = testServerAndClientResource(apply, router, {
        client: ({ wsClient }) => ({
          links: [wsLink({ client: wsClient })],
        }),
      });

      const subscription = ctx.client.onEvent.subscribe(10, {
        onStarted: onStartedMock,
        onData: (data) => {
          expectTypeOf(data).toMatchTypeOf<number>();
          onDataMock(data);
        },
        onComplete: onCompleteMock,
      });

      expectTypeOf(subscription).toMatchTypeOf<Unsubscribable>();
      await waitFor(() => {
        expect(onStartedMock).toBeCalledTimes(1);
      });
      await waitFor(() => {
        expect(subscriptionMock).toBeCalledTimes(1);
      });
      await waitFor(() => {
        expect(subscriptionMock).toHaveBeenNthCalledWith(1, 10);
      });

      ee.emit('data', 20);
      await waitFor(() => {
        expect(onDataMock).toBeCalledTimes(1);
      });
      await waitFor(() => {
        expect(onDataMock).toHaveBeenNthCalledWith(1, 30);
      });

      subscription.unsubscribe();
      await waitFor(() => {
        expect(onCompleteMock).toBeCalledTimes(1);
      });
    });
  });
});
