/**
 * The typed client library (client/index.ts) against real servers: resume of every subscription
 * across a server restart on the same port, token refresh on reconnect, no reconnect storm, and
 * the observable connection state. Real PostgreSQL and Redis; each test file its own database.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { TRPCClientError, type TRPCLink } from '@trpc/client';
import { observable } from '@trpc/server/observable';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  backoff,
  createChatClient,
  errorCode,
  historyAround,
  type AppRouter,
  RoomTimeline,
  TYPING_TTL_MS,
  type ChatClient,
  type ConnectionState,
  type InboxEvent,
  type Message,
  type OpenRoom,
  type RoomEvent,
  type RoomEventEnvelope,
} from '../client/index.js';
import {
  Collector,
  countUpgrades,
  deferred,
  dispose,
  freePort,
  messageAt,
  Scope,
  TEST_LIMITS,
  testEnv,
  tokenFor,
  uuid,
  within,
  type Config,
  type TestEnv,
  type TestServer,
} from './fixture.js';
import { holdFirst } from './hold-link.js';

let env: TestEnv;
/** The clients of a test (made with createChatClient itself, the library under test), closed after it. */
const clients = new Scope();

beforeAll(async () => {
  env = await testEnv('client_lib');
});
afterEach(() => clients.dispose());
afterAll(() => dispose(env));

const start = (overrides: Partial<Config> = {}): Promise<TestServer> => env.startServer(overrides);
const track = (c: ChatClient): ChatClient => clients.use(c);

const bodyOf = (e: RoomEvent) => (e.type === 'message.new' ? e.message.body : null);

describe('createChatClient', () => {
  it('resumes every subscription across a server restart on the same port: nothing lost, nothing twice', async () => {
    const port = await freePort();
    let server = await start({ port });
    const url = server.url;
    expect(url).toBe(`http://127.0.0.1:${port}`);

    let tokenCalls = 0;
    const sub = track(
      createChatClient({
        url,
        getToken: () => {
          tokenCalls++;
          return tokenFor('rita');
        },
      }),
    );
    const states = new Collector<ConnectionState>();
    sub.onStateChange(states.push);
    const sender = track(createChatClient({ url, token: tokenFor('sam'), lazy: true }));

    const [roomA, roomB] = await Promise.all(
      ['restart-a', 'restart-b'].map((name) => sender.trpc.room.create.mutate({ kind: 'group', name, memberIds: ['rita'] })),
    );

    // Room A through tRPC's own wsLink resume (tracked ids), room B through subscribeRoom, and the inbox.
    const rawA = new Collector<RoomEventEnvelope>();
    sub.trpc.chat.events.subscribe({ roomId: roomA!.id }, { onData: rawA.push, onError: rawA.fail });
    const evB = new Collector<RoomEvent>();
    const retriesB: unknown[] = [];
    sub.subscribeRoom(roomB!.id, { onEvent: evB.push, onError: evB.fail, onRetry: (e) => retriesB.push(e) });
    const inbox = new Collector<InboxEvent>();
    sub.subscribeInbox({ onEvent: inbox.push, onError: inbox.fail });
    await rawA.until((xs) => xs.some((x) => x.data.type === 'ready'), 'ready A');
    await evB.until((xs) => xs.some((x) => x.type === 'ready'), 'ready B');
    await inbox.until((xs) => xs.some((x) => x.type === 'ready'), 'inbox ready');
    expect(sub.state.state).toBe('open');

    const send = (roomId: string, body: string) => sender.trpc.chat.send.mutate({ roomId, clientId: uuid(), body });
    const sent: Message[] = [];
    for (let i = 0; i < 3; i++) sent.push(await send(roomA!.id, `a${i}`), await send(roomB!.id, `b${i}`));
    await rawA.until((xs) => xs.filter((x) => x.data.type === 'message.new').length === 3, 'first messages in A');
    await evB.until((xs) => xs.filter((x) => x.type === 'message.new').length === 3, 'first messages in B');

    // Restart: the old server drains and closes; a new process-equivalent listens on the same port.
    await server.close();
    await states.until((xs) => xs.at(-1)?.state === 'connecting', 'connecting after the server closed');
    server = await start({ port });
    // Sent before the subscriber is back: only the resume can deliver these.
    for (let i = 3; i < 6; i++) sent.push(await send(roomA!.id, `a${i}`), await send(roomB!.id, `b${i}`));
    const added = await sender.trpc.room.create.mutate({ kind: 'group', name: 'restart-c', memberIds: ['rita'] });

    await rawA.until((xs) => xs.filter((x) => x.data.type === 'message.new').length >= 6, 'all messages in A');
    await evB.until((xs) => xs.filter((x) => x.type === 'message.new').length >= 6, 'all messages in B');
    await inbox.until((xs) => xs.some((x) => x.type === 'room.added' && x.roomId === added.id), 'inbox room.added after restart');

    // Exactly the sent messages, once each, in seq order.
    const expectA = sent.filter((m) => m.roomId === roomA!.id).map((m) => m.seq);
    const expectB = sent.filter((m) => m.roomId === roomB!.id).map((m) => m.seq);
    const gotA = rawA.items.filter((x) => x.data.type === 'message.new').map((x) => (x.data as { seq: number }).seq);
    const gotB = evB.items.filter((x) => x.type === 'message.new').map((x) => (x as { seq: number }).seq);
    expect(gotA).toEqual(expectA);
    expect(gotB).toEqual(expectB);
    expect(evB.items.filter((x) => x.type === 'message.new').map(bodyOf)).toEqual(['b0', 'b1', 'b2', 'b3', 'b4', 'b5']);
    // wsLink resumed with the last tracked id: ids keep increasing and `ready` came only once.
    expect(rawA.items.filter((x) => x.data.type === 'ready')).toHaveLength(1);
    expect(evB.items.filter((x) => x.type === 'ready')).toHaveLength(1);
    const ids = rawA.items.map((x) => Number(x.id));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));

    // The state went open -> connecting (with the cause) -> open; the token was read again.
    const seq = states.items.map((s) => s.state);
    expect(seq[0]).toBe('connecting');
    expect(seq).toContain('open');
    const lost = states.items.findIndex((s, i) => i > 0 && s.state === 'connecting');
    expect(states.items[lost]!.error).toBeInstanceOf(Error);
    expect(states.items.slice(lost).some((s) => s.state === 'open')).toBe(true);
    expect(sub.state).toMatchObject({ state: 'open', error: null });
    expect(tokenCalls).toBeGreaterThanOrEqual(2);
    expect(rawA.error).toBeNull();
    expect(evB.error).toBeNull();

    await sub.close();
    expect(sub.state.state).toBe('closed');
    expect(states.items.at(-1)!.state).toBe('closed');
  });

  it('reads a fresh token on reconnect: a socket closed at token expiry (4001) comes back with the new one', async () => {
    const server = await start();
    const tokens: string[] = [];
    const c = track(
      createChatClient({
        url: server.url,
        allOverWebSocket: true, // every call on the socket: getToken is read only by connectionParams
        getToken: () => {
          // The first token lives 2 s (exp has 1 s resolution); later ones are fresh.
          const t = tokens.length === 0 ? tokenFor('tara', { ttlSeconds: 2, name: 'Tara v1' }) : tokenFor('tara', { name: `Tara v${tokens.length + 1}` });
          tokens.push(t);
          return t;
        },
      }),
    );
    const states = new Collector<ConnectionState>();
    c.onStateChange(states.push);
    expect((await c.trpc.auth.me.query()).name).toBe('Tara v1');
    const room = await c.trpc.room.create.mutate({ kind: 'group', name: 'refresh', memberIds: ['ted'] });
    const events = new Collector<RoomEvent>();
    c.subscribeRoom(room.id, { onEvent: events.push, onError: events.fail });
    await events.until((xs) => xs.some((x) => x.type === 'ready'), 'ready');

    await states.until((xs) => xs.some((s) => s.state === 'connecting' && s.closeCode === 4001), 'the server closing the socket at expiry', 10_000);
    await states.until((xs) => xs.at(-1)?.state === 'open', 'reconnected');
    const me = await c.trpc.auth.me.query();
    expect(tokens.length).toBeGreaterThanOrEqual(2);
    expect(me.name).toBe(`Tara v${tokens.length}`); // the newest token is the one in use

    // The subscription went on with the new token.
    const ted = track(createChatClient({ url: server.url, token: tokenFor('ted'), lazy: true }));
    const m = await ted.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'after refresh' });
    await events.until((xs) => xs.some((x) => x.type === 'message.new' && x.seq === m.seq), 'message after the refresh');
    expect(events.items.filter((x) => x.type === 'message.new').map(bodyOf)).toEqual(['after refresh']);
    expect(events.error).toBeNull();
  });

  it('no reconnect storm when the token is rejected: one connection, final errors, the token read once', async () => {
    const server = await start();
    using upgrades = countUpgrades(server.app.server);
    let tokenCalls = 0;
    const retries: unknown[] = [];
    const c = track(
      createChatClient({
        url: server.url,
        allOverWebSocket: true,
        getToken: () => {
          tokenCalls++;
          return tokenFor('mallory', { secret: 'not-the-server-secret-0123456789abcdef' });
        },
        // 0: if the server dropped the socket, the client would reconnect at once and the round
        // trips below would show it.
        retryDelayMs: () => 0,
      }),
    );
    const failures: Error[] = [];
    for (let i = 0; i < 3; i++) {
      const err = deferred<Error>();
      c.subscribeRoom(uuid(), { onEvent: () => undefined, onError: err.resolve, onRetry: (e) => retries.push(e) });
      failures.push(await within(err.promise, 5000, 'subscription error'));
      failures.push(await c.trpc.auth.me.query().then(() => new Error('auth.me succeeded'), (e: Error) => e));
    }
    for (const f of failures) {
      expect(f).toBeInstanceOf(TRPCClientError);
      expect(errorCode(f)).toBe('UNAUTHORIZED');
    }
    // A last round trip on the same socket.
    await expect(c.trpc.auth.me.query()).rejects.toThrow('invalid access token');
    expect(retries).toEqual([]);
    expect(upgrades.count).toBe(1);
    expect(tokenCalls).toBe(1);
    expect(c.state).toMatchObject({ state: 'open', error: null });
  });

  it('a server that closes every new connection (too many connections) is retried with a growing backoff, never a tight loop', async () => {
    const server = await start({ limits: { ...TEST_LIMITS, connectionsPerIp: 1 } });
    const holder = track(createChatClient({ url: server.url, token: tokenFor('hal') }));
    await holder.trpc.auth.me.query();
    const held = new Collector<ConnectionState>();
    holder.onStateChange(held.push);
    await held.until((xs) => xs.at(-1)?.state === 'open', 'the first connection');

    using upgrades = countUpgrades(server.app.server);
    const states = new Collector<ConnectionState>();
    const t0 = Date.now();
    const flapper = track(createChatClient({ url: server.url, token: tokenFor('hal') }));
    flapper.onStateChange(states.push);
    await states.until((xs) => xs.filter((s) => s.closeCode === 4029).length >= 3, 'three refused connections', 15_000);
    const elapsed = Date.now() - t0;
    // Each refusal pushes the backoff up (floor 250 ms): >= 250 + 500 ms before the 3rd attempt;
    // a client that restarted at the floor every time would be there after 500 ms.
    expect(elapsed).toBeGreaterThanOrEqual(750);
    expect(upgrades.count).toBe(3);
    expect(states.items.find((s) => s.closeCode === 4029)?.state).toBe('connecting');
  });

  it('exposes the connection state: connecting -> open -> closed, lazy clients start closed', async () => {
    const server = await start();
    const eager = createChatClient({ url: server.url, token: tokenFor('sid') });
    const seen = new Collector<ConnectionState>();
    const off = eager.onStateChange(seen.push);
    await seen.until((xs) => xs.at(-1)?.state === 'open', 'open');
    expect(seen.items.map((s) => s.state)).toEqual(['connecting', 'open']);
    await eager.close();
    expect(seen.items.map((s) => s.state)).toEqual(['connecting', 'open', 'closed']);
    off();

    const lazy = track(createChatClient({ url: server.url, token: tokenFor('sid'), lazy: true }));
    const lazySeen = new Collector<ConnectionState>();
    lazy.onStateChange(lazySeen.push);
    expect(lazy.state.state).toBe('closed');
    await lazy.trpc.auth.me.query(); // HTTP: no socket needed
    expect(lazy.state.state).toBe('closed');
    const room = await lazy.trpc.room.create.mutate({ kind: 'group', name: 'lazy' });
    const ev = new Collector<RoomEvent>();
    const s = lazy.subscribeRoom(room.id, { onEvent: ev.push, onError: ev.fail });
    await ev.until((xs) => xs.some((x) => x.type === 'ready'), 'ready');
    expect(lazy.state.state).toBe('open');
    expect(lazySeen.items.map((x) => x.state)).toEqual(['closed', 'connecting', 'open']);
    s.unsubscribe();
  });

  it('openRoom: history, then live from its last seq, edits and reactions applied once', async () => {
    const server = await start();
    const ann = track(createChatClient({ url: server.url, token: tokenFor('ann'), lazy: true }));
    const bo = track(createChatClient({ url: server.url, token: tokenFor('bo'), lazy: true }));
    const room = await ann.trpc.room.create.mutate({ kind: 'group', name: 'timeline', memberIds: ['bo'] });
    const first = await bo.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'one' });
    await bo.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'two' });

    const changes = new Collector<RoomEvent | null>();
    const view = ann.openRoom(room.id, { historyLimit: 10, onChange: (e) => changes.push(e), onError: changes.fail });
    await view.loaded;
    expect(view.timeline.messages().filter((m) => m.kind !== 'system').map((m) => m.body)).toEqual(['one', 'two']);

    await ann.trpc.chat.react.mutate({ messageId: first.id, emoji: '👍' });
    await bo.trpc.chat.edit.mutate({ messageId: first.id, body: 'one!' });
    const three = await bo.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'three' });
    await changes.until(() => view.timeline.lastSeq >= three.seq, 'the live events');
    const snap = view.timeline.getSnapshot();
    expect(snap.messages.filter((m) => m.kind !== 'system').map((m) => m.body)).toEqual(['one!', 'two', 'three']);
    expect(view.timeline.bySeq(first.seq)!.reactions).toEqual([{ emoji: '👍', count: 1, me: true }]);
    // Applying a replayed event again changes nothing.
    const replay = changes.items.find((e) => e?.type === 'message.new')!;
    expect(view.timeline.apply(replay)).toBe(false);
    view.close();
  });

  it('loadOlder: a message deleted while its older page is on the way stays deleted (the page read before the delete does not bring its body back)', async () => {
    const server = await start();
    const ann = track(createChatClient({ url: server.url, token: tokenFor('ann-o'), lazy: true }));
    const bo = track(createChatClient({ url: server.url, token: tokenFor('bo-o'), lazy: true }));
    const room = await ann.trpc.room.create.mutate({ kind: 'group', name: 'scrollback', memberIds: ['bo-o'] });
    const sent: Message[] = [];
    for (let i = 0; i < 30; i++) sent.push(await bo.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m${i}` }));
    const [deleted, edited] = [sent[5]!, sent[6]!]; // on the older page, not in the first one
    // A link that holds the answer of the next older page (already read by the server) until released.
    let holdNext = false;
    const [held, release] = [deferred<void>(), deferred<void>()];
    const holdOlderPage: TRPCLink<AppRouter> =
      () =>
      ({ op, next }) =>
        observable((observer) => {
          const hold = holdNext && op.path === 'chat.history' && (op.input as { beforeSeq?: number }).beforeSeq !== undefined;
          if (hold) holdNext = false;
          const sub = next(op).subscribe({
            next: (v) => {
              if (!hold) return observer.next(v);
              held.resolve();
              void release.promise.then(() => {
                observer.next(v);
                observer.complete();
              });
            },
            error: (e) => observer.error(e),
            complete: () => {
              if (!hold) observer.complete();
            },
          });
          return () => sub.unsubscribe();
        });
    const reader = track(createChatClient({ url: server.url, token: tokenFor('ann-o'), lazy: true, links: [holdOlderPage] }));
    const changes = new Collector<RoomEvent | null>();
    const view = reader.openRoom(room.id, { historyLimit: 10, onChange: (e) => changes.push(e), onError: (e) => changes.fail(e) });
    await view.loaded;
    expect(view.timeline.byMessageId(deleted.id)).toBeUndefined();
    holdNext = true;
    const older = view.loadOlder(50);
    await held.promise; // the server has answered the page: both messages as they were
    await bo.trpc.chat.delete.mutate({ messageId: deleted.id });
    await bo.trpc.chat.edit.mutate({ messageId: edited.id, body: 'm6, edited' });
    await ann.trpc.chat.react.mutate({ messageId: edited.id, emoji: '👍' });
    await changes.until((es) => es.some((e) => e?.type === 'reaction.added' && e.messageId === edited.id), 'the live changes');
    release.resolve();
    await older;
    expect(view.timeline.byMessageId(deleted.id)).toMatchObject({ body: null });
    expect(view.timeline.byMessageId(edited.id)).toMatchObject({ body: 'm6, edited', reactions: [{ emoji: '👍', count: 1, me: true }] });
    expect(view.timeline.byMessageId(sent[7]!.id)).toMatchObject({ body: 'm7' });
    view.close();
  });

  it('a subscription that ends with a final error is let go by the client without an unsubscribe() (its handlers are collected)', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const server = await start();
    const owner = track(createChatClient({ url: server.url, token: tokenFor('owner-f'), lazy: true }));
    const room = await owner.trpc.room.create.mutate({ kind: 'group', name: 'private' });
    const outsider = track(createChatClient({ url: server.url, token: tokenFor('outsider-f'), lazy: true }));
    /** Subscribes `count` times to a room the user may not read, waits for each final error; how many handler objects survive a full GC. */
    const survivors = async (count: number, unsubscribeAfterError: boolean): Promise<number> => {
      const refs: WeakRef<object>[] = [];
      for (let i = 0; i < count; i++) {
        const done = deferred<unknown>();
        const handlers = { onEvent: () => undefined, onError: (e: Error) => done.resolve(e) };
        refs.push(new WeakRef(handlers));
        const sub = outsider.subscribeRoom(room.id, handlers);
        expect(errorCode(await done.promise)).toBe('NOT_FOUND'); // a final error: the subscription is over
        if (unsubscribeAfterError) sub.unsubscribe();
      }
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setImmediate(r));
        gc();
      }
      return refs.filter((r) => r.deref() !== undefined).length;
    };
    // With an explicit unsubscribe() they are collected (the last one may still sit in a register of this frame).
    const control = await survivors(10, true);
    expect(control).toBeLessThanOrEqual(1);
    expect(await survivors(10, false)).toBeLessThanOrEqual(control);
  });
});

describe('createChatClient: token refresh of the open socket', () => {
  it('auth.refresh called on the client goes over its open socket and swaps that socket\'s token', async () => {
    const server = await start();
    const u = `rf-${uuid().slice(0, 8)}`;
    const chat = track(createChatClient({ url: server.url, getToken: () => tokenFor(u, { ttlSeconds: 30 }) }));
    const states = new Collector<ConnectionState>();
    chat.onStateChange(states.push);
    await states.until((xs) => xs.at(-1)?.state === 'open', 'the socket open');
    // Over HTTP the server answers `connection: false`: no socket was refreshed.
    const res = await chat.trpc.auth.refresh.mutate({ token: tokenFor(u, { ttlSeconds: 3600 }) });
    expect(res.connection).toBe(true);
  });

  it('chat.refresh(token) carries the socket past the old token\'s expiry (no 4001, its subscription goes on) and later calls use the new token', async () => {
    const server = await start();
    const u = `rf2-${uuid().slice(0, 8)}`;
    const old = tokenFor(u, { ttlSeconds: 3, name: 'old' });
    const chat = track(createChatClient({ url: server.url, token: old }));
    // A control socket with the same token: its 4001 close says the old token has expired.
    const control = track(createChatClient({ url: server.url, token: old }));
    const states = new Collector<ConnectionState>();
    chat.onStateChange(states.push);
    const controlStates = new Collector<ConnectionState>();
    control.onStateChange(controlStates.push);
    const peer = track(createChatClient({ url: server.url, token: tokenFor(`peer-${u}`), lazy: true }));
    const room = await peer.trpc.room.create.mutate({ kind: 'group', name: 'refresh', memberIds: [u] });
    const events = new Collector<RoomEvent>();
    chat.subscribeRoom(room.id, { onEvent: events.push, onError: events.fail });
    await events.until((xs) => xs.some((x) => x.type === 'ready'), 'ready');
    await controlStates.until((xs) => xs.at(-1)?.state === 'open', 'the control socket open');

    const res = await chat.refresh(tokenFor(u, { name: 'new' }));
    expect(res.connection).toBe(true);
    await controlStates.until((xs) => xs.some((s) => s.closeCode === 4001), 'the control socket closed at the old expiry', 10_000);
    const m = await peer.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'after the old expiry' });
    await events.until((xs) => xs.some((x) => x.type === 'message.new' && x.seq === m.seq), 'a message after the old expiry');
    expect(states.items.some((s) => s.closeCode !== null)).toBe(false);
    expect(chat.state.state).toBe('open');
    expect(events.error).toBeNull();
    // HTTP calls (and any later connect) carry the new token, not the expired `token` option.
    expect((await chat.trpc.auth.me.query()).name).toBe('new');
  });

  it('chat.refresh with no socket open checks the token over HTTP, and the next connect uses it', async () => {
    const server = await start();
    const u = `rf3-${uuid().slice(0, 8)}`;
    const chat = track(createChatClient({ url: server.url, token: tokenFor(u, { name: 'old' }), lazy: true }));
    const res = await chat.refresh(tokenFor(u, { name: 'new' }));
    expect(res.connection).toBe(false);
    expect(res.expiresAt).toBeInstanceOf(Date);
    expect(chat.state.state).toBe('closed');
    const room = await chat.trpc.room.create.mutate({ kind: 'group', name: 'after refresh' });
    const events = new Collector<RoomEvent>();
    chat.subscribeRoom(room.id, { onEvent: events.push, onError: events.fail });
    await events.until((xs) => xs.some((x) => x.type === 'ready'), 'ready');
    // On the socket now: a second refresh is answered by the connection, which was opened with the new token.
    expect((await chat.refresh(tokenFor(u, { name: 'newer' }))).connection).toBe(true);
  });

  it('chat.refresh with another user\'s token is FORBIDDEN and the client keeps its token', async () => {
    const server = await start();
    const u = `rf4-${uuid().slice(0, 8)}`;
    const chat = track(createChatClient({ url: server.url, token: tokenFor(u, { name: 'mine' }) }));
    const states = new Collector<ConnectionState>();
    chat.onStateChange(states.push);
    await states.until((xs) => xs.at(-1)?.state === 'open', 'the socket open');
    const err = await chat.refresh(tokenFor(`other-${u}`)).then(() => new Error('refresh succeeded'), (e: unknown) => e);
    expect(errorCode(err)).toBe('FORBIDDEN');
    expect((await chat.trpc.auth.me.query()).name).toBe('mine');
  });
});

/**
 * A link that makes `openRoom` start past the room's position (`room.get` answers a `lastSeq` far
 * ahead), so the server answers its subscription with a `reset` and the client reloads the newest
 * page. The first `fail` reloads fail like a lost connection; with `hold`, the answer of the first
 * reload waits for `release`.
 */
function resetting(opts: { fail?: number; hold?: boolean } = {}) {
  let newestPages = 0;
  const state = { reloads: 0 };
  const [caught, released, delivered] = [deferred<void>(), deferred<void>(), deferred<void>()];
  const link: TRPCLink<AppRouter> =
    () =>
    ({ op, next }) =>
      observable((observer) => {
        const newest = op.path === 'chat.history' && (op.input as { beforeSeq?: number }).beforeSeq === undefined;
        const reload = newest && ++newestPages > 1 ? ++state.reloads : 0;
        if (reload > 0 && reload <= (opts.fail ?? 0)) {
          observer.error(new TRPCClientError('fetch failed'));
          return;
        }
        const hold = opts.hold === true && reload === 1;
        const sub = next(op).subscribe({
          next: (v) => {
            if (op.path === 'room.get') {
              const result = v.result as { data: { lastSeq: number } };
              return observer.next({ ...v, result: { ...result, data: { ...result.data, lastSeq: 10_000 } } } as typeof v);
            }
            if (!hold) return observer.next(v);
            caught.resolve();
            void released.promise.then(() => {
              observer.next(v);
              observer.complete();
              delivered.resolve();
            });
          },
          error: (e) => observer.error(e),
          complete: () => {
            if (!hold) observer.complete();
          },
        });
        return () => sub.unsubscribe();
      });
  return { link, state, caught: caught.promise, delivered: delivered.promise, release: () => released.resolve() };
}

const olderPage = (path: string, input: unknown) => path === 'chat.history' && (input as { beforeSeq?: number }).beforeSeq !== undefined;
const userBodies = (view: OpenRoom) => view.timeline.messages().filter((m) => m.kind !== 'system').map((m) => m.body);

describe('openRoom after a reset', () => {
  it('a reload of the newest page that fails for a moment is retried: the room is not left empty', async () => {
    const server = await start();
    const ann = track(createChatClient({ url: server.url, token: tokenFor('ann-r'), lazy: true }));
    const room = await ann.trpc.room.create.mutate({ kind: 'group', name: 'reset' });
    await ann.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'kept' });
    const reset = resetting({ fail: 2 });
    const reader = track(createChatClient({ url: server.url, token: tokenFor('ann-r'), lazy: true, retryDelayMs: () => 0, links: [reset.link] }));
    const changes = new Collector<RoomEvent | null>();
    const view = reader.openRoom(room.id, { onChange: (e) => changes.push(e), onError: changes.fail });
    await changes.until(
      (es) => es.some((e) => e?.type === 'reset') && view.timeline.messages().some((m) => m.body === 'kept'),
      'the newest page again after the reset',
    );
    expect(reset.state.reloads).toBe(3); // two failed, the third answered
    expect(changes.error).toBeNull();
    view.close();
  });

  it('a reload answered after close() calls neither onChange nor onError', async () => {
    const server = await start();
    const ann = track(createChatClient({ url: server.url, token: tokenFor('ann-c'), lazy: true }));
    const room = await ann.trpc.room.create.mutate({ kind: 'group', name: 'reset-close' });
    await ann.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'kept' });
    const reset = resetting({ hold: true });
    const reader = track(createChatClient({ url: server.url, token: tokenFor('ann-c'), lazy: true, links: [reset.link] }));
    const calls: string[] = [];
    const view = reader.openRoom(room.id, { onChange: (e) => calls.push(e?.type ?? 'page'), onError: (e) => calls.push(`error: ${e.message}`) });
    await reset.caught; // the reload after the reset has been answered by the server
    view.close();
    const before = [...calls];
    expect(before).toContain('reset');
    reset.release();
    await reset.delivered;
    await new Promise<void>((r) => setImmediate(r)); // the client's handlers of the answer have run
    expect(calls).toEqual(before);
  });

  it('an older page asked for before the reset is dropped when it comes: no gap under the reloaded page, loadOlder answers false', async () => {
    const server = await start();
    const ann = track(createChatClient({ url: server.url, token: tokenFor('ann-g'), lazy: true }));
    const room = await ann.trpc.room.create.mutate({ kind: 'group', name: 'reset-older' });
    const send = (body: string) => ann.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body });
    for (let i = 0; i < 30; i++) await send(`m${i}`);
    const reset = resetting();
    const older = holdFirst(olderPage);
    let newestPages = 0;
    const reload = holdFirst((path, input) => path === 'chat.history' && !olderPage(path, input) && ++newestPages === 2, 'request');
    const reader = track(createChatClient({ url: server.url, token: tokenFor('ann-g'), lazy: true, links: [reset.link, older.link, reload.link] }));
    const changes = new Collector<RoomEvent | null>();
    const view = reader.openRoom(room.id, { historyLimit: 10, onChange: (e) => changes.push(e), onError: changes.fail });
    await view.loaded;
    expect(userBodies(view)).toEqual(Array.from({ length: 10 }, (_, i) => `m${20 + i}`));
    // Asked for before the subscription's reset can arrive (that takes a message on the socket).
    const loading = view.loadOlder(50);
    await older.caught; // the server has answered m0..m19
    await reload.caught; // the reset came: the timeline is empty, the newest page not asked for yet
    expect(changes.items.some((e) => e?.type === 'reset')).toBe(true);
    for (let i = 30; i < 45; i++) await send(`m${i}`);
    reload.release(); // the newest page is now m35..m44 (m30..m44 come live too)
    const pages = () => changes.items.filter((e) => e === null).length;
    await changes.until(() => pages() === 2 && userBodies(view).includes('m44'), 'the newest page reloaded and the live messages');
    const seen = changes.items.length;
    older.release();
    expect(await loading).toBe(false);
    expect(userBodies(view)).toEqual(Array.from({ length: 15 }, (_, i) => `m${30 + i}`));
    expect(changes.items.length).toBe(seen);
    // Paging back goes on from the reloaded page: everything, nothing missing.
    expect(await view.loadOlder(50)).toBe(true);
    expect(userBodies(view)).toEqual(Array.from({ length: 45 }, (_, i) => `m${i}`));
    expect(changes.error).toBeNull();
    view.close();
  });
});

describe('openRoom and close()', () => {
  it('a first page answered after close() is not loaded and calls no onChange', async () => {
    const server = await start();
    const ann = track(createChatClient({ url: server.url, token: tokenFor('ann-f'), lazy: true }));
    const room = await ann.trpc.room.create.mutate({ kind: 'group', name: 'close-first' });
    await ann.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'kept' });
    const first = holdFirst((path) => path === 'chat.history');
    const reader = track(createChatClient({ url: server.url, token: tokenFor('ann-f'), lazy: true, links: [first.link] }));
    const calls: string[] = [];
    const view = reader.openRoom(room.id, { onChange: (e) => calls.push(e?.type ?? 'page'), onError: (e) => calls.push(`error: ${e.message}`) });
    await first.caught;
    view.close();
    first.release();
    await view.loaded;
    expect(view.timeline.messages()).toEqual([]);
    expect(calls).toEqual([]);
  });

  it('an older page answered after close() is not loaded: loadOlder answers false and calls no onChange', async () => {
    const server = await start();
    const ann = track(createChatClient({ url: server.url, token: tokenFor('ann-l'), lazy: true }));
    const room = await ann.trpc.room.create.mutate({ kind: 'group', name: 'close-older' });
    for (let i = 0; i < 5; i++) await ann.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m${i}` });
    const older = holdFirst(olderPage);
    const reader = track(createChatClient({ url: server.url, token: tokenFor('ann-l'), lazy: true, links: [older.link] }));
    const calls: string[] = [];
    const view = reader.openRoom(room.id, { historyLimit: 2, onChange: (e) => calls.push(e?.type ?? 'page'), onError: (e) => calls.push(`error: ${e.message}`) });
    await view.loaded;
    const seen = [...calls];
    const loading = view.loadOlder();
    await older.caught;
    view.close();
    older.release();
    expect(await loading).toBe(false);
    expect(userBodies(view)).toEqual(['m3', 'm4']);
    expect(calls).toEqual(seen);
  });

  it('loadOlder called again while its page is on its way answers with that page: one request, no page twice', async () => {
    const server = await start();
    const ann = track(createChatClient({ url: server.url, token: tokenFor('ann-t'), lazy: true }));
    const room = await ann.trpc.room.create.mutate({ kind: 'group', name: 'twice-older' });
    for (let i = 0; i < 6; i++) await ann.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m${i}` });
    const older = holdFirst(olderPage);
    const asked: number[] = [];
    const counting: TRPCLink<AppRouter> =
      () =>
      ({ op, next }) => {
        if (olderPage(op.path, op.input)) asked.push((op.input as { beforeSeq: number }).beforeSeq);
        return next(op);
      };
    const reader = track(createChatClient({ url: server.url, token: tokenFor('ann-t'), lazy: true, links: [counting, older.link] }));
    const pages: string[] = [];
    const view = reader.openRoom(room.id, { historyLimit: 2, onChange: (e) => e === null && pages.push('page') });
    await view.loaded;
    const first = view.loadOlder(2);
    await older.caught;
    const again = view.loadOlder(2);
    older.release();
    expect(await Promise.all([first, again])).toEqual([true, true]);
    expect(asked).toHaveLength(1);
    expect(pages).toEqual(['page', 'page']); // the first page, then the older one once
    expect(userBodies(view)).toEqual(['m2', 'm3', 'm4', 'm5']);
    // Once it came, the next call asks for the page below it.
    expect(await view.loadOlder(2)).toBe(true);
    expect(asked).toHaveLength(2);
    expect(userBodies(view)).toEqual(['m0', 'm1', 'm2', 'm3', 'm4', 'm5']);
  });

  it('openRoom on a closed client rejects `loaded` at once and asks nothing of the server', async () => {
    const server = await start();
    const ann = track(createChatClient({ url: server.url, token: tokenFor('ann-x'), lazy: true }));
    const room = await ann.trpc.room.create.mutate({ kind: 'group', name: 'closed-client' });
    const calls: string[] = [];
    const counting: TRPCLink<AppRouter> =
      () =>
      ({ op, next }) => {
        calls.push(op.path);
        return next(op);
      };
    const reader = createChatClient({ url: server.url, token: tokenFor('ann-x'), lazy: true, links: [counting] });
    await reader.close();
    const errors: Error[] = [];
    const view = reader.openRoom(room.id, { onError: (e) => errors.push(e) });
    await expect(view.loaded).rejects.toThrow('this chat client is closed');
    expect(calls).toEqual([]);
    expect(errors.map((e) => e.message)).toEqual(['this chat client is closed']);
  });
});

describe('RoomTimeline: history pages that overlap live events', () => {
  /** A timeline of `user` loaded with the room's newest page, started where the room was before that page was read. */
  const loadedTimeline = async (c: ChatClient, user: string, roomId: string): Promise<RoomTimeline> => {
    const { lastSeq } = await c.trpc.room.get.query({ roomId });
    const page = await c.trpc.chat.history.query({ roomId });
    const t = new RoomTimeline(user);
    t.load(page.messages);
    t.lastSeq = Math.max(lastSeq, page.messages.at(-1)?.seq ?? -1);
    return t;
  };

  it('a page read before a delete and loaded after the delete event leaves the message deleted (a page replaces a message only when it is as new as its last event)', async () => {
    const server = await start();
    const u = uuid().slice(0, 8);
    const me = track(createChatClient({ url: server.url, token: tokenFor(`lo-${u}`), lazy: true }));
    const room = await me.trpc.room.create.mutate({ kind: 'group', name: 'overlap' });
    for (let i = 0; i < 5; i++) await me.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `old ${i}` });
    const t = await loadedTimeline(me, `lo-${u}`, room.id);
    const events = new Collector<RoomEvent>();
    const onEvent = (e: RoomEvent) => {
      t.apply(e);
      events.push(e);
    };
    const sub = me.subscribeRoom(room.id, { onEvent, onError: events.fail }, { lastEventId: String(t.lastSeq) });
    try {
      const target = t.messages()[2]!;
      // The messages around it (a search hit, a link), read while it is still there.
      const around = await historyAround(me, room.id, target.seq, { older: 5, newer: 5 });
      expect(around.messages.find((m) => m.id === target.id)!.body).toBe(target.body);
      // Deleted before that answer is loaded; the live event is applied first.
      const del = await me.trpc.chat.delete.mutate({ messageId: target.id });
      await events.until((es) => es.some((e) => e.type === 'message.deleted' && e.message.id === target.id), 'the deletion event');
      expect(t.byMessageId(target.id)!.body).toBeNull();
      t.load(around.messages);
      expect(t.byMessageId(target.id)).toMatchObject({ body: null, deletedAt: del.deletedAt });
      // The page still brings what it has newer than the events applied: its other messages stay as they are.
      expect(t.messages().map((m) => m.body)).toEqual(['old 0', 'old 1', null, 'old 3', 'old 4']);
    } finally {
      sub.unsubscribe();
    }
  });

  it('a page whose newest message is past the events applied so far leaves lastSeq alone: the events in between are still applied', async () => {
    const server = await start();
    const u = uuid().slice(0, 8);
    const me = track(createChatClient({ url: server.url, token: tokenFor(`lf-${u}`), lazy: true }));
    const room = await me.trpc.room.create.mutate({ kind: 'group', name: 'forward' });
    for (let i = 0; i < 5; i++) await me.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m ${i}` });
    const t = await loadedTimeline(me, `lf-${u}`, room.id);
    const first = t.messages()[0]!;
    const startedAt = t.lastSeq;
    // The socket's events arrive later than the HTTP answers (two connections): they wait here
    // until the test lets them in, in order.
    const inFlight = new Collector<RoomEvent>();
    const sub = me.subscribeRoom(room.id, { onEvent: inFlight.push, onError: inFlight.fail }, { lastEventId: String(t.lastSeq) });
    try {
      const reacted = await me.trpc.chat.react.mutate({ messageId: first.id, emoji: '👍' });
      const newest = await me.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'newest' });
      await inFlight.until((es) => es.some((e) => e.type === 'message.new' && e.message.id === newest.id), 'both events on the socket');
      // A forward page (after the last message shown) answered before the events are applied.
      const page = await me.trpc.chat.history.query({ roomId: room.id, afterSeq: t.messages().at(-1)!.seq });
      expect(page.messages.map((m) => m.id)).toEqual([newest.id]);
      t.load(page.messages);
      expect(t.lastSeq).toBe(startedAt);
      for (const e of inFlight.items) t.apply(e);
      expect(reacted.reactions).toEqual([{ emoji: '👍', count: 1, me: true }]);
      expect(t.byMessageId(first.id)!.reactions).toEqual([{ emoji: '👍', count: 1, me: true }]);
      expect(t.lastSeq).toBe(newest.seq);
    } finally {
      sub.unsubscribe();
    }
  });
});

describe('client helpers', () => {
  it('backoff has a floor, grows, is capped and jittered', () => {
    for (let n = 0; n < 20; n++) {
      expect(backoff(n)).toBeGreaterThanOrEqual(250);
      expect(backoff(n)).toBeLessThanOrEqual(10_000);
    }
    expect(Math.min(...Array.from({ length: 50 }, () => backoff(4)))).toBeGreaterThanOrEqual(2000);
    expect(new Set(Array.from({ length: 50 }, () => backoff(6))).size).toBeGreaterThan(1);
  });

  it('RoomTimeline drops a durable event it has applied and keeps seq order', () => {
    const t = new RoomTimeline('me');
    const msg = (seq: number, body: string) => messageAt(seq, body, { createdAt: new Date() });
    t.load([msg(5, 'five'), msg(3, 'three')]);
    t.lastSeq = 5; // the starting point after the page (a page never moves it)
    expect(t.apply({ type: 'message.new', roomId: 'r', seq: 5, message: msg(5, 'five') })).toBe(false);
    expect(t.apply({ type: 'message.new', roomId: 'r', seq: 7, message: msg(7, 'seven') })).toBe(true);
    expect(t.apply({ type: 'message.new', roomId: 'r', seq: 7, message: msg(7, 'seven') })).toBe(false);
    expect(t.apply({ type: 'typing', roomId: 'r', userId: 'you', typing: true })).toBe(true);
    expect(t.apply({ type: 'typing', roomId: 'r', userId: 'me', typing: true })).toBe(false); // never yourself
    expect(t.typing()).toEqual(['you']);
    expect(t.apply({ type: 'message.new', roomId: 'r', seq: 8, message: msg(8, 'eight') })).toBe(true);
    expect(t.typing()).toEqual([]); // their message ended their typing
    expect(t.messages().map((m) => m.seq)).toEqual([3, 5, 7, 8]);
  });

  it('RoomTimeline: a call\'s answer is shown at once without moving lastSeq; its event, and newer ones, win', () => {
    const t = new RoomTimeline('me');
    const msg = (seq: number, body: string, editedAt: Date | null = null) => messageAt(seq, body, { senderId: 'me', editedAt });
    let changes = 0;
    t.subscribe(() => changes++);
    t.load([msg(3, 'three')]);
    t.lastSeq = 3;
    // The answer of chat.send for seq 6 arrives before the events 4..6.
    expect(t.insert(msg(6, 'six'))).toBe(true);
    expect(t.lastSeq).toBe(3);
    expect(t.messages().map((m) => m.seq)).toEqual([3, 6]);
    expect(changes).toBe(2);
    // Events below it are still applied, in order, and its own event is not a duplicate.
    expect(t.apply({ type: 'message.new', roomId: 'r', seq: 4, message: { ...msg(4, 'four'), senderId: 'you' } })).toBe(true);
    expect(t.apply({ type: 'message.new', roomId: 'r', seq: 6, message: msg(6, 'six') })).toBe(true);
    expect(t.messages().map((m) => m.seq)).toEqual([3, 4, 6]);
    expect(t.lastSeq).toBe(6);
    // An edit applied first is not undone by a late answer of the same message.
    const edited = msg(6, 'six!', new Date(1));
    expect(t.apply({ type: 'message.edited', roomId: 'r', seq: 7, message: edited })).toBe(true);
    expect(t.insert(msg(6, 'six'))).toBe(false);
    expect(t.byMessageId('m6')!.body).toBe('six!');
    expect(t.messages().map((m) => m.seq)).toEqual([3, 4, 6]);
  });

  it('RoomTimeline: a change to a message not loaded is applied when a page brings it, unless the page is newer than the change', () => {
    const msg = (seq: number, body: string) => messageAt(seq, body);
    // An older page read before the change (its newest message below the change's seq): the change wins.
    const t = new RoomTimeline('me');
    t.apply({ type: 'ready', roomId: 'r', seq: 100 });
    expect(t.apply({ type: 'message.edited', roomId: 'r', seq: 101, message: { ...msg(5, 'five, edited'), editedAt: new Date(1) } })).toBe(true);
    expect(t.apply({ type: 'message.deleted', roomId: 'r', seq: 102, message: { ...msg(6, ''), body: null, deletedAt: new Date(1) } })).toBe(true);
    t.load([msg(5, 'five'), msg(6, 'six'), msg(7, 'seven')]);
    expect(t.messages().map((m) => [m.seq, m.body])).toEqual([
      [5, 'five, edited'],
      [6, null],
      [7, 'seven'],
    ]);
    expect(t.lastSeq).toBe(102);
    // A page whose newest message is above the change (the newest page after a reset, read after
    // the change and after a later edit whose event has not come yet): the page wins.
    const u = new RoomTimeline('me');
    u.apply({ type: 'reset', roomId: 'r', seq: 100 });
    u.apply({ type: 'message.edited', roomId: 'r', seq: 101, message: { ...msg(5, 'first edit'), editedAt: new Date(1) } });
    u.load([{ ...msg(5, 'second edit'), editedAt: new Date(2) }, msg(103, 'newest')]);
    expect(u.byMessageId('m5')!.body).toBe('second edit');
    // The page does not move lastSeq: the events after 101 are still applied when they come.
    expect(u.lastSeq).toBe(101);
    expect(u.apply({ type: 'message.edited', roomId: 'r', seq: 102, message: { ...msg(5, 'second edit'), editedAt: new Date(2) } })).toBe(true);
    expect(u.byMessageId('m5')!.body).toBe('second edit');
    expect(u.lastSeq).toBe(102);
  });

  it('RoomTimeline: of two presence states of a user, the one of the higher version stays, events and presence.get alike', () => {
    const t = new RoomTimeline('me');
    const presence = (status: 'online' | 'offline' | 'away', version: number) =>
      ({ type: 'presence', roomId: 'r', userId: 'you', status, lastSeenAt: null, version }) as const;
    expect(t.apply(presence('online', 5))).toBe(true);
    expect(t.apply(presence('offline', 4))).toBe(false); // read before the online: older
    expect(t.presence('you')).toBe('online');
    t.setPresence('you', 'offline', 3); // an answer of presence.get read before
    expect(t.presence('you')).toBe('online');
    t.setPresence('you', 'away', 7);
    expect(t.presence('you')).toBe('away');
    expect(t.apply(presence('online', 6))).toBe(false);
    expect(t.apply(presence('offline', 8))).toBe(true);
    expect(t.presence('you')).toBe('offline');
  });

  it('RoomTimeline: read positions only rise, whether seeded or from receipts', () => {
    const t = new RoomTimeline('me');
    let changes = 0;
    t.subscribe(() => changes++);
    t.setReadUpTo('you', 5);
    t.setReadUpTo('you', 3); // an older position changes nothing
    expect(t.getSnapshot().readUpTo.get('you')).toBe(5);
    expect(changes).toBe(1);
    expect(t.apply({ type: 'receipt.read', roomId: 'r', userId: 'you', seq: 4 })).toBe(false);
    expect(t.apply({ type: 'receipt.read', roomId: 'r', userId: 'you', seq: 9 })).toBe(true);
    t.setReadUpTo('you', 7);
    expect(t.getSnapshot().readUpTo.get('you')).toBe(9);
    expect(changes).toBe(2);
  });

  it('RoomTimeline: typing runs out after its TTL without an event, and subscribers are told', () => {
    const t = new RoomTimeline('me');
    let changes = 0;
    t.subscribe(() => changes++);
    const at = Date.now();
    expect(t.expireTyping(at)).toBeNull();
    t.apply({ type: 'typing', roomId: 'r', userId: 'ann', typing: true }, at);
    t.apply({ type: 'typing', roomId: 'r', userId: 'bo', typing: true }, at + 3_000);
    expect(changes).toBe(2);
    // Nothing has run out yet: no change, and the next one runs out at ann's TTL.
    expect(t.expireTyping(at + 5_000)).toBe(at + TYPING_TTL_MS);
    expect(changes).toBe(2);
    expect(t.getSnapshot().typing).toEqual(['ann', 'bo']);
    // ann's runs out: one change, a fresh snapshot without her, and bo's is next.
    expect(t.expireTyping(at + TYPING_TTL_MS)).toBe(at + 3_000 + TYPING_TTL_MS);
    expect(changes).toBe(3);
    expect(t.getSnapshot().typing).toEqual(['bo']);
    expect(t.expireTyping(at + 3_000 + TYPING_TTL_MS)).toBeNull();
    expect(changes).toBe(4);
    expect(t.getSnapshot().typing).toEqual([]);
  });
});
