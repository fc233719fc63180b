/**
 * Peer-to-peer call signaling (issue 4): `signal.send` relayed to the target's `inbox.events` as a
 * live `signal` event. A full offer/answer/ICE/hangup exchange between two real wsLink clients on
 * two nodes (Redis in between); a third user who is no member can neither send nor receive;
 * validation, the 16 KiB cap, the rate limit; signals are never stored, replayed or logged.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ChatClient } from '../client/index.js';
import {
  actor,
  callerFor,
  clientFor,
  dispose,
  expectTRPCError,
  MAX_SIGNAL_PAYLOAD_BYTES,
  recordInbox,
  roomKit,
  Scope,
  TEST_LIMITS,
  testEnv,
  uuid,
  type App,
  type InboxSignal,
  type TestEnv,
  type TestServer,
} from './fixture.js';

/** Everything the two nodes log, at debug level, without redaction: signals must never appear. */
const logLines: string[] = [];
const capture = new Writable({
  write(chunk: Buffer, _enc, cb) {
    logLines.push(chunk.toString('utf8'));
    cb();
  },
});

let env: TestEnv;
let nodeA: App;
let nodeB: App;
let limited: TestServer;
const open = new Scope();

beforeAll(async () => {
  env = await testEnv('signal');
  const log = pino({ level: 'debug' }, capture);
  nodeA = (await env.startServer({}, { log })).app;
  nodeB = (await env.startServer({}, { log })).app;
  limited = await env.startServer({ redisPrefix: env.prefix('signal-rl'), limits: { ...TEST_LIMITS, signalsPer10s: 5 } });
});

afterEach(() => open.dispose());

afterAll(() => dispose(env));

const kit = roomKit(() => ({ app: nodeA }));
const { users } = kit;

function client(app: App, userId: string, tenant?: string): ChatClient {
  return open.use(clientFor(app.url, userId, tenant ? { tenant } : {}));
}

/** A user's inbox over a real WebSocket, past its `ready`. */
async function inbox(c: ChatClient) {
  const rec = recordInbox(c);
  await rec.ready(30_000);
  const signals = () => rec.of('signal') as InboxSignal[];
  return Object.assign(rec, {
    signals,
    /** Waits until `count` signals arrived; returns them. */
    async awaitSignals(count: number) {
      await rec.events.until((xs) => xs.filter((x) => x.data.type === 'signal').length >= count, `${count} signals`);
      return signals();
    },
  });
}

/** A service notification to `userId`; once it arrived, everything published to them before has. */
async function barrier(app: App, userId: string, rec: Awaited<ReturnType<typeof inbox>>) {
  const title = `barrier ${uuid()}`;
  await callerFor(app, actor('svc', 'default', ['service'])).inbox.notify({ userId, kind: 'test.barrier', title });
  await rec.next('notification', (e) => e.title === title, 30_000);
}

const MARKER = `sdp-marker-${uuid()}`;
const offerSdp = `v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=${MARKER}\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n`;
const answerSdp = offerSdp.replace('4611731400430051336', '1').concat('a=recvonly\r\n');

describe('signal.send over two nodes', () => {
  it('relays a full offer/answer/ICE/hangup exchange between two members, in order, from = the sender', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const a = client(nodeA, alice);
    const b = client(nodeB, bob);
    const c = client(nodeA, carol);
    const [aIn, bIn, cIn] = await Promise.all([inbox(a), inbox(b), inbox(c)]);
    const room = await a.trpc.room.openDirect.mutate({ userId: bob });
    const callId = `call-${kit.n}`;
    const to = (toUserId: string) => ({ roomId: room.id, toUserId });

    expect(await a.trpc.signal.send.mutate({ ...to(bob), type: 'offer', payload: { sdp: offerSdp, callId } })).toEqual({ ok: true });
    const [offer] = await bIn.awaitSignals(1);
    expect(offer).toEqual({ type: 'signal', roomId: room.id, from: alice, signal: 'offer', payload: { sdp: offerSdp, callId } });

    await b.trpc.signal.send.mutate({ ...to(alice), type: 'answer', payload: { sdp: answerSdp, callId } });
    const ice1 = { candidate: 'candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host', sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'abcd', callId };
    const ice2 = { candidate: '', sdpMid: '0', sdpMLineIndex: 0, callId };
    const iceB = { candidate: 'candidate:2 1 udp 1686052607 198.51.100.7 61000 typ srflx raddr 0.0.0.0 rport 0', sdpMid: '0', sdpMLineIndex: 0, callId };
    await a.trpc.signal.send.mutate({ ...to(bob), type: 'ice', payload: ice1 });
    await a.trpc.signal.send.mutate({ ...to(bob), type: 'ice', payload: ice2 });
    await b.trpc.signal.send.mutate({ ...to(alice), type: 'ice', payload: iceB });
    // The sender cannot choose `from`: unknown input keys are dropped.
    await a.trpc.signal.send.mutate({ ...to(bob), type: 'hangup', payload: { reason: 'bye', callId }, from: 'mallory' } as never);

    const sig = (from: string, signal: InboxSignal['signal'], payload: unknown): InboxSignal => ({ type: 'signal', roomId: room.id, from, signal, payload });
    expect(await bIn.awaitSignals(4)).toEqual([
      sig(alice, 'offer', { sdp: offerSdp, callId }),
      sig(alice, 'ice', ice1),
      sig(alice, 'ice', ice2),
      sig(alice, 'hangup', { reason: 'bye', callId }),
    ]);
    expect(await aIn.awaitSignals(2)).toEqual([sig(bob, 'answer', { sdp: answerSdp, callId }), sig(bob, 'ice', iceB)]);

    // Carol is no member of the room: she can neither send nor be sent to, and received nothing.
    await expectTRPCError(callerFor(nodeA, actor(carol)).signal.send({ ...to(alice), type: 'offer', payload: { sdp: offerSdp } }), 'NOT_FOUND');
    await expectTRPCError(callerFor(nodeA, actor(alice)).signal.send({ ...to(carol), type: 'offer', payload: { sdp: offerSdp } }), 'NOT_FOUND', /recipient/);
    await barrier(nodeB, carol, cIn);
    expect(cIn.events.items.map((x) => x.data.type)).toEqual(['ready', 'notification']);

    // Nothing more arrived at either end (barriers).
    await Promise.all([barrier(nodeA, alice, aIn), barrier(nodeA, bob, bIn)]);
    expect(aIn.signals()).toHaveLength(2);
    expect(bIn.signals()).toHaveLength(4);
    for (const r of [aIn, bIn, cIn]) {
      expect(r.events.error).toBeNull();
      r.unsubscribe();
    }
  });

  it('signals are never stored, never replayed and never logged', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await callerFor(nodeA, actor(alice)).room.openDirect({ userId: bob });
    const b = client(nodeB, bob);
    const live = await inbox(b);
    await callerFor(nodeA, actor(alice)).signal.send({ roomId: room.id, toUserId: bob, type: 'offer', payload: { sdp: offerSdp } });
    await live.awaitSignals(1);
    live.unsubscribe();
    // Errors on the way (too large, not a member) log nothing of the payload either.
    await expectTRPCError(
      callerFor(nodeA, actor(alice)).signal.send({ roomId: room.id, toUserId: bob, type: 'offer', payload: { sdp: `${MARKER}${'x'.repeat(MAX_SIGNAL_PAYLOAD_BYTES)}` } }),
      'PAYLOAD_TOO_LARGE',
    );
    await expectTRPCError(
      callerFor(nodeB, actor('stranger')).signal.send({ roomId: room.id, toUserId: bob, type: 'offer', payload: { sdp: offerSdp } }),
      'NOT_FOUND',
    );

    // A resume from the very start replays the durable items only.
    using replay = recordInbox(b, { lastEventId: '0' });
    const title = `barrier ${uuid()}`;
    await callerFor(nodeA, actor('svc', 'default', ['service'])).inbox.notify({ userId: bob, kind: 'test.barrier', title });
    await replay.next('notification', (e) => e.title === title, 30_000);
    replay.unsubscribe();
    expect(replay.events.items.map((x) => x.data.type)).toEqual(['direct.created', 'notification']);

    // No table holds it.
    for (const table of ['inbox_event', 'room_event', 'message']) {
      const rows = await env.sql(`select count(*)::int as n from ${table} t where t::text like $1`, [`%${MARKER}%`]);
      expect({ table, n: rows[0]!.n }).toEqual({ table, n: 0 });
    }
    // No log line holds it (the capture works: a line of our own arrives).
    nodeA.log.info({ probe: true }, 'log capture probe');
    expect(logLines.some((l) => l.includes('log capture probe'))).toBe(true);
    expect(logLines.filter((l) => l.includes(MARKER) || l.includes('IN IP4'))).toEqual([]);
  });
});

describe('signal.send rules', () => {
  it('validates type and payload, caps the payload at 16 KiB, refuses self, strangers, other tenants and muted members', async () => {
    const [alice, bob, muted, agent] = users('alice', 'bob', 'muted', 'agent');
    const me = callerFor(nodeA, actor(alice));
    const room = await me.room.create({ kind: 'group', name: 'calls', memberIds: [bob, muted] });
    const to = { roomId: room.id, toUserId: bob };
    const send = (input: unknown) => me.signal.send(input as never);

    await expectTRPCError(send({ ...to, type: 'ring', payload: {} }), 'BAD_REQUEST', /type must be/);
    await expectTRPCError(send({ ...to, type: 'offer', payload: {} }), 'BAD_REQUEST', /sdp/);
    await expectTRPCError(send({ ...to, type: 'answer', payload: { sdp: '' } }), 'BAD_REQUEST', /sdp/);
    await expectTRPCError(send({ ...to, type: 'ice', payload: { sdpMid: '0' } }), 'BAD_REQUEST', /candidate/);
    await expectTRPCError(send({ ...to, type: 'ice', payload: { candidate: 'c', sdpMLineIndex: -1 } }), 'BAD_REQUEST', /sdpMLineIndex/);
    await expectTRPCError(send({ ...to, type: 'offer', payload: { sdp: 'v=0', callId: 'has spaces' } }), 'BAD_REQUEST', /callId/);
    await expectTRPCError(send({ ...to, toUserId: 'bad id', type: 'hangup' }), 'BAD_REQUEST', /userId/);
    await expectTRPCError(send({ roomId: 'nope', toUserId: bob, type: 'hangup' }), 'BAD_REQUEST', /roomId/);
    expect(await send({ ...to, type: 'hangup' })).toEqual({ ok: true });
    expect(await send({ ...to, type: 'hangup', payload: null })).toEqual({ ok: true });

    // 16 KiB of JSON payload: `{"sdp":"…"}` is the sdp plus 10 bytes.
    const at = 'x'.repeat(MAX_SIGNAL_PAYLOAD_BYTES - 10);
    expect(await send({ ...to, type: 'offer', payload: { sdp: at } })).toEqual({ ok: true });
    await expectTRPCError(send({ ...to, type: 'offer', payload: { sdp: `${at}x` } }), 'PAYLOAD_TOO_LARGE', /16384/);
    // Multi-byte characters count as bytes.
    await expectTRPCError(send({ ...to, type: 'offer', payload: { sdp: 'é'.repeat(9000) } }), 'PAYLOAD_TOO_LARGE');

    await expectTRPCError(send({ roomId: room.id, toUserId: alice, type: 'offer', payload: { sdp: 'v=0' } }), 'BAD_REQUEST', /yourself/);
    await expectTRPCError(callerFor(nodeA, null).signal.send({ ...to, type: 'hangup' }), 'UNAUTHORIZED');
    await expectTRPCError(callerFor(nodeA, actor(alice, 'other-tenant')).signal.send({ ...to, type: 'hangup' }), 'NOT_FOUND');
    await me.room.mute({ roomId: room.id, userId: muted });
    await expectTRPCError(callerFor(nodeA, actor(muted)).signal.send({ ...to, type: 'hangup' }), 'FORBIDDEN', /muted/);
    // Acting without a membership (support agent on a support room, service token) is not enough.
    const support = await me.room.create({ kind: 'support', name: 'help', memberIds: [bob] });
    await expectTRPCError(
      callerFor(nodeA, actor(agent, 'default', ['support'])).signal.send({ roomId: support.id, toUserId: bob, type: 'hangup' }),
      'NOT_FOUND',
    );
    await expectTRPCError(callerFor(nodeA, actor('svc', 'default', ['service'])).signal.send({ ...to, type: 'hangup' }), 'NOT_FOUND');
  });

  it('is rate limited per user (RATE_SIGNALS_PER_10S) with the time to wait', async () => {
    const [alice, bob] = users('alice', 'bob');
    const me = callerFor(limited.app, actor(alice));
    const room = await me.room.openDirect({ userId: bob });
    for (let i = 0; i < 5; i++) {
      expect(await me.signal.send({ roomId: room.id, toUserId: bob, type: 'ice', payload: { candidate: `c${i}` } })).toEqual({ ok: true });
    }
    const err = await expectTRPCError(
      me.signal.send({ roomId: room.id, toUserId: bob, type: 'ice', payload: { candidate: 'c5' } }),
      'TOO_MANY_REQUESTS',
      /too many call signals/,
    );
    expect((err.cause as { retryAfterMs?: number }).retryAfterMs).toBeGreaterThan(0);
    // Another user has their own budget.
    expect(await callerFor(limited.app, actor(bob)).signal.send({ roomId: room.id, toUserId: alice, type: 'hangup' })).toEqual({ ok: true });
  });
});
