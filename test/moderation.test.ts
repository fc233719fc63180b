/**
 * Rooms and moderation through createCaller: roles, room updates, mutes, bans, external keys,
 * support, broadcast and direct rooms, and service tokens. Real PostgreSQL and Redis.
 */
import { describe, expect, it, vi } from 'vitest';
import { actor, appRouter, expectTRPCError, fileServer, openEvents, openInbox, roomKit, setMutedUntil, uuid, type MemberRole } from './fixture.js';

const t = fileServer('moder');

const kit = roomKit(() => t);
const { users, as } = kit;
const send = (id: string, roomId: string, body = 'hi', tenant = 'default', roles: string[] = []) =>
  as(id, tenant, roles).chat.send({ roomId, clientId: uuid(), body });
const roleOf = async (roomId: string, viewer: string, userId: string) =>
  (await as(viewer).room.members({ roomId })).find((m) => m.userId === userId)?.role;

/** A group room owned by `owner` with the given extra roles set through room.setRole. */
async function groupRoom(owner: string, roles: Record<string, MemberRole>, name = 'mod room') {
  const room = await as(owner).room.create({ kind: 'group', name, memberIds: Object.keys(roles) });
  for (const [userId, role] of Object.entries(roles)) {
    if (role !== 'member') await as(owner).room.setRole({ roomId: room.id, userId, role });
  }
  return room;
}

describe('room.setRole', () => {
  it('needs admin or better, to outrank the target, and cannot grant a role at or above one’s own', async () => {
    const [owner, admin, admin2, mod, m1, m2, eve] = users('owner', 'admin', 'admintwo', 'mod', 'mone', 'mtwo', 'eve');
    const room = await groupRoom(owner, { [admin]: 'admin', [admin2]: 'admin', [mod]: 'moderator', [m1]: 'member', [m2]: 'member' });
    const set = (who: string, userId: string, role: MemberRole) => as(who).room.setRole({ roomId: room.id, userId, role });

    // The owner set up two admins and a moderator.
    expect(await roleOf(room.id, m1, admin)).toBe('admin');
    expect(await roleOf(room.id, m1, mod)).toBe('moderator');

    // An admin promotes a member to moderator and demotes a moderator...
    expect(await set(admin, m1, 'moderator')).toMatchObject({ userId: m1, role: 'moderator' });
    expect(await set(admin, m1, 'member')).toMatchObject({ userId: m1, role: 'member' });
    // ...but cannot grant admin (not below their own) or ownership, nor touch a peer or the owner.
    await expectTRPCError(set(admin, m1, 'admin'), 'FORBIDDEN', /admin cannot make a member a admin/);
    await expectTRPCError(set(admin, m1, 'owner'), 'FORBIDDEN', /only the owner can hand over ownership/);
    await expectTRPCError(set(admin, admin2, 'member'), 'FORBIDDEN', /admin cannot make a admin a member/);
    await expectTRPCError(set(admin, owner, 'member'), 'FORBIDDEN');
    // A moderator and a plain member may not change roles at all.
    await expectTRPCError(set(mod, m1, 'member'), 'FORBIDDEN', /change roles/);
    await expectTRPCError(set(m1, m2, 'moderator'), 'FORBIDDEN', /change roles/);
    // Nobody changes their own role.
    await expectTRPCError(set(admin, admin, 'member'), 'BAD_REQUEST', /own role/);
    await expectTRPCError(set(owner, owner, 'admin'), 'BAD_REQUEST', /own role/);
    // The target must be a member; outsiders learn nothing.
    await expectTRPCError(set(owner, eve, 'member'), 'NOT_FOUND', /member not found/);
    await expectTRPCError(set(eve, m1, 'moderator'), 'NOT_FOUND', /room not found/);
    await expectTRPCError(as(owner, 'tenant-b').room.setRole({ roomId: room.id, userId: m1, role: 'moderator' }), 'NOT_FOUND');

    // The owner makes admins and demotes them.
    expect(await set(owner, m2, 'admin')).toMatchObject({ role: 'admin' });
    expect(await set(owner, admin2, 'moderator')).toMatchObject({ role: 'moderator' });

    const roles = Object.fromEntries((await as(owner).room.members({ roomId: room.id })).map((m) => [m.userId, m.role]));
    expect(roles).toEqual({ [owner]: 'owner', [admin]: 'admin', [admin2]: 'moderator', [mod]: 'moderator', [m1]: 'member', [m2]: 'admin' });
  });

  it('only the owner hands over ownership and becomes an admin; each change is a member.updated with the next seq', async () => {
    const [owner, bob, carol] = users('owner', 'bob', 'carol');
    const room = await groupRoom(owner, { [bob]: 'member', [carol]: 'member' });
    {
      await using stream = await openEvents(t.app, actor(carol), { roomId: room.id });
      const ready = await stream.next();
      expect(ready.event).toEqual({ type: 'ready', roomId: room.id, seq: room.lastSeq });

      await as(owner).room.setRole({ roomId: room.id, userId: bob, role: 'admin' });
      const promoted = await stream.next();
      expect(promoted).toEqual({
        id: String(room.lastSeq + 1),
        event: { type: 'member.updated', roomId: room.id, seq: room.lastSeq + 1, userId: bob, role: 'admin', mutedUntil: null, by: owner },
      });

      expect(await as(owner).room.setRole({ roomId: room.id, userId: bob, role: 'owner' })).toMatchObject({ userId: bob, role: 'owner' });
      const [demoted, crowned] = await stream.take(2);
      expect(demoted!.event).toEqual({
        type: 'member.updated', roomId: room.id, seq: room.lastSeq + 2, userId: owner, role: 'admin', mutedUntil: null, by: owner,
      });
      expect(crowned!.event).toEqual({
        type: 'member.updated', roomId: room.id, seq: room.lastSeq + 3, userId: bob, role: 'owner', mutedUntil: null, by: owner,
      });
    }
    expect((await as(owner).room.get({ roomId: room.id })).myRole).toBe('admin');
    expect((await as(bob).room.get({ roomId: room.id })).myRole).toBe('owner');
    const owners = (await as(carol).room.members({ roomId: room.id })).filter((m) => m.role === 'owner');
    expect(owners.map((m) => m.userId)).toEqual([bob]);
    // The former owner is an admin now: cannot touch the new owner nor take ownership back.
    await expectTRPCError(as(owner).room.setRole({ roomId: room.id, userId: bob, role: 'member' }), 'FORBIDDEN');
    await expectTRPCError(as(owner).room.setRole({ roomId: room.id, userId: carol, role: 'owner' }), 'FORBIDDEN', /only the owner/);
    // Setting the role someone already has takes no seq.
    const before = (await as(bob).room.get({ roomId: room.id })).lastSeq;
    await as(bob).room.setRole({ roomId: room.id, userId: carol, role: 'member' });
    expect((await as(bob).room.get({ roomId: room.id })).lastSeq).toBe(before);
  });
});

describe('room.update', () => {
  it('renames (room.updated plus a system message) and changes the topic; only admins and the owner may', async () => {
    const [owner, admin, mod, bob] = users('owner', 'admin', 'mod', 'bob');
    const room = await groupRoom(owner, { [admin]: 'admin', [mod]: 'moderator', [bob]: 'member' }, 'Before');
    const start = (await as(bob).room.get({ roomId: room.id })).lastSeq;
    {
      await using stream = await openEvents(t.app, actor(bob), { roomId: room.id });
      expect((await stream.next()).event).toMatchObject({ type: 'ready', seq: start });

      const renamed = await as(admin).room.update({ roomId: room.id, name: '  After  ' });
      expect(renamed).toMatchObject({ id: room.id, name: 'After', topic: null, lastSeq: start + 2, myRole: 'admin' });
      const [updated, system] = await stream.take(2);
      expect(updated!.event).toEqual({ type: 'room.updated', roomId: room.id, seq: start + 1, name: 'After', topic: null, metadata: null, by: admin });
      expect(system!.event).toMatchObject({
        type: 'message.new',
        seq: start + 2,
        message: { kind: 'system', senderId: admin, body: `${admin} renamed the room to "After"`, seq: start + 2 },
      });

      // A topic change alone: room.updated, no system message.
      const topical = await as(owner).room.update({ roomId: room.id, topic: 'launch plans' });
      expect(topical).toMatchObject({ name: 'After', topic: 'launch plans', lastSeq: start + 3 });
      expect((await stream.next()).event).toEqual({
        type: 'room.updated', roomId: room.id, seq: start + 3, name: 'After', topic: 'launch plans', metadata: null, by: owner,
      });
      // Clearing the topic.
      expect(await as(owner).room.update({ roomId: room.id, topic: null })).toMatchObject({ topic: null, lastSeq: start + 4 });
      expect((await stream.next()).event).toMatchObject({ type: 'room.updated', seq: start + 4, topic: null });
    }

    const history = await as(bob).chat.history({ roomId: room.id });
    const systems = history.messages.filter((m) => m.kind === 'system' && m.body?.includes('renamed'));
    expect(systems.map((m) => m.body)).toEqual([`${admin} renamed the room to "After"`]);

    // An unchanged value takes no seq; nothing to change is BAD_REQUEST.
    expect(await as(owner).room.update({ roomId: room.id, name: 'After' })).toMatchObject({ lastSeq: start + 4 });
    await expectTRPCError(as(owner).room.update({ roomId: room.id }), 'BAD_REQUEST', /nothing to update/);
    await expectTRPCError(as(owner).room.update({ roomId: room.id, name: '   ' }), 'BAD_REQUEST', /name/);

    // A plain member and a moderator may not; outsiders get NOT_FOUND without the name.
    await expectTRPCError(as(bob).room.update({ roomId: room.id, name: 'Mine' }), 'FORBIDDEN', /member\) may not change the room/);
    await expectTRPCError(as(mod).room.update({ roomId: room.id, topic: 'x' }), 'FORBIDDEN');
    const err = await expectTRPCError(as(`${bob}-x`).room.update({ roomId: room.id, name: 'Mine' }), 'NOT_FOUND');
    expect(err.message).not.toContain('After');
    expect((await as(owner).room.get({ roomId: room.id })).name).toBe('After');
  });
});

describe('room.mute and room.unmute', () => {
  it('a member muted until unmuted cannot send (FORBIDDEN saying muted) but still reads; unmute restores sending', async () => {
    const [owner, mod, bob] = users('owner', 'mod', 'bob');
    const room = await groupRoom(owner, { [mod]: 'moderator', [bob]: 'member' });
    const before = await send(owner, room.id, 'before the mute');
    await using stream = await openEvents(t.app, actor(owner), { roomId: room.id });
    const ready = await stream.next();
    const muted = await as(mod).room.mute({ roomId: room.id, userId: bob });
    expect(muted.userId).toBe(bob);
    expect(muted.mutedUntil!.getTime()).toBeGreaterThan(Date.now() + 365 * 24 * 3600 * 1000);
    const ev = await stream.next();
    expect(ev.event).toMatchObject({ type: 'member.updated', seq: ready.event.type === 'ready' ? ready.event.seq + 1 : -1, userId: bob, role: 'member', by: mod });
    expect((ev.event as { mutedUntil: Date }).mutedUntil).toEqual(muted.mutedUntil);

    await expectTRPCError(send(bob, room.id), 'FORBIDDEN', /muted.*until unmuted/);
    await expectTRPCError(as(bob).chat.typing({ roomId: room.id, typing: true }), 'FORBIDDEN', /muted/);
    // Still a reader.
    expect((await as(bob).chat.history({ roomId: room.id })).messages.map((m) => m.id)).toContain(before.id);
    expect((await as(bob).room.get({ roomId: room.id })).myRole).toBe('member');
    expect((await as(owner).room.members({ roomId: room.id })).find((m) => m.userId === bob)?.mutedUntil).toEqual(muted.mutedUntil);

    const unmuted = await as(mod).room.unmute({ roomId: room.id, userId: bob });
    expect(unmuted).toMatchObject({ userId: bob, mutedUntil: null });
    expect((await stream.next()).event).toMatchObject({ type: 'member.updated', userId: bob, mutedUntil: null, by: mod });
    expect(await send(bob, room.id, 'back')).toMatchObject({ senderId: bob, body: 'back' });
  });

  it('a mute with `until` names the end and lapses by itself; an `until` in the past is BAD_REQUEST', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await groupRoom(owner, { [bob]: 'member' });
    const until = new Date(Date.now() + 60 * 60 * 1000);
    const muted = await as(owner).room.mute({ roomId: room.id, userId: bob, until });
    expect(muted.mutedUntil).toEqual(until);
    {
      await using stream = await openEvents(t.app, actor(owner), { roomId: room.id, lastEventId: String(room.lastSeq) });
      expect((await stream.next()).event).toMatchObject({ type: 'member.updated', userId: bob, mutedUntil: until, seq: room.lastSeq + 1 });
    }
    await expectTRPCError(send(bob, room.id), 'FORBIDDEN', new RegExp(`muted.*${until.toISOString().replace(/[.]/g, '\\.')}`));

    await expectTRPCError(as(owner).room.mute({ roomId: room.id, userId: bob, until: new Date(Date.now() - 1000) }), 'BAD_REQUEST', /future/);
    // Like every date of an input: up to 9999-12-31 (a JavaScript date goes on to the year 275760).
    await expectTRPCError(as(owner).room.mute({ roomId: room.id, userId: bob, until: new Date('+100000-01-01T00:00:00Z') }), 'BAD_REQUEST', /until must be between 1970-01-01 and 9999-12-31/);
    // The rejected mute did not change the existing one.
    expect((await as(owner).room.members({ roomId: room.id })).find((m) => m.userId === bob)?.mutedUntil).toEqual(until);

    // Once the end has passed (moved in the database instead of waiting), bob sends again.
    await setMutedUntil(t.env, room.id, bob, new Date(Date.now() - 1000));
    expect((await as(owner).room.members({ roomId: room.id })).find((m) => m.userId === bob)?.mutedUntil).toBeNull();
    expect(await send(bob, room.id, 'free')).toMatchObject({ body: 'free' });
  });

  it('needs moderator or better and to outrank the target; not on oneself; the target must be a member', async () => {
    const [owner, admin, mod, mod2, bob, eve] = users('owner', 'admin', 'mod', 'modtwo', 'bob', 'eve');
    const room = await groupRoom(owner, { [admin]: 'admin', [mod]: 'moderator', [mod2]: 'moderator', [bob]: 'member' });
    await expectTRPCError(as(bob).room.mute({ roomId: room.id, userId: mod }), 'FORBIDDEN', /mute members/);
    await expectTRPCError(as(mod).room.mute({ roomId: room.id, userId: mod2 }), 'FORBIDDEN', /moderator cannot mute members on a moderator/);
    await expectTRPCError(as(mod).room.mute({ roomId: room.id, userId: admin }), 'FORBIDDEN');
    await expectTRPCError(as(admin).room.mute({ roomId: room.id, userId: owner }), 'FORBIDDEN');
    await expectTRPCError(as(mod).room.mute({ roomId: room.id, userId: mod }), 'BAD_REQUEST', /yourself/);
    await expectTRPCError(as(mod).room.mute({ roomId: room.id, userId: eve }), 'NOT_FOUND', /member not found/);
    await expectTRPCError(as(eve).room.mute({ roomId: room.id, userId: bob }), 'NOT_FOUND', /room not found/);
    // A muted moderator cannot unmute themselves either.
    await as(admin).room.mute({ roomId: room.id, userId: mod });
    await expectTRPCError(as(mod).room.unmute({ roomId: room.id, userId: mod }), 'BAD_REQUEST', /yourself/);
    await expectTRPCError(send(mod, room.id), 'FORBIDDEN', /muted/);
    // The owner mutes an admin.
    expect((await as(owner).room.mute({ roomId: room.id, userId: admin })).mutedUntil).not.toBeNull();
  });
});

describe('room.ban, room.unban and room.bans', () => {
  it('removes the user, ends their live stream at once, hides the room, and keeps them out until unbanned', async () => {
    const [owner, mod, bob, carol] = users('owner', 'mod', 'bob', 'carol');
    const name = `Hideout ${kit.n}`;
    const room = await groupRoom(owner, { [mod]: 'moderator', [bob]: 'member' }, name);
    {
      await using bobStream = await openEvents(t.app, actor(bob), { roomId: room.id });
      await using ownerStream = await openEvents(t.app, actor(owner), { roomId: room.id });
      expect((await bobStream.next()).event).toMatchObject({ type: 'ready', seq: room.lastSeq + 1 });
      await ownerStream.next();
      expect(await as(mod).room.ban({ roomId: room.id, userId: bob })).toEqual({ ok: true });
      const seq = room.lastSeq + 2;
      expect((await ownerStream.next()).event).toEqual({ type: 'member.left', roomId: room.id, seq, userId: bob, reason: 'banned', by: mod });
      expect((await ownerStream.next()).event).toMatchObject({
        type: 'message.new',
        seq: seq + 1,
        message: { kind: 'system', body: `${mod} banned ${bob}` },
      });
      expect((await bobStream.next()).event).toMatchObject({ type: 'member.left', userId: bob, reason: 'banned' });
      expect(await bobStream.ended()).toBe(true);
    }

    // Bob sees nothing of the room any more.
    for (const call of [
      () => as(bob).room.get({ roomId: room.id }),
      () => as(bob).chat.history({ roomId: room.id }),
      () => send(bob, room.id),
      () => openEvents(t.app, actor(bob), { roomId: room.id }),
    ]) {
      const err = await expectTRPCError(call(), 'NOT_FOUND', /room not found/);
      expect(err.message).not.toContain(name);
    }
    expect((await as(bob).room.list()).map((r) => r.id)).not.toContain(room.id);

    const bans = await as(mod).room.bans({ roomId: room.id });
    expect(bans).toEqual([{ userId: bob, bannedBy: mod, createdAt: expect.any(Date) }]);
    await expectTRPCError(as(carol).room.bans({ roomId: room.id }), 'NOT_FOUND');

    // Cannot be re-added (the whole call fails, naming the user) until unbanned.
    await expectTRPCError(as(owner).room.addMembers({ roomId: room.id, userIds: [carol, bob] }), 'FORBIDDEN', new RegExp(`banned.*${bob}`));
    expect((await as(owner).room.members({ roomId: room.id })).map((m) => m.userId)).not.toContain(carol);

    expect(await as(mod).room.unban({ roomId: room.id, userId: bob })).toEqual({ unbanned: true });
    expect(await as(mod).room.unban({ roomId: room.id, userId: bob })).toEqual({ unbanned: false });
    expect(await as(owner).room.bans({ roomId: room.id })).toEqual([]);
    expect(await as(owner).room.addMembers({ roomId: room.id, userIds: [bob] })).toEqual({ added: [bob] });
    expect((await as(bob).room.get({ roomId: room.id })).myRole).toBe('member');
    expect(await send(bob, room.id, 'back again')).toMatchObject({ body: 'back again' });
  });

  it('can ban someone who is not a member yet; needs moderator and to outrank the target', async () => {
    const [owner, admin, mod, bob, dave] = users('owner', 'admin', 'mod', 'bob', 'dave');
    const room = await groupRoom(owner, { [admin]: 'admin', [mod]: 'moderator', [bob]: 'member' });
    const seq = (await as(owner).room.get({ roomId: room.id })).lastSeq;
    expect(await as(mod).room.ban({ roomId: room.id, userId: dave })).toEqual({ ok: true });
    // Nobody left the room: no event, no seq.
    expect((await as(owner).room.get({ roomId: room.id })).lastSeq).toBe(seq);
    expect((await as(owner).room.bans({ roomId: room.id })).map((b) => b.userId)).toEqual([dave]);
    await expectTRPCError(as(admin).room.addMembers({ roomId: room.id, userIds: [dave] }), 'FORBIDDEN', new RegExp(dave));

    await expectTRPCError(as(bob).room.ban({ roomId: room.id, userId: mod }), 'FORBIDDEN', /ban members/);
    await expectTRPCError(as(bob).room.unban({ roomId: room.id, userId: dave }), 'FORBIDDEN', /ban members/);
    await expectTRPCError(as(bob).room.bans({ roomId: room.id }), 'FORBIDDEN');
    await expectTRPCError(as(mod).room.ban({ roomId: room.id, userId: admin }), 'FORBIDDEN', /moderator cannot ban a admin/);
    await expectTRPCError(as(admin).room.ban({ roomId: room.id, userId: owner }), 'FORBIDDEN');
    await expectTRPCError(as(mod).room.ban({ roomId: room.id, userId: mod }), 'BAD_REQUEST', /yourself/);
    await expectTRPCError(as(owner, 'tenant-b').room.ban({ roomId: room.id, userId: bob }), 'NOT_FOUND');
    // Ban is idempotent.
    expect(await as(admin).room.ban({ roomId: room.id, userId: dave })).toEqual({ ok: true });
    expect(await as(owner).room.bans({ roomId: room.id })).toHaveLength(1);
  });
});

describe('room.byKey', () => {
  it('finds the rooms of an external key for members only, never across tenants; a duplicate key is CONFLICT', async () => {
    const [alice, bob, eve] = users('alice', 'bob', 'eve');
    const key = `order:${100 + kit.n}-${uuid().slice(0, 8)}`;
    // Keys are set by service and admin tokens (alice's admin token here; she is the same user).
    const room = await as(alice, 'default', ['admin']).room.create({ kind: 'group', name: 'Order room', key, memberIds: [bob] });
    expect(room.key).toBe(key);
    expect((await as(alice).room.byKey({ key })).map((r) => [r.id, r.key, r.myRole])).toEqual([[room.id, key, 'owner']]);
    expect((await as(bob).room.byKey({ key })).map((r) => r.id)).toEqual([room.id]);
    expect(await as(eve).room.byKey({ key })).toEqual([]);
    expect(await as(alice, 'tenant-b').room.byKey({ key })).toEqual([]);
    expect(await as(bob).room.byKey({ key: `${key}0` })).toEqual([]);

    await expectTRPCError(as(eve, 'default', ['admin']).room.create({ kind: 'support', name: 'again', key }), 'CONFLICT', new RegExp(key));
    // Only who may see every room of the tenant learns that a key is taken: anyone else is refused for
    // the key itself, before any lookup, with the same answer for a taken key and a free one.
    const taken = await expectTRPCError(as(eve).room.create({ kind: 'group', name: 'probe', key }), 'FORBIDDEN');
    const free = await expectTRPCError(as(eve).room.create({ kind: 'group', name: 'probe', key: `${key}-free` }), 'FORBIDDEN');
    expect(taken.message).toBe(free.message.replace(`${key}-free`, key));
    await expectTRPCError(as(eve).room.ensure({ kind: 'group', name: 'probe', key }), 'FORBIDDEN');
    // The same key in another tenant is another room, invisible here.
    const other = await as(eve, 'tenant-b', ['admin']).room.create({ kind: 'group', name: 'B', key });
    expect((await as(eve, 'tenant-b').room.byKey({ key })).map((r) => r.id)).toEqual([other.id]);
    expect((await as(alice).room.byKey({ key })).map((r) => r.id)).toEqual([room.id]);
    await expectTRPCError(as(alice).room.byKey({ key: 'has space' }), 'BAD_REQUEST', /key/);
  });
});

describe('support rooms', () => {
  it('every support agent of the tenant reads, subscribes and answers without being a member; nobody else', async () => {
    const [customer, agent, stranger, groupie] = users('customer', 'agent', 'stranger', 'groupie');
    const agentAs = (tenant = 'default') => as(agent, tenant, ['support']);
    const key = `ticket:${uuid()}`;
    // Keys are set by service and admin tokens: the product's backend opens the room for the customer.
    const room = await as(customer, 'default', ['admin']).room.create({ kind: 'support', name: 'My order is late', key });
    const question = await send(customer, room.id, 'where is my order?');

    // Reads history, sees the room (as a member: agents read and answer, they do not moderate) in get, list and byKey.
    expect((await agentAs().chat.history({ roomId: room.id })).messages.map((m) => m.id)).toContain(question.id);
    expect(await agentAs().room.get({ roomId: room.id })).toMatchObject({ id: room.id, myRole: 'member', memberCount: 1 });
    const listed = (await agentAs().room.list()).find((r) => r.id === room.id);
    expect(listed).toMatchObject({ kind: 'support', myRole: 'member', unreadCount: 0 });
    expect((await agentAs().room.byKey({ key })).map((r) => r.id)).toEqual([room.id]);

    // Subscribes and answers; the customer's stream gets the answer.
    {
      await using agentStream = await openEvents(t.app, actor(agent, 'default', ['support']), { roomId: room.id });
      await using customerStream = await openEvents(t.app, actor(customer), { roomId: room.id });
      await agentStream.next();
      await customerStream.next();
      const answer = await agentAs().chat.send({ roomId: room.id, clientId: uuid(), body: 'on its way' });
      expect(answer).toMatchObject({ senderId: agent, body: 'on its way' });
      expect((await customerStream.next()).event).toMatchObject({ type: 'message.new', message: { id: answer.id } });
      expect((await agentStream.next()).event).toMatchObject({ type: 'message.new', message: { id: answer.id } });
    }
    // Still not a member.
    expect((await as(customer).room.members({ roomId: room.id })).map((m) => m.userId)).toEqual([customer]);

    // A support agent of another tenant and a normal non-member get NOT_FOUND.
    for (const outsider of [agentAs('tenant-b'), as(stranger)]) {
      await expectTRPCError(outsider.room.get({ roomId: room.id }), 'NOT_FOUND', /room not found/);
      await expectTRPCError(outsider.chat.history({ roomId: room.id }), 'NOT_FOUND');
      await expectTRPCError(outsider.chat.send({ roomId: room.id, clientId: uuid(), body: 'x' }), 'NOT_FOUND');
      expect(await outsider.room.byKey({ key })).toEqual([]);
      expect((await outsider.room.list()).map((r) => r.id)).not.toContain(room.id);
    }
    await expectTRPCError(openEvents(t.app, actor(agent, 'tenant-b', ['support']), { roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(openEvents(t.app, actor(stranger), { roomId: room.id }), 'NOT_FOUND');

    // The support role opens support rooms only, not other rooms of the tenant.
    const group = await as(groupie).room.create({ kind: 'group', name: 'private group' });
    await expectTRPCError(agentAs().room.get({ roomId: group.id }), 'NOT_FOUND');
    await expectTRPCError(agentAs().chat.history({ roomId: group.id }), 'NOT_FOUND');
    await expectTRPCError(agentAs().chat.send({ roomId: group.id, clientId: uuid(), body: 'x' }), 'NOT_FOUND');
    expect((await agentAs().room.list()).map((r) => r.id)).not.toContain(group.id);
  });

  it('banning a support agent (not a member) ends their open stream at once and shuts them out', async () => {
    const [customer, agent] = users('customer', 'agent');
    const agentActor = actor(agent, 'default', ['support']);
    const room = await as(customer).room.create({ kind: 'support', name: 'Refund' });
    {
      await using agentStream = await openEvents(t.app, agentActor, { roomId: room.id });
      expect((await agentStream.next()).event).toMatchObject({ type: 'ready' });
      expect(await as(customer).room.ban({ roomId: room.id, userId: agent })).toEqual({ ok: true });
      expect((await agentStream.next()).event).toMatchObject({ type: 'member.left', userId: agent, reason: 'banned', by: customer });
      expect(await agentStream.ended()).toBe(true);
    }
    await expectTRPCError(as(agent, 'default', ['support']).chat.history({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(openEvents(t.app, agentActor, { roomId: room.id }), 'NOT_FOUND');
    // Banning again changes nothing and writes no second event.
    const { lastSeq } = await as(customer).room.get({ roomId: room.id });
    await as(customer).room.ban({ roomId: room.id, userId: agent });
    expect((await as(customer).room.get({ roomId: room.id })).lastSeq).toBe(lastSeq);
  });
});

describe('streams and bans', () => {
  it('a ban that commits while a subscription starts leaves no live stream (access is checked again once attached)', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(owner).room.create({ kind: 'group', name: 'starting', memberIds: [bob] });
    const access = t.app.services.access;
    const original = access.requireAccess.bind(access);
    let banned = false;
    // The ban lands right after the subscription's first access check, before it joins the room's hub.
    const spy = vi.spyOn(access, 'requireAccess').mockImplementation(async (a, roomId, purpose, em) => {
      const r = await original(a, roomId, purpose, em);
      if (!banned && a.id === bob && roomId === room.id && purpose === 'read') {
        banned = true;
        await as(owner).room.ban({ roomId: room.id, userId: bob });
      }
      return r;
    });
    try {
      await using events = await openEvents(t.app, actor(bob), { roomId: room.id });
      // (Errors inside a stream reach createCaller as the service's error; on the wire they are typed.)
      await expect(events.next()).rejects.toMatchObject({ code: 'NOT_FOUND', message: 'room not found' });
    } finally {
      spy.mockRestore();
    }
    expect(banned).toBe(true);
  });

  it("a resume that replays the user's own member.left ends there; resuming after it goes on (re-added)", async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(owner).room.create({ kind: 'group', name: 'replayed', memberIds: [bob] });
    const before = (await as(owner).room.get({ roomId: room.id })).lastSeq;
    await as(owner).room.removeMember({ roomId: room.id, userId: bob });
    await as(owner).room.addMembers({ roomId: room.id, userIds: [bob] });
    const after = (await as(owner).room.get({ roomId: room.id })).lastSeq;
    {
      await using replay = await openEvents(t.app, actor(bob), { roomId: room.id, lastEventId: String(before) });
      const left = await replay.next();
      expect(left.event).toMatchObject({ type: 'member.left', userId: bob });
      expect(await replay.ended()).toBe(true);
      await using resumed = await openEvents(t.app, actor(bob), { roomId: room.id, lastEventId: left.id });
      const rest = await resumed.take(after - Number(left.id));
      expect(rest.map((x) => Number(x.id))).toEqual(Array.from({ length: after - Number(left.id) }, (_, i) => Number(left.id) + i + 1));
      expect(rest.map((x) => x.event)).toContainEqual(expect.objectContaining({ type: 'member.joined', userId: bob }));
    }
  });
});

describe('a banned support agent', () => {
  /**
   * Every read procedure, by what it is given: those given a room or a message must answer NOT_FOUND
   * for the banned agent, those that list must leave the room out. A read procedure added to the
   * router without a line here fails the first assertion.
   */
  const ROOM_READS = ['room.get', 'room.members', 'room.bans', 'chat.history', 'receipt.readers', 'video.list', 'chat.events'];
  const MESSAGE_READS = ['chat.edits', 'chat.thread'];
  const FILE_READS = ['file.get'];
  const LISTS = ['room.list', 'room.byKey', 'room.directory', 'chat.search', 'receipt.unread', 'notify.preferences'];
  const NOT_ROOM_CONTENT = ['auth.me', 'presence.get', 'inbox.events', 'video.get', 'webhook.list', 'webhook.deliveries', 'device.list', 'device.vapidKey', 'signal.config', 'video.config'];
  /** Tenant admins only: FORBIDDEN for an agent before anything is read. */
  const ADMIN_ONLY = ['admin.audit', 'admin.exportRoom', 'admin.exportUser'];

  it('reads nothing of the room through any procedure: NOT_FOUND, or left out of every list', async () => {
    const reads = Object.entries(appRouter._def.procedures as unknown as Record<string, { _def: { type: string } }>)
      .filter(([, p]) => p._def.type !== 'mutation')
      .map(([path]) => path)
      .sort();
    expect(reads).toEqual([...ROOM_READS, ...MESSAGE_READS, ...FILE_READS, ...LISTS, ...NOT_ROOM_CONTENT, ...ADMIN_ONLY].sort());

    const [customer, agent] = users('customer', 'agent');
    const key = `ticket:${uuid()}`;
    const room = await as(customer, 'default', ['admin']).room.create({ kind: 'support', name: 'Banned agent', key });
    // A file in the room: uploaded (through the server's own endpoint), then sent.
    const bytes = Buffer.from('invoice 4711: 1,200 EUR');
    const ticket = await as(customer).file.createUpload({ roomId: room.id, name: 'invoice.txt', size: bytes.length, mime: 'text/plain' });
    const put = await fetch(new URL(ticket.uploadUrl, t.url), { method: 'PUT', headers: ticket.headers, body: bytes });
    expect(put.status).toBe(200);
    const m = await as(customer).chat.send({ roomId: room.id, clientId: uuid(), body: 'secret order details', attachments: [{ fileId: ticket.fileId }] });
    const agentAs = () => as(agent, 'default', ['support']);
    // Before the ban the agent reads it (the list shows the newest message, the file is theirs to get).
    expect((await agentAs().room.list()).find((r) => r.id === room.id)?.lastMessage?.body).toBe('secret order details');
    expect((await agentAs().file.get({ fileId: ticket.fileId })).name).toBe('invoice.txt');
    await as(customer).room.ban({ roomId: room.id, userId: agent });

    const a = agentAs();
    await expectTRPCError(a.room.get({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(a.room.members({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(a.room.bans({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(a.chat.history({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(a.receipt.readers({ roomId: room.id, seq: m.seq }), 'NOT_FOUND');
    await expectTRPCError(a.video.list({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(openEvents(t.app, actor(agent, 'default', ['support']), { roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(a.chat.edits({ messageId: m.id }), 'NOT_FOUND');
    await expectTRPCError(a.chat.thread({ messageId: m.id }), 'NOT_FOUND');
    await expectTRPCError(a.file.get({ fileId: ticket.fileId }), 'NOT_FOUND');
    await expectTRPCError(a.admin.exportRoom({ roomId: room.id }), 'FORBIDDEN');
    await expectTRPCError(a.admin.exportUser({ userId: customer }), 'FORBIDDEN');
    await expectTRPCError(a.admin.audit({ roomId: room.id }), 'FORBIDDEN');
    expect((await a.room.list()).map((r) => r.id)).not.toContain(room.id);
    expect((await a.room.list({ archived: true })).map((r) => r.id)).not.toContain(room.id);
    expect(await a.room.byKey({ key })).toEqual([]);
    expect((await a.room.directory({})).map((r) => r.id)).not.toContain(room.id);
    expect((await a.chat.search({ query: 'secret order' })).hits.map((h) => h.roomId)).not.toContain(room.id);
    expect((await a.receipt.unread()).map((u) => u.roomId)).not.toContain(room.id);
    expect((await a.notify.preferences()).rooms.map((r) => r.roomId)).not.toContain(room.id);
    // Another agent, not banned, still sees it.
    const [other] = users('other-agent');
    expect((await as(other, 'default', ['support']).room.list()).map((r) => r.id)).toContain(room.id);
  });
});

describe('broadcast rooms', () => {
  it('members read; only admins and the owner post', async () => {
    const [owner, admin, mod, bob] = users('owner', 'admin', 'mod', 'bob');
    const room = await as(owner).room.create({ kind: 'broadcast', name: 'News', memberIds: [admin, mod, bob] });
    await as(owner).room.setRole({ roomId: room.id, userId: admin, role: 'admin' });
    await as(owner).room.setRole({ roomId: room.id, userId: mod, role: 'moderator' });

    const a = await send(owner, room.id, 'from the owner');
    const b = await send(admin, room.id, 'from an admin');
    await expectTRPCError(send(mod, room.id), 'FORBIDDEN', /only admins and the owner may post in a broadcast room/);
    await expectTRPCError(send(bob, room.id), 'FORBIDDEN', /only admins and the owner/);
    for (const reader of [bob, mod]) {
      const ids = (await as(reader).chat.history({ roomId: room.id })).messages.map((m) => m.id);
      expect(ids).toEqual(expect.arrayContaining([a.id, b.id]));
    }
    await using stream = await openEvents(t.app, actor(bob), { roomId: room.id });
    await stream.next();
    const c = await send(admin, room.id, 'live');
    expect((await stream.next()).event).toMatchObject({ type: 'message.new', message: { id: c.id } });
  });

  it('a demoted admin can no longer edit their old posts (posting rights count for edits too)', async () => {
    const [owner, admin] = users('owner', 'admin');
    const room = await as(owner).room.create({ kind: 'broadcast', name: 'Announcements', memberIds: [admin] });
    await as(owner).room.setRole({ roomId: room.id, userId: admin, role: 'admin' });
    const post = await send(admin, room.id, 'the plan');
    expect((await as(admin).chat.edit({ messageId: post.id, body: 'the plan, v2' })).body).toBe('the plan, v2');
    await as(owner).room.setRole({ roomId: room.id, userId: admin, role: 'member' });
    await expectTRPCError(as(admin).chat.edit({ messageId: post.id, body: 'my own plan' }), 'FORBIDDEN', /only admins and the owner may post in a broadcast room/);
    expect((await as(owner).chat.history({ roomId: room.id })).messages.find((m) => m.id === post.id)?.body).toBe('the plan, v2');
  });

  it('a member who may not post may not show "is typing" to the readers either; an admin may', async () => {
    const [owner, admin, bob] = users('owner', 'admin', 'bob');
    const room = await as(owner).room.create({ kind: 'broadcast', name: 'Bulletin', memberIds: [admin, bob] });
    await as(owner).room.setRole({ roomId: room.id, userId: admin, role: 'admin' });
    await expectTRPCError(as(bob).chat.typing({ roomId: room.id, typing: true }), 'FORBIDDEN', /only admins and the owner may post in a broadcast room/);
    expect(await as(admin).chat.typing({ roomId: room.id, typing: true })).toEqual({ forwarded: true });
  });
});

describe('service tokens', () => {
  it('post into any room of their tenant without membership, idempotently, but read nothing and reach no other tenant', async () => {
    const [owner, bob, svc] = users('owner', 'bob', 'erp');
    const service = (tenant = 'default') => as(svc, tenant, ['service']);
    const room = await as(owner).room.create({ kind: 'group', name: 'Order 7', memberIds: [bob] });
    const news = await as(owner).room.create({ kind: 'broadcast', name: 'Status', memberIds: [bob] });
    {
      await using stream = await openEvents(t.app, actor(bob), { roomId: room.id });
      await stream.next();
      const clientId = uuid();
      const msg = await service().chat.send({ roomId: room.id, clientId, body: 'order 7 shipped' });
      expect(msg).toMatchObject({ roomId: room.id, senderId: svc, body: 'order 7 shipped', kind: 'text' });
      expect((await stream.next()).event).toMatchObject({ type: 'message.new', message: { id: msg.id, senderId: svc } });
      // A retry with the same clientId (the ERP's HTTP call timed out) returns the original.
      expect(await service().chat.send({ roomId: room.id, clientId, body: 'order 7 shipped' })).toMatchObject({ id: msg.id, seq: msg.seq });
    }
    expect(await service().chat.send({ roomId: news.id, clientId: uuid(), body: 'maintenance tonight' })).toMatchObject({ senderId: svc });
    // Not a member, so no reading.
    await expectTRPCError(service().chat.history({ roomId: room.id }), 'NOT_FOUND', /room not found/);
    await expectTRPCError(service().room.get({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(service().room.members({ roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(openEvents(t.app, actor(svc, 'default', ['service']), { roomId: room.id }), 'NOT_FOUND');
    expect((await as(owner).room.members({ roomId: room.id })).map((m) => m.userId).sort()).toEqual([bob, owner].sort());
    // Another tenant's room does not exist for it.
    const err = await expectTRPCError(
      service('tenant-b').chat.send({ roomId: room.id, clientId: uuid(), body: 'x' }),
      'NOT_FOUND',
      /room not found/,
    );
    expect(err.message).not.toContain('Order 7');
    // A normal user cannot post into a room they do not belong to.
    await expectTRPCError(send(`${svc}-human`, room.id), 'NOT_FOUND');
  });

  it('inbox.notify reaches the user’s inbox from a service token and is FORBIDDEN for a normal user', async () => {
    const [bob, svc, eve] = users('bob', 'erp', 'eve');
    const item = await as(svc, 'default', ['service']).inbox.notify({ userId: bob, kind: 'order.shipped', title: 'Shipped', data: { order: 7 } });
    expect(item).toMatchObject({ type: 'notification', kind: 'order.shipped', title: 'Shipped', data: { order: 7 }, from: svc });
    {
      await using inbox = await openInbox(t.app, actor(bob), { lastEventId: '0' });
      expect((await inbox.nextItem()).event).toMatchObject({ type: 'notification', kind: 'order.shipped', title: 'Shipped', from: svc });
    }
    await expectTRPCError(as(eve).inbox.notify({ userId: bob, kind: 'spam', title: 'Buy' }), 'FORBIDDEN', /service/);
    await expectTRPCError(as(eve, 'default', ['support']).inbox.notify({ userId: bob, kind: 'spam', title: 'Buy' }), 'FORBIDDEN');
  });
});

describe('direct rooms', () => {
  it('have exactly two members and refuse membership, role and room changes', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const dm = await as(alice).room.openDirect({ userId: bob });
    expect(dm).toMatchObject({ kind: 'direct', memberCount: 2 });
    expect((await as(bob).room.members({ roomId: dm.id })).map((m) => m.role)).toEqual(['member', 'member']);
    const r = { roomId: dm.id };
    await expectTRPCError(as(alice).room.addMembers({ ...r, userIds: [carol] }), 'FORBIDDEN', /direct room/);
    await expectTRPCError(as(alice).room.setRole({ ...r, userId: bob, role: 'admin' }), 'FORBIDDEN', /direct room/);
    await expectTRPCError(as(alice).room.update({ ...r, name: 'ours' }), 'FORBIDDEN', /direct room/);
    await expectTRPCError(as(alice).room.removeMember({ ...r, userId: bob }), 'FORBIDDEN');
    await expectTRPCError(as(alice).room.mute({ ...r, userId: bob }), 'FORBIDDEN');
    await expectTRPCError(as(alice).room.ban({ ...r, userId: bob }), 'FORBIDDEN');
    const m = await send(bob, dm.id, 'mine');
    await expectTRPCError(as(alice).chat.delete({ messageId: m.id }), 'FORBIDDEN');
    await expectTRPCError(as(carol).room.get(r), 'NOT_FOUND');
    expect(await as(alice).room.members(r)).toHaveLength(2);
    expect(await send(alice, dm.id, 'both post')).toMatchObject({ senderId: alice });
  });
});
