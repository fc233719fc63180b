/**
 * `room.leave` at the same moment as other membership changes: the room always keeps exactly one
 * owner and no caller gets an internal error from a deadlock. Interleavings are forced with row
 * locks held by a connection of the test's own, never timed.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { fileServer, roomKit, waitFor } from './fixture.js';

const t = fileServer('leave-races');
const { users, as, groupRoom } = roomKit(() => t);

const rolesOf = async (roomId: string) =>
  (await t.env.sql<{ user_id: string; role: string }>('select user_id, role from membership where room_id = $1 order by user_id', [roomId])).map((r) => [r.user_id, r.role]);

/** Backends of the test database waiting on a lock (any holder). */
const blockedCount = async () =>
  (await t.env.sql<{ n: number }>('select count(*)::int as n from pg_stat_activity where datname = current_database() and cardinality(pg_blocking_pids(pid)) > 0'))[0]!.n;

/** A transaction on a connection of its own (its deadlock check comes after the server's). */
async function otherTransaction() {
  const c = new pg.Client({ connectionString: t.env.databaseUrl });
  await c.connect();
  await c.query("set deadlock_timeout = '5s'");
  await c.query('begin');
  return {
    query: (text: string, params: unknown[] = []) => c.query(text, params),
    async [Symbol.asyncDispose]() {
      await c.end();
    },
  };
}

function track<T>(p: Promise<T>) {
  return Promise.allSettled([p]).then(([r]) => r!);
}

describe('room.leave and the one-owner rule', () => {
  it('the owner and the admin who inherits the room leave at the same time: the room keeps an owner', async () => {
    const [owner, admin, carol] = users('owner', 'admin', 'carol');
    const room = await groupRoom(owner, [admin, carol]);
    await as(owner).room.setRole({ roomId: room.id, userId: admin, role: 'admin' });
    await using other = await otherTransaction();
    // Holds the admin's membership row for a moment (any writer of it would: a mute, a read receipt).
    await other.query('select 1 from membership where room_id = $1 and user_id = $2 for update', [room.id, admin]);
    // The owner leaves: hands ownership to the admin (the successor), waiting for that row.
    const ownerLeaves = track(as(owner).room.leave({ roomId: room.id }));
    await waitFor(blockedCount, 'the owner’s leave to wait for the admin’s row', { until: (n) => n >= 1, timeoutMs: 10_000 });
    // The admin leaves too: it reads its role (admin) before the hand-over commits.
    const adminLeaves = track(as(admin).room.leave({ roomId: room.id }));
    await waitFor(blockedCount, 'the admin’s leave to wait too', { until: (n) => n >= 2, timeoutMs: 10_000 });
    await other.query('commit');
    const results = [await ownerLeaves, await adminLeaves];
    const remaining = await rolesOf(room.id);
    // Whatever the outcome of the two calls, the room must still have exactly one owner
    // (test/authz.matrix.test.ts 'room.leave': "The room always keeps exactly one owner").
    expect({ results: results.map((r) => r.status), remaining }).toEqual({ results: ['fulfilled', 'fulfilled'], remaining: [[carol, 'owner']] });
  });

  it('the owner and its successor leave at the same time: neither call fails with an internal error (a deadlock)', async () => {
    const [owner, admin, carol] = users('owner', 'admin', 'carol');
    const room = await groupRoom(owner, [admin, carol]);
    await as(owner).room.setRole({ roomId: room.id, userId: admin, role: 'admin' });
    await using other = await otherTransaction();
    // Holds the room's row for a moment (any change of the room's access does: a mute, a join).
    await other.query('select 1 from room where id = $1 for update', [room.id]);
    const ownerLeaves = track(as(owner).room.leave({ roomId: room.id }));
    await waitFor(blockedCount, 'the owner’s leave to wait for the room', { until: (n) => n >= 1, timeoutMs: 10_000 });
    const adminLeaves = track(as(admin).room.leave({ roomId: room.id }));
    await waitFor(blockedCount, 'the admin’s leave to wait for the room too', { until: (n) => n >= 2, timeoutMs: 10_000 });
    await other.query('commit');
    const results = [await ownerLeaves, await adminLeaves];
    const codes = results.map((r) => (r.status === 'fulfilled' ? 'ok' : (r.reason as { code?: string }).code));
    expect(codes).toEqual(['ok', 'ok']);
    expect(await rolesOf(room.id)).toEqual([[carol, 'owner']]);
  });
});

describe('a room its last member left', () => {
  it('is owned by whoever comes first: the first to join a public room, the first added by a service token (by user id)', async () => {
    const [owner, bob, carol, dave] = users('owner', 'bob', 'carol', 'dave');
    const pub = await as(owner!).room.create({ kind: 'group', name: 'abandoned', visibility: 'public' });
    await as(owner!).room.leave({ roomId: pub.id });
    expect(await rolesOf(pub.id)).toEqual([]);
    await as(bob!).room.join({ roomId: pub.id });
    expect(await rolesOf(pub.id)).toEqual([[bob, 'owner']]);
    // The room's log says so: joined as a member, then made the owner.
    const log = await t.env.sql<{ type: string; data: { userId: string; role: string } }>(
      "select type, data from room_event where room_id = $1 and type in ('member.joined', 'member.updated') order by seq desc limit 2",
      [pub.id],
    );
    expect(log.reverse().map((e) => [e.type, e.data.userId, e.data.role])).toEqual([
      ['member.joined', bob, 'member'],
      ['member.updated', bob, 'owner'],
    ]);
    // Its owner moderates again: carol, who joins next, is a member bob may remove.
    await as(carol!).room.join({ roomId: pub.id });
    await as(bob!).room.removeMember({ roomId: pub.id, userId: carol! });
    expect(await rolesOf(pub.id)).toEqual([[bob, 'owner']]);

    const group = await as(owner!).room.create({ kind: 'group', name: 'left alone' });
    await as(owner!).room.leave({ roomId: group.id });
    await as('integration', 'default', ['service']).room.addMembers({ roomId: group.id, userIds: [dave!, carol!] });
    expect(await rolesOf(group.id)).toEqual([
      [carol, 'owner'],
      [dave, 'member'],
    ]);
  });

  it('a room left without owner by an older version (members, none of them the owner) gets one with its next member', async () => {
    const [owner, bob, carol, dave] = users('owner', 'bob', 'carol', 'dave');
    const room = await as(owner!).room.create({ kind: 'group', name: 'ownerless', visibility: 'public', memberIds: [bob!, carol!] });
    await as(owner!).room.setRole({ roomId: room.id, userId: carol!, role: 'admin' });
    // What an older version left: the owner gone, nobody given the room.
    await t.env.sql("delete from membership where room_id = $1 and role = 'owner'", [room.id]);
    await as(dave!).room.join({ roomId: room.id });
    // The longest-standing member of the highest role, not the newcomer.
    expect(await rolesOf(room.id)).toEqual([
      [bob, 'member'],
      [carol, 'owner'],
      [dave, 'member'],
    ]);
  });
});
