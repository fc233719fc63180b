/**
 * What the page's threads and search jumps stand on in the client package: RoomTimeline keeps
 * thread summaries (`replyCount`, `lastReplyAt`) live, and `historyAround` loads the messages
 * around a seq. Against a real server: its answers and events are what the timeline is fed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { historyAround, RoomTimeline, type Message, type RoomEvent, type ThreadSummary } from '../client/index.js';
import { clientFor, Collector, dispose, freePort, messageAt, testEnv, uuid, type TestEnv, type TestServer } from './fixture.js';

let env: TestEnv;
let srv: TestServer;
beforeAll(async () => {
  env = await testEnv('client-threads');
  srv = await env.startServer();
});
afterAll(() => dispose(env));

const msg = (seq: number, extra: Partial<Message> = {}): Message => messageAt(seq, `body ${seq}`, { createdAt: new Date(1_000 * seq), ...extra });

const summary = (rootId: string, replyCount: number, lastReplyAt: number | null): ThreadSummary => ({
  rootId,
  replyCount,
  lastReplyAt: lastReplyAt === null ? null : new Date(lastReplyAt),
});

describe('RoomTimeline thread summaries', () => {
  it('the summary a reply\'s event or a reply deletion\'s event carries is set on the root, never added to: a replay whose messages are as they are now counts nothing twice', () => {
    const t = new RoomTimeline('me');
    t.load([msg(1)]);
    t.lastSeq = 1;
    const root = (id: string) => t.byMessageId(id)!;
    // Replayed after a resume: a reply deleted since (its message as it is now), then its deletion.
    const gone = msg(2, { replyToId: 'm1', body: null, deletedAt: new Date(4_000) });
    t.apply({ type: 'message.new', roomId: 'r', seq: 2, message: gone, thread: summary('m1', 1, 2_000) });
    expect(root('m1')).toMatchObject({ replyCount: 1, lastReplyAt: new Date(2_000) });
    t.apply({ type: 'message.deleted', roomId: 'r', seq: 4, message: gone, thread: summary('m1', 0, null) });
    expect(root('m1')).toMatchObject({ replyCount: 0, lastReplyAt: null });
    // A root in the same replay already counts its reply (as it is now): the reply's event does not add to it.
    t.apply({ type: 'message.new', roomId: 'r', seq: 5, message: msg(5, { replyCount: 1, lastReplyAt: new Date(6_000) }) });
    t.apply({ type: 'message.new', roomId: 'r', seq: 6, message: msg(6, { replyToId: 'm5' }), thread: summary('m5', 1, 6_000) });
    expect(root('m5').replyCount).toBe(1);
    // My reply: the send's answer is counted at once, its event then sets the server's summary.
    expect(t.insert(msg(7, { replyToId: 'm5', senderId: 'me' }))).toBe(true);
    expect(root('m5').replyCount).toBe(2);
    t.apply({ type: 'message.new', roomId: 'r', seq: 7, message: msg(7, { replyToId: 'm5', senderId: 'me' }), thread: summary('m5', 2, 7_000) });
    expect(root('m5')).toMatchObject({ replyCount: 2, lastReplyAt: new Date(7_000) });
    // The deletion of a reply that is not loaded sets its root's summary all the same.
    t.apply({ type: 'message.deleted', roomId: 'r', seq: 8, message: msg(3, { replyToId: 'm5', body: null, deletedAt: new Date() }), thread: summary('m5', 1, 7_000) });
    expect(root('m5').replyCount).toBe(1);
    // A page read before that deletion does not take the summary back.
    t.load([msg(5, { replyCount: 2, lastReplyAt: new Date(7_000) }), msg(7, { replyToId: 'm5', senderId: 'me' })]);
    expect(root('m5').replyCount).toBe(1);
    expect(t.messages().map((m) => [m.seq, m.replyCount])).toEqual([
      [1, 0],
      [2, 0],
      [5, 1],
      [6, 0],
      [7, 0],
    ]);
  });

  it('events without a summary (recorded before events carried one): a reply that comes in raises its root once (event or send answer, in either order); a deleted one lowers it; history never does', () => {
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
    const applied = new Collector<RoomEvent>();
    const onEvent = (e: RoomEvent) => {
      if (t.apply(e)) applied.push(e);
    };
    const sub = alice.subscribeRoom(room.id, { onEvent, onError: applied.fail }, { lastEventId: String(t.lastSeq) });
    try {
      const r1 = await bob.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply 1', replyToId: root.id });
      const r2 = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply 2', replyToId: root.id });
      t.insert(r2);
      const r3 = await bob.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply 3', replyToId: root.id });
      await bob.trpc.chat.delete.mutate({ messageId: r1.id });
      await applied.until((es) => es.some((e) => e.type === 'message.deleted' && e.message.id === r1.id), 'the deletion of reply 1');
      const server = await alice.trpc.chat.thread.query({ messageId: root.id });
      expect(server.root.replyCount).toBe(2);
      expect(t.byMessageId(root.id)).toMatchObject({ replyCount: 2, lastReplyAt: server.root.lastReplyAt });
      expect(server.replies.map((m) => m.id)).toEqual([r1.id, r2.id, r3.id]);
    } finally {
      sub.unsubscribe();
    }
  });
});

describe('thread summaries carried by the events', () => {
  it('the events of a reply and of its deletion carry the root\'s summary as it was then, live and replayed alike; other messages carry none', async () => {
    await using alice = clientFor(srv.url, 'sum-alice');
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'summaries' });
    const root = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'root' });
    // A fresh stream: `ready` at the root's seq, then only live events.
    const live = new Collector<RoomEvent>();
    const liveSub = alice.subscribeRoom(room.id, { onEvent: live.push, onError: live.fail });
    const replay = new Collector<RoomEvent>();
    try {
      expect(await live.first((e) => e.type === 'ready', 'ready')).toMatchObject({ seq: root.seq });
      const r1 = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply 1', replyToId: root.id });
      const r2 = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply 2', replyToId: root.id });
      await alice.trpc.chat.delete.mutate({ messageId: r1.id });
      const plain = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'not a reply' });
      const upToPlain = (es: RoomEvent[]) => es.some((e) => e.type === 'message.new' && e.message.id === plain.id);
      await live.until(upToPlain, 'the live events');
      // The same events replayed from the log, after all of them committed.
      const replaySub = alice.subscribeRoom(room.id, { onEvent: replay.push, onError: replay.fail }, { lastEventId: String(root.seq) });
      try {
        await replay.until(upToPlain, 'the replayed events');
      } finally {
        replaySub.unsubscribe();
      }
      const summaries = (es: RoomEvent[]) =>
        es.flatMap((e) => (e.type === 'message.new' || e.type === 'message.deleted' ? [[e.type, e.message.id, 'thread' in e ? e.thread : 'none']] : []));
      const expected = [
        ['message.new', r1.id, { rootId: root.id, replyCount: 1, lastReplyAt: r1.createdAt }],
        ['message.new', r2.id, { rootId: root.id, replyCount: 2, lastReplyAt: r2.createdAt }],
        ['message.deleted', r1.id, { rootId: root.id, replyCount: 1, lastReplyAt: r2.createdAt }],
        ['message.new', plain.id, 'none'],
      ];
      expect(summaries(live.items)).toEqual(expected);
      expect(summaries(replay.items)).toEqual(expected);
    } finally {
      liveSub.unsubscribe();
    }
  });

  it('after a resume that replays a reply deleted while away and a root with its reply, the timeline shows the counts the server has', async () => {
    const port = await freePort();
    let a = await env.startServer({ port });
    const u = uuid().slice(0, 8);
    await using viewer = clientFor(a.url, `tv-${u}`);
    await using author = clientFor(srv.url, `ta-${u}`);
    const room = await author.trpc.room.create.mutate({ kind: 'group', name: 'threads-resume', memberIds: [`tv-${u}`] });
    const root1 = await author.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'root 1' });

    const changes = new Collector<RoomEvent | null>();
    const view = viewer.openRoom(room.id, { onChange: (e) => changes.push(e), onError: (e) => changes.fail(e) });
    try {
      await view.loaded;
      expect(view.timeline.byMessageId(root1.id)!.replyCount).toBe(0);
      // The viewer's node goes away; meanwhile, on the other node: a reply to the loaded root that
      // is deleted again, and a new root with one reply.
      await a.close();
      const gone = await author.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply, deleted', replyToId: root1.id });
      await author.trpc.chat.delete.mutate({ messageId: gone.id });
      const root2 = await author.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'root 2' });
      const reply2 = await author.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'reply 2', replyToId: root2.id });
      const last = await author.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'last' });

      // Back on the same port: the subscription resumes from its last seq and replays all of it.
      a = await env.startServer({ port });
      await changes.until((es) => es.some((e) => e?.type === 'message.new' && e.message.id === last.id), 'the replay up to the last message');
      expect(view.timeline.byMessageId(reply2.id)).toBeDefined();
      const [server1, server2] = await Promise.all([root1, root2].map((r) => author.trpc.chat.thread.query({ messageId: r.id })));
      expect([server1!.root.replyCount, server2!.root.replyCount]).toEqual([0, 1]);
      const shown = [root1, root2].map((r) => view.timeline.byMessageId(r.id)!);
      expect(shown.map((m) => [m.replyCount, m.lastReplyAt])).toEqual([
        [0, null],
        [1, server2!.root.lastReplyAt],
      ]);
    } finally {
      view.close();
      await a.close();
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
