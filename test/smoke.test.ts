import { describe, expect, it } from 'vitest';
import { clientFor, Collector, fileServer, ofType, uuid, type RecordedEvent } from './fixture.js';

const srv = fileServer('smoke');

describe('smoke', () => {
  it('sends and receives through wsLink', async () => {
    await using alice = clientFor(srv.url, 'alice');
    await using bob = clientFor(srv.url, 'bob');
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'ops', memberIds: ['bob'] });
    const got = new Collector<RecordedEvent>();
    const sub = bob.trpc.chat.events.subscribe({ roomId: room.id }, { onData: got.push, onError: got.fail });
    await got.until((xs) => xs.some((x) => x.data.type === 'ready'), 'ready');
    const sent = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'hello' });
    await got.until((xs) => xs.some((x) => x.data.type === 'message.new'), 'message');
    const msg = got.items.find(ofType('message.new'))!;
    expect(msg.data.message.body).toBe('hello');
    expect(msg.data.message.seq).toBe(sent.seq);
    expect(msg.id).toBe(String(sent.seq));
    expect(msg.data.message.createdAt).toBeInstanceOf(Date);
    sub.unsubscribe();
  });
});
