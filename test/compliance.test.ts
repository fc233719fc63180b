/**
 * Compliance (issue 17): exports of a user and of a room as JSON Lines (tenant admins, own tenant
 * only, paged), the erasure of a user (bodies, edits, reactions, read positions, files, name) with
 * live events, the durable audit trail written in the transaction of each action, and deletes that
 * erase the body, attachments, card, metadata and edit history at rest.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  actor,
  callerFor,
  clientFor,
  complianceService,
  expectTRPCError,
  fileServer,
  makeConfig,
  nextOf,
  openEvents,
  openLive,
  roomKit,
  storeBeforeTransactions,
  uuid,
  type Actor,
} from './fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'chat-compliance-'));
const t = fileServer('compliance', { files: { ...makeConfig().files, dir }, webhooks: { ...makeConfig().webhooks, allowPrivateUrls: true } });
const { users, as, groupRoom, reactedRoom } = roomKit(() => t);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const admin = (id = 'boss', tenant = 'default') => actor(id, tenant, ['admin']);
type Rec = { type: string } & Record<string, unknown>;

/** An export as a consumer reads it: every value written as one JSON line, then parsed back. */
async function exported(who: Actor, input: { userId: string } | { roomId: string }): Promise<Rec[]> {
  const caller = callerFor(t.app, who);
  const it = 'userId' in input ? await caller.admin.exportUser(input) : await caller.admin.exportRoom(input);
  const lines: string[] = [];
  for await (const r of it as AsyncIterable<unknown>) lines.push(JSON.stringify(r));
  expect(lines.every((l) => !l.includes('\n'))).toBe(true);
  return lines.map((l) => JSON.parse(l) as Rec);
}
const ofType = (recs: Rec[], type: string) => recs.filter((r) => r.type === type);

/** An export's refusal: the subscription's call fails before any record. */
function exportError(who: Actor, input: { userId: string } | { roomId: string }) {
  const caller = callerFor(t.app, who);
  return 'userId' in input ? caller.admin.exportUser(input) : caller.admin.exportRoom(input);
}

async function upload(who: string, roomId: string, text: string, name: string) {
  const bytes = Buffer.from(text);
  const ticket = await as(who).file.createUpload({ roomId, name, size: bytes.length, mime: 'text/plain' });
  const res = await fetch(new URL(ticket.uploadUrl, t.url), { method: 'PUT', headers: ticket.headers, body: bytes });
  expect(res.status).toBe(200);
  return ticket.fileId;
}

const auditRows = (action: string, target?: string) =>
  t.env.sql<{ actor_id: string; room_id: string | null; target_id: string | null; data: Record<string, unknown> }>(
    `select actor_id, room_id, target_id, data from audit_event where action = $1 ${target ? 'and target_id = $2' : ''} order by at`,
    target ? [action, target] : [action],
  );

describe('exports', () => {
  it("a user's export holds their profile, memberships, messages with edits, reactions, read positions, inbox items and files", async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const m1 = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'first version' });
    await as(bob!).chat.edit({ messageId: m1.id, body: 'second version' });
    const m2 = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: `hi @${bob}`, mentions: [bob!] });
    await as(bob!).chat.react({ messageId: m2.id, emoji: '👍' });
    await as(bob!).receipt.markRead({ roomId: room.id, seq: m2.seq });
    const fileId = await upload(bob!, room.id, 'report', 'report.txt');
    await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'see file', attachments: [{ fileId }] });

    const recs = await exported(admin(), { userId: bob! });
    expect(recs[0]).toMatchObject({ type: 'export', scope: 'user', userId: bob, exportedBy: 'boss' });
    expect(recs.at(-1)).toMatchObject({ type: 'end' });
    expect(ofType(recs, 'user')).toEqual([expect.objectContaining({ id: bob })]);
    expect(ofType(recs, 'membership')).toEqual([expect.objectContaining({ roomId: room.id, role: 'member', lastReadSeq: m2.seq })]);
    const msgs = ofType(recs, 'message');
    expect(msgs.map((m) => m.body)).toEqual(['second version', 'see file']);
    expect(msgs[0]!.edits).toEqual([expect.objectContaining({ body: 'first version', editorId: bob })]);
    expect(ofType(recs, 'reaction')).toEqual([expect.objectContaining({ messageId: m2.id, emoji: '👍', roomId: room.id })]);
    expect(ofType(recs, 'inbox').map((i) => i.kind)).toEqual(expect.arrayContaining(['room.added', 'mention']));
    expect(ofType(recs, 'file')).toEqual([expect.objectContaining({ id: fileId, name: 'report.txt', size: 6, mime: 'text/plain', uploaderId: bob })]);
    expect((recs.at(-1)!.counts as Record<string, number>).message).toBe(2);
    // None of alice's messages (bob's mention of it in his inbox is his).
    expect(msgs.every((m) => m.senderId === bob)).toBe(true);
    expect(await auditRows('user.export', bob)).toEqual([expect.objectContaining({ actor_id: 'boss' })]);
  });

  it("a room's export streams every message in seq order across pages, with members, reactions, edits, files and membership events", async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!]);
    await as(alice!).room.addMembers({ roomId: room.id, userIds: [carol!] });
    const sends = [];
    for (let i = 0; i < 230; i++) sends.push(as(i % 2 ? alice! : bob!).chat.send({ roomId: room.id, clientId: uuid(), body: `n${i}` }));
    const sent = await Promise.all(sends);
    await as(carol!).chat.react({ messageId: sent[0]!.id, emoji: '🎉' });
    await as(bob!).chat.edit({ messageId: sent[0]!.id, body: 'n0 edited' });
    const fileId = await upload(alice!, room.id, 'x', 'x.txt');

    const recs = await exported(admin(), { roomId: room.id });
    expect(recs[0]).toMatchObject({ type: 'export', scope: 'room', roomId: room.id });
    expect(ofType(recs, 'room')).toEqual([expect.objectContaining({ id: room.id, name: room.name, kind: 'group' })]);
    expect(ofType(recs, 'member').map((m) => m.userId).sort()).toEqual([alice, bob, carol].sort());
    const msgs = ofType(recs, 'message');
    const seqs = msgs.map((m) => m.seq as number);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    const userMsgs = msgs.filter((m) => m.kind === 'text');
    expect(userMsgs).toHaveLength(230);
    expect(new Set(userMsgs.map((m) => m.body))).toEqual(new Set(sent.map((_, i) => (i === 0 ? 'n0 edited' : `n${i}`))));
    const first = userMsgs.find((m) => m.id === sent[0]!.id)!;
    expect(first.reactions).toEqual([expect.objectContaining({ userId: carol, emoji: '🎉' })]);
    expect(first.edits).toEqual([expect.objectContaining({ body: 'n0' })]);
    expect(ofType(recs, 'event').map((e) => e.event)).toEqual(expect.arrayContaining(['member.joined']));
    expect(ofType(recs, 'file')).toEqual([expect.objectContaining({ id: fileId, name: 'x.txt' })]);
    expect(await auditRows('room.export')).toEqual(expect.arrayContaining([expect.objectContaining({ room_id: room.id })]));
  });

  it('pages of 2 rows give the same exports as one page: every keyset cursor continues where the last page ended', async () => {
    const [alice, bob] = users('alice', 'bob');
    const rooms = [await groupRoom(alice!, [bob!]), await groupRoom(alice!, [bob!]), await groupRoom(bob!, [alice!])];
    for (const room of rooms) {
      for (let i = 0; i < 3; i++) {
        const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: `a${i}` });
        await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: `b${i} @${bob}`, mentions: [bob!] });
        for (const emoji of ['👍', '🎉']) await as(bob!).chat.react({ messageId: m.id, emoji });
      }
      await upload(bob!, room.id, 'f', 'f.txt');
      await upload(bob!, room.id, 'g', 'g.txt');
    }
    const small = complianceService(t.app, 2);
    const collect = async (gen: AsyncGenerator<unknown>) => {
      const out: Rec[] = [];
      for await (const r of gen) out.push(JSON.parse(JSON.stringify(r)) as Rec);
      return out.filter((r) => r.type !== 'export');
    };
    const paced: number[] = [];
    const pace = async () => {
      paced.push(1);
    };
    const userSmall = await collect(await small.exportUser(admin(), bob!, pace));
    const userBig = (await exported(admin(), { userId: bob! })).filter((r) => r.type !== 'export');
    expect(userSmall).toEqual(userBig);
    expect(ofType(userSmall, 'membership')).toHaveLength(3);
    expect(ofType(userSmall, 'message')).toHaveLength(9);
    expect(ofType(userSmall, 'reaction')).toHaveLength(18);
    expect(ofType(userSmall, 'file')).toHaveLength(6);
    expect(paced.length).toBeGreaterThan(10);
    const roomSmall = await collect(await small.exportRoom(admin(), rooms[0]!.id));
    expect(roomSmall).toEqual((await exported(admin(), { roomId: rooms[0]!.id })).filter((r) => r.type !== 'export'));
    expect(ofType(roomSmall, 'message').filter((m) => m.kind === 'text')).toHaveLength(6);
  });

  it("reads a page's earlier versions and reactions and a room's bans in statements of at most a page of rows, and still exports all of them in order", async () => {
    const [alice, bob] = users('big-alice', 'big-bob');
    const room = await groupRoom(alice!, [bob!]);
    const send = (body: string) => as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body });
    const [big, plain, few, more] = [await send('big now'), await send('plain'), await send('few now'), await send('more now')];
    // Inserted directly (the API allows 100 versions): versions a microsecond apart, pairs of them
    // at the same instant (then in id order), as are the reactions.
    const versions = (messageId: string, n: number) =>
      t.env.sql(
        `insert into message_edit (id, message_id, body, key_id, editor_id, replaced_at)
         select gen_random_uuid(), $1, 'v' || i, null, $2, now() - interval '1 hour' + (i / 2) * interval '1 microsecond' from generate_series(1, $3::int) i`,
        [messageId, bob, n],
      );
    await versions(big.id, 250);
    await versions(few.id, 3);
    await versions(more.id, 5);
    await t.env.sql(
      `insert into reaction (message_id, user_id, emoji, created_at)
       select $1, 'fan-' || i, '👍', now() - interval '1 hour' + (i / 2) * interval '1 microsecond' from generate_series(1, 250) i`,
      [big.id],
    );
    await t.env.sql(`insert into reaction (message_id, user_id, emoji, created_at) values ($1, $2, '🎉', now())`, [few.id, alice]);
    await t.env.sql(
      `insert into room_ban (room_id, user_id, banned_by, created_at) select $1, 'banned-' || lpad(i::text, 3, '0'), $2, now() from generate_series(1, 250) i`,
      [room.id, alice],
    );
    const bodies = (id: string) => t.env.sql<{ body: string }>('select body from message_edit where message_id = $1 order by replaced_at, id', [id]).then((r) => r.map((e) => e.body));
    const fans = (await t.env.sql<{ user_id: string }>('select user_id from reaction where message_id = $1 order by created_at, user_id, emoji', [big.id])).map((r) => r.user_id);

    // The store as the export sees it, counting the rows each statement answers.
    const s = t.app.services;
    const store = Object.create(s.store) as typeof s.store;
    const rowsPerStatement: number[] = [];
    store.db = () =>
      s.store.db().withPlugin({
        transformQuery: (args) => args.node,
        transformResult: async (args) => {
          rowsPerStatement.push(args.result.rows.length);
          return args.result;
        },
      });
    const collect = async (gen: AsyncGenerator<unknown>) => {
      const out: Rec[] = [];
      for await (const r of gen) out.push(JSON.parse(JSON.stringify(r)) as Rec);
      return out.filter((r) => r.type !== 'export');
    };
    for (const page of [200, 7]) {
      const svc = complianceService(t.app, page, store);
      rowsPerStatement.length = 0;
      const roomRecs = await collect(await svc.exportRoom(admin(), room.id));
      const userRecs = await collect(await svc.exportUser(admin(), bob!));
      expect(Math.max(...rowsPerStatement), `a statement of an export with pages of ${page} answered more rows`).toBeLessThanOrEqual(page);
      expect(roomRecs).toEqual((await exported(admin(), { roomId: room.id })).filter((r) => r.type !== 'export'));
      expect(userRecs).toEqual((await exported(admin(), { userId: bob! })).filter((r) => r.type !== 'export'));

      const msgs = ofType(roomRecs, 'message').filter((m) => m.kind === 'text');
      expect(msgs.map((m) => m.id)).toEqual([big.id, plain.id, few.id, more.id]);
      const edits = (m: Rec) => (m.edits as { body: string }[]).map((e) => e.body);
      expect(edits(msgs[0]!)).toHaveLength(250);
      expect(edits(msgs[0]!)).toEqual(await bodies(big.id));
      expect(edits(msgs[1]!)).toEqual([]);
      expect(edits(msgs[2]!)).toEqual(await bodies(few.id));
      expect(edits(msgs[3]!)).toEqual(await bodies(more.id));
      expect((msgs[0]!.reactions as { userId: string }[]).map((x) => x.userId)).toEqual(fans);
      expect(msgs[2]!.reactions).toEqual([expect.objectContaining({ userId: alice, emoji: '🎉' })]);
      expect(msgs[3]!.reactions).toEqual([]);
      expect(ofType(roomRecs, 'ban').map((b) => b.userId)).toEqual(Array.from({ length: 250 }, (_, i) => `banned-${String(i + 1).padStart(3, '0')}`));
      expect(ofType(userRecs, 'message').map((m) => edits(m))).toEqual(msgs.map((m) => edits(m)));
    }
  });

  it('exports are for tenant admins only, of their own tenant (FORBIDDEN for others, NOT_FOUND for foreign ids)', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x' });
    await expectTRPCError(exportError(actor(alice!), { roomId: room.id }), 'FORBIDDEN');
    await expectTRPCError(exportError(actor('svc', 'default', ['service']), { userId: bob! }), 'FORBIDDEN');
    await expectTRPCError(exportError(admin('other', 'tenant-b'), { roomId: room.id }), 'NOT_FOUND');
    await expectTRPCError(exportError(admin('other', 'tenant-b'), { userId: bob! }), 'NOT_FOUND');
    await expectTRPCError(exportError(admin(), { userId: 'nobody-at-all' }), 'NOT_FOUND');
    await expectTRPCError(callerFor(t.app, actor(alice!)).admin.eraseUser({ userId: bob! }), 'FORBIDDEN');
    await expectTRPCError(callerFor(t.app, admin('other', 'tenant-b')).admin.eraseUser({ userId: bob! }), 'NOT_FOUND');
    await expectTRPCError(callerFor(t.app, actor(alice!)).admin.audit({}), 'FORBIDDEN');
  });

  it('over WebSocket the export arrives as a subscription, one record per value, ending after `end`', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    for (let i = 0; i < 5; i++) await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: `w${i}` });
    await using c = clientFor(t.url, 'boss-ws', { roles: ['admin'], ws: true });
    const recs: Rec[] = [];
    await new Promise<void>((resolve, reject) => {
      const sub = c.trpc.admin.exportRoom.subscribe(
        { roomId: room.id },
        {
          onData: (r) => {
            recs.push(JSON.parse(JSON.stringify(r)) as Rec);
            if ((r as Rec).type === 'end') {
              sub.unsubscribe();
              resolve();
            }
          },
          onError: reject,
        },
      );
    });
    expect(ofType(recs, 'message').map((m) => m.body)).toEqual(['w0', 'w1', 'w2', 'w3', 'w4']);
  });
});

describe('erase', () => {

  it("forgets the display names video providers reported for the user in the tenant's meetings, and only theirs", async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const meeting = async (tenant: string) =>
      (
        await t.env.sql<{ id: string }>(
          `insert into meeting (id, tenant, room_id, created_by, provider, url, status, created_at, expires_at)
           values (gen_random_uuid(), $1, $2, $3, 'livekit', 'https://video.example', 'ended', now(), now()) returning id`,
          [tenant, room.id, alice],
        )
      )[0]!.id;
    const [here, elsewhere] = [await meeting('default'), await meeting('other')];
    const join = (meetingId: string, userId: string, name: string) =>
      t.env.sql(`insert into meeting_participant (meeting_id, session_id, user_id, name, joined_at) values ($1, $2, $3, $4, now())`, [meetingId, uuid(), userId, name]);
    await join(here, bob!, 'Bob Real-Name');
    await join(here, alice!, 'Alice Real-Name');
    await join(elsewhere, bob!, 'Another Bob');
    await callerFor(t.app, admin()).admin.eraseUser({ userId: bob! });
    const names = await t.env.sql<{ meeting_id: string; user_id: string; name: string | null }>(
      'select meeting_id, user_id, name from meeting_participant where meeting_id = any($1) order by name nulls first',
      [[here, elsewhere]],
    );
    expect(names).toEqual([
      { meeting_id: here, user_id: bob, name: null },
      { meeting_id: here, user_id: alice, name: 'Alice Real-Name' },
      { meeting_id: elsewhere, user_id: bob, name: 'Another Bob' },
    ]);
  });
  it("erases a user's bodies, edits, reactions, read positions, inbox and files; shows 'deleted user'; live clients get message.deleted; idempotent", async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const b1 = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'secret one' });
    await as(bob!).chat.edit({ messageId: b1.id, body: 'secret one edited' });
    const root = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'root' });
    const reply = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'secret reply', replyToId: root.id });
    await as(bob!).chat.react({ messageId: root.id, emoji: '🔥' });
    await as(bob!).receipt.markRead({ roomId: room.id, seq: reply.seq });
    const fileId = await upload(bob!, room.id, 'secret file', 'secret.txt');
    await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'with file', attachments: [{ fileId }] });
    // Their name as known from a token.
    await t.env.sql(`insert into chat_user (tenant, id, name, roles, created_at, last_seen_at) values ('default', $1, 'Bob Real', '{}', now(), now())`, [bob]);

    const [{ storage_key: key }] = (await t.env.sql<{ storage_key: string }>('select storage_key from file where id = $1', [fileId])) as [{ storage_key: string }];
    expect(await t.app.services.files.storage.stat(key)).not.toBeNull();
    await using stream = await openLive(t.app, alice!, room.id);
    const result = await callerFor(t.app, admin()).admin.eraseUser({ userId: bob! });
    expect(result).toMatchObject({ userId: bob, messages: 3, edits: 1, reactions: 1, readPositions: 1, files: 1 });
    const deletedIds = new Set<string>();
    for (let i = 0; i < 3; i++) deletedIds.add((await nextOf(stream, 'message.deleted')).message.id);
    expect(deletedIds).toEqual(new Set([b1.id, reply.id, (await as(alice!).chat.history({ roomId: room.id })).messages.at(-1)!.id]));
    const removed = await nextOf(stream, 'reaction.removed');
    expect(removed).toMatchObject({ messageId: root.id, userId: bob, emoji: '🔥', reactions: [] });

    // Gone everywhere: history, thread, edits, search, export, at rest.
    const history = (await as(alice!).chat.history({ roomId: room.id })).messages;
    expect(history.filter((m) => m.senderId === bob).every((m) => m.body === null && m.deletedAt !== null)).toBe(true);
    expect(history.find((m) => m.id === root.id)).toMatchObject({ replyCount: 0, reactions: [] });
    expect((await as(alice!).chat.thread({ messageId: root.id })).replies.every((m) => m.body === null)).toBe(true);
    expect(await as(alice!).chat.edits({ messageId: b1.id })).toEqual([]);
    expect((await as(alice!).chat.search({ query: 'secret' })).hits ?? []).toEqual([]);
    const atRest = await t.env.sql<{ body: string | null }>('select body from message where sender_id = $1', [bob]);
    expect(atRest.every((r) => r.body === null)).toBe(true);
    expect(await t.env.sql('select 1 from message_edit e join message m on m.id = e.message_id where m.sender_id = $1', [bob])).toEqual([]);
    expect(await t.env.sql('select 1 from reaction where user_id = $1', [bob])).toEqual([]);
    expect(await t.env.sql<{ n: number }>('select last_read_seq::int as n from membership where user_id = $1', [bob])).toEqual([{ n: 0 }]);
    expect(await t.env.sql('select 1 from inbox_event where user_id = $1', [bob])).toEqual([]);
    // Handed to the file worker (woken at once, so it may be done already): the objects go, then the row.
    expect((await t.env.sql<{ state: string }>('select state from file where id = $1', [fileId])).map((r) => r.state)).not.toContain('attached');
    await t.app.services.fileWorker.runOnce();
    expect(await t.app.services.files.storage.stat(key)).toBeNull();
    // While its upload URL may still be used the row stays for a second removal, its name cleared;
    // once the URL has expired the next round takes the row.
    expect(await t.env.sql('select state, name from file where id = $1', [fileId])).toEqual([{ state: 'deleting', name: '' }]);
    await t.env.sql(`update file set created_at = now() - interval '1 hour', lease_until = null where id = $1`, [fileId]);
    await t.app.services.fileWorker.runOnce();
    expect(await t.env.sql('select 1 from file where id = $1', [fileId])).toEqual([]);
    expect(await t.app.services.files.storage.stat(key)).toBeNull();
    const members = await as(alice!).room.members({ roomId: room.id });
    expect(members.find((m) => m.userId === bob)).toMatchObject({ name: 'deleted user' });
    const recs = await exported(admin(), { userId: bob! });
    expect(JSON.stringify(recs)).not.toContain('secret');
    expect(ofType(recs, 'user')[0]).toMatchObject({ name: 'deleted user' });

    // Idempotent: nothing more to erase; a later token of theirs does not bring the name back.
    const again = await callerFor(t.app, admin()).admin.eraseUser({ userId: bob! });
    expect(again).toMatchObject({ messages: 0, edits: 0, reactions: 0, readPositions: 0, inboxItems: 0, files: 0 });
    await using c = clientFor(t.url, bob!, { name: 'Bob Again' });
    await c.trpc.auth.me.query();
    expect((await as(alice!).room.members({ roomId: room.id })).find((m) => m.userId === bob)).toMatchObject({ name: 'deleted user' });
    expect(await auditRows('user.erase', bob)).toHaveLength(2);
  });

  it("an erased reply's message.deleted carries its root's thread summary without it, live and in a replay (as chat.delete's does)", async () => {
    const [alice, bob] = users('th-alice', 'th-bob');
    const room = await groupRoom(alice!, [bob!]);
    const root = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'root' });
    const kept = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'alice reply', replyToId: root.id });
    const erased = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'bob reply', replyToId: root.id });
    await using stream = await openLive(t.app, alice!, room.id);
    await callerFor(t.app, admin()).admin.eraseUser({ userId: bob! });
    const deleted = await nextOf(stream, 'message.deleted');
    expect(deleted.message.id).toBe(erased.id);
    expect((await as(alice!).chat.thread({ messageId: root.id })).root).toMatchObject({ replyCount: 1 });
    const summary = { rootId: root.id, replyCount: 1, lastReplyAt: kept.createdAt };
    expect(deleted.thread, 'the live message.deleted of an erased reply has no thread summary').toEqual(summary);
    await using replay = await openEvents(t.app, actor(alice!), { roomId: room.id, lastEventId: String(erased.seq) });
    expect((await nextOf(replay, 'message.deleted')).thread, 'the replayed message.deleted of an erased reply has no thread summary').toEqual(summary);
  });

  it("erases the user's e-mail address and what notifications kept of them; a later token does not bring the address back", async () => {
    const [owner, bob] = users('em-owner', 'em-bob');
    const room = await groupRoom(owner!, [bob!]);
    const bobActor = { ...actor(bob!), email: 'bob@private.example.com' };
    await t.app.services.users.touch(bobActor);
    await as(bob!).notify.setPreferences({ push: true });
    await as(bob!).notify.setRoomPreference({ roomId: room.id, level: 'all' });
    await t.env.sql("insert into notify_digest (tenant, user_id, since, due_at, attempts) values ('default', $1, now(), now() + interval '1 hour', 0)", [bob]);
    // The export names the address the server keeps.
    expect((await exported(admin(), { userId: bob! })).find((r) => r.type === 'user')).toMatchObject({ email: 'bob@private.example.com' });
    await callerFor(t.app, admin()).admin.eraseUser({ userId: bob! });
    expect(await t.env.sql('select email from chat_user where tenant = $1 and id = $2', ['default', bob])).toEqual([{ email: null }]);
    for (const table of ['push_device', 'notify_preference', 'notify_room_preference', 'notify_push', 'notify_digest']) {
      expect(await t.env.sql(`select 1 from ${table} where user_id = $1`, [bob]), table).toEqual([]);
    }
    await t.app.services.users.touch(bobActor);
    expect(await t.env.sql('select email, name from chat_user where tenant = $1 and id = $2', ['default', bob])).toEqual([{ email: null, name: 'deleted user' }]);
  });

  it('erases in several batches when there is more than one page (pages of 2 here), each with its events', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const other = await groupRoom(bob!, [alice!]);
    const mine = [];
    for (let i = 0; i < 5; i++) {
      mine.push(await as(bob!).chat.send({ roomId: i % 2 ? room.id : other.id, clientId: uuid(), body: `batch ${i}` }));
      const theirs = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: `theirs ${i}` });
      await as(bob!).chat.react({ messageId: theirs.id, emoji: '👀' });
    }
    const small = complianceService(t.app, 2);
    await using stream = await openLive(t.app, alice!, room.id);
    const r = await small.eraseUser(admin(), bob!);
    expect(r).toMatchObject({ messages: 5, reactions: 5 });
    const deleted = new Set<string>();
    for (let i = 0; i < 2; i++) deleted.add((await nextOf(stream, 'message.deleted')).message.id);
    expect(deleted).toEqual(new Set(mine.filter((m) => m.roomId === room.id).map((m) => m.id)));
    expect(await t.env.sql('select 1 from message where sender_id = $1 and (body is not null or deleted_at is null)', [bob])).toEqual([]);
    expect(await t.env.sql('select 1 from reaction where user_id = $1', [bob])).toEqual([]);
    // Seqs stayed gap-free: every log row of the room is there.
    const [{ n, last }] = (await t.env.sql<{ n: number; last: number }>(
      'select count(*)::int as n, (select last_seq::int from room where id = $1) as last from room_event where room_id = $1',
      [room.id],
    )) as [{ n: number; last: number }];
    expect(n).toBe(last);
  });

  it('a message and a reaction the user commits while the erasure works through their reactions are erased too', async () => {
    const [alice, bob] = users('race-alice', 'race-bob');
    const { room } = await reactedRoom(alice!, bob!, 'before', 3);
    // The store as the erasure sees it: right before its first reaction batch (its second
    // transaction: the first erased the one message), bob sends and reacts once more.
    let calls = 0;
    const store = storeBeforeTransactions(t.app, async () => {
      if (++calls === 2) {
        const late = await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'sent while the erasure ran' });
        await as(bob!).chat.react({ messageId: late.id, emoji: '🙈' });
      }
    });
    const small = complianceService(t.app, 2, store);
    const r = await small.eraseUser(admin(), bob!);
    expect(calls).toBeGreaterThan(2);
    expect(await t.env.sql('select body from message where sender_id = $1 and (body is not null or deleted_at is null)', [bob]), 'a message committed during the erasure kept its body').toEqual([]);
    expect(await t.env.sql('select emoji from reaction where user_id = $1', [bob]), 'a reaction committed during the erasure was kept').toEqual([]);
    expect(r).toMatchObject({ messages: 2, reactions: 4 });
    expect((await auditRows('user.erase', bob)).map((a) => a.data)).toEqual([expect.objectContaining({ messages: 2, reactions: 4 })]);
  });

  it('erases in archived and encrypted rooms too', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'archived words' });
    await as(alice!).room.archive({ roomId: room.id });
    const r = await callerFor(t.app, admin()).admin.eraseUser({ userId: bob! });
    expect(r.messages).toBe(1);
    expect(await t.env.sql('select 1 from message where sender_id = $1 and body is not null', [bob])).toEqual([]);
  });

  it('a delete removes attachments, card and metadata at rest (its files still go); the erase also clears a message deleted before that kept them', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const atRest = (id: string) => t.env.sql('select body, key_id, attachments, card, metadata from message where id = $1', [id]);
    const cleared = [{ body: null, key_id: null, attachments: [], card: null, metadata: null }];

    // chat.delete: the content goes at rest, the uploaded file is still handed to the file worker.
    const fileId = await upload(bob!, room.id, 'scan', 'bob-passport-scan.txt');
    const deleted = await as(bob!).chat.send({
      roomId: room.id,
      clientId: uuid(),
      body: 'my papers',
      attachments: [{ fileId }, { url: 'https://files.example.com/bob-passport-scan.pdf', name: 'bob-passport-scan.pdf' }],
      metadata: { phone: '+1 555 0100' },
    });
    await as(bob!).chat.delete({ messageId: deleted.id });
    expect(await atRest(deleted.id)).toEqual(cleared);
    expect((await t.env.sql<{ state: string }>('select state from file where id = $1', [fileId])).map((r) => r.state)).not.toContain('attached');
    expect((await as(alice!).chat.history({ roomId: room.id })).messages.find((m) => m.id === deleted.id)).toMatchObject({
      body: null,
      attachments: [],
      metadata: null,
      card: null,
    });

    // A message deleted by an older version, which kept its attachments, card and metadata at rest.
    const old = await as(bob!).chat.send({
      roomId: room.id,
      clientId: uuid(),
      body: 'old papers',
      attachments: [{ url: 'https://files.example.com/bob-old.pdf', name: 'bob-old.pdf' }],
      metadata: { note: 'bob-private-note' },
    });
    await t.env.sql(
      `update message set deleted_at = now(), deleted_by = sender_id, body = null, key_id = null, card = '{"title":"bob card","fields":[]}' where id = $1`,
      [old.id],
    );
    const result = await callerFor(t.app, admin()).admin.eraseUser({ userId: bob! });
    expect(result.messages).toBe(1);
    expect(await atRest(old.id)).toEqual(cleared);
    expect(await atRest(deleted.id)).toEqual(cleared);
    expect(JSON.stringify(await t.env.sql('select attachments, card, metadata from message where sender_id = $1', [bob]))).not.toMatch(/bob-|\+1 555/);
    // Once clean, a repeat finds nothing to erase.
    expect(await callerFor(t.app, admin()).admin.eraseUser({ userId: bob! })).toMatchObject({ messages: 0, edits: 0, files: 0 });
  });

  it("blanks the user's words in others' mention excerpts also when the message is gone (room deleted), and only theirs", async () => {
    const [owner, bob, carol] = users('owner', 'bob', 'carol');
    const room = await groupRoom(owner!, [bob!, carol!]);
    await as(bob!).chat.send({ roomId: room.id, clientId: uuid(), body: 'carol, my home address is 12 Secret Lane', mentions: [carol!] });
    await as(owner!).chat.send({ roomId: room.id, clientId: uuid(), body: 'carol, the owner speaking', mentions: [carol!] });
    const kept = await groupRoom(owner!, [bob!, carol!]);
    await as(bob!).chat.send({ roomId: kept.id, clientId: uuid(), body: 'carol, also at 12 Secret Lane', mentions: [carol!] });
    await as(owner!).room.delete({ roomId: room.id });
    // The same user id in another tenant is someone else: their mention stays.
    const other = 'compliance-other';
    const otherRoom = await as(owner!, other).room.create({ kind: 'group', name: 'other', memberIds: [bob!, carol!] });
    await as(bob!, other).chat.send({ roomId: otherRoom.id, clientId: uuid(), body: 'carol, other tenant words', mentions: [carol!] });

    const mentions = (tenant: string, from: string) =>
      t.env.sql<{ data: Record<string, unknown> }>(
        `select data from inbox_event where tenant = $1 and user_id = $2 and type = 'mention' and data->>'from' = $3 order by seq`,
        [tenant, carol, from],
      );
    expect(await mentions('default', bob!)).toHaveLength(2);
    await callerFor(t.app, admin()).admin.eraseUser({ userId: bob! });

    const left = await mentions('default', bob!);
    expect(left.map((r) => r.data.excerpt)).toEqual(['', '']);
    expect(JSON.stringify(left)).not.toContain('Secret Lane');
    expect((await mentions('default', owner!)).map((r) => r.data.excerpt)).toEqual(['carol, the owner speaking']);
    expect((await mentions(other, bob!)).map((r) => r.data.excerpt)).toEqual(['carol, other tenant words']);
  });
});

describe('audit trail', () => {
  it('moderation, membership, room lifecycle, sessions and webhooks each write one row in their transaction', async () => {
    const [alice, bob, carol, dave] = users('alice', 'bob', 'carol', 'dave');
    const room = await groupRoom(alice!, [bob!, carol!]);
    const a = as(alice!);
    await a.room.addMembers({ roomId: room.id, userIds: [dave!] });
    await a.room.setRole({ roomId: room.id, userId: bob!, role: 'moderator' });
    await a.room.mute({ roomId: room.id, userId: carol! });
    await a.room.unmute({ roomId: room.id, userId: carol! });
    await a.room.ban({ roomId: room.id, userId: carol! });
    await a.room.unban({ roomId: room.id, userId: carol! });
    await a.room.removeMember({ roomId: room.id, userId: dave! });
    await a.room.archive({ roomId: room.id });
    await a.room.unarchive({ roomId: room.id });
    const boss = callerFor(t.app, admin(`boss${alice}`));
    await boss.auth.revoke({ userId: dave! });
    const hook = await boss.webhook.create({ url: 'http://127.0.0.1:9/hook', events: ['*'] });
    await boss.webhook.update({ id: hook.id, enabled: false });
    await boss.webhook.rotateSecret({ id: hook.id });
    await boss.webhook.delete({ id: hook.id });
    await a.room.delete({ roomId: room.id });

    const { events } = await boss.admin.audit({ roomId: room.id, limit: 500 });
    expect(events.map((e) => e.action).reverse()).toEqual([
      'member.add',
      'member.set_role',
      'member.mute',
      'member.unmute',
      'member.ban',
      'member.unban',
      'member.remove',
      'room.archive',
      'room.unarchive',
      'room.delete',
    ]);
    expect(events.find((e) => e.action === 'member.set_role')).toMatchObject({ actorId: alice, targetId: bob, data: { role: 'moderator', previous: 'member' } });
    const mine = await boss.admin.audit({ actorId: `boss${alice}` });
    expect(mine.events.map((e) => e.action).reverse()).toEqual(['session.revoke', 'webhook.create', 'webhook.update', 'webhook.rotate_secret', 'webhook.delete']);
    expect(mine.events.every((e) => e.targetId === hook.id || e.targetId === dave)).toBe(true);
    expect(JSON.stringify(mine.events)).not.toContain('whsec_');
    // Another tenant's admin sees none of it.
    expect((await callerFor(t.app, admin('x', 'tenant-b')).admin.audit({ roomId: room.id })).events).toEqual([]);
  });

  it('an action that fails writes no row (a ban refused FORBIDDEN, an add refused for a banned user)', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!, carol!]);
    await expectTRPCError(as(bob!).room.ban({ roomId: room.id, userId: carol! }), 'FORBIDDEN');
    await as(alice!).room.ban({ roomId: room.id, userId: carol! });
    await expectTRPCError(as(alice!).room.addMembers({ roomId: room.id, userIds: [carol!] }), 'FORBIDDEN');
    const rows = await t.env.sql<{ action: string; actor_id: string }>('select action, actor_id from audit_event where room_id = $1', [room.id]);
    expect(rows).toEqual([{ action: 'member.ban', actor_id: alice }]);
  });

  it('filters (since, actor, room, action) and pages newest first with a cursor', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, []);
    const start = new Date();
    const others: string[] = [];
    for (let i = 0; i < 5; i++) {
      const [u] = users(`p${i}`);
      others.push(u!);
      await as(alice!).room.addMembers({ roomId: room.id, userIds: [u!] });
    }
    await as(alice!).room.setRole({ roomId: room.id, userId: others[0]!, role: 'admin' });
    await as(others[0]!).room.addMembers({ roomId: room.id, userIds: [bob!] });
    const boss = callerFor(t.app, admin());
    const page1 = await boss.admin.audit({ roomId: room.id, action: 'member.add', limit: 4 });
    expect(page1.events).toHaveLength(4);
    expect(page1.nextCursor).not.toBeNull();
    const page2 = await boss.admin.audit({ roomId: room.id, action: 'member.add', limit: 4, cursor: page1.nextCursor });
    expect(page2.nextCursor).toBeNull();
    expect([...page1.events, ...page2.events].map((e) => e.targetId)).toEqual([bob, ...[...others].reverse()]);
    const at = [...page1.events, ...page2.events].map((e) => e.at.getTime());
    expect(at).toEqual([...at].sort((x, y) => y - x));
    expect((await boss.admin.audit({ actorId: others[0]!, roomId: room.id })).events.map((e) => e.targetId)).toEqual([bob]);
    expect((await boss.admin.audit({ since: new Date(Date.now() + 60_000) })).events).toEqual([]);
    expect((await boss.admin.audit({ since: start, roomId: room.id })).events).toHaveLength(7);
    await expectTRPCError(boss.admin.audit({ limit: 501 }), 'BAD_REQUEST');
    await expectTRPCError(boss.admin.audit({ cursor: 'nope' }), 'BAD_REQUEST');
  });

  it('a cursor whose id is not a UUID, or a since out of range, is BAD_REQUEST (not a database error)', async () => {
    const boss = callerFor(t.app, admin());
    const ms = Date.now();
    // 36 characters of [0-9a-f-], which PostgreSQL's uuid refuses.
    for (const id of ['0'.repeat(36), '-'.repeat(36), '0000000-00000-0000-0000-000000000000', '0123456789abcdef0123456789abcdef----']) {
      await expectTRPCError(boss.admin.audit({ cursor: `${ms}_${id}` }), 'BAD_REQUEST', /cursor must be a nextCursor of admin\.audit/);
    }
    // JavaScript dates reach further than PostgreSQL's timestamps (4713 BC to 294276 AD).
    for (const since of [new Date(-8.64e15), new Date('-004713-01-01T00:00:00Z'), new Date('1969-12-31T23:59:59.999Z'), new Date('+010000-01-01T00:00:00Z'), new Date(8.64e15)]) {
      await expectTRPCError(boss.admin.audit({ since }), 'BAD_REQUEST', /since must be between 1970-01-01 and 9999-12-31/);
    }
    // The bounds themselves, and a well-formed cursor of no event, are fine.
    expect((await boss.admin.audit({ since: new Date(0), limit: 1 })).events).toHaveLength(1);
    expect((await boss.admin.audit({ since: new Date('9999-12-31T23:59:59.999Z') })).events).toEqual([]);
    expect((await boss.admin.audit({ cursor: `0_${uuid()}` })).events).toEqual([]);
  });
});

describe('message delete erases at rest', () => {
  it('a deleted message keeps no body and no edit history in PostgreSQL', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'v1' });
    await as(alice!).chat.edit({ messageId: m.id, body: 'v2' });
    expect(await t.env.sql('select body from message_edit where message_id = $1', [m.id])).toEqual([{ body: 'v1' }]);
    await as(alice!).chat.delete({ messageId: m.id });
    expect(await t.env.sql('select body, key_id from message where id = $1', [m.id])).toEqual([{ body: null, key_id: null }]);
    expect(await t.env.sql('select 1 from message_edit where message_id = $1', [m.id])).toEqual([]);
  });
});
