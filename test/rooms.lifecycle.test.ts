/**
 * Room lifecycle (issue 5): `room.archive` / `room.unarchive` (who may, the read-only rule, the
 * list filter, the durable events live and replayed) and `room.delete` (every row of the room goes,
 * open `chat.events` streams on both nodes end with `room.deleted`, NOT_FOUND afterwards). Two
 * in-process servers share one database and Redis prefix.
 */
import pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  actor,
  clientFor,
  codeOf,
  deferred,
  expectTRPCError,
  fileCluster,
  openEvents,
  openLive,
  recordEvents,
  roomKit,
  Scope,
  setMemberRole,
  uuid,
  within,
  wsClient,
} from './fixture.js';

const t = fileCluster('rlife');
const { users, as } = roomKit(() => t.a);
const open = new Scope();
afterEach(() => open.dispose());

const ARCHIVED = /room is archived/;

/** How many statements of the test database wait for a lock now. */
const lockWaiters = async () =>
  Number((await t.env.sql<{ n: string }>(`select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`))[0]!.n);

/** Resolves once at least `n` statements wait for a lock (a transaction held open by the test). */
const untilWaiting = (n: number, what: string) =>
  within(
    (async () => {
      while ((await lockWaiters()) < n) await new Promise((r) => setImmediate(r));
    })(),
    10_000,
    what,
  );

describe('room.archive / room.unarchive', () => {
  it('is for the owner, a tenant admin or a service token; members are FORBIDDEN, others NOT_FOUND', async () => {
    const [alice, bob, carol, admin, svc, eve] = users('alice', 'bob', 'carol', 'admin', 'svc', 'eve');
    const room = await as(alice!).room.create({ kind: 'group', name: 'arch', memberIds: [bob!, carol!] });
    await setMemberRole(t.env, room.id, carol!, 'admin');
    await expectTRPCError(as(bob!).room.archive({ roomId: room.id }), 'FORBIDDEN', /may not archive the room/);
    await expectTRPCError(as(carol!).room.archive({ roomId: room.id }), 'FORBIDDEN', /may not archive the room/);
    await expectTRPCError(as(eve!).room.archive({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as(admin!, 'other-tenant', ['admin']).room.archive({ roomId: room.id }), 'NOT_FOUND');

    const archived = await as(alice!).room.archive({ roomId: room.id });
    expect(archived.archivedAt).toBeInstanceOf(Date);
    expect(archived.roomId).toBe(room.id);
    const seen = await as(bob!).room.get({ roomId: room.id });
    expect(seen.archivedAt).toEqual(archived.archivedAt);
    // Idempotent: a second archive changes nothing and takes no seq.
    expect(await as(alice!).room.archive({ roomId: room.id })).toEqual(archived);
    expect((await as(bob!).room.get({ roomId: room.id })).lastSeq).toBe(seen.lastSeq);

    expect((await as(admin!, 'default', ['admin']).room.unarchive({ roomId: room.id })).archivedAt).toBeNull();
    expect((await as(svc!, 'default', ['service']).room.archive({ roomId: room.id })).archivedAt).toBeInstanceOf(Date);
    await expectTRPCError(as(bob!).room.unarchive({ roomId: room.id }), 'FORBIDDEN');
    expect((await as(alice!).room.unarchive({ roomId: room.id })).archivedAt).toBeNull();
  });

  it('a write whose access check saw the room writable is refused when the archive commits before its write', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await as(alice!).room.create({ kind: 'group', name: 'race', memberIds: [bob!] });
    const sent = [];
    for (const body of ['to edit', 'to react to', 'to reply to', 'to delete']) sent.push(await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body }));
    const before = await as(alice!).room.get({ roomId: room.id });

    // The archive, held open: it holds the room's row until it commits.
    const archiver = new pg.Client({ connectionString: t.env.databaseUrl });
    await archiver.connect();
    try {
      await archiver.query('begin');
      await archiver.query('update room set archived_at = now() where id = $1', [room.id]);
      // Writes of every kind pass their access check (the archive is not committed) and queue on the room's row.
      const writes = [
        as(bob!).chat.edit({ messageId: sent[0]!.id, body: 'changed' }),
        as(bob!).chat.react({ messageId: sent[1]!.id, emoji: '👍' }),
        as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'a reply', replyToId: sent[2]!.id }),
        as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'mention', mentions: [alice!] }),
        as(bob!).chat.delete({ messageId: sent[3]!.id }),
        as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'plain' }),
      ].map((p) => p.then(
        () => 'written',
        (err: unknown) => err,
      ));
      await untilWaiting(writes.length, 'every write waiting on the room row');
      await archiver.query('commit');
      for (const outcome of await Promise.all(writes)) {
        expect(outcome).not.toBe('written');
        expect(outcome).toMatchObject({ code: 'PRECONDITION_FAILED', message: expect.stringMatching(ARCHIVED) });
      }
    } finally {
      await archiver.end();
    }
    // Nothing was written: no seq taken, the messages as they were, no reaction.
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(before.lastSeq);
    const history = await as(bob!).chat.history({ roomId: room.id });
    expect(history.messages.map((m) => [m.body, m.reactions.length, m.deletedAt])).toEqual([
      ['to edit', 0, null],
      ['to react to', 0, null],
      ['to reply to', 0, null],
      ['to delete', 0, null],
    ]);
  });

  it('makes the room read-only: send, react, edit, delete PRECONDITION_FAILED; reads stay', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await as(alice!).room.create({ kind: 'group', name: 'ro', memberIds: [bob!] });
    const mine = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'before the archive' });
    const reply = { roomId: room.id, clientId: uuid(), body: 'a reply', replyToId: mine.id };
    await as(alice!).room.archive({ roomId: room.id });

    await expectTRPCError(as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x' }), 'PRECONDITION_FAILED', ARCHIVED);
    await expectTRPCError(as(bob!).chat.send(reply), 'PRECONDITION_FAILED', ARCHIVED);
    await expectTRPCError(as(bob!).chat.react({ messageId: mine.id, emoji: '👍' }), 'PRECONDITION_FAILED', ARCHIVED);
    await expectTRPCError(as(bob!).chat.edit({ messageId: mine.id, body: 'changed' }), 'PRECONDITION_FAILED', ARCHIVED);
    await expectTRPCError(as(bob!).chat.delete({ messageId: mine.id }), 'PRECONDITION_FAILED', ARCHIVED);
    await expectTRPCError(as(alice!).chat.delete({ messageId: mine.id }), 'PRECONDITION_FAILED', ARCHIVED);
    await expectTRPCError(
      as('erp', 'default', ['service']).chat.send({ roomId: room.id, clientId: uuid(), body: 'x' }),
      'PRECONDITION_FAILED',
      ARCHIVED,
    );

    const history = await as(bob!).chat.history({ roomId: room.id });
    expect(history.messages.map((m) => m.body)).toContain('before the archive');
    expect((await as(bob!).chat.search({ query: 'archive' })).hits.map((h) => h.message.id)).toContain(mine.id);
    // Still read live: its events open with `ready`.
    await using _events = await openLive(t.a.app, bob!, room.id);

    await as(alice!).room.unarchive({ roomId: room.id });
    expect((await as(bob!).chat.send(reply)).body).toBe('a reply');
    expect((await as(bob!).chat.edit({ messageId: mine.id, body: 'changed' })).body).toBe('changed');
  });

  it('a send whose access check passed before the archive committed is refused by the write, not written', async () => {
    const [alice] = users('alice');
    const room = await as(alice!).room.create({ kind: 'group', name: 'race' });
    const store = t.a.app.services.store;
    const write = store.appendMessages.bind(store);
    // The archive commits between the grouped send's access check and its write.
    const spy = vi.spyOn(store, 'appendMessages').mockImplementationOnce(async (messages) => {
      await t.env.sql('update room set archived_at = now() where id = $1', [room.id]);
      return write(messages);
    });
    try {
      await expectTRPCError(as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'late' }), 'PRECONDITION_FAILED', ARCHIVED);
    } finally {
      spy.mockRestore();
    }
    expect(await t.env.sql('select id from message where room_id = $1 and body = $2', [room.id, 'late'])).toEqual([]);
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(room.lastSeq);
  });

  it('room.join of a public room whose archive commits while the join waits for the room is refused, nothing written', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await as(alice!).room.create({ kind: 'group', name: 'public race', visibility: 'public' });
    const archiver = new pg.Client({ connectionString: t.env.databaseUrl });
    await archiver.connect();
    try {
      await archiver.query('begin');
      await archiver.query('update room set archived_at = now() where id = $1', [room.id]);
      const join = as(bob!).room.join({ roomId: room.id }).then(
        () => 'joined',
        (err: unknown) => err,
      );
      // The join passed its check (the archive is not committed) and waits on the room's row.
      await untilWaiting(1, 'the join waiting on the room row');
      await archiver.query('commit');
      expect(await join).toMatchObject({ code: 'PRECONDITION_FAILED', message: expect.stringMatching(ARCHIVED) });
    } finally {
      await archiver.end();
    }
    expect((await as(alice!).room.members({ roomId: room.id })).map((m) => m.userId)).toEqual([alice]);
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(room.lastSeq);
  });

  it('an archived room can still be tidied up: members added, removed, banned, leaving, a rename, ensure; with their system messages', async () => {
    const [alice, bob, carol, dave, erin, svc] = users('alice', 'bob', 'carol', 'dave', 'erin', 'erp');
    const key = `order:${uuid()}`;
    const room = await as(svc!, 'default', ['service']).room.ensure({ key, kind: 'group', name: 'Order 1', memberIds: [alice!, bob!, carol!] });
    await as(svc!, 'default', ['service']).room.setRole({ roomId: room.id, userId: alice!, role: 'admin' });
    await as(svc!, 'default', ['service']).room.archive({ roomId: room.id });

    expect((await as(alice!).room.addMembers({ roomId: room.id, userIds: [dave!] })).added).toEqual([dave]);
    expect(await as(alice!).room.removeMember({ roomId: room.id, userId: bob! })).toEqual({ ok: true });
    expect(await as(alice!).room.ban({ roomId: room.id, userId: dave! })).toEqual({ ok: true });
    expect(await as(carol!).room.leave({ roomId: room.id })).toEqual({ ok: true });
    expect((await as(alice!).room.update({ roomId: room.id, name: 'Order 1 (closed)' })).name).toBe('Order 1 (closed)');
    expect((await as(svc!, 'default', ['service']).room.ensure({ key, kind: 'group', name: 'Order 1', memberIds: [erin!] })).id).toBe(room.id);

    // Still read-only for content, also for the service token.
    await expectTRPCError(as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x' }), 'PRECONDITION_FAILED', ARCHIVED);
    await expectTRPCError(
      as(svc!, 'default', ['service']).chat.send({ roomId: room.id, clientId: uuid(), body: 'x', kind: 'system' }),
      'PRECONDITION_FAILED',
      ARCHIVED,
    );
    const history = (await as(alice!).chat.history({ roomId: room.id })).messages;
    expect(history.filter((m) => m.kind === 'system').map((m) => m.body)).toEqual([
      `${alice} added ${dave}`,
      `${alice} removed ${bob}`,
      `${alice} banned ${dave}`,
      `${carol} left`,
      `${alice} renamed the room to "Order 1 (closed)"`,
      `${svc} added ${erin}`,
    ]);
    expect((await as(alice!).room.members({ roomId: room.id })).map((m) => m.userId).sort()).toEqual([alice, erin, svc].sort());
  });

  it('room.list leaves archived rooms out; room.list({ archived: true }) lists only them', async () => {
    const [alice] = users('alice');
    const live = await as(alice!).room.create({ kind: 'group', name: 'live one' });
    const old = await as(alice!).room.create({ kind: 'support', name: 'old one' });
    await as(alice!).room.archive({ roomId: old.id });
    expect((await as(alice!).room.list()).map((r) => r.id)).toEqual([live.id]);
    expect((await as(alice!).room.list({ archived: false })).map((r) => r.id)).toEqual([live.id]);
    const archived = await as(alice!).room.list({ archived: true });
    expect(archived.map((r) => r.id)).toEqual([old.id]);
    expect(archived[0]!.archivedAt).toBeInstanceOf(Date);
  });

  it('room.archived / room.unarchived are durable events: delivered live on both nodes and replayed', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await as(alice!).room.create({ kind: 'group', name: 'ev', memberIds: [bob!] });
    await using c = wsClient({ url: t.b.url, userId: bob! });
    using rec = recordEvents(c, { roomId: room.id });
    const start = await rec.ready();
    await as(alice!).room.archive({ roomId: room.id });
    await as(alice!).room.unarchive({ roomId: room.id });
    expect(await rec.next('room.archived')).toEqual({ type: 'room.archived', roomId: room.id, seq: start + 1, by: alice });
    expect(await rec.next('room.unarchived')).toEqual({ type: 'room.unarchived', roomId: room.id, seq: start + 2, by: alice });

    await using replay = await openEvents(t.a.app, actor(bob!), { roomId: room.id, lastEventId: String(start) });
    expect((await replay.take(2)).map((x) => [x.id, x.event])).toEqual([
      [String(start + 1), { type: 'room.archived', roomId: room.id, seq: start + 1, by: alice }],
      [String(start + 2), { type: 'room.unarchived', roomId: room.id, seq: start + 2, by: alice }],
    ]);
  });
});

/** Rows that hold the room, by table. */
async function rowsOf(roomId: string, messageId: string, meetingId: string): Promise<Record<string, number>> {
  const count = async (sql: string, id: string) => Number((await t.env.sql<{ n: string }>(sql, [id]))[0]!.n);
  return {
    room: await count('select count(*) as n from room where id = $1', roomId),
    message: await count('select count(*) as n from message where room_id = $1', roomId),
    room_event: await count('select count(*) as n from room_event where room_id = $1', roomId),
    membership: await count('select count(*) as n from membership where room_id = $1', roomId),
    room_ban: await count('select count(*) as n from room_ban where room_id = $1', roomId),
    reaction: await count('select count(*) as n from reaction where message_id = $1', messageId),
    message_edit: await count('select count(*) as n from message_edit where message_id = $1', messageId),
    meeting: await count('select count(*) as n from meeting where room_id = $1', roomId),
    meeting_participant: await count('select count(*) as n from meeting_participant where meeting_id = $1', meetingId),
  };
}

describe('room.delete', () => {
  it('removes the room and every row of it; ends live streams on both nodes; NOT_FOUND afterwards', async () => {
    const [alice, bob, carol, dave] = users('alice', 'bob', 'carol', 'dave');
    const room = await as(alice!).room.create({ kind: 'group', name: 'doomed', memberIds: [bob!, carol!, dave!] });
    const msg = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'hello' });
    await as(bob!).chat.edit({ messageId: msg.id, body: 'hello again' });
    await as(carol!).chat.react({ messageId: msg.id, emoji: '🎉' });
    await as(carol!).receipt.markRead({ roomId: room.id, seq: msg.seq });
    await as(alice!).room.ban({ roomId: room.id, userId: dave! });
    const meetingId = uuid();
    await t.env.sql(
      `insert into meeting (id, tenant, room_id, created_by, provider, url, created_at, expires_at)
       values ($1, 'default', $2, $3, 'livekit', 'https://video.example', now(), now() + interval '1 hour')`,
      [meetingId, room.id, alice],
    );
    await t.env.sql(`insert into meeting_participant (meeting_id, session_id, user_id, joined_at) values ($1, 's1', $2, now())`, [meetingId, bob]);
    const before = await rowsOf(room.id, msg.id, meetingId);
    for (const [table, n] of Object.entries(before)) expect([table, n > 0]).toEqual([table, true]);

    // Bob listens on node B, Carol on node A: both through wsLink.
    await using cb = wsClient({ url: t.b.url, userId: bob! });
    await using cc = wsClient({ url: t.a.url, userId: carol! });
    using recB = recordEvents(cb, { roomId: room.id });
    using recC = recordEvents(cc, { roomId: room.id });
    // Alice through the client library on node B: it resubscribes after the stream completes, and
    // the NOT_FOUND it then gets is final.
    const lib = open.use(clientFor(t.b.url, alice!));
    const libEvents: string[] = [];
    const libReady = deferred<void>();
    const libFailed = deferred<unknown>();
    lib.subscribeRoom(room.id, {
      onEvent: (e) => {
        libEvents.push(e.type);
        if (e.type === 'ready') libReady.resolve();
      },
      onError: libFailed.resolve,
    });
    await Promise.all([recB.ready(), recC.ready(), within(libReady.promise, 15_000, 'the library subscription ready')]);

    // Members (even admins of the room) may not; another tenant's admin does not see it.
    await setMemberRole(t.env, room.id, carol!, 'admin');
    await expectTRPCError(as(carol!).room.delete({ roomId: room.id }), 'FORBIDDEN', /may not delete the room/);
    await expectTRPCError(as('boss', 'tenant-x', ['admin']).room.delete({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as('erp', 'tenant-x', ['service']).room.delete({ roomId: room.id }), 'NOT_FOUND');

    expect(await as(alice!).room.delete({ roomId: room.id })).toEqual({ ok: true });
    for (const rec of [recB, recC]) {
      expect(await rec.next('room.deleted')).toEqual({ type: 'room.deleted', roomId: room.id, by: alice });
      // The server ends the stream (wsLink reports the server's stop as onStopped), not an error.
      expect(await within(rec.ended, 5000, 'the stream to end')).toBe('stopped');
    }
    const after = await rowsOf(room.id, msg.id, meetingId);
    expect(Object.values(after).every((n) => n === 0)).toBe(true);

    await expectTRPCError(as(bob!).room.get({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as(bob!).chat.history({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x' }), 'NOT_FOUND');
    await expectTRPCError(as(alice!).room.delete({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as(alice!).room.archive({ roomId: room.id }), 'NOT_FOUND');
    expect((await as(bob!).room.list()).map((r) => r.id)).not.toContain(room.id);

    expect(codeOf(await within(libFailed.promise, 15_000, 'the library subscription to fail'))).toBe('NOT_FOUND');
    // (presence events of the other clients' connections may come in between)
    expect(libEvents.filter((type) => type !== 'presence')).toEqual(['ready', 'room.deleted']);
  });

  it('a grouped send whose access check passed before the deletion committed is NOT_FOUND and leaves no row (messages have no foreign key)', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await as(alice!).room.create({ kind: 'group', name: 'deleted under a send', memberIds: [bob!] });
    // A message first, so the send below is a cached-access send of the grouped path.
    await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'before' });
    const store = t.a.app.services.store;
    const write = store.appendMessages.bind(store);
    // The deletion commits between the send's access check and its write: lone and grouped forms.
    for (const together of [1, 3]) {
      const r = together === 1 ? room : await as(alice!).room.create({ kind: 'group', name: `deleted ${together}`, memberIds: [bob!] });
      if (together > 1) await as(bob!).chat.send({ roomId: r.id, clientId: uuid(), body: 'before' });
      const spy = vi.spyOn(store, 'appendMessages').mockImplementationOnce(async (messages) => {
        await as(alice!).room.delete({ roomId: r.id });
        // The other messages of the group go to another room of bob's, which is still there.
        const other = await as(bob!).room.create({ kind: 'group', name: `kept ${together}` });
        return write([...messages, ...Array.from({ length: together - 1 }, () => ({ ...messages[0]!, id: uuid(), clientId: uuid(), roomId: other.id, accessVersion: null }))]).then((o) => o.slice(0, messages.length));
      });
      try {
        await expectTRPCError(as(bob!).chat.send({ roomId: r.id, clientId: uuid(), body: 'late' }), 'NOT_FOUND');
      } finally {
        spy.mockRestore();
      }
      expect(await t.env.sql('select id from message where room_id = $1', [r.id])).toEqual([]);
      expect(await t.env.sql('select seq from room_event where room_id = $1', [r.id])).toEqual([]);
    }
  });

  it('a send in its own transaction (mentions) whose check passed before the deletion committed is NOT_FOUND, not an internal error', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await as(alice!).room.create({ kind: 'group', name: 'deleted under a mention', memberIds: [bob!] });
    const access = t.a.app.services.access;
    const check = access.requireInTx.bind(access);
    // The deletion commits after the send's check in its transaction and before the room's seq is taken.
    let deleted = false;
    const spy = vi.spyOn(access, 'requireInTx').mockImplementationOnce(async (...args) => {
      const checked = await check(...args);
      await as(alice!).room.delete({ roomId: room.id });
      deleted = true;
      return checked;
    });
    try {
      await expectTRPCError(as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'hi @alice', mentions: [alice!] }), 'NOT_FOUND');
    } finally {
      spy.mockRestore();
    }
    expect(deleted).toBe(true);
    expect(await t.env.sql('select id from message where room_id = $1', [room.id])).toEqual([]);
  });

  it('tenant admins and service tokens of the tenant may delete; a deleted archived room is gone too', async () => {
    const [alice] = users('alice');
    const r1 = await as(alice!).room.create({ kind: 'group', name: 'one' });
    const r2 = await as(alice!).room.create({ kind: 'broadcast', name: 'two' });
    await as(alice!).room.archive({ roomId: r2.id });
    await as('boss', 'default', ['admin']).room.delete({ roomId: r1.id });
    await as('erp', 'default', ['service']).room.delete({ roomId: r2.id });
    expect(await t.env.sql('select id from room where id = any($1::uuid[])', [[r1.id, r2.id]])).toEqual([]);
    expect(await as(alice!).room.list({ archived: true })).toEqual([]);
  });
});
