/**
 * A deleted room's calls stay ended. `room.delete` ends the provider rooms of the room's meetings,
 * and the meeting rows go with the room; a join token minted before is a bearer token the server
 * cannot recall, and LiveKit creates a room anew when a participant joins with a valid token. The
 * server keeps the deleted room's meetings as long as their tokens may still be valid
 * (`deleted_meeting`), so the provider's webhook for such a join ends the provider room again.
 * Against the local doubles of both providers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, callerFor, dispose, expectTRPCError, roomKit, testEnv, type TestEnv, type TestServer } from './fixture.js';
import {
  dailyEvent,
  livekitEvent,
  postWebhook,
  signDaily,
  signLiveKit,
  startVideoServers,
  type DailyDouble,
  type LiveKitDouble,
} from './video-doubles.js';

const DAILY_SECRET = Buffer.from('daily-webhook-secret-for-deleted-rooms-01').toString('base64');

let env: TestEnv;
let lk: LiveKitDouble;
let daily: DailyDouble;
let lkSrv: TestServer;
let dailySrv: TestServer;

beforeAll(async () => {
  env = await testEnv('video-deleted-room');
  ({ lk, daily, lkSrv, dailySrv } = await startVideoServers(env, 'deleted', DAILY_SECRET));
});

afterAll(() => dispose(lk, daily, env));

const { users } = roomKit(() => lkSrv);
const as = (s: TestServer, id: string) => callerFor(s.app, actor(id));

/** Posts a LiveKit webhook signed like LiveKit does. */
async function lkPost(body: string) {
  return postWebhook(`${lkSrv.url}/webhooks/video/livekit`, body, { authorization: await signLiveKit(body, lk.apiKey, lk.apiSecret) });
}

async function dailyPost(body: string) {
  return postWebhook(`${dailySrv.url}/webhooks/video/daily`, body, signDaily(body, DAILY_SECRET));
}

/** LiveKit's webhook for a client that just joined the room `meetingId`. */
function lkJoined(meetingId: string, p: { sid: string; identity: string; joinedAt: number }) {
  const joinedAt = new Date(p.joinedAt);
  return livekitEvent({ event: 'participant_joined', room: meetingId, createdAt: joinedAt, participant: { sid: p.sid, identity: p.identity, joinedAt } });
}

const lkDeletes = (meetingId: string) => lk.requests.filter((r) => r.method === 'DeleteRoom' && r.body.room === meetingId).length;
const lkOnline = (meetingId: string) => (lk.rooms.get(meetingId)?.participants ?? []).map((p) => p.identity);

describe('LiveKit: a join token minted before room.delete', () => {
  it('re-creates the provider room on join (LiveKit auto-create); its webhook ends it again, with everyone in it', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(lkSrv, owner!).room.create({ kind: 'group', name: 'doomed', memberIds: [bob!] });
    const m = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Doomed' });
    const token = await as(lkSrv, bob!).video.joinToken({ meetingId: m.id });
    await as(lkSrv, owner!).room.delete({ roomId: room.id });
    expect({ deletes: lkDeletes(m.id), room: lk.rooms.has(m.id) }).toEqual({ deletes: 1, room: false });

    // Bob connects with the token he had: LiveKit creates the room anew and lets him in.
    const p = await lk.join(token.token);
    expect(lkOnline(m.id)).toEqual([bob]);
    const started = await lkPost(livekitEvent({ event: 'room_started', room: m.id }));
    expect(started).toEqual({ status: 200, body: { ok: true, outcome: 'processed' } });
    expect({ deletes: lkDeletes(m.id), room: lk.rooms.has(m.id), online: lkOnline(m.id) }).toEqual({ deletes: 2, room: false, online: [] });

    // He connects again (the room is created again): the join's webhook ends it again too.
    const again = await lk.join(token.token);
    expect((await lkPost(lkJoined(m.id, again))).body.outcome).toBe('processed');
    expect({ deletes: lkDeletes(m.id), room: lk.rooms.has(m.id), online: lkOnline(m.id) }).toEqual({ deletes: 3, room: false, online: [] });
    // A late delivery of the first join changes nothing more than ending it (a room already gone is no error).
    expect((await lkPost(lkJoined(m.id, p))).body.outcome).toBe('processed');
    // Nothing of the meeting comes back.
    expect(await env.sql('select id from meeting where id = $1', [m.id])).toEqual([]);
    expect(await env.sql('select meeting_id from meeting_participant where meeting_id = $1', [m.id])).toEqual([]);
  });

  it('of a meeting ended (video.end) before the room was deleted: the late join is ended too', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(lkSrv, owner!).room.create({ kind: 'group', name: 'ended-then-deleted', memberIds: [bob!] });
    const m = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Ended' });
    const token = await as(lkSrv, bob!).video.joinToken({ meetingId: m.id });
    await as(lkSrv, owner!).video.end({ meetingId: m.id });
    await as(lkSrv, owner!).room.delete({ roomId: room.id });
    // The meeting was ended before: the deletion asked nothing more.
    expect(lkDeletes(m.id)).toBe(1);

    const p = await lk.join(token.token);
    expect((await lkPost(lkJoined(m.id, p))).body.outcome).toBe('processed');
    expect({ deletes: lkDeletes(m.id), room: lk.rooms.has(m.id), online: lkOnline(m.id) }).toEqual({ deletes: 2, room: false, online: [] });
  });

  it('no new token for a deleted room: joinToken, get and end answer NOT_FOUND', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(lkSrv, owner!).room.create({ kind: 'group', name: 'gone', memberIds: [bob!] });
    const m = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Gone' });
    await as(lkSrv, owner!).room.delete({ roomId: room.id });
    await expectTRPCError(as(lkSrv, bob!).video.joinToken({ meetingId: m.id }), 'NOT_FOUND');
    await expectTRPCError(as(lkSrv, owner!).video.joinToken({ meetingId: m.id }), 'NOT_FOUND');
    await expectTRPCError(as(lkSrv, owner!).video.get({ meetingId: m.id, live: true }), 'NOT_FOUND');
    await expectTRPCError(as(lkSrv, owner!).video.end({ meetingId: m.id }), 'NOT_FOUND');
    expect(lkDeletes(m.id)).toBe(1);
  });
});

describe('the deleted rooms\' meetings kept for the webhooks', () => {
  it('are kept until their expiry plus a margin, ended or not; one whose tokens have all expired is not kept; then forgotten', async () => {
    const [owner] = users('owner');
    const room = await as(lkSrv, owner!).room.create({ kind: 'group', name: 'kept' });
    const open = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Open', ttlMinutes: 30 });
    const ended = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Ended' });
    await as(lkSrv, owner!).video.end({ meetingId: ended.id });
    const old = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Old' });
    await env.sql("update meeting set expires_at = now() - interval '1 hour' where id = $1", [old.id]);
    await as(lkSrv, owner!).room.delete({ roomId: room.id });

    const kept = await env.sql<{ meeting_id: string; provider: string; tenant: string; room_id: string; margin_s: string }>(
      `select d.meeting_id, d.provider, d.tenant, d.room_id, extract(epoch from d.keep_until - $2::timestamptz)::int::text as margin_s
         from deleted_meeting d where d.room_id = $1 and d.meeting_id = any($3) order by d.meeting_id`,
      [room.id, open.expiresAt, [open.id]],
    );
    expect(kept).toEqual([{ meeting_id: open.id, provider: 'livekit', tenant: 'default', room_id: room.id, margin_s: '900' }]);
    expect((await env.sql<{ id: string }>('select meeting_id as id from deleted_meeting where room_id = $1 order by meeting_id', [room.id])).map((r) => r.id)).toEqual(
      [open.id, ended.id].sort(),
    );

    // Past its time a kept meeting is no longer acted on, and the sweep's clean-up forgets it.
    await env.sql("update deleted_meeting set keep_until = now() - interval '1 second' where meeting_id = $1", [open.id]);
    expect((await lkPost(livekitEvent({ event: 'room_started', room: open.id }))).body.outcome).toBe('ignored');
    expect(lkDeletes(open.id)).toBe(1);
    expect(await lkSrv.app.services.meetings.expiry.forgetDeletedMeetings()).toBeGreaterThanOrEqual(1);
    expect((await env.sql<{ id: string }>('select meeting_id as id from deleted_meeting where room_id = $1', [room.id])).map((r) => r.id)).toEqual([ended.id]);
  });

  it('other events of a deleted room\'s meeting (leaves, room_finished) are ignored and ask the provider nothing', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(lkSrv, owner!).room.create({ kind: 'group', name: 'quiet', memberIds: [bob!] });
    const m = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Quiet' });
    await as(lkSrv, owner!).room.delete({ roomId: room.id });
    const at = new Date();
    expect((await lkPost(livekitEvent({ event: 'room_finished', room: m.id }))).body.outcome).toBe('ignored');
    const left = livekitEvent({ event: 'participant_left', room: m.id, participant: { sid: 'PA_left', identity: bob!, joinedAt: at } });
    expect((await lkPost(left)).body.outcome).toBe('ignored');
    expect(lkDeletes(m.id)).toBe(1);
  });

  it('a failing end of a re-created room is logged; the webhook still gets its answer, and the next join asks again', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(lkSrv, owner!).room.create({ kind: 'group', name: 'flaky', memberIds: [bob!] });
    const m = await as(lkSrv, owner!).video.create({ roomId: room.id, title: 'Flaky' });
    const token = await as(lkSrv, bob!).video.joinToken({ meetingId: m.id });
    await as(lkSrv, owner!).room.delete({ roomId: room.id });

    const p = await lk.join(token.token);
    lk.beforeDelete = (name) => (name === m.id ? 'fail' : undefined);
    try {
      expect(await lkPost(lkJoined(m.id, p))).toEqual({ status: 200, body: { ok: true, outcome: 'processed' } });
    } finally {
      lk.beforeDelete = null;
    }
    expect({ deletes: lkDeletes(m.id), online: lkOnline(m.id) }).toEqual({ deletes: 2, online: [bob] });
    const again = await lk.join(token.token);
    expect((await lkPost(lkJoined(m.id, again))).body.outcome).toBe('processed');
    expect({ deletes: lkDeletes(m.id), room: lk.rooms.has(m.id), online: lkOnline(m.id) }).toEqual({ deletes: 3, room: false, online: [] });
  });
});

describe('Daily', () => {
  const dailyDeletes = (meetingId: string) => daily.requests.filter((r) => r.method === 'DELETE' && r.path === `/rooms/${meetingId}`).length;

  it('a token minted before room.delete joins nothing: Daily rooms are created by the API only, and the deletion deleted it', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(dailySrv, owner!).room.create({ kind: 'group', name: 'daily-doomed', memberIds: [bob!] });
    const m = await as(dailySrv, owner!).video.create({ roomId: room.id, title: 'Doomed' });
    const token = await as(dailySrv, bob!).video.joinToken({ meetingId: m.id });
    await as(dailySrv, owner!).room.delete({ roomId: room.id });
    expect({ deletes: dailyDeletes(m.id), room: daily.rooms.has(m.id) }).toEqual({ deletes: 1, room: false });
    expect(() => daily.join(token.token)).toThrow(/no such room/);
    // Were the room still there (the deletion's provider call failed), a join's webhook deletes it again.
    const body = dailyEvent('participant.joined', { room: m.id, user_id: bob, user_name: bob, session_id: 'S_1', joined_at: Date.now() / 1000 });
    expect(await dailyPost(body)).toEqual({ status: 200, body: { ok: true, outcome: 'processed' } });
    expect(dailyDeletes(m.id)).toBe(2);
  });

  it('a token being minted while the room is deleted is not handed out: NOT_FOUND', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(dailySrv, owner!).room.create({ kind: 'group', name: 'daily-race', memberIds: [bob!] });
    const m = await as(dailySrv, owner!).video.create({ roomId: room.id, title: 'Race' });
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let minting!: () => void;
    const reached = new Promise<void>((resolve) => (minting = resolve));
    daily.beforeToken = (props) => {
      if (props.room_name !== m.id) return;
      minting();
      return held;
    };
    try {
      const pending = as(dailySrv, bob!).video.joinToken({ meetingId: m.id });
      pending.catch(() => undefined);
      await reached;
      await as(dailySrv, owner!).room.delete({ roomId: room.id });
      release();
      await expectTRPCError(pending, 'NOT_FOUND');
    } finally {
      daily.beforeToken = null;
      release();
    }
  });
});
