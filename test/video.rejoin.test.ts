/**
 * Join tokens minted before a ban or a removal: they are bearer tokens the server cannot recall, so a
 * self-hosted LiveKit server without token revocation (or a new Daily session, which forgets Daily's
 * ejection bans) lets the user back into the call. The provider's signed join webhook closes that:
 * a join of someone who may not be in the room's calls now is taken out again (LiveKit
 * RemoveParticipant, Daily eject), against the local doubles of both providers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, callerFor, clientFor, DailyProvider, dispose, roomKit, testEnv, uuid, type Actor, type Config, type TestEnv, type TestServer } from './fixture.js';
import {
  dailyEvent,
  livekitEvent,
  postWebhook,
  signDaily,
  signLiveKit,
  nextRemoval,
  removalOutcomes,
  startVideoServers,
  TEST_REMOVALS,
  videoConfig,
  type DailyDouble,
  type LiveKitDouble,
} from './video-doubles.js';

const DAILY_SECRET = Buffer.from('daily-webhook-secret-for-rejoin-tests-0123').toString('base64');
const BAD_SECRET = 'not-the-secret-not-the-secret';

let env: TestEnv;
let lk: LiveKitDouble;
let daily: DailyDouble;
let lkSrv: TestServer;
let dailySrv: TestServer;

function server(label: string, overrides: Partial<Config>): Promise<TestServer> {
  return env.startServer({ redisPrefix: env.prefix(label), ...overrides });
}

beforeAll(async () => {
  env = await testEnv('video-rejoin');
  ({ lk, daily, lkSrv, dailySrv } = await startVideoServers(env, 'rejoin', DAILY_SECRET));
});

afterAll(() => dispose(lk, daily, env));

const { users } = roomKit(() => lkSrv);
const as = (s: TestServer, a: Actor | string) => callerFor(s.app, typeof a === 'string' ? actor(a) : a);
const dailyIdentity = (userId: string) => new DailyProvider({ apiKey: '', apiUrl: '', webhookSecret: null }).identityOf(userId);
/** A time in whole seconds (Daily's webhooks carry seconds). */
const secondsAgo = (s: number) => new Date((Math.floor(Date.now() / 1000) - s) * 1000);

/** A client connected to a provider room with a join token. */
interface Session {
  sessionId: string;
  identity: string;
}

/** What a test does with one provider: connect with a token, post the signed join webhook, see what the provider was asked. */
interface Harness {
  name: 'livekit' | 'daily';
  srv: () => TestServer;
  /** A client connecting with the token (the double checks it like the provider). */
  connect(token: string): Promise<Session>;
  /** The provider's signed join webhook for that connection. */
  joined(
    meetingId: string,
    session: Session,
    joinedAt: Date,
    opts?: { id?: string; kind?: number; url?: string; secret?: string },
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  /** Identities the server asked the provider to take out of the meeting, in order. */
  removals(meetingId: string): string[];
  /** Identities in the provider's room now. */
  online(meetingId: string): string[];
  /**
   * Lets a token minted before a removal in again, as a self-hosted LiveKit server without token
   * revocation does; Daily forgets its ejection bans when a new session of the room starts.
   */
  forgetRemovals(meetingId: string): void;
  /** The identity our tokens carry for a user. */
  identityOf(userId: string): string;
}

const harnesses: Harness[] = [
  {
    name: 'livekit',
    srv: () => lkSrv,
    async connect(token) {
      const p = await lk.join(token);
      return { sessionId: p.sid, identity: p.identity };
    },
    async joined(meetingId, session, joinedAt, opts = {}) {
      const body = livekitEvent({
        event: 'participant_joined',
        room: meetingId,
        ...(opts.id === undefined ? {} : { id: opts.id }),
        createdAt: joinedAt,
        participant: { sid: session.sessionId, identity: session.identity, joinedAt, ...(opts.kind === undefined ? {} : { kind: opts.kind }) },
      });
      return postWebhook(opts.url ?? `${lkSrv.url}/webhooks/video/livekit`, body, {
        authorization: await signLiveKit(body, lk.apiKey, opts.secret ?? lk.apiSecret),
      });
    },
    removals: (meetingId) => lk.requests.filter((r) => r.method === 'RemoveParticipant' && r.body.room === meetingId).map((r) => String(r.body.identity)),
    online: (meetingId) => (lk.rooms.get(meetingId)?.participants ?? []).map((p) => p.identity),
    forgetRemovals: () => undefined,
    identityOf: (userId) => userId,
  },
  {
    name: 'daily',
    srv: () => dailySrv,
    async connect(token) {
      const p = daily.join(token);
      return { sessionId: p.id, identity: p.userId };
    },
    async joined(meetingId, session, joinedAt, opts = {}) {
      const body = dailyEvent(
        'participant.joined',
        { room: meetingId, user_id: session.identity, user_name: session.identity, session_id: session.sessionId, joined_at: joinedAt.getTime() / 1000 },
        opts.id,
      );
      return postWebhook(`${dailySrv.url}/webhooks/video/daily`, body, signDaily(body, DAILY_SECRET));
    },
    removals: (meetingId) =>
      daily.requests.filter((r) => r.method === 'POST' && r.path === `/rooms/${meetingId}/eject`).map((r) => (r.body.user_ids as string[])[0]!),
    online: (meetingId) => (daily.rooms.get(meetingId)?.presence ?? []).map((p) => p.userId),
    forgetRemovals: (meetingId) => daily.rooms.get(meetingId)?.banned.clear(),
    identityOf: dailyIdentity,
  },
];

const ejections = (s: TestServer) => s.app.services.deps.counters.videoEjections;

/** A group room of owner, a moderator and members, with a meeting. */
async function meetingRoom(s: TestServer, owner: string, mod: string, members: string[]) {
  const room = await as(s, owner).room.create({ kind: 'group', name: `rejoin-${owner}`, memberIds: [mod, ...members] });
  await as(s, owner).room.setRole({ roomId: room.id, userId: mod, role: 'moderator' });
  const meeting = await as(s, owner).video.create({ roomId: room.id, title: 'Rejoin' });
  return { room, meeting };
}

describe('a join token minted before a ban or removal is refused on the join webhook', () => {
  for (const h of harnesses) {
    for (const action of ['ban', 'removeMember'] as const) {
      it(`${h.name}: room.${action}, then the old token joins: the webhook takes the user out; members stay`, async () => {
        const s = h.srv();
        const [owner, mod, carol] = users('owner', 'mod', 'carol');
        // On Daily, longer than its 36 characters: the token carries a hashed user_id.
        const bob = h.name === 'daily' ? `bob-${uuid()}-with-a-long-id` : users('bob')[0]!;
        const identity = h.identityOf(bob);
        const { room, meeting } = await meetingRoom(s, owner!, mod!, [bob, carol!]);
        const bobToken = await as(s, bob).video.joinToken({ meetingId: meeting.id });

        const removed = nextRemoval(s, room.id, bob);
        await as(s, mod!).room[action]({ roomId: room.id, userId: bob });
        // The ban or removal asked the provider once, after its answer (Bob was in no call then).
        expect(await removed).toMatchObject({ outcome: 'removed', reason: action === 'ban' ? 'banned' : 'removed', attempts: 1 });
        expect(h.removals(meeting.id)).toEqual([identity]);

        h.forgetRemovals(meeting.id);
        const session = await h.connect(bobToken.token);
        expect(session.identity).toBe(identity);
        expect(h.online(meeting.id)).toEqual([identity]);
        const counted = ejections(s);
        const joinedAt = secondsAgo(2);

        expect(await h.joined(meeting.id, session, joinedAt)).toEqual({ status: 200, body: { ok: true, outcome: 'processed' } });
        // Answered after the removal: the provider was asked for that identity in that meeting, and Bob is out.
        expect(h.removals(meeting.id)).toEqual([identity, identity]);
        expect(h.online(meeting.id)).toEqual([]);
        expect(ejections(s)).toBe(counted + 1);
        const metrics = await (await fetch(`${s.url}/metrics`)).text();
        expect(metrics).toContain(`\nchat_video_ejections_total ${counted + 1}\n`);

        // The connection is recorded, closed by the removal; it did not start the meeting.
        const got = await as(s, owner!).video.get({ meetingId: meeting.id });
        expect(got.status).toBe('scheduled');
        // A banned user's hashed identity maps back through the ban; a removed one's maps to nobody we know.
        const recordedAs = h.name === 'daily' && action === 'removeMember' ? identity : bob;
        expect(got.participants).toEqual([{ userId: recordedAs, joinedAt, leftAt: expect.any(Date) }]);
        expect(got.participants[0]!.leftAt!.getTime()).toBeGreaterThanOrEqual(joinedAt.getTime());
        const { messages } = await as(s, owner!).chat.history({ roomId: room.id, limit: 100 });
        expect(messages.filter((m) => m.kind === 'system' && /^Meeting/.test(m.body ?? ''))).toEqual([]);

        // Carol, a member, joins: nobody is asked to remove her, and the meeting goes live.
        const carolSession = await h.connect((await as(s, carol!).video.joinToken({ meetingId: meeting.id })).token);
        expect((await h.joined(meeting.id, carolSession, secondsAgo(1))).body.outcome).toBe('processed');
        expect(h.removals(meeting.id)).toEqual([identity, identity]);
        expect(h.online(meeting.id)).toEqual([carol]);
        expect(ejections(s)).toBe(counted + 1);
        const after = await as(s, owner!).video.get({ meetingId: meeting.id });
        expect(after.status).toBe('live');
        expect(after.participants.find((p) => p.userId === carol)).toMatchObject({ leftAt: null });
      });
    }

    it(`${h.name}: a join before the ban whose webhook arrives after it is taken out too; a repeated delivery is not`, async () => {
      const s = h.srv();
      const [owner, mod, bob] = users('owner', 'mod', 'bob');
      const { room, meeting } = await meetingRoom(s, owner!, mod!, [bob!]);
      const session = await h.connect((await as(s, bob!).video.joinToken({ meetingId: meeting.id })).token);
      const joinedAt = secondsAgo(5);
      const removed = nextRemoval(s, room.id, bob!);
      await as(s, mod!).room.ban({ roomId: room.id, userId: bob! });
      expect((await removed).outcome).toBe('removed');
      expect(h.removals(meeting.id)).toEqual([bob]);
      expect(h.online(meeting.id)).toEqual([]);

      // The join (while still a member) is reported after the ban: Bob is banned now, so it is refused.
      const id = `EV_${uuid()}`;
      expect(await h.joined(meeting.id, session, joinedAt, { id })).toEqual({ status: 200, body: { ok: true, outcome: 'processed' } });
      expect(h.removals(meeting.id)).toEqual([bob, bob]);
      const participants = (await as(s, owner!).video.get({ meetingId: meeting.id })).participants;
      expect(participants).toEqual([{ userId: bob, joinedAt, leftAt: expect.any(Date) }]);
      // The provider retries the same delivery: a duplicate, nothing asked again, nothing rewritten.
      expect(await h.joined(meeting.id, session, joinedAt, { id })).toEqual({ status: 200, body: { ok: true, outcome: 'duplicate' } });
      expect(h.removals(meeting.id)).toEqual([bob, bob]);
      expect((await as(s, owner!).video.get({ meetingId: meeting.id })).participants).toEqual(participants);
    });

    it(`${h.name}: members (short and long ids) and support agents in support rooms are never taken out; a banned agent is`, async () => {
      const s = h.srv();
      const [owner, agent, bannedAgent, outsider] = users('owner', 'agent', 'bannedagent', 'outsider');
      const longMember = `member-${uuid()}-with-a-long-id`;
      const room = await as(s, owner!).room.create({ kind: 'support', name: `support-${owner}`, memberIds: [longMember] });
      const meeting = await as(s, owner!).video.create({ roomId: room.id });
      // Support agents read support rooms without membership; their tokens (over HTTP) come with their roles.
      const tokenOf = async (userId: string) => {
        await using client = clientFor(s.url, userId, { roles: ['support'] });
        return (await client.trpc.video.joinToken.mutate({ meetingId: meeting.id })).token;
      };
      const agentToken = await tokenOf(agent!);
      const bannedAgentToken = await tokenOf(bannedAgent!);
      const ownerToken = (await as(s, owner!).video.joinToken({ meetingId: meeting.id })).token;
      const longToken = (await as(s, longMember).video.joinToken({ meetingId: meeting.id })).token;
      const removed = nextRemoval(s, room.id, bannedAgent!);
      await as(s, owner!).room.ban({ roomId: room.id, userId: bannedAgent! });
      expect((await removed).outcome).toBe('removed');
      const asked = h.removals(meeting.id).length;
      h.forgetRemovals(meeting.id);
      const counted = ejections(s);

      for (const token of [ownerToken, longToken, agentToken]) {
        expect((await h.joined(meeting.id, await h.connect(token), secondsAgo(1))).body.outcome).toBe('processed');
      }
      expect(h.removals(meeting.id).slice(asked)).toEqual([]);
      expect(ejections(s)).toBe(counted);
      expect((await as(s, owner!).video.get({ meetingId: meeting.id })).participants.map((p) => p.userId).sort()).toEqual([owner, longMember, agent].sort());

      // The ban shuts out a support agent too.
      await h.joined(meeting.id, await h.connect(bannedAgentToken), secondsAgo(1));
      expect(h.removals(meeting.id).slice(asked)).toEqual([bannedAgent]);
      expect(ejections(s)).toBe(counted + 1);
      // An agent's role does not open other rooms: in a group room, a non-member agent is refused.
      const group = await as(s, owner!).room.create({ kind: 'group', name: `group-${owner}`, memberIds: [] });
      const groupMeeting = await as(s, owner!).video.create({ roomId: group.id });
      await h.joined(groupMeeting.id, { sessionId: `s-${uuid()}`, identity: h.identityOf(agent!) }, secondsAgo(1));
      expect(h.removals(groupMeeting.id)).toEqual([agent]);
      // Someone the server never saw, in a meeting of ours: refused as well.
      await h.joined(groupMeeting.id, { sessionId: `s-${uuid()}`, identity: h.identityOf(outsider!) }, secondsAgo(1));
      expect(h.removals(groupMeeting.id)).toEqual([agent, outsider]);
    });

    it(`${h.name}: a join webhook for a meeting that is not ours is ignored as before, and asks the provider nothing`, async () => {
      const [owner, mod, bob] = users('owner', 'mod', 'bob');
      const { room } = await meetingRoom(h.srv(), owner!, mod!, [bob!]);
      const removed = nextRemoval(h.srv(), room.id, bob!);
      await as(h.srv(), mod!).room.ban({ roomId: room.id, userId: bob! });
      expect((await removed).outcome).toBe('removed');
      const unknown = uuid();
      expect(await h.joined(unknown, { sessionId: `s-${uuid()}`, identity: bob! }, secondsAgo(1))).toEqual({ status: 200, body: { ok: true, outcome: 'ignored' } });
      expect(h.removals(unknown)).toEqual([]);
    });
  }

  it('LiveKit: egress, ingress, SIP and agent participants (never our join tokens) are left alone', async () => {
    const [owner] = users('owner');
    const room = await as(lkSrv, owner!).room.create({ kind: 'group', name: `svc-${owner}`, memberIds: [] });
    const meeting = await as(lkSrv, owner!).video.create({ roomId: room.id });
    for (const kind of [1, 2, 3, 4]) {
      expect((await harnesses[0]!.joined(meeting.id, { sessionId: `PA_${uuid()}`, identity: `EG_${kind}_${uuid()}` }, secondsAgo(1), { kind })).body.outcome).toBe('processed');
    }
    expect(harnesses[0]!.removals(meeting.id)).toEqual([]);
    // Recorded like any connection.
    expect((await as(lkSrv, owner!).video.get({ meetingId: meeting.id })).participants).toHaveLength(4);
  });

  it('LiveKit: a failing removal is logged and queued; the webhook still gets its answer and the connection stays recorded as in', async () => {
    // Same database, but a LiveKit secret the provider refuses: RemoveParticipant fails with 401.
    // (This server verifies webhooks with the same wrong secret, so they are signed with it.)
    await using bad = await server('rejoin-lk-bad', videoConfig({ provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: BAD_SECRET } }));
    const [owner, mod, bob] = users('owner', 'mod', 'bob');
    const { room, meeting } = await meetingRoom(lkSrv, owner!, mod!, [bob!]);
    const bobToken = await as(lkSrv, bob!).video.joinToken({ meetingId: meeting.id });
    const removed = nextRemoval(lkSrv, room.id, bob!);
    await as(lkSrv, mod!).room.ban({ roomId: room.id, userId: bob! });
    expect((await removed).outcome).toBe('removed');
    const session = await harnesses[0]!.connect(bobToken.token);
    const refused = lk.refused.length;
    const joinedAt = secondsAgo(1);

    // The failed ejection goes to the removal queue, which retries it (and fails the same way here) until it gives up.
    const gaveUp = removalOutcomes(bad, room.id, bob!, 'gave_up');
    const res = await harnesses[0]!.joined(meeting.id, session, joinedAt, { url: `${bad.url}/webhooks/video/livekit`, secret: BAD_SECRET });
    expect(res).toEqual({ status: 200, body: { ok: true, outcome: 'processed' } });
    const outcomes = await gaveUp;
    expect(outcomes.map((o) => [o.outcome, o.attempts, o.reason])).toEqual([
      ['retry', 1, 'refused'],
      ['retry', 2, 'refused'],
      ['retry', 3, 'refused'],
      ['gave_up', 4, 'refused'],
    ]);
    expect(outcomes[0]!.error).toMatch(new RegExp(`^${meeting.id}: `));
    // The webhook's own attempt, then the queue's four.
    expect(lk.refused.slice(refused)).toEqual(Array(1 + TEST_REMOVALS.maxAttempts).fill({ method: 'RemoveParticipant', status: 401, code: 'unauthenticated' }));
    expect(ejections(bad)).toBe(0);
    expect(bad.app.services.deps.counters.videoRemovalsFailed).toBe(TEST_REMOVALS.maxAttempts);
    // Bob is still connected, and the record says so (until the provider reports his leave).
    expect(harnesses[0]!.online(meeting.id)).toEqual([bob]);
    expect((await as(lkSrv, owner!).video.get({ meetingId: meeting.id })).participants).toEqual([{ userId: bob, joinedAt, leftAt: null }]);
  });
});
