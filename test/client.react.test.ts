/**
 * The React hooks of the client package (client/react.ts) against a real server.
 *
 * React is not installed in this repository (only @types/react), so the hooks run under a minimal
 * React stand-in (`react` mocked below): function components with useState, useRef, useEffect (all
 * destroys of a commit before its creates, StrictMode's mount-unmount-mount of effects) and
 * useSyncExternalStore (resubscribed when `subscribe` changes, a render when the snapshot
 * changes), state updates rendered in a microtask. That is the contract the hooks are written against.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';

const fake = vi.hoisted(() => {
  type Deps = readonly unknown[] | undefined;
  interface EffectSlot {
    kind: 'effect';
    deps: Deps;
    create: (() => undefined | (() => void)) | null;
    destroy: (() => void) | null;
  }
  interface StoreSlot {
    kind: 'store';
    subscribe: ((cb: () => void) => () => void) | null;
    pending: ((cb: () => void) => () => void) | null;
    getSnapshot: () => unknown;
    value: unknown;
    unsubscribe: (() => void) | null;
  }
  type Slot = { kind: 'state'; value: unknown; set: (v: unknown) => void } | { kind: 'ref'; ref: { current: unknown } } | EffectSlot | StoreSlot;

  let current: Root<unknown, unknown> | null = null;
  const depsChanged = (a: Deps, b: Deps) => !a || !b || a.length !== b.length || a.some((x, i) => !Object.is(x, b[i]));

  class Root<P, O> {
    slots: Slot[] = [];
    i = 0;
    mounted = false;
    unmounted = false;
    scheduled = false;
    renders = 0;
    output!: O;
    props!: P;
    commits = new Set<() => void>();
    constructor(
      readonly component: (props: P) => O,
      readonly strict: boolean,
    ) {}
    private slot<S extends Slot>(make: () => S): S {
      if (this.slots[this.i] === undefined) this.slots[this.i] = make();
      const s = this.slots[this.i];
      this.i++;
      return s as S;
    }
    schedule() {
      if (this.scheduled || this.unmounted) return;
      this.scheduled = true;
      queueMicrotask(() => {
        this.scheduled = false;
        if (!this.unmounted) this.renderNow();
      });
    }
    render(props: P) {
      this.props = props;
      this.renderNow();
    }
    renderNow() {
      current = this as Root<unknown, unknown>;
      this.i = 0;
      try {
        this.output = this.component(this.props);
      } finally {
        current = null;
      }
      this.renders++;
      this.commit();
      for (const l of [...this.commits]) l();
    }
    private commit() {
      const effects = this.slots.filter((s): s is EffectSlot => s.kind === 'effect' && s.create !== null);
      const stores = this.slots.filter((s): s is StoreSlot => s.kind === 'store' && s.pending !== null);
      // Stores subscribe in the layout phase (before passive effects).
      for (const s of stores) {
        s.unsubscribe?.();
        s.subscribe = s.pending;
        s.pending = null;
        s.unsubscribe = s.subscribe!(() => {
          if (!Object.is(s.getSnapshot(), s.value)) this.schedule();
        });
        if (!Object.is(s.getSnapshot(), s.value)) this.schedule();
      }
      for (const e of effects) {
        e.destroy?.();
        e.destroy = null;
      }
      const run = () => {
        for (const e of this.slots) if (e.kind === 'effect' && e.create) e.destroy = e.create() ?? null;
      };
      if (this.strict && !this.mounted) {
        run();
        for (const e of this.slots) if (e.kind === 'effect' && e.create) e.destroy?.();
      }
      run();
      for (const e of effects) e.create = null;
      this.mounted = true;
    }
    unmount() {
      this.unmounted = true;
      for (const s of this.slots) if (s.kind === 'store') s.unsubscribe?.();
      for (const s of this.slots) if (s.kind === 'effect') s.destroy?.();
    }
    /** Resolves once no render is scheduled (state updates of settled promises are rendered). */
    async flush() {
      for (let n = 0; n < 20; n++) {
        await new Promise<void>((r) => setImmediate(r));
        if (!this.scheduled) return;
      }
    }
    /** Resolves when a commit's output satisfies `pred` (checked now and after every commit). */
    until(pred: (o: O) => boolean, what: string, ms = 15_000): Promise<O> {
      if (this.mounted && pred(this.output)) return Promise.resolve(this.output);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.commits.delete(check);
          reject(new Error(`timed out waiting for ${what}`));
        }, ms);
        const check = () => {
          if (!pred(this.output)) return;
          clearTimeout(timer);
          this.commits.delete(check);
          resolve(this.output);
        };
        this.commits.add(check);
      });
    }

    // hooks
    useState<T>(init: T | (() => T)): [T, (v: T | ((p: T) => T)) => void] {
      const s = this.slot(() => {
        const slot: { kind: 'state'; value: unknown; set: (v: unknown) => void } = {
          kind: 'state',
          value: typeof init === 'function' ? (init as () => T)() : init,
          set: (v: unknown) => {
            const next = typeof v === 'function' ? (v as (p: unknown) => unknown)(slot.value) : v;
            if (Object.is(next, slot.value)) return;
            slot.value = next;
            this.schedule();
          },
        };
        return slot;
      });
      return [s.value as T, s.set as (v: T | ((p: T) => T)) => void];
    }
    useRef<T>(init: T): { current: T } {
      return this.slot(() => ({ kind: 'ref' as const, ref: { current: init as unknown } })).ref as { current: T };
    }
    useEffect(create: () => undefined | (() => void), deps?: readonly unknown[]) {
      const s = this.slot<EffectSlot>(() => ({ kind: 'effect', deps: undefined, create: null, destroy: null }));
      if (!this.mounted || depsChanged(s.deps, deps)) {
        s.create = create;
        s.deps = deps;
      }
    }
    useSyncExternalStore<T>(subscribe: (cb: () => void) => () => void, getSnapshot: () => T): T {
      const s = this.slot<StoreSlot>(() => ({ kind: 'store', subscribe: null, pending: null, getSnapshot, value: undefined, unsubscribe: null }));
      s.getSnapshot = getSnapshot;
      s.value = getSnapshot();
      if (s.subscribe !== subscribe) s.pending = subscribe;
      return s.value as T;
    }
  }
  const hook = () => {
    if (!current) throw new Error('hook outside a component');
    return current;
  };
  const react = {
    useState: <T,>(init: T | (() => T)) => hook().useState(init),
    useRef: <T,>(init: T) => hook().useRef(init),
    useEffect: (create: () => undefined | (() => void), deps?: readonly unknown[]) => hook().useEffect(create, deps),
    useSyncExternalStore: <T,>(subscribe: (cb: () => void) => () => void, getSnapshot: () => T) => hook().useSyncExternalStore(subscribe, getSnapshot),
  };
  const mount = <P, O>(component: (props: P) => O, props: P, opts: { strict?: boolean } = {}) => {
    const root = new Root(component, opts.strict ?? false);
    root.render(props);
    return root;
  };
  return { react, mount };
});

vi.mock('react', () => ({ ...fake.react, default: fake.react }));
// client/package.json declares react an optional peer: Vite resolves the import to this id.
vi.mock('__vite-optional-peer-dep:react:@trpc-chat/client', () => ({ ...fake.react, default: fake.react }));

import {
  createChatClient,
  RoomTimeline,
  TYPING_TTL_MS,
  type ChatClient,
  type ChatClientOptions,
  type ConnectionState,
  type OpenRoom,
} from '../client/index.js';
import { useChatClient, useRoomEvents } from '../client/react.js';
import { Collector, dispose, Scope, testEnv, tokenFor, uuid, type TestEnv, type TestServer } from './fixture.js';
import { holdFirst } from './hold-link.js';

let env: TestEnv;
let server: TestServer;
const clients = new Scope();
const roots: { unmount(): void }[] = [];

beforeAll(async () => {
  env = await testEnv('client_react');
  server = await env.startServer();
});
afterEach(async () => {
  for (const r of roots.splice(0)) r.unmount();
  vi.useRealTimers();
  await clients.dispose();
});
afterAll(() => dispose(env));

const track = (c: ChatClient): ChatClient => clients.use(c);

const roomIdOf = (input: unknown) => (input as { roomId?: string } | undefined)?.roomId;

describe('useRoomEvents: switching rooms', () => {
  it('the error of a room the view has left does not show on the room it shows now', async () => {
    const u = uuid().slice(0, 8);
    const owner = track(createChatClient({ url: server.url, token: tokenFor(`own-${u}`), lazy: true }));
    // Room A: the user is not a member (room.get answers NOT_FOUND), e.g. removed from it a moment ago.
    const a = await owner.trpc.room.create.mutate({ kind: 'group', name: 'not-mine' });
    const b = await owner.trpc.room.create.mutate({ kind: 'group', name: 'mine', memberIds: [`me-${u}`] });
    await owner.trpc.chat.send.mutate({ roomId: b.id, clientId: uuid(), body: 'hello in B' });

    const held = holdFirst((path, input) => path === 'room.get' && roomIdOf(input) === a.id);
    const chat = track(createChatClient({ url: server.url, token: tokenFor(`me-${u}`), links: [held.link] }));
    const root = fake.mount((p: { roomId: string }) => useRoomEvents(chat, p.roomId), { roomId: a.id });
    roots.push(root);
    await held.caught; // A's answer (NOT_FOUND) is on its way
    root.render({ roomId: b.id }); // the user clicks room B
    await root.until((r) => r.ready && r.messages.some((m) => m.body === 'hello in B'), 'room B loaded');
    held.release(); // A's NOT_FOUND arrives now
    await root.flush();
    const view = root.output;
    // The view shows room B, which opened fine: no error of room A on it.
    expect(view.messages.some((m) => m.body === 'hello in B')).toBe(true);
    expect(view.error).toBeNull();
  });

  it('the room the view has left finishing its load does not mark the room it shows now ready before its scrollback is in', async () => {
    const u = uuid().slice(0, 8);
    const owner = track(createChatClient({ url: server.url, token: tokenFor(`own2-${u}`), lazy: true }));
    const [a, b] = await Promise.all(
      ['first', 'second'].map((name) => owner.trpc.room.create.mutate({ kind: 'group', name, memberIds: [`me2-${u}`] })),
    );
    await owner.trpc.chat.send.mutate({ roomId: a!.id, clientId: uuid(), body: 'in A' });
    await owner.trpc.chat.send.mutate({ roomId: b!.id, clientId: uuid(), body: 'in B' });

    const heldA = holdFirst((path, input) => path === 'chat.history' && roomIdOf(input) === a!.id);
    const heldB = holdFirst((path, input) => path === 'chat.history' && roomIdOf(input) === b!.id);
    const chat = track(createChatClient({ url: server.url, token: tokenFor(`me2-${u}`), links: [heldA.link, heldB.link] }));
    const root = fake.mount((p: { roomId: string }) => useRoomEvents(chat, p.roomId), { roomId: a!.id });
    roots.push(root);
    await heldA.caught;
    root.render({ roomId: b!.id });
    await heldB.caught; // B's scrollback has been read by the server but not delivered
    heldA.release(); // A's load finishes (its view is closed)
    await root.flush();
    // B's scrollback is not in: the view must still say "Loading…", not show an empty room as ready.
    expect(root.output.messages).toEqual([]);
    expect(root.output.ready).toBe(false);
    heldB.release();
    await root.until((r) => r.ready && r.messages.some((m) => m.body === 'in B'), 'room B loaded');
  });
  it('no render for the room switched to shows the messages or the ready of the room before', async () => {
    const u = uuid().slice(0, 8);
    const owner = track(createChatClient({ url: server.url, token: tokenFor(`own3-${u}`), lazy: true }));
    const [a, b] = await Promise.all(
      ['left', 'entered'].map((name) => owner.trpc.room.create.mutate({ kind: 'group', name, memberIds: [`me3-${u}`] })),
    );
    await owner.trpc.chat.send.mutate({ roomId: a!.id, clientId: uuid(), body: 'in A' });
    await owner.trpc.chat.send.mutate({ roomId: b!.id, clientId: uuid(), body: 'in B' });
    const chat = track(createChatClient({ url: server.url, token: tokenFor(`me3-${u}`) }));
    // Every render: the room asked for, and what the hook answered for it.
    const renders: { roomId: string | null; bodies: (string | null)[]; ready: boolean; loadOlder: unknown }[] = [];
    const root = fake.mount(
      (p: { roomId: string | null }) => {
        const view = useRoomEvents(chat, p.roomId);
        renders.push({ roomId: p.roomId, bodies: view.messages.map((m) => m.body), ready: view.ready, loadOlder: view.loadOlder });
        return view;
      },
      { roomId: a!.id as string | null },
    );
    roots.push(root);
    await root.until((r) => r.ready && r.messages.some((m) => m.body === 'in A'), 'room A loaded');
    root.render({ roomId: b!.id }); // the user clicks room B
    await root.until((r) => r.ready && r.messages.some((m) => m.body === 'in B'), 'room B loaded');
    root.render({ roomId: null }); // and closes it
    await root.flush();
    // Room B's renders show nothing of A: not its messages, not ready before B's scrollback is in.
    const ofB = renders.filter((r) => r.roomId === b!.id);
    expect(ofB.filter((r) => r.bodies.includes('in A'))).toEqual([]);
    expect(ofB.filter((r) => r.ready && !r.bodies.includes('in B'))).toEqual([]);
    // No room: nothing of B either.
    expect(renders.filter((r) => r.roomId === null && (r.ready || r.bodies.length > 0))).toEqual([]);
    expect(root.output).toMatchObject({ messages: [], ready: false, error: null });
    // One loadOlder for the component's lifetime (safe in a dependency list).
    expect(new Set(renders.map((r) => r.loadOlder)).size).toBe(1);
  });
});

describe('useRoomEvents: typing', () => {
  it('a typing indicator whose stop never comes is dropped after its TTL', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    // A chat client whose openRoom hands out a real RoomTimeline the test feeds as the subscription would.
    const timeline = new RoomTimeline('me');
    const open: OpenRoom = { roomId: 'r', timeline, loaded: Promise.resolve(), loadOlder: async () => false, close: () => undefined };
    const closed: ConnectionState = { state: 'open', error: null, closeCode: null };
    const chat = {
      openRoom: () => open,
      get state() {
        return closed;
      },
      onStateChange: (l: (s: ConnectionState) => void) => {
        l(closed);
        return () => undefined;
      },
    } as unknown as ChatClient;
    const root = fake.mount(() => useRoomEvents(chat, 'r'), {});
    roots.push(root);
    await root.flush();
    expect(root.output.ready).toBe(true);
    // What openRoom's subscription does with a `typing` event of another user.
    timeline.apply({ type: 'typing', roomId: 'r', userId: 'bo', typing: true });
    await root.flush();
    expect(root.output.typing).toEqual(['bo']);
    // bo's node dies: no `typing: false` ever comes. After the TTL the indicator must be gone.
    await vi.advanceTimersByTimeAsync(TYPING_TTL_MS + 100);
    await root.flush();
    expect(root.output.typing).toEqual([]);
  });
});

describe('useChatClient: the token of the latest render', () => {
  it('a reconnect calls the getToken of the latest render, not the one of the first render', async () => {
    const u = `tk-${uuid().slice(0, 8)}`;
    const calls: string[] = [];
    // The app's getToken reads its auth state (e.g. a session from an auth hook): each render
    // passes a function over the current session. The first session's token expires in 2 s.
    const session1 = { token: tokenFor(u, { ttlSeconds: 2, name: 'session 1' }) };
    const session2 = { token: tokenFor(u, { name: 'session 2' }) };
    const options = (session: { token: string }, label: string): ChatClientOptions => ({
      url: server.url,
      allOverWebSocket: true,
      getToken: () => {
        calls.push(label);
        return session.token;
      },
    });
    const root = fake.mount((p: { session: { token: string }; label: string }) => useChatClient(options(p.session, p.label)), { session: session1, label: 's1' });
    roots.push(root);
    const chat = await root.until((c) => c !== null, 'the client');
    const states = new Collector<ConnectionState>();
    chat!.onStateChange(states.push);
    expect((await chat!.trpc.auth.me.query()).name).toBe('session 1');
    // The auth library renewed the token: the component renders with the new session.
    root.render({ session: session2, label: 's2' });
    expect(root.output).toBe(chat); // same url: the same client
    // The server closes the socket at the old token's expiry; the client reconnects.
    await states.until((xs) => xs.some((s) => s.closeCode === 4001), 'the 4001 close at expiry', 10_000);
    await states.until((xs) => xs.at(-1)?.state === 'open', 'reconnected');
    const me = await chat!.trpc.auth.me.query().catch((e: unknown) => e);
    expect(calls.at(-1)).toBe('s2');
    expect(me).toMatchObject({ name: 'session 2' });
  });

  it('a reconnect uses the token of the latest render', async () => {
    const u = `tf-${uuid().slice(0, 8)}`;
    // A fixed token in the props, renewed by the app: the first one expires in 2 s.
    const root = fake.mount((p: { token: string }) => useChatClient({ url: server.url, allOverWebSocket: true, token: p.token }), {
      token: tokenFor(u, { ttlSeconds: 2, name: 'token 1' }),
    });
    roots.push(root);
    const chat = await root.until((c) => c !== null, 'the client');
    const states = new Collector<ConnectionState>();
    chat!.onStateChange(states.push);
    expect((await chat!.trpc.auth.me.query()).name).toBe('token 1');
    root.render({ token: tokenFor(u, { name: 'token 2' }) });
    expect(root.output).toBe(chat);
    await states.until((xs) => xs.some((s) => s.closeCode === 4001), 'the 4001 close at expiry', 10_000);
    await states.until((xs) => xs.at(-1)?.state === 'open', 'reconnected');
    expect(await chat!.trpc.auth.me.query().catch((e: unknown) => e)).toMatchObject({ name: 'token 2' });
  });
});
