import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_REDIS_URL } from './env.js';
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import superjson from 'superjson';
import type { AppRouter } from '../src/trpc/router.js';
import { clientFor, Collector, createTestDatabase, TEST_SECRET, testPrefix, tokenFor, uuid } from './helpers.js';
import { ProcGroup } from './proc.js';

/** SIGTERM on a real server process: drain, tell clients to reconnect, exit 0 within the bound. */
let db: Awaited<ReturnType<typeof createTestDatabase>>;
const procs = new ProcGroup();

beforeAll(async () => {
  db = await createTestDatabase('drain');
});
afterAll(async () => {
  await procs.killAll();
  await db?.drop();
});

describe('graceful shutdown of a process', () => {
  it('on SIGTERM the node drains, its clients resume on the other node, and it exits 0 within SHUTDOWN_TIMEOUT_MS', async () => {
    const env = {
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      REDIS_PREFIX: testPrefix('drain'),
      JWT_SECRET: TEST_SECRET,
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      SHUTDOWN_TIMEOUT_MS: '8000',
    };
    const a = await procs.spawn({ label: 'drain-a', env });
    const b = await procs.spawn({ label: 'drain-b', env });
    let target = a.url;
    const owner = clientFor(b.url, 'd-owner');
    try {
      const room = await owner.trpc.room.create.mutate({ kind: 'group', name: 'drain', memberIds: ['d-reader'] });
      // The reader's socket follows `target`, as a load balancer would route its reconnect.
      const ws = createWSClient({
        url: () => `${target.replace('http', 'ws')}/trpc`,
        connectionParams: () => ({ token: tokenFor('d-reader') }),
        retryDelayMs: () => 50,
      });
      const trpc = createTRPCClient<AppRouter>({ links: [wsLink({ client: ws, transformer: superjson })] });
      const got = new Collector<{ id: string; data: any }>();
      const sub = trpc.chat.events.subscribe({ roomId: room.id }, { onData: got.push, onError: got.fail });
      await got.until((xs) => xs.some((x) => x.data.type === 'ready'), 'ready');
      const first = await owner.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'before' });
      await got.until((xs) => xs.some((x) => x.data.message?.id === first.id), 'first message');

      // Route reconnects to B, then SIGTERM A.
      target = b.url;
      const started = Date.now();
      a.child.kill('SIGTERM');
      const exit = await a.exited;
      const took = Date.now() - started;
      console.log(`[drain] node exited with ${JSON.stringify(exit)} after ${took} ms`);
      expect(exit).toEqual({ code: 0, signal: null });
      expect(took).toBeLessThan(8000);

      const after = await owner.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'after' });
      await got.until((xs) => xs.some((x) => x.data.message?.id === after.id), 'message after the drain');
      const seqs = got.items.filter((x) => x.data.type === 'message.new').map((x) => x.data.seq);
      expect(seqs).toEqual([first.seq, after.seq]);
      expect(got.items.filter((x) => x.data.type === 'ready')).toHaveLength(1);
      sub.unsubscribe();
      await ws.close();
    } finally {
      await owner.close();
    }
  });
});
