/**
 * Public rooms (issue 6): `visibility` on create and update, `room.directory` (tenant-scoped,
 * public and non-archived only, name/topic match, member flag) and `room.join`; and `inbox.notify`
 * to many users at once (`userIds`, `roomId`) in one transaction.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { type DirectoryCursor, directoryQuery } from '../src/store/rooms.js';
import { actor, expectTRPCError, fileServer, openInbox, openLive, roomKit, uuid } from './fixture.js';

const t = fileServer('rpub');
const { users, as } = roomKit(() => t);

describe('public rooms', () => {
  it('create and update set visibility (default private); direct rooms cannot be public', async () => {
    const [alice, bob] = users('alice', 'bob');
    expect((await as(alice!).room.create({ kind: 'group', name: 'private by default' })).visibility).toBe('private');
    for (const kind of ['group', 'broadcast', 'support'] as const) {
      expect((await as(alice!).room.create({ kind, name: `pub ${kind}`, visibility: 'public' })).visibility).toBe('public');
    }
    await expectTRPCError(as(alice!).room.create({ kind: 'direct' as never, name: 'x', visibility: 'public' }), 'BAD_REQUEST', /kind/);
    await expectTRPCError(as(alice!).room.create({ kind: 'group', name: 'x', visibility: 'open' as never }), 'BAD_REQUEST', /visibility/);
    const direct = await as(alice!).room.openDirect({ userId: bob! });
    expect(direct.visibility).toBe('private');
    await expectTRPCError(as(alice!).room.update({ roomId: direct.id, visibility: 'public' }), 'FORBIDDEN');

    const room = await as(alice!).room.create({ kind: 'group', name: 'flip', memberIds: [bob!] });
    await expectTRPCError(as(bob!).room.update({ roomId: room.id, visibility: 'public' }), 'FORBIDDEN', /may not change the room/);
    expect((await as(alice!).room.update({ roomId: room.id, visibility: 'public' })).visibility).toBe('public');
    expect((await as(bob!).room.get({ roomId: room.id })).visibility).toBe('public');
  });

  it('room.directory lists my tenant’s public, non-archived rooms by name/topic, with member flags and counts', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const tag = uuid().slice(0, 8);
    const pub = await as(alice!).room.create({ kind: 'group', name: `Cooking ${tag}`, topic: 'recipes', visibility: 'public', memberIds: [bob!], metadata: { cuisine: 'any' } });
    const byTopic = await as(alice!).room.create({ kind: 'broadcast', name: `News ${tag}`, topic: `all about COOKING ${tag}`, visibility: 'public' });
    await as(alice!).room.create({ kind: 'group', name: `Cooking secret ${tag}`, visibility: 'private' });
    const archived = await as(alice!).room.create({ kind: 'group', name: `Cooking old ${tag}`, visibility: 'public' });
    await as(alice!).room.archive({ roomId: archived.id });
    await as(carol!, 'tenant-other').room.create({ kind: 'group', name: `Cooking elsewhere ${tag}`, visibility: 'public' });

    // The name of one, the topic of the other; private, archived and other tenants' rooms never.
    const found = await as(bob!).room.directory({ query: `cooking ${tag}` });
    expect(found.map((r) => r.id)).toEqual([pub.id, byTopic.id]);
    expect((await as(bob!).room.directory({ query: 'RECIPES' })).map((r) => r.id)).toContain(pub.id);
    const wide = await as(bob!).room.directory({ query: tag });
    expect(wide.map((r) => [r.id, r.member, r.memberCount])).toEqual([
      [pub.id, true, 2],
      [byTopic.id, false, 1],
    ]);
    expect(wide[0]).toMatchObject({ name: `Cooking ${tag}`, topic: 'recipes', kind: 'group', metadata: { cuisine: 'any' } });
    expect(wide[1]!.metadata).toBeNull();
    // Another tenant sees only its own.
    expect((await as(carol!, 'tenant-other').room.directory({ query: tag })).map((r) => r.name)).toEqual([`Cooking elsewhere ${tag}`]);
    // LIKE wildcards are matched literally.
    expect(await as(bob!).room.directory({ query: `%${tag}_` })).toEqual([]);
    // limit: default 50, at most 100.
    expect(await as(bob!).room.directory({ query: tag, limit: 1 })).toHaveLength(1);
    expect(Array.isArray(await as(bob!).room.directory())).toBe(true);
    await expectTRPCError(as(bob!).room.directory({ limit: 101 }), 'BAD_REQUEST', /limit/);
    await expectTRPCError(as(bob!).room.directory({ limit: 0 }), 'BAD_REQUEST', /limit/);
  });

  it('room.directory pages by name then id with after and limit: every room once, in order; with a query; malformed cursors refused', async () => {
    // A tenant of its own: the directory lists every public room of the tenant. Names of lowercase
    // letters (ordered alike by every collation); room ids are lowercase hex, ordered alike as text and as UUIDs.
    const tenant = `dir${uuid().slice(0, 8)}`;
    const [owner] = users('owner');
    const me = as(owner!, tenant);
    const names = ['bravo', 'alpha', 'delta', 'bravo', 'charlie', 'alpha', 'bravo'];
    const rooms: { id: string; name: string }[] = [];
    for (const name of names) rooms.push(await me.room.create({ kind: 'group', name, topic: `topic of ${name}`, visibility: 'public' }));
    await me.room.create({ kind: 'group', name: 'bravo', visibility: 'private' });
    const order = (a: { name: string; id: string }, b: { name: string; id: string }) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    const expected = [...rooms].sort(order).map((r) => r.id);

    type Entry = Awaited<ReturnType<typeof me.room.directory>>[number];
    const cursor = (r: Entry) => ({ name: r.name, roomId: r.id });
    const pageThrough = async (read: (after: { name: string; roomId: string } | undefined) => Promise<Entry[]>, limit: number) => {
      const pages: Entry[][] = [];
      let after: { name: string; roomId: string } | undefined;
      for (;;) {
        const page = await read(after);
        expect(page.length).toBeLessThanOrEqual(limit);
        pages.push(page);
        // Seven rooms: a cursor that is not followed would page forever.
        expect(pages.length, 'more pages than the rooms fill').toBeLessThanOrEqual(Math.floor(7 / limit) + 1);
        if (page.length < limit) return pages;
        after = cursor(page[page.length - 1]!);
      }
    };

    const all = await me.room.directory();
    expect(all.map((r) => r.id)).toEqual(expected);
    const pages = await pageThrough((after) => me.room.directory({ after, limit: 3 }), 3);
    expect(pages.map((p) => p.length)).toEqual([3, 3, 1]);
    // Every room exactly once, in order, the same entries as one call (a page boundary falls between two rooms named bravo).
    expect(pages.flat()).toEqual(all);
    expect(pages[1]!.map((r) => r.name)).toEqual(['bravo', 'bravo', 'charlie']);

    // With a query: name or topic containing "r" (bravo x3, charlie), pages of 2, the last one empty.
    const queried = await pageThrough((after) => me.room.directory({ query: 'R', after, limit: 2 }), 2);
    expect(queried.map((p) => p.length)).toEqual([2, 2, 0]);
    expect(queried.flat().map((r) => r.id)).toEqual(expected.filter((id) => /r/.test(rooms.find((r) => r.id === id)!.name)));

    // The cursor need not be a listed room: the rooms strictly after its name and id.
    const bravos = all.filter((r) => r.name === 'bravo').map((r) => r.id);
    expect((await me.room.directory({ after: { name: 'bravo', roomId: 'ffffffff-ffff-4fff-bfff-ffffffffffff' } })).map((r) => r.name)).toEqual(['charlie', 'delta']);
    expect((await me.room.directory({ after: { name: 'bravo', roomId: '00000000-0000-4000-8000-000000000000' } })).map((r) => r.id)).toEqual(expected.slice(2));
    expect((await me.room.directory({ after: { name: 'bravo', roomId: bravos[1]! } })).map((r) => r.id)).toEqual(expected.slice(4));
    expect(await me.room.directory({ after: cursor(all[6]!) })).toEqual([]);
    // null is no cursor.
    expect(await me.room.directory({ after: null })).toEqual(all);

    // Malformed cursors: BAD_REQUEST, saying what is wrong.
    await expectTRPCError(me.room.directory({ after: { name: 'bravo' } as never }), 'BAD_REQUEST', /after\.roomId must be a UUID/);
    await expectTRPCError(me.room.directory({ after: { name: 'bravo', roomId: 'not-a-uuid' } }), 'BAD_REQUEST', /after\.roomId must be a UUID/);
    await expectTRPCError(me.room.directory({ after: { roomId: rooms[0]!.id } as never }), 'BAD_REQUEST', /after\.name must be a string/);
    await expectTRPCError(me.room.directory({ after: { name: 'x'.repeat(201), roomId: rooms[0]!.id } }), 'BAD_REQUEST', /after\.name is at most 200 characters/);
    await expectTRPCError(me.room.directory({ after: { name: 'a\0b', roomId: rooms[0]!.id } }), 'BAD_REQUEST', /after\.name must not contain NUL/);
    await expectTRPCError(me.room.directory({ after: 'bravo' as never }), 'BAD_REQUEST', /after must be \{ name, roomId \}/);
  });

  it('room.directory pages: a room archived or made private between pages is absent from the pages after', async () => {
    const tenant = `dir${uuid().slice(0, 8)}`;
    const [owner] = users('owner');
    const me = as(owner!, tenant);
    const rooms: { id: string }[] = [];
    for (const name of ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf']) {
      rooms.push(await me.room.create({ kind: 'group', name, visibility: 'public' }));
    }
    const first = await me.room.directory({ limit: 3 });
    expect(first.map((r) => r.name)).toEqual(['alpha', 'bravo', 'charlie']);
    // Between the pages: delta archived, foxtrot made private.
    await me.room.archive({ roomId: rooms[3]!.id });
    await me.room.update({ roomId: rooms[5]!.id, visibility: 'private' });
    const second = await me.room.directory({ after: { name: first[2]!.name, roomId: first[2]!.id }, limit: 3 });
    expect(second.map((r) => r.name)).toEqual(['echo', 'golf']);
    // A page shorter than the limit is the last; every room still listed was on a page once.
    expect([...first, ...second].map((r) => r.id)).toEqual(rooms.filter((_, i) => i !== 3 && i !== 5).map((r) => r.id));
  });

  it('room.directory can use its indexes: the listed rooms in name order, and the trigram indexes for a name or topic search', async () => {
    // What the statement can use, not what the planner picks at a given size: a few thousand rooms of a
    // tenant are read through its (tenant, visibility) index; `npm run bench:directory` shows the trigram
    // indexes picked at 100,000 public rooms, where a search scanned the whole table before.
    const c = new pg.Client({ connectionString: t.config.databaseUrl });
    await c.connect();
    let lastPlan = '';
    const scans = async (query: string | null, hide: string[] = [], after: DirectoryCursor | null = null) => {
      const compiled = directoryQuery(t.app.services.store.db(), 'tenant-a', 'someone', query, 50, after).compile();
      await c.query('begin');
      try {
        // Rolled back: the other ways to the rows are gone only for this plan.
        for (const index of hide) await c.query(`drop index ${index}`);
        if (hide.length > 0) {
          for (const k of ['room_tenant_key_unique', 'room_tenant_direct_key_unique']) await c.query(`alter table room drop constraint ${k}`);
        }
        await c.query('set local enable_seqscan = off');
        const plan = await c.query<{ 'QUERY PLAN': string }>(`explain ${compiled.sql}`, compiled.parameters as unknown[]);
        lastPlan = plan.rows.map((r) => r['QUERY PLAN']).join('\n');
        // "Index Scan using <index> on room r", "Bitmap Index Scan on <index>", "Seq Scan on room r" (the membership subqueries left out).
        return plan.rows.flatMap((r) => {
          const m = /((?:\w+ )*Scan)(?: using (\w+))? on (\w+)/.exec(r['QUERY PLAN']);
          const on = m?.[2] ?? m?.[3];
          return m && on && /^room/.test(on) ? [`${m[1]} ${on}`] : [];
        });
      } finally {
        await c.query('rollback');
      }
    };
    try {
      expect(await scans(null)).toEqual(['Index Scan room_directory_idx']);
      // A page after a cursor starts the index scan at it: the row comparison is a condition of the index, not a filter.
      expect(await scans(null, [], { name: 'm', roomId: uuid() })).toEqual(['Index Scan room_directory_idx']);
      expect(lastPlan).toMatch(/Index Cond: .*ROW\(\(?name\b.*, id\) > ROW\(/);
      expect(await scans('cooking', ['room_directory_idx', 'room_tenant_visibility_idx'])).toEqual([
        'Bitmap Heap Scan room',
        'Bitmap Index Scan room_directory_name_trgm_idx',
        'Bitmap Index Scan room_directory_topic_trgm_idx',
      ]);
    } finally {
      await c.end();
    }
  });

  it('room.join: joins a public room (idempotent, member.joined); private NOT_FOUND; banned FORBIDDEN; other tenant NOT_FOUND', async () => {
    const [alice, bob, carol, dave] = users('alice', 'bob', 'carol', 'dave');
    const pub = await as(alice!).room.create({ kind: 'group', name: 'open house', visibility: 'public', memberIds: [dave!] });
    const priv = await as(alice!).room.create({ kind: 'group', name: 'closed' });
    await using events = await openLive(t.app, alice!, pub.id);

    const joined = await as(bob!).room.join({ roomId: pub.id });
    expect(joined).toMatchObject({ id: pub.id, myRole: 'member', memberCount: 3, visibility: 'public' });
    expect((await events.next()).event).toMatchObject({ type: 'member.joined', userId: bob, role: 'member', by: bob });
    const again = await as(bob!).room.join({ roomId: pub.id });
    expect(again.lastSeq).toBe(joined.lastSeq);
    expect((await as(bob!).room.directory({ query: 'open house' })).find((r) => r.id === pub.id)?.member).toBe(true);
    expect((await as(bob!).chat.send({ roomId: pub.id, clientId: uuid(), body: 'hi all' })).body).toBe('hi all');

    await expectTRPCError(as(carol!).room.join({ roomId: priv.id }), 'NOT_FOUND', /room not found/);
    await expectTRPCError(as(carol!).room.join({ roomId: uuid() }), 'NOT_FOUND', /room not found/);
    await expectTRPCError(as(carol!, 'tenant-other').room.join({ roomId: pub.id }), 'NOT_FOUND', /room not found/);

    await as(alice!).room.ban({ roomId: pub.id, userId: dave! });
    await expectTRPCError(as(dave!).room.join({ roomId: pub.id }), 'FORBIDDEN', /banned/);
    await as(alice!).room.archive({ roomId: pub.id });
    await expectTRPCError(as(carol!).room.join({ roomId: pub.id }), 'PRECONDITION_FAILED', /room is archived/);
    // A member's join stays a no-op that answers the room (the archive changes nothing of it).
    const archivedRoom = await as(bob!).room.join({ roomId: pub.id });
    expect(archivedRoom).toMatchObject({ id: pub.id, archivedAt: expect.any(Date) });
  });
});

describe('inbox.notify to many', () => {
  const svc = () => as('erp', 'default', ['service']);

  it('userIds: 1000 users in one call, each gets the item', async () => {
    const [prefix] = users('bulk');
    const ids = Array.from({ length: 1000 }, (_, i) => `${prefix}-${i}`);
    const title = `bulk ${uuid()}`;
    await using first = await openInbox(t.app, actor(ids[0]!));
    expect((await first.next()).event).toEqual({ type: 'ready', seq: 0 });
    expect(await svc().inbox.notify({ userIds: ids, kind: 'bulk', title })).toEqual({ delivered: 1000 });
    const rows = await t.env.sql<{ user_id: string; seq: string }>(
      `select user_id, seq from inbox_event where tenant = 'default' and type = 'notification' and data->>'title' = $1`,
      [title],
    );
    expect(rows.map((r) => r.user_id).sort()).toEqual([...ids].sort());
    expect(rows.every((r) => Number(r.seq) === 1)).toBe(true);
    expect((await first.next()).event).toEqual({ type: 'notification', seq: 1, kind: 'bulk', title, data: null, from: 'erp' });
    await using last = await openInbox(t.app, actor(ids[999]!), { lastEventId: '0' });
    expect((await last.next()).event).toMatchObject({ type: 'notification', seq: 1, title });
  });

  it('roomId: every current member of a room of my tenant', async () => {
    const [alice, bob, carol, eve] = users('alice', 'bob', 'carol', 'eve');
    const room = await as(alice!).room.create({ kind: 'group', name: 'team', memberIds: [bob!, carol!] });
    await as(alice!).room.removeMember({ roomId: room.id, userId: carol! });
    const title = `room ${uuid()}`;
    expect(await as('boss', 'default', ['admin']).inbox.notify({ roomId: room.id, kind: 'k', title, data: { n: 1 } })).toEqual({ delivered: 2 });
    const got = await t.env.sql<{ user_id: string }>(`select user_id from inbox_event where data->>'title' = $1 order by user_id`, [title]);
    expect(got.map((r) => r.user_id)).toEqual([alice, bob].sort());
    await expectTRPCError(as('erp', 'tenant-other', ['service']).inbox.notify({ roomId: room.id, kind: 'k', title }), 'NOT_FOUND', /room not found/);
    await expectTRPCError(as(eve!).inbox.notify({ roomId: room.id, kind: 'k', title }), 'FORBIDDEN', /only tenant admins and service tokens may call inbox\.notify/);
    // Duplicates count once.
    expect(await svc().inbox.notify({ userIds: [eve!, bob!, eve!], kind: 'k', title: `dup ${title}` })).toEqual({ delivered: 2 });
    // The single form still answers the item.
    expect(await svc().inbox.notify({ userId: eve!, kind: 'k', title: 'one' })).toMatchObject({ type: 'notification', seq: 2, delivered: 1 });
  });

  it('validation: exactly one of userId, userIds or roomId; 1..1000 userIds', async () => {
    const one = /exactly one of userId, userIds or roomId/;
    await expectTRPCError(svc().inbox.notify({ kind: 'k', title: 'x' }), 'BAD_REQUEST', one);
    await expectTRPCError(svc().inbox.notify({ userId: 'a', userIds: ['b'], kind: 'k', title: 'x' }), 'BAD_REQUEST', one);
    await expectTRPCError(svc().inbox.notify({ userIds: ['b'], roomId: uuid(), kind: 'k', title: 'x' }), 'BAD_REQUEST', one);
    await expectTRPCError(svc().inbox.notify({ userIds: [], kind: 'k', title: 'x' }), 'BAD_REQUEST', /userIds must not be empty/);
    const many = Array.from({ length: 1001 }, (_, i) => `u${i}`);
    await expectTRPCError(svc().inbox.notify({ userIds: many, kind: 'k', title: 'x' }), 'BAD_REQUEST', /at most 1000 userIds/);
    await expectTRPCError(svc().inbox.notify({ roomId: 'not-a-uuid', kind: 'k', title: 'x' }), 'BAD_REQUEST', /roomId/);
  });
});
