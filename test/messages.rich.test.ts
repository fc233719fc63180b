/**
 * Rich messages (issue 3, section "Messages") through createCaller against a real app on its own
 * database and Redis prefix: edits, soft deletes, reactions, threads, mentions, kinds and
 * attachments, full-text search and encryption at rest.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_EDITS_PER_MESSAGE } from '../src/services/messages/change.js';
import { commitWhileBlocked } from './fixture/locks.js';
import {
  actor,
  callerFor,
  dispose,
  expectTRPCError,
  fileServer,
  Keyring,
  openEvents,
  openInbox,
  openLive,
  roomKit,
  testEnv,
  uuid,
  type MessageDto,
  type RoomEvent,
  type TestEnv,
  type TestServer,
} from './fixture.js';

const t = fileServer('rich');

const kit = roomKit(() => t);
const { users, as, groupRoom, allMessages } = kit;

const send = (who: string, roomId: string, body: string, over: Record<string, unknown> = {}) =>
  as(who).chat.send({ roomId, clientId: uuid(), body, ...over });

async function messageAs(who: string, roomId: string, id: string): Promise<MessageDto> {
  const m = (await allMessages(who, roomId)).find((x) => x.id === id);
  if (!m) throw new Error(`message ${id} not in history`);
  return m;
}

const lastSeq = async (who: string, roomId: string) => (await as(who).room.get({ roomId })).lastSeq;

/** A unique lowercase word (the search index uses the 'simple' configuration). */
const word = (prefix: string) =>
  prefix +
  Array.from(randomBytes(8))
    .map((b) => String.fromCharCode(97 + (b % 26)))
    .join('');

const typed = <T extends RoomEvent['type']>(e: RoomEvent, type: T) => {
  expect(e.type).toBe(type);
  return e as Extract<RoomEvent, { type: T }>;
};

describe('chat.edit', () => {
  it('only the author may edit: other members and even the owner get FORBIDDEN, outsiders NOT_FOUND', async () => {
    const [alice, bob, carol, eve] = users('alice', 'bob', 'carol', 'eve');
    const room = await groupRoom(alice!, [bob!, carol!]);
    const m = await send(bob!, room.id, 'v1');
    const before = await lastSeq(alice!, room.id);
    await expectTRPCError(as(alice!).chat.edit({ messageId: m.id, body: 'owner edit' }), 'FORBIDDEN', /author/);
    await expectTRPCError(as(carol!).chat.edit({ messageId: m.id, body: 'member edit' }), 'FORBIDDEN', /author/);
    await expectTRPCError(as(eve!).chat.edit({ messageId: m.id, body: 'outsider' }), 'NOT_FOUND');
    await expectTRPCError(as(bob!, 'tenant-b').chat.edit({ messageId: m.id, body: 'other tenant' }), 'NOT_FOUND');
    await expectTRPCError(as(bob!).chat.edit({ messageId: m.id, body: '  ' }), 'BAD_REQUEST', /body/);
    await expectTRPCError(as(bob!).chat.edit({ messageId: uuid(), body: 'x' }), 'NOT_FOUND');
    expect(await lastSeq(alice!, room.id)).toBe(before);
    const stored = await messageAs(carol!, room.id, m.id);
    expect(stored).toMatchObject({ body: 'v1', editedAt: null });
    expect(await as(carol!).chat.edits({ messageId: m.id })).toEqual([]);
  });

  it('keeps the history (oldest first, with editor) and emits message.edited with the next seq', async () => {
    const [alice, bob, eve] = users('alice', 'bob', 'eve');
    const room = await groupRoom(alice!, [bob!]);
    await using s = await openLive(t.app, alice!, room.id);
    const m = await send(bob!, room.id, 'v1');
    const e2 = await as(bob!).chat.edit({ messageId: m.id, body: 'v2' });
    expect(e2).toMatchObject({ id: m.id, seq: m.seq, body: 'v2', senderId: bob });
    expect(e2.editedAt).toBeInstanceOf(Date);
    const e3 = await as(bob!).chat.edit({ messageId: m.id, body: 'v3' });
    expect(e3).toMatchObject({ id: m.id, seq: m.seq, body: 'v3' });

    const events = await s.take(3);
    expect(events.map((e) => e.id)).toEqual([String(m.seq), String(m.seq + 1), String(m.seq + 2)]);
    expect(typed(events[0]!.event, 'message.new').message.body).toBe('v1');
    const ed1 = typed(events[1]!.event, 'message.edited');
    expect(ed1).toMatchObject({ roomId: room.id, seq: m.seq + 1, message: { id: m.id, seq: m.seq, body: 'v2' } });
    expect(ed1.message.editedAt).toBeInstanceOf(Date);
    expect(typed(events[2]!.event, 'message.edited')).toMatchObject({ seq: m.seq + 2, message: { id: m.id, body: 'v3' } });
    expect(await lastSeq(alice!, room.id)).toBe(m.seq + 2);

    // Any member reads the history; the previous versions, oldest first.
    const edits = await as(alice!).chat.edits({ messageId: m.id });
    expect(edits.map((x) => ({ body: x.body, editorId: x.editorId }))).toEqual([
      { body: 'v1', editorId: bob },
      { body: 'v2', editorId: bob },
    ]);
    expect(edits[0]!.replacedAt).toBeInstanceOf(Date);
    expect(edits[0]!.replacedAt.getTime()).toBeLessThanOrEqual(edits[1]!.replacedAt.getTime());
    await expectTRPCError(as(eve!).chat.edits({ messageId: m.id }), 'NOT_FOUND');

    const stored = await messageAs(alice!, room.id, m.id);
    expect(stored).toMatchObject({ seq: m.seq, body: 'v3' });
    expect(stored.editedAt).toBeInstanceOf(Date);
  });

  it(`a message keeps at most ${MAX_EDITS_PER_MESSAGE} earlier versions: the edit after that is refused with BAD_REQUEST and changes nothing`, async () => {
    const [bob, alice] = users('bob', 'alice');
    const room = await groupRoom(bob!, [alice!]);
    const m = await send(bob!, room.id, 'v0');
    // All but the last allowed version written directly (the action rate limit would make this slow).
    await t.env.sql(
      `insert into message_edit (id, message_id, body, key_id, editor_id, replaced_at)
       select gen_random_uuid(), $1, 'old ' || g, null, $2, now() - make_interval(secs => 1000 - g) from generate_series(1, $3::int) g`,
      [m.id, bob, MAX_EDITS_PER_MESSAGE - 1],
    );
    const last = await as(bob!).chat.edit({ messageId: m.id, body: 'last allowed' });
    expect(last.body).toBe('last allowed');
    const seq = await lastSeq(alice!, room.id);
    await expectTRPCError(as(bob!).chat.edit({ messageId: m.id, body: 'one too many' }), 'BAD_REQUEST', `at most ${MAX_EDITS_PER_MESSAGE} times`);
    // Nothing changed: the body, the history, the room's seq.
    expect((await messageAs(alice!, room.id, m.id)).body).toBe('last allowed');
    expect(await lastSeq(alice!, room.id)).toBe(seq);
    const versions = await as(alice!).chat.edits({ messageId: m.id, limit: 1000 });
    expect(versions).toHaveLength(MAX_EDITS_PER_MESSAGE);
    expect(versions.at(-1)!.body).toBe('v0');
    // A no-op edit (the same body) is still answered, and deleting still works.
    expect((await as(bob!).chat.edit({ messageId: m.id, body: 'last allowed' })).body).toBe('last allowed');
    expect((await as(bob!).chat.delete({ messageId: m.id })).deletedAt).toBeInstanceOf(Date);
  });

  it('an edit that waited for another edit of the message keeps its version after that one (the history is in commit order)', async () => {
    const [bob] = users('bob');
    const room = await groupRoom(bob!, []);
    const m = await send(bob!, room.id, 'first');
    // Another edit holds the message's row; ours starts (its transaction begins) and waits for it;
    // only then does the other one write its version ('first' replaced) and commit.
    const r = await commitWhileBlocked(
      t.env.databaseUrl,
      [['select id from message where id = $1 for update', [m.id]]],
      () => as(bob!).chat.edit({ messageId: m.id, body: 'third' }),
      [
        [
          `insert into message_edit (id, message_id, body, key_id, editor_id, replaced_at)
           values (gen_random_uuid(), $1, 'first', null, $2, clock_timestamp())`,
          [m.id, bob],
        ],
        ["update message set body = 'second', edited_at = clock_timestamp() where id = $1", [m.id]],
      ],
    );
    expect(r.status).toBe('fulfilled');
    const edits = await as(bob!).chat.edits({ messageId: m.id });
    expect(edits.map((x) => x.body)).toEqual(['first', 'second']);
    expect((await messageAs(bob!, room.id, m.id)).body).toBe('third');
  });

  it('a no-op edit (same body) takes no seq, keeps no history and emits nothing', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const m = await send(bob!, room.id, 'same');
    await using s = await openLive(t.app, alice!, room.id);
    const r = await as(bob!).chat.edit({ messageId: m.id, body: 'same' });
    expect(r).toMatchObject({ id: m.id, body: 'same', editedAt: null });
    expect(await lastSeq(alice!, room.id)).toBe(m.seq);
    expect(await as(bob!).chat.edits({ messageId: m.id })).toEqual([]);
    // The next event the stream sees is the marker, not an edit.
    const marker = await send(alice!, room.id, 'marker');
    const next = await s.next();
    expect(next.id).toBe(String(m.seq + 1));
    expect(typed(next.event, 'message.new').message.id).toBe(marker.id);
  });

  it('a deleted or a system message cannot be edited', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!]);
    const m = await send(bob!, room.id, 'to delete');
    await as(bob!).chat.delete({ messageId: m.id });
    await expectTRPCError(as(bob!).chat.edit({ messageId: m.id, body: 'resurrect' }), 'BAD_REQUEST', /deleted/);

    // The server writes a system message (sender: the actor) when alice adds carol.
    await as(alice!).room.addMembers({ roomId: room.id, userIds: [carol!] });
    const system = (await allMessages(alice!, room.id)).find((x) => x.kind === 'system')!;
    expect(system).toMatchObject({ senderId: alice, kind: 'system' });
    const before = await lastSeq(alice!, room.id);
    await expectTRPCError(as(alice!).chat.edit({ messageId: system.id, body: 'rewritten' }), 'FORBIDDEN', /system/);
    expect(await lastSeq(alice!, room.id)).toBe(before);
    expect((await messageAs(alice!, room.id, system.id)).body).toBe(system.body);
    expect((await messageAs(alice!, room.id, m.id)).body).toBeNull();
  });
});

describe('chat.delete', () => {
  it('the author and a moderator, admin or owner may delete; a plain member may not', async () => {
    const [alice, bob, carol, dave] = users('alice', 'bob', 'carol', 'dave');
    const room = await groupRoom(alice!, [bob!, carol!, dave!]);
    const [m1, m2, m3, m4] = [
      await send(bob!, room.id, 'one'),
      await send(bob!, room.id, 'two'),
      await send(bob!, room.id, 'three'),
      await send(bob!, room.id, 'four'),
    ];
    const ownerMsg = await send(alice!, room.id, "owner's");

    const before = await lastSeq(alice!, room.id);
    await expectTRPCError(as(carol!).chat.delete({ messageId: m1!.id }), 'FORBIDDEN');
    await expectTRPCError(as(dave!).chat.delete({ messageId: ownerMsg.id }), 'FORBIDDEN');
    expect(await lastSeq(alice!, room.id)).toBe(before);
    expect((await messageAs(alice!, room.id, m1!.id)).body).toBe('one');

    const byAuthor = await as(bob!).chat.delete({ messageId: m1!.id });
    expect(byAuthor).toMatchObject({ id: m1!.id, seq: m1!.seq, body: null });
    expect(byAuthor.deletedAt).toBeInstanceOf(Date);
    expect((await as(alice!).chat.delete({ messageId: m2!.id })).deletedAt).toBeInstanceOf(Date); // owner

    await as(alice!).room.setRole({ roomId: room.id, userId: carol!, role: 'moderator' });
    await as(alice!).room.setRole({ roomId: room.id, userId: dave!, role: 'admin' });
    expect((await as(carol!).chat.delete({ messageId: m3!.id })).deletedAt).toBeInstanceOf(Date); // moderator
    expect((await as(dave!).chat.delete({ messageId: m4!.id })).deletedAt).toBeInstanceOf(Date); // admin
    // A moderator deletes even the owner's message (the permission is "delete others' messages").
    expect((await as(carol!).chat.delete({ messageId: ownerMsg.id })).deletedAt).toBeInstanceOf(Date);

    const all = await allMessages(bob!, room.id);
    for (const m of [m1!, m2!, m3!, m4!, ownerMsg]) {
      expect(all.find((x) => x.id === m.id)).toMatchObject({ seq: m.seq, body: null });
    }
    // Who deleted is kept for audit.
    const audit = await t.env.sql('select id, deleted_by from message where id = any($1::uuid[]) order by seq', [
      [m1!.id, m2!.id, m3!.id, m4!.id, ownerMsg.id],
    ]);
    expect(audit.map((r) => r.deleted_by)).toEqual([bob, alice, carol, dave, carol]);
  });

  it('is a soft delete: the seq stays, the body is gone from history, replay, edits and search; twice emits once', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const w = word('zebra');
    const seen = await lastSeq(alice!, room.id);
    {
      await using s = await openLive(t.app, bob!, room.id);
      const m = await send(alice!, room.id, `first ${w}`, {
        kind: 'file',
        attachments: [{ url: 'https://example.com/f.pdf', name: 'f.pdf', size: 3, mime: 'application/pdf' }],
      });
      await as(alice!).chat.edit({ messageId: m.id, body: `second ${w}` });
      await as(bob!).chat.react({ messageId: m.id, emoji: '👍' });
      expect((await as(alice!).chat.search({ query: w, roomId: room.id })).hits.map((h) => h.message.id)).toEqual([m.id]);

      const del = await as(alice!).chat.delete({ messageId: m.id });
      expect(del).toMatchObject({ id: m.id, seq: m.seq, body: null, attachments: [], reactions: [] });
      const seqAfterDelete = await lastSeq(alice!, room.id);
      expect(seqAfterDelete).toBe(m.seq + 3);

      // Deleting again: same answer, no seq, no event.
      const again = await as(alice!).chat.delete({ messageId: m.id });
      expect(again).toMatchObject({ id: m.id, seq: m.seq, body: null });
      expect(again.deletedAt!.getTime()).toBe(del.deletedAt!.getTime());
      expect(await lastSeq(alice!, room.id)).toBe(seqAfterDelete);

      const events = await s.take(4);
      expect(events.map((e) => e.event.type)).toEqual(['message.new', 'message.edited', 'reaction.added', 'message.deleted']);
      const deleted = typed(events[3]!.event, 'message.deleted');
      expect(deleted).toMatchObject({ seq: m.seq + 3, message: { id: m.id, seq: m.seq, body: null, attachments: [], reactions: [] } });
      expect(deleted.message.deletedAt).toBeInstanceOf(Date);
      const marker = await send(bob!, room.id, 'marker');
      const next = await s.next();
      expect(typed(next.event, 'message.new').message.id).toBe(marker.id);
      expect(next.id).toBe(String(seqAfterDelete + 1));
    }

    const [m] = (await allMessages(bob!, room.id)).filter((x) => x.seq === seen + 1);
    expect(m).toMatchObject({ seq: seen + 1, body: null, kind: 'file', attachments: [], reactions: [], mentions: [] });
    expect(m!.deletedAt).toBeInstanceOf(Date);

    // Replay from before the message: every event about it shows no body.
    {
      await using r = await openEvents(t.app, actor(bob!), { roomId: room.id, lastEventId: String(seen) });
      const replay = await r.take(4);
      expect(replay.map((e) => e.id)).toEqual([seen + 1, seen + 2, seen + 3, seen + 4].map(String));
      const replayedNew = typed(replay[0]!.event, 'message.new');
      expect(replayedNew.message).toMatchObject({ id: m!.id, body: null, attachments: [] });
      expect(typed(replay[1]!.event, 'message.edited').message.body).toBeNull();
      expect(typed(replay[3]!.event, 'message.deleted').message.body).toBeNull();
      expect(JSON.stringify(replay)).not.toContain(w);
    }

    expect(await as(alice!).chat.edits({ messageId: m!.id })).toEqual([]);
    expect(await as(alice!).chat.search({ query: w })).toMatchObject({ hits: [] });
    expect(await as(alice!).chat.search({ query: `first ${w}` })).toMatchObject({ hits: [] });
    await expectTRPCError(as(bob!).chat.react({ messageId: m!.id, emoji: '👍' }), 'BAD_REQUEST', /deleted/);
  });

  it('leaves no trace of the body in the inbox: a replayed mention of a deleted message has no excerpt', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const w = word('secret');
    await using inbox = await openInbox(t.app, actor(bob!));
    const base = Number((await inbox.next()).id);
    inbox.abort();
    const clientId = uuid();
    const m = await send(alice!, room.id, `psst @${bob} ${w}`, { clientId, mentions: [bob!] });
    await as(alice!).chat.delete({ messageId: m.id });
    {
      await using replay = await openInbox(t.app, actor(bob!), { lastEventId: String(base) });
      const item = await replay.next();
      expect(item.event).toMatchObject({ type: 'mention', seq: base + 1, roomId: room.id, messageId: m.id, messageSeq: m.seq, from: alice });
      expect(JSON.stringify(item.event)).not.toContain(w);
    }
    // A repeat of the send (same clientId) returns the deleted message, without its body.
    const repeat = await as(alice!).chat.send({ roomId: room.id, clientId, body: `psst ${w}` });
    expect(repeat).toMatchObject({ id: m.id, body: null });
  });

  it('a deleted message does not count as unread (nor as a mention)', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const unreadOf = async (who: string) => (await as(who).receipt.unread()).find((u) => u.roomId === room.id)!;
    const m1 = await send(bob!, room.id, 'one', { mentions: [alice!] });
    await send(bob!, room.id, 'two');
    expect(await unreadOf(alice!)).toMatchObject({ unread: 2, mentions: 1 });
    expect((await as(alice!).room.list()).find((r) => r.id === room.id)!.unreadCount).toBe(2);
    await as(bob!).chat.delete({ messageId: m1.id });
    expect(await unreadOf(alice!)).toMatchObject({ unread: 1, mentions: 0 });
    expect((await as(alice!).room.list()).find((r) => r.id === room.id)!.unreadCount).toBe(1);
  });
});

describe('reactions', () => {
  it('one per user per emoji, idempotent, with counts and `me` per viewer and events with seq', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!, carol!]);
    const m = await send(alice!, room.id, 'react to me');
    await using s = await openLive(t.app, alice!, room.id);
    const r1 = await as(bob!).chat.react({ messageId: m.id, emoji: '👍' });
    expect(r1.reactions).toEqual([{ emoji: '👍', count: 1, me: true }]);
    const repeat = await as(bob!).chat.react({ messageId: m.id, emoji: '👍' });
    expect(repeat.reactions).toEqual([{ emoji: '👍', count: 1, me: true }]);
    expect(await lastSeq(alice!, room.id)).toBe(m.seq + 1);
    await as(carol!).chat.react({ messageId: m.id, emoji: '👍' });
    const r3 = await as(carol!).chat.react({ messageId: m.id, emoji: ':tada:' });
    expect(r3.reactions).toEqual([
      { emoji: '👍', count: 2, me: true },
      { emoji: ':tada:', count: 1, me: true },
    ]);

    // `me` is relative to whoever reads the history.
    expect((await messageAs(alice!, room.id, m.id)).reactions).toEqual([
      { emoji: '👍', count: 2, me: false },
      { emoji: ':tada:', count: 1, me: false },
    ]);
    expect((await messageAs(bob!, room.id, m.id)).reactions).toEqual([
      { emoji: '👍', count: 2, me: true },
      { emoji: ':tada:', count: 1, me: false },
    ]);
    expect((await messageAs(carol!, room.id, m.id)).reactions).toEqual([
      { emoji: '👍', count: 2, me: true },
      { emoji: ':tada:', count: 1, me: true },
    ]);

    const u1 = await as(bob!).chat.unreact({ messageId: m.id, emoji: '👍' });
    expect(u1.reactions).toEqual([
      { emoji: '👍', count: 1, me: false },
      { emoji: ':tada:', count: 1, me: false },
    ]);
    const seqNow = await lastSeq(alice!, room.id);
    expect(seqNow).toBe(m.seq + 4);
    // Repeats and never-made reactions change nothing.
    await as(bob!).chat.unreact({ messageId: m.id, emoji: '👍' });
    await as(bob!).chat.unreact({ messageId: m.id, emoji: '🎉' });
    await as(carol!).chat.react({ messageId: m.id, emoji: ':tada:' });
    expect(await lastSeq(alice!, room.id)).toBe(seqNow);

    const events = await s.take(4);
    expect(events.map((e) => e.event)).toMatchObject([
      { type: 'reaction.added', roomId: room.id, seq: m.seq + 1, messageId: m.id, userId: bob, emoji: '👍' },
      { type: 'reaction.added', roomId: room.id, seq: m.seq + 2, messageId: m.id, userId: carol, emoji: '👍' },
      { type: 'reaction.added', roomId: room.id, seq: m.seq + 3, messageId: m.id, userId: carol, emoji: ':tada:' },
      { type: 'reaction.removed', roomId: room.id, seq: m.seq + 4, messageId: m.id, userId: bob, emoji: '👍' },
    ]);
    expect(events.map((e) => e.id)).toEqual([1, 2, 3, 4].map((i) => String(m.seq + i)));
    // Nothing was emitted for the repeats: the next event is the marker.
    const marker = await send(bob!, room.id, 'marker');
    expect(typed((await s.next()).event, 'message.new').message.id).toBe(marker.id);

    await as(carol!).chat.unreact({ messageId: m.id, emoji: '👍' });
    await as(carol!).chat.unreact({ messageId: m.id, emoji: ':tada:' });
    expect((await messageAs(alice!, room.id, m.id)).reactions).toEqual([]);
    expect((await s.take(2)).map((e) => e.event.type)).toEqual(['reaction.removed', 'reaction.removed']);
  });

  it('rejects an invalid emoji with BAD_REQUEST and outsiders with NOT_FOUND', async () => {
    const [alice, eve] = users('alice', 'eve');
    const room = await groupRoom(alice!, []);
    const m = await send(alice!, room.id, 'x');
    for (const emoji of ['', ' ', 'a b', '\t', '👍\n', 'x'.repeat(65)]) {
      await expectTRPCError(as(alice!).chat.react({ messageId: m.id, emoji }), 'BAD_REQUEST', /emoji/);
      await expectTRPCError(as(alice!).chat.unreact({ messageId: m.id, emoji }), 'BAD_REQUEST', /emoji/);
    }
    await expectTRPCError(as(alice!).chat.react({ messageId: 'nope', emoji: '👍' }), 'BAD_REQUEST', /messageId/);
    await expectTRPCError(as(eve!).chat.react({ messageId: m.id, emoji: '👍' }), 'NOT_FOUND');
    await expectTRPCError(as(alice!, 'tenant-b').chat.react({ messageId: m.id, emoji: '👍' }), 'NOT_FOUND');
    expect(await lastSeq(alice!, room.id)).toBe(m.seq);
    const longest = 'y'.repeat(64);
    expect((await as(alice!).chat.react({ messageId: m.id, emoji: longest })).reactions).toEqual([{ emoji: longest, count: 1, me: true }]);
  });
});

describe('threads', () => {
  it('lists replies ascending with afterSeq/limit/hasMore and the root; the root counts replies', async () => {
    const [alice, bob, eve] = users('alice', 'bob', 'eve');
    const room = await groupRoom(alice!, [bob!]);
    const root = await send(alice!, room.id, 'root');
    expect(root).toMatchObject({ replyCount: 0, lastReplyAt: null });
    const r1 = await send(bob!, room.id, 'r1', { replyToId: root.id });
    await send(alice!, room.id, 'not in the thread');
    const r2 = await send(alice!, room.id, 'r2', { replyToId: root.id });
    const other = await send(bob!, room.id, 'another root');
    await send(alice!, room.id, 'elsewhere', { replyToId: other.id });
    const r3 = await send(bob!, room.id, 'r3', { replyToId: root.id });

    const full = await as(bob!).chat.thread({ messageId: root.id });
    expect(full.root).toMatchObject({ id: root.id, body: 'root', replyCount: 3 });
    expect(full.replies.map((m) => m.id)).toEqual([r1.id, r2.id, r3.id]);
    expect(full.replies.map((m) => m.body)).toEqual(['r1', 'r2', 'r3']);
    expect(full.hasMore).toBe(false);

    const p1 = await as(bob!).chat.thread({ messageId: root.id, limit: 2 });
    expect(p1.replies.map((m) => m.id)).toEqual([r1.id, r2.id]);
    expect(p1.hasMore).toBe(true);
    const p2 = await as(bob!).chat.thread({ messageId: root.id, afterSeq: p1.replies[1]!.seq, limit: 2 });
    expect(p2.replies.map((m) => m.id)).toEqual([r3.id]);
    expect(p2.hasMore).toBe(false);
    expect(p2.root.id).toBe(root.id);
    const p0 = await as(bob!).chat.thread({ messageId: root.id, afterSeq: r1.seq, limit: 1 });
    expect(p0.replies.map((m) => m.id)).toEqual([r2.id]);
    expect(p0.hasMore).toBe(true);

    const inHistory = await messageAs(alice!, room.id, root.id);
    expect(inHistory.replyCount).toBe(3);
    expect(inHistory.lastReplyAt).toBeInstanceOf(Date);
    expect(inHistory.lastReplyAt!.getTime()).toBe(r3.createdAt.getTime());
    expect((await messageAs(alice!, room.id, other.id)).replyCount).toBe(1);

    // Deleting a reply decrements the count (once, however often it is deleted).
    await as(alice!).chat.delete({ messageId: r2.id });
    await as(alice!).chat.delete({ messageId: r2.id });
    expect((await messageAs(bob!, room.id, root.id)).replyCount).toBe(2);
    const after = await as(bob!).chat.thread({ messageId: root.id });
    expect(after.root.replyCount).toBe(2);
    expect(after.replies.filter((m) => !m.deletedAt).map((m) => m.id)).toEqual([r1.id, r3.id]);
    expect(after.replies.filter((m) => m.deletedAt).every((m) => m.body === null)).toBe(true);

    // Deleting the latest reply moves the last reply time back to the latest remaining one.
    await as(bob!).chat.delete({ messageId: r3.id });
    const root2 = await messageAs(alice!, room.id, root.id);
    expect(root2.replyCount).toBe(1);
    expect(root2.lastReplyAt!.getTime()).toBe(r1.createdAt.getTime());
    await as(bob!).chat.delete({ messageId: r1.id });
    expect(await messageAs(alice!, room.id, root.id)).toMatchObject({ replyCount: 0, lastReplyAt: null });

    await expectTRPCError(as(eve!).chat.thread({ messageId: root.id }), 'NOT_FOUND');
    await expectTRPCError(as(bob!, 'tenant-b').chat.thread({ messageId: root.id }), 'NOT_FOUND');
    await expectTRPCError(as(bob!).chat.thread({ messageId: root.id, limit: 101 }), 'BAD_REQUEST', /limit/);
  });

  it('a reply to a deleted message (a root or a reply) is BAD_REQUEST and writes nothing; a reply to a live reply is still taken', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const root = await send(alice!, room.id, 'root');
    const reply = await send(bob!, room.id, 'reply', { replyToId: root.id });
    // A reply may name a reply, as before.
    const nestedClientId = uuid();
    const nested = await send(alice!, room.id, 'nested', { replyToId: reply.id, clientId: nestedClientId });
    expect(nested.replyToId).toBe(reply.id);
    await as(bob!).chat.delete({ messageId: reply.id });
    await as(alice!).chat.delete({ messageId: root.id });
    const seq = await lastSeq(alice!, room.id);
    for (const gone of [root, reply]) {
      await expectTRPCError(send(bob!, room.id, 'too late', { replyToId: gone.id }), 'BAD_REQUEST', /replyToId names a deleted message/);
      // Also with mentions (the same transaction).
      await expectTRPCError(send(bob!, room.id, 'too late', { replyToId: gone.id, mentions: [alice!] }), 'BAD_REQUEST', /deleted/);
    }
    // A repeat of a reply that went through before its target was deleted is answered with the original.
    expect(await send(alice!, room.id, 'nested', { replyToId: reply.id, clientId: nestedClientId })).toMatchObject({ id: nested.id, seq: nested.seq });
    // Nothing written: no seq used, the summaries as the deletes left them, no reply in either thread.
    expect(await lastSeq(alice!, room.id)).toBe(seq);
    expect(await messageAs(alice!, room.id, root.id)).toMatchObject({ replyCount: 0, lastReplyAt: null });
    expect(await messageAs(alice!, room.id, reply.id)).toMatchObject({ replyCount: 1 });
    expect((await as(bob!).chat.thread({ messageId: root.id })).replies.map((m) => m.id)).toEqual([reply.id]);
    expect((await as(bob!).chat.thread({ messageId: reply.id })).replies.map((m) => m.id)).toEqual([nested.id]);
  });

  it('a reply that waited for the lock of its root while a delete of the root committed is refused', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const root = await send(alice!, room.id, 'root');
    const seq = await lastSeq(alice!, room.id);
    // The delete holds the root's row; the reply checks its access and waits for that row; the
    // delete marks the root deleted and commits; the reply then reads the root as it is now.
    const r = await commitWhileBlocked(
      t.env.databaseUrl,
      [['select id from message where id = $1 for update', [root.id]]],
      () => expectTRPCError(send(bob!, room.id, 'racing', { replyToId: root.id }), 'BAD_REQUEST', /replyToId names a deleted message/),
      [['update message set deleted_at = now(), deleted_by = $2, body = null where id = $1', [root.id, alice]]],
    );
    if (r.status === 'rejected') throw r.reason;
    expect(await lastSeq(alice!, room.id)).toBe(seq);
    expect(await messageAs(alice!, room.id, root.id)).toMatchObject({ replyCount: 0, lastReplyAt: null });
  });
});

describe('mentions', () => {
  it('only members count; each gets an inbox mention (live and replayed) and an unread mention until read', async () => {
    const [alice, bob, carol, stranger] = users('alice', 'bob', 'carol', 'stranger');
    const room = await groupRoom(alice!, [bob!, carol!]);
    const service = callerFor(t.app, actor(`svc${kit.n}`, 'default', ['service']));
    {
      await using bobInbox = await openInbox(t.app, actor(bob!));
      await using strangerInbox = await openInbox(t.app, actor(stranger!));
      await using aliceInbox = await openInbox(t.app, actor(alice!));
      const bobReady = await bobInbox.next();
      expect(bobReady.event).toEqual({ type: 'ready', seq: Number(bobReady.id) });
      const bobBase = Number(bobReady.id);
      expect(bobBase).toBeGreaterThanOrEqual(1); // the room.added of the room above
      expect((await strangerInbox.next()).event.type).toBe('ready');
      expect((await aliceInbox.next()).event.type).toBe('ready');

      const body = `hey @${bob} and @${carol}`;
      const m = await send(alice!, room.id, body, { mentions: [bob!, stranger!, carol!, alice!, bob!] });
      expect([...m.mentions].sort()).toEqual([bob, carol].sort());

      const got = await bobInbox.nextItem();
      expect(got.id).toBe(String(bobBase + 1));
      expect(got.event).toEqual({
        type: 'mention',
        seq: bobBase + 1,
        roomId: room.id,
        messageId: m.id,
        messageSeq: m.seq,
        from: alice,
        excerpt: body,
      });
      // The stranger (not a member) and alice (the author) got nothing: their next item is a marker.
      await service.inbox.notify({ userId: stranger!, kind: 'marker', title: 'marker' });
      await service.inbox.notify({ userId: alice!, kind: 'marker', title: 'marker' });
      // (Live events such as alice's room.activity may come between: only items count here.)
      expect((await strangerInbox.nextItem()).event).toMatchObject({ type: 'notification', kind: 'marker' });
      expect((await aliceInbox.nextItem()).event).toMatchObject({ type: 'notification', kind: 'marker' });
    }

    // Resuming replays the mention with the same id.
    const mention = await (async () => {
      await using ready = await openInbox(t.app, actor(carol!));
      const carolBase = Number((await ready.next()).id);
      ready.abort();
      await using resumed = await openInbox(t.app, actor(carol!), { lastEventId: String(carolBase - 1) });
      const item = await resumed.next();
      expect(item.id).toBe(String(carolBase));
      expect(item.event).toMatchObject({ type: 'mention', seq: carolBase, roomId: room.id, from: alice });
      return item.event;
    })();

    const unreadOf = async (who: string) => (await as(who).receipt.unread()).find((u) => u.roomId === room.id);
    expect(await unreadOf(bob!)).toMatchObject({ unread: 1, mentions: 1 });
    expect(await unreadOf(carol!)).toMatchObject({ unread: 1, mentions: 1 });
    expect(await unreadOf(alice!)).toMatchObject({ unread: 0, mentions: 0 });
    expect(await unreadOf(stranger!)).toBeUndefined();

    await as(bob!).receipt.markRead({ roomId: room.id, seq: (mention as { messageSeq: number }).messageSeq });
    expect(await unreadOf(bob!)).toMatchObject({ unread: 0, mentions: 0 });
    expect(await unreadOf(carol!)).toMatchObject({ unread: 1, mentions: 1 });
  });

  it('the excerpt of a long body is cut at 140 characters, never between the halves of a surrogate pair', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    await using bobInbox = await openInbox(t.app, actor(bob!));
    expect((await bobInbox.next()).event.type).toBe('ready');
    // The emoji's two halves are the 139th and 140th UTF-16 code units: a cut after 139 units split it.
    const cases = [
      { body: `${'a'.repeat(138)}😀${'b'.repeat(10)}`, excerpt: `${'a'.repeat(138)}😀…` },
      { body: '😀'.repeat(150), excerpt: `${'😀'.repeat(139)}…` },
      { body: '😀'.repeat(140), excerpt: '😀'.repeat(140) },
    ];
    for (const c of cases) {
      const m = await send(alice!, room.id, c.body, { mentions: [bob!] });
      expect(m.body).toBe(c.body);
      const item = await bobInbox.nextItem();
      expect(item.event).toMatchObject({ type: 'mention', messageId: m.id, excerpt: c.excerpt });
      // No lone surrogate (the \p{Cs} of a `u` regex matches only unpaired halves).
      expect((item.event as { excerpt: string }).excerpt).not.toMatch(/\p{Cs}/u);
    }
    // Replayed from PostgreSQL, the same.
    await using replay = await openInbox(t.app, actor(bob!), { lastEventId: '0' });
    const excerpts: string[] = [];
    while (excerpts.length < cases.length) {
      const { event } = await replay.nextItem();
      if (event.type === 'mention') excerpts.push(event.excerpt);
    }
    expect(excerpts).toEqual(cases.map((c) => c.excerpt));
  });
});

describe('kinds and attachments', () => {
  const att = (i = 0) => ({ url: `https://cdn.example.com/f${i}.png`, name: `f${i}.png`, size: 1000 + i, mime: 'image/png' });

  it('users cannot send system messages; image/file carry attachments; at most 10; malformed ones are BAD_REQUEST', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const before = await lastSeq(alice!, room.id);
    const bad = (over: Record<string, unknown>) => as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x', ...over } as never);

    await expectTRPCError(bad({ kind: 'system' }), 'FORBIDDEN', /only service tokens may send system messages/);
    await expectTRPCError(bad({ kind: 'video' }), 'BAD_REQUEST', /kind/);
    await expectTRPCError(bad({ kind: 'file', attachments: Array.from({ length: 11 }, (_, i) => att(i)) }), 'BAD_REQUEST', /10 attachments/);
    for (const broken of [
      { ...att(), url: 'not a url' },
      { ...att(), url: '' },
      { ...att(), size: -1 },
      { ...att(), size: 1.5 },
      { ...att(), mime: 'imagepng' },
      { ...att(), mime: 'image/png; charset=x' },
      { ...att(), mime: '' },
      { ...att(), name: '' },
      { url: 'http://cdn.example.com/a', name: 'a' },
      { url: 'javascript:alert(1)', name: 'a' },
    ]) {
      await expectTRPCError(bad({ kind: 'file', attachments: [broken] }), 'BAD_REQUEST', /attachments/);
    }
    expect(await lastSeq(alice!, room.id)).toBe(before);

    // A link is { url, name } (https only); size and mime are optional, the sender's word.
    const bare = { url: 'https://cdn.example.com/a', name: 'a' };
    const link = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'see', kind: 'file', attachments: [bare] });
    expect(link.attachments).toEqual([bare]);
    const image = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'a picture', kind: 'image', attachments: [att(1)] });
    expect(image).toMatchObject({ kind: 'image', body: 'a picture', attachments: [att(1)] });
    const ten = Array.from({ length: 10 }, (_, i) => ({ ...att(i), mime: 'application/pdf', name: `doc${i}.pdf` }));
    const file = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: '', kind: 'file', attachments: ten });
    expect(file).toMatchObject({ kind: 'file', body: '', attachments: ten });
    const stored = await allMessages(bob!, room.id);
    expect(stored.map((m) => [m.kind, m.attachments.length])).toEqual([
      ['file', 1],
      ['image', 1],
      ['file', 10],
    ]);
    expect(stored[0]!.attachments).toEqual([bare]);
    expect(stored[2]!.attachments).toEqual(ten);
  });

  it('system messages are written by the server and are not unread', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!]);
    await as(alice!).room.addMembers({ roomId: room.id, userIds: [carol!] });
    await as(alice!).room.update({ roomId: room.id, name: `renamed ${kit.n}` });
    const system = (await allMessages(bob!, room.id)).filter((m) => m.kind === 'system');
    expect(system.map((m) => m.body)).toEqual([`${alice} added ${carol}`, `${alice} renamed the room to "renamed ${kit.n}"`]);
    expect((await as(bob!).receipt.unread()).find((u) => u.roomId === room.id)).toMatchObject({ unread: 0 });
  });
});

describe('chat.search', () => {
  it('covers only my rooms of my tenant, ranked, highlighted and escaped; deleted never match; roomId filter', async () => {
    const [alice, bob, carol, dave] = users('alice', 'bob', 'carol', 'dave');
    const w = word('quokka');
    const a = await groupRoom(alice!, [bob!], `Room A ${kit.n}`);
    const b = await groupRoom(carol!, [alice!], `Room B ${kit.n}`);
    const c = await groupRoom(bob!, [dave!], `Room C ${kit.n}`);
    const d = await as(alice!, 'tenant-b').room.create({ kind: 'group', name: 'Room D' });

    const once = await send(alice!, a.id, `I saw a ${w} today`);
    const many = await send(bob!, a.id, `${w} ${w} ${w} everywhere, ${w}!`);
    const html = await send(carol!, b.id, `<script>alert(1)</script> ${w} & more`);
    const hidden = await send(dave!, c.id, `${w} in a room alice is not in`);
    const foreign = await as(alice!, 'tenant-b').chat.send({ roomId: d.id, clientId: uuid(), body: `${w} in tenant b` });
    const gone = await send(alice!, a.id, `${w} soon deleted`);
    await as(alice!).chat.delete({ messageId: gone.id });
    const edited = await send(alice!, a.id, `${w} before the edit`);
    await as(alice!).chat.edit({ messageId: edited.id, body: 'nothing to find any more' });

    const res = await as(alice!).chat.search({ query: w });
    const ids = res.hits.map((h) => h.message.id);
    expect([...ids].sort()).toEqual([once.id, many.id, html.id].sort());
    expect(ids[0]).toBe(many.id); // four matches outrank one
    const ranks = res.hits.map((h) => h.rank);
    expect(ranks).toEqual([...ranks].sort((x, y) => y - x));
    expect(ranks[0]!).toBeGreaterThan(ranks[ranks.length - 1]!);
    expect(res.skippedEncryptedRooms).toBe(0);
    for (const forbidden of [hidden.id, foreign.id, gone.id, edited.id]) expect(ids).not.toContain(forbidden);

    const manyHit = res.hits.find((h) => h.message.id === many.id)!;
    expect(manyHit).toMatchObject({ roomId: a.id, roomName: `Room A ${kit.n}`, message: { body: many.body, senderId: bob } });
    expect(manyHit.snippet).toContain(`<mark>${w}</mark>`);
    const htmlHit = res.hits.find((h) => h.message.id === html.id)!;
    expect(htmlHit.message.body).toBe(html.body); // the message itself is not escaped
    expect(htmlHit.snippet).toContain(`<mark>${w}</mark>`);
    expect(htmlHit.snippet).toContain('&lt;script&gt;');
    expect(htmlHit.snippet).toContain('&amp;');
    expect(htmlHit.snippet).not.toContain('<script');
    expect(htmlHit.snippet.replaceAll('<mark>', '').replaceAll('</mark>', '')).not.toMatch(/[<>]/);

    // A long body gives an excerpt around the match; markup next to a match is escaped, not cut.
    const w2 = word('wombat');
    const filler = (from: number, count: number) => Array.from({ length: count }, (_, i) => `word${from + i}`).join(' ');
    const long = await send(bob!, a.id, `${filler(0, 60)} <b>${w2}</b>, ${filler(60, 40)}`);
    const [longHit] = (await as(alice!).chat.search({ query: w2 })).hits;
    expect(longHit!.message.id).toBe(long.id);
    expect(longHit!.snippet).toContain(`&lt;b&gt;<mark>${w2}</mark>&lt;/b&gt;,`);
    expect(longHit!.snippet.startsWith('… ')).toBe(true);
    expect(longHit!.snippet.endsWith(' …')).toBe(true);
    expect(longHit!.snippet).toContain('word52 word53');
    expect(longHit!.snippet.split(' ').length).toBeLessThanOrEqual(26);

    // The roomId filter, and limit.
    expect((await as(alice!).chat.search({ query: w, roomId: b.id })).hits.map((h) => h.message.id)).toEqual([html.id]);
    expect((await as(alice!).chat.search({ query: w, roomId: a.id })).hits.map((h) => h.message.id)).toEqual([many.id, once.id]);
    expect((await as(alice!).chat.search({ query: w, limit: 1 })).hits.map((h) => h.message.id)).toEqual([many.id]);
    // The edited message matches its new body only.
    expect((await as(alice!).chat.search({ query: 'nothing to find', roomId: a.id })).hits.map((h) => h.message.id)).toEqual([edited.id]);

    // Rooms I am not in: nothing, and naming one is NOT_FOUND (as for any read).
    await expectTRPCError(as(alice!).chat.search({ query: w, roomId: c.id }), 'NOT_FOUND');
    await expectTRPCError(as(alice!).chat.search({ query: w, roomId: d.id }), 'NOT_FOUND');
    await expectTRPCError(as(alice!).chat.search({ query: '   ' }), 'BAD_REQUEST', /query/);
    // Only excluded words: nothing the index can look up (it would read every message): refused.
    await expectTRPCError(as(alice!).chat.search({ query: `-${w}` }), 'BAD_REQUEST', /at least one word to look for/);
    await expectTRPCError(as(alice!).chat.search({ query: `-${w} -other` }), 'BAD_REQUEST', /at least one word/);
    // With a word to look for, exclusions work.
    expect([...(await as(alice!).chat.search({ query: `${w} -today` })).hits.map((h) => h.message.id)].sort()).toEqual([many.id, html.id].sort());

    // Other callers see their own rooms only.
    expect([...(await as(bob!).chat.search({ query: w })).hits.map((h) => h.message.id)].sort()).toEqual([once.id, many.id, hidden.id].sort());
    expect((await as(alice!, 'tenant-b').chat.search({ query: w })).hits.map((h) => h.message.id)).toEqual([foreign.id]);
    expect((await as(dave!).chat.search({ query: w })).hits.map((h) => h.message.id)).toEqual([hidden.id]);
  });
});

describe('encryption at rest', () => {
  const key = () => randomBytes(32).toString('base64');
  const k1 = key();
  const k2 = key();
  let encEnv: TestEnv;
  let enc: TestServer | null = null;
  const encAs = (id: string) => callerFor(enc!.app, actor(id));
  const rawRow = async (id: string) => (await encEnv.sql<{ body: string; key_id: string | null }>('select body, key_id from message where id = $1', [id]))[0]!;

  let roomId: string;
  let plainRoomId: string;
  let old: MessageDto;
  const secret = `the ${word('secret')} launch code is 1234`;

  beforeAll(async () => {
    encEnv = await testEnv('richenc');
    enc = await encEnv.startServer({ messageKeys: `k1:${k1}` });
  });
  afterAll(() => dispose(encEnv));

  it('an app without keys refuses encrypted rooms with PRECONDITION_FAILED', async () => {
    const [alice] = users('alice');
    await expectTRPCError(as(alice!).room.create({ kind: 'group', name: 'vault', encrypted: true }), 'PRECONDITION_FAILED', /MESSAGE_KEYS/);
    expect(await as(alice!).room.list()).toEqual([]);
  });

  it('stores bodies encrypted with the key id; every read path decrypts; search skips the room and says so', async () => {
    const room = await encAs('alice').room.create({ kind: 'group', name: 'vault', memberIds: ['bob'], encrypted: true });
    expect(room.encrypted).toBe(true);
    roomId = room.id;
    const plain = await encAs('alice').room.create({ kind: 'group', name: 'open', memberIds: ['bob'] });
    expect(plain.encrypted).toBe(false);
    plainRoomId = plain.id;

    {
      await using s = await openEvents(enc!.app, actor('bob'), { roomId });
      await using bobInbox = await openInbox(enc!.app, actor('bob'));
      expect((await s.next()).event.type).toBe('ready');
      expect((await bobInbox.next()).event.type).toBe('ready');
      old = await encAs('alice').chat.send({ roomId, clientId: uuid(), body: secret, mentions: ['bob'] });
      expect(old.body).toBe(secret);
      expect(typed((await s.next()).event, 'message.new').message.body).toBe(secret);
      // The inbox (stored in plain jsonb) carries no excerpt of an encrypted room.
      expect((await bobInbox.nextItem()).event).toMatchObject({ type: 'mention', messageId: old.id, excerpt: '' });
    }
    expect((await encAs('bob').chat.history({ roomId })).messages.map((m) => m.body)).toEqual([secret]);

    const stored = await rawRow(old.id);
    expect(stored.key_id).toBe('k1');
    expect(stored.body).not.toBe(secret);
    expect(stored.body).not.toContain('launch');
    // v2: bound to its room and message (AES-GCM associated data), iv.tag.ciphertext in base64url.
    expect(stored.body).toMatch(/^v2\.[\w-]+\.[\w-]+\.[\w-]+$/);

    // Edits: the new body and the kept previous version are both encrypted at rest.
    await encAs('alice').chat.edit({ messageId: old.id, body: `${secret} (edited)` });
    expect((await encAs('bob').chat.edits({ messageId: old.id })).map((e) => e.body)).toEqual([secret]);
    expect((await rawRow(old.id)).key_id).toBe('k1');
    expect((await rawRow(old.id)).body).not.toContain('edited');
    const editRows = await encEnv.sql('select body, key_id from message_edit where message_id = $1', [old.id]);
    expect(editRows).toHaveLength(1);
    expect(editRows[0]).toMatchObject({ key_id: 'k1' });
    expect(editRows[0]!.body).not.toContain('launch');
    old = (await encAs('bob').chat.history({ roomId })).messages[0]!;
    expect(old.body).toBe(`${secret} (edited)`);

    // A room without encryption stores plain text.
    const p = await encAs('alice').chat.send({ roomId: plainRoomId, clientId: uuid(), body: 'launch in the open' });
    expect(await rawRow(p.id)).toEqual({ body: 'launch in the open', key_id: null });

    const everywhere = await encAs('bob').chat.search({ query: 'launch' });
    expect(everywhere.hits.map((h) => h.message.id)).toEqual([p.id]);
    expect(everywhere.skippedEncryptedRooms).toBeGreaterThanOrEqual(1);
    const inRoom = await encAs('bob').chat.search({ query: 'launch', roomId });
    expect(inRoom).toMatchObject({ hits: [], skippedEncryptedRooms: 1 });
    expect((await encAs('bob').chat.search({ query: 'open', roomId: plainRoomId })).skippedEncryptedRooms).toBe(0);
  });

  it('a ciphertext is bound to its room and message: copied onto another message it does not decrypt', async () => {
    const room = await encAs('alice').room.create({ kind: 'group', name: 'bound', encrypted: true, memberIds: ['bob'] });
    const a = await encAs('alice').chat.send({ roomId: room.id, clientId: uuid(), body: `salary ${word('x')}` });
    const b = await encAs('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'harmless' });
    expect((await rawRow(a.id)).body).toMatch(/^v2\./);
    // Someone with write access to the database moves a's ciphertext onto b (same key): refused.
    await encEnv.sql('update message set body = (select body from message where id = $1) where id = $2', [a.id, b.id]);
    const bodies = new Map((await encAs('bob').chat.history({ roomId: room.id })).messages.map((m) => [m.id, m.body]));
    expect(bodies.get(a.id)).toBe(a.body);
    expect(bodies.get(b.id)).toBeNull();
    // Bodies sealed before the binding (no associated data) still decrypt.
    const legacy = new Keyring(`k1:${k1}`).encrypt('from before the binding');
    await encEnv.sql('update message set body = $1, key_id = $2 where id = $3', [legacy.text, legacy.keyId, b.id]);
    expect((await encAs('bob').chat.history({ roomId: room.id })).messages.find((m) => m.id === b.id)?.body).toBe('from before the binding');
    // A shortened authentication tag is refused too.
    const [iv, tag, ct] = (await rawRow(a.id)).body.slice(3).split('.');
    await encEnv.sql('update message set body = $1 where id = $2', [`v2.${iv}.${tag!.slice(0, 8)}.${ct}`, a.id]);
    expect((await encAs('bob').chat.history({ roomId: room.id })).messages.find((m) => m.id === a.id)?.body).toBeNull();
  });

  it('key rotation: after a restart with a new first key, old rows still decrypt and new rows use the new key', async () => {
    expect(old).toBeDefined();
    await enc!.close();
    enc = null;
    enc = await encEnv.startServer({ redisPrefix: encEnv.prefix('richenc2'), messageKeys: `k2:${k2},k1:${k1}` });

    const history = await encAs('bob').chat.history({ roomId });
    expect(history.messages.map((m) => m.body)).toEqual([old.body]);
    expect((await encAs('bob').chat.edits({ messageId: old.id })).map((e) => e.body)).toEqual([secret]);

    const fresh = await encAs('bob').chat.send({ roomId, clientId: uuid(), body: 'after rotation' });
    expect(fresh.body).toBe('after rotation');
    expect((await rawRow(fresh.id)).key_id).toBe('k2');
    expect((await rawRow(fresh.id)).body).not.toContain('rotation');
    expect((await rawRow(old.id)).key_id).toBe('k1');
    expect((await encAs('alice').chat.history({ roomId })).messages.map((m) => m.body)).toEqual([old.body, 'after rotation']);

    // Re-writing an old message re-encrypts it with the active key.
    await encAs('alice').chat.edit({ messageId: old.id, body: 'rewritten' });
    expect((await rawRow(old.id)).key_id).toBe('k2');
    expect((await encAs('bob').chat.edits({ messageId: old.id })).map((e) => e.body)).toEqual([secret, `${secret} (edited)`]);
    expect((await encAs('bob').chat.history({ roomId })).messages.map((m) => m.body)).toEqual(['rewritten', 'after rotation']);
  });
});
