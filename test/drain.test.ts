import { Agent, request } from 'node:http';
import pg from 'pg';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChatClient } from '../client/index.js';
import {
  actor,
  callerFor,
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
  waitFor,
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

describe('graceful shutdown of a node: HTTP requests in flight finish (docs/OPERATIONS.md "Health, readiness, shutdown")', () => {
  /**
   * A room of `user` on `srv` whose row another transaction holds: a chat.send to it waits until
   * `release()`, as a send does in a busy room or on a slow database.
   */
  async function heldRoom(srv: TestServer, user: string) {
    const room = await callerFor(srv.app, actor(user)).room.create({ kind: 'group', name: 'drain over http' });
    const holder = new pg.Client({ connectionString: env.databaseUrl });
    await holder.connect();
    await holder.query('begin');
    await holder.query('select 1 from room where id = $1 for update', [room.id]);
    let released: Promise<unknown> | null = null;
    return {
      room,
      release: () => (released ??= holder.query('commit')),
      /** Resolves once a statement waits for the row: the send is in flight. */
      waited: () =>
        waitFor(
          async () =>
            (await env.sql<{ n: number }>("select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'"))[0]!.n,
          'the send waiting for the room row',
          { until: (n) => n >= 1, timeoutMs: 10_000 },
        ),
      async [Symbol.asyncDispose]() {
        await holder.end().catch(() => undefined);
      },
    };
  }

  /** Runs `then` once `srv` has closed its services (on the way out, once the drain let go of the HTTP requests). */
  function afterServicesClose(srv: TestServer, then: () => Promise<unknown>) {
    const services = srv.app.services;
    const closeServices = services.close.bind(services);
    services.close = async () => {
      await closeServices();
      await then();
    };
  }

  /** A chat.send over plain HTTP on `agent`: its status, its `Connection` header and body, or the error that cut it. */
  function sendOverHttp(srv: TestServer, user: string, roomId: string, body: string, agent: Agent) {
    const payload = JSON.stringify({ json: { roomId, clientId: uuid(), body } });
    return new Promise<{ status: number; connection: string | undefined; body: unknown } | { error: string }>((resolve) => {
      const req = request(
        `${srv.url}/trpc/chat.send`,
        { method: 'POST', agent, headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenFor(user)}` } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => resolve({ error: String(err) }));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
        },
      );
      req.on('error', (err) => resolve({ error: String(err) }));
      req.end(payload);
    });
  }

  it('a chat.send over HTTP that is in flight when the node starts draining gets its answer, not a cut connection', async () => {
    const srv = await env.startServer({ shutdownTimeoutMs: 5000 });
    const user = `drain-http-${tag()}`;
    await using held = await heldRoom(srv, user);
    const room = held.room;
    // A node that serves HTTP calls only (a product's backend posting through the HTTP API): no
    // WebSocket is open on it.
    expect(await (await fetch(`${srv.url}/metrics`)).text()).toMatch(/^chat_connections_open 0$/m);
    const sending = fetch(`${srv.url}/trpc/chat.send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenFor(user)}` },
      body: JSON.stringify({ json: { roomId: room.id, clientId: uuid(), body: 'sent as the node drains' } }),
    }).then(
      async (res) => ({ status: res.status, body: (await res.json()) as unknown }),
      (err: unknown) => ({ status: 0, body: String((err as { cause?: unknown }).cause ?? err) }),
    );
    await held.waited();
    // SIGTERM (main.ts calls app.close()). The request needs its lock for one more second, well
    // inside SHUTDOWN_TIMEOUT_MS (5 s): the lock is let go a second after the drain began, or as
    // soon as the node has closed its services, whichever comes first (the latter only happens
    // on the way out, once the HTTP requests were dealt with).
    afterServicesClose(srv, held.release);
    const timer = setTimeout(() => void held.release(), 1000);
    const closing = srv.close();
    const outcome = await sending;
    clearTimeout(timer);
    await held.release();
    await closing;
    const [{ n: stored }] = (await env.sql<{ n: number }>("select count(*)::int as n from message where room_id = $1 and body = 'sent as the node drains'", [room.id])) as [{ n: number }];
    console.log(`[drain-http] answer ${JSON.stringify(outcome)}; messages stored: ${stored}`);
    // Acknowledged: the client knows its message is in, instead of a connection reset it must
    // guess about.
    expect(outcome).toMatchObject({ status: 200, body: { result: { data: { json: { body: 'sent as the node drains' } } } } });
  });

  it('while draining, the answer of a request in flight says Connection: close and new connections are refused', async () => {
    const srv = await env.startServer({ shutdownTimeoutMs: 5000 });
    const user = `drain-close-${tag()}`;
    await using held = await heldRoom(srv, user);
    afterServicesClose(srv, held.release);
    // A keep-alive client (a load balancer's pool): its next request must go to another node.
    const agent = new Agent({ keepAlive: true });
    try {
      const sending = sendOverHttp(srv, user, held.room.id, 'answered with connection: close', agent);
      await held.waited();
      const closing = srv.close();
      // The node no longer listens: a new connection is refused, as before any request finished.
      const fresh = await fetch(`${srv.url}/healthz`).then(
        (res) => `answered ${res.status}`,
        (err: unknown) => String((err as { cause?: { code?: string } }).cause?.code ?? err),
      );
      await held.release();
      const outcome = await sending;
      await within(closing, 5000, 'the shutdown');
      expect({ fresh, outcome }).toMatchObject({
        fresh: 'ECONNREFUSED',
        outcome: { status: 200, connection: 'close', body: { result: { data: { json: { body: 'answered with connection: close' } } } } },
      });
    } finally {
      agent.destroy();
    }
  });

  it('a request that does not finish holds the drain no longer than SHUTDOWN_TIMEOUT_MS', async () => {
    const TIMEOUT = 4000;
    const srv = await env.startServer({ shutdownTimeoutMs: TIMEOUT });
    const user = `drain-stuck-${tag()}`;
    await using held = await heldRoom(srv, user);
    // The row is let go only once the node has closed its services: the request cannot finish
    // before the drain stops waiting for it.
    afterServicesClose(srv, held.release);
    const agent = new Agent({ keepAlive: true });
    try {
      const sending = sendOverHttp(srv, user, held.room.id, 'held past the drain', agent);
      await held.waited();
      const started = Date.now();
      await within(srv.close(), TIMEOUT, 'the shutdown');
      console.log(`[drain-http] a node with a request that does not finish shut down in ${Date.now() - started} ms (SHUTDOWN_TIMEOUT_MS ${TIMEOUT}); the request: ${JSON.stringify(await sending)}`);
    } finally {
      agent.destroy();
    }
  });
});

describe('graceful shutdown with a short SHUTDOWN_TIMEOUT_MS: the sockets get a share of it, never all of it', () => {
  it('SHUTDOWN_TIMEOUT_MS=1000 and a client that never completes its close: the node still closes its services (typing: false goes out) and exits 0 before the deadline', async () => {
    const a = await env.startNode('drain-short', { SHUTDOWN_TIMEOUT_MS: '1000' });
    const b = await env.startServer();
    const u = tag();
    const [o, m, r] = [`o-${u}`, `m-${u}`, `r-${u}`];
    const oc = clientFor(a.url, o);
    await using mc = clientFor(b.url, m);
    const room = await oc.trpc.room.create.mutate({ kind: 'group', name: 'short-drain', memberIds: [m] });
    using rec = recordEvents(mc, { roomId: room.id });
    await rec.ready();
    expect(await oc.trpc.chat.typing.mutate({ roomId: room.id, typing: true })).toEqual({ forwarded: true });
    await rec.next('typing', (e) => e.userId === o && e.typing);
    await oc.close();
    // A client that does not read: it never completes the close handshake, so its socket holds the
    // sockets' phase of the drain to its very end.
    using stuck = rawClient(a.url, { token: tokenFor(r) });
    stuck.send({ id: 1, method: 'query', params: { path: 'auth.me', input: superjson.serialize(undefined) } });
    await stuck.waitFrame((f) => f.id === 1, 'auth.me');
    stuck.pause();
    // SIGTERM: past SHUTDOWN_TIMEOUT_MS main.ts exits 1, whatever the drain still had to do.
    const started = Date.now();
    a.child.kill('SIGTERM');
    const exit = await a.exited;
    console.log(`[drain] with SHUTDOWN_TIMEOUT_MS 1000 and a socket that does not read, the node exited with ${JSON.stringify(exit)} after ${Date.now() - started} ms`);
    // The indicator ends now (the node's services closed), not TYPING_TTL_MS (10 s) after the last update.
    const stop = await rec.next('typing', (e) => e.userId === o && !e.typing, 5000).catch((err: unknown) => err);
    expect({ exit, stop }).toEqual({ exit: { code: 0, signal: null }, stop: { type: 'typing', roomId: room.id, userId: o, typing: false } });
  }, 30_000);
});
