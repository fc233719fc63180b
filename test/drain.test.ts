import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFor, Collector, dispose, ofType, testEnv, uuid, wsClient, type RecordedEvent, type TestEnv } from './fixture.js';

/** SIGTERM on a real server process: drain, tell clients to reconnect, exit 0 within the bound. */
let env: TestEnv;

beforeAll(async () => {
  env = await testEnv('drain');
});
afterAll(() => dispose(env));

describe('graceful shutdown of a process', () => {
  it('on SIGTERM the node drains, its clients resume on the other node, and it exits 0 within SHUTDOWN_TIMEOUT_MS', async () => {
    const extra = { SHUTDOWN_TIMEOUT_MS: '8000' };
    const a = await env.startNode('drain-a', extra);
    const b = await env.startNode('drain-b', extra);
    let target = a.url;
    await using owner = clientFor(b.url, 'd-owner');
    const room = await owner.trpc.room.create.mutate({ kind: 'group', name: 'drain', memberIds: ['d-reader'] });
    // The reader's socket follows `target`, as a load balancer would route its reconnect.
    await using reader = wsClient({ url: () => target, userId: 'd-reader' });
    const got = new Collector<RecordedEvent>();
    const sub = reader.trpc.chat.events.subscribe({ roomId: room.id }, { onData: got.push, onError: got.fail });
    await got.until((xs) => xs.some((x) => x.data.type === 'ready'), 'ready');
    const first = await owner.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'before' });
    await got.until((xs) => xs.some((x) => 'message' in x.data && x.data.message.id === first.id), 'first message');

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
    await got.until((xs) => xs.some((x) => 'message' in x.data && x.data.message.id === after.id), 'message after the drain');
    const seqs = got.items.filter(ofType('message.new')).map((x) => x.data.seq);
    expect(seqs).toEqual([first.seq, after.seq]);
    expect(got.items.filter((x) => x.data.type === 'ready')).toHaveLength(1);
    sub.unsubscribe();
  });
});
