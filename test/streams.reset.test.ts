/**
 * Recovery that says so: a `chat.events` / `inbox.events` resume whose `lastEventId` cannot be
 * continued exactly (older than what retention kept, or above the stream's position) starts with
 * `{ type: 'reset', seq }` instead of a partial or silent stream, through the real client.
 */
import { describe, expect, it } from 'vitest';
import { type InboxEvent, type Message, type RoomEvent, RoomTimeline } from '../client/index.js';
import { clientFor, Collector, fileServer, messageAt, uuid } from './fixture.js';

const t = fileServer('reset');
const tag = () => uuid().slice(0, 8);

describe('reset on resume', () => {
  it('chat.events from above the room position: reset(position), then live events are not dropped', async () => {
    const u = tag();
    await using alice = clientFor(t.url, `a-${u}`);
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'reset' });
    await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'one' });
    const { lastSeq } = await alice.trpc.room.get.query({ roomId: room.id });
    const seen = new Collector<RoomEvent>();
    const sub = alice.subscribeRoom(room.id, { onEvent: (e) => seen.push(e) }, { lastEventId: String(lastSeq + 1000) });
    try {
      expect(await seen.first(() => true, 'the first event')).toEqual({ type: 'reset', roomId: room.id, seq: lastSeq });
      const m = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'two' });
      // The client's resume bookkeeping moved down to the server's position: the new message arrives.
      expect(await seen.first((e) => e.type === 'message.new', 'the message after the reset')).toMatchObject({ seq: m.seq });
    } finally {
      sub.unsubscribe();
    }
  });

  it('chat.events from before what retention kept: reset(position) instead of a partial replay; from the edge, an exact replay', async () => {
    const u = tag();
    await using alice = clientFor(t.url, `a-${u}`);
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'retained' });
    for (let i = 0; i < 6; i++) await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m${i}` });
    const { lastSeq } = await alice.trpc.room.get.query({ roomId: room.id });
    // What retention does to the oldest part of a room's log.
    await t.env.sql('delete from room_event where room_id = $1 and seq <= 3', [room.id]);

    const partial = new Collector<RoomEvent>();
    const s1 = alice.subscribeRoom(room.id, { onEvent: (e) => partial.push(e) }, { lastEventId: '1' });
    try {
      expect(await partial.first(() => true, 'the first event')).toEqual({ type: 'reset', roomId: room.id, seq: lastSeq });
    } finally {
      s1.unsubscribe();
    }
    const exact = new Collector<RoomEvent>();
    const s2 = alice.subscribeRoom(room.id, { onEvent: (e) => exact.push(e) }, { lastEventId: '3' });
    try {
      await exact.until((xs) => xs.length >= lastSeq - 3, 'the replay');
      expect(exact.items.map((e) => (e as { seq: number }).seq)).toEqual(Array.from({ length: lastSeq - 3 }, (_, i) => i + 4));
    } finally {
      s2.unsubscribe();
    }
  });

  it('a replay reads past a page of events whose messages retention removed (it used to stop there and lose what came after)', async () => {
    const u = tag();
    await using alice = clientFor(t.url, `a-${u}`);
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'past-removed' });
    // 250 messages (seqs s0+1 to s0+250), each deleted (their message.deleted events: up to s0+500).
    const s0 = (await alice.trpc.room.get.query({ roomId: room.id })).lastSeq;
    const ids: string[] = [];
    for (let i = 0; i < 250; i++) ids.push((await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m${i}` })).id);
    for (const messageId of ids) await alice.trpc.chat.delete.mutate({ messageId });
    // What retention does, in its order: the messages first, then the log rows of the old part.
    await t.env.sql('delete from message where room_id = $1', [room.id]);
    await t.env.sql('delete from room_event where room_id = $1 and seq <= $2', [room.id, s0 + 250]);
    const after: number[] = [];
    for (let i = 0; i < 10; i++) after.push((await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `n${i}` })).seq);
    expect(after[0]).toBe(s0 + 501);
    // From s0+250: the next 250 events show nothing (their messages are gone), more than a page of them.
    const seen = new Collector<RoomEvent>();
    const sub = alice.subscribeRoom(room.id, { onEvent: (e) => seen.push(e) }, { lastEventId: String(s0 + 250) });
    try {
      await seen.until((xs) => xs.some((e) => (e as { seq?: number }).seq === after.at(-1)), 'the messages after the removed ones');
      expect(seen.items.map((e) => `${e.type} ${(e as { seq?: number }).seq}`)).toEqual(after.map((seq) => `message.new ${seq}`));
    } finally {
      sub.unsubscribe();
    }
  });

  it('inbox.events from above the inbox position: reset(position)', async () => {
    const u = tag();
    await using bob = clientFor(t.url, `b-${u}`);
    const seen = new Collector<InboxEvent>();
    const sub = bob.subscribeInbox({ onEvent: (e) => seen.push(e) }, { lastEventId: '500' });
    try {
      expect(await seen.first(() => true, 'the first event')).toEqual({ type: 'reset', seq: 0 });
    } finally {
      sub.unsubscribe();
    }
  });

  it("RoomTimeline: a reset forgets the loaded messages and takes the server's position (openRoom then reloads history)", () => {
    const tl = new RoomTimeline('me');
    const msg = (seq: number): Message => messageAt(seq, `m${seq}`, { id: uuid(), senderId: 'x', createdAt: new Date() });
    tl.load([msg(1), msg(2), msg(9)]);
    tl.lastSeq = 9; // the starting point its owner set after the page (openRoom does)
    expect(tl.apply({ type: 'reset', roomId: 'r', seq: 5 })).toBe(true);
    expect(tl.messages()).toEqual([]);
    expect(tl.lastSeq).toBe(5);
    tl.load([msg(4), msg(5)]);
    expect(tl.messages().map((m) => m.seq)).toEqual([4, 5]);
    expect(tl.lastSeq).toBe(5);
  });
});
