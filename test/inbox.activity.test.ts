/**
 * One feed for the room list: `inbox.events` carries `room.activity` (newest message preview, my
 * unread and mention counts) when a message lands, is edited or deleted in one of my rooms, and
 * `room.changed` when a room of mine is renamed, archived, unarchived, left or deleted; live only,
 * coalesced per room, sent across nodes to the members who are online, never to anyone else.
 */
import { describe, expect, it } from 'vitest';
import type { ChatClient, InboxEvent } from '../client/index.js';
import { channels, clientFor, Collector, fileCluster, holdAnswers, recordInbox, uuid, waitFor } from './fixture.js';

const COALESCE_MS = 400;
const cl = fileCluster('activity', { activityCoalesceMs: COALESCE_MS });

const tag = () => uuid().slice(0, 8);
const send = (c: ChatClient, roomId: string, body: string, mentions?: string[]) =>
  c.trpc.chat.send.mutate({ roomId, clientId: uuid(), body, ...(mentions ? { mentions } : {}) });

describe('room.activity on inbox.events', () => {
  it('tells each online member (any node) the newest message and their own counts; never an outsider', async () => {
    const u = tag();
    const [alice, bob, eve] = [`a-${u}`, `b-${u}`, `e-${u}`];
    await using ac = clientFor(cl.a.url, alice);
    await using bc = clientFor(cl.b.url, bob);
    await using ec = clientFor(cl.b.url, eve);
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'orders', memberIds: [bob] });
    using bobInbox = recordInbox(bc);
    using aliceInbox = recordInbox(ac);
    using eveInbox = recordInbox(ec);
    await Promise.all([bobInbox.ready(), aliceInbox.ready(), eveInbox.ready()]);

    const m1 = await send(ac, room.id, 'order 4711 shipped');
    const first = await bobInbox.next('room.activity', (e) => e.roomId === room.id);
    // The same counts and position as Bob's room list shows.
    const listed = (await bc.trpc.room.list.query()).find((r) => r.id === room.id)!;
    expect(listed).toMatchObject({ unreadCount: 1, lastSeq: m1.seq });
    expect(first).toEqual({
      type: 'room.activity',
      roomId: room.id,
      seq: m1.seq,
      lastMessage: {
        id: m1.id,
        seq: m1.seq,
        senderId: alice,
        kind: 'text',
        text: 'order 4711 shipped',
        attachmentCount: 0,
        createdAt: m1.createdAt,
        deleted: false,
      },
      unreadCount: 1,
      mentionCount: 0,
      lastReadSeq: listed.lastReadSeq,
      version: expect.any(Number),
    });
    // The sender's own devices get it too, with their own counts (their message is not unread).
    expect(await aliceInbox.next('room.activity', (e) => e.roomId === room.id)).toMatchObject({ seq: m1.seq, unreadCount: 0 });

    // A mention, and a long body cut to a preview.
    const long = `${'x'.repeat(200)} end`;
    const m2 = await send(ac, room.id, long, [bob]);
    const second = await bobInbox.next('room.activity', (e) => e.roomId === room.id && e.seq === m2.seq);
    expect(second).toMatchObject({ unreadCount: 2, mentionCount: 1, lastMessage: { id: m2.id, text: `${'x'.repeat(140)}…` } });

    // Edited, then deleted: the preview follows, the unread count drops.
    await ac.trpc.chat.edit.mutate({ messageId: m2.id, body: 'edited' });
    await bobInbox.next('room.activity', (e) => e.roomId === room.id && e.lastMessage?.text === 'edited');
    await ac.trpc.chat.delete.mutate({ messageId: m2.id });
    expect(await bobInbox.next('room.activity', (e) => e.roomId === room.id && e.lastMessage?.deleted === true)).toMatchObject({
      unreadCount: 1,
      mentionCount: 0,
      lastMessage: { id: m2.id, text: null, attachmentCount: 0 },
    });

    // Reading on one device is visible in the next activity.
    await bc.trpc.receipt.markRead.mutate({ roomId: room.id, seq: m2.seq });
    const m3 = await send(ac, room.id, 'after the read');
    expect(await bobInbox.next('room.activity', (e) => e.roomId === room.id && e.seq >= m3.seq)).toMatchObject({
      unreadCount: 1,
      lastReadSeq: m2.seq,
      lastMessage: { text: 'after the read' },
    });

    // Eve is online on the same node as Bob and saw none of it.
    expect(eveInbox.of('room.activity')).toEqual([]);
    // Live only: a replay from the start holds the durable items, no activity.
    using replay = recordInbox(bc, { lastEventId: '0' });
    await replay.events.until(() => replay.durable().length === 2, 'the replayed items');
    expect(replay.durable().map((x) => x.data.type).sort()).toEqual(['mention', 'room.added']);
    expect(replay.of('room.activity')).toEqual([]);
  });

  it('coalesces a burst into a bounded number of activities that ends with the last message', async () => {
    const u = tag();
    const [alice, bob] = [`a-${u}`, `b-${u}`];
    await using ac = clientFor(cl.a.url, alice);
    await using bc = clientFor(cl.b.url, bob);
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'burst', memberIds: [bob] });
    using inbox = recordInbox(bc);
    await inbox.ready();

    const n = 30;
    const started = performance.now();
    const sent = await Promise.all(Array.from({ length: n }, (_, i) => send(ac, room.id, `burst ${i}`)));
    const last = Math.max(...sent.map((m) => m.seq));
    const final = await inbox.next('room.activity', (e) => e.roomId === room.id && e.seq === last);
    const elapsed = performance.now() - started;
    expect(final.unreadCount).toBe(n);
    expect(final.lastMessage?.seq).toBe(last);
    // One at once, then at most one per window of this node: bounded by the time it took, not by n.
    const bound = 2 + Math.ceil(elapsed / COALESCE_MS);
    const got = inbox.of('room.activity', (e) => e.roomId === room.id).length;
    expect(got).toBeLessThanOrEqual(bound);
    expect(got).toBeLessThan(n);
  });

  it('a room.activity counted before a read (or a mark unread) on another device but delivered after its unread.changed loses to it by version', async () => {
    const u = tag();
    const [alice, bob] = [`a-${u}`, `b-${u}`];
    await using ac = clientFor(cl.a.url, alice);
    await using phone = clientFor(cl.b.url, bob);
    await using laptop = clientFor(cl.b.url, bob);
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'race', memberIds: [bob] });
    using inbox = recordInbox(laptop);
    await inbox.ready();
    const m0 = await send(ac, room.id, 'before');
    await inbox.next('room.activity', (e) => e.roomId === room.id && e.seq === m0.seq);

    // Node A's activity counts of the room for Bob are held after the database answered (the count
    // is taken), until the test lets them go.
    using holds = holdAnswers(cl.a.app.services.store);
    /** A message whose activity is counted, then a read-position change on the phone, then the activity goes out. */
    const race = async (body: string, change: () => Promise<unknown>, counts: (e: { unread: number }) => boolean) => {
      const h = holds.next((rows) => rows.some((r) => r.room_id === room.id && r.user_id === bob && 'unread' in r));
      const m = await send(ac, room.id, body);
      await h.reached.promise;
      await change();
      await inbox.next('unread.changed', (e) => e.roomId === room.id && counts(e));
      h.release.resolve();
      await inbox.next('room.activity', (e) => e.roomId === room.id && e.seq === m.seq);
      return m;
    };
    /** The documented client rule, over the events in arrival order: counts with a lower version than the shown ones are stale. */
    const shown = () => {
      let view: { unread: number; version: number } | null = null;
      for (const { data: e } of inbox.events.items) {
        const next =
          e.type === 'room.activity' && e.roomId === room.id
            ? { unread: e.unreadCount, version: e.version }
            : e.type === 'unread.changed' && e.roomId === room.id
              ? { unread: e.unread, version: e.version }
              : null;
        if (next && !(view && next.version < view.version)) view = next;
      }
      return view?.unread;
    };
    const truth = async () => (await phone.trpc.receipt.unread.query()).find((c) => c.roomId === room.id)!;

    // Counted with m0 and m1 unread; Bob reads both on the phone; the old count arrives last.
    const m1 = await race('one', () => phone.trpc.receipt.markRead.mutate({ roomId: room.id, seq: Number.MAX_SAFE_INTEGER }), (e) => e.unread === 0);
    expect(inbox.of('room.activity', (e) => e.seq === m1.seq)[0]).toMatchObject({ unreadCount: 2 });
    expect((await truth()).unread).toBe(0);
    expect(shown(), 'the unread count after a read raced by an activity').toBe(0);

    // Counted from the read position at m1 (m2 unread); Bob marks m1 unread (his position moves back,
    // below the activity's `lastReadSeq`): the activity's count (1) is still older than the mark's (2).
    const m2 = await race('two', () => phone.trpc.receipt.markUnread.mutate({ roomId: room.id, seq: m1.seq }), (e) => e.unread === 2);
    expect(inbox.of('room.activity', (e) => e.seq === m2.seq)[0]).toMatchObject({ unreadCount: 1, lastReadSeq: m1.seq });
    expect((await truth()).unread).toBe(2);
    expect(shown(), 'the unread count after a mark unread raced by an activity').toBe(2);
  });

  it('rooms of a tenant without any open inbox cost no query; one inbox of the tenant on any node turns the feed on', async () => {
    const u = tag();
    const tenant = `t-${u}`;
    const [alice, bob] = [`a-${u}`, `b-${u}`];
    await using ac = clientFor(cl.a.url, alice, { tenant });
    await using bc = clientFor(cl.b.url, bob, { tenant });
    // Another tenant's open inbox does not count.
    await using oc = clientFor(cl.b.url, `o-${u}`, { tenant: `other-${u}` });
    using otherInbox = recordInbox(oc);
    await otherInbox.ready();
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'quiet', memberIds: [bob] });
    const counters = cl.a.app.services.deps.counters;
    const anyInboxOpen = async () => (await cl.a.app.services.deps.bus.listened([channels.inboxes(tenant)])).size > 0;
    expect(await anyInboxOpen()).toBe(false);

    // The first activity of the room reads its head (and learns its tenant); later ones are skipped.
    const skippedBefore = counters.activityRoomsSkipped;
    for (let i = 0; i < 3; i++) await send(ac, room.id, `nobody reads ${i}`);
    await waitFor(() => counters.activityRoomsSkipped, 'a skipped activity', { until: (n) => n > skippedBefore });

    // Bob opens his inbox on the other node: node a sees the tenant's group channel, and Bob gets the activity.
    {
      using inbox = recordInbox(bc);
      await inbox.ready();
      expect(await anyInboxOpen()).toBe(true);
      const m = await send(ac, room.id, 'now someone listens');
      expect(await inbox.next('room.activity', (e) => e.roomId === room.id && e.seq === m.seq)).toMatchObject({
        unreadCount: 4,
        lastMessage: { id: m.id, text: 'now someone listens' },
      });
    }
    // Closed again: the group channel is released with the inbox's own, and activity is skipped again.
    await waitFor(anyInboxOpen, "the tenant's group channel released", { until: (open) => !open });
    const skippedAfter = counters.activityRoomsSkipped;
    await send(ac, room.id, 'nobody again');
    await waitFor(() => counters.activityRoomsSkipped, 'a skipped activity after the inbox closed', { until: (n) => n > skippedAfter });
  });

  it('a room.activity whose room seq is above the inbox seq does not hide the next inbox item (client resume bookkeeping)', async () => {
    const u = tag();
    const [alice, bob] = [`a-${u}`, `b-${u}`];
    await using ac = clientFor(cl.a.url, alice);
    await using bc = clientFor(cl.b.url, bob);
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'many', memberIds: [bob] });
    for (let i = 0; i < 5; i++) await send(ac, room.id, `m${i}`);
    const seen = new Collector<InboxEvent>();
    const sub = bc.subscribeInbox({ onEvent: (e) => seen.push(e) });
    try {
      await seen.first((e) => e.type === 'ready', 'ready');
      const m = await send(ac, room.id, 'later');
      await seen.first((e) => e.type === 'room.activity' && e.seq === m.seq, 'the activity');
      // Bob's inbox seq is 1 (room.added): a mention is item 2, far below the room's seq.
      await send(ac, room.id, 'hey bob', [bob]);
      const mention = await seen.first((e) => e.type === 'mention', 'the mention after the activity');
      expect(mention).toMatchObject({ type: 'mention', seq: 2, roomId: room.id });
    } finally {
      sub.unsubscribe();
    }
  });
});

describe('room.changed on inbox.events', () => {
  it('joined (any device), renamed, archived, unarchived, left and deleted reach the members concerned', async () => {
    const u = tag();
    const [alice, bob, carol] = [`a-${u}`, `b-${u}`, `c-${u}`];
    await using ac = clientFor(cl.a.url, alice);
    await using bc = clientFor(cl.b.url, bob);
    await using cc = clientFor(cl.a.url, carol);
    using bobInbox = recordInbox(bc);
    using carolInbox = recordInbox(cc);
    // Alice's other device (another node) hears of the room she creates here.
    await using aliceLaptop = clientFor(cl.b.url, alice);
    using aliceInbox = recordInbox(aliceLaptop);
    await Promise.all([bobInbox.ready(), carolInbox.ready(), aliceInbox.ready()]);
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'project', memberIds: [bob, carol] });
    expect(await aliceInbox.next('room.changed', (e) => e.roomId === room.id)).toEqual({ type: 'room.changed', roomId: room.id, change: 'joined' });
    await bobInbox.next('room.changed', (e) => e.roomId === room.id && e.change === 'joined');

    await ac.trpc.room.update.mutate({ roomId: room.id, name: 'project x' });
    expect(await bobInbox.next('room.changed', (e) => e.roomId === room.id && e.change !== 'joined')).toEqual({ type: 'room.changed', roomId: room.id, change: 'updated' });
    await ac.trpc.room.archive.mutate({ roomId: room.id });
    await bobInbox.next('room.changed', (e) => e.roomId === room.id && e.change === 'archived');
    await ac.trpc.room.unarchive.mutate({ roomId: room.id });
    await bobInbox.next('room.changed', (e) => e.roomId === room.id && e.change === 'unarchived');

    await ac.trpc.room.removeMember.mutate({ roomId: room.id, userId: bob });
    await bobInbox.next('room.changed', (e) => e.roomId === room.id && e.change === 'left');
    await ac.trpc.room.delete.mutate({ roomId: room.id });
    await carolInbox.next('room.changed', (e) => e.roomId === room.id && e.change === 'deleted');
    // Bob had left: the deletion is none of his business.
    expect(bobInbox.of('room.changed', (e) => e.change === 'deleted')).toEqual([]);
    expect(carolInbox.of('room.changed', (e) => e.change === 'left')).toEqual([]);
  });
});
