/**
 * My read state across devices: `receipt.markRead`, `receipt.markUnread` and `receipt.markAllRead`
 * tell every inbox subscription of mine (any node) the room's new counts with `unread.changed`,
 * live only; markUnread moves only my position back (the room's receipts do not regress).
 */
import { describe, expect, it } from 'vitest';
import type { ChatClient } from '../client/index.js';
import { clientFor, fileCluster, recordEvents, recordInbox, uuid } from './fixture.js';

const cl = fileCluster('unread_feed');

const tag = () => uuid().slice(0, 8);
const send = (c: ChatClient, roomId: string, body: string, mentions?: string[]) =>
  c.trpc.chat.send.mutate({ roomId, clientId: uuid(), body, ...(mentions ? { mentions } : {}) });

describe('unread state across devices', () => {
  it('markRead, markUnread and markAllRead reach my other device (another node) as unread.changed with the counts', async () => {
    const u = tag();
    const [alice, bob] = [`a-${u}`, `b-${u}`];
    await using ac = clientFor(cl.a.url, alice);
    await using phone = clientFor(cl.a.url, bob);
    await using laptop = clientFor(cl.b.url, bob);
    const r1 = await ac.trpc.room.create.mutate({ kind: 'group', name: 'one', memberIds: [bob] });
    const r2 = await ac.trpc.room.create.mutate({ kind: 'group', name: 'two', memberIds: [bob] });
    const m1 = await send(ac, r1.id, 'first');
    const m2 = await send(ac, r1.id, 'second', [bob]);
    await send(ac, r1.id, 'third');
    await send(ac, r2.id, 'elsewhere');

    using inbox = recordInbox(laptop);
    await inbox.ready();

    expect(await phone.trpc.receipt.markRead.mutate({ roomId: r1.id, seq: m1.seq })).toEqual({ roomId: r1.id, lastReadSeq: m1.seq });
    expect(await inbox.next('unread.changed', (e) => e.roomId === r1.id)).toEqual({
      type: 'unread.changed',
      roomId: r1.id,
      lastReadSeq: m1.seq,
      unread: 2,
      mentions: 1,
    });

    // Everything read, then the second message marked unread again: it and the third count.
    await phone.trpc.receipt.markRead.mutate({ roomId: r1.id, seq: r1.lastSeq + 10 });
    await inbox.next('unread.changed', (e) => e.roomId === r1.id && e.unread === 0);
    expect(await phone.trpc.receipt.markUnread.mutate({ roomId: r1.id, seq: m2.seq })).toEqual({ roomId: r1.id, lastReadSeq: m2.seq - 1 });
    expect(await inbox.next('unread.changed', (e) => e.roomId === r1.id && e.lastReadSeq === m2.seq - 1)).toMatchObject({ unread: 2, mentions: 1 });
    const counts = await phone.trpc.receipt.unread.query();
    expect(counts.find((c) => c.roomId === r1.id)).toMatchObject({ unread: 2, mentions: 1, lastReadSeq: m2.seq - 1 });

    // Marking unread never moves forward: a seq after my position changes nothing.
    expect(await phone.trpc.receipt.markUnread.mutate({ roomId: r1.id, seq: m2.seq + 5 })).toEqual({ roomId: r1.id, lastReadSeq: m2.seq - 1 });

    // All read: both rooms move, each reported with zero.
    expect(await phone.trpc.receipt.markAllRead.mutate()).toEqual({ rooms: 2 });
    await inbox.next('unread.changed', (e) => e.roomId === r2.id && e.unread === 0);
    await inbox.next('unread.changed', (e) => e.roomId === r1.id && e.unread === 0 && e.lastReadSeq > m2.seq - 1);
    expect((await phone.trpc.receipt.unread.query()).filter((c) => c.unread > 0 || c.mentions > 0)).toEqual([]);
    expect(await phone.trpc.receipt.markAllRead.mutate()).toEqual({ rooms: 0 });

    // Live only: an inbox resumed from the start replays the durable items (two rooms added, one
    // mention), none of the unread changes.
    using replay = recordInbox(laptop, { lastEventId: '0' });
    await replay.events.until((items) => replay.durable().length === 3 && items.length === 3, 'the replayed items');
    expect(replay.durable().map((x) => x.data.type).sort()).toEqual(['mention', 'room.added', 'room.added']);
    expect(replay.of('unread.changed')).toEqual([]);
  });

  it('markUnread is personal: the room sees no receipt going back; outsiders and bad input are refused', async () => {
    const u = tag();
    const [alice, bob, eve] = [`a-${u}`, `b-${u}`, `e-${u}`];
    await using ac = clientFor(cl.a.url, alice);
    await using bc = clientFor(cl.b.url, bob);
    await using ec = clientFor(cl.a.url, eve);
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'personal', memberIds: [bob] });
    const m = await send(ac, room.id, 'hello');
    await bc.trpc.receipt.markRead.mutate({ roomId: room.id, seq: m.seq });
    using events = recordEvents(ac, { roomId: room.id });
    await events.ready();
    await bc.trpc.receipt.markUnread.mutate({ roomId: room.id, seq: m.seq });
    // A later read of bob's shows up; the rewind before it did not.
    const m2 = await send(ac, room.id, 'again');
    await bc.trpc.receipt.markRead.mutate({ roomId: room.id, seq: m2.seq });
    await events.next('receipt.read', (e) => e.userId === bob && e.seq === m2.seq);
    expect(events.of('receipt.read', (e) => e.userId === bob).map((e) => e.seq)).toEqual([m2.seq]);
    expect((await ac.trpc.receipt.readers.query({ roomId: room.id, seq: m2.seq })).map((r) => r.userId)).toContain(bob);

    await expect(ec.trpc.receipt.markUnread.mutate({ roomId: room.id, seq: 1 })).rejects.toMatchObject({ data: { code: 'NOT_FOUND' } });
    await expect(bc.trpc.receipt.markUnread.mutate({ roomId: room.id, seq: 0 })).rejects.toMatchObject({
      data: { code: 'BAD_REQUEST' },
      message: expect.stringMatching(/seq must be at least 1/),
    });
    await expect(bc.trpc.receipt.markUnread.mutate({ roomId: 'nope', seq: 1 })).rejects.toMatchObject({ data: { code: 'BAD_REQUEST' } });
  });
});
