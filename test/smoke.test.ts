import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFor, Collector, createTestDatabase, startServer, testConfig, testPrefix, uuid, type TestServer } from './helpers.js';
import { TEST_REDIS_URL } from './env.js';

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let srv: TestServer;

beforeAll(async () => {
  db = await createTestDatabase('smoke');
  srv = await startServer(testConfig({ databaseUrl: db.url, redisUrl: TEST_REDIS_URL, redisPrefix: testPrefix('smoke') }));
});
afterAll(async () => {
  await srv?.close();
  await db?.drop();
});

describe('smoke', () => {
  it('sends and receives through wsLink', async () => {
    const alice = clientFor(srv.url, 'alice');
    const bob = clientFor(srv.url, 'bob');
    try {
      const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'ops', memberIds: ['bob'] });
      const got = new Collector<any>();
      const sub = bob.trpc.chat.events.subscribe({ roomId: room.id }, { onData: got.push, onError: got.fail });
      await got.until((xs) => xs.some((x) => x.data.type === 'ready'), 'ready');
      const sent = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'hello' });
      await got.until((xs) => xs.some((x) => x.data.type === 'message.new'), 'message');
      const msg = got.items.find((x) => x.data.type === 'message.new');
      expect(msg.data.message.body).toBe('hello');
      expect(msg.data.message.seq).toBe(sent.seq);
      expect(msg.id).toBe(String(sent.seq));
      expect(msg.data.message.createdAt).toBeInstanceOf(Date);
      sub.unsubscribe();
    } finally {
      await alice.close();
      await bob.close();
    }
  });
});
