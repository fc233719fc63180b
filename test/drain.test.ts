import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatClient } from '../client/index.js';
import {
  clientFor,
  closeOf,
  CloseCode,
  Collector,
  dispose,
  ofType,
  rawClient,
  recordEvents,
  recordInbox,
  testEnv,
  tokenFor,
  uuid,
  within,
  wsClient,
  type RawClient,
  type RecordedEvent,
  type TestEnv,
  type TestServer,
} from './fixture.js';

/**
 * SIGTERM on a real server process: drain, tell clients to reconnect, exit 0 within the bound. And
 * the live events a node owes when it closes (a typing indicator to end, a room's last activity).
 */
let env: TestEnv;

beforeAll(async () => {
  env = await testEnv('drain');
});
afterAll(() => dispose(env));

describe('graceful shutdown of a process', () => {
  it('on SIGTERM the node drains, its clients resume on the other node, and it exits 0 within SHUTDOWN_TIMEOUT_MS', async () => {
    const extra = { SHUTDOWN_TIMEOUT_MS: '8000' };
    const a = await env.startNode('drain-a', extra);
    const b = await env.startNode('drain-b', extra);
    let target = a.url;
    await using owner = clientFor(b.url, 'd-owner');
    const room = await owner.trpc.room.create.mutate({ kind: 'group', name: 'drain', memberIds: ['d-reader'] });
    // The reader's socket follows `target`, as a load balancer would route its reconnect.
    await using reader = wsClient({ url: () => target, userId: 'd-reader' });
    const got = new Collector<RecordedEvent>();
    const sub = reader.trpc.chat.events.subscribe({ roomId: room.id }, { onData: got.push, onError: got.fail });
    await got.until((xs) => xs.some((x) => x.data.type === 'ready'), 'ready');
    const first = await owner.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'before' });
    await got.until((xs) => xs.some((x) => 'message' in x.data && x.data.message.id === first.id), 'first message');

    // Route reconnects to B, then SIGTERM A.
    target = b.url;
    const started = Date.now();
    a.child.kill('SIGTERM');
    const exit = await a.exited;
    const took = Date.now() - started;
    console.log(`[drain] node exited with ${JSON.stringify(exit)} after ${took} ms`);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(took).toBeLessThan(8000);

    const after = await owner.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'after' });
    await got.until((xs) => xs.some((x) => 'message' in x.data && x.data.message.id === after.id), 'message after the drain');
    const seqs = got.items.filter(ofType('message.new')).map((x) => x.data.seq);
    expect(seqs).toEqual([first.seq, after.seq]);
    expect(got.items.filter((x) => x.data.type === 'ready')).toHaveLength(1);
    sub.unsubscribe();
  });
});

const tag = () => uuid().slice(0, 8);
const send = (c: ChatClient, roomId: string, body: string) => c.trpc.chat.send.mutate({ roomId, clientId: uuid(), body });

describe('graceful shutdown of a node: the live work it still owes goes out before its bus closes', () => {
  /** The other node of each test; it stays up. */
  let b: TestServer;
  beforeAll(async () => {
    b = await env.startServer();
  });

  it('typing: a node shut down while a user is typing ends the indicator (typing: false) that its TYPING_TTL_MS would have ended', async () => {
    const TTL = 1000;
    const a = await env.startServer({ typingTtlMs: TTL, typingThrottleMs: 60_000 });
    const u = tag();
    const [o, m] = [`o-${u}`, `m-${u}`];
    const oc = clientFor(a.url, o);
    await using mc = clientFor(b.url, m);
    const room = await oc.trpc.room.create.mutate({ kind: 'group', name: 'typing-shutdown', memberIds: [m] });
    using rec = recordEvents(mc, { roomId: room.id });
    await rec.ready();
    expect(await oc.trpc.chat.typing.mutate({ roomId: room.id, typing: true })).toEqual({ forwarded: true });
    await rec.next('typing', (e) => e.userId === o && e.typing);
    await oc.close();
    // A rolling deploy: the node with the typing state drains (SIGTERM -> app.close()).
    await a.close();
    // The other member must see the indicator end (at the latest TTL after the last update).
    const stop = await rec.next('typing', (e) => e.userId === o && !e.typing, TTL + 4000).catch((err: unknown) => err);
    expect(stop).toEqual({ type: 'typing', roomId: room.id, userId: o, typing: false });
  }, 20_000);

  it('room.activity: a node shut down inside a room\u2019s coalescing window sends the activity of the burst\u2019s last message', async () => {
    const WINDOW = 1500;
    const a = await env.startServer({ activityCoalesceMs: WINDOW });
    const u = tag();
    const [o, m] = [`o-${u}`, `m-${u}`];
    const oc = clientFor(a.url, o);
    await using mc = clientFor(b.url, m);
    const room = await oc.trpc.room.create.mutate({ kind: 'group', name: 'activity-shutdown', memberIds: [m] });
    using inbox = recordInbox(mc);
    await inbox.ready();
    const m1 = await send(oc, room.id, 'first');
    await inbox.next('room.activity', (e) => e.roomId === room.id && e.seq === m1.seq);
    // Inside the room's window: coalesced, to go out when the window ends.
    const m2 = await send(oc, room.id, 'second, the newest message');
    await oc.close();
    await a.close();
    const last = await inbox.next('room.activity', (e) => e.roomId === room.id && e.seq >= m2.seq, WINDOW + 4000).catch((err: unknown) => err);
    expect(last).toMatchObject({ type: 'room.activity', roomId: room.id, seq: m2.seq, lastMessage: { id: m2.id } });
  }, 20_000);
});

describe('graceful shutdown of a node: the sockets still open are closed with 1001 GoingAway', () => {
  /** A raw socket of `user` on `srv`, authenticated (auth.me answered). */
  async function connected(srv: TestServer, user: string): Promise<RawClient> {
    const c = rawClient(srv.url, { token: tokenFor(user) });
    c.send({ id: 1, method: 'query', params: { path: 'auth.me', input: superjson.serialize(undefined) } });
    await c.waitFrame((f) => f.id === 1, 'auth.me');
    return c;
  }

  it('a client that does not act on the reconnect notification sees its socket closed with 1001 GoingAway (docs/SECURITY.md), not terminated (1006)', async () => {
    const a = await env.startServer();
    using c = await connected(a, `going-away-${tag()}`);
    // A client that does not act on tRPC's `reconnect` notification (or cannot in time: a call
    // pending on its socket keeps wsLink's old socket open).
    const closing = a.close();
    await c.waitFrame((f) => f.method === 'reconnect', 'the reconnect notification');
    const closed = await closeOf(c, 10_000, 'the socket to close');
    await within(closing, 10_000, 'the shutdown');
    expect(closed).toEqual({ code: CloseCode.GoingAway, reason: 'server shutting down' });
  });

  it('a client that does not read (never completes the close handshake) does not hold the shutdown: its socket is terminated, within SHUTDOWN_TIMEOUT_MS', async () => {
    const TIMEOUT = 3000;
    const a = await env.startServer({ shutdownTimeoutMs: TIMEOUT });
    using c = await connected(a, `not-reading-${tag()}`);
    c.pause();
    const started = Date.now();
    await within(a.close(), TIMEOUT, 'the shutdown');
    const took = Date.now() - started;
    // Once it reads again: the notification, then the close frame the server sent before it gave up.
    c.resume();
    await c.waitFrame((f) => f.method === 'reconnect', 'the reconnect notification');
    expect((await closeOf(c, 5000, 'the socket to close')).code).toBe(CloseCode.GoingAway);
    console.log(`[drain] a node with a socket that does not read shut down in ${took} ms (SHUTDOWN_TIMEOUT_MS ${TIMEOUT})`);
  });
});
