/**
 * Sends checked against a node's cached access row (src/services/access.ts): the row only ever
 * allows a send, and the write verifies the room's `access_version` under the room's lock
 * (src/store/hot/append-messages.ts). Every change that the access check reads, made on the other
 * node, must refuse the next send on this one, and nothing may be written. Two nodes, one database
 * and one Redis; real PostgreSQL and Redis.
 */
import { describe, expect, it } from 'vitest';
import { actor, callerFor, expectTRPCError, fileCluster, roomKit, uuid } from './fixture.js';

const t = fileCluster('sendcache');

const { users } = roomKit(() => t.a);
/** Node A: the one whose cache is tested. Node B: where the changes are made. */
const onA = (id: string) => callerFor(t.a.app, actor(id));
const onB = (id: string) => callerFor(t.b.app, actor(id));
const cache = () => t.a.app.services.access.cacheStats;
const version = async (roomId: string) =>
  (await t.env.sql<{ v: number }>('select access_version::int as v from room where id = $1', [roomId]))[0]!.v;
/** Messages of the room sent by `sender` (system messages of member changes are not counted). */
const messageCount = async (roomId: string, sender: string) =>
  (await t.env.sql<{ n: number }>('select count(*)::int as n from message where room_id = $1 and sender_id = $2', [roomId, sender]))[0]!.n;

/** A group room of `owner` and `member`; `member` has sent once on node A (the row is cached there). */
async function warmRoom(owner: string, member: string) {
  const room = await onB(owner).room.create({ kind: 'group', name: 'cache', memberIds: [member] });
  await onA(member).chat.send({ roomId: room.id, clientId: uuid(), body: 'first' });
  return room;
}

describe('sends against the cached access row', () => {
  it('a second send from the same node takes the cached row (no access query), and is written once with the next seq', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await warmRoom(owner, bob);
    const hits = cache().hits;
    const a = await onA(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'second' });
    const b = await onA(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'third' });
    expect(cache().hits).toBe(hits + 2);
    expect(b.seq).toBe(a.seq + 1);
    expect(await messageCount(room.id, bob)).toBe(3);
  });

  it('removed on the other node: the next send here is NOT_FOUND and writes nothing', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await warmRoom(owner, bob);
    const stale = cache().stale;
    await onB(owner).room.removeMember({ roomId: room.id, userId: bob });
    await expectTRPCError(onA(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'after removal' }), 'NOT_FOUND');
    expect(cache().stale).toBe(stale + 1);
    expect(await messageCount(room.id, bob)).toBe(1);
  });

  it('muted on the other node: refused here; unmuted there: accepted here (a refusal is never cached)', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await warmRoom(owner, bob);
    await onB(owner).room.mute({ roomId: room.id, userId: bob });
    await expectTRPCError(onA(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'muted' }), 'FORBIDDEN', /muted/);
    await onB(owner).room.unmute({ roomId: room.id, userId: bob });
    const ok = await onA(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'unmuted' });
    expect(ok.body).toBe('unmuted');
    expect(await messageCount(room.id, bob)).toBe(2);
  });

  it('banned on the other node: NOT_FOUND here', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await warmRoom(owner, bob);
    await onB(owner).room.ban({ roomId: room.id, userId: bob });
    await expectTRPCError(onA(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'banned' }), 'NOT_FOUND');
    expect(await messageCount(room.id, bob)).toBe(1);
  });

  it('an admin of a broadcast room demoted on the other node may no longer post here', async () => {
    const [owner, ann] = users('owner', 'ann');
    const room = await onB(owner).room.create({ kind: 'broadcast', name: 'news', memberIds: [ann] });
    await onB(owner).room.setRole({ roomId: room.id, userId: ann, role: 'admin' });
    await onA(ann).chat.send({ roomId: room.id, clientId: uuid(), body: 'post' });
    await onB(owner).room.setRole({ roomId: room.id, userId: ann, role: 'member' });
    await expectTRPCError(onA(ann).chat.send({ roomId: room.id, clientId: uuid(), body: 'as member' }), 'FORBIDDEN', /only admins/);
    expect(await messageCount(room.id, ann)).toBe(1);
  });

  it('archived on the other node: refused here as archived; unarchived: accepted', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await warmRoom(owner, bob);
    await onB(owner).room.archive({ roomId: room.id });
    await expectTRPCError(onA(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'archived' }), 'PRECONDITION_FAILED', /archived/);
    await onB(owner).room.unarchive({ roomId: room.id });
    await onA(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'back' });
    expect(await messageCount(room.id, bob)).toBe(2);
  });

  it('a room created with members has been bumped once, by its one transaction', async () => {
    const [owner, a, b] = users('owner', 'a', 'b');
    const room = await onB(owner).room.create({ kind: 'group', name: 'bulk', memberIds: [a, b, `${b}c`, `${b}d`] });
    expect(await version(room.id)).toBe(1);
  });

  it('the version moves with access changes only: read positions, topics and sends leave it alone', async () => {
    const [owner, bob, carol] = users('owner', 'bob', 'carol');
    const room = await warmRoom(owner, bob);
    const v0 = await version(room.id);
    const m = await onA(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'x' });
    await onA(owner).receipt.markRead({ roomId: room.id, seq: m.seq });
    await onB(owner).room.update({ roomId: room.id, topic: 'new topic' });
    expect(await version(room.id)).toBe(v0);
    // Three members added by one call: one transaction, one bump (not one per member).
    await onB(owner).room.addMembers({ roomId: room.id, userIds: [carol, `${carol}x`, `${carol}y`] });
    const v1 = await version(room.id);
    expect(v1).toBe(v0 + 1);
    await onB(owner).room.update({ roomId: room.id, name: 'renamed' });
    expect(await version(room.id)).toBeGreaterThan(v1);
  });
});
