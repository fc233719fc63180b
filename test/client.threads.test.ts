/**
 * What the page's threads and search jumps stand on in the client package: RoomTimeline keeps
 * thread summaries (`replyCount`, `lastReplyAt`) live, and `historyAround` loads the messages
 * around a seq. Against a real server: its answers and events are what the timeline is fed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { historyAround, RoomTimeline, type Message } from '../client/index.js';
import { clientFor, dispose, messageAt, testEnv, uuid, type TestEnv, type TestServer } from './fixture.js';

let env: TestEnv;
let srv: TestServer;
beforeAll(async () => {
  env = await testEnv('client-threads');
  srv = await env.startServer();
});
afterAll(() => dispose(env));

const msg = (seq: number, extra: Partial<Message> = {}): Message => messageAt(seq, `body ${seq}`, { createdAt: new Date(1_000 * seq), ...extra });

describe('RoomTimeline thread summaries', () => {
  it('a reply that comes in raises its root once (event or send answer, in either order); a deleted one lowers it; history never does', () => {
    const t = new RoomTimeline('me');
    // The root as history has it: two replies counted by the server, one of them loaded.
    t.load([msg(1, { replyCount: 2, lastReplyAt: new Date(3_000) }), msg(3, { replyToId: 'm1' })]);
    expect(t.byMessageId('m1')!.replyCount).toBe(2);
    // A reply's event: counted.
    t.apply({ type: 'message.new', roomId: 'r', seq: 5, message: msg(5, { replyToId: 'm1' }) });
    expect(t.byMessageId('m1')).toMatchObject({ replyCount: 3, lastReplyAt: new Date(5_000) });
    // My reply: the send's answer first, then its event: counted once.
    expect(t.insert(msg(6, { replyToId: 'm1', senderId: 'me' }))).toBe(true);
    t.apply({ type: 'message.new', roomId: 'r', seq: 6, message: msg(6, { replyToId: 'm1', senderId: 'me' }) });
    expect(t.byMessageId('m1')!.replyCount).toBe(4);
    // Replayed after a resume: ignored.
    expect(t.apply({ type: 'message.new', roomId: 'r', seq: 5, message: msg(5, { replyToId: 'm1' }) })).toBe(false);
    expect(t.byMessageId('m1')!.replyCount).toBe(4);
    expect(t.replies('m1').map((m) => m.seq)).toEqual([3, 5, 6]);
    // A reply deleted: one less; the deletion of a deleted one changes nothing.
    const gone = msg(5, { replyToId: 'm1', body: null, deletedAt: new Date() });
    t.apply({ type: 'message.deleted', roomId: 'r', seq: 7, message: gone });
    expect(t.byMessageId('m1')!.replyCount).toBe(3);
    // The root's own event carries the server's count, which wins.
    t.apply({ type: 'message.edited', roomId: 'r', seq: 8, message: msg(1, { replyCount: 3, body: 'edited', editedAt: new Date() }) });
    expect(t.byMessageId('m1')).toMatchObject({ replyCount: 3, body: 'edited' });
    // A reply whose root is not loaded changes nothing else.
    t.apply({ type: 'message.new', roomId: 'r', seq: 9, message: msg(9, { replyToId: 'elsewhere' }) });
    expect(t.messages().map((m) => m.replyCount)).toEqual([3, 0, 0, 0, 0]);
  });

  it('against the server: the live count equals what the server answers afterwards', async () => {
    await using alice = clientFor(srv.url, 'thr-alice');
    await using bob = clientFor(srv.url, 'thr-bob');
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'threads', memberIds: ['thr-bob'] });
    const root = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'root' });
    const t = new RoomTimeline('thr-alice');
    const { lastSeq } = await alice.trpc.room.get.query({ roomId: room.id });
    const page = await alice.trpc.chat.history.query({ roomId: room.id });
    t.load(page.messages);
    t.lastSeq = Math.max(lastSeq, page.messages.at(-1)?.seq ?? -1);
    const got: string[] = [];
    const sub = alice.subscribeRoom(room.id, { onEvent: (e) => (t.apply(e) && e.type === 'message.new' ? got.push(e.message.id) : null) }, { lastEventId: String(t.lastSeq) });
    try {
      const r1 = await bob.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply 1', replyToId: root.id });
      const r2 = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply 2', replyToId: root.id });
      t.insert(r2);
      const r3 = await bob.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply 3', replyToId: root.id });
      await bob.trpc.chat.delete.mutate({ messageId: r1.id });
      const until = Date.now() + 10_000;
      while (!(got.includes(r3.id) && t.byMessageId(r1.id)?.deletedAt) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      const server = await alice.trpc.chat.thread.query({ messageId: root.id });
      expect(server.root.replyCount).toBe(2);
      expect(t.byMessageId(root.id)!.replyCount).toBe(2);
      expect(server.replies.map((m) => m.id)).toEqual([r1.id, r2.id, r3.id]);
    } finally {
      sub.unsubscribe();
    }
  });
});

describe('historyAround', () => {
  it('answers the message at a seq with its neighbours, and whether there is more on either side', async () => {
    await using api = clientFor(srv.url, 'around');
    const room = await api.trpc.room.create.mutate({ kind: 'group', name: 'around' });
    const sent: Message[] = [];
    for (let i = 1; i <= 30; i++) sent.push(await api.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `n${i}` }));
    const hit = sent[14]!;
    const a = await historyAround(api, room.id, hit.seq, { older: 3, newer: 2 });
    expect(a.messages.map((m) => m.body)).toEqual(['n12', 'n13', 'n14', 'n15', 'n16', 'n17']);
    expect(a).toMatchObject({ hasOlder: true, hasNewer: true });
    const edge = await historyAround(api, room.id, sent[1]!.seq, { older: 5, newer: 40 });
    expect(edge.messages[0]!.body).toBe('n1');
    expect(edge.messages.at(-1)!.body).toBe('n30');
    expect(edge).toMatchObject({ hasOlder: false, hasNewer: false });
  });
});
