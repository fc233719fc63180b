/**
 * Unread and mention counts that agree with each other, and a slow socket's live room-list events
 * in the order they happened: every unread mention is an unread message (a system message that
 * mentions a user is neither), and the coalesced `room.activity` / `unread.changed` of a room go
 * out in the order of their latest events, so the documented recipe ends with the right count.
 */
import { describe, expect, it } from 'vitest';
import type { ChatClient } from '../client/index.js';
import { actor, callerFor, clientFor, fileServer, type Frame, rawClient, range, recordInbox, sessionsOf, tapServerSocket, tokenFor, uuid } from './fixture.js';

const KiB = 1024;
/** Small slow-consumer thresholds (as node E of test/limits.test.ts): live inbox events coalesce past 8 KiB queued. */
const SOFT = 8 * KiB;
const srv = fileServer('receipts_counts', { limits: { wsBufferSoftBytes: SOFT, wsBufferHardBytes: 64 * KiB } });
const tag = () => uuid().slice(0, 8);
const send = (c: ChatClient, roomId: string, body: string, extra: Record<string, unknown> = {}) =>
  c.trpc.chat.send.mutate({ roomId, clientId: uuid(), body, ...extra });

describe('unread and mention counts', () => {
  it('a system message that mentions me is neither an unread message nor an unread mention (mentions never exceed unread)', async () => {
    const u = tag();
    const [alice, bob] = [`a-${u}`, `b-${u}`];
    await using ac = clientFor(srv.url, alice);
    await using bc = clientFor(srv.url, bob);
    await using svc = clientFor(srv.url, `svc-${u}`, { roles: ['service'] });
    const room = await ac.trpc.room.create.mutate({ kind: 'group', name: 'sys', memberIds: [bob] });
    await send(svc, room.id, `order shipped, @${bob}`, { kind: 'system', mentions: [bob] });
    // The system message is not an unread message (docs/API.md receipt.unread: "not system") ...
    const mine = (await bc.trpc.receipt.unread.query()).find((r) => r.roomId === room.id)!;
    expect(mine.unread).toBe(0);
    // ... so it cannot be an unread mention either: a room must never show more mentions than unread messages.
    expect(mine.mentions).toBeLessThanOrEqual(mine.unread);
  });
});

/** A message of about 22 KB on the wire (as test/limits.test.ts): a paused socket's queue grows fast. */
const ATTACHMENTS = range(1, 10).map((i) => ({ url: `https://files.example/${i}/`.padEnd(2000, 'u'), name: `file-${i}.bin`, size: 1, mime: 'application/octet-stream' }));

describe('live room-list events on a slow socket', () => {
  it('coalesced on a slow socket, a newer room.activity goes out after an unread.changed that came after the older one: the documented recipe ends with the unread count right', async () => {
    const u = tag();
    const [alice, bob] = [`a-${u}`, `b-${u}`];
    const as = (id: string) => callerFor(srv.app, actor(id));
    const bulkRoom = (await as(alice).room.create({ kind: 'group', name: 'bulk', memberIds: [bob] })).id;
    const roomId = (await as(alice).room.create({ kind: 'group', name: 'chat', memberIds: [bob] })).id;

    // Bob's slow device: inbox.events (1) and a busy room (2) on one socket, which stops being read.
    using reader = rawClient(srv.url, { token: tokenFor(bob) });
    reader.subscribe(1, 'inbox.events', {});
    reader.subscribe(2, 'chat.events', { roomId: bulkRoom });
    const isReady = (id: number) => (f: Frame) => f.id === id && f.result?.data?.data?.type === 'ready';
    await Promise.all([reader.waitFrame(isReady(1), 'inbox ready'), reader.waitFrame(isReady(2), 'room ready')]);
    // Bob's fast device on the same node (same inbox hub): what it sees, the slow stream has handled.
    await using fast = clientFor(srv.url, bob, { ws: true });
    using inbox = recordInbox(fast);
    await inbox.ready();

    const [session] = sessionsOf(srv.app, bob);
    const socket = session!.socket as unknown as { bufferedAmount: number };
    const tap = tapServerSocket(session!.socket as never);
    reader.pause();
    let n = 0;
    while (socket.bufferedAmount <= SOFT && n < 4000) {
      const m = await as(alice).chat.send({ roomId: bulkRoom, clientId: uuid(), body: `${n++}:`.padEnd(1900, 'z'), attachments: ATTACHMENTS, kind: 'file' });
      await tap.waitSent((t) => t.endsWith(`"id":"${m.seq}"}}`) && (JSON.parse(t) as Frame).id === 2, `bulk ${m.seq}`);
      // What the kernel takes leaves the process's queue on the next turn of the event loop.
      await new Promise((r) => setImmediate(r));
    }
    expect(socket.bufferedAmount).toBeGreaterThan(SOFT);

    // 1. A message: room.activity (unread 1). 2. Bob reads it on the fast device: unread.changed
    // (unread 0). 3. Another message: room.activity (unread 1). Sent in that order.
    const m1 = await as(alice).chat.send({ roomId, clientId: uuid(), body: 'one' });
    await inbox.next('room.activity', (e) => e.roomId === roomId && e.lastMessage?.id === m1.id);
    await as(bob).receipt.markRead({ roomId, seq: m1.seq });
    await inbox.next('unread.changed', (e) => e.roomId === roomId && e.unread === 0);
    const m2 = await as(alice).chat.send({ roomId, clientId: uuid(), body: 'two' });
    await inbox.next('room.activity', (e) => e.roomId === roomId && e.lastMessage?.id === m2.id && e.unreadCount === 1);
    expect(socket.bufferedAmount, 'still congested').toBeGreaterThan(SOFT);
    const truth = (await as(bob).receipt.unread()).find((r) => r.roomId === roomId)!;
    expect(truth.unread).toBe(1);

    // The slow device catches up: both latest events of the room arrive.
    reader.resume();
    const ofRoom = (f: Frame) => f.id === 1 && (f.result?.data?.data as { roomId?: string } | undefined)?.roomId === roomId;
    await reader.waitFrame((f) => ofRoom(f) && f.result?.data?.data?.type === 'unread.changed', 'unread.changed on the slow device');
    await reader.waitFrame((f) => ofRoom(f) && f.result?.data?.data?.type === 'room.activity' && (f.result.data.data as unknown as { seq: number }).seq >= m2.seq, 'room.activity of m2');
    // docs/CLIENT.md's room list recipe, applied in arrival order.
    let unreadCount: number | null = null;
    const got: string[] = [];
    for (const d of reader.data(1)) {
      const e = d.data as { type: string; roomId?: string; unread?: number; unreadCount?: number };
      if (e.roomId !== roomId) continue;
      got.push(e.type);
      if (e.type === 'room.activity') unreadCount = e.unreadCount!;
      else if (e.type === 'unread.changed') unreadCount = e.unread!;
    }
    expect(unreadCount, `the slow device's unread count of the room (events in arrival order: ${got.join(', ')})`).toBe(truth.unread);
  });
});
