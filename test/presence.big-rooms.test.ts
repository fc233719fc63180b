/**
 * Presence in big rooms (PRESENCE_ROOM_MAX_MEMBERS): a user's presence changes reach the rooms of at
 * most that many members as `presence` events; bigger rooms get none (as they come online, a room
 * of n would otherwise take n² deliveries), and their members ask `presence.get` for whom they show.
 */
import { describe, expect, it } from 'vitest';
import { clientFor, fileServer, recordEvents, uuid } from './fixture.js';

const t = fileServer('presence_big', { presenceRoomMaxMembers: 3 });

describe('presence above PRESENCE_ROOM_MAX_MEMBERS', () => {
  it('a room of 3 gets presence events, a room of 4 none; presence.get still answers for its members', async () => {
    const u = uuid().slice(0, 8);
    const [w, p, x, y] = ['w', 'p', 'x', 'y'].map((n) => `${n}-${u}`) as [string, string, string, string];
    await using wc = clientFor(t.url, w);
    const small = await wc.trpc.room.create.mutate({ kind: 'group', name: 'small', memberIds: [p, x] });
    const big = await wc.trpc.room.create.mutate({ kind: 'group', name: 'big', memberIds: [p, x, y] });
    expect([small.memberCount, big.memberCount]).toEqual([3, 4]);
    using inSmall = recordEvents(wc, { roomId: small.id });
    using inBig = recordEvents(wc, { roomId: big.id });
    await Promise.all([inSmall.ready(), inBig.ready()]);

    // p comes online, then goes away: the small room hears both.
    await using pc = clientFor(t.url, p, { ws: true });
    expect((await pc.trpc.auth.me.query()).id).toBe(p);
    expect(await inSmall.next('presence', (e) => e.userId === p)).toMatchObject({ roomId: small.id, status: 'online' });
    await pc.trpc.presence.set.mutate({ status: 'away' });
    expect(await inSmall.next('presence', (e) => e.userId === p && e.status === 'away')).toMatchObject({ roomId: small.id });

    // The big room: a message sent after both changes arrives, and no presence event came before it.
    const barrier = await wc.trpc.chat.send.mutate({ roomId: big.id, clientId: uuid(), body: 'barrier' });
    await inBig.untilSeq(barrier.seq);
    expect(inBig.of('presence')).toEqual([]);
    // On demand: y shares only the big room with p, and sees p's state.
    await using yc = clientFor(t.url, y);
    expect(await yc.trpc.presence.get.query({ userIds: [p] })).toEqual([{ userId: p, status: 'away', lastSeenAt: expect.any(Date), version: expect.any(Number) }]);
  });
});
