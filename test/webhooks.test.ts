import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  actor,
  callerFor,
  claimDue,
  Collector,
  createLogger,
  deferred,
  expectTRPCError,
  failFirst,
  fileServer,
  hookReceiver,
  insertMeeting,
  markDelivered,
  markFailed,
  meetingEnded,
  meetingLive,
  nativePool,
  newCounters,
  SecretBox,
  testEnv,
  uuid,
  waitFor,
  within,
} from './fixture.js';
import type { RoomEventSource } from '../src/services/room-events.js';
import { WebhookWorker } from '../src/services/webhooks/worker.js';
import { Migration20261206070000 } from '../src/store/migrations/Migration20261206070000.js';

/** Retries fast (base 100 ms), polls often; the receiver runs on 127.0.0.1, so private URLs are allowed. */
const t = fileServer('hooks', {
  webhooks: { retryBaseMs: 100, maxAttempts: 4, pollMs: 20, timeoutMs: 2000, allowPrivateUrls: true },
});

/** A tenant of its own per test (a webhook sees its whole tenant), with an admin and two users. */
function tenant() {
  const name = `hooks-${uuid().slice(0, 8)}`;
  return {
    name,
    admin: callerFor(t.app, actor('boss', name, ['admin'])),
    service: callerFor(t.app, actor('svc', name, ['service'])),
    as: (id: string) => callerFor(t.app, actor(id, name)),
  };
}

describe('webhook.* management', () => {
  it('create returns a Standard Webhooks secret once; list, update, delete; admins and service tokens only', async () => {
    const tn = tenant();
    await expectTRPCError(tn.as('alice').webhook.create({ url: 'https://example.com/h', events: ['*'] }), 'FORBIDDEN', /admins and service tokens/);
    await expectTRPCError(tn.as('alice').webhook.list(), 'FORBIDDEN');
    await using rx = await hookReceiver();
    const { id, secret } = await tn.admin.webhook.create({ url: rx.url, events: ['message.new', 'message.new', 'room.created'], description: 'ERP' });
    expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]+={0,2}$/);
    const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
    expect(key.length).toBeGreaterThanOrEqual(24);
    expect(key.length).toBeLessThanOrEqual(32);

    const listed = await tn.service.webhook.list();
    expect(listed).toEqual([expect.objectContaining({ id, url: rx.url, events: ['message.new', 'room.created'], description: 'ERP', enabled: true, failingSince: null })]);
    expect(JSON.stringify(listed)).not.toContain(secret);

    const updated = await tn.service.webhook.update({ id, events: ['*'], enabled: false });
    expect(updated).toMatchObject({ id, events: ['*'], enabled: false });
    const rotated = await tn.admin.webhook.rotateSecret({ id });
    expect(rotated.secret).not.toBe(secret);
    expect(await tn.admin.webhook.deliveries({ id })).toEqual([]);
    expect(await tn.admin.webhook.delete({ id })).toEqual({ ok: true });
    expect(await tn.admin.webhook.list()).toEqual([]);
    await expectTRPCError(tn.admin.webhook.delete({ id }), 'NOT_FOUND', /webhook not found/);
  });

  it("another tenant's webhook is NOT_FOUND for every call, and absent from its list", async () => {
    const [a, b] = [tenant(), tenant()];
    await using rx = await hookReceiver();
    const { id } = await a.admin.webhook.create({ url: rx.url, events: ['*'] });
    expect(await b.admin.webhook.list()).toEqual([]);
    await expectTRPCError(b.admin.webhook.update({ id, enabled: false }), 'NOT_FOUND');
    await expectTRPCError(b.admin.webhook.delete({ id }), 'NOT_FOUND');
    await expectTRPCError(b.admin.webhook.deliveries({ id }), 'NOT_FOUND');
    await expectTRPCError(b.service.webhook.rotateSecret({ id }), 'NOT_FOUND');
    expect((await a.admin.webhook.list()).map((w) => w.id)).toEqual([id]);
  });

  it('validates its input with messages that name the field', async () => {
    const tn = tenant();
    await expectTRPCError(tn.admin.webhook.create({ url: 'ftp://example.com/x', events: ['*'] }), 'BAD_REQUEST', /url must be an http\(s\) URL/);
    await expectTRPCError(tn.admin.webhook.create({ url: 'https://example.com/x', events: [] }), 'BAD_REQUEST', /events needs at least one/);
    await expectTRPCError(
      tn.admin.webhook.create({ url: 'https://example.com/x', events: ['message.sent' as 'message.new'] }),
      'BAD_REQUEST',
      /each event must be one of message.new/,
    );
    await expectTRPCError(tn.admin.webhook.update({ id: 'nope' }), 'BAD_REQUEST', /id must be a webhook id/);
  });

  it('at most 50 webhooks per tenant, also when creates run concurrently: 60 at once leave exactly 50, the others PRECONDITION_FAILED', async () => {
    const tn = tenant();
    // A public address literal: the SSRF guard takes it without a DNS lookup; nothing is sent (no event happens).
    const results = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => tn.admin.webhook.create({ url: `https://93.184.216.34/hook/${i}`, events: ['*'] })));
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as { code?: string; message?: string });
    expect(refused.map((e) => [e.code, e.message])).toEqual(Array(10).fill(['PRECONDITION_FAILED', 'a tenant has at most 50 webhooks: delete one first']));
    expect(await tn.admin.webhook.list()).toHaveLength(50);
    await expectTRPCError(tn.admin.webhook.create({ url: 'https://93.184.216.34/hook/one-more', events: ['*'] }), 'PRECONDITION_FAILED', /at most 50 webhooks/);
  });
});

describe('delivery', () => {
  it('signs every request, retries with backoff under the same webhook-id, and records the attempts', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    rx.respond = failFirst(2);
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['message.new'] });
    rx.secrets = [hook.secret];
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'orders', memberIds: ['bob'] });
    const sent = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'shipped' });

    const got = await rx.accepted.first((r) => r.body.type === 'message.new', 'the message.new delivery');
    expect(got.id).toBe(`${room.id}:${sent.seq}`);
    expect(got.body).toMatchObject({ type: 'message.new', tenant: tn.name, data: { type: 'message.new', roomId: room.id, seq: sent.seq } });
    expect(got.body.data.message).toMatchObject({ id: sent.id, body: 'shipped', senderId: 'alice' });
    expect(typeof (got.body.data.message as unknown as { createdAt: unknown }).createdAt).toBe('string');
    const tries = rx.requests.items.filter((r) => r.id === got.id);
    expect(tries.map((r) => [r.attempt, r.status, r.verifiedWith])).toEqual([
      [1, 500, 0],
      [2, 500, 0],
      [3, 200, 0],
    ]);
    // Exponential backoff: about 100 ms, then about 200 ms (±20% jitter).
    expect(tries[1]!.at - tries[0]!.at).toBeGreaterThanOrEqual(75);
    expect(tries[2]!.at - tries[1]!.at).toBeGreaterThanOrEqual(155);
    // Only message.new was asked for: no room.created, member.joined.
    expect(rx.requests.items.every((r) => r.body.type === 'message.new')).toBe(true);

    const [d] = await waitFor(() => tn.admin.webhook.deliveries({ id: hook.id }), 'the delivery recorded', { until: (ds) => ds[0]?.status === 'delivered' });
    expect(d).toMatchObject({ eventId: got.id, eventType: 'message.new', status: 'delivered', attempts: 3, lastStatusCode: 200, lastError: null, nextAttemptAt: null });
  });

  it('gives up after WEBHOOK_MAX_ATTEMPTS and keeps the last error', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    rx.respond = () => 503;
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['room.created'] });
    await tn.as('alice').room.create({ kind: 'group', name: 'doomed' });
    const [d] = await waitFor(() => tn.admin.webhook.deliveries({ id: hook.id }), 'the delivery given up', {
      until: (ds) => ds[0]?.status === 'failed',
      timeoutMs: 15_000,
    });
    expect(d).toMatchObject({ eventType: 'room.created', attempts: 4, lastStatusCode: 503, nextAttemptAt: null });
    // The answer's body ("refused attempt 4") is described, not kept.
    expect(d!.lastError).toBe('HTTP 503 (body of 17 bytes, text/plain, not kept)');
    expect(rx.requests.items.length).toBe(4);
  });

  it('several nodes share the outbox: each row is claimed by one worker, every event is sent once (once more only after a failed attempt)', async () => {
    // Two more nodes on the same database, their workers polling like this one's: three workers
    // claim the same rows (FOR UPDATE SKIP LOCKED and a lease keep a row to one of them).
    await using b = await t.env.startServer({ webhooks: t.config.webhooks });
    await using c = await t.env.startServer({ webhooks: t.config.webhooks });
    const nodes = [t.app, b.app, c.app];
    const failedAttempts = () => nodes.reduce((n, app) => n + app.services.deps.counters.webhooksFailed, 0);
    const failedBefore = failedAttempts();
    const tn = tenant();
    await using rx = await hookReceiver();
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['message.new'] });
    rx.secrets = [hook.secret];
    // 12 rooms, 5 messages each, written through the three nodes (each wakes its own worker).
    const ids: string[] = [];
    await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const as = callerFor(nodes[i % 3]!, actor(`writer${i}`, tn.name));
        const room = await as.room.create({ kind: 'group', name: `r${i}` });
        for (let k = 0; k < 5; k++) ids.push(`${room.id}:${(await as.chat.send({ roomId: room.id, clientId: uuid(), body: `m${k}` })).seq}`);
      }),
    );
    await rx.accepted.until((a) => ids.every((id) => a.some((r) => r.id === id)), 'every event delivered');
    // The receiver answers before the worker records the answer: wait for the rows, then check them.
    const ds = await waitFor(() => tn.admin.webhook.deliveries({ id: hook.id, limit: 100 }), 'every delivery recorded', {
      until: (rows) => rows.length === ids.length && rows.every((r) => r.status === 'delivered'),
    });
    expect(ds.every((r) => r.lastStatusCode === 200)).toBe(true);
    expect(rx.requests.items.every((r) => r.status === 200 && r.verifiedWith === 0)).toBe(true);
    // Delivery is at least once: an attempt that failed (here only a request that timed out, when
    // this process, which hosts the receiver too, stalled past WEBHOOK_TIMEOUT_MS on a loaded
    // machine) is claimed and sent again. A second claim of a row whose attempt had not failed
    // would be a row taken by two workers: every claim beyond the first of a row, and every request
    // beyond the first of an event, must be matched by a failed attempt. On a machine that keeps
    // up, none fails, so every event went out exactly once.
    const failed = failedAttempts() - failedBefore;
    const extraClaims = ds.reduce((n, r) => n + r.attempts, 0) - ids.length;
    const extraRequests = rx.requests.items.length - ids.length;
    if (failed > 0) console.log(`[hooks] shared outbox: ${failed} failed attempts, ${extraClaims} claims and ${extraRequests} requests beyond one per event`);
    expect(new Set(rx.requests.items.map((r) => r.id))).toEqual(new Set(ids));
    expect(extraClaims).toBeLessThanOrEqual(failed);
    expect(extraRequests).toBeLessThanOrEqual(failed);
  });

  it("a node whose lease ran out before it recorded its attempt cannot undo another node's delivery of the row", async () => {
    // A database of its own with its worker stopped: the claims are made here, as two nodes would.
    await using env = await testEnv('hooklease');
    const srv = await env.startServer();
    await srv.app.services.webhookWorker.stop();
    const db = srv.app.services.store.db();
    const [ep] = await env.sql<{ id: string }>(
      `insert into webhook_endpoint (id, tenant, url, events, secret, created_at, updated_at)
       values (gen_random_uuid(), 'lease', 'https://example.com/h', '{*}', 'unused', now(), now()) returning id`,
    );
    await env.sql(
      `insert into webhook_delivery (endpoint_id, tenant, room_id, event_id, event_type, data, status, attempts, next_attempt_at, created_at)
       values ($1, 'lease', gen_random_uuid(), 'ev-1', 'room.created', '{}', 'pending', 0, now(), now())`,
      [ep!.id],
    );
    const row = async () =>
      (await env.sql('select status, attempts, lease_until, last_status_code, last_error from webhook_delivery where endpoint_id = $1', [ep!.id]))[0];

    const [a] = await claimDue(db, 10, 60_000); // node A
    expect(a).toMatchObject({ event_id: 'ev-1', attempts: 1 });
    expect(await claimDue(db, 10, 60_000)).toEqual([]); // A's lease holds it
    // A is held up (queries, a pool connection, DNS) until its lease has run out: node B claims the row, sends it, records it.
    await env.sql(`update webhook_delivery set lease_until = now() - interval '1 second' where id = $1`, [a!.id]);
    const [b] = await claimDue(db, 10, 60_000);
    expect(b).toMatchObject({ id: a!.id, attempts: 2 });
    expect(await markDelivered(db, { id: b!.id, attempts: b!.attempts, endpointId: ep!.id, statusCode: 200 })).toBe(true);

    // A's request then fails (or succeeds): its outcome is not written, B's stands.
    const late = { id: a!.id, attempts: a!.attempts, endpointId: ep!.id, statusCode: null, error: 'timed out' };
    const delivered = { status: 'delivered', attempts: 2, lease_until: null, last_status_code: 200, last_error: null };
    expect(await markDelivered(db, { ...late, statusCode: 200 })).toBe(false);
    expect(await markFailed(db, { ...late, retryInMs: 100, disableAfterMs: 3600_000, endpointAtFault: true })).toBeNull();
    expect(await row()).toEqual(delivered);
    expect(await markFailed(db, { ...late, retryInMs: null, disableAfterMs: 3600_000, endpointAtFault: true })).toBeNull();
    expect(await row()).toEqual(delivered);
    expect(await env.sql('select enabled, failing_since from webhook_endpoint where id = $1', [ep!.id])).toEqual([{ enabled: true, failing_since: null }]);
    // Not queued again: the event is not sent twice.
    await env.sql(`update webhook_delivery set next_attempt_at = now() where id = $1`, [a!.id]);
    expect(await claimDue(db, 10, 60_000)).toEqual([]);
  });

  it('keeps the order of a room per endpoint: a later event waits until the earlier one is delivered', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['*'] });
    rx.secrets = [hook.secret];
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'ordered' });
    await rx.accepted.until((a) => a.length >= 2, 'room.created and member.joined');
    const first = `${room.id}:2`;
    rx.respond = (r) => (r.id === first && r.attempt <= 2 ? 500 : 200);
    const sends = [];
    for (let i = 0; i < 6; i++) sends.push(await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: `m${i}` }));
    const ids = sends.map((s) => `${room.id}:${s.seq}`);
    expect(ids[0]).toBe(first);
    await rx.accepted.until((a) => ids.every((id) => a.some((x) => x.id === id)), 'every message delivered');
    const mine = rx.requests.items.filter((r) => ids.includes(r.id));
    // Nothing of a later seq was even attempted before the first message was accepted.
    const firstOk = mine.findIndex((r) => r.id === first && r.status === 200);
    expect(mine.slice(0, firstOk).every((r) => r.id === first)).toBe(true);
    expect(rx.accepted.items.filter((r) => ids.includes(r.id)).map((r) => r.body.data.seq)).toEqual(sends.map((s) => s.seq));
    expect(rx.requests.items.every((r) => r.verifiedWith === 0)).toBe(true);
  });

  it('reports room.created, member.joined/left, edits, deletes and reactions to a "*" webhook, with the DTOs clients see', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['*'] });
    rx.secrets = [hook.secret];
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'all', memberIds: ['bob'] });
    const m = await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'v1' });
    await tn.as('bob').chat.react({ messageId: m.id, emoji: '👍' });
    await tn.as('alice').chat.edit({ messageId: m.id, body: 'v2' });
    await tn.as('alice').chat.delete({ messageId: m.id });
    await tn.as('bob').room.leave({ roomId: room.id });
    const types = ['room.created', 'member.joined', 'member.joined', 'message.new', 'reaction.added', 'message.edited', 'message.deleted', 'member.left'];
    const got = await rx.accepted.until((a) => a.length >= types.length, 'every event');
    expect(got.map((r) => r.body.type)).toEqual(types);
    expect(got[0]!.body.data).toMatchObject({ roomId: room.id, kind: 'group', name: 'all', createdBy: 'alice' });
    expect(got[4]!.body.data).toMatchObject({ type: 'reaction.added', messageId: m.id, userId: 'bob', emoji: '👍' });
    expect(got[7]!.body.data).toMatchObject({ type: 'member.left', userId: 'bob', reason: 'left' });
    expect(got.every((r) => r.verifiedWith === 0 && r.body.tenant === tn.name)).toBe(true);
  });

  it("room.created and room.updated carry the room's metadata; a change of metadata alone is reported", async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    const hook = await tn.service.webhook.create({ url: rx.url, events: ['room.created', 'room.updated'] });
    rx.secrets = [hook.secret];
    const key = `order:${uuid()}`;
    const room = await tn.service.room.ensure({ key, kind: 'group', name: 'Order 4711', topic: 'pallets', metadata: { orderId: 4711 } });
    await tn.service.room.update({ roomId: room.id, metadata: { orderId: 4711, state: 'shipped' } });
    const got = await rx.accepted.until((a) => a.length >= 2, 'room.created and room.updated');
    expect(got.map((r) => r.body.type)).toEqual(['room.created', 'room.updated']);
    expect(got[0]!.body.data).toEqual({ roomId: room.id, kind: 'group', name: 'Order 4711', topic: 'pallets', key, metadata: { orderId: 4711 }, visibility: 'private', createdBy: 'svc' });
    expect(got[1]!.body.data).toEqual({
      type: 'room.updated',
      roomId: room.id,
      seq: room.lastSeq + 1,
      name: 'Order 4711',
      topic: 'pallets',
      metadata: { orderId: 4711, state: 'shipped' },
      by: 'svc',
    });
    expect(got.every((r) => r.verifiedWith === 0)).toBe(true);
  });

  it('reports room.archived to an endpoint subscribed to it, and nothing else of the room', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['room.archived'] });
    rx.secrets = [hook.secret];
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'to-archive' });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'last words' });
    await tn.as('alice').room.archive({ roomId: room.id });
    const [got] = await rx.accepted.until((a) => a.length >= 1, 'room.archived');
    expect(got!.body).toMatchObject({ type: 'room.archived', tenant: tn.name, data: { type: 'room.archived', roomId: room.id } });
    expect(got!.verifiedWith).toBe(0);
    // Unarchiving and a later message are not subscribed: a second archive is the next delivery.
    await tn.as('alice').room.unarchive({ roomId: room.id });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'back' });
    await tn.as('alice').room.archive({ roomId: room.id });
    const both = await rx.accepted.until((a) => a.length >= 2, 'the second room.archived');
    expect(both.map((r) => r.body.type)).toEqual(['room.archived', 'room.archived']);
  });

  it('an event whose room was deleted before it went out is given up with a clear error, never sent', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    // The first attempt hangs until the sender's timeout: the room is deleted meanwhile.
    rx.respond = (r) => (r.attempt === 1 ? 'hang' : 200);
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['message.new'] });
    rx.secrets = [hook.secret];
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'short-lived' });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'soon gone' });
    await rx.requests.first((r) => r.attempt === 1, 'the first attempt');
    await tn.as('alice').room.delete({ roomId: room.id });
    const [d] = await waitFor(() => tn.admin.webhook.deliveries({ id: hook.id }), 'the delivery given up', {
      until: (ds) => ds[0]?.status === 'failed',
      timeoutMs: 15_000,
    });
    expect(d).toMatchObject({ eventType: 'message.new', status: 'failed', nextAttemptAt: null });
    expect(d!.lastError).toMatch(/no longer exists/);
    expect(rx.accepted.items).toEqual([]);
    expect(rx.requests.items).toHaveLength(1);
  });

  it('an event gone before its first attempt (its room deleted, retention) is given up without counting against the endpoint: its failure clock does not start', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['message.new'] });
    rx.secrets = [hook.secret];
    // An outbox row of a room whose log is gone, as the send statement writes it (seq set, no data).
    await t.env.sql(
      `insert into webhook_delivery (endpoint_id, tenant, room_id, seq, event_id, event_type, data, status, attempts, next_attempt_at, created_at)
       values ($1, $2, $3, 1, $4, 'message.new', null, 'pending', 0, now(), now())`,
      [hook.id, tn.name, uuid(), `evt-${uuid()}`],
    );
    const [d] = await waitFor(() => tn.admin.webhook.deliveries({ id: hook.id }), 'the delivery given up', {
      until: (ds) => ds[0]?.status === 'failed',
      timeoutMs: 15_000,
    });
    expect(d!.lastError).toMatch(/no longer exists/);
    expect(rx.requests.items).toEqual([]);
    const [endpoint] = await tn.admin.webhook.list();
    expect(endpoint).toMatchObject({ id: hook.id, enabled: true, failingSince: null });
  });

  it('reports meeting.started and meeting.ended, after the system message of the room', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['meeting.started', 'meeting.ended', 'message.new'] });
    rx.secrets = [hook.secret];
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'calls' });
    const id = uuid();
    const store = t.app.services.store;
    const meeting = { id, tenant: tn.name, roomId: room.id, createdBy: 'alice', title: 'standup', provider: 'livekit', providerRoomId: id, url: 'wss://video.example', expiresAt: new Date(Date.now() + 3_600_000) };
    await store.transact((tx) => insertMeeting(tx, meeting));
    const by = actor('alice', tn.name);
    await store.transact((tx) => meetingLive(tx, { id, room_id: room.id }, new Date('2026-12-03T01:00:00Z'), by));
    await store.transact((tx) => meetingEnded(tx, id, new Date('2026-12-03T01:30:00Z'), by));
    const got = await rx.accepted.until((a) => a.length >= 4, 'the meeting events');
    expect(got.map((r) => r.body.type)).toEqual(['message.new', 'meeting.started', 'message.new', 'meeting.ended']);
    expect(got[1]!.body.data).toEqual({ meetingId: id, roomId: room.id, title: 'standup', startedAt: '2026-12-03T01:00:00.000Z' });
    expect(got[3]!.body.data).toEqual({ meetingId: id, roomId: room.id, title: 'standup', endedAt: '2026-12-03T01:30:00.000Z', endedBy: 'alice' });
    expect(got.every((r) => r.verifiedWith === 0)).toBe(true);
  });

  it('a meeting running when its room is archived still ends: its system message and meeting.ended', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['meeting.ended', 'message.new', 'room.archived'] });
    rx.secrets = [hook.secret];
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'calls' });
    const id = uuid();
    const store = t.app.services.store;
    const meeting = { id, tenant: tn.name, roomId: room.id, createdBy: 'alice', title: 'review', provider: 'livekit', providerRoomId: id, url: 'wss://video.example', expiresAt: new Date(Date.now() + 3_600_000) };
    await store.transact((tx) => insertMeeting(tx, meeting));
    const by = actor('alice', tn.name);
    await store.transact((tx) => meetingLive(tx, { id, room_id: room.id }, new Date('2026-12-03T01:00:00Z'), by));
    await tn.as('alice').room.archive({ roomId: room.id });
    await store.transact((tx) => meetingEnded(tx, id, new Date('2026-12-03T01:30:00Z'), by));
    const got = await rx.accepted.until((a) => a.length >= 4, 'the meeting events');
    expect(got.map((r) => r.body.type)).toEqual(['message.new', 'room.archived', 'message.new', 'meeting.ended']);
    expect(got[2]!.body.data).toMatchObject({ message: { kind: 'system', body: expect.stringMatching(/review.* ended/) } });
    expect(got[3]!.body.data).toMatchObject({ meetingId: id, endedAt: '2026-12-03T01:30:00.000Z' });
    await expectTRPCError(tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'x' }), 'PRECONDITION_FAILED', /archived/);
  });

  it('does not follow redirects: a 3xx is a failed attempt', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    rx.respond = (r) => (r.path === '/hooks' ? { status: 302, location: `${rx.url}/elsewhere` } : 200);
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['room.created'] });
    await tn.as('alice').room.create({ kind: 'group', name: 'redirected' });
    const [d] = await waitFor(() => tn.admin.webhook.deliveries({ id: hook.id }), 'the failed attempt', { until: (ds) => (ds[0]?.attempts ?? 0) >= 1 && ds[0]?.lastStatusCode === 302 });
    expect(d!.lastError).toMatch(/redirect to .*\/hooks\/elsewhere not followed/);
    expect(rx.requests.items.some((r) => r.path !== '/hooks')).toBe(false);
    await tn.admin.webhook.delete({ id: hook.id });
  });

  it('a receiver that does not answer within WEBHOOK_TIMEOUT_MS is a failed attempt, retried', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    rx.respond = (r) => (r.attempt === 1 ? 'hang' : 200);
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['room.created'] });
    // The first attempt's timeout starts after the event is written, so no sooner than this (the
    // receiver's clock: performance.now()).
    const created = performance.now();
    await tn.as('alice').room.create({ kind: 'group', name: 'slow' });
    const ok = await rx.accepted.first((r) => r.body.data.name === 'slow', 'the retry after the timeout');
    expect(ok.attempt).toBe(2);
    const [d] = await waitFor(() => tn.admin.webhook.deliveries({ id: hook.id }), 'the delivery recorded', { until: (ds) => ds[0]?.status === 'delivered' });
    expect(d).toMatchObject({ status: 'delivered', attempts: 2 });
    // The first attempt was given up after the 2 s timeout of this file's server (then retried after
    // WEBHOOK_RETRY_BASE_MS): the retry came 2 s after the event at the earliest, however long the
    // first request took to reach the receiver.
    const first = rx.requests.items.find((r) => r.id === ok.id && r.attempt === 1)!;
    expect(first.at).toBeGreaterThanOrEqual(created);
    expect(ok.at - created).toBeGreaterThanOrEqual(2000);
  });

  it('disables an endpoint whose deliveries have failed for 24 hours; re-enabling resumes them', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    rx.respond = () => 500;
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['room.created'] });
    // Failing since a day and a minute (as if the earlier failures had happened).
    await t.env.sql(`update webhook_endpoint set failing_since = now() - interval '1441 minutes' where id = $1`, [hook.id]);
    await tn.as('alice').room.create({ kind: 'group', name: 'down' });
    const [w] = await waitFor(() => tn.admin.webhook.list(), 'the endpoint disabled', { until: (ws) => ws[0]?.enabled === false });
    expect(w!.failingSince).toBeInstanceOf(Date);
    expect(rx.requests.items.length).toBe(1);
    rx.respond = () => 200;
    await t.env.sql(`update webhook_delivery set next_attempt_at = now() where endpoint_id = $1`, [hook.id]);
    expect(await tn.admin.webhook.update({ id: hook.id, enabled: true })).toMatchObject({ enabled: true, failingSince: null });
    await rx.accepted.first((r) => r.body.data.name === 'down', 'the delivery after re-enabling');
  });

  it('rotateSecret: deliveries after the rotation verify with the new secret only', async () => {
    const tn = tenant();
    await using rx = await hookReceiver();
    const hook = await tn.admin.webhook.create({ url: rx.url, events: ['room.created'] });
    rx.secrets = [hook.secret];
    await tn.as('alice').room.create({ kind: 'group', name: 'before' });
    const before = await rx.accepted.first((r) => r.body.data.name === 'before', 'the delivery before the rotation');
    expect(before.verifiedWith).toBe(0);
    const { secret } = await tn.service.webhook.rotateSecret({ id: hook.id });
    rx.secrets = [hook.secret, secret];
    await tn.as('alice').room.create({ kind: 'group', name: 'after' });
    const after = await rx.accepted.first((r) => r.body.data.name === 'after', 'the delivery after the rotation');
    expect(after.verifiedWith).toBe(1);
  });

  it('a disabled webhook gets nothing; events of other tenants never reach it', async () => {
    const [tn, other] = [tenant(), tenant()];
    await using rx = await hookReceiver();
    const off = await tn.admin.webhook.create({ url: `${rx.url}/off`, events: ['*'] });
    await tn.admin.webhook.update({ id: off.id, enabled: false });
    const on = await tn.admin.webhook.create({ url: rx.url, events: ['room.created'] });
    await other.as('carol').room.create({ kind: 'group', name: 'foreign' });
    await tn.as('alice').room.create({ kind: 'group', name: 'mine' });
    await rx.accepted.first((r) => r.body.data.name === 'mine', 'the own room');
    expect(rx.requests.items.map((r) => [r.path, r.body.data.name])).toEqual([['/hooks', 'mine']]);
    expect(await tn.admin.webhook.deliveries({ id: off.id })).toEqual([]);
    expect((await tn.admin.webhook.deliveries({ id: on.id })).length).toBe(1);
  });
});

describe("the worker's claims", () => {
  /** The webhook settings of these tests' hand-made workers: only a wake-up starts a round. */
  const HOOKS = { retryBaseMs: 100, maxAttempts: 4, pollMs: 600_000, timeoutMs: 2000, allowPrivateUrls: true };

  /** A log that keeps each line's message. */
  function lines() {
    const msgs: string[] = [];
    const listeners = new Set<(msg: string) => void>();
    const log = createLogger('warn', false, {
      write: (line: string) => {
        const { msg } = JSON.parse(line) as { msg: string };
        msgs.push(msg);
        for (const l of listeners) l(msg);
      },
    });
    /** Resolves at the line `msg`, calling `then` synchronously as it is written. */
    const at = (msg: string, then: () => void = () => undefined) =>
      new Promise<void>((resolve) => {
        if (msgs.includes(msg)) return resolve(then());
        listeners.add((m) => {
          if (m === msg) resolve(then());
        });
      });
    return { log, msgs, at };
  }

  it('a delivery whose reads before the request outlast its deadline (WEBHOOK_TIMEOUT_MS from the claim) is not sent by that claim: left to its lease, then sent once', async () => {
    // A database of its own with its worker stopped: the one made here claims.
    await using env = await testEnv('hookdeadline');
    const srv = await env.startServer({ webhooks: HOOKS });
    await srv.app.services.webhookWorker.stop();
    const name = `late-${uuid().slice(0, 8)}`;
    const as = (id: string, roles: string[] = []) => callerFor(srv.app, actor(id, name, roles));
    await using rx = await hookReceiver();
    const hook = await as('boss', ['admin']).webhook.create({ url: rx.url, events: ['message.new'] });
    rx.secrets = [hook.secret];
    const room = await as('alice').room.create({ kind: 'group', name: 'late' });
    const sent = await as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'late' });
    // The read of the event before the request is held (a slow replica, a stalled node) while this
    // node's clock passes the deadline.
    let clock = Date.now();
    const reading = deferred<void>();
    let gate = deferred<void>();
    const real = srv.app.services.roomEvents;
    const slow = {
      load: async (roomId: string, after: number, upto: number, limit: number) => {
        reading.resolve();
        await gate.promise;
        return real.load(roomId, after, upto, limit);
      },
    } as unknown as RoomEventSource;
    const { log, at } = lines();
    const w = new WebhookWorker(srv.app.services.store, slow, HOOKS, log, newCounters(), new SecretBox(srv.app.services.keyring), { now: () => clock });
    try {
      w.start();
      w.wake();
      await within(reading.promise, 8000, 'the delivery being prepared');
      clock += HOOKS.timeoutMs + 1;
      const givenUp = at('webhook not sent: its deadline passed before the request (retried after the lease)');
      gate.resolve();
      await within(givenUp, 8000, 'the delivery given up by this claim');
      expect(rx.requests.items).toEqual([]);
      const leased = () => env.sql<{ status: string; attempts: number; leased: boolean }>('select status, attempts, coalesce(lease_until > now(), false) as leased from webhook_delivery where tenant = $1', [name]);
      expect(await leased()).toEqual([{ status: 'pending', attempts: 1, leased: true }]);
      // Its lease over (moved here rather than waited for), the next claim sends it, once.
      gate = deferred<void>();
      gate.resolve();
      await env.sql("update webhook_delivery set lease_until = now() - interval '1 second' where tenant = $1", [name]);
      w.wake();
      const got = await rx.accepted.first((r) => r.id === `${room.id}:${sent.seq}`, 'the delivery sent by the next claim');
      expect(got).toMatchObject({ attempt: 1, verifiedWith: 0 });
      await waitFor(leased, 'the delivery recorded', { until: (rows) => rows[0]?.status === 'delivered' });
      expect(rx.requests.items).toHaveLength(1);
    } finally {
      gate.resolve();
      await w.stop();
    }
  });

  it('one delivery of a batch failing and another throwing stop no other: the batch is sent and recorded before the round ends', async () => {
    await using env = await testEnv('hookbatch');
    const srv = await env.startServer({ webhooks: HOOKS });
    await srv.app.services.webhookWorker.stop();
    const name = `batch-${uuid().slice(0, 8)}`;
    const as = (id: string, roles: string[] = []) => callerFor(srv.app, actor(id, name, roles));
    await using good = await hookReceiver();
    await using bad = await hookReceiver();
    bad.respond = () => 500;
    const ok = await as('boss', ['admin']).webhook.create({ url: good.url, events: ['message.new'] });
    const failing = await as('boss', ['admin']).webhook.create({ url: bad.url, events: ['message.new'] });
    good.secrets = [ok.secret];
    const fine = await as('alice').room.create({ kind: 'group', name: 'fine' });
    const broken = await as('alice').room.create({ kind: 'group', name: 'broken' });
    const m1 = await as('alice').chat.send({ roomId: fine.id, clientId: uuid(), body: 'one' });
    await as('alice').chat.send({ roomId: broken.id, clientId: uuid(), body: 'two' });
    // Reading the event of `broken` throws (a database error); the deliveries of `fine` go on only
    // once it has, so they are still running when it throws.
    const thrown = deferred<void>();
    const real = srv.app.services.roomEvents;
    const events = {
      load: async (roomId: string, after: number, upto: number, limit: number) => {
        if (roomId === broken.id) {
          thrown.resolve();
          throw new Error('the event could not be read');
        }
        await thrown.promise;
        return real.load(roomId, after, upto, limit);
      },
    } as unknown as RoomEventSource;
    const { log, at } = lines();
    // What the receivers had seen when the round ended (read as its line is written).
    let seenAtEnd: { good: number; bad: number } | null = null;
    const ended = at('webhook round failed', () => {
      seenAtEnd = { good: good.accepted.items.length, bad: bad.requests.items.length };
    });
    const w = new WebhookWorker(srv.app.services.store, events, HOOKS, log, newCounters(), new SecretBox(srv.app.services.keyring));
    try {
      w.start();
      w.wake();
      await within(ended, 8000, 'the round to end');
      // The round ended only after the other deliveries of its batch: each was sent and its outcome written.
      expect(seenAtEnd).toEqual({ good: 1, bad: 1 });
      expect(good.accepted.items.map((r) => r.id)).toEqual([`${fine.id}:${m1.seq}`]);
      const rows = await env.sql<{ endpoint_id: string; room_id: string; status: string; attempts: number; last_status_code: number | null; leased: boolean }>(
        'select endpoint_id, room_id, status, attempts, last_status_code, coalesce(lease_until > now(), false) as leased from webhook_delivery where tenant = $1 order by room_id = $2 desc, endpoint_id = $3 desc',
        [name, fine.id, ok.id],
      );
      expect(rows).toEqual([
        { endpoint_id: ok.id, room_id: fine.id, status: 'delivered', attempts: 1, last_status_code: 200, leased: false },
        { endpoint_id: failing.id, room_id: fine.id, status: 'pending', attempts: 1, last_status_code: 500, leased: false },
        // The deliveries that threw keep their claim: sent again once its lease runs out.
        { endpoint_id: ok.id, room_id: broken.id, status: 'pending', attempts: 1, last_status_code: null, leased: true },
        { endpoint_id: failing.id, room_id: broken.id, status: 'pending', attempts: 1, last_status_code: null, leased: true },
      ]);
    } finally {
      await w.stop();
    }
  });
});

describe('secrets at rest', () => {
  it('with MESSAGE_KEYS the stored secret is sealed and bound to its endpoint, deliveries still verify; copied to another endpoint or without its key a delivery fails with a clear error', async () => {
    await using env = await testEnv('hooks_sealed');
    const key = `k1:${randomBytes(32).toString('base64')}`;
    const hooks = { ...t.config.webhooks, maxAttempts: 1 };
    const srv = await env.startServer({ messageKeys: key, webhooks: hooks });
    const name = `sealed-${uuid().slice(0, 8)}`;
    const as = (app: typeof srv.app, id: string, roles: string[] = []) => callerFor(app, actor(id, name, roles));
    await using rx = await hookReceiver();
    const hook = await as(srv.app, 'boss', ['admin']).webhook.create({ url: rx.url, events: ['message.new'] });
    const stored = async () => (await env.sql<{ secret: string }>('select secret from webhook_endpoint where id = $1', [hook.id]))[0]!.secret;
    expect(await stored()).toMatch(/^sealed:k1:/);
    expect(await stored()).not.toContain(hook.secret.slice('whsec_'.length));

    rx.secrets = [hook.secret];
    const room = await as(srv.app, 'alice').room.create({ kind: 'group', name: 'sealed', memberIds: ['bob'] });
    const m = await as(srv.app, 'alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'signed' });
    const got = await rx.accepted.first((r) => r.id === `${room.id}:${m.seq}`, 'the delivery');
    expect(got.verifiedWith).toBe(0);
    const rotated = await as(srv.app, 'boss', ['admin']).webhook.rotateSecret({ id: hook.id });
    expect(await stored()).toMatch(/^sealed:k1:/);
    expect(await stored()).not.toContain(rotated.secret.slice('whsec_'.length));

    // A sealed secret copied onto another endpoint's row (a database writer without the key) does
    // not open there: that endpoint's deliveries fail, nothing is signed with the copied secret.
    await using rx2 = await hookReceiver();
    const other = await as(srv.app, 'boss', ['admin']).webhook.create({ url: rx2.url, events: ['message.new'] });
    rx2.secrets = [rotated.secret];
    await env.sql('update webhook_endpoint set secret = (select secret from webhook_endpoint where id = $1) where id = $2', [hook.id, other.id]);
    rx.secrets = [rotated.secret];
    const m1 = await as(srv.app, 'alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'after the copy' });
    await rx.accepted.first((r) => r.id === `${room.id}:${m1.seq}` && r.verifiedWith === 0, 'the delivery to the owner of the secret');
    const refused = await waitFor(() => as(srv.app, 'boss', ['admin']).webhook.deliveries({ id: other.id }), 'the refused delivery', {
      until: (ds) => ds.some((d) => d.eventId === `${room.id}:${m1.seq}` && d.status === 'failed'),
    });
    expect(refused.find((d) => d.eventId === `${room.id}:${m1.seq}`)!.lastError).toMatch(/cannot be opened: .* or for another endpoint/);
    expect(rx2.requests.items).toEqual([]);

    // The same database on a server without the key: the secret cannot be opened, nothing is sent.
    await srv[Symbol.asyncDispose]();
    const bare = await env.startServer({ webhooks: hooks });
    const m2 = await as(bare.app, 'alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'unsigned' });
    const failed = await waitFor(() => as(bare.app, 'boss', ['admin']).webhook.deliveries({ id: hook.id }), 'the failed delivery', {
      until: (ds) => ds.some((d) => d.eventId === `${room.id}:${m2.seq}` && d.status === 'failed'),
    });
    expect(failed.find((d) => d.eventId === `${room.id}:${m2.seq}`)!.lastError).toMatch(/sealed with a key that is not in MESSAGE_KEYS/);
    expect(rx.requests.items.some((r) => r.id === `${room.id}:${m2.seq}`)).toBe(false);
  });
});

describe('what a failed attempt keeps', () => {
  it("an endpoint that echoes the request in its 500: last_error says HTTP 500 and holds no part of the event (an encrypted room's body included), also after the author's erasure", async () => {
    await using env = await testEnv('hooks_echo');
    const srv = await env.startServer({ messageKeys: `k1:${randomBytes(32).toString('base64')}`, webhooks: { ...t.config.webhooks, maxAttempts: 1 } });
    const name = `echo-${uuid().slice(0, 8)}`;
    const as = (id: string, roles: string[] = []) => callerFor(srv.app, actor(id, name, roles));
    // Answers 500 with the message's body and the whole request echoed back, as many error pages do.
    const received = new Collector<string>();
    const echo = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        received.push(raw);
        const body = (JSON.parse(raw) as { data: { message?: { body?: string } } }).data.message?.body ?? null;
        res.writeHead(500, { 'content-type': 'application/json; charset=utf-8' });
        res.end(JSON.stringify({ error: 'cannot process', body, request: JSON.parse(raw) as unknown }));
      });
    });
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(echo.address() as AddressInfo).port}/hooks`;
      const hook = await as('boss', ['admin']).webhook.create({ url, events: ['message.new'] });
      const room = await as('alice').room.create({ kind: 'group', name: 'vault', memberIds: ['bob'], encrypted: true });
      const secret = `the launch code is ${uuid()}`;
      const m = await as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: secret });
      const eventId = `${room.id}:${m.seq}`;
      const [d] = await waitFor(() => as('boss', ['admin']).webhook.deliveries({ id: hook.id }), 'the failed delivery', {
        until: (ds) => ds[0]?.eventId === eventId && ds[0].status === 'failed',
      });
      // The request carried the body in plain text (it is sealed in the message table).
      const [raw] = received.items;
      expect(raw).toContain(secret);
      const [stored] = await env.sql<{ body: string }>('select body from message where id = $1', [m.id]);
      expect(stored!.body).not.toContain(secret);
      // Every string of the request (type, timestamp, tenant, ids, sender, the body), none in last_error.
      const strings = (v: unknown): string[] =>
        typeof v === 'string' ? [v] : v && typeof v === 'object' ? Object.values(v as Record<string, unknown>).flatMap(strings) : [];
      const sent = strings(JSON.parse(raw!)).filter((s) => s.length >= 3);
      expect(sent).toContain(secret);
      const row = async () =>
        (await env.sql<{ last_error: string; last_status_code: number; whole: string }>(
          'select last_error, last_status_code, row_to_json(d)::text as whole from webhook_delivery d where endpoint_id = $1',
          [hook.id],
        ))[0]!;
      for (const lastError of [d!.lastError!, (await row()).last_error]) {
        for (const s of sent) expect(lastError).not.toContain(s);
        expect(lastError).toMatch(/^HTTP 500 \(body of \d+ bytes, application\/json, not kept\)$/);
      }
      expect(d).toMatchObject({ status: 'failed', attempts: 1, lastStatusCode: 500 });
      expect((await row()).whole).not.toContain(secret);
      // Erasing the author leaves nothing of the body behind in the outbox either.
      await as('boss', ['admin']).admin.eraseUser({ userId: 'alice' });
      expect((await row()).whole).not.toContain(secret);
      expect((await row()).last_status_code).toBe(500);
    } finally {
      await new Promise<void>((resolve) => {
        echo.closeAllConnections();
        echo.close(() => resolve());
      });
    }
  });
});

describe('cost on the send path', () => {
  it('a send makes the same round trips with and without webhooks (the outbox rows ride on the write statement)', async () => {
    // A server of its own whose worker is stopped and without the room list feed (its batches run
    // after commit, off the send path), so only the calls' own statements are counted.
    await using srv = await t.env.startServer({ webhooks: { ...t.config.webhooks, pollMs: 600_000 }, activityFeed: false });
    await srv.app.services.webhookWorker.stop();
    const pool = await nativePool(srv.app.db.orm);
    const wrapped = Symbol('counted');
    let statements = 0;
    pool.on('acquire', (client) => {
      const c = client as typeof client & { [wrapped]?: true };
      if (c[wrapped]) return;
      c[wrapped] = true;
      const query = c.query.bind(c) as (...args: unknown[]) => unknown;
      (c as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
        statements++;
        return query(...args);
      };
    });
    const count = async (fn: () => Promise<unknown>) => {
      const before = statements;
      await fn();
      return statements - before;
    };
    await using rx = await hookReceiver();
    const cost = async (withHook: boolean) => {
      const name = `cost-${uuid().slice(0, 8)}`;
      const as = (id: string, roles: string[] = []) => callerFor(srv.app, actor(id, name, roles));
      if (withHook) await as('boss', ['admin']).webhook.create({ url: rx.url, events: ['*'] });
      const room = await as('alice').room.create({ kind: 'group', name: 'cost', memberIds: ['bob'] });
      const first = await as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'warm-up' });
      const plain = await count(() => as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'plain' }));
      const reply = await count(() => as('bob').chat.send({ roomId: room.id, clientId: uuid(), body: 'reply', replyToId: first.id }));
      const outbox = await t.env.sql<{ n: number }>('select count(*)::int as n from webhook_delivery where tenant = $1', [name]);
      return { plain, reply, outbox: outbox[0]!.n };
    };
    const without = await cost(false);
    const withHook = await cost(true);
    console.log(`[hooks] statements per send: grouped ${without.plain} without webhooks, ${withHook.plain} with; reply ${without.reply} / ${withHook.reply}`);
    expect(without.outbox).toBe(0);
    // room.created, two member.joined, three messages: all in the outbox.
    expect(withHook.outbox).toBe(6);
    expect(withHook.plain).toBe(without.plain);
    expect(withHook.reply).toBe(without.reply);
  });
});

describe('the answer snippets kept before', () => {
  it('Migration20261206070000 drops the snippet of every stored last_error and keeps the status', async () => {
    await using env = await testEnv('hooks_snippets');
    const srv = await env.startServer(); // migrates the database
    await srv.app.services.webhookWorker.stop();
    const [ep] = await env.sql<{ id: string }>(
      `insert into webhook_endpoint (id, tenant, url, events, secret, created_at, updated_at)
       values (gen_random_uuid(), 'snip', 'https://example.com/h', '{*}', 'unused', now(), now()) returning id`,
    );
    const insert = (eventId: string, code: number | null, lastError: string | null) =>
      env.sql(
        `insert into webhook_delivery (endpoint_id, tenant, room_id, event_id, event_type, data, status, attempts, next_attempt_at, created_at, last_status_code, last_error)
         values ($1, 'snip', gen_random_uuid(), $2, 'message.new', '{}', 'failed', 1, now(), now(), $3, $4)`,
        [ep!.id, eventId, code, lastError],
      );
    await insert('old', 500, 'HTTP 500: {"body":"the launch code is 1234"}');
    await insert('new', 503, 'HTTP 503 (body of 17 bytes, text/plain, not kept)');
    await insert('net', null, 'no answer within 10000 ms');
    const migration = new Migration20261206070000(null as never, null as never);
    await migration.up();
    for (const q of migration.getQueries()) await env.sql(String(q));
    const rows = await env.sql<{ event_id: string; last_error: string }>('select event_id, last_error from webhook_delivery where tenant = $1 order by event_id', ['snip']);
    expect(rows).toEqual([
      { event_id: 'net', last_error: 'no answer within 10000 ms' },
      { event_id: 'new', last_error: 'HTTP 503 (body of 17 bytes, text/plain, not kept)' },
      { event_id: 'old', last_error: 'HTTP 500 (body not kept)' },
    ]);
  });
});
