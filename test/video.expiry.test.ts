/**
 * A meeting past its expiry reads as ended (docs/VIDEO.md): `video.end` returns it as it reads,
 * unchanged, with no provider call, no "ended" system message and no second `endedAt`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, callerFor, dispose, roomKit, testEnv, type Config, type TestEnv, type TestServer } from './fixture.js';
import { startLiveKitDouble, TEST_REMOVALS, type LiveKitDouble } from './video-doubles.js';

let env: TestEnv;
let lk: LiveKitDouble;
let srv: TestServer;

beforeAll(async () => {
  env = await testEnv('video-expiry');
  lk = await startLiveKitDouble();
  const video: Config['video'] = {
    provider: 'livekit',
    livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret },
    daily: null,
    tokenTtlSeconds: 300,
    removals: TEST_REMOVALS,
  };
  srv = await env.startServer({ redisPrefix: env.prefix('video-expiry'), video });
});

afterAll(() => dispose(lk, env));

const { users } = roomKit(() => srv);
const as = (id: string) => callerFor(srv.app, actor(id));

async function meetingSystemBodies(roomId: string, reader: string) {
  const { messages } = await as(reader).chat.history({ roomId, limit: 100 });
  return messages.filter((m) => m.kind === 'system' && /^Meeting/.test(m.body ?? '')).map((m) => m.body);
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
});
