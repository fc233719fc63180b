/**
 * What an erasure (`admin.eraseUser`) left behind besides the rows it erased: who reacted with what
 * in the room logs' reaction events (what a resumed stream replays and a room export gives), and the
 * titles of the user's video meetings (the meeting, the server's notices quoting them, others' invites,
 * the webhook outbox). Also that a user who commits such things while the erasure runs is not taken
 * for fully erased while they remain. Against a LiveKit double (src/video), real PostgreSQL and Redis.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, callerFor, complianceService, dispose, makeConfig, nextOf, openEvents, openLive, roomKit, storeBeforeTransactions, testEnv, uuid } from './fixture.js';
import type { Actor, RoomEvent, TestEnv, TestServer } from './fixture.js';
import { enqueue, type PushKind } from '../src/store/notify.js';
import { livekitEvent, postWebhook, signLiveKit, startLiveKitDouble, TEST_REMOVALS, type LiveKitDouble } from './video-doubles.js';

let env: TestEnv;
let lk: LiveKitDouble;
let srv: TestServer;

beforeAll(async () => {
  env = await testEnv('erasure-leftovers');
  lk = await startLiveKitDouble();
  srv = await env.startServer({
    video: { ...makeConfig().video, provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret }, daily: null, removals: TEST_REMOVALS },
    // The outbox rows are what is looked at: the worker never sends them (the endpoint is not there).
    webhooks: { ...makeConfig().webhooks, allowPrivateUrls: true, pollMs: 600_000 },
  });
});
afterAll(() => dispose(lk, env));

const { users, as, groupRoom, reactedRoom } = roomKit(() => srv);
const admin = (tenant = 'default'): Actor => actor('boss', tenant, ['admin']);
type Rec = { type: string } & Record<string, unknown>;

const lastSeq = async (roomId: string) => (await env.sql<{ n: number }>('select last_seq::int as n from room where id = $1', [roomId]))[0]!.n;

/** Every durable event of the room after `after`, as a stream resumed from there replays them. */
async function replay(who: string, roomId: string, after: number): Promise<RoomEvent[]> {
  const upto = await lastSeq(roomId);
  await using s = await openEvents(srv.app, actor(who), { roomId, lastEventId: String(after) });
  const out: RoomEvent[] = [];
  for (;;) {
    const { event } = await s.next(10_000);
    if (!('seq' in event) || event.type === 'ready' || event.type === 'reset') throw new Error(`a replay from ${after} began with ${event.type}`);
    out.push(event);
    if (event.seq >= upto) return out;
  }
}

async function exportedRoom(roomId: string): Promise<Rec[]> {
  const out: Rec[] = [];
  for await (const r of (await callerFor(srv.app, admin()).admin.exportRoom({ roomId })) as AsyncIterable<unknown>) out.push(JSON.parse(JSON.stringify(r)) as Rec);
  return out;
}

/** Posts a LiveKit webhook signed as LiveKit does. */
async function lkPost(body: string) {
  const res = await postWebhook(`${srv.url}/webhooks/video/livekit`, body, {
    authorization: await signLiveKit(body, lk.apiKey, lk.apiSecret),
    'content-type': 'application/webhook+json',
  });
  expect(res.body).toMatchObject({ ok: true });
}

/** The room-log reaction events of the tenant that still name the user. */
const reactionRowsNaming = (userId: string) =>
  env.sql<{ seq: number; data: Record<string, unknown> }>(
    `select e.seq::int as seq, e.data from room_event e join room r on r.id = e.room_id
     where r.tenant = 'default' and e.type like 'reaction.%' and e.data->>'userId' = $1`,
    [userId],
  );

describe('erasure: reaction events of the room logs', () => {
  it("a replay from before the erasure no longer says who reacted with what: the user's reaction events keep their seq and the message's reactions, not their id or emoji", async () => {
    const [alice, bob, carol] = users('rx-alice', 'rx-bob', 'rx-carol');
    const room = await groupRoom(alice!, [bob!, carol!]);
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'how are you all?' });
    const before = m.seq;
    await as(bob!).chat.react({ messageId: m.id, emoji: '🦄' });
    // Taken back by bob himself before the erasure: its reaction.removed names him too.
    await as(bob!).chat.react({ messageId: m.id, emoji: '🐙' });
    await as(bob!).chat.unreact({ messageId: m.id, emoji: '🐙' });
    await as(carol!).chat.react({ messageId: m.id, emoji: '🦄' });
    const beforeErase = await replay(alice!, room.id, before);
    expect(beforeErase.filter((e) => e.type.startsWith('reaction.') && 'userId' in e && e.userId === bob)).toHaveLength(3);

    await using stream = await openLive(srv.app, alice!, room.id);
    const result = await callerFor(srv.app, admin()).admin.eraseUser({ userId: bob! });
    expect(result).toMatchObject({ reactions: 1 });
    // Open clients still learn the removal as it happens.
    expect(await nextOf(stream, 'reaction.removed')).toMatchObject({ messageId: m.id, userId: bob, emoji: '🦄', reactions: [{ emoji: '🦄', count: 1, me: false }] });

    const events = await replay(alice!, room.id, before);
    const reactions = events.filter((e): e is Extract<RoomEvent, { type: 'reaction.added' | 'reaction.removed' }> => e.type === 'reaction.added' || e.type === 'reaction.removed');
    // bob's three, carol's and the erasure's removal: every seq is still there, in order.
    expect(events.map((e) => ('seq' in e ? e.seq : 0))).toEqual(Array.from({ length: events.length }, (_, i) => before + 1 + i));
    expect(reactions).toHaveLength(5);
    expect(
      reactions.filter((e) => e.userId === bob || e.emoji === '🐙'),
      'a replay after the erasure still names the erased user or their emoji',
    ).toEqual([]);
    // The log reads as if bob had never reacted: his events name nobody, and no event's reactions
    // count his (the counts before and after one of his events would tell his emoji).
    const unicorn = [{ emoji: '🦄', count: 1, me: false }];
    expect(reactions.map((e) => [e.type, e.userId, e.emoji, e.reactions])).toEqual([
      ['reaction.added', '', '', []],
      ['reaction.added', '', '', []],
      ['reaction.removed', '', '', []],
      ['reaction.added', carol, '🦄', unicorn],
      ['reaction.removed', '', '', unicorn],
    ]);
    expect((await as(alice!).chat.history({ roomId: room.id })).messages.find((x) => x.id === m.id)!.reactions).toEqual(unicorn);

    // At rest: no reaction of bob's, no log row naming him; the room's export neither.
    expect(await env.sql('select 1 from reaction where user_id = $1', [bob])).toEqual([]);
    expect(await reactionRowsNaming(bob!)).toEqual([]);
    const exported = await exportedRoom(room.id);
    // (Membership events keep naming him, as his memberships stay.)
    expect(exported.filter((r) => r.type === 'event' && String(r.event).startsWith('reaction.') && JSON.stringify(r.data).includes(bob!))).toEqual([]);
    expect(JSON.stringify(exported)).not.toContain('🐙');
    // The log stays gapless: every seq has its row.
    const [{ n }] = (await env.sql<{ n: number }>('select count(*)::int as n from room_event where room_id = $1', [room.id])) as [{ n: number }];
    expect(n).toBe(await lastSeq(room.id));
    // A repeat has nothing left to do.
    expect(await callerFor(srv.app, admin()).admin.eraseUser({ userId: bob! })).toMatchObject({ reactions: 0, meetings: 0 });
  });

  it("also when retention removed the oldest events, their reaction among them: the others' events no longer count it", async () => {
    const [alice, bob, carol] = users('rr-alice', 'rr-bob', 'rr-carol');
    const room = await groupRoom(alice!, [bob!, carol!]);
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'old news' });
    await as(bob!).chat.react({ messageId: m.id, emoji: '🐝' });
    const added = await lastSeq(room.id);
    await as(carol!).chat.react({ messageId: m.id, emoji: '🎉' });
    // As retention does: the log's oldest events go, bob's reaction.added among them.
    await env.sql('delete from room_event where room_id = $1 and seq <= $2', [room.id, added]);
    await callerFor(srv.app, admin()).admin.eraseUser({ userId: bob! });
    const rows = await env.sql<{ seq: number; type: string; data: Record<string, unknown> }>(
      `select seq::int as seq, type, data from room_event where room_id = $1 and type like 'reaction.%' order by seq`,
      [room.id],
    );
    expect(rows.map((r) => [r.type, r.data.userId, r.data.emoji, r.data.reactions])).toEqual([
      ['reaction.added', carol, '🎉', [{ emoji: '🎉', count: 1, me: false }]],
      ['reaction.removed', '', '', [{ emoji: '🎉', count: 1, me: false }]],
    ]);
  });

  it("the same user id in another tenant is someone else: their reaction events stay as they were", async () => {
    const [alice, bob] = users('rt-alice', 'rt-bob');
    const tenant = 'erasure-other';
    const theirs = await as(alice!, tenant).room.create({ kind: 'group', name: 'other', memberIds: [bob!] });
    const m = await as(alice!, tenant).chat.send({ roomId: theirs.id, clientId: uuid(), body: 'other tenant' });
    await as(bob!, tenant).chat.react({ messageId: m.id, emoji: '🌵' });
    const here = await groupRoom(alice!, [bob!]);
    const h = await as(alice!).chat.send({ roomId: here.id, clientId: uuid(), body: 'here' });
    await as(bob!).chat.react({ messageId: h.id, emoji: '🌵' });
    await callerFor(srv.app, admin()).admin.eraseUser({ userId: bob! });
    const rows = await env.sql<{ data: Record<string, unknown> }>(`select data from room_event where room_id = $1 and type = 'reaction.added'`, [theirs.id]);
    expect(rows.map((r) => [r.data.userId, r.data.emoji])).toEqual([[bob, '🌵']]);
  });
});

describe('erasure: meeting titles', () => {
  it("clears the titles of the user's meetings and of the notices, invites and webhook deliveries that quote them; others' meetings keep theirs", async () => {
    const [alice, bob, carol] = users('mt-alice', 'mt-bob', 'mt-carol');
    const room = await groupRoom(alice!, [bob!, carol!]);
    const title = 'Bob oncology follow-up';
    await callerFor(srv.app, actor(`boss-${alice}`, 'default', ['admin'])).webhook.create({ url: 'http://127.0.0.1:9/hook', events: ['meeting.started', 'meeting.ended'] });
    const m = await as(bob!).video.create({ roomId: room.id, title });
    const kept = await as(carol!).video.create({ roomId: room.id, title: 'Carol planning' });
    // Live through the provider's webhook (its notice sent as bob, the creator), ended by alice (her notice).
    await lkPost(livekitEvent({ event: 'room_started', room: m.id }));
    await as(alice!).video.end({ meetingId: m.id });
    await as(carol!).video.end({ meetingId: kept.id });
    const notices = async () =>
      (await as(alice!).chat.history({ roomId: room.id, limit: 100 })).messages.filter((x) => x.kind === 'system' && /^Meeting/.test(x.body ?? '')).map((x) => ({ id: x.id, senderId: x.senderId, body: x.body }));
    const quoted = (await notices()).filter((x) => x.body?.includes(title));
    expect(quoted.map((x) => [x.senderId, x.body])).toEqual([
      [bob, `Meeting "${title}" started`],
      [alice, `Meeting "${title}" ended`],
    ]);
    const endedByAlice = quoted[1]!;
    const invites = () =>
      env.sql<{ user_id: string; data: Record<string, unknown> }>(`select user_id, data from inbox_event where type = 'meeting.invite' and data->>'meetingId' = $1 order by user_id`, [m.id]);
    expect((await invites()).map((i) => i.data.title)).toEqual([title, title]);
    const deliveries = () => env.sql<{ data: Record<string, unknown> }>(`select data from webhook_delivery where event_type like 'meeting.%' and data->>'meetingId' = $1`, [m.id]);
    expect((await deliveries()).map((d) => d.data.title)).toEqual([title, title]);

    await using stream = await openLive(srv.app, alice!, room.id);
    const result = await callerFor(srv.app, admin()).admin.eraseUser({ userId: bob! });
    expect(await as(alice!).video.get({ meetingId: m.id }), 'the meeting kept the title the erased user wrote').toMatchObject({ title: null, createdBy: bob });
    expect(await as(alice!).video.get({ meetingId: kept.id })).toMatchObject({ title: 'Carol planning' });
    expect((await notices()).find((x) => x.id === endedByAlice.id)).toEqual({ id: endedByAlice.id, senderId: alice, body: 'Meeting ended' });
    expect((await notices()).map((x) => x.body)).toEqual(['Meeting ended', 'Meeting "Carol planning" ended']);
    expect((await invites()).map((i) => i.data.title), 'the invites in the other members\' inboxes kept the title').toEqual([null, null]);
    expect((await deliveries()).map((d) => d.data.title), 'the webhook outbox kept the title').toEqual([null, null]);
    // Open clients get the notice as it reads now.
    const edited = await nextOf(stream, 'message.edited');
    expect(edited.message).toMatchObject({ id: endedByAlice.id, senderId: alice, body: 'Meeting ended', deletedAt: null, editedAt: null });
    expect(result).toMatchObject({ meetings: 1 });
    // Nowhere at rest, nor in a replay of the whole room, nor in its export.
    for (const table of ['meeting', 'message', 'inbox_event', 'webhook_delivery', 'room_event']) {
      expect(await env.sql(`select 1 from ${table} t where t::text like $1`, [`%${title}%`]), table).toEqual([]);
    }
    expect(JSON.stringify(await replay(alice!, room.id, 0))).not.toContain(title);
    expect(JSON.stringify(await exportedRoom(room.id))).not.toContain(title);
    expect(await callerFor(srv.app, admin()).admin.eraseUser({ userId: bob! })).toMatchObject({ meetings: 0 });
  });
  it("clears an invite's title in a push row whose kind a more personal item decided (a mention queued before the invite)", async () => {
    const [alice, bob, carol] = users('mp-alice', 'mp-bob', 'mp-carol');
    const room = await groupRoom(alice!, [bob!, carol!]);
    const title = 'Bob clinic appointment';
    await env.sql(
      `insert into push_device (id, tenant, user_id, kind, endpoint, p256dh, auth, created_at) values ($1, 'default', $2, 'webpush', 'https://push.example/erasure', 'k', 'a', now())`,
      [uuid(), carol],
    );
    // Queued for carol's row of the room while it waits for its push: alice's mention, then bob's
    // invite. The row keeps the mention's kind (the more personal) and the newest item's sender
    // and title: bob's invite.
    const queue = (kind: PushKind, fromUser: string, t: string | null) =>
      enqueue(
        srv.app.services.store.db(),
        [{ tenant: 'default', userId: carol!, roomId: room.id, kind, messageId: null, messageSeq: null, fromUser, title: t, url: null }],
        { push: true, digest: false, coalesceMs: 600_000, digestDelayMs: 0 },
      );
    await queue('mention', alice!, null);
    await queue('meeting.invite', bob!, title);
    const row = () => env.sql<{ kind: string; from_user: string; title: string | null }>('select kind, from_user, title from notify_push where user_id = $1', [carol]);
    expect(await row()).toEqual([{ kind: 'mention', from_user: bob, title }]);
    await callerFor(srv.app, admin()).admin.eraseUser({ userId: bob! });
    expect((await row()).map((r) => r.title), "the push queue kept the erased user's meeting title").toEqual([null]);
  });
});

describe('erasure: rounds', () => {
  it('reaction events and a meeting title the user commits behind the batches are found by the last transaction and erased in another round', async () => {
    const [alice, bob] = users('rd-alice', 'rd-bob');
    // Reactions on more messages than a batch holds (pages of 2 here).
    const { room, theirs } = await reactedRoom(alice!, bob!, 'mine', 5);
    const m = theirs[2]!;
    await as(bob!).video.create({ roomId: room.id, title: 'first title' });

    // The store as the erasure sees it: once everything of bob's is erased (so right before the
    // last transaction), bob reacts and takes it back (two log rows naming him, no reaction row)
    // and creates a meeting with a title.
    const erasedSoFar = async () => {
      const [row] = await env.sql<{ left: boolean }>(
        `select exists (select 1 from message where sender_id = $1 and deleted_at is null)
             or exists (select 1 from reaction where user_id = $1)
             or exists (select 1 from room_event where room_id = $2 and type like 'reaction.%' and data->>'userId' = $1)
             or exists (select 1 from meeting where created_by = $1 and title is not null) as left`,
        [bob, room.id],
      );
      return !row!.left;
    };
    let calls = 0;
    let injected = 0;
    const store = storeBeforeTransactions(srv.app, async () => {
      calls++;
      if (injected === 0 && (await erasedSoFar())) {
        injected = calls;
        await as(bob!).chat.react({ messageId: m.id, emoji: '🙈' });
        await as(bob!).chat.unreact({ messageId: m.id, emoji: '🙈' });
        await as(bob!).video.create({ roomId: room.id, title: 'late title' });
      }
    });
    const small = complianceService(srv.app, 2, store);
    const r = await small.eraseUser(admin(), bob!);
    expect(injected).toBeGreaterThan(0);
    expect(calls, 'the erasure ended in the round the late rows were committed in').toBeGreaterThan(injected);
    expect(await reactionRowsNaming(bob!), 'reaction events committed during the erasure still name the user').toEqual([]);
    expect(await env.sql('select title from meeting where created_by = $1 and title is not null', [bob]), 'a meeting title committed during the erasure was kept').toEqual([]);
    expect(r).toMatchObject({ messages: 1, reactions: 5, meetings: 2 });
    // No reaction event of the room counts bob's any more.
    const rows = await env.sql<{ data: { reactions: unknown[] } }>(`select data from room_event where room_id = $1 and type like 'reaction.%'`, [room.id]);
    expect(rows.map((x) => x.data.reactions)).toEqual(rows.map(() => []));
  });
});
