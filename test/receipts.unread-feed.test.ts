/**
 * My read state across devices: `receipt.markRead`, `receipt.markUnread` and `receipt.markAllRead`
 * tell every inbox subscription of mine (any node) the room's new counts with `unread.changed`,
 * live only; markUnread moves only my position back (the room's receipts do not regress).
 */
import { describe, expect, it } from 'vitest';
import { type ChatClient, UNREAD_CAP as CLIENT_UNREAD_CAP, unreadLabel } from '../client/index.js';
import { UNREAD_CAP, UNREAD_WINDOW } from '../src/store/receipts.js';
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
      version: expect.any(Number),
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

  it('markUnread keeps my read receipt: readers and room.members do not regress, my own counts start at the rewound position', async () => {
    const u = tag();
    const [alice, bob] = [`a-${u}`, `b-${u}`];
    await using ac = clientFor(cl.a.url, alice);
    await using bc = clientFor(cl.b.url, bob);
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'receipt stays', memberIds: [bob] });
    await send(ac, room.id, 'three');
    const m4 = await send(ac, room.id, 'four');
    const m5 = await send(ac, room.id, 'five');
    using events = recordEvents(ac, { roomId: room.id });
    await events.ready();
    using inbox = recordInbox(bc);
    await inbox.ready();
    const readersOf = async (seq: number) => (await ac.trpc.receipt.readers.query({ roomId: room.id, seq })).filter((r) => r.userId === bob);
    const bobsReceipt = async () => (await ac.trpc.room.members.query({ roomId: room.id })).find((m) => m.userId === bob)?.lastReadSeq;
    const bobsCounts = async () => ({
      unread: (await bc.trpc.receipt.unread.query()).find((c) => c.roomId === room.id),
      listed: (await bc.trpc.room.list.query()).find((r) => r.id === room.id),
    });

    expect(await bc.trpc.receipt.markRead.mutate({ roomId: room.id, seq: m5.seq })).toEqual({ roomId: room.id, lastReadSeq: m5.seq });
    await events.next('receipt.read', (e) => e.userId === bob && e.seq === m5.seq);
    expect(await readersOf(m4.seq)).toEqual([{ userId: bob, lastReadSeq: m5.seq, readAt: expect.any(Date) }]);
    const readAt = (await readersOf(m4.seq))[0]!.readAt;

    // Bob marks the fourth unread: personal. The room still sees his receipt at the fifth.
    expect(await bc.trpc.receipt.markUnread.mutate({ roomId: room.id, seq: m4.seq })).toEqual({ roomId: room.id, lastReadSeq: m4.seq - 1 });
    await inbox.next('unread.changed', (e) => e.roomId === room.id && e.lastReadSeq === m4.seq - 1 && e.unread === 2);
    expect(await readersOf(m4.seq)).toEqual([{ userId: bob, lastReadSeq: m5.seq, readAt }]);
    expect(await readersOf(m5.seq)).toEqual([{ userId: bob, lastReadSeq: m5.seq, readAt }]);
    expect(await bobsReceipt()).toBe(m5.seq);
    // His own view counts from the rewound position: the fourth and the fifth are unread for him.
    expect(await bobsCounts()).toMatchObject({
      unread: { unread: 2, mentions: 0, lastReadSeq: m4.seq - 1 },
      listed: { unreadCount: 2, lastReadSeq: m4.seq - 1 },
    });

    // Reading the fourth again moves his position only: the receipt is past it (no receipt.read).
    expect(await bc.trpc.receipt.markRead.mutate({ roomId: room.id, seq: m4.seq })).toEqual({ roomId: room.id, lastReadSeq: m4.seq });
    await inbox.next('unread.changed', (e) => e.roomId === room.id && e.lastReadSeq === m4.seq && e.unread === 1);
    expect(await bobsCounts()).toMatchObject({ unread: { unread: 1, lastReadSeq: m4.seq }, listed: { unreadCount: 1, lastReadSeq: m4.seq } });
    expect(await readersOf(m5.seq)).toEqual([{ userId: bob, lastReadSeq: m5.seq, readAt }]);
    expect(await bobsReceipt()).toBe(m5.seq);
    // Up to exactly where the receipt is: still his position only, the room hears nothing again.
    expect(await bc.trpc.receipt.markRead.mutate({ roomId: room.id, seq: m5.seq })).toEqual({ roomId: room.id, lastReadSeq: m5.seq });
    await inbox.next('unread.changed', (e) => e.roomId === room.id && e.lastReadSeq === m5.seq && e.unread === 0);
    expect(await readersOf(m5.seq)).toEqual([{ userId: bob, lastReadSeq: m5.seq, readAt }]);

    // A read past the receipt moves both again.
    const m6 = await send(ac, room.id, 'six');
    expect(await bc.trpc.receipt.markRead.mutate({ roomId: room.id, seq: m6.seq })).toEqual({ roomId: room.id, lastReadSeq: m6.seq });
    await events.next('receipt.read', (e) => e.userId === bob && e.seq === m6.seq);
    await inbox.next('unread.changed', (e) => e.roomId === room.id && e.lastReadSeq === m6.seq && e.unread === 0);
    expect(await readersOf(m4.seq)).toEqual([{ userId: bob, lastReadSeq: m6.seq, readAt: expect.any(Date) }]);
    expect(await readersOf(m6.seq)).toEqual([{ userId: bob, lastReadSeq: m6.seq, readAt: expect.any(Date) }]);
    expect(await bobsReceipt()).toBe(m6.seq);
    expect(await bobsCounts()).toMatchObject({ unread: { unread: 0, lastReadSeq: m6.seq }, listed: { unreadCount: 0, lastReadSeq: m6.seq } });

    // The room saw exactly the two forward moves of his receipt (one statement's events arrive in order).
    expect(events.of('receipt.read', (e) => e.userId === bob).map((e) => e.seq)).toEqual([m5.seq, m6.seq]);
  });
  it('unread counts stop at 1000 (1000 means 1000 or more) and look at the room\'s newest 5,000 seqs, in receipt.unread, room.list and unread.changed; below the cap they are exact again', async () => {
    const u = tag();
    const [alice, bob] = [`a-${u}`, `b-${u}`];
    await using ac = clientFor(cl.a.url, alice);
    await using bc = clientFor(cl.b.url, bob);
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'busy', memberIds: [bob] });
    // One message that mentions Bob, 5,001 plain ones, then 3 that mention him: 5,005 unread. The
    // counts look at the room's newest 5,000 seqs (UNREAD_WINDOW): the first mention is older.
    const old = await send(ac, room.id, 'old news', [bob]);
    const plain = await Promise.all(Array.from({ length: 5001 }, (_, i) => send(ac, room.id, `p${i}`)));
    const mentioning: Awaited<ReturnType<typeof send>>[] = [];
    for (let i = 0; i < 3; i++) mentioning.push(await send(ac, room.id, `m${i}`, [bob]));
    const counts = async () => ({
      unread: (await bc.trpc.receipt.unread.query()).find((x) => x.roomId === room.id),
      listed: (await bc.trpc.room.list.query()).find((x) => x.id === room.id)?.unreadCount,
    });
    expect([UNREAD_CAP, UNREAD_WINDOW]).toEqual([1000, 5000]);
    expect(room.lastSeq + 5005 - old.seq).toBeGreaterThan(UNREAD_WINDOW);
    expect(await counts()).toEqual({ unread: { roomId: room.id, unread: 1000, mentions: 3, lastReadSeq: expect.any(Number) }, listed: 1000 });
    // The typed client knows the same cap and says so.
    expect(CLIENT_UNREAD_CAP).toBe(UNREAD_CAP);
    expect([unreadLabel(1000), unreadLabel(999), unreadLabel(3)]).toEqual(['1000+', '999', '3']);

    // Read all but the last ten: exact counts again (7 plain ones and the 3 mentions).
    const bySeq = [...plain, ...mentioning].sort((a, b) => a.seq - b.seq);
    const upTo = bySeq[bySeq.length - 11]!.seq;
    using inbox = recordInbox(bc);
    await inbox.ready();
    await bc.trpc.receipt.markRead.mutate({ roomId: room.id, seq: upTo });
    expect(await inbox.next('unread.changed', (e) => e.roomId === room.id)).toEqual({ type: 'unread.changed', roomId: room.id, lastReadSeq: upTo, unread: 10, mentions: 3, version: expect.any(Number) });
    expect(await counts()).toEqual({ unread: { roomId: room.id, unread: 10, mentions: 3, lastReadSeq: upTo }, listed: 10 });

    // Marked unread from the start again: capped again, in the event too.
    await bc.trpc.receipt.markUnread.mutate({ roomId: room.id, seq: 1 });
    expect(await inbox.next('unread.changed', (e) => e.roomId === room.id && e.lastReadSeq === 0)).toMatchObject({ unread: 1000, mentions: 3 });
  });
});
