/**
 * Paged reads of lists that grow without bound: `room.members` and `room.bans` by user id (`after`,
 * `limit`), `chat.edits` by version (`beforeId`, `afterId`, `limit`), and the client library's
 * `allMembers`. Through createCaller and the real client; real PostgreSQL and Redis.
 */
import { describe, expect, it } from 'vitest';
import { allMembers, MEMBERS_PAGE_SIZE } from '../client/index.js';
import { clientFor, expectTRPCError, fileServer, roomKit, uuid } from './fixture.js';

const t = fileServer('rpage');

const kit = roomKit(() => t);
const { users, as } = kit;

/** Code-unit order: the ids of these tests are lowercase letters and digits, ordered alike by every collation. */
const sorted = (ids: string[]) => [...ids].sort();

/** Reads a keyed list page by page (`after`: the last key of the page before) until a short page. */
async function pageThrough<T>(read: (after: string | undefined) => Promise<T[]>, key: (x: T) => string, limit: number): Promise<T[][]> {
  const pages: T[][] = [];
  let after: string | undefined;
  for (;;) {
    const page = await read(after);
    expect(page.length).toBeLessThanOrEqual(limit);
    pages.push(page);
    if (page.length < limit) return pages;
    after = key(page[page.length - 1]!);
  }
}

describe('room.members pages', () => {
  it('pages by user id with after and limit: every member once, in order, the same rows as one call', async () => {
    const [owner, ...others] = users('owner', 'mia', 'bob', 'zoe', 'amy', 'kai', 'lee', 'ned');
    const room = await as(owner!).room.create({ kind: 'group', name: 'paged', memberIds: others });
    const everyone = sorted([owner!, ...others]);
    expect(everyone).toHaveLength(8);

    // Without paging input: everyone (up to 1,000), by user id.
    const all = await as(others[0]!).room.members({ roomId: room.id });
    expect(all.map((m) => m.userId)).toEqual(everyone);

    const pages = await pageThrough((after) => as(others[0]!).room.members({ roomId: room.id, after, limit: 3 }), (m) => m.userId, 3);
    expect(pages.map((p) => p.length)).toEqual([3, 3, 2]);
    const union = pages.flat();
    expect(union.map((m) => m.userId)).toEqual(everyone);
    expect(new Set(union.map((m) => m.userId)).size).toBe(union.length);
    // The rows are those of the unpaged answer (role, name, read position, mute).
    expect(union).toEqual(all);

    // A page ending exactly at the last member: the next one is empty.
    expect(await as(owner!).room.members({ roomId: room.id, after: everyone[7]!, limit: 3 })).toEqual([]);
    const twoPages = await pageThrough((after) => as(owner!).room.members({ roomId: room.id, after, limit: 4 }), (m) => m.userId, 4);
    expect(twoPages.map((p) => p.length)).toEqual([4, 4, 0]);
    // `after` need not be a member: the members whose id sorts after it.
    expect((await as(owner!).room.members({ roomId: room.id, after: `${everyone[2]!}0`, limit: 2 })).map((m) => m.userId)).toEqual(everyone.slice(3, 5));
    // null is no cursor and the default limit.
    expect(await as(owner!).room.members({ roomId: room.id, after: null, limit: null })).toEqual(all);
  });

  it('validates limit (1..1000) and after (a user id) with BAD_REQUEST', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(owner!).room.create({ kind: 'group', name: 'bounds', memberIds: [bob!] });
    for (const limit of [0, -1, 1001, 1.5]) {
      await expectTRPCError(as(owner!).room.members({ roomId: room.id, limit }), 'BAD_REQUEST', /limit/);
    }
    for (const after of ['', 'has space', 'x'.repeat(129)]) {
      await expectTRPCError(as(owner!).room.members({ roomId: room.id, after }), 'BAD_REQUEST', /userId/);
    }
    expect(await as(owner!).room.members({ roomId: room.id, limit: 1000 })).toHaveLength(2);
    expect((await as(owner!).room.members({ roomId: room.id, limit: 1 })).map((m) => m.userId)).toEqual([bob]);
  });

  it('answers outsiders NOT_FOUND as before, whatever the paging input', async () => {
    const [owner, bob, eve] = users('owner', 'bob', 'eve');
    const room = await as(owner!).room.create({ kind: 'group', name: 'Hidden Heron', memberIds: [bob!] });
    await as(owner!).room.removeMember({ roomId: room.id, userId: bob! });
    for (const outsider of [as(eve!), as(bob!), as(owner!, 'tenant-b')]) {
      for (const input of [{}, { limit: 1 }, { after: owner!, limit: 1000 }]) {
        const err = await expectTRPCError(outsider.room.members({ roomId: room.id, ...input }), 'NOT_FOUND', /room not found/);
        expect(err.message).not.toContain('Heron');
      }
    }
    await expectTRPCError(as(eve!).room.members({ roomId: uuid(), limit: 2 }), 'NOT_FOUND', /room not found/);
  });

  it('holds 1,000 members per call by default; a moderator’s change answers the member beyond the first page', async () => {
    const [owner, target] = users('owner', 'zztarget');
    const room = await as(owner!).room.create({ kind: 'group', name: 'big', memberIds: [target!] });
    // 999 more members in one statement (set-up only: the API adds at most 100 per call).
    await t.env.sql(
      `insert into membership (room_id, user_id, role, joined_at, last_read_seq, receipt_seq)
       select $1, 'bulk${kit.n}x' || lpad(i::text, 4, '0'), 'member', now(), 0, 0 from generate_series(1, 999) as i`,
      [room.id],
    );
    const first = await as(owner!).room.members({ roomId: room.id });
    expect(first).toHaveLength(1000);
    // The owner and the target sort after every bulk id: the target is on the second page.
    expect(first.map((m) => m.userId)).not.toContain(target);
    const rest = await as(owner!).room.members({ roomId: room.id, after: first[999]!.userId });
    expect(rest.map((m) => m.userId)).toEqual([target]);
    const ids = [...first, ...rest].map((m) => m.userId);
    expect(ids).toEqual(sorted(ids));
    expect(new Set(ids).size).toBe(1001);

    // setRole, mute and unmute answer the member they changed: one row, not a scan of the room.
    expect(await as(owner!).room.setRole({ roomId: room.id, userId: target!, role: 'moderator' })).toMatchObject({ userId: target, role: 'moderator' });
    const until = new Date(Date.now() + 3_600_000);
    const muted = await as(owner!).room.mute({ roomId: room.id, userId: target!, until });
    expect(muted).toEqual({ ...rest[0], role: 'moderator', mutedUntil: until });
    expect(await as(owner!).room.unmute({ roomId: room.id, userId: target! })).toEqual({ ...rest[0], role: 'moderator', mutedUntil: null });

    // The client library reads every page.
    await using c = clientFor(t.url, owner!);
    const everyone = await allMembers(c, room.id);
    expect(everyone.map((m) => m.userId)).toEqual(ids);
    expect(MEMBERS_PAGE_SIZE).toBe(1000);
  });

  it('allMembers pages through with a small page size', async () => {
    const [owner, ...others] = users('owner', 'pia', 'ben', 'tom', 'ada');
    const room = await as(owner!).room.create({ kind: 'group', name: 'client pages', memberIds: others });
    await using c = clientFor(t.url, others[0]!);
    for (const pageSize of [1, 2, 5, 6]) {
      const got = await allMembers(c, room.id, { pageSize });
      expect(got.map((m) => m.userId)).toEqual(sorted([owner!, ...others]));
      // (Read after the client's first call: its token wrote the user's name.)
      expect(got).toEqual(await as(owner!).room.members({ roomId: room.id }));
    }
  });
});

describe('room.bans pages', () => {
  it('pages by user id like members; limit validated; plain members FORBIDDEN, outsiders NOT_FOUND as before', async () => {
    const [owner, mod, bob, eve, ...banned] = users('owner', 'mod', 'bob', 'eve', 'vic', 'ann', 'rex', 'dan', 'sue');
    const room = await as(owner!).room.create({ kind: 'group', name: 'bans', memberIds: [mod!, bob!, ...banned.slice(0, 2)] });
    await as(owner!).room.setRole({ roomId: room.id, userId: mod!, role: 'moderator' });
    // Members and not-yet members alike.
    for (const userId of banned) await as(mod!).room.ban({ roomId: room.id, userId });
    const expected = sorted(banned);

    const all = await as(mod!).room.bans({ roomId: room.id });
    expect(all.map((b) => b.userId)).toEqual(expected);
    for (const b of all) expect(b).toEqual({ userId: b.userId, bannedBy: mod, createdAt: expect.any(Date) });

    const pages = await pageThrough((after) => as(owner!).room.bans({ roomId: room.id, after, limit: 2 }), (b) => b.userId, 2);
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    const union = pages.flat();
    expect(union).toEqual(all);
    expect(new Set(union.map((b) => b.userId)).size).toBe(banned.length);
    expect(await as(owner!).room.bans({ roomId: room.id, after: expected[4]!, limit: 1000 })).toEqual([]);

    for (const limit of [0, 1001]) await expectTRPCError(as(owner!).room.bans({ roomId: room.id, limit }), 'BAD_REQUEST', /limit/);
    await expectTRPCError(as(owner!).room.bans({ roomId: room.id, after: 'two words' }), 'BAD_REQUEST', /userId/);
    for (const input of [{}, { limit: 2 }, { after: expected[0]! }]) {
      await expectTRPCError(as(bob!).room.bans({ roomId: room.id, ...input }), 'FORBIDDEN');
      await expectTRPCError(as(eve!).room.bans({ roomId: room.id, ...input }), 'NOT_FOUND');
      await expectTRPCError(as(banned[0]!).room.bans({ roomId: room.id, ...input }), 'NOT_FOUND');
      await expectTRPCError(as(owner!, 'tenant-b').room.bans({ roomId: room.id, ...input }), 'NOT_FOUND');
    }
  });
});

describe('chat.edits pages', () => {
  it('pages like history: newest page without a cursor, beforeId back, afterId forward, both between; always oldest first', async () => {
    const [alice, bob, eve] = users('alice', 'bob', 'eve');
    const room = await as(alice!).room.create({ kind: 'group', name: 'edits', memberIds: [bob!] });
    const m = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'v0' });
    for (let i = 1; i <= 7; i++) await as(bob!).chat.edit({ messageId: m.id, body: `v${i}` });
    const bodies = ['v0', 'v1', 'v2', 'v3', 'v4', 'v5', 'v6'];

    // Without paging input: every earlier version (up to 100), oldest first, each with its id.
    const all = await as(alice!).chat.edits({ messageId: m.id });
    expect(all.map((e) => e.body)).toEqual(bodies);
    for (const e of all) expect(e).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), body: e.body, editorId: bob, replacedAt: expect.any(Date) });
    expect(new Set(all.map((e) => e.id)).size).toBe(7);
    const bodiesOf = (xs: { body: string | null }[]) => xs.map((e) => e.body);

    // Back from the newest page.
    const newest = await as(alice!).chat.edits({ messageId: m.id, limit: 3 });
    expect(bodiesOf(newest)).toEqual(['v4', 'v5', 'v6']);
    const back: (typeof all)[] = [newest];
    while (back[0]!.length === 3) back.unshift(await as(alice!).chat.edits({ messageId: m.id, beforeId: back[0]![0]!.id, limit: 3 }));
    expect(back.map((p) => p.length)).toEqual([1, 3, 3]);
    expect(back.flat()).toEqual(all);

    // Forward from the oldest.
    const forward = await pageThrough((afterId) => as(alice!).chat.edits({ messageId: m.id, afterId: afterId ?? all[0]!.id, limit: 3 }), (e) => e.id, 3);
    expect(forward.map((p) => p.length)).toEqual([3, 3, 0]);
    expect([all[0], ...forward.flat()]).toEqual(all);
    expect(await as(alice!).chat.edits({ messageId: m.id, afterId: all[6]!.id })).toEqual([]);
    expect(await as(alice!).chat.edits({ messageId: m.id, beforeId: all[0]!.id })).toEqual([]);

    // Both: strictly between, from the afterId side.
    expect(bodiesOf(await as(alice!).chat.edits({ messageId: m.id, afterId: all[1]!.id, beforeId: all[5]!.id }))).toEqual(['v2', 'v3', 'v4']);
    expect(bodiesOf(await as(alice!).chat.edits({ messageId: m.id, afterId: all[1]!.id, beforeId: all[5]!.id, limit: 2 }))).toEqual(['v2', 'v3']);
    expect(await as(alice!).chat.edits({ messageId: m.id, afterId: all[3]!.id, beforeId: all[4]!.id })).toEqual([]);

    // Limits and cursors are validated; a cursor must be a version of this message.
    for (const limit of [0, 1001]) await expectTRPCError(as(alice!).chat.edits({ messageId: m.id, limit }), 'BAD_REQUEST', /limit/);
    expect(await as(alice!).chat.edits({ messageId: m.id, limit: 1000 })).toEqual(all);
    await expectTRPCError(as(alice!).chat.edits({ messageId: m.id, afterId: 'v3' }), 'BAD_REQUEST', /afterId/);
    await expectTRPCError(as(alice!).chat.edits({ messageId: m.id, beforeId: uuid() }), 'BAD_REQUEST', /beforeId/);
    const other = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'w0' });
    await as(bob!).chat.edit({ messageId: other.id, body: 'w1' });
    const [otherVersion] = await as(bob!).chat.edits({ messageId: other.id });
    await expectTRPCError(as(alice!).chat.edits({ messageId: m.id, afterId: otherVersion!.id }), 'BAD_REQUEST', /versions of this message/);
    await expectTRPCError(as(alice!).chat.edits({ messageId: m.id, afterId: all[0]!.id, beforeId: otherVersion!.id }), 'BAD_REQUEST', /versions of this message/);

    // Outsiders: NOT_FOUND as before, whatever the paging input.
    for (const input of [{}, { limit: 2 }, { afterId: all[0]!.id }, { beforeId: all[6]!.id, limit: 1000 }]) {
      await expectTRPCError(as(eve!).chat.edits({ messageId: m.id, ...input }), 'NOT_FOUND', /message/);
      await expectTRPCError(as(alice!, 'tenant-b').chat.edits({ messageId: m.id, ...input }), 'NOT_FOUND', /message/);
    }
    await expectTRPCError(as(alice!).chat.edits({ messageId: uuid(), limit: 2 }), 'NOT_FOUND', /message/);

    // Deleted: no versions left, with or without a cursor.
    await as(bob!).chat.delete({ messageId: m.id });
    expect(await as(alice!).chat.edits({ messageId: m.id })).toEqual([]);
    expect(await as(alice!).chat.edits({ messageId: m.id, afterId: all[0]!.id, limit: 2 })).toEqual([]);
  });
});

describe('receipt.readers pages', () => {
  it('pages the members who read up to a seq by user id (after, limit); those who have not read it are never listed', async () => {
    const [owner, ...others] = users('owner', 'mia', 'bob', 'zoe', 'amy', 'kai', 'lee', 'ned');
    const room = await as(owner!).room.create({ kind: 'group', name: 'read by', memberIds: others });
    const m = await as(owner!).chat.send({ roomId: room.id, clientId: uuid(), body: 'read me' });
    // Five of the others read it; two never do.
    const readers = others.slice(0, 5);
    for (const who of readers) await as(who).receipt.markRead({ roomId: room.id, seq: m.seq });
    const expected = sorted(readers);

    const all = await as(owner!).receipt.readers({ roomId: room.id, seq: m.seq });
    expect(all.map((r) => r.userId)).toEqual(expected);
    for (const r of all) expect(r).toEqual({ userId: r.userId, lastReadSeq: m.seq, readAt: expect.any(Date) });

    const pages = await pageThrough((after) => as(owner!).receipt.readers({ roomId: room.id, seq: m.seq, after, limit: 2 }), (r) => r.userId, 2);
    expect(pages.map((p) => p.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual(all);

    await expectTRPCError(as(owner!).receipt.readers({ roomId: room.id, seq: m.seq, limit: 0 }), 'BAD_REQUEST');
    await expectTRPCError(as(owner!).receipt.readers({ roomId: room.id, seq: m.seq, limit: 1001 }), 'BAD_REQUEST');
    const [stranger] = users('stranger');
    await expectTRPCError(as(stranger!).receipt.readers({ roomId: room.id, seq: m.seq }), 'NOT_FOUND');
  });
});
