import { describe, expect, it } from 'vitest';
import { actor, callerFor, expectTRPCError, fileServer, openEvents, roomKit, setMemberRole, uuid } from './fixture.js';

const t = fileServer('rroom');

const kit = roomKit(() => t);
const { users, as } = kit;

describe('room.create', () => {
  it('makes the caller owner, adds the members once, counts them and takes one seq per join', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await as(alice!).room.create({
      kind: 'group',
      name: '  Team  ',
      topic: 'planning',
      memberIds: [bob!, carol!, bob!, alice!],
    });
    expect(room).toMatchObject({
      kind: 'group',
      name: 'Team',
      topic: 'planning',
      key: null,
      createdBy: alice,
      myRole: 'owner',
      memberCount: 3,
      lastSeq: 3,
    });
    expect(room.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(room.createdAt).toBeInstanceOf(Date);

    const members = await as(bob!).room.members({ roomId: room.id });
    expect(members.map((m) => [m.userId, m.role]).sort()).toEqual(
      [
        [alice, 'owner'],
        [bob, 'member'],
        [carol, 'member'],
      ].sort(),
    );
    expect((await as(bob!).room.get({ roomId: room.id })).myRole).toBe('member');
  });

  it('creates a room without members and of every kind', async () => {
    const [alice] = users('alice');
    for (const kind of ['group', 'support', 'broadcast'] as const) {
      const room = await as(alice!).room.create({ kind, name: `k-${kind}` });
      expect(room).toMatchObject({ kind, memberCount: 1, myRole: 'owner', lastSeq: 1, topic: null });
    }
  });

  it('keeps keys unique per tenant: CONFLICT in the same tenant, fine in another', async () => {
    const [alice, bob] = users('alice', 'bob');
    const key = `order:${uuid()}`;
    // Keys are set by service and admin tokens (a user's attempt: test/service-accounts.test.ts).
    const first = await as(alice!, 'default', ['admin']).room.create({ kind: 'support', name: 'Order', key });
    expect(first.key).toBe(key);
    await expectTRPCError(as(bob!, 'default', ['service']).room.create({ kind: 'group', name: 'Again', key }), 'CONFLICT', new RegExp(key));
    const other = await as(alice!, 'tenant-b', ['admin']).room.create({ kind: 'support', name: 'Order B', key });
    expect(other.key).toBe(key);
    expect(other.id).not.toBe(first.id);
    // The failed create left no half-made room behind.
    expect((await as(bob!).room.list()).map((r) => r.name)).not.toContain('Again');
  });

  it('rejects bad input with BAD_REQUEST naming the field', async () => {
    const [alice] = users('alice');
    await expectTRPCError(as(alice!).room.create({ kind: 'group', name: '   ' }), 'BAD_REQUEST', /name/);
    await expectTRPCError(as(alice!).room.create({ kind: 'group', name: 'x'.repeat(201) }), 'BAD_REQUEST', /name/);
    await expectTRPCError(as(alice!).room.create({ kind: 'direct' as never, name: 'x' }), 'BAD_REQUEST', /kind/);
    await expectTRPCError(as(alice!).room.create({ kind: 'group', name: 'x', key: 'has space' }), 'BAD_REQUEST', /key/);
    await expectTRPCError(as(alice!).room.create({ kind: 'group', name: 'x', memberIds: ['bad id'] }), 'BAD_REQUEST', /userId|memberIds/);
    await expectTRPCError(callerFor(t.app, null).room.create({ kind: 'group', name: 'x' }), 'UNAUTHORIZED');
  });

  it('refuses line breaks and other control characters in a room name (create, update, ensure) with BAD_REQUEST; other characters are kept', async () => {
    const [alice] = users('alice');
    const room = await as(alice!).room.create({ kind: 'group', name: '  Ops\u00a0–\u00a0Nord 🚀  ' });
    expect(room.name).toBe('Ops\u00a0–\u00a0Nord 🚀');
    for (const name of ['Ops\r\n\r\nSECURITY NOTICE', 'Ops\nx', 'Ops\tx', 'Ops\u0000x', 'Ops\u007fx', 'Ops\u0085x', 'Ops\u2028x', 'Ops\u2029x']) {
      await expectTRPCError(as(alice!).room.create({ kind: 'group', name }), 'BAD_REQUEST', /name must not contain control characters or line breaks/);
      await expectTRPCError(as(alice!).room.update({ roomId: room.id, name }), 'BAD_REQUEST', /name must not contain control characters or line breaks/);
      await expectTRPCError(
        as(alice!, 'default', ['service']).room.ensure({ kind: 'support', name, key: `order:${uuid()}` }),
        'BAD_REQUEST',
        /name must not contain control characters or line breaks/,
      );
    }
    expect((await as(alice!).room.get({ roomId: room.id })).name).toBe('Ops\u00a0–\u00a0Nord 🚀');
  });
});

describe('room.openDirect', () => {
  it('is idempotent from both sides', async () => {
    const [alice, bob] = users('alice', 'bob');
    const a1 = await as(alice!).room.openDirect({ userId: bob! });
    const a2 = await as(alice!).room.openDirect({ userId: bob! });
    const b1 = await as(bob!).room.openDirect({ userId: alice! });
    expect(a2.id).toBe(a1.id);
    expect(b1.id).toBe(a1.id);
    expect(a1).toMatchObject({ kind: 'direct', memberCount: 2, myRole: 'member', key: null, lastSeq: 2 });
    // Opening again took no seq and added no one.
    expect((await as(bob!).room.get({ roomId: a1.id })).lastSeq).toBe(2);
    const members = await as(alice!).room.members({ roomId: a1.id });
    expect(members.map((m) => m.userId).sort()).toEqual([alice, bob].sort());
    expect(members.every((m) => m.role === 'member')).toBe(true);
  });

  it('gives one room under concurrent calls from both sides', async () => {
    const [carol, dave] = users('carol', 'dave');
    const results = await Promise.all([
      as(carol!).room.openDirect({ userId: dave! }),
      as(dave!).room.openDirect({ userId: carol! }),
      as(carol!).room.openDirect({ userId: dave! }),
      as(dave!).room.openDirect({ userId: carol! }),
    ]);
    const ids = new Set(results.map((r) => r.id));
    expect(ids.size).toBe(1);
    const listed = (await as(carol!).room.list()).filter((r) => r.kind === 'direct');
    expect(listed.map((r) => r.id)).toEqual([...ids]);
    expect(listed[0]!.memberCount).toBe(2);
  });

  it('rejects a direct room with yourself', async () => {
    const [alice] = users('alice');
    await expectTRPCError(as(alice!).room.openDirect({ userId: alice! }), 'BAD_REQUEST', /yourself/);
    await expectTRPCError(as(alice!).room.openDirect({ userId: '' }), 'BAD_REQUEST', /userId/);
  });

  it('works for any two valid user ids: 128 characters, with " and \\ (escaped in its key) or outside the BMP', async () => {
    const [q, r, s] = users('q', 'r', 's');
    /** A user id of exactly 128 characters (code points): `prefix` then `fill` repeated. */
    const id128 = (prefix: string, fill: string) => {
      const chars = [...prefix];
      while (chars.length < 128) chars.push(...fill);
      return chars.slice(0, 128).join('');
    };
    const quoted = id128(`${q}"\\`, '"\\');
    const quoted2 = id128(`${r}\\"`, '\\"');
    const emoji = id128(`${s}`, '😀');
    expect([quoted, quoted2, emoji].map((id) => [...id].length)).toEqual([128, 128, 128]);
    expect(quoted.length).toBe(128);

    // Both ids valid as inputs: the same room from both sides, again and again.
    const a1 = await as(quoted).room.openDirect({ userId: quoted2 });
    expect(a1).toMatchObject({ kind: 'direct', memberCount: 2 });
    expect((await as(quoted).room.openDirect({ userId: quoted2 })).id).toBe(a1.id);
    expect((await as(quoted2).room.openDirect({ userId: quoted })).id).toBe(a1.id);
    // The name: the two ids, cut to the column's 200 characters.
    expect(a1.name).toBe(`${quoted}, ${quoted2}`.slice(0, 200));
    expect((await as(quoted2).room.members({ roomId: a1.id })).map((m) => m.userId).sort()).toEqual([quoted, quoted2].sort());

    // A token's subject may be 128 characters outside the BMP (256 UTF-16 code units): the name is
    // cut after whole characters, never between the halves of a pair.
    const b1 = await as(emoji).room.openDirect({ userId: quoted });
    expect((await as(emoji).room.openDirect({ userId: quoted })).id).toBe(b1.id);
    expect(b1.id).not.toBe(a1.id);
    expect([...b1.name]).toEqual([...`${quoted}, ${emoji}`].slice(0, 200));
    expect(b1.name).not.toMatch(/\p{Cs}/u);
    expect((await as(quoted).room.list()).filter((x) => x.kind === 'direct').map((x) => x.id).sort()).toEqual([a1.id, b1.id].sort());
  });

  it('keeps tenants apart: the same pair in another tenant gets another room', async () => {
    const [alice, bob] = users('alice', 'bob');
    const a = await as(alice!).room.openDirect({ userId: bob! });
    const b = await as(alice!, 'tenant-b').room.openDirect({ userId: bob! });
    expect(b.id).not.toBe(a.id);
    await expectTRPCError(as(bob!, 'tenant-b').room.get({ roomId: a.id }), 'NOT_FOUND');
  });
});

describe('room.list', () => {
  it('lists only my rooms with unread counts of others’ messages after my last read and the newest message', async () => {
    const [alice, bob, carol, eve] = users('alice', 'bob', 'carol', 'eve');
    const shared = await as(alice!).room.create({ kind: 'group', name: 'shared', memberIds: [bob!] });
    const alone = await as(alice!).room.create({ kind: 'group', name: 'alone' });
    await as(eve!).room.create({ kind: 'group', name: 'eve only' });

    const send = (who: string, body: string) => as(who).chat.send({ roomId: shared.id, clientId: uuid(), body });
    await send(alice!, 'a1');
    await send(alice!, 'a2');
    const b1 = await send(bob!, 'b1');

    const bobList = await as(bob!).room.list();
    expect(bobList.map((r) => r.id)).toEqual([shared.id]);
    expect(bobList[0]).toMatchObject({ name: 'shared', unreadCount: 2, myRole: 'member', lastSeq: b1.seq });
    expect(bobList[0]!.lastMessage).toMatchObject({ id: b1.id, body: 'b1', senderId: bob, seq: b1.seq });

    const aliceList = await as(alice!).room.list();
    expect(aliceList.map((r) => r.id).sort()).toEqual([shared.id, alone.id].sort());
    const aShared = aliceList.find((r) => r.id === shared.id)!;
    expect(aShared.unreadCount).toBe(1);
    expect(aShared.lastMessage?.body).toBe('b1');
    const aAlone = aliceList.find((r) => r.id === alone.id)!;
    expect(aAlone).toMatchObject({ unreadCount: 0, lastMessage: null });
    // Most recently active first.
    expect(aliceList[0]!.id).toBe(shared.id);

    // carol joins later: her last read is the room's position when she joined.
    await as(alice!).room.addMembers({ roomId: shared.id, userIds: [carol!] });
    let carolList = await as(carol!).room.list();
    expect(carolList).toHaveLength(1);
    expect(carolList[0]).toMatchObject({ id: shared.id, unreadCount: 0, lastReadSeq: b1.seq });
    const a3 = await send(alice!, 'a3');
    await send(carol!, 'c1');
    carolList = await as(carol!).room.list();
    expect(carolList[0]!.unreadCount).toBe(1);
    expect(carolList[0]!.lastMessage?.body).toBe('c1');
    expect((await as(bob!).room.list())[0]!.unreadCount).toBe(4);
    expect(a3.seq).toBeGreaterThan(b1.seq);

    // Nothing of another tenant shows up, even for the same user id.
    expect(await as(alice!, 'tenant-b').room.list()).toEqual([]);
  });
});

describe('room.get and room.members', () => {
  it('return the room and its members for members, NOT_FOUND without the name for anyone else', async () => {
    const [alice, bob, eve] = users('alice', 'bob', 'eve');
    const name = `Secret Zebra ${kit.n}`;
    const room = await as(alice!).room.create({ kind: 'group', name, topic: 't', memberIds: [bob!] });
    const got = await as(bob!).room.get({ roomId: room.id });
    expect(got).toEqual({ ...room, myRole: 'member' });

    const members = await as(bob!).room.members({ roomId: room.id });
    expect(members).toHaveLength(2);
    for (const m of members) expect(m.joinedAt).toBeInstanceOf(Date);
    // Roles, and each member's last read is the room's position when they joined.
    expect(members.map((m) => [m.userId, m.role, m.lastReadSeq]).sort()).toEqual(
      [
        [alice, 'owner', 0],
        [bob, 'member', 1],
      ].sort(),
    );

    for (const outsider of [as(eve!), as(alice!, 'tenant-b'), as(bob!, 'tenant-b')]) {
      for (const call of [() => outsider.room.get({ roomId: room.id }), () => outsider.room.members({ roomId: room.id })]) {
        const err = await expectTRPCError(call(), 'NOT_FOUND', /room not found/);
        expect(err.message).not.toContain(name);
        expect(err.message).not.toContain('Zebra');
      }
    }
    await expectTRPCError(as(alice!).room.get({ roomId: uuid() }), 'NOT_FOUND', /room not found/);
    await expectTRPCError(as(alice!).room.get({ roomId: 'not-a-uuid' }), 'BAD_REQUEST', /roomId/);
    await expectTRPCError(as(alice!).room.members({ roomId: 'not-a-uuid' }), 'BAD_REQUEST', /roomId/);
  });
});

describe('room.addMembers', () => {
  it('lets the owner and admins add; an existing member is a no-op left out of `added`', async () => {
    const [alice, bob, carol, dave, erin] = users('alice', 'bob', 'carol', 'dave', 'erin');
    const room = await as(alice!).room.create({ kind: 'group', name: 'add', memberIds: [bob!] });
    const res = await as(alice!).room.addMembers({ roomId: room.id, userIds: [bob!, carol!, carol!, alice!] });
    expect(res).toEqual({ added: [carol] });
    const after = await as(alice!).room.get({ roomId: room.id });
    expect(after.memberCount).toBe(3);
    // member.joined plus the system message about it.
    expect(after.lastSeq).toBe(room.lastSeq + 2);

    // Re-adding only existing members changes nothing, not even the seq.
    expect(await as(alice!).room.addMembers({ roomId: room.id, userIds: [bob!, carol!] })).toEqual({ added: [] });
    expect((await as(alice!).room.get({ roomId: room.id })).lastSeq).toBe(after.lastSeq);

    await setMemberRole(t.env, room.id, bob!, 'admin');
    expect(await as(bob!).room.addMembers({ roomId: room.id, userIds: [dave!] })).toEqual({ added: [dave] });
    const newcomer = (await as(dave!).room.members({ roomId: room.id })).find((m) => m.userId === dave);
    expect(newcomer?.role).toBe('member');

    // A plain member and a moderator may not add.
    await expectTRPCError(as(carol!).room.addMembers({ roomId: room.id, userIds: [erin!] }), 'FORBIDDEN', /add members/);
    await setMemberRole(t.env, room.id, carol!, 'moderator');
    await expectTRPCError(as(carol!).room.addMembers({ roomId: room.id, userIds: [erin!] }), 'FORBIDDEN');
    await expectTRPCError(as(erin!).room.get({ roomId: room.id }), 'NOT_FOUND');

    // A non-member and another tenant get NOT_FOUND; an empty list is bad input.
    await expectTRPCError(as(erin!).room.addMembers({ roomId: room.id, userIds: [erin!] }), 'NOT_FOUND');
    await expectTRPCError(as(alice!, 'tenant-b').room.addMembers({ roomId: room.id, userIds: [erin!] }), 'NOT_FOUND');
    await expectTRPCError(as(alice!).room.addMembers({ roomId: room.id, userIds: [] }), 'BAD_REQUEST', /userIds/);
    expect((await as(alice!).room.get({ roomId: room.id })).memberCount).toBe(4);
  });

  it('is FORBIDDEN in a direct room', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const dm = await as(alice!).room.openDirect({ userId: bob! });
    await expectTRPCError(as(alice!).room.addMembers({ roomId: dm.id, userIds: [carol!] }), 'FORBIDDEN');
    expect((await as(alice!).room.get({ roomId: dm.id })).memberCount).toBe(2);
  });
});

describe('room.removeMember', () => {
  it('needs moderator or better and a strictly higher rank than the target', async () => {
    const [owner, admin, mod, mod2, m1, m2, m3] = users('owner', 'admin', 'mod', 'modtwo', 'mone', 'mtwo', 'mthree');
    const room = await as(owner!).room.create({ kind: 'group', name: 'rm', memberIds: [admin!, mod!, mod2!, m1!, m2!, m3!] });
    await setMemberRole(t.env, room.id, admin!, 'admin');
    await setMemberRole(t.env, room.id, mod!, 'moderator');
    await setMemberRole(t.env, room.id, mod2!, 'moderator');

    // A plain member may not remove anyone.
    await expectTRPCError(as(m1!).room.removeMember({ roomId: room.id, userId: m2! }), 'FORBIDDEN', /remove members/);
    // A moderator removes a member, but not another moderator, an admin or the owner.
    expect(await as(mod!).room.removeMember({ roomId: room.id, userId: m1! })).toEqual({ ok: true });
    await expectTRPCError(as(mod!).room.removeMember({ roomId: room.id, userId: mod2! }), 'FORBIDDEN', /moderator cannot remove a moderator/);
    await expectTRPCError(as(mod!).room.removeMember({ roomId: room.id, userId: admin! }), 'FORBIDDEN');
    await expectTRPCError(as(mod!).room.removeMember({ roomId: room.id, userId: owner! }), 'FORBIDDEN');
    // An admin removes a moderator but not the owner; the owner removes an admin.
    expect(await as(admin!).room.removeMember({ roomId: room.id, userId: mod2! })).toEqual({ ok: true });
    await expectTRPCError(as(admin!).room.removeMember({ roomId: room.id, userId: owner! }), 'FORBIDDEN', /admin cannot remove a owner/);
    expect(await as(owner!).room.removeMember({ roomId: room.id, userId: admin! })).toEqual({ ok: true });

    const left = (await as(owner!).room.members({ roomId: room.id })).map((m) => m.userId).sort();
    expect(left).toEqual([owner, mod, m2, m3].sort());
    // A removed member sees nothing any more.
    await expectTRPCError(as(m1!).room.get({ roomId: room.id }), 'NOT_FOUND');
    expect((await as(m1!).room.list()).map((r) => r.id)).not.toContain(room.id);
    // Removing someone who is not a member is NOT_FOUND; removing yourself is BAD_REQUEST.
    await expectTRPCError(as(owner!).room.removeMember({ roomId: room.id, userId: m1! }), 'NOT_FOUND', /member not found/);
    await expectTRPCError(as(owner!).room.removeMember({ roomId: room.id, userId: owner! }), 'BAD_REQUEST', /room\.leave/);
    await expectTRPCError(as(mod!).room.removeMember({ roomId: room.id, userId: mod! }), 'BAD_REQUEST');
    // Outsiders: NOT_FOUND.
    await expectTRPCError(as(m1!).room.removeMember({ roomId: room.id, userId: m2! }), 'NOT_FOUND');
    await expectTRPCError(as(owner!, 'tenant-b').room.removeMember({ roomId: room.id, userId: m2! }), 'NOT_FOUND');
  });

  it('records member.left with the next seq and ends the removed member’s live stream', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(owner!).room.create({ kind: 'group', name: 'kick', memberIds: [bob!] });
    await using bobStream = await openEvents(t.app, actor(bob!), { roomId: room.id });
    await using ownerStream = await openEvents(t.app, actor(owner!), { roomId: room.id });
    expect((await bobStream.next()).event).toEqual({ type: 'ready', roomId: room.id, seq: 2 });
    expect((await ownerStream.next()).event).toMatchObject({ type: 'ready', seq: 2 });
    await as(owner!).room.removeMember({ roomId: room.id, userId: bob! });
    const ev = await ownerStream.next();
    expect(ev).toEqual({ id: '3', event: { type: 'member.left', roomId: room.id, seq: 3, userId: bob, reason: 'removed', by: owner } });
    expect((await bobStream.next()).event).toMatchObject({ type: 'member.left', userId: bob });
    expect(await bobStream.ended()).toBe(true);
  });
});

describe('room.leave', () => {
  it('hands ownership to the longest-standing member when the owner leaves', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await as(alice!).room.create({ kind: 'group', name: 'leave', memberIds: [bob!] });
    await as(alice!).room.addMembers({ roomId: room.id, userIds: [carol!] });
    expect(await as(alice!).room.leave({ roomId: room.id })).toEqual({ ok: true });

    const members = await as(bob!).room.members({ roomId: room.id });
    expect(members.map((m) => [m.userId, m.role])).toEqual([
      [bob, 'owner'],
      [carol, 'member'],
    ]);
    const got = await as(bob!).room.get({ roomId: room.id });
    // addMembers: member.joined + system message; leave: member.left + member.updated (new owner) + system message.
    expect(got).toMatchObject({ myRole: 'owner', memberCount: 2, lastSeq: room.lastSeq + 5 });
    await expectTRPCError(as(alice!).room.get({ roomId: room.id }), 'NOT_FOUND');
    expect((await as(alice!).room.list()).map((r) => r.id)).not.toContain(room.id);
    // The new owner can act as one.
    expect(await as(bob!).room.addMembers({ roomId: room.id, userIds: [alice!] })).toEqual({ added: [alice] });
  });

  it('prefers the highest role, and is deterministic among members who joined together', async () => {
    const [alice, zed, amy, mia] = users('alice', 'zed', 'amy', 'mia');
    // All three join in the same transaction (same joined_at).
    const room = await as(alice!).room.create({ kind: 'group', name: 'tie', memberIds: [zed!, amy!, mia!] });
    await setMemberRole(t.env, room.id, mia!, 'admin');
    await as(alice!).room.leave({ roomId: room.id });
    expect((await as(mia!).room.get({ roomId: room.id })).myRole).toBe('owner');

    const room2 = await as(alice!).room.create({ kind: 'group', name: 'tie2', memberIds: [zed!, amy!] });
    const before = await as(alice!).room.members({ roomId: room2.id });
    const next = before.find((m) => m.userId !== alice)!.userId;
    await as(alice!).room.leave({ roomId: room2.id });
    const after = await as(zed!).room.members({ roomId: room2.id });
    expect(after.filter((m) => m.role === 'owner').map((m) => m.userId)).toEqual([next]);
  });

  it('a plain member leaves without changing roles; direct rooms cannot be left; outsiders get NOT_FOUND', async () => {
    const [alice, bob, eve] = users('alice', 'bob', 'eve');
    const room = await as(alice!).room.create({ kind: 'group', name: 'plain', memberIds: [bob!] });
    await as(bob!).room.leave({ roomId: room.id });
    expect((await as(alice!).room.members({ roomId: room.id })).map((m) => [m.userId, m.role])).toEqual([[alice, 'owner']]);
    // Leaving twice: no longer a member.
    await expectTRPCError(as(bob!).room.leave({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as(eve!).room.leave({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(as(alice!, 'tenant-b').room.leave({ roomId: room.id }), 'NOT_FOUND');

    const dm = await as(alice!).room.openDirect({ userId: bob! });
    await expectTRPCError(as(alice!).room.leave({ roomId: dm.id }), 'BAD_REQUEST', /direct room cannot be left/);
    expect((await as(alice!).room.get({ roomId: dm.id })).memberCount).toBe(2);
  });
});
