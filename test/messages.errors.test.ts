/**
 * Errors of the message services that must mean what they say: an outage of a backing store during
 * edit, delete or react is SERVICE_UNAVAILABLE (retryable), never a final NOT_FOUND; and a repeat of
 * a reply or a mention (sent in a transaction of its own) by clientId is answered with the original.
 */
import { afterAll, describe, expect, it, vi } from 'vitest';
import { actor, callerFor, expectTRPCError, fileServer, uuid } from './fixture.js';

const t = fileServer('msgerr');
afterAll(() => {
  vi.restoreAllMocks();
});

let n = 0;
const users = (...names: string[]) => {
  n++;
  return names.map((x) => `${x}${n}`);
};
const as = (id: string, tenant = 'default') => callerFor(t.app, actor(id, tenant));

/** The error node-postgres gives when the database refuses the connection. */
const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });

describe('the access check of a message fails after the message was found', () => {
  it('is SERVICE_UNAVAILABLE for edit, delete and react; nothing changes; the calls work once it answers', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await as(alice!).room.create({ kind: 'group', name: 'outage', memberIds: [bob!] });
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'hello' });
    const calls = [
      () => as(alice!).chat.edit({ messageId: m.id, body: 'edited' }),
      () => as(alice!).chat.delete({ messageId: m.id }),
      () => as(bob!).chat.react({ messageId: m.id, emoji: '👍' }),
      () => as(bob!).chat.unreact({ messageId: m.id, emoji: '👍' }),
    ];
    const spy = vi.spyOn(t.app.services.access, 'requireMember');
    try {
      for (const call of calls) {
        const before = spy.mock.calls.length;
        spy.mockRejectedValueOnce(refused());
        await expectTRPCError(call(), 'SERVICE_UNAVAILABLE', /retry/);
        // The failure came from the access check, after the message lookup had found the message.
        expect(spy.mock.calls.length).toBe(before + 1);
      }
    } finally {
      spy.mockRestore();
    }
    const [unchanged] = (await as(bob!).chat.history({ roomId: room.id })).messages;
    expect(unchanged).toMatchObject({ id: m.id, seq: m.seq, body: 'hello', editedAt: null, deletedAt: null, reactions: [] });
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(m.seq);

    expect(await as(bob!).chat.react({ messageId: m.id, emoji: '👍' })).toMatchObject({ reactions: [{ emoji: '👍', count: 1, me: true }] });
    expect(await as(alice!).chat.edit({ messageId: m.id, body: 'edited' })).toMatchObject({ body: 'edited' });
    expect(await as(alice!).chat.delete({ messageId: m.id })).toMatchObject({ body: null });
  });

  it('a caller without access to the room still gets NOT_FOUND, with the real access check', async () => {
    const [alice, eve] = users('alice', 'eve');
    const room = await as(alice!).room.create({ kind: 'group', name: 'closed', memberIds: [] });
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'private' });
    await expectTRPCError(as(eve!).chat.edit({ messageId: m.id, body: 'x' }), 'NOT_FOUND', /message/);
    await expectTRPCError(as(eve!).chat.delete({ messageId: m.id }), 'NOT_FOUND', /message/);
    await expectTRPCError(as(eve!).chat.react({ messageId: m.id, emoji: '👍' }), 'NOT_FOUND', /message/);
    await expectTRPCError(as(eve!).chat.edits({ messageId: m.id }), 'NOT_FOUND', /message/);
    await expectTRPCError(as(eve!).chat.thread({ messageId: m.id }), 'NOT_FOUND', /message/);
    await expectTRPCError(as(alice!, 'tenant-b').chat.edit({ messageId: m.id, body: 'x' }), 'NOT_FOUND', /message/);
  });
});

describe('a repeat of a send written in its own transaction (a reply, mentions)', () => {
  it('returns the original: one row, no seq used up, one inbox mention', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await as(alice!).room.create({ kind: 'group', name: 'thread', memberIds: [bob!] });
    const root = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'root' });
    const clientId = uuid();
    const input = { roomId: room.id, clientId, body: `re @${bob}`, replyToId: root.id, mentions: [bob!] };
    const first = await as(alice!).chat.send(input);
    const again = await as(alice!).chat.send(input);
    expect(again).toEqual(first);
    const concurrent = await Promise.all([as(alice!).chat.send(input), as(alice!).chat.send({ ...input, body: 'changed' })]);
    expect(concurrent.map((m) => m.id)).toEqual([first.id, first.id]);
    const history = (await as(bob!).chat.history({ roomId: room.id })).messages;
    expect(history.map((m) => m.id)).toEqual([root.id, first.id]);
    expect(history[0]!.replyCount).toBe(1);
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(first.seq);
    const next = await as(alice!).chat.send({ ...input, clientId: uuid() });
    expect(next.seq).toBe(first.seq + 1);
  });
});

describe('a repeat of a send that went through, after a new send would be refused', () => {
  it('is answered with the original for a member and for a service token, the room archived since (the answer to the first was lost)', async () => {
    const [owner, member] = users('owner', 'member');
    const room = await as(owner!).room.create({ kind: 'group', name: 'ticket', memberIds: [member!] });
    const service = callerFor(t.app, actor(`integration-${uuid().slice(0, 8)}`, 'default', ['service']));
    const byMember = { roomId: room.id, clientId: uuid(), body: 'a member message' };
    const byService = { roomId: room.id, clientId: uuid(), body: 'ticket closed', kind: 'system' as const };
    const [first, firstOfService] = [await as(member!).chat.send(byMember), await service.chat.send(byService)];
    await as(owner!).room.archive({ roomId: room.id });
    expect(await as(member!).chat.send(byMember)).toMatchObject({ id: first.id, seq: first.seq });
    expect(await service.chat.send(byService)).toMatchObject({ id: firstOfService.id, seq: firstOfService.seq });
    // A new send is refused: the room is archived.
    await expectTRPCError(service.chat.send({ ...byService, clientId: uuid() }), 'PRECONDITION_FAILED');
    await expectTRPCError(as(member!).chat.send({ ...byMember, clientId: uuid() }), 'PRECONDITION_FAILED');
    // Whoever cannot see the room gets NOT_FOUND for a repeat too: a service token of another tenant.
    const elsewhere = callerFor(t.app, actor(`integration-${uuid().slice(0, 8)}`, 'other', ['service']));
    await expectTRPCError(elsewhere.chat.send(byService), 'NOT_FOUND');
  });
});
