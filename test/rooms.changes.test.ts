/**
 * Room changes that change nothing write nothing: no seq, no event. And a support agent's room list
 * shows support rooms they read without a membership with nothing unread. Real PostgreSQL and Redis.
 */
import { describe, expect, it } from 'vitest';
import { actor, callerFor, fileServer, FOREVER } from './fixture.js';

const t = fileServer('rchanges');

let n = 0;
const users = (...names: string[]) => {
  n++;
  return names.map((x) => `${x}${n}`) as [string, ...string[]];
};
const as = (id: string, roles: string[] = []) => callerFor(t.app, actor(id, 'default', roles));

describe('changes that change nothing', () => {
  it('a repeated mute, unmute or role change takes no seq', async () => {
    const [owner, bob] = users('owner', 'bob') as [string, string];
    const room = await as(owner).room.create({ kind: 'group', name: 'noop', memberIds: [bob] });
    const seq = async () => (await as(owner).room.get({ roomId: room.id })).lastSeq;

    expect(await as(owner).room.mute({ roomId: room.id, userId: bob })).toMatchObject({ userId: bob, mutedUntil: FOREVER });
    expect(await seq()).toBe(room.lastSeq + 1);
    expect(await as(owner).room.mute({ roomId: room.id, userId: bob })).toMatchObject({ userId: bob, mutedUntil: FOREVER });
    expect(await seq()).toBe(room.lastSeq + 1);

    expect(await as(owner).room.unmute({ roomId: room.id, userId: bob })).toMatchObject({ mutedUntil: null });
    expect(await as(owner).room.unmute({ roomId: room.id, userId: bob })).toMatchObject({ mutedUntil: null });
    expect(await seq()).toBe(room.lastSeq + 2);

    expect(await as(owner).room.setRole({ roomId: room.id, userId: bob, role: 'moderator' })).toMatchObject({ role: 'moderator' });
    expect(await as(owner).room.setRole({ roomId: room.id, userId: bob, role: 'moderator' })).toMatchObject({ role: 'moderator' });
    expect(await seq()).toBe(room.lastSeq + 3);
  });

  it('an update that keeps name and topic takes no seq; retentionDays alone is no room event', async () => {
    const [owner] = users('owner') as [string];
    const room = await as(owner).room.create({ kind: 'group', name: 'same', topic: 'topic' });
    const kept = await as(owner).room.update({ roomId: room.id, name: 'same', topic: 'topic', retentionDays: 7 });
    expect(kept).toMatchObject({ name: 'same', topic: 'topic', retentionDays: 7, lastSeq: room.lastSeq });
    const cleared = await as(owner).room.update({ roomId: room.id, retentionDays: null });
    expect(cleared).toMatchObject({ retentionDays: null, lastSeq: room.lastSeq });
    // A topic change is one room.updated event (no system message: the name stayed).
    expect(await as(owner).room.update({ roomId: room.id, topic: null })).toMatchObject({ topic: null, lastSeq: room.lastSeq + 1 });
  });
});

describe('room.list of a support agent', () => {
  it('shows the support rooms of the tenant without a membership as a member with nothing unread', async () => {
    const [customer, agent] = users('customer', 'agent') as [string, string];
    const room = await as(customer).room.create({ kind: 'support', name: 'help' });
    const sent = await as(customer).chat.send({ roomId: room.id, clientId: crypto.randomUUID(), body: 'hello?' });
    const listed = (await as(agent, ['support']).room.list()).find((r) => r.id === room.id);
    expect(listed).toMatchObject({ myRole: 'member', unreadCount: 0, lastReadSeq: 0, memberCount: 1, lastMessage: { id: sent.id } });
    // Not a member: receipt.unread has no row for it, and without the role the room is not listed.
    expect((await as(agent, ['support']).receipt.unread()).map((r) => r.roomId)).not.toContain(room.id);
    expect((await as(agent).room.list()).map((r) => r.id)).not.toContain(room.id);
  });
});
