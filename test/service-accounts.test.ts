/**
 * Service accounts and structured data (issue items 2 and 3): room keys for service and admin
 * tokens only, room.ensure (idempotent, also under concurrency), service tokens managing members of
 * rooms they are not in, system and card messages, and metadata on rooms and messages through
 * createCaller, HTTP and a real wsLink subscription. Real PostgreSQL and Redis.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { actor, clientFor, expectTRPCError, fileServer, getJson, openEvents, recordEvents, recordInbox, roomKit, tokenFor, uuid, wsClient, type TrpcHttpError } from './fixture.js';

const t = fileServer('svc', { messageKeys: `k1:${randomBytes(32).toString('base64')}` });

const kit = roomKit(() => t);
const { users, as } = kit;
const service = (id: string, tenant = 'default') => as(id, tenant, ['service']);

const card = {
  title: 'Order 4711',
  fields: [
    { label: 'Status', value: 'shipped' },
    { label: 'Carrier', value: 'DHL' },
  ],
  links: [{ label: 'Tracking', url: 'https://tracking.example.com/4711' }],
};

describe('room keys', () => {
  it('only service and admin tokens set a key; a user is FORBIDDEN with the reason', async () => {
    const [alice, svc, adm] = users('alice', 'erp', 'adm');
    await expectTRPCError(
      as(alice).room.create({ kind: 'group', name: 'Order', key: `order:${uuid()}` }),
      'FORBIDDEN',
      /only service or admin tokens may set a room key/,
    );
    await expectTRPCError(as(alice).room.ensure({ kind: 'group', name: 'Order', key: `order:${uuid()}` }), 'FORBIDDEN', /service or admin/);
    expect((await as(alice).room.list()).length).toBe(0);
    // Without a key a user creates rooms as before.
    expect(await as(alice).room.create({ kind: 'group', name: 'Plain' })).toMatchObject({ key: null, metadata: null });
    const key1 = `order:${uuid()}`;
    expect(await service(svc).room.create({ kind: 'group', name: 'Order', key: key1 })).toMatchObject({ key: key1, myRole: 'owner' });
    const key2 = `order:${uuid()}`;
    expect(await as(adm, 'default', ['admin']).room.create({ kind: 'group', name: 'Order', key: key2 })).toMatchObject({ key: key2 });
  });
});

describe('room.ensure', () => {
  it('creates once, then returns the same room, adds missing members and never removes or renames', async () => {
    const [svc, bob, carol, dave] = users('erp', 'bob', 'carol', 'dave');
    const key = `order:${uuid()}`;
    const first = await service(svc).room.ensure({ key, kind: 'group', name: 'Order 4711', memberIds: [bob], topic: 'late', metadata: { orderId: 4711 } });
    expect(first).toMatchObject({ key, name: 'Order 4711', topic: 'late', memberCount: 2, metadata: { orderId: 4711 } });
    const again = await service(svc).room.ensure({ key, kind: 'group', name: 'Renamed?', memberIds: [carol, dave] });
    expect(again).toMatchObject({ id: first.id, name: 'Order 4711', memberCount: 4, metadata: { orderId: 4711 } });
    const members = (await as(bob).room.members({ roomId: first.id })).map((m) => m.userId).sort();
    expect(members).toEqual([svc, bob, carol, dave].sort());
    // Nothing to add: the same room, no new events.
    const same = await service(svc).room.ensure({ key, kind: 'group', name: 'x', memberIds: [bob] });
    expect(same).toMatchObject({ id: first.id, memberCount: 4, lastSeq: again.lastSeq });
    // Carol was added with a room.added inbox item and a system message.
    const history = (await as(carol).chat.history({ roomId: first.id })).messages.filter((m) => m.kind === 'system').map((m) => m.body);
    expect(history).toEqual(expect.arrayContaining([`${svc} added ${carol}`]));
  });

  it('concurrent ensures of one key create one room', async () => {
    const [svc, bob] = users('erp', 'bob');
    const key = `order:${uuid()}`;
    const rooms = await Promise.all(
      Array.from({ length: 5 }, (_, i) => service(svc).room.ensure({ key, kind: 'support', name: `Order ${i}`, memberIds: [bob] })),
    );
    expect(new Set(rooms.map((r) => r.id)).size).toBe(1);
    expect(await t.env.sql('select count(*)::int as n from room where key = $1', [key])).toEqual([{ n: 1 }]);
    expect((await as(bob).room.byKey({ key })).map((r) => r.id)).toEqual([rooms[0]!.id]);
  });

  it('another service account of the tenant ensures the same room; another tenant sees nothing of it', async () => {
    const [svc, svc2, bob, carol] = users('erp', 'crm', 'bob', 'carol');
    const key = `order:${uuid()}`;
    const room = await service(svc).room.ensure({ key, kind: 'group', name: 'Order', memberIds: [bob] });
    // A second integration of the tenant is not a member, and still gets the room and adds people.
    const viaCrm = await service(svc2).room.ensure({ key, kind: 'group', name: 'Order', memberIds: [carol] });
    expect(viaCrm).toMatchObject({ id: room.id, myRole: 'admin', memberCount: 3 });
    expect((await service(svc2).room.byKey({ key })).map((r) => r.id)).toEqual([room.id]);
    // The other tenant's service finds nothing and gets a room of its own for the same key.
    expect(await service(svc, 'tenant-b').room.byKey({ key })).toEqual([]);
    await expectTRPCError(service(svc, 'tenant-b').room.addMembers({ roomId: room.id, userIds: [carol] }), 'NOT_FOUND');
    const theirs = await service(svc, 'tenant-b').room.ensure({ key, kind: 'group', name: 'B' });
    expect(theirs.id).not.toBe(room.id);
  });
});

describe('service tokens manage members', () => {
  it('add and remove members of a room they are not in; users still cannot', async () => {
    const [owner, bob, carol, svc, eve] = users('owner', 'bob', 'carol', 'erp', 'eve');
    const room = await as(owner).room.create({ kind: 'group', name: 'Team', memberIds: [bob] });
    expect(await service(svc).room.addMembers({ roomId: room.id, userIds: [carol] })).toEqual({ added: [carol] });
    expect(await service(svc).room.removeMember({ roomId: room.id, userId: bob })).toEqual({ ok: true });
    expect((await as(owner).room.members({ roomId: room.id })).map((m) => m.userId).sort()).toEqual([carol, owner].sort());
    // Never the owner (a room admin cannot remove an owner either), never another tenant's room.
    await expectTRPCError(service(svc).room.removeMember({ roomId: room.id, userId: owner }), 'FORBIDDEN');
    await expectTRPCError(service(svc, 'tenant-b').room.addMembers({ roomId: room.id, userIds: [eve] }), 'NOT_FOUND');
    // A user outside the room learns nothing; reading stays closed to the service token.
    await expectTRPCError(as(eve).room.addMembers({ roomId: room.id, userIds: [eve] }), 'NOT_FOUND');
    await expectTRPCError(service(svc).chat.history({ roomId: room.id }), 'NOT_FOUND');
  });

  it('keep their rights when they are also a plain member of the room (a member to read it): they still post into a broadcast room, add and remove members', async () => {
    const [owner, bob, carol, svc] = users('owner', 'bob', 'carol', 'erp');
    const news = await as(owner).room.create({ kind: 'broadcast', name: 'Status', memberIds: [bob, svc] });
    expect(await service(svc).chat.send({ roomId: news.id, clientId: uuid(), body: 'maintenance tonight' })).toMatchObject({ senderId: svc });
    const room = await as(owner).room.create({ kind: 'group', name: 'Order 9', memberIds: [bob, svc] });
    expect(await service(svc).room.addMembers({ roomId: room.id, userIds: [carol] })).toEqual({ added: [carol] });
    expect(await service(svc).room.removeMember({ roomId: room.id, userId: bob })).toEqual({ ok: true });
    // Its membership stays what it is: a plain member, who reads the room.
    expect((await as(owner).room.members({ roomId: room.id })).find((m) => m.userId === svc)).toMatchObject({ role: 'member' });
    expect((await service(svc).chat.history({ roomId: news.id })).messages.map((m) => m.body)).toContain('maintenance tonight');
    // The same user without the service role is a plain member: no post, no member changes.
    await expectTRPCError(as(svc).chat.send({ roomId: news.id, clientId: uuid(), body: 'as a person' }), 'FORBIDDEN', /only admins and the owner/);
    await expectTRPCError(as(svc).room.addMembers({ roomId: room.id, userIds: [bob] }), 'FORBIDDEN');
  });
});

describe('service tokens change their own posts', () => {
  it('edit and delete their own card and text in a room they are not in, published as message.edited and message.deleted; they still read nothing', async () => {
    const [owner, bob, svc] = users('owner', 'bob', 'ci');
    const room = await as(owner).room.create({ kind: 'group', name: 'Builds', memberIds: [bob] });
    const build = { title: 'Build 42', fields: [{ label: 'Status', value: 'running' }] };
    const posted = await service(svc).chat.send({ roomId: room.id, clientId: uuid(), body: 'build running', kind: 'card', card: build });
    const text = await service(svc).chat.send({ roomId: room.id, clientId: uuid(), body: 'deploy queued' });
    const reply = await service(svc).chat.send({ roomId: room.id, clientId: uuid(), body: 'log attached', replyToId: posted.id });

    const edited = await service(svc).chat.edit({ messageId: posted.id, body: 'build passed' });
    expect(edited).toMatchObject({ id: posted.id, senderId: svc, kind: 'card', body: 'build passed', card: build });
    expect(edited.editedAt).toBeInstanceOf(Date);
    // A no-op edit takes no seq.
    expect((await service(svc).chat.edit({ messageId: posted.id, body: 'build passed' })).body).toBe('build passed');
    const deleted = await service(svc).chat.delete({ messageId: text.id });
    expect(deleted).toMatchObject({ id: text.id, body: null });
    expect(deleted.deletedAt).toBeInstanceOf(Date);
    // Idempotent, and a reply takes its root's summary down with it.
    expect((await service(svc).chat.delete({ messageId: text.id })).deletedAt).toEqual(deleted.deletedAt);
    await service(svc).chat.delete({ messageId: reply.id });

    // The members got the events (replayed from the log) and see the changes in history.
    await using replay = await openEvents(t.app, actor(bob), { roomId: room.id, lastEventId: String(reply.seq) });
    expect((await replay.next()).event).toMatchObject({ type: 'message.edited', seq: reply.seq + 1, message: { id: posted.id, body: 'build passed', card: build } });
    expect((await replay.next()).event).toMatchObject({ type: 'message.deleted', seq: reply.seq + 2, message: { id: text.id, body: null } });
    expect((await replay.next()).event).toMatchObject({ type: 'message.deleted', seq: reply.seq + 3, thread: { rootId: posted.id, replyCount: 0 } });
    const history = (await as(bob).chat.history({ roomId: room.id })).messages;
    expect(history.find((m) => m.id === posted.id)).toMatchObject({ body: 'build passed', card: build, replyCount: 0 });
    expect(history.find((m) => m.id === text.id)?.deletedAt).toBeInstanceOf(Date);
    expect(await as(owner).chat.edits({ messageId: posted.id })).toMatchObject([{ body: 'build running', editorId: svc }]);

    // Changing its posts reads nothing of the room: history, versions and threads stay closed.
    await expectTRPCError(service(svc).chat.history({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(service(svc).chat.edits({ messageId: posted.id }), 'NOT_FOUND');
    await expectTRPCError(service(svc).chat.thread({ messageId: posted.id }), 'NOT_FOUND');
    expect((await as(owner).room.get({ roomId: room.id })).lastSeq).toBe(reply.seq + 3);
  });

  it("never others' messages, never another tenant's; their own system messages stay as a member author's", async () => {
    const [owner, bob, svc, svc2] = users('owner', 'bob', 'ci', 'crm');
    const room = await as(owner).room.create({ kind: 'group', name: 'Builds', memberIds: [bob] });
    const mine = await service(svc).chat.send({ roomId: room.id, clientId: uuid(), body: 'build running' });
    const bobs = await as(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'mine' });
    const theirs = await service(svc2).chat.send({ roomId: room.id, clientId: uuid(), body: 'crm sync' });
    const system = await service(svc).chat.send({ roomId: room.id, clientId: uuid(), body: 'order paid', kind: 'system' });
    const seq = system.seq;

    // Another user's or integration's message in a room it cannot read: NOT_FOUND, as before.
    for (const m of [bobs, theirs]) {
      await expectTRPCError(service(svc).chat.edit({ messageId: m.id, body: 'hijacked' }), 'NOT_FOUND');
      await expectTRPCError(service(svc).chat.delete({ messageId: m.id }), 'NOT_FOUND');
    }
    // A service token of another tenant (same id), and the same id without the service role.
    for (const who of [service(svc, 'tenant-b'), as(svc)]) {
      await expectTRPCError(who.chat.edit({ messageId: mine.id, body: 'hijacked' }), 'NOT_FOUND');
      await expectTRPCError(who.chat.delete({ messageId: mine.id }), 'NOT_FOUND');
    }
    // A system message: not editable, and deleted by a moderator only (not by a member author).
    await expectTRPCError(service(svc).chat.edit({ messageId: system.id, body: 'rewritten' }), 'FORBIDDEN', /system messages cannot be edited/);
    await expectTRPCError(service(svc).chat.delete({ messageId: system.id }), 'FORBIDDEN', /only a moderator can delete a system message/);
    // Banned from the room: nothing of it, as for posting.
    await as(owner).room.ban({ roomId: room.id, userId: svc });
    await expectTRPCError(service(svc).chat.edit({ messageId: mine.id, body: 'banned' }), 'NOT_FOUND');
    await expectTRPCError(service(svc).chat.delete({ messageId: mine.id }), 'NOT_FOUND');

    const history = (await as(owner).chat.history({ roomId: room.id })).messages;
    expect(history.filter((m) => [mine.id, bobs.id, theirs.id, system.id].includes(m.id)).map((m) => [m.body, m.editedAt, m.deletedAt])).toEqual([
      ['build running', null, null],
      ['mine', null, null],
      ['crm sync', null, null],
      ['order paid', null, null],
    ]);
    // Nothing was written (the ban of a non-member of a group room takes no seq either).
    expect((await as(owner).room.get({ roomId: room.id })).lastSeq).toBe(seq);
  });

  it('in an archived room the edit is refused like a post', async () => {
    const [owner, svc] = users('owner', 'ci');
    const room = await as(owner).room.create({ kind: 'group', name: 'Old builds' });
    const mine = await service(svc).chat.send({ roomId: room.id, clientId: uuid(), body: 'build running' });
    await as(owner).room.archive({ roomId: room.id });
    await expectTRPCError(service(svc).chat.edit({ messageId: mine.id, body: 'build passed' }), 'PRECONDITION_FAILED', /archived/);
    await expectTRPCError(service(svc).chat.delete({ messageId: mine.id }), 'PRECONDITION_FAILED', /archived/);
  });

  it('in a room it cannot read it reacts to nothing, and its answers carry what it wrote: no reactions or replies of the members', async () => {
    const [owner, bob, svc] = users('owner', 'bob', 'ci');
    const room = await as(owner).room.create({ kind: 'group', name: 'Builds', memberIds: [bob] });
    const bobs = await as(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'payroll numbers' });
    const clientId = uuid();
    const mine = await service(svc).chat.send({ roomId: room.id, clientId, body: 'build running' });
    const other = await service(svc).chat.send({ roomId: room.id, clientId: uuid(), body: 'deploy queued' });
    // The members react to and answer its posts.
    for (const m of [mine, other]) {
      await as(bob).chat.react({ messageId: m.id, emoji: '🎉' });
      await as(bob).chat.send({ roomId: room.id, clientId: uuid(), body: 'looks flaky', replyToId: m.id });
    }
    // A reaction needs read access: NOT_FOUND for any message of the room, its own posts included
    // (the answer of a reaction is the message with its body and everyone's reactions).
    for (const m of [bobs, mine]) {
      await expectTRPCError(service(svc).chat.react({ messageId: m.id, emoji: '👍' }), 'NOT_FOUND');
      await expectTRPCError(service(svc).chat.unreact({ messageId: m.id, emoji: '🎉' }), 'NOT_FOUND');
    }
    const { lastSeq } = await as(owner).room.get({ roomId: room.id });

    const authorOnly = { reactions: [], replyCount: 0, lastReplyAt: null };
    expect(await service(svc).chat.edit({ messageId: mine.id, body: 'build passed' })).toMatchObject({ body: 'build passed', ...authorOnly });
    // The no-op edit, a repeat of the send by its clientId, the delete and its repeat alike.
    expect(await service(svc).chat.edit({ messageId: mine.id, body: 'build passed' })).toMatchObject({ body: 'build passed', ...authorOnly });
    expect(await service(svc).chat.send({ roomId: room.id, clientId, body: 'build running' })).toMatchObject({ id: mine.id, body: 'build passed', ...authorOnly });
    expect(await service(svc).chat.delete({ messageId: other.id })).toMatchObject({ body: null, ...authorOnly });
    expect(await service(svc).chat.delete({ messageId: other.id })).toMatchObject({ body: null, ...authorOnly });

    // The members still see them, and their events carry them.
    const history = (await as(bob).chat.history({ roomId: room.id })).messages;
    expect(history.find((m) => m.id === mine.id)).toMatchObject({ body: 'build passed', reactions: [{ emoji: '🎉', count: 1, me: true }], replyCount: 1 });
    expect(history.find((m) => m.id === other.id)).toMatchObject({ body: null, replyCount: 1 });
    await using replay = await openEvents(t.app, actor(bob), { roomId: room.id, lastEventId: String(lastSeq) });
    expect((await replay.next()).event).toMatchObject({ type: 'message.edited', message: { id: mine.id, reactions: [{ emoji: '🎉', count: 1 }], replyCount: 1 } });

    // A service token that is a member reads the room: its answers are a member's.
    await as(owner).room.addMembers({ roomId: room.id, userIds: [svc] });
    expect(await service(svc).chat.edit({ messageId: mine.id, body: 'build green' })).toMatchObject({ reactions: [{ emoji: '🎉', count: 1, me: false }], replyCount: 1 });
    expect((await service(svc).chat.react({ messageId: mine.id, emoji: '👍' })).reactions).toHaveLength(2);
  });
});

describe('system and card messages', () => {
  it('service tokens send them; users are FORBIDDEN; a card is validated', async () => {
    const [owner, bob, svc] = users('owner', 'bob', 'erp');
    const room = await as(owner).room.create({ kind: 'group', name: 'Order', memberIds: [bob] });
    const send = (who: ReturnType<typeof as>, over: Record<string, unknown>) => who.chat.send({ roomId: room.id, clientId: uuid(), body: '', ...over } as never);

    const sys = await send(service(svc), { kind: 'system', body: 'order 4711 was paid' });
    expect(sys).toMatchObject({ kind: 'system', body: 'order 4711 was paid', senderId: svc, card: null, metadata: null });
    const sent = await send(service(svc), { kind: 'card', body: 'Order 4711: shipped', card, metadata: { orderId: 4711 } });
    expect(sent).toMatchObject({ kind: 'card', body: 'Order 4711: shipped', card, metadata: { orderId: 4711 } });
    // Also through a transactional send (a reply), and with an empty body.
    const reply = await send(service(svc), { kind: 'card', card: { title: 'Reply card', fields: [] }, replyToId: sent.id });
    expect(reply).toMatchObject({ kind: 'card', body: '', card: { title: 'Reply card', fields: [] }, replyToId: sent.id });
    const history = (await as(bob).chat.history({ roomId: room.id })).messages;
    expect(history.find((m) => m.id === sent.id)).toMatchObject({ card, metadata: { orderId: 4711 } });

    await expectTRPCError(send(as(owner), { kind: 'system', body: 'fake' }), 'FORBIDDEN', /only service tokens may send system messages/);
    await expectTRPCError(send(as(bob), { kind: 'card', card }), 'FORBIDDEN', /only service tokens may send card messages/);
    await expectTRPCError(send(as(owner, 'default', ['admin']), { kind: 'card', card }), 'FORBIDDEN', /service/);
    await expectTRPCError(send(service(svc), { kind: 'card' }), 'BAD_REQUEST', /card message needs card/);
    await expectTRPCError(send(service(svc), { body: 'x', card }), 'BAD_REQUEST', /card is only allowed with kind "card"/);
    const bad = (c: Record<string, unknown>) => send(service(svc), { kind: 'card', card: { ...card, ...c } });
    await expectTRPCError(bad({ links: [{ label: 'x', url: 'http://tracking.example.com/4711' }] }), 'BAD_REQUEST', /https:\/\/ URL/);
    await expectTRPCError(bad({ links: [{ label: 'x', url: 'javascript:alert(1)' }] }), 'BAD_REQUEST', /https:\/\/ URL/);
    await expectTRPCError(bad({ title: 't'.repeat(201) }), 'BAD_REQUEST', /title is at most 200/);
    await expectTRPCError(bad({ fields: Array.from({ length: 21 }, () => ({ label: 'l', value: 'v' })) }), 'BAD_REQUEST', /at most 20 fields/);
    await expectTRPCError(bad({ fields: [{ label: 'l'.repeat(101), value: 'v' }] }), 'BAD_REQUEST', /label is at most 100/);
    await expectTRPCError(bad({ fields: [{ label: 'l', value: 'v'.repeat(1001) }] }), 'BAD_REQUEST', /value is at most 1000/);
    await expectTRPCError(bad({ links: Array.from({ length: 6 }, () => card.links[0]) }), 'BAD_REQUEST', /at most 5 links/);
    expect((await as(bob).chat.history({ roomId: room.id })).messages.length).toBe(history.length);
  });

  it('in an encrypted room the body is sealed, metadata and card are stored as they are', async () => {
    const [owner, svc] = users('owner', 'erp');
    const room = await as(owner).room.create({ kind: 'group', name: 'Vault', encrypted: true });
    const sent = await service(svc).chat.send({ roomId: room.id, clientId: uuid(), body: 'secret fallback', kind: 'card', card, metadata: { a: 1 } });
    expect(sent).toMatchObject({ body: 'secret fallback', card, metadata: { a: 1 } });
    const [row] = (await t.env.sql('select body, key_id, card, metadata from message where id = $1', [sent.id])) as { body: string; key_id: string; card: unknown; metadata: unknown }[];
    expect(row!.key_id).toBe('k1');
    expect(row!.body).not.toContain('secret');
    expect(row).toMatchObject({ card, metadata: { a: 1 } });
  });
});

describe('metadata', () => {
  it('round-trips on rooms (create, update, ensure) and messages, null when absent', async () => {
    const [alice, svc] = users('alice', 'erp');
    const meta = { order: { id: 4711, lines: [1, 2, 3], paid: true, note: null }, 'ü-key': 'ünïcödé' };
    const room = await as(alice).room.create({ kind: 'group', name: 'Meta', metadata: meta });
    expect(room.metadata).toEqual(meta);
    expect((await as(alice).room.get({ roomId: room.id })).metadata).toEqual(meta);
    expect((await as(alice).room.update({ roomId: room.id, metadata: { v: 2 } })).metadata).toEqual({ v: 2 });
    expect((await as(alice).room.list()).find((r) => r.id === room.id)?.metadata).toEqual({ v: 2 });
    expect((await as(alice).room.update({ roomId: room.id, metadata: null })).metadata).toBeNull();
    const plain = await as(alice).chat.send({ roomId: room.id, clientId: uuid(), body: 'plain' });
    expect(plain).toMatchObject({ metadata: null, card: null });
    const withMeta = await as(alice).chat.send({ roomId: room.id, clientId: uuid(), body: 'with', metadata: meta });
    expect(withMeta.metadata).toEqual(meta);
    expect((await as(alice).chat.history({ roomId: room.id })).messages.at(-1)?.metadata).toEqual(meta);
    const ensured = await service(svc).room.ensure({ key: `order:${uuid()}`, kind: 'group', name: 'E', metadata: { e: true } });
    expect(ensured.metadata).toEqual({ e: true });
  });

  it('refuses non-objects, deep nesting, more than 4 KiB and non-JSON values with BAD_REQUEST', async () => {
    const [alice] = users('alice');
    const room = await as(alice).room.create({ kind: 'group', name: 'Bad meta' });
    const send = (metadata: unknown) => as(alice).chat.send({ roomId: room.id, clientId: uuid(), body: 'x', metadata } as never);
    await expectTRPCError(send([1, 2]), 'BAD_REQUEST', /metadata must be a JSON object/);
    await expectTRPCError(send('text'), 'BAD_REQUEST', /metadata must be a JSON object/);
    await expectTRPCError(send(42), 'BAD_REQUEST', /metadata must be a JSON object/);
    let deep: Record<string, unknown> = { leaf: 1 };
    for (let i = 0; i < 8; i++) deep = { d: deep };
    await expectTRPCError(send(deep), 'BAD_REQUEST', /nested deeper than 8 levels/);
    await expectTRPCError(send({ big: 'x'.repeat(4096) }), 'BAD_REQUEST', /at most 4096 bytes/);
    expect((await send({ fits: 'x'.repeat(4000) })).metadata).toEqual({ fits: 'x'.repeat(4000) });
    await expectTRPCError(send({ when: new Date() }), 'BAD_REQUEST', /metadata\.when is not a JSON value/);
    await expectTRPCError(send({ n: Number.NaN }), 'BAD_REQUEST', /finite number/);
    await expectTRPCError(send({ u: undefined }), 'BAD_REQUEST', /not a JSON value/);
    const proto = JSON.parse('{"a":{"__proto__":{"polluted":true}}}') as unknown;
    await expectTRPCError(send(proto), 'BAD_REQUEST', /must not have a __proto__ key/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    // Keys the wire format (superjson) refuses to serialize: stored, they would fail every later read
    // of the message (history, events) for every member.
    for (const key of ['constructor', 'prototype']) {
      await expectTRPCError(send({ [key]: 1 }), 'BAD_REQUEST', new RegExp(`metadata must not have a ${key} key`));
      await expectTRPCError(send({ a: [{ [key]: { b: 1 } }] }), 'BAD_REQUEST', new RegExp(`metadata\\.a\\[0\\] must not have a ${key} key`));
    }
    const page = await as(alice).chat.history({ roomId: room.id });
    expect(page.messages.length).toBeGreaterThan(0);
    await expectTRPCError(as(alice).room.update({ roomId: room.id, metadata: [] as never }), 'BAD_REQUEST', /metadata must be a JSON object/);
    await expectTRPCError(as(alice).room.create({ kind: 'group', name: 'x', metadata: { big: 'y'.repeat(5000) } }), 'BAD_REQUEST', /4096 bytes/);
  });

  it('raw JSON over HTTP: a __proto__ key never arrives (dropped by the transport, else refused), a non-object is BAD_REQUEST', async () => {
    const [alice] = users('alice');
    const room = await as(alice).room.create({ kind: 'group', name: 'Raw' });
    const post = (metadataJson: string) =>
      getJson<TrpcHttpError & { result?: { data: { json: { metadata: unknown } } } }>(`${t.url}/trpc/chat.send`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tokenFor(alice)}`, 'content-type': 'application/json' },
        body: `{"json":{"roomId":"${room.id}","clientId":"${uuid()}","body":"x","metadata":${metadataJson}}}`,
      });
    for (const raw of ['{"a":{"__proto__":{"isAdmin":true}}}', '{"__proto__":{"isAdmin":true},"b":1}']) {
      const res = await post(raw);
      if (res.status === 400) expect(res.body.error.json.message).toMatch(/must not have a __proto__ key/);
      else expect(JSON.stringify(res.body.result?.data.json.metadata)).not.toContain('__proto__');
    }
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
    const rows = await t.env.sql("select count(*)::int as n from message where metadata::text like '%__proto__%'");
    expect(rows).toEqual([{ n: 0 }]);
    const array = await post('[1,2]');
    expect(array.status).toBe(400);
    expect(array.body.error.json.data.code).toBe('BAD_REQUEST');
    expect(array.body.error.json.message).toMatch(/metadata must be a JSON object/);
    expect((await post('null')).status).toBe(200); // null: no metadata
  });

  it('travels over HTTP and in chat.events through a real wsLink client', async () => {
    const [owner, bob, svc] = users('owner', 'bob', 'erp');
    await using ownerHttp = clientFor(t.url, owner);
    await using svcHttp = clientFor(t.url, svc, { roles: ['service'] });
    await using bobWs = wsClient({ url: t.url, userId: bob });
    const room = await svcHttp.trpc.room.ensure.mutate({ key: `order:${uuid()}`, kind: 'group', name: 'Live', memberIds: [owner, bob], metadata: { order: 1 } });
    expect((await ownerHttp.trpc.room.get.query({ roomId: room.id })).metadata).toEqual({ order: 1 });
    using rec = recordEvents(bobWs, { roomId: room.id });
    await rec.ready();
    const sent = await svcHttp.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'fallback', kind: 'card', card, metadata: { order: 1, state: 'shipped' } });
    const live = await rec.next('message.new', (e) => e.message.id === sent.id);
    expect(live.message).toMatchObject({ kind: 'card', card, metadata: { order: 1, state: 'shipped' } });
    const reply = await ownerHttp.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'thanks', metadata: { ack: true } });
    expect((await rec.next('message.new', (e) => e.message.id === reply.id)).message.metadata).toEqual({ ack: true });
    // Replayed from the log after a resume: the same fields.
    await using replay = await openEvents(t.app, actor(bob), { roomId: room.id, lastEventId: String(sent.seq - 1) });
    expect((await replay.next()).event).toMatchObject({ type: 'message.new', message: { id: sent.id, card, metadata: { order: 1, state: 'shipped' } } });
  });

  it("a change of a room's metadata is a room.updated event with it (live and replayed) and a room.changed in the members' inboxes; the same value again is none", async () => {
    const [owner, bob, svc] = users('owner', 'bob', 'erp');
    await using svcHttp = clientFor(t.url, svc, { roles: ['service'] });
    await using bobWs = wsClient({ url: t.url, userId: bob });
    const room = await svcHttp.trpc.room.ensure.mutate({ key: `order:${uuid()}`, kind: 'group', name: 'Order', topic: 'pallets', memberIds: [owner, bob], metadata: { order: 1 } });
    using rec = recordEvents(bobWs, { roomId: room.id });
    using inbox = recordInbox(bobWs);
    await Promise.all([rec.ready(), inbox.ready()]);

    const meta = { order: 1, state: 'shipped', lines: [{ sku: 'A-1', qty: 40 }] };
    const changed = await svcHttp.trpc.room.update.mutate({ roomId: room.id, metadata: meta });
    expect(changed).toMatchObject({ metadata: meta, lastSeq: room.lastSeq + 1 });
    const live = await rec.next('room.updated', () => true);
    expect(live).toEqual({ type: 'room.updated', roomId: room.id, seq: room.lastSeq + 1, name: 'Order', topic: 'pallets', metadata: meta, by: svc });
    await inbox.next('room.changed', (e) => e.roomId === room.id && e.change === 'updated');

    // The same value (keys in another order) changes nothing: no seq, no event.
    const same = await svcHttp.trpc.room.update.mutate({ roomId: room.id, metadata: { lines: [{ qty: 40, sku: 'A-1' }], state: 'shipped', order: 1 } });
    expect(same.lastSeq).toBe(room.lastSeq + 1);
    // Cleared: an event with metadata null; a rename carries the metadata as it is.
    await svcHttp.trpc.room.update.mutate({ roomId: room.id, metadata: null });
    await svcHttp.trpc.room.update.mutate({ roomId: room.id, topic: 'delivered' });
    expect(await rec.next('room.updated', (e) => e.seq === room.lastSeq + 2)).toMatchObject({ metadata: null, topic: 'pallets' });
    expect(await rec.next('room.updated', (e) => e.seq === room.lastSeq + 3)).toMatchObject({ metadata: null, topic: 'delivered' });

    // Replayed from the log: the same events.
    await using replay = await openEvents(t.app, actor(bob), { roomId: room.id, lastEventId: String(room.lastSeq) });
    expect((await replay.next()).event).toEqual(live);
    expect((await replay.next()).event).toMatchObject({ type: 'room.updated', seq: room.lastSeq + 2, metadata: null });
  });
});
