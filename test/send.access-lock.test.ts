/**
 * Access checked again under the room's lock (src/services/access.ts `requireInTx`, src/store/tx.ts
 * `whenRoomLocked`): a change written with the room's next seq checks the sender's access first and
 * takes the room's row lock later. A ban, demotion, mute or removal that commits in between must
 * refuse the change as if it had come first, and nothing of it may be written (no row, no seq).
 *
 * The interleaving is forced, never timed: the access change runs in a transaction of its own
 * connection and stays open (its trigger holds the room's row, src/store/entities.ts), the call
 * checks its access (it sees the change uncommitted, so not yet) and blocks on the room's row; only
 * once PostgreSQL reports it waiting on that transaction does the change commit.
 */
import { describe, expect, it, vi } from 'vitest';
import { expectTRPCError, fileServer, roomKit, uuid } from './fixture.js';
import { commitWhileBlocked as lockedCommit, type Statement } from './fixture/locks.js';

const t = fileServer('accesslock');
const { users, as, groupRoom } = roomKit(() => t);

const commitWhileBlocked = <T>(statements: Statement[], call: () => Promise<T>) => lockedCommit(t.env.databaseUrl, statements, call);

const ban = (roomId: string, userId: string, by: string): Statement[] => [
  ['insert into room_ban (room_id, user_id, banned_by, created_at) values ($1, $2, $3, now())', [roomId, userId, by]],
  ['delete from membership where room_id = $1 and user_id = $2', [roomId, userId]],
];
const setRole = (roomId: string, userId: string, role: string): Statement[] => [
  ['update membership set role = $3 where room_id = $1 and user_id = $2', [roomId, userId, role]],
];

const lastSeq = async (roomId: string) => (await t.env.sql<{ s: number }>('select last_seq::int as s from room where id = $1', [roomId]))[0]!.s;
const byClientId = (clientId: string) => t.env.sql('select id from message where client_id = $1', [clientId]);

/** Throws unless `r` is the refusal `code` (with `message`); returns nothing. */
async function expectRefused(r: PromiseSettledResult<unknown>, code: Parameters<typeof expectTRPCError>[1], message?: RegExp): Promise<void> {
  await expectTRPCError(r.status === 'fulfilled' ? Promise.resolve(r.value) : Promise.reject(r.reason), code, message);
}

describe('a change checked before the room lock is checked again under it', () => {
  it('a reply whose sender is banned while it waits for the room: NOT_FOUND (as after the ban), no row, no seq, no reply counted', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, [bob]);
    const root = await as(owner).chat.send({ roomId: room.id, clientId: uuid(), body: 'root' });
    const seq = await lastSeq(room.id);
    const clientId = uuid();
    const r = await commitWhileBlocked(ban(room.id, bob, owner), () => as(bob).chat.send({ roomId: room.id, clientId, body: 'after the ban', replyToId: root.id }));
    await expectRefused(r, 'NOT_FOUND');
    expect(await byClientId(clientId)).toEqual([]);
    expect(await lastSeq(room.id)).toBe(seq);
    expect((await as(owner).chat.history({ roomId: room.id })).messages.find((m) => m.id === root.id)?.replyCount).toBe(0);
  });

  it('a message with mentions from an admin of a broadcast room demoted meanwhile: FORBIDDEN like any post of a member', async () => {
    const [owner, ann, carl] = users('owner', 'ann', 'carl');
    const room = await as(owner).room.create({ kind: 'broadcast', name: 'news', memberIds: [ann, carl] });
    await as(owner).room.setRole({ roomId: room.id, userId: ann, role: 'admin' });
    const seq = await lastSeq(room.id);
    const clientId = uuid();
    const r = await commitWhileBlocked(setRole(room.id, ann, 'member'), () => as(ann).chat.send({ roomId: room.id, clientId, body: 'hi @carl', mentions: [carl] }));
    await expectRefused(r, 'FORBIDDEN', /only admins and the owner may post/);
    expect(await byClientId(clientId)).toEqual([]);
    expect(await lastSeq(room.id)).toBe(seq);
    expect(await t.env.sql("select 1 from inbox_event where user_id = $1 and type = 'mention'", [carl])).toEqual([]);
  });

  it('an edit by a member muted meanwhile: FORBIDDEN (muted), the body stays', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, [bob]);
    const m = await as(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'before' });
    const seq = await lastSeq(room.id);
    const mute: Statement[] = [["update membership set muted_until = '9999-12-31T00:00:00Z' where room_id = $1 and user_id = $2", [room.id, bob]]];
    const r = await commitWhileBlocked(mute, () => as(bob).chat.edit({ messageId: m.id, body: 'after the mute' }));
    await expectRefused(r, 'FORBIDDEN', /muted/);
    expect(await lastSeq(room.id)).toBe(seq);
    expect(await t.env.sql('select body, edited_at from message where id = $1', [m.id])).toEqual([{ body: 'before', edited_at: null }]);
  });

  it('a reaction by a member removed meanwhile: NOT_FOUND, no reaction row', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, [bob]);
    const m = await as(owner).chat.send({ roomId: room.id, clientId: uuid(), body: 'react to me' });
    const seq = await lastSeq(room.id);
    const remove: Statement[] = [['delete from membership where room_id = $1 and user_id = $2', [room.id, bob]]];
    const r = await commitWhileBlocked(remove, () => as(bob).chat.react({ messageId: m.id, emoji: '👍' }));
    await expectRefused(r, 'NOT_FOUND');
    expect(await lastSeq(room.id)).toBe(seq);
    expect(await t.env.sql('select 1 from reaction where message_id = $1', [m.id])).toEqual([]);
  });

  it("a moderator demoted meanwhile may not delete another's message: FORBIDDEN, the message stays", async () => {
    const [owner, mod, bob] = users('owner', 'mod', 'bob');
    const room = await groupRoom(owner, [mod, bob]);
    await as(owner).room.setRole({ roomId: room.id, userId: mod, role: 'moderator' });
    const m = await as(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'keep me' });
    const seq = await lastSeq(room.id);
    const r = await commitWhileBlocked(setRole(room.id, mod, 'member'), () => as(mod).chat.delete({ messageId: m.id }));
    await expectRefused(r, 'FORBIDDEN', /only the author or a moderator/);
    expect(await lastSeq(room.id)).toBe(seq);
    expect(await t.env.sql('select body, deleted_at from message where id = $1', [m.id])).toEqual([{ body: 'keep me', deleted_at: null }]);
  });

  it('a plain message (the grouped write) whose sender is banned after a check against the database: NOT_FOUND, no row, no seq', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, [bob]);
    const seq = await lastSeq(room.id);
    const clientId = uuid();
    // bob never sent here: no cached access row, the check reads the database.
    const r = await commitWhileBlocked(ban(room.id, bob, owner), () => as(bob).chat.send({ roomId: room.id, clientId, body: 'plain, after the ban' }));
    await expectRefused(r, 'NOT_FOUND');
    expect(await byClientId(clientId)).toEqual([]);
    expect(await lastSeq(room.id)).toBe(seq);
  });

  it('a plain message whose access keeps changing between its check and its write is written after 3 grouped tries, checked under the lock', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, [bob]);
    const stale = t.app.services.access.cacheStats.stale;
    const seq = await lastSeq(room.id);
    // The grouped write finds the room's access version moved since the check, three times in a row
    // (a big room many join): what each such write answers, without the joins.
    const writes = vi.spyOn(t.app.services.store, 'appendMessages');
    try {
      for (let i = 0; i < 3; i++) writes.mockResolvedValueOnce([{ kind: 'stale' }]);
      const m = await as(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'through the churn' });
      expect(m.seq).toBe(seq + 1);
      // No fourth grouped try: the send went to a transaction of its own, checked under the room's lock.
      expect(writes).toHaveBeenCalledTimes(3);
      expect(t.app.services.access.cacheStats.stale).toBe(stale + 3);
    } finally {
      writes.mockRestore();
    }
  });

  it('a change of the room that leaves the sender allowed (another member added meanwhile): checked again and written with the next seq', async () => {
    const [owner, bob, dan] = users('owner', 'bob', 'dan');
    const room = await groupRoom(owner, [bob]);
    const root = await as(owner).chat.send({ roomId: room.id, clientId: uuid(), body: 'root' });
    const seq = await lastSeq(room.id);
    const add: Statement[] = [["insert into membership (room_id, user_id, role, joined_at) values ($1, $2, 'member', now())", [room.id, dan]]];
    const r = await commitWhileBlocked(add, () => as(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'still allowed', replyToId: root.id }));
    expect(r.status).toBe('fulfilled');
    expect(r.status === 'fulfilled' && r.value.seq).toBe(seq + 1);
  });
});
