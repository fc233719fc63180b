/**
 * Ported from tRPC's own tests: packages/tests/server/websockets.memory.test.ts of https://github.com/trpc/trpc at 340811ba5320637fbaf48fccf3dbfdd258bd34db
 * (MIT licence, copyright the tRPC contributors). Each test runs on tRPC's `applyWSSHandler` and on
 * ours (src/transport/), with the server and client resources of harness.ts. Changes: the imports,
 * the handler passed to the resources, inline snapshots printed without `Object`/`Array` prototypes
 * (vitest's default), `vi.waitFor` with a longer timeout (harness.ts), and `gc` obtained without --expose-gc.
 * Tests marked `// ported:` say what else changed and why.
 */
import { EventEmitter, on } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { wsLink } from '@trpc/client';
import { initTRPC } from '@trpc/server';
import { sleep } from '@trpc/server/unstable-core-do-not-import';
import { describe, expect, it, vi } from 'vitest';
import { ADAPTERS, waitFor, testServerAndClientResource } from './harness.js';

// `global.gc` without starting the test process with --expose-gc.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

describe.each(ADAPTERS)('%s', (_name, apply) => {
  function factory() {
    const ee = new EventEmitter();
    const t = initTRPC.create();

    const appRouter = t.router({
      onData: t.procedure.subscription(({ signal }) =>
        on(ee as any, 'data', { signal }),
      ),
    });

    const opts = testServerAndClientResource(apply, appRouter, {
      wsClient: { retryDelayMs: () => 10 },
      client({ wsClient }) {
        return { links: [wsLink({ client: wsClient })] };
      },
      server: {},
      wssServer: { router: appRouter },
    });

    return { ...opts, ee };
  }

  describe('ws subscription memory', () => {
    it('should free data after each iteration (#6156)', async () => {
      await using ctx = factory();

      const onStartedMock = vi.fn();
      const onDataLengthMock = vi.fn();
      const subscription = ctx.client.onData.subscribe(undefined, {
        onStarted() {
          onStartedMock();
        },
        onData(data) {
          expect(Array.isArray(data)).toBe(true);
          onDataLengthMock(data.length);
        },
      });

      await waitFor(() => {
        expect(onStartedMock).toHaveBeenCalled();
      });

      const refs = [emitData(), emitData()];

      await waitFor(() => {
        expect(onDataLengthMock).toHaveBeenCalledTimes(2);
      });

      await sleep(0);
      gc();

      expect(refs[0]!.deref()).toBeUndefined();
      expect(refs[1]!.deref()).toBeUndefined();

      subscription.unsubscribe();

      function emitData(): WeakRef<never[]> {
        const data: never[] = [];
        const ref = new WeakRef(data);
        ctx.ee.emit('data', data);
        return ref;
      }
    });
  });
});
