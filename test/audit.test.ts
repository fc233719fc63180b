import { Writable } from 'node:stream';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  actor,
  callerFor,
  clientFor,
  createLogger,
  dispose,
  TEST_LIMITS,
  testEnv,
  tokenFor,
  uuid,
  waitFor,
  type TestEnv,
  type TestServer,
} from './fixture.js';

/** Audit lines (issue 6): connections, auth failures, limits hit, revocations, moderation; no secrets. */
const lines: Record<string, unknown>[] = [];
const raw: string[] = [];
const capture = new Writable({
  write(chunk, _enc, cb) {
    for (const l of String(chunk).split('\n').filter(Boolean)) {
      raw.push(l);
      lines.push(JSON.parse(l));
    }
    cb();
  },
});

let env: TestEnv;
let srv: TestServer;
let url: string;

beforeAll(async () => {
  env = await testEnv('audit');
  srv = await env.startServer(
    { logLevel: 'info', limits: { ...TEST_LIMITS, sendPerSecond: 1, sendBurst: 0 } },
    { log: createLogger('info', false, capture) },
  );
  url = srv.url;
});
afterAll(() => dispose(env));

const until = (pred: () => boolean, what: string) => waitFor(pred, `an audit line for ${what}`, { timeoutMs: 10_000, everyMs: 20 });
const audit = (kind: string) => lines.filter((l) => l.audit === kind);

describe('audit log', () => {
  it('records connections, auth failures, limits, moderation and revocations without bodies or tokens', async () => {
    const secretBody = `very secret body ${uuid()}`;
    await using owner = clientFor(url, 'au-owner', { roles: ['admin'] });
    await using member = clientFor(url, 'au-member', { client: { clientType: 'web', clientVersion: '2.1.0', deviceId: 'dev-au-1' } });
    const room = await owner.trpc.room.create.mutate({ kind: 'group', name: 'audit', memberIds: ['au-member', 'au-x'] });
    await owner.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: secretBody });
    await expect(owner.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: secretBody })).rejects.toMatchObject({
      data: { code: 'TOO_MANY_REQUESTS' },
    });
    await owner.trpc.room.mute.mutate({ roomId: room.id, userId: 'au-member' });
    await owner.trpc.room.ban.mutate({ roomId: room.id, userId: 'au-x' });

    // A WebSocket connection, a refused token, a revocation.
    const sub = member.trpc.chat.events.subscribe({ roomId: room.id }, { onData: () => undefined });
    await until(() => audit('ws_open').some((l) => l.user === 'au-member'), 'ws_open');
    const forged = tokenFor('au-member', { secret: 'another-secret-another-secret-1234' });
    const res = await fetch(`${url}/trpc/auth.me`, { headers: { authorization: `Bearer ${forged}` } });
    expect(res.status).toBe(401);
    await callerFor(srv.app, actor('au-owner', 'default', ['admin'])).auth.revoke({ userId: 'au-member' });
    await until(() => audit('ws_close').some((l) => l.user === 'au-member'), 'ws_close');
    sub.unsubscribe();

    expect(audit('ws_open').find((l) => l.user === 'au-member')).toMatchObject({
      tenant: 'default',
      conn: expect.any(String),
      ip: expect.any(String),
      // What the client said about itself in its connection parameters.
      clientType: 'web',
      clientVersion: '2.1.0',
      deviceId: 'dev-au-1',
    });
    expect(audit('ws_close').find((l) => l.user === 'au-member')).toMatchObject({ code: 4003 });
    expect(audit('auth_failed').some((l) => l.reason === 'invalid access token')).toBe(true);
    expect(audit('rate_limited').find((l) => l.kind === 'send')).toMatchObject({ key: `default:au-owner:${room.id}` });
    expect(audit('moderation').map((l) => [l.action, l.target, l.by])).toEqual(
      expect.arrayContaining([
        ['mute', 'au-member', 'au-owner'],
        ['ban', 'au-x', 'au-owner'],
      ]),
    );
    expect(audit('sessions_revoked')).toEqual([expect.objectContaining({ user: 'au-member', by: 'au-owner' })]);
    // Nothing secret in any line.
    const all = raw.join('\n');
    expect(all).not.toContain(secretBody);
    expect(all).not.toContain(forged);
    expect(all).not.toContain(tokenFor('au-member').split('.')[2]);
  });

  it('a change of a room’s retention writes an audit row (old and new value) in its transaction; none when unchanged or refused', async () => {
    const owner = callerFor(srv.app, actor('au-ret-owner'));
    const member = callerFor(srv.app, actor('au-ret-member'));
    const boss = callerFor(srv.app, actor('au-ret-boss', 'default', ['admin']));
    const room = await owner.room.create({ kind: 'group', name: 'retention', memberIds: ['au-ret-member'] });
    const trail = async () => (await boss.admin.audit({ roomId: room.id, action: 'room.set_retention' })).events.reverse();

    expect((await owner.room.update({ roomId: room.id, retentionDays: 30 })).retentionDays).toBe(30);
    // The same value again, another setting alone, a refused change: no row.
    await owner.room.update({ roomId: room.id, retentionDays: 30 });
    await owner.room.update({ roomId: room.id, name: 'retention renamed' });
    await expect(member.room.update({ roomId: room.id, retentionDays: 1 })).rejects.toMatchObject({ code: 'FORBIDDEN' });
    // Back to the server default, with a rename in the same call.
    await owner.room.update({ roomId: room.id, retentionDays: null, name: 'retention again' });

    expect(await trail()).toEqual([
      expect.objectContaining({ actorId: 'au-ret-owner', action: 'room.set_retention', roomId: room.id, targetId: null, data: { retentionDays: 30, previous: null } }),
      expect.objectContaining({ actorId: 'au-ret-owner', action: 'room.set_retention', roomId: room.id, targetId: null, data: { retentionDays: null, previous: 30 } }),
    ]);
    expect((await owner.room.get({ roomId: room.id })).retentionDays).toBeNull();
    // And the moderation log line after commit.
    await until(() => audit('moderation').filter((l) => l.action === 'set_retention' && l.roomId === room.id).length === 2, 'set_retention');
    expect(audit('moderation').filter((l) => l.action === 'set_retention' && l.roomId === room.id)).toEqual([
      expect.objectContaining({ by: 'au-ret-owner', retentionDays: 30, previous: null }),
      expect.objectContaining({ by: 'au-ret-owner', retentionDays: null, previous: 30 }),
    ]);
  });

  it('a change of a room’s visibility (who finds and joins it) writes an audit row (old and new value); none when unchanged or refused', async () => {
    const owner = callerFor(srv.app, actor('au-vis-owner'));
    const member = callerFor(srv.app, actor('au-vis-member'));
    const boss = callerFor(srv.app, actor('au-vis-boss', 'default', ['admin']));
    const room = await owner.room.create({ kind: 'group', name: 'visibility', memberIds: ['au-vis-member'] });
    const trail = async () => (await boss.admin.audit({ roomId: room.id, action: 'room.set_visibility' })).events.reverse();

    expect((await owner.room.update({ roomId: room.id, visibility: 'public' })).visibility).toBe('public');
    // The same value again, another setting alone, a refused change: no row.
    await owner.room.update({ roomId: room.id, visibility: 'public' });
    await owner.room.update({ roomId: room.id, topic: 'now public' });
    await expect(member.room.update({ roomId: room.id, visibility: 'private' })).rejects.toMatchObject({ code: 'FORBIDDEN' });
    // Back to private, with a retention change in the same call (each its own row).
    await owner.room.update({ roomId: room.id, visibility: 'private', retentionDays: 7 });

    expect(await trail()).toEqual([
      expect.objectContaining({ actorId: 'au-vis-owner', action: 'room.set_visibility', roomId: room.id, targetId: null, data: { visibility: 'public', previous: 'private' } }),
      expect.objectContaining({ actorId: 'au-vis-owner', action: 'room.set_visibility', roomId: room.id, targetId: null, data: { visibility: 'private', previous: 'public' } }),
    ]);
    expect((await boss.admin.audit({ roomId: room.id, action: 'room.set_retention' })).events).toHaveLength(1);
    expect((await owner.room.get({ roomId: room.id })).visibility).toBe('private');
    // And the moderation log line after commit.
    await until(() => audit('moderation').filter((l) => l.action === 'set_visibility' && l.roomId === room.id).length === 2, 'set_visibility');
    expect(audit('moderation').filter((l) => l.action === 'set_visibility' && l.roomId === room.id)).toEqual([
      expect.objectContaining({ by: 'au-vis-owner', visibility: 'public', previous: 'private' }),
      expect.objectContaining({ by: 'au-vis-owner', visibility: 'private', previous: 'public' }),
    ]);
  });

  it('a raw client that connects with a garbage token is logged as an auth failure with its address', async () => {
    const ws = new WebSocket(`${url.replace('http', 'ws')}/trpc?connectionParams=1`);
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ method: 'connectionParams', data: { token: 'garbage' } }));
    ws.send(JSON.stringify({ id: 1, method: 'query', params: { path: 'auth.me', input: { json: null } } }));
    await new Promise((r) => ws.once('message', r));
    ws.close();
    await until(() => audit('auth_failed').some((l) => l.ip && l.reason === 'invalid access token'), 'auth_failed with ip');
  });
});
