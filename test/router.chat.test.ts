import { beforeAll, describe, expect, it } from 'vitest';
import { actor, callerFor, expectTRPCError, fileServer, openEvents, openLive, roomKit, setMemberRole, uuid, type MessageDto } from './fixture.js';

const t = fileServer('rchat');

const kit = roomKit(() => t);
const { users, as, groupRoom, allMessages } = kit;

/** Sends `count` messages one after another; returns them in send order. */
async function sendMany(who: string, roomId: string, count: number, prefix = 'm'): Promise<MessageDto[]> {
  const out: MessageDto[] = [];
  for (let i = 0; i < count; i++) out.push(await as(who).chat.send({ roomId, clientId: uuid(), body: `${prefix}${i}` }));
  return out;
}

describe('chat.send', () => {
  it('returns the message with seq increasing by one per durable event in the room', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!]);
    expect(room.lastSeq).toBe(2);
    const clientId = uuid();
    const m1 = await as(alice!).chat.send({ roomId: room.id, clientId, body: 'hello' });
    expect(m1).toMatchObject({
      roomId: room.id,
      seq: 3,
      senderId: alice,
      body: 'hello',
      kind: 'text',
      attachments: [],
      replyToId: null,
      mentions: [],
      editedAt: null,
      deletedAt: null,
      reactions: [],
      replyCount: 0,
    });
    expect(m1.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(m1.createdAt).toBeInstanceOf(Date);
    const m2 = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'hi' });
    expect(m2.seq).toBe(4);
    // A membership change takes a seq too (member.joined), and so does its system message.
    await as(alice!).room.addMembers({ roomId: room.id, userIds: [carol!] });
    const m3 = await as(carol!).chat.send({ roomId: room.id, clientId: uuid(), body: 'joined' });
    expect(m3.seq).toBe(7);
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(7);

    const withAttachment = await as(alice!).chat.send({
      roomId: room.id,
      clientId: uuid(),
      body: '',
      kind: 'image',
      attachments: [{ url: 'https://example.com/a.png', name: 'a.png', size: 10, mime: 'image/png' }],
    });
    expect(withAttachment).toMatchObject({ seq: 8, body: '', kind: 'image', attachments: [{ name: 'a.png', mime: 'image/png' }] });
  });

  it('is idempotent by clientId: sequential repeats return the original, one row', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const clientId = uuid();
    const first = await as(alice!).chat.send({ roomId: room.id, clientId, body: 'once' });
    const again = await as(alice!).chat.send({ roomId: room.id, clientId, body: 'once' });
    expect(again).toEqual(first);
    // Even with a different body the original wins.
    const changed = await as(alice!).chat.send({ roomId: room.id, clientId, body: 'twice?' });
    expect(changed.id).toBe(first.id);
    expect(changed.body).toBe('once');
    const all = await allMessages(bob!, room.id);
    expect(all.map((m) => m.id)).toEqual([first.id]);
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(first.seq);
    // The same clientId from another sender is another message.
    const bobs = await as(bob!).chat.send({ roomId: room.id, clientId, body: 'bob' });
    expect(bobs.id).not.toBe(first.id);
    expect(bobs.seq).toBe(first.seq + 1);
  });

  it('is idempotent by clientId under concurrency: one row, one id, no seq used up', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const clientId = uuid();
    const results = await Promise.all(
      Array.from({ length: 6 }, () => as(alice!).chat.send({ roomId: room.id, clientId, body: 'race' })),
    );
    const ids = new Set(results.map((m) => m.id));
    expect(ids.size).toBe(1);
    expect(new Set(results.map((m) => m.seq))).toEqual(new Set([room.lastSeq + 1]));
    const all = await allMessages(alice!, room.id);
    expect(all).toHaveLength(1);
    expect(all[0]!.id).toBe(results[0]!.id);
    // The losers' transactions rolled back: the next message takes the very next seq.
    const next = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'after' });
    expect(next.seq).toBe(results[0]!.seq + 1);
  });

  it('is CONFLICT when a clientId is reused in another room', async () => {
    const [alice] = users('alice');
    const r1 = await groupRoom(alice!, []);
    const r2 = await groupRoom(alice!, []);
    const clientId = uuid();
    await as(alice!).chat.send({ roomId: r1.id, clientId, body: 'in r1' });
    await expectTRPCError(as(alice!).chat.send({ roomId: r2.id, clientId, body: 'in r2' }), 'CONFLICT', /clientId/);
    expect(await allMessages(alice!, r2.id)).toEqual([]);
  });

  it('in a broadcast room only the owner (admins) may post', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await as(alice!).room.create({ kind: 'broadcast', name: 'news', memberIds: [bob!] });
    await expectTRPCError(as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'me too' }), 'FORBIDDEN', /broadcast/);
    const post = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'news' });
    expect(post.seq).toBe(room.lastSeq + 1);
    expect((await allMessages(bob!, room.id)).map((m) => m.body)).toEqual(['news']);
  });

  it('checks replyToId belongs to the room', async () => {
    const [alice] = users('alice');
    const r1 = await groupRoom(alice!, []);
    const r2 = await groupRoom(alice!, []);
    const p1 = await as(alice!).chat.send({ roomId: r1.id, clientId: uuid(), body: 'parent' });
    const reply = await as(alice!).chat.send({ roomId: r1.id, clientId: uuid(), body: 'child', replyToId: p1.id });
    expect(reply.replyToId).toBe(p1.id);
    await expectTRPCError(
      as(alice!).chat.send({ roomId: r2.id, clientId: uuid(), body: 'x', replyToId: p1.id }),
      'BAD_REQUEST',
      /replyToId/,
    );
    await expectTRPCError(
      as(alice!).chat.send({ roomId: r1.id, clientId: uuid(), body: 'x', replyToId: uuid() }),
      'BAD_REQUEST',
      /replyToId/,
    );
    await expectTRPCError(as(alice!).chat.send({ roomId: r1.id, clientId: uuid(), body: 'x', replyToId: 'nope' }), 'BAD_REQUEST', /replyToId|messageId/);
    expect(await allMessages(alice!, r2.id)).toEqual([]);
  });

  it('keeps mentions of members only (deduplicated)', async () => {
    const [alice, bob, carol, stranger] = users('alice', 'bob', 'carol', 'stranger');
    const room = await groupRoom(alice!, [bob!, carol!]);
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: '@all', mentions: [bob!, stranger!, bob!, carol!] });
    expect([...m.mentions].sort()).toEqual([bob, carol].sort());
    const only = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: '@x', mentions: [stranger!] });
    expect(only.mentions).toEqual([]);
    const stored = (await allMessages(bob!, room.id)).find((x) => x.id === m.id)!;
    expect([...stored.mentions].sort()).toEqual([bob, carol].sort());
  });
});

describe('chat.history', () => {
  let alice: string, bob: string, roomId: string, sent: MessageDto[];

  beforeAll(async () => {
    [alice, bob] = users('alice', 'bob') as [string, string];
    const room = await groupRoom(alice, [bob]);
    roomId = room.id;
    sent = await sendMany(alice, roomId, 60);
  });

  const seqs = (ms: MessageDto[]) => ms.map((m) => m.seq);
  const ascending = (ms: MessageDto[]) => expect(seqs(ms)).toEqual([...seqs(ms)].sort((a, b) => a - b));

  it('without a cursor gives the newest page of 50, ascending', async () => {
    const page = await as(bob).chat.history({ roomId });
    expect(page.messages).toHaveLength(50);
    ascending(page.messages);
    expect(page.messages.map((m) => m.id)).toEqual(sent.slice(10).map((m) => m.id));
    expect(page.messages[49]!.body).toBe('m59');
    expect(page.hasMore).toBe(true);
    const all = await as(bob).chat.history({ roomId, limit: 100 });
    expect(all.messages.map((m) => m.id)).toEqual(sent.map((m) => m.id));
    expect(all.hasMore).toBe(false);
  });

  it('honours limit, pages back with beforeSeq and forward with afterSeq, hasMore right at both ends', async () => {
    const newest = await as(bob).chat.history({ roomId, limit: 20 });
    expect(seqs(newest.messages)).toEqual(seqs(sent.slice(40)));
    expect(newest.hasMore).toBe(true);

    // Back: 20 + 20 + 20 (the last page is exactly the rest: hasMore false).
    const back: MessageDto[][] = [newest.messages];
    let cursor = newest.messages[0]!.seq;
    let hasMore = newest.hasMore;
    while (hasMore) {
      const page = await as(bob).chat.history({ roomId, beforeSeq: cursor, limit: 20 });
      ascending(page.messages);
      expect(page.messages.every((m) => m.seq < cursor)).toBe(true);
      back.unshift(page.messages);
      cursor = page.messages[0]!.seq;
      hasMore = page.hasMore;
      expect(back.length).toBeLessThanOrEqual(3);
    }
    expect(back.map((p) => p.length)).toEqual([20, 20, 20]);
    expect(back.flat().map((m) => m.id)).toEqual(sent.map((m) => m.id));
    expect(await as(bob).chat.history({ roomId, beforeSeq: sent[0]!.seq })).toEqual({ messages: [], hasMore: false });

    // Forward: from the start, 25 + 25 + 10.
    const fwd: MessageDto[][] = [];
    cursor = 0;
    hasMore = true;
    while (hasMore) {
      const page = await as(bob).chat.history({ roomId, afterSeq: cursor, limit: 25 });
      ascending(page.messages);
      expect(page.messages.every((m) => m.seq > cursor)).toBe(true);
      fwd.push(page.messages);
      cursor = page.messages.at(-1)!.seq;
      hasMore = page.hasMore;
      expect(fwd.length).toBeLessThanOrEqual(3);
    }
    expect(fwd.map((p) => p.length)).toEqual([25, 25, 10]);
    expect(fwd.flat().map((m) => m.id)).toEqual(sent.map((m) => m.id));
    expect(await as(bob).chat.history({ roomId, afterSeq: sent.at(-1)!.seq })).toEqual({ messages: [], hasMore: false });

    // Forward page that is exactly the rest: hasMore false.
    const rest = await as(bob).chat.history({ roomId, afterSeq: sent[39]!.seq, limit: 20 });
    expect(seqs(rest.messages)).toEqual(seqs(sent.slice(40)));
    expect(rest.hasMore).toBe(false);
    // Both cursors: the messages strictly between them.
    const between = await as(bob).chat.history({ roomId, afterSeq: sent[9]!.seq, beforeSeq: sent[15]!.seq });
    expect(between.messages.map((m) => m.body)).toEqual(['m10', 'm11', 'm12', 'm13', 'm14']);
    expect(between.hasMore).toBe(false);
  });

  it('rejects limit 0 and 101 with BAD_REQUEST naming limit', async () => {
    await expectTRPCError(as(bob).chat.history({ roomId, limit: 0 }), 'BAD_REQUEST', /limit/);
    await expectTRPCError(as(bob).chat.history({ roomId, limit: 101 }), 'BAD_REQUEST', /limit/);
    await expectTRPCError(as(bob).chat.history({ roomId, limit: 2.5 }), 'BAD_REQUEST', /limit/);
    await expectTRPCError(as(bob).chat.history({ roomId, beforeSeq: -1 }), 'BAD_REQUEST', /beforeSeq/);
    const one = await as(bob).chat.history({ roomId, limit: 1 });
    expect(one.messages.map((m) => m.body)).toEqual(['m59']);
    expect(one.hasMore).toBe(true);
  });

  it('is empty for a room without messages', async () => {
    const room = await groupRoom(alice, []);
    expect(await as(alice).chat.history({ roomId: room.id })).toEqual({ messages: [], hasMore: false });
  });
});

describe('chat.events (createCaller)', () => {
  it('starts with ready at the current seq, then delivers live events', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'before' });
    await using s = await openEvents(t.app, actor(bob!), { roomId: room.id });
    expect(await s.next()).toEqual({ id: '3', event: { type: 'ready', roomId: room.id, seq: 3 } });
    const clientId = uuid();
    const m = await as(alice!).chat.send({ roomId: room.id, clientId, body: 'live' });
    const ev = await s.next();
    expect(ev.id).toBe(String(m.seq));
    expect(ev.event).toEqual({ type: 'message.new', roomId: room.id, seq: m.seq, message: m });
    // The same message sent again (idempotent) produces no second event: the next one is 'next'.
    expect((await as(alice!).chat.send({ roomId: room.id, clientId, body: 'live' })).id).toBe(m.id);
    await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'next' });
    await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'next2' });
    const evs = await s.take(2);
    expect(evs.map((e) => e.id)).toEqual([String(m.seq + 1), String(m.seq + 2)]);
    expect(evs.map((e) => (e.event.type === 'message.new' ? e.event.message.body : null))).toEqual(['next', 'next2']);
    s.abort();
    expect(await s.ended()).toBe(true);
  });

  it('with lastEventId replays the missed events in seq order, then goes live without duplicates', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!]);
    const seen = room.lastSeq;
    const a = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'a' });
    const b = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'b' });
    await as(alice!).room.addMembers({ roomId: room.id, userIds: [carol!] });
    const c = await as(carol!).chat.send({ roomId: room.id, clientId: uuid(), body: 'c' });

    {
      await using s = await openEvents(t.app, actor(bob!), { roomId: room.id, lastEventId: String(seen) });
      const replay = await s.take(5);
      expect(replay.map((e) => e.id)).toEqual(['3', '4', '5', '6', '7']);
      expect(replay.map((e) => e.event.type)).toEqual(['message.new', 'message.new', 'member.joined', 'message.new', 'message.new']);
      expect(replay[0]!.event).toEqual({ type: 'message.new', roomId: room.id, seq: a.seq, message: a });
      expect(replay[1]!.event).toMatchObject({ message: { id: b.id, body: 'b' } });
      expect(replay[2]!.event).toEqual({ type: 'member.joined', roomId: room.id, seq: 5, userId: carol, role: 'member', by: alice });
      // The server's own system message about the join.
      expect(replay[3]!.event).toMatchObject({ seq: 6, message: { kind: 'system', senderId: alice, body: `${alice} added ${carol}` } });
      expect(replay[4]!.event).toMatchObject({ seq: c.seq, message: { id: c.id } });
      const d = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'd' });
      const live = await s.next();
      expect(live.id).toBe(String(d.seq));
      expect(d.seq).toBe(8);
    }

    // Resuming from the middle replays only what is after it.
    await using s2 = await openEvents(t.app, actor(bob!), { roomId: room.id, lastEventId: '5' });
    expect((await s2.take(3)).map((e) => e.id)).toEqual(['6', '7', '8']);
  });

  it('ends when aborted and releases the hub subscription', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const before = t.app.services.hubs.subscriberCount;
    await using s = await openLive(t.app, alice!, room.id);
    expect(t.app.services.hubs.subscriberCount).toBe(before + 1);
    s.abort();
    expect(await s.ended()).toBe(true);
    expect(t.app.services.hubs.subscriberCount).toBe(before);
  });

  it('rejects a bad lastEventId, a non-member, another tenant and no actor', async () => {
    const [alice, eve] = users('alice', 'eve');
    const room = await groupRoom(alice!, [], `Hidden Events Room ${kit.n}`);
    await expectTRPCError(openEvents(t.app, actor(alice!), { roomId: room.id, lastEventId: 'abc' }), 'BAD_REQUEST', /lastEventId/);
    await expectTRPCError(openEvents(t.app, actor(alice!), { roomId: room.id, lastEventId: '-1' }), 'BAD_REQUEST', /lastEventId/);
    for (const who of [actor(eve!), actor(alice!, 'tenant-b')]) {
      const err = await expectTRPCError(openEvents(t.app, who, { roomId: room.id }), 'NOT_FOUND', /room not found/);
      expect(err.message).not.toContain('Hidden');
    }
    await expectTRPCError(openEvents(t.app, null, { roomId: room.id }), 'UNAUTHORIZED');
    await expectTRPCError(openEvents(t.app, actor(alice!), { roomId: 'nope' }), 'BAD_REQUEST', /roomId/);
  });
});

describe('chat.search of one room', () => {
  it('finds the messages of a support room a support agent reads without being a member; not of rooms they cannot read', async () => {
    const [customer, agent, member] = users('customer', 'agent', 'member');
    const word = `zebra${kit.n}`;
    const support = await as(customer!).room.create({ kind: 'support', name: 'help' });
    const asked = await as(customer!).chat.send({ roomId: support.id, clientId: uuid(), body: `my ${word} printer is broken` });
    const agentCaller = as(agent!, 'default', ['support']);
    // The agent reads the room (history) and so searches it.
    expect((await agentCaller.chat.history({ roomId: support.id })).messages.map((m) => m.id)).toEqual([asked.id]);
    const found = await agentCaller.chat.search({ query: word, roomId: support.id });
    expect(found.hits.map((h) => h.message.id), 'the agent finds the message of the support room it reads').toEqual([asked.id]);
    expect(found.hits[0]).toMatchObject({ roomId: support.id, roomName: 'help' });
    expect(found.skippedEncryptedRooms).toBe(0);
    // A group room they are not in stays hidden, with or without the word.
    const group = await groupRoom(customer!, [member!]);
    await as(member!).chat.send({ roomId: group.id, clientId: uuid(), body: `another ${word}` });
    await expectTRPCError(agentCaller.chat.search({ query: word, roomId: group.id }), 'NOT_FOUND');
    await expectTRPCError(as(member!).chat.search({ query: word, roomId: support.id }), 'NOT_FOUND');
    // Across rooms the search covers the rooms one is a member of (as documented).
    expect((await agentCaller.chat.search({ query: word })).hits).toEqual([]);
    expect((await as(member!).chat.search({ query: word })).hits.map((h) => h.roomId)).toEqual([group.id]);
  });
});

describe('system messages', () => {
  it('their sender (the member a join or leave notice is about) cannot delete or edit them; a moderator can delete them; reactions are allowed', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await as(alice!).room.create({ kind: 'group', name: `public ${kit.n}`, visibility: 'public', memberIds: [carol!] });
    await setMemberRole(t.env, room.id, carol!, 'moderator');
    await as(bob!).room.join({ roomId: room.id });
    await as(bob!).room.leave({ roomId: room.id });
    await as(bob!).room.join({ roomId: room.id });
    const notices = (await allMessages(alice!, room.id)).filter((m) => m.kind === 'system' && m.senderId === bob);
    expect(notices.map((m) => m.body)).toEqual([`${bob} joined`, `${bob} left`, `${bob} joined`]);
    const [joined, left] = notices as [MessageDto, MessageDto, MessageDto];
    const lastSeq = (await as(alice!).room.get({ roomId: room.id })).lastSeq;

    for (const m of [joined, left]) {
      await expectTRPCError(as(bob!).chat.delete({ messageId: m.id }), 'FORBIDDEN', /only a moderator can delete a system message/);
      await expectTRPCError(as(bob!).chat.edit({ messageId: m.id, body: 'never here' }), 'FORBIDDEN', /system messages cannot be edited/);
    }
    // Nothing was written: the notices are intact and no seq was taken.
    expect((await allMessages(alice!, room.id)).filter((m) => m.senderId === bob).map((m) => [m.body, m.deletedAt])).toEqual([
      [`${bob} joined`, null],
      [`${bob} left`, null],
      [`${bob} joined`, null],
    ]);
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(lastSeq);

    // Reacting to a notice is harmless (a welcome): allowed, by anyone who may send.
    expect(await as(bob!).chat.react({ messageId: joined.id, emoji: '👋' })).toMatchObject({ reactions: [{ emoji: '👋', count: 1, me: true }] });
    // The sender still deletes their own ordinary messages.
    const own = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'mine' });
    expect(await as(bob!).chat.delete({ messageId: own.id })).toMatchObject({ id: own.id, body: null });

    // A moderator and the owner may delete a notice.
    expect(await as(carol!).chat.delete({ messageId: joined.id })).toMatchObject({ id: joined.id, kind: 'system', body: null });
    expect(await as(alice!).chat.delete({ messageId: left.id })).toMatchObject({ id: left.id, kind: 'system', body: null });
    expect((await allMessages(bob!, room.id)).filter((m) => m.id === joined.id || m.id === left.id).every((m) => m.deletedAt !== null)).toBe(true);
  });
});

describe('authorization', () => {
  it('a non-member of the same tenant and a same-id user of another tenant see and touch nothing', async () => {
    const [alice, bob, carol, eve] = users('alice', 'bob', 'carol', 'eve');
    const name = `Top Secret Falcon ${kit.n}`;
    const room = await groupRoom(alice!, [bob!, carol!], name);
    const msg = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'classified' });

    const outsiders = [as(eve!), as(alice!, 'tenant-b'), as(bob!, 'tenant-b')];
    for (const o of outsiders) {
      const attempts: (() => Promise<unknown>)[] = [
        () => o.room.get({ roomId: room.id }),
        () => o.room.members({ roomId: room.id }),
        () => o.chat.history({ roomId: room.id }),
        () => o.chat.send({ roomId: room.id, clientId: uuid(), body: 'let me in' }),
        () => o.chat.send({ roomId: room.id, clientId: uuid(), body: 'reply', replyToId: msg.id }),
        () => o.room.addMembers({ roomId: room.id, userIds: ['eve'] }),
        () => o.room.removeMember({ roomId: room.id, userId: carol! }),
        () => o.room.leave({ roomId: room.id }),
      ];
      for (const attempt of attempts) {
        const err = await expectTRPCError(attempt(), 'NOT_FOUND');
        expect(err.message).not.toContain(name);
        expect(err.message).not.toContain('Falcon');
      }
      expect((await o.room.list()).map((r) => r.id)).not.toContain(room.id);
    }
    // Nothing changed.
    const members = await as(alice!).room.members({ roomId: room.id });
    expect(members.map((m) => m.userId).sort()).toEqual([alice, bob, carol].sort());
    expect((await allMessages(alice!, room.id)).map((m) => m.id)).toEqual([msg.id]);
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(msg.seq);
  });

  it('a removed member loses access to history, send and events', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'hi' });
    await as(alice!).room.removeMember({ roomId: room.id, userId: bob! });
    await expectTRPCError(as(bob!).chat.history({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'again' }), 'NOT_FOUND');
    await expectTRPCError(openEvents(t.app, actor(bob!), { roomId: room.id }), 'NOT_FOUND');
  });

  it('all chat procedures need an actor', async () => {
    const anon = callerFor(t.app, null);
    const roomId = uuid();
    await expectTRPCError(anon.chat.send({ roomId, clientId: uuid(), body: 'x' }), 'UNAUTHORIZED');
    await expectTRPCError(anon.chat.history({ roomId }), 'UNAUTHORIZED');
  });
});

describe('bad input', () => {
  it('gets a clear BAD_REQUEST or NOT_FOUND for each, and the server still serves a normal send', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const send = (over: Record<string, unknown>) =>
      as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'ok', ...over } as never);

    await expectTRPCError(send({ body: '' }), 'BAD_REQUEST', /body/);
    await expectTRPCError(send({ body: '   \n\t ' }), 'BAD_REQUEST', /body/);
    await expectTRPCError(send({ body: 'x'.repeat(4001) }), 'BAD_REQUEST', /body.*4000/);
    await expectTRPCError(send({ body: undefined }), 'BAD_REQUEST', /body/);
    await expectTRPCError(send({ roomId: 'not-a-uuid' }), 'BAD_REQUEST', /roomId/);
    await expectTRPCError(send({ clientId: 'not-a-uuid' }), 'BAD_REQUEST', /clientId/);
    await expectTRPCError(send({ clientId: undefined }), 'BAD_REQUEST', /clientId/);
    await expectTRPCError(send({ roomId: uuid() }), 'NOT_FOUND', /room not found/);
    await expectTRPCError(send({ kind: 'system' }), 'FORBIDDEN', /only service tokens may send system messages/);
    await expectTRPCError(send({ mentions: ['has space'] }), 'BAD_REQUEST', /mentions|userId/);
    await expectTRPCError(as(alice!).chat.history({ roomId: room.id, limit: 1000 }), 'BAD_REQUEST', /limit/);
    await expectTRPCError(as(alice!).chat.history({ roomId: 'x' }), 'BAD_REQUEST', /roomId/);
    await expectTRPCError(as(alice!).chat.history({ roomId: uuid() }), 'NOT_FOUND', /room not found/);
    await expectTRPCError(openEvents(t.app, actor(alice!), { roomId: room.id, lastEventId: 'abc' }), 'BAD_REQUEST', /lastEventId/);
    await expectTRPCError(openEvents(t.app, actor(alice!), { roomId: uuid() }), 'NOT_FOUND', /room not found/);

    // None of it wrote anything or took a seq; the longest allowed body works, then a normal send.
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(room.lastSeq);
    const longest = await send({ body: 'y'.repeat(4000) });
    expect(longest.body).toHaveLength(4000);
    expect(longest.seq).toBe(room.lastSeq + 1);
    const normal = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'still fine' });
    expect(normal).toMatchObject({ seq: room.lastSeq + 2, body: 'still fine', senderId: bob });
    expect((await allMessages(alice!, room.id)).map((m) => m.body?.length)).toEqual([4000, 10]);
  });
});
