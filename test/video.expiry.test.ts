/**
 * A meeting past its expiry reads as ended (docs/VIDEO.md), and is ended on the provider too:
 * LiveKit keeps a room open while people stay in it (it has no maximum duration), so at the expiry the
 * server ends the provider room (once), and `video.end` of an expired meeting asks the provider again.
 * A ban or removal takes nobody out of an expired meeting (its call is over).
 */
import { randomUUID } from 'node:crypto';
import type { KyselyPlugin, OperationNode } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMeetingServices, type ExpiryOutcome } from '../src/services/meetings/index.js';
import { meetingsByExpiryQuery } from '../src/store/meetings.js';
import { actor, callerFor, createLogger, deferred, dispose, newCounters, roomKit, testEnv, type TestEnv, type TestServer } from './fixture.js';
import { livekitEvent, nextRemoval, postWebhook, signLiveKit, startLiveKitDouble, type LiveKitDouble, videoConfig } from './video-doubles.js';

let env: TestEnv;
let lk: LiveKitDouble;
let srv: TestServer;

beforeAll(async () => {
  env = await testEnv('video-expiry');
  lk = await startLiveKitDouble();
  srv = await env.startServer({
    redisPrefix: env.prefix('video-expiry'),
    ...videoConfig({ provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret } }),
  });
});

afterAll(() => dispose(lk, env));

const { users } = roomKit(() => srv);
const as = (id: string) => callerFor(srv.app, actor(id));

async function meetingSystemBodies(roomId: string, reader: string) {
  const { messages } = await as(reader).chat.history({ roomId, limit: 100 });
  return messages.filter((m) => m.kind === 'system' && /^Meeting/.test(m.body ?? '')).map((m) => m.body);
}

const expire = (meetingId: string) => env.sql("update meeting set expires_at = now() - interval '1 hour' where id = $1", [meetingId]);
const deletesOf = (meetingId: string) => lk.requests.filter((r) => r.method === 'DeleteRoom' && r.body.room === meetingId);
const inCall = (meetingId: string) => (lk.rooms.get(meetingId)?.participants ?? []).map((p) => p.identity).sort();

/** The expiry's outcome for `meetingId` on the server (listening from now on). */
function expiryOf(meetingId: string): Promise<ExpiryOutcome> {
  return new Promise((resolve) => {
    const off = srv.app.services.meetings.expiry.onOutcome((o) => {
      if (o.meetingId !== meetingId) return;
      off();
      resolve(o);
    });
  });
}

/** A group room of `owner` with `members`, a LiveKit meeting in it, and everyone connected with a token of theirs. */
async function callWith(owner: string, members: string[], title: string) {
  const room = await as(owner).room.create({ kind: 'group', name: title, memberIds: members });
  const m = await as(owner).video.create({ roomId: room.id, title, ttlMinutes: 5 });
  for (const u of [owner, ...members]) {
    const t = await as(u).video.joinToken({ meetingId: m.id });
    // A token never outlives its meeting.
    expect(t.expiresAt.getTime()).toBeLessThanOrEqual(m.expiresAt.getTime());
    await lk.join(t.token);
  }
  expect(inCall(m.id)).toEqual([owner, ...members].sort());
  return { room, m };
}

describe('video.end', () => {
  it('ending a meeting that already reads as ended (past expiresAt) returns it unchanged and writes no "ended" message', async () => {
    const [owner] = users('owner');
    const room = await as(owner!).room.create({ kind: 'group', name: 'expired-end' });
    const m = await as(owner!).video.create({ roomId: room.id, title: 'X', ttlMinutes: 5 });
    await env.sql("update meeting set expires_at = now() - interval '1 hour' where id = $1", [m.id]);
    const before = await as(owner!).video.get({ meetingId: m.id });
    expect(before.status).toBe('ended');
    expect(before.endedAt).toEqual(before.expiresAt);

    const after = await as(owner!).video.end({ meetingId: m.id });
    // Documented: "ending an ended meeting returns it unchanged"; an expired meeting reads as ended and
    // "no Meeting ... ended system message is written for it".
    expect({ endedAt: after.endedAt, messages: await meetingSystemBodies(room.id, owner!) }).toEqual({ endedAt: before.endedAt, messages: [] });
  });

  it('ending an expired meeting whose call still runs ends its provider room: everyone in it is disconnected', async () => {
    const [owner, bob] = users('owner', 'bob');
    const { room, m } = await callWith(owner!, [bob!], 'expired-call');
    await expire(m.id);
    expect((await as(owner!).video.get({ meetingId: m.id })).status).toBe('ended');

    const after = await as(owner!).video.end({ meetingId: m.id });
    expect({ deletes: deletesOf(m.id).length, inCall: inCall(m.id), room: lk.rooms.has(m.id) }).toEqual({ deletes: 1, inCall: [], room: false });
    // The meeting stays as it reads: ended at its expiry, no "ended" message.
    expect({ status: after.status, endedAt: after.endedAt, messages: await meetingSystemBodies(room.id, owner!) }).toEqual({
      status: 'ended',
      endedAt: after.expiresAt,
      messages: [],
    });
  });
});

describe('at the expiry', () => {
  it('the provider room of an expired LiveKit meeting is ended once, disconnecting whoever stayed in the call', async () => {
    const [owner, bob] = users('owner', 'bob');
    const { room, m } = await callWith(owner!, [bob!], 'stays-on');
    const ended = expiryOf(m.id);
    await expire(m.id);
    srv.app.services.meetings.removals.wake();
    expect(await ended).toEqual({ meetingId: m.id, outcome: 'ended' });
    expect({ deletes: deletesOf(m.id).length, inCall: inCall(m.id), room: lk.rooms.has(m.id) }).toEqual({ deletes: 1, inCall: [], room: false });
    // Stored as it read: ended at its expiry. Nobody was in it by a webhook (it never went live): no message.
    const got = await as(owner!).video.get({ meetingId: m.id });
    expect({ status: got.status, endedAt: got.endedAt }).toEqual({ status: 'ended', endedAt: got.expiresAt });
    expect((await env.sql('select status from meeting where id = $1', [m.id]))[0]).toEqual({ status: 'ended' });
    expect(await meetingSystemBodies(room.id, owner!)).toEqual([]);

    // Once: the next expiry's round leaves it alone.
    const { m: next } = await callWith(owner!, [bob!], 'stays-on-2');
    const nextEnded = expiryOf(next.id);
    await expire(next.id);
    srv.app.services.meetings.removals.wake();
    expect(await nextEnded).toEqual({ meetingId: next.id, outcome: 'ended' });
    expect({ first: deletesOf(m.id).length, next: deletesOf(next.id).length, inCall: inCall(next.id) }).toEqual({ first: 1, next: 1, inCall: [] });
  });

  it('a meeting that went live gets its "ended" message at the expiry, once, whatever LiveKit reports after', async () => {
    const [owner, bob] = users('owner', 'bob');
    const { room, m } = await callWith(owner!, [bob!], 'live-one');
    const hook = async (body: string) =>
      postWebhook(`${srv.url}/webhooks/video/livekit`, body, { authorization: await signLiveKit(body, lk.apiKey, lk.apiSecret) });
    expect((await hook(livekitEvent({ event: 'room_started', room: m.id }))).body.outcome).toBe('processed');
    const ended = expiryOf(m.id);
    await expire(m.id);
    srv.app.services.meetings.removals.wake();
    expect(await ended).toEqual({ meetingId: m.id, outcome: 'ended' });
    // LiveKit's room_finished for the room the server deleted changes nothing.
    expect((await hook(livekitEvent({ event: 'room_finished', room: m.id }))).body.outcome).toBe('processed');
    expect(await meetingSystemBodies(room.id, owner!)).toEqual(['Meeting "live-one" started', 'Meeting "live-one" ended']);
    const got = await as(owner!).video.get({ meetingId: m.id });
    expect(got.endedAt).toEqual(got.expiresAt);
  });
});

describe('bans and removals', () => {
  it('take nobody out of an expired meeting: only the meetings whose calls may still run are asked', async () => {
    const [owner, bob] = users('owner', 'bob');
    const { room, m: old } = await callWith(owner!, [bob!], 'ban-expired');
    const current = await as(owner!).video.create({ roomId: room.id, title: 'current', ttlMinutes: 5 });
    await lk.join((await as(bob!).video.joinToken({ meetingId: current.id })).token);
    await expire(old.id);
    const removed = nextRemoval(srv, room.id, bob!);
    await as(owner!).room.ban({ roomId: room.id, userId: bob! });
    expect(await removed).toMatchObject({ outcome: 'removed' });
    const removals = (id: string) => lk.requests.filter((r) => r.method === 'RemoveParticipant' && r.body.room === id).map((r) => r.body.identity);
    expect({ old: removals(old.id), current: removals(current.id) }).toEqual({ old: [], current: [bob] });
    expect(inCall(current.id)).toEqual([]);
  });

  it('a ban in a room whose meetings have all expired queues no removal, even for a meeting on a provider not configured here', async () => {
    const [owner, bob] = users('owner', 'bob');
    const room = await as(owner!).room.create({ kind: 'group', name: 'all-expired', memberIds: [bob!] });
    // A meeting of a provider this node does not run (before a switch), never ended, long expired.
    await env.sql(
      `insert into meeting (id, tenant, room_id, created_by, provider, url, status, created_at, expires_at)
       values (gen_random_uuid(), 'default', $1, $2, 'daily', 'https://video.example/x', 'scheduled', now() - interval '2 hours', now() - interval '1 hour')`,
      [room.id, owner],
    );
    await as(owner!).room.ban({ roomId: room.id, userId: bob! });
    // Written in the ban's transaction if at all: a row here would wait for a Daily node forever.
    expect(await env.sql('select user_id from video_removal where room_id = $1', [room.id])).toEqual([]);
  });
});

describe('the expiry sweep\'s statement', () => {
  it("reads the provider's meetings not ended through their partial index, in expiry order (the ended ones, nearly all of the table, cost it nothing)", async () => {
    const compiled = meetingsByExpiryQuery(srv.app.services.store.db(), 'livekit', 20).compile();
    const c = new pg.Client({ connectionString: env.databaseUrl });
    await c.connect();
    try {
      await c.query('begin');
      // What the statement can use, not what the planner picks on a small table: sequential scans off.
      await c.query('set local enable_seqscan = off');
      const plan = (await c.query<{ 'QUERY PLAN': string }>(`explain ${compiled.sql}`, compiled.parameters as unknown[])).rows.map((r) => r['QUERY PLAN']).join('\n');
      expect(plan).toMatch(/Index (Only )?Scan using meeting_open_expiry_idx on meeting/);
      expect(plan).not.toMatch(/Sort/);
      await c.query('rollback');
    } finally {
      await c.end();
    }
  });
});

describe('shutdown', () => {
  /** The table a select or delete reads from. */
  const tableOf = (node: OperationNode): string | undefined =>
    (node as { from?: { froms?: { table?: { identifier?: { name?: string } } }[] } }).from?.froms?.[0]?.table?.identifier?.name;

  it("the removal worker's stop waits for the sweep's forget of deleted rooms' meetings in flight", async () => {
    const { store, access, limits, meetings } = srv.app.services;
    // A deleted room's meeting kept past its time: the first sweep of a process forgets it.
    const kept = randomUUID();
    await env.sql(
      `insert into deleted_meeting (meeting_id, provider, tenant, room_id, keep_until) values ($1, 'livekit', 'default', $2, now() - interval '1 minute')`,
      [kept, randomUUID()],
    );
    // Holds the answers of the first forget and of the sweep's first read of the meetings, after the
    // database gave them, until the test lets them go on.
    const holds = { forget: { reached: deferred(), release: deferred() }, sweep: { reached: deferred(), release: deferred() } };
    const armed = new Set<keyof typeof holds>(['forget', 'sweep']);
    const what = new Map<unknown, keyof typeof holds>();
    const order: string[] = [];
    const plugin: KyselyPlugin = {
      transformQuery: ({ node, queryId }) => {
        const table = tableOf(node);
        if (node.kind === 'DeleteQueryNode' && table === 'deleted_meeting') what.set(queryId, 'forget');
        else if (node.kind === 'SelectQueryNode' && table === 'meeting') what.set(queryId, 'sweep');
        return node;
      },
      transformResult: async ({ result, queryId }) => {
        const w = what.get(queryId);
        what.delete(queryId);
        if (w && armed.delete(w)) {
          holds[w].reached.resolve();
          await holds[w].release.promise;
          if (w === 'forget') order.push('forgotten');
        }
        return result;
      },
    };
    const held: typeof store = Object.create(store);
    held.db = () => store.db().withPlugin(plugin);
    // This node's meeting services anew (their process has not forgotten anything yet), on the held store.
    const fresh = createMeetingServices(
      { log: createLogger('silent'), limits, tokenTtlSeconds: 300, counters: newCounters(), removals: srv.config.video.removals },
      held,
      access,
      meetings.provider,
    );
    fresh.removals.start();
    try {
      await Promise.all([holds.forget.reached.promise, holds.sweep.reached.promise]);
      // Shutdown: the round in flight has only the sweep's read left to wait for, and the forget.
      const stopped = fresh.removals.stop().then(() => order.push('stopped'));
      holds.sweep.release.resolve();
      // The forget's statement has run (its answer is what is held): the row is gone already.
      expect(await env.sql('select meeting_id from deleted_meeting where meeting_id = $1', [kept])).toEqual([]);
      holds.forget.release.resolve();
      await stopped;
      expect(order).toEqual(['forgotten', 'stopped']);
    } finally {
      holds.sweep.release.resolve();
      holds.forget.release.resolve();
      await fresh.removals.stop();
    }
  });
});
