/**
 * Paged reads of lists that grow without bound: `room.members` and `room.bans` by user id (`after`,
 * `limit`), `chat.edits` by version (`beforeId`, `afterId`, `limit`), `room.list` by activity
 * (`before`, `limit`), and the client library's `allMembers` and `allRooms`. Through createCaller
 * and the real client; real PostgreSQL and Redis.
 */
import { describe, expect, it } from 'vitest';
import { allDirectory, allMembers, allRooms, DIRECTORY_PAGE_SIZE, MEMBERS_PAGE_SIZE, ROOMS_PAGE_SIZE, roomListCursor, type RoomListCursor, type RoomListItem } from '../client/index.js';
import { clientFor, expectTRPCError, fileServer, roomKit, uuid } from './fixture.js';

const t = fileServer('rpage');

const kit = roomKit(() => t);
const { users, as } = kit;

/** Code-unit order: the ids of these tests are lowercase letters and digits, ordered alike by every collation. */
const sorted = (ids: string[]) => [...ids].sort();

/** Reads a list page by page (the cursor: made from the last item of the page before) until a short page. */
async function pageThrough<T, C = string>(read: (after: C | undefined) => Promise<T[]>, key: (x: T) => C, limit: number): Promise<T[][]> {
  const pages: T[][] = [];
  let after: C | undefined;
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

describe('room.list pages', () => {
  /** A room's activity as its list item shows it: its newest message's time, else its creation. */
  const activityOf = (r: RoomListItem) => (r.lastMessage?.createdAt ?? r.createdAt).getTime();
  /** The list's order: activity, newest first, then room id, descending. */
  const byActivity = (a: RoomListItem, b: RoomListItem) => activityOf(b) - activityOf(a) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);

  /**
   * Sets when a room was last active: its creation and each of its messages at `at` (an ISO time,
   * with microseconds where PostgreSQL keeps them), so that the order is known whatever the speed
   * of the test.
   */
  async function setActivity(roomId: string, at: string): Promise<void> {
    await t.env.sql('update room set created_at = $2 where id = $1', [roomId, at]);
    await t.env.sql('update message set created_at = $2 where room_id = $1', [roomId, at]);
  }

  /** Reads the room list page by page (`before`: the cursor of the last room of the page before) until a short page. */
  const pageRooms = (read: (before: RoomListCursor | undefined) => Promise<RoomListItem[]>, limit: number) => pageThrough(read, roomListCursor, limit);

  /**
   * Items as any read of the same rooms answers them: without `version`, that of the read's counts
   * (src/store/receipts.ts `countsVersion`), which a later read may have higher.
   */
  const items = (rs: RoomListItem[]) => rs.map(({ version: _, ...r }) => r);

  it('pages by activity, newest first, with before and limit: every room once, in order, the same items as one call', async () => {
    const [owner, pat] = users('owner', 'pat');
    const names = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
    const rooms = new Map<string, string>();
    for (const name of names) rooms.set(name, (await as(owner!).room.create({ kind: 'group', name, memberIds: [pat!] })).id);
    const id = (name: string) => rooms.get(name)!;
    // Messages in every room but `g` (its activity is its creation); two unread for pat in `c`.
    for (const name of names.slice(0, 6)) await as(owner!).chat.send({ roomId: id(name), clientId: uuid(), body: `in ${name}` });
    await as(owner!).chat.send({ roomId: id('c'), clientId: uuid(), body: 'more in c' });
    // Activity in an order other than that of creation; `d` and `e` in the same millisecond (their
    // microseconds differ, the list's millisecond does not): the room id decides between them.
    await setActivity(id('a'), '2021-03-01T10:00:05.000Z');
    await setActivity(id('b'), '2021-03-01T10:00:01.000Z');
    await setActivity(id('c'), '2021-03-01T10:00:07.000Z');
    await setActivity(id('d'), '2021-03-01T10:00:03.123400Z');
    await setActivity(id('e'), '2021-03-01T10:00:03.123900Z');
    await setActivity(id('f'), '2021-03-01T10:00:02.000Z');
    await setActivity(id('g'), '2021-03-01T10:00:06.000Z');
    const tie = [id('d'), id('e')].sort().reverse();
    const expected = [id('c'), id('g'), id('a'), ...tie, id('f'), id('b')];

    // Without paging input: every room (up to 500), by activity.
    const all = await as(pat!).room.list();
    expect(all.map((r) => r.id)).toEqual(expected);
    expect([...all].sort(byActivity)).toEqual(all);
    // One read: the same version of the counts for every room.
    expect(new Set(all.map((r) => r.version)).size).toBe(1);
    expect(all.find((r) => r.id === id('c'))).toMatchObject({ unreadCount: 2, lastMessage: { body: 'more in c' } });
    expect(all.find((r) => r.id === id('g'))).toMatchObject({ unreadCount: 0, lastMessage: null });

    for (const limit of [1, 2, 3, 6, 7]) {
      const pages = await pageRooms((before) => as(pat!).room.list({ before, limit }), limit);
      const union = pages.flat();
      // The same items as the unpaged answer (room, role, counts, last message), in its order, each once.
      expect(items(union)).toEqual(items(all));
      expect(pages.map((p) => p.length)).toEqual([...Array(Math.floor(7 / limit)).fill(limit), 7 % limit]);
    }
    // A page boundary between the two rooms of the same millisecond: neither is lost nor repeated.
    const upToTie = await as(pat!).room.list({ limit: 4 });
    expect(upToTie.map((r) => r.id)).toEqual(expected.slice(0, 4));
    expect((await as(pat!).room.list({ before: roomListCursor(upToTie[3]!), limit: 4 })).map((r) => r.id)).toEqual(expected.slice(4));
    // The cursor need not be a room of mine: the rooms strictly after its activity and id.
    const at = new Date('2021-03-01T10:00:03.123Z');
    expect((await as(pat!).room.list({ before: { activityAt: at, roomId: 'ffffffff-ffff-4fff-bfff-ffffffffffff' } })).map((r) => r.id)).toEqual(expected.slice(3));
    expect((await as(pat!).room.list({ before: { activityAt: at, roomId: '00000000-0000-4000-8000-000000000000' } })).map((r) => r.id)).toEqual(expected.slice(5));
    // After the last room: nothing. null is no cursor and the default limit.
    expect(await as(pat!).room.list({ before: roomListCursor(all[6]!) })).toEqual([]);
    expect(items(await as(pat!).room.list({ before: null, limit: null }))).toEqual(items(all));
    // Another tenant's user of the same id has no rooms, whatever the cursor.
    expect(await as(pat!, 'tenant-b').room.list({ before: { activityAt: new Date(), roomId: id('a') }, limit: 3 })).toEqual([]);

    // The client library reads every page (cursors are dates over the wire: superjson).
    await using c = clientFor(t.url, pat!);
    for (const pageSize of [1, 2, 5, 7, 100]) expect(items(await allRooms(c, { pageSize }))).toEqual(items(all));
    expect(items(await allRooms(c))).toEqual(items(all));
    expect(ROOMS_PAGE_SIZE).toBe(500);
  });

  it('a room that gets a new message moves to the front of the next first page; pages read from an older cursor never repeat it', async () => {
    const [owner, pat] = users('owner', 'pat');
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const room = await as(owner!).room.create({ kind: 'group', name: `r${i}`, memberIds: [pat!] });
      await as(owner!).chat.send({ roomId: room.id, clientId: uuid(), body: `hello ${i}` });
      // r0 the most recently active, r5 the least.
      await setActivity(room.id, `2022-05-01T12:00:0${9 - i}.000Z`);
      ids.push(room.id);
    }
    const first = await as(pat!).room.list({ limit: 2 });
    expect(first.map((r) => r.id)).toEqual(ids.slice(0, 2));

    // r4 (on a page not read yet) gets a message: it is now the most recently active.
    const m = await as(owner!).chat.send({ roomId: ids[4]!, clientId: uuid(), body: 'news' });
    const fresh = await as(pat!).room.list({ limit: 2 });
    expect(fresh.map((r) => r.id)).toEqual([ids[4], ids[0]]);
    expect(fresh[0]).toMatchObject({ lastMessage: { id: m.id, body: 'news' }, unreadCount: 2, lastSeq: m.seq });
    expect(activityOf(fresh[0]!)).toBe(m.createdAt.getTime());

    // Paging on from the cursor read before the message: r4 sorts before it now, and is not repeated.
    const rest = await pageRooms((before) => as(pat!).room.list({ before: before ?? roomListCursor(first[1]!), limit: 2 }), 2);
    expect(rest.flat().map((r) => r.id)).toEqual([ids[2], ids[3], ids[5]]);
    // r0 (read already) gets one: paging on never shows it again either.
    await as(owner!).chat.send({ roomId: ids[0]!, clientId: uuid(), body: 'again' });
    expect((await as(pat!).room.list({ before: roomListCursor(first[1]!) })).map((r) => r.id)).toEqual([ids[2], ids[3], ids[5]]);
    expect((await as(pat!).room.list()).map((r) => r.id)).toEqual([ids[0], ids[4], ids[1], ids[2], ids[3], ids[5]]);
  });

  it('a support agent pages through member rooms and support rooms interleaved by activity; never a support room they are banned from', async () => {
    const [customer, other, agent] = users('customer', 'other', 'agent');
    const tenant = `rlist-support-${kit.n}`;
    const asCustomer = () => as(customer!, tenant);
    const asAgent = () => as(agent!, tenant, ['support']);
    const group1 = await asCustomer().room.create({ kind: 'group', name: 'group one', memberIds: [agent!] });
    const group2 = await asCustomer().room.create({ kind: 'group', name: 'group two', memberIds: [agent!] });
    const ticket1 = await asCustomer().room.create({ kind: 'support', name: 'ticket one' });
    const ticket2 = await asCustomer().room.create({ kind: 'support', name: 'ticket two' });
    const ticket3 = await asCustomer().room.create({ kind: 'support', name: 'ticket three' });
    const joined = await asCustomer().room.create({ kind: 'support', name: 'ticket joined', memberIds: [agent!] });
    const banned = await asCustomer().room.create({ kind: 'support', name: 'ticket banned' });
    await asCustomer().room.ban({ roomId: banned.id, userId: agent! });
    // Not the agent's: a group room without them, another tenant's support room.
    const private_ = await asCustomer().room.create({ kind: 'group', name: 'private', memberIds: [other!] });
    const foreign = await as(customer!, `${tenant}-x`).room.create({ kind: 'support', name: 'foreign ticket' });
    for (const room of [group1, group2, ticket1, ticket2, ticket3, joined, banned, private_]) {
      await asCustomer().chat.send({ roomId: room.id, clientId: uuid(), body: `about ${room.name}` });
    }
    const times: [{ id: string }, string][] = [
      [group1, '2023-01-01T00:00:09.000Z'],
      [ticket1, '2023-01-01T00:00:08.000Z'],
      [private_, '2023-01-01T00:00:07.500Z'],
      [group2, '2023-01-01T00:00:07.000Z'],
      [banned, '2023-01-01T00:00:06.500Z'],
      [ticket2, '2023-01-01T00:00:06.000Z'],
      [foreign, '2023-01-01T00:00:05.500Z'],
      [joined, '2023-01-01T00:00:05.000Z'],
      [ticket3, '2023-01-01T00:00:04.000Z'],
    ];
    for (const [room, at] of times) await setActivity(room.id, at);
    const expected = [group1, ticket1, group2, ticket2, joined, ticket3].map((r) => r.id);

    const all = await asAgent().room.list();
    expect(all.map((r) => r.id)).toEqual(expected);
    // Rooms the agent is a member of carry their read position and unread count; the others as before.
    expect(all.find((r) => r.id === group1.id)).toMatchObject({ myRole: 'member', unreadCount: 1 });
    expect(all.find((r) => r.id === ticket1.id)).toMatchObject({ myRole: 'member', unreadCount: 0, lastReadSeq: 0, lastMessage: { body: 'about ticket one' } });
    // Without the support role: the member rooms only.
    expect((await as(agent!, tenant).room.list()).map((r) => r.id)).toEqual([group1, group2, joined].map((r) => r.id));

    for (const limit of [1, 2, 4]) {
      const pages = await pageRooms((before) => asAgent().room.list({ before, limit }), limit);
      expect(items(pages.flat())).toEqual(items(all));
    }
    // A cursor right at the banned room's place does not bring it up either.
    const atBanned = await asAgent().room.list({ before: { activityAt: new Date('2023-01-01T00:00:06.500Z'), roomId: 'ffffffff-ffff-4fff-bfff-ffffffffffff' } });
    expect(atBanned.map((r) => r.id)).toEqual(expected.slice(3));
    await using c = clientFor(t.url, agent!, { tenant, roles: ['support'] });
    expect((await allRooms(c, { pageSize: 2 })).map((r) => r.id)).toEqual(expected);
  });

  it('pages the archived rooms and the others apart', async () => {
    const [alice] = users('alice');
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const room = await as(alice!).room.create({ kind: 'group', name: `room ${i}` });
      // Archived: rooms 1, 2, 4 and 6.
      if ([1, 2, 4, 6].includes(i)) await as(alice!).room.archive({ roomId: room.id });
      await setActivity(room.id, `2024-02-02T08:00:0${9 - i}.000Z`);
      ids.push(room.id);
    }
    const live = [0, 3, 5].map((i) => ids[i]);
    const archived = [1, 2, 4, 6].map((i) => ids[i]);
    for (const limit of [1, 2, 3]) {
      expect((await pageRooms((before) => as(alice!).room.list({ before, limit }), limit)).flat().map((r) => r.id)).toEqual(live);
      expect((await pageRooms((before) => as(alice!).room.list({ archived: false, before, limit }), limit)).flat().map((r) => r.id)).toEqual(live);
      const pages = await pageRooms((before) => as(alice!).room.list({ archived: true, before, limit }), limit);
      expect(pages.flat().map((r) => r.id)).toEqual(archived);
      for (const r of pages.flat()) expect(r.archivedAt).toBeInstanceOf(Date);
    }
    // A cursor from the other list: the rooms of this one after its place.
    const cursor = { activityAt: new Date('2024-02-02T08:00:07.000Z'), roomId: ids[2]! };
    expect((await as(alice!).room.list({ before: cursor })).map((r) => r.id)).toEqual(live.slice(1));
    expect((await as(alice!).room.list({ archived: true, before: cursor })).map((r) => r.id)).toEqual(archived.slice(2));
    await using c = clientFor(t.url, alice!);
    expect((await allRooms(c, { archived: true, pageSize: 3 })).map((r) => r.id)).toEqual(archived);
    expect((await allRooms(c, { pageSize: 1 })).map((r) => r.id)).toEqual(live);
  });

  it('validates limit (1..500) and the cursor with BAD_REQUEST', async () => {
    const [alice] = users('alice');
    const room = await as(alice!).room.create({ kind: 'group', name: 'bounds' });
    for (const limit of [0, -1, 501, 1.5]) await expectTRPCError(as(alice!).room.list({ limit }), 'BAD_REQUEST', /limit/);
    const bad: unknown[] = [
      { activityAt: new Date(), roomId: 'not-a-room' },
      { activityAt: new Date() },
      { roomId: room.id },
      { activityAt: '2024-01-01T00:00:00.000Z', roomId: room.id },
      { activityAt: new Date(Number.NaN), roomId: room.id },
      { activityAt: new Date('1969-12-31T23:59:59.999Z'), roomId: room.id },
      { activityAt: new Date(8.64e15), roomId: room.id },
      'before',
    ];
    for (const before of bad) await expectTRPCError(as(alice!).room.list({ before: before as RoomListCursor }), 'BAD_REQUEST', /activityAt|roomId|before/);
    expect((await as(alice!).room.list({ limit: 500 })).map((r) => r.id)).toEqual([room.id]);
    expect((await as(alice!).room.list({ limit: 1, archived: false })).map((r) => r.id)).toEqual([room.id]);
    // Over the wire the same.
    await using c = clientFor(t.url, alice!);
    for (const limit of [0, 501]) await expect(c.trpc.room.list.query({ limit })).rejects.toMatchObject({ data: { code: 'BAD_REQUEST' } });
    await expect(c.trpc.room.list.query({ before: { activityAt: new Date(), roomId: 'x' } })).rejects.toMatchObject({ data: { code: 'BAD_REQUEST' } });
  });

  it('holds 500 rooms per call by default: a support agent of a bigger tenant reads the rest on the next page', async () => {
    const [agent] = users('agent');
    const tenant = `rlist-big-${kit.n}`;
    // 505 support rooms in one statement (set-up only), active a second apart, the two newest in the same second.
    await t.env.sql(
      `insert into room (id, tenant, kind, name, created_by, last_seq, access_version, encrypted, visibility, created_at, updated_at)
       select gen_random_uuid(), $1, 'support', 'ticket ' || i, 'customer', 0, 0, false, 'private', timestamptz '2020-06-01' + greatest(i, 2) * interval '1 second', now()
         from generate_series(1, 505) as i`,
      [tenant],
    );
    const first = await as(agent!, tenant, ['support']).room.list();
    expect(first).toHaveLength(500);
    const rest = await as(agent!, tenant, ['support']).room.list({ before: roomListCursor(first[499]!) });
    expect(rest).toHaveLength(5);
    const every = [...first, ...rest];
    expect(new Set(every.map((r) => r.id)).size).toBe(505);
    expect([...every].sort(byActivity)).toEqual(every);
    expect(every.at(-1)!.name).toMatch(/^ticket [12]$/);
    await expectTRPCError(as(agent!, tenant, ['support']).room.list({ limit: 501 }), 'BAD_REQUEST', /limit must be at most 500/);

    await using c = clientFor(t.url, agent!, { tenant, roles: ['support'] });
    expect(items(await allRooms(c))).toEqual(items(every));
    expect((await allRooms(c, { pageSize: 200 })).map((r) => r.id)).toEqual(every.map((r) => r.id));
  });
});

describe('room.directory through the client', () => {
  it('allDirectory reads every page (by name, then id), with a query too, whatever the page size', async () => {
    const [owner, reader] = users('owner', 'reader');
    const tenant = `rdir-${kit.n}`;
    // Equal names: the id orders them, and a page may end between two of them.
    const names = ['delta', 'alpha', 'charlie', 'alpha', 'bravo', 'alpha', 'echo'];
    const made = [];
    for (const name of names) made.push(await as(owner!, tenant).room.create({ kind: 'group', name, topic: name === 'echo' ? 'the alpha team' : null, visibility: 'public' }));
    await as(owner!, tenant).room.create({ kind: 'group', name: 'alpha private' }); // not listed
    const byNameThenId = (rooms: { name: string; id: string }[]) => [...rooms].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : 1)).map((r) => r.id);
    await using c = clientFor(t.url, reader!, { tenant });
    for (const pageSize of [1, 2, 3, 7, 100]) {
      expect((await allDirectory(c, { pageSize })).map((r) => r.id)).toEqual(byNameThenId(made));
    }
    // Name or topic matches "alpha": the three alphas and echo (by its topic).
    const alphas = made.filter((r) => r.name === 'alpha' || r.name === 'echo');
    expect((await allDirectory(c, { query: 'alpha', pageSize: 2 })).map((r) => r.id)).toEqual(byNameThenId(alphas));
    expect(DIRECTORY_PAGE_SIZE).toBe(100);
  });
});
