/**
 * Moderation and room changes hold the actor's rights until the room's lock (src/store/tx.ts
 * `lockRoom`, src/services/access.ts `requirePermissionInTx`): a ban, unban, removal, role change,
 * mute, member add, room update, archive, deletion or meeting checks the actor's rights first and
 * takes the room's row lock later. A demotion, removal or hand-over of ownership that commits in
 * between must refuse the change as if it had come first: nothing of it is written (no row, no seq).
 *
 * The interleaving is forced, never timed: the access change runs in a transaction of its own
 * connection and stays open (its trigger holds the room's row, src/store/entities.ts), the call
 * checks the actor's rights (it sees the change uncommitted, so not yet) and blocks on the room's
 * row (or the owner's membership row); only once PostgreSQL reports it waiting on that transaction
 * does the change commit.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { actor, callerFor, expectTRPCError, fileServer, roomKit, waitFor } from './fixture.js';
import { commitWhileBlocked as lockedCommit, type Statement } from './fixture/locks.js';
import { startLiveKitDouble } from './video-doubles.js';

const t = fileServer('modlock');
const { users, as, groupRoom } = roomKit(() => t);

const commitWhileBlocked = <T>(statements: Statement[], call: () => Promise<T>) => lockedCommit(t.env.databaseUrl, statements, call);

const setRole = (roomId: string, userId: string, role: string): Statement[] => [
  ['update membership set role = $3 where room_id = $1 and user_id = $2', [roomId, userId, role]],
];
const remove = (roomId: string, userId: string): Statement[] => [['delete from membership where room_id = $1 and user_id = $2', [roomId, userId]]];
/** The owner hands ownership to `to` (what room.setRole writes). */
const handOver = (roomId: string, owner: string, to: string): Statement[] => [...setRole(roomId, owner, 'admin'), ...setRole(roomId, to, 'owner')];

const lastSeq = async (roomId: string) => (await t.env.sql<{ s: number }>('select last_seq::int as s from room where id = $1', [roomId]))[0]!.s;
const roleOf = async (roomId: string, userId: string) =>
  (await t.env.sql<{ role: string }>('select role from membership where room_id = $1 and user_id = $2', [roomId, userId]))[0]?.role ?? null;
const bans = (roomId: string) => t.env.sql('select user_id from room_ban where room_id = $1', [roomId]);
const auditOf = (roomId: string, action: string) => t.env.sql('select actor_id from audit_event where room_id = $1 and action = $2', [roomId, action]);

/** Throws unless `r` is the refusal `code` (with `message`); returns nothing. */
async function expectRefused(r: PromiseSettledResult<unknown>, code: Parameters<typeof expectTRPCError>[1], message?: RegExp): Promise<void> {
  await expectTRPCError(r.status === 'fulfilled' ? Promise.resolve(r.value) : Promise.reject(r.reason), code, message);
}

/** A group room of `owner` with the members `roles` (their roles set through the API). */
async function roomWith(owner: string, roles: Record<string, 'member' | 'moderator' | 'admin'>) {
  const room = await groupRoom(owner, Object.keys(roles));
  for (const [userId, role] of Object.entries(roles)) {
    if (role !== 'member') await as(owner).room.setRole({ roomId: room.id, userId, role });
  }
  return room;
}

describe('a moderation or room change checked before the room lock is checked again under it', () => {
  it('a ban by a moderator demoted meanwhile: FORBIDDEN, the target stays a member, no ban, no seq, nothing audited', async () => {
    const [owner, mod, bob] = users('owner', 'mod', 'bob');
    const room = await roomWith(owner, { [mod]: 'moderator', [bob]: 'member' });
    const seq = await lastSeq(room.id);
    const r = await commitWhileBlocked(setRole(room.id, mod, 'member'), () => as(mod).room.ban({ roomId: room.id, userId: bob }));
    await expectRefused(r, 'FORBIDDEN', /your role \(member\) may not ban members/);
    expect(await roleOf(room.id, bob)).toBe('member');
    expect(await bans(room.id)).toEqual([]);
    expect(await lastSeq(room.id)).toBe(seq);
    expect(await auditOf(room.id, 'member.ban')).toEqual([]);
  });

  it('a ban of a non-member (it appends no event) by a moderator removed meanwhile: NOT_FOUND, no ban', async () => {
    const [owner, mod, eve] = users('owner', 'mod', 'eve');
    const room = await roomWith(owner, { [mod]: 'moderator' });
    const r = await commitWhileBlocked(remove(room.id, mod), () => as(mod).room.ban({ roomId: room.id, userId: eve }));
    await expectRefused(r, 'NOT_FOUND', /room not found/);
    expect(await bans(room.id)).toEqual([]);
  });

  it('an unban (no event) by a moderator demoted meanwhile: FORBIDDEN, the ban stays', async () => {
    const [owner, mod, eve] = users('owner', 'mod', 'eve');
    const room = await roomWith(owner, { [mod]: 'moderator', [eve]: 'member' });
    await as(owner).room.ban({ roomId: room.id, userId: eve });
    const r = await commitWhileBlocked(setRole(room.id, mod, 'member'), () => as(mod).room.unban({ roomId: room.id, userId: eve }));
    await expectRefused(r, 'FORBIDDEN', /may not ban members/);
    expect(await bans(room.id)).toEqual([{ user_id: eve }]);
  });

  it('a role change by an admin demoted meanwhile: FORBIDDEN, the target keeps their role, no seq', async () => {
    const [owner, admin, bob] = users('owner', 'admin', 'bob');
    const room = await roomWith(owner, { [admin]: 'admin', [bob]: 'member' });
    const seq = await lastSeq(room.id);
    const r = await commitWhileBlocked(setRole(room.id, admin, 'moderator'), () =>
      as(admin).room.setRole({ roomId: room.id, userId: bob, role: 'moderator' }),
    );
    await expectRefused(r, 'FORBIDDEN', /your role \(moderator\) may not change roles/);
    expect(await roleOf(room.id, bob)).toBe('member');
    expect(await lastSeq(room.id)).toBe(seq);
  });

  it('a hand-over of ownership by an owner who handed it to someone else meanwhile: FORBIDDEN, one owner', async () => {
    const [owner, xavier, yves] = users('owner', 'xavier', 'yves');
    const room = await roomWith(owner, { [xavier]: 'member', [yves]: 'member' });
    const seq = await lastSeq(room.id);
    const r = await commitWhileBlocked(handOver(room.id, owner, xavier), () => as(owner).room.setRole({ roomId: room.id, userId: yves, role: 'owner' }));
    await expectRefused(r, 'FORBIDDEN', /only the owner can hand over ownership/);
    expect(await t.env.sql("select user_id from membership where room_id = $1 and role = 'owner'", [room.id])).toEqual([{ user_id: xavier }]);
    expect(await roleOf(room.id, yves)).toBe('member');
    expect(await lastSeq(room.id)).toBe(seq);
  });

  it('a removal by a moderator removed meanwhile: NOT_FOUND, the target stays, no seq', async () => {
    const [owner, mod, bob] = users('owner', 'mod', 'bob');
    const room = await roomWith(owner, { [mod]: 'moderator', [bob]: 'member' });
    const seq = await lastSeq(room.id);
    const r = await commitWhileBlocked(remove(room.id, mod), () => as(mod).room.removeMember({ roomId: room.id, userId: bob }));
    await expectRefused(r, 'NOT_FOUND', /room not found/);
    expect(await roleOf(room.id, bob)).toBe('member');
    expect(await lastSeq(room.id)).toBe(seq);
  });

  it('a mute by a moderator demoted meanwhile: FORBIDDEN, the target is not muted', async () => {
    const [owner, mod, bob] = users('owner', 'mod', 'bob');
    const room = await roomWith(owner, { [mod]: 'moderator', [bob]: 'member' });
    const seq = await lastSeq(room.id);
    const r = await commitWhileBlocked(setRole(room.id, mod, 'member'), () => as(mod).room.mute({ roomId: room.id, userId: bob }));
    await expectRefused(r, 'FORBIDDEN', /may not mute members/);
    expect(await t.env.sql('select muted_until from membership where room_id = $1 and user_id = $2', [room.id, bob])).toEqual([{ muted_until: null }]);
    expect(await lastSeq(room.id)).toBe(seq);
  });

  it('adding members by an admin demoted meanwhile: FORBIDDEN, nobody added, no seq', async () => {
    const [owner, admin, dan] = users('owner', 'admin', 'dan');
    const room = await roomWith(owner, { [admin]: 'admin' });
    const seq = await lastSeq(room.id);
    const r = await commitWhileBlocked(setRole(room.id, admin, 'member'), () => as(admin).room.addMembers({ roomId: room.id, userIds: [dan] }));
    await expectRefused(r, 'FORBIDDEN', /your role \(member\) may not add members/);
    expect(await roleOf(room.id, dan)).toBeNull();
    expect(await lastSeq(room.id)).toBe(seq);
  });

  it('adding a user banned meanwhile: FORBIDDEN naming the ban (the bans are read under the room lock)', async () => {
    const [owner, dan] = users('owner', 'dan');
    const room = await groupRoom(owner, []);
    const ban: Statement[] = [['insert into room_ban (room_id, user_id, banned_by, created_at) values ($1, $2, $3, now())', [room.id, dan, owner]]];
    const r = await commitWhileBlocked(ban, () => as(owner).room.addMembers({ roomId: room.id, userIds: [dan] }));
    await expectRefused(r, 'FORBIDDEN', /banned from this room/);
    expect(await roleOf(room.id, dan)).toBeNull();
  });

  it('a rename by an admin demoted meanwhile: FORBIDDEN, the name stays, no seq', async () => {
    const [owner, admin] = users('owner', 'admin');
    const room = await roomWith(owner, { [admin]: 'admin' });
    const seq = await lastSeq(room.id);
    const r = await commitWhileBlocked(setRole(room.id, admin, 'member'), () => as(admin).room.update({ roomId: room.id, name: 'taken over' }));
    await expectRefused(r, 'FORBIDDEN', /your role \(member\) may not change the room/);
    expect(await t.env.sql('select name from room where id = $1', [room.id])).toEqual([{ name: room.name }]);
    expect(await lastSeq(room.id)).toBe(seq);
  });

  it('a visibility and retention change (no event) by an admin demoted meanwhile: FORBIDDEN, both stay', async () => {
    const [owner, admin] = users('owner', 'admin');
    const room = await roomWith(owner, { [admin]: 'admin' });
    const r = await commitWhileBlocked(setRole(room.id, admin, 'member'), () =>
      as(admin).room.update({ roomId: room.id, visibility: 'public', retentionDays: 1 }),
    );
    await expectRefused(r, 'FORBIDDEN', /may not change the room/);
    expect(await t.env.sql('select visibility, retention_days from room where id = $1', [room.id])).toEqual([{ visibility: 'private', retention_days: null }]);
  });

  it('archiving by an owner who handed over ownership meanwhile: FORBIDDEN, the room stays writable', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, [bob]);
    const r = await commitWhileBlocked(handOver(room.id, owner, bob), () => as(owner).room.archive({ roomId: room.id }));
    await expectRefused(r, 'FORBIDDEN', /your role \(admin\) may not archive the room/);
    expect(await t.env.sql('select archived_at from room where id = $1', [room.id])).toEqual([{ archived_at: null }]);
  });

  it('deleting by an owner who handed over ownership meanwhile: FORBIDDEN, the room stays', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, [bob]);
    const r = await commitWhileBlocked(handOver(room.id, owner, bob), () => as(owner).room.delete({ roomId: room.id }));
    await expectRefused(r, 'FORBIDDEN', /may not delete the room/);
    expect(await t.env.sql('select id from room where id = $1', [room.id])).toEqual([{ id: room.id }]);
    expect(await auditOf(room.id, 'room.delete')).toEqual([]);
  });

  it('a meeting started by a member removed meanwhile: NOT_FOUND, no meeting, no invite, the provider room given back', async () => {
    const [owner, bob] = users('owner', 'bob');
    await using lk = await startLiveKitDouble();
    await using videoSrv = await t.env.startServer({
      video: { ...t.config.video, provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret } },
    });
    const room = await groupRoom(owner, [bob]);
    const r = await commitWhileBlocked(remove(room.id, bob), () => callerFor(videoSrv.app, actor(bob)).video.create({ roomId: room.id, title: 'after the removal' }));
    await expectRefused(r, 'NOT_FOUND', /room not found/);
    expect(await t.env.sql('select id from meeting where room_id = $1', [room.id])).toEqual([]);
    expect(await t.env.sql("select 1 from inbox_event where user_id = $1 and type = 'meeting.invite'", [owner])).toEqual([]);
    expect(lk.requests.map((q) => q.method)).toEqual(['CreateRoom', 'DeleteRoom']);
    expect(lk.rooms.size).toBe(0);
  });

  it('a change of the room that leaves the moderator allowed (a member added meanwhile): checked again, the ban lands', async () => {
    const [owner, mod, bob, dan] = users('owner', 'mod', 'bob', 'dan');
    const room = await roomWith(owner, { [mod]: 'moderator', [bob]: 'member' });
    const seq = await lastSeq(room.id);
    const add: Statement[] = [["insert into membership (room_id, user_id, role, joined_at) values ($1, $2, 'member', now())", [room.id, dan]]];
    const r = await commitWhileBlocked(add, () => as(mod).room.ban({ roomId: room.id, userId: bob }));
    expect(r.status).toBe('fulfilled');
    expect(await roleOf(room.id, bob)).toBeNull();
    expect(await bans(room.id)).toEqual([{ user_id: bob }]);
    // member.left and the system message.
    expect(await lastSeq(room.id)).toBe(seq + 2);
    expect(await auditOf(room.id, 'member.ban')).toEqual([{ actor_id: mod }]);
  });
});

/**
 * A transaction on a connection of its own that leaves breaking a deadlock to the server's transaction
 * (its own check comes 5 s after a wait, the server's 1 s: test/deadlock.retry.test.ts).
 */
async function otherTransaction() {
  const c = new pg.Client({ connectionString: t.env.databaseUrl });
  await c.connect();
  await c.query("set deadlock_timeout = '5s'");
  await c.query('begin');
  const pid = (await c.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  return {
    query: (text: string, params: unknown[] = []) => c.query(text, params),
    /** Until a server connection waits on a lock this transaction holds, or `call` is over. */
    blocking: (call: { readonly done: boolean }) =>
      waitFor(
        async () =>
          call.done || (await t.env.sql<{ n: number }>('select count(*)::int as n from pg_stat_activity where $1 = any(pg_blocking_pids(pid))', [pid]))[0]!.n > 0,
        'the server transaction to wait on the other one',
        { timeoutMs: 10_000 },
      ),
    async [Symbol.asyncDispose]() {
      await c.end();
    },
  };
}

/** A call running in the background, watched (its failure is awaited by the test, never unhandled). */
function track<T>(p: Promise<T>) {
  const settled = { done: false };
  const result = Promise.allSettled([p]).then(([r]) => {
    settled.done = true;
    return r!;
  });
  return {
    result,
    get done() {
      return settled.done;
    },
  };
}

const retried = () => t.app.services.store.txStats.retried;

describe('lock order: the membership rows a change writes are locked before the room row', () => {
  it("a hand-over while the owner leaves (the owner's row, then the room's): no deadlock, nothing run again, NOT_FOUND as after the leave", async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, [bob]);
    const before = retried();
    await using leave = await otherTransaction();
    // The leave holds the owner's row ...
    await leave.query('select 1 from membership where room_id = $1 and user_id = $2 for update', [room.id, owner]);
    const handing = track(as(owner).room.setRole({ roomId: room.id, userId: bob, role: 'owner' }));
    await leave.blocking(handing);
    // ... and deletes it: its trigger takes the room's row, which the hand-over must not hold yet.
    await leave.query('delete from membership where room_id = $1 and user_id = $2', [room.id, owner]);
    await leave.blocking(handing);
    await leave.query('commit');
    await expectRefused(await handing.result, 'NOT_FOUND', /room not found/);
    expect(retried()).toBe(before);
    expect(await roleOf(room.id, bob)).toBe('member');
  });

  it("a removal while the target leaves (the target's row, then the room's): no deadlock, nothing run again, NOT_FOUND (member)", async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, [bob]);
    const before = retried();
    await using leave = await otherTransaction();
    await leave.query('select 1 from membership where room_id = $1 and user_id = $2 for update', [room.id, bob]);
    const removing = track(as(owner).room.removeMember({ roomId: room.id, userId: bob }));
    await leave.blocking(removing);
    await leave.query('delete from membership where room_id = $1 and user_id = $2', [room.id, bob]);
    await leave.blocking(removing);
    await leave.query('commit');
    await expectRefused(await removing.result, 'NOT_FOUND', /member not found/);
    expect(retried()).toBe(before);
  });
});

describe('a public room join and a ban (or a deletion) at the same moment', () => {
  const publicRoom = async (owner: string) => {
    const room = await groupRoom(owner, []);
    await as(owner).room.update({ roomId: room.id, visibility: 'public' });
    return room;
  };

  it('a ban that commits while the join waits for the room refuses the join: no membership', async () => {
    const [owner, mallory] = users('jb-owner', 'jb-mallory');
    const room = await publicRoom(owner);
    const r = await commitWhileBlocked([['insert into room_ban (room_id, user_id, banned_by, created_at) values ($1, $2, $3, now())', [room.id, mallory, owner]]], () =>
      as(mallory).room.join({ roomId: room.id }),
    );
    await expectRefused(r, 'FORBIDDEN', /banned/);
    expect(await roleOf(room.id, mallory)).toBeNull();
    await expectTRPCError(as(mallory).chat.history({ roomId: room.id }), 'NOT_FOUND');
  });

  it('a join that commits while the ban waits for the room is undone by the ban: banned, not a member', async () => {
    const [owner, mallory] = users('bj-owner', 'bj-mallory');
    const room = await publicRoom(owner);
    // What room.join writes, held open: the ban reads no member, then waits for the room's row.
    const r = await commitWhileBlocked([["insert into membership (room_id, user_id, role, joined_at, last_read_seq, receipt_seq) values ($1, $2, 'member', now(), 0, 0)", [room.id, mallory]]], () =>
      as(owner).room.ban({ roomId: room.id, userId: mallory }),
    );
    expect(r.status).toBe('fulfilled');
    expect(await roleOf(room.id, mallory)).toBeNull();
    expect((await bans(room.id)).map((b) => (b as { user_id: string }).user_id)).toEqual([mallory]);
    await expectTRPCError(as(mallory).chat.history({ roomId: room.id }), 'NOT_FOUND');
  });

  it('a join while the room is being deleted answers NOT_FOUND (not a foreign key error)', async () => {
    const [owner, carol] = users('jd-owner', 'jd-carol');
    const room = await publicRoom(owner);
    const r = await commitWhileBlocked([['delete from room where id = $1', [room.id]]], () => as(carol).room.join({ roomId: room.id }));
    await expectRefused(r, 'NOT_FOUND', /room/);
  });
});
