/**
 * The stream core (services/streams.ts) in both of its modes over an in-memory log and bus: pulled
 * as an async iterator (createCaller, tRPC's adapter) and pushed into a sink (our WebSocket
 * transport). The rules are the same code: ready or replay first, live after, duplicates dropped by
 * seq, errors and ends reported once, the hub left on every end.
 */
import { tracked, type TrackedEnvelope } from '@trpc/server';
import { describe, expect, it } from 'vitest';
import {
  channels,
  encodeEvent,
  GAP_WAIT_MS,
  MemoryBus,
  PUSH,
  REPLAY_PAGE,
  resumableStream,
  roomStreamKind,
  StreamHubs,
  type DurableRoomEvent,
  type EventSource,
  type Flow,
  type HubEvent,
  type PushSink,
  type StreamConn,
  waitFor,
  within,
} from './fixture.js';

type Seqd = HubEvent & { seq: number };

function fixture(opts: { failLoad?: Error } = {}) {
  const log: Seqd[] = [];
  let position = 0;
  const bus = new MemoryBus();
  const loads: number[] = [];
  const source: EventSource<Seqd> = {
    lastSeq: async () => position,
    load: async (_key, after, upto, limit) => {
      loads.push(after);
      if (opts.failLoad) throw opts.failLoad;
      return log.filter((e) => e.seq > after && e.seq <= upto).slice(0, limit);
    },
    oldestSeq: async () => log[0]?.seq ?? null,
  };
  const hubs = new StreamHubs<HubEvent>(roomStreamKind, bus, source as EventSource<DurableRoomEvent & { seq: number }> as never);
  const post = (name: string) => {
    const e = { type: 'room.updated', roomId: 'r1', seq: ++position, name, topic: null, by: 'u1' } as Seqd;
    log.push(e);
    void bus.publish(channels.room('r1'), encodeEvent(e));
    return e;
  };
  const open = (after: number | null, signal?: AbortSignal, conn?: StreamConn) =>
    resumableStream<HubEvent, TrackedEnvelope<HubEvent>>({
      conn,
      hubs,
      source: source as never,
      key: 'r1',
      userId: 'u1',
      after,
      signal,
      ready: (seq) => ({ type: 'ready', roomId: 'r1', seq }) as unknown as HubEvent,
      reset: (seq) => ({ type: 'reset', roomId: 'r1', seq }) as unknown as HubEvent,
      wrap: (id, e) => tracked(id, e),
    });
  /** Retention: the oldest `n` events of the log are removed. */
  const prune = (n: number) => void log.splice(0, n);
  /** Committed, not published yet (the bus is slower than the database, or the writer died before it published). */
  const commit = (name: string) => {
    const e = { type: 'room.updated', roomId: 'r1', seq: ++position, name, topic: null, by: 'u1' } as Seqd;
    log.push(e);
    return e;
  };
  const publish = (e: Seqd) => void bus.publish(channels.room('r1'), encodeEvent(e));
  return { log, hubs, post, open, loads, prune, commit, publish };
}

/**
 * A connection's back-pressure whose queue the test sets (`state.queued`), counting the stream's
 * looks at it and its overflows; the replay bounds are out of reach unless `limits` sets them.
 */
function testFlow(limits: Partial<Flow> = {}) {
  const state = { queued: 0, polls: 0, overflows: 0 };
  const flow: Flow = {
    soft: 1000,
    hard: 1_000_000,
    replayQueueEvents: 1_000_000,
    replayQueueBytes: 1_000_000_000,
    replayDrainMs: 600_000,
    buffered: () => {
      state.polls++;
      return state.queued;
    },
    overflow: () => {
      state.overflows++;
    },
    ...limits,
  };
  return { flow, state };
}

/**
 * A resume from 0 over REPLAY_PAGE + 20 events of `f` whose socket's queue is over the soft limit:
 * resolves once the replay has looked at the queue `polls` times (it waits and loads nothing).
 */
async function heldReplay(f: ReturnType<typeof fixture>, polls: number) {
  for (let i = 0; i < REPLAY_PAGE + 20; i++) f.post(`m${i}`);
  const { flow, state } = testFlow();
  state.queued = 10_000;
  const r = recorder();
  f.open(0, undefined, { flow })[PUSH](r.sink as never);
  await waitFor(() => state.polls, 'the replay to wait for the socket', { until: (n) => n >= polls });
  return { r, flow, state };
}

/** A sink that records what it gets and resolves `ended` with the end's error (null for none). */
function recorder() {
  const got: [string, HubEvent][] = [];
  let endCount = 0;
  let endWith: (e: unknown) => void = () => {};
  const ended = new Promise<unknown>((resolve) => (endWith = resolve));
  const waiters: { n: number; resolve: () => void }[] = [];
  const sink: PushSink<[string, HubEvent, symbol]> = {
    data: (v) => {
      got.push([v[0], v[1]]);
      for (const w of waiters.splice(0)) if (got.length >= w.n) w.resolve();
      else waiters.push(w);
    },
    end: (error) => {
      endCount++;
      endWith(error ?? null);
    },
  };
  const until = (n: number) => (got.length >= n ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ n, resolve })));
  return { got, sink, ended, until, ends: () => endCount };
}

/** A live subscriber of `f` from now on (no replay), once it has its `ready`; `loads`: the source's reads so far. */
async function live(f: ReturnType<typeof fixture>) {
  const ac = new AbortController();
  const r = recorder();
  f.open(null, ac.signal)[PUSH](r.sink as never);
  await r.until(1);
  return { r, ac, loads: f.loads.length };
}

/** What a recorder got, as `<id> <name or type>`. */
const labels = (r: ReturnType<typeof recorder>) => r.got.map(([id, e]) => `${id} ${(e as { name?: string }).name ?? e.type}`);

describe('resumable streams', () => {
  it('pushed: ready with the position, then live events synchronously from the fan-out; abort leaves the hub', async () => {
    const f = fixture();
    f.post('a');
    f.post('b');
    const ac = new AbortController();
    const r = recorder();
    f.open(null, ac.signal)[PUSH](r.sink as never);
    await r.until(1);
    expect(r.got[0]).toEqual(['2', { type: 'ready', roomId: 'r1', seq: 2 }]);
    expect(f.hubs.subscriberCount).toBe(1);
    f.post('c');
    // MemoryBus delivers locally at once: the event is on the sink before publish returns.
    expect(r.got.map(([id]) => id)).toEqual(['2', '3']);
    ac.abort();
    expect(await r.ended).toBeNull();
    expect(r.ends()).toBe(1);
    expect(f.hubs.subscriberCount).toBe(0);
    f.post('d');
    expect(r.got).toHaveLength(2);
  });

  it('pushed: resume replays in pages, then goes live without a duplicate or a gap', async () => {
    const f = fixture();
    const total = REPLAY_PAGE + 50;
    for (let i = 0; i < total; i++) f.post(`m${i}`);
    const ac = new AbortController();
    const r = recorder();
    f.open(10, ac.signal)[PUSH](r.sink as never);
    await r.until(total - 10);
    f.post('live');
    await r.until(total - 9);
    expect(r.got.map(([id]) => Number(id))).toEqual(Array.from({ length: total - 9 }, (_, i) => i + 11));
    expect(f.loads.length).toBeGreaterThanOrEqual(2);
    ac.abort();
    await r.ended;
  });

  it('a resume from above the position starts with reset(position), then goes live', async () => {
    const f = fixture();
    f.post('a');
    f.post('b');
    const ac = new AbortController();
    const r = recorder();
    f.open(40, ac.signal)[PUSH](r.sink as never);
    await r.until(1);
    expect(r.got[0]).toEqual(['2', { type: 'reset', roomId: 'r1', seq: 2 }]);
    // Not dropped as "already delivered": the stream carries on from the room's position.
    f.post('c');
    expect(r.got.map(([id, e]) => [id, e.type])).toEqual([
      ['2', 'reset'],
      ['3', 'room.updated'],
    ]);
    ac.abort();
    await r.ended;
  });

  it("a resume from above this node's hub but not above what is committed goes on from there: no reset, nothing twice", async () => {
    const f = fixture();
    f.post('a');
    // A subscriber keeps the hub at seq 1; two events are committed but not here yet.
    const ac = new AbortController();
    const first = recorder();
    f.open(null, ac.signal)[PUSH](first.sink as never);
    await first.until(1);
    const late = [f.commit('b'), f.commit('c')];
    // A client that read them from the database (room.get, history) resumes from 3.
    const r = recorder();
    f.open(3)[PUSH](r.sink as never);
    await waitFor(() => f.hubs.subscriberCount, 'the resume to attach', { until: (n) => n === 2 });
    for (const e of late) f.publish(e);
    f.post('d');
    await r.until(1);
    expect(r.got.map(([id, e]) => `${id} ${e.type}`)).toEqual(['4 room.updated']);
    ac.abort();
  });

  it('events of one room that come out of order (committed on two nodes) are delivered in seq order from the bus, without a query', async () => {
    const f = fixture();
    f.post('a');
    const { r, ac, loads } = await live(f);
    // Seq 2 committed on another node, 3 and 4 on this one: this node's own commits are dispatched
    // at once, the other node's earlier seq comes through the bus after them.
    const [b, c, d] = [f.commit('b'), f.commit('c'), f.commit('d')];
    f.publish(d);
    f.publish(c);
    expect(r.got).toHaveLength(1); // held: 2 is missing
    f.publish(c); // a duplicate of a held event is dropped
    f.publish(b);
    expect(labels(r)).toEqual(['1 ready', '2 b', '3 c', '4 d']);
    expect(f.loads.length).toBe(loads);
    expect(f.hubs.stats).toMatchObject({ gapWaits: 1, gapFills: 0, duplicates: 1 });
    f.post('e');
    expect(r.got.map(([id]) => id)).toEqual(['1', '2', '3', '4', '5']);
    ac.abort();
  });

  it(`an event that never comes on the bus is read from PostgreSQL ${GAP_WAIT_MS} ms after the gap showed, the held ones follow it in order`, async () => {
    const f = fixture();
    const { r, ac, loads } = await live(f);
    f.commit('lost'); // committed, its publish lost
    f.post('after');
    f.post('later');
    expect(r.got).toHaveLength(1);
    await r.until(4);
    expect(labels(r)).toEqual(['0 ready', '1 lost', '2 after', '3 later']);
    expect(f.loads.length).toBe(loads + 1);
    expect(f.hubs.stats).toMatchObject({ gapWaits: 0, gapFills: 1, filled: 1 });
    f.post('live');
    await r.until(5);
    expect(r.got.map(([id]) => id)).toEqual(['0', '1', '2', '3', '4']);
    ac.abort();
  });

  it('a stream ended during its replay (the user removed, the hub closed) hands out nothing past what it replayed', async () => {
    const f = fixture();
    const { r, state } = await heldReplay(f, 1);
    // Live events kept for after the replay, then the hub ends its subscribers (as on a kick).
    f.post('live');
    await f.hubs.close();
    state.queued = 0;
    expect(await r.ended).toBeNull();
    // Whatever it sent is a gapless prefix of the log: nothing of the kept events past a hole.
    const ids = r.got.map(([id]) => Number(id));
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1));
  });

  it('a room deleted while a stream replays: the stream still ends with room.deleted (its last event), not with a bare completion', async () => {
    const f = fixture();
    const { r, state } = await heldReplay(f, 1);
    f.post('live');
    // Deleted on this node or another: the hub fans room.deleted out to every subscriber, the replaying one too.
    f.publish({ type: 'room.deleted', roomId: 'r1', by: 'u1' } as unknown as Seqd);
    state.queued = 0;
    expect(await r.ended).toBeNull();
    const last = r.got.at(-1);
    expect(last?.[1], 'the last event of a stream of a deleted room').toEqual({ type: 'room.deleted', roomId: 'r1', by: 'u1' });
    // Nothing of what the hub kept for after the replay follows a hole: the durable events are a gapless prefix.
    const ids = r.got.slice(0, -1).map(([id]) => Number(id));
    expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1));
    expect(last?.[0]).toBe(String(ids.at(-1) ?? 0));
    expect(f.hubs.roomCount).toBe(0);
  });

  it('a resume from before what retention kept starts with reset(position), not a partial replay; from the edge it replays', async () => {
    const f = fixture();
    for (let i = 0; i < 10; i++) f.post(`m${i}`);
    f.prune(4); // seq 1-4 removed: the oldest kept is 5
    const r = recorder();
    f.open(2)[PUSH](r.sink as never);
    await r.until(1);
    expect(r.got).toEqual([['10', { type: 'reset', roomId: 'r1', seq: 10 }]]);
    f.post('after');
    await r.until(2);
    expect(r.got[1]![0]).toBe('11');

    // From 4 (the last removed) nothing is missing: an exact replay of 5..10, no reset.
    const exact = recorder();
    f.open(4)[PUSH](exact.sink as never);
    await exact.until(7);
    expect(exact.got.map(([id, e]) => [Number(id), e.type])).toEqual(Array.from({ length: 7 }, (_, i) => [i + 5, 'room.updated']));

    // Everything removed: a resume from anywhere below the position resets.
    f.prune(100);
    const none = recorder();
    f.open(3)[PUSH](none.sink as never);
    await none.until(1);
    expect(none.got[0]).toEqual(['11', { type: 'reset', roomId: 'r1', seq: 11 }]);
  });

  it("a replay goes at the socket's pace: no page is loaded while the queue is over the soft limit; over the hard one it overflows", async () => {
    const f = fixture();
    // It keeps looking at the queue and sends nothing while it is full.
    const { r, flow, state } = await heldReplay(f, 2);
    expect(r.got).toEqual([]);
    expect(f.loads).toEqual([]);
    state.queued = 0;
    await r.until(REPLAY_PAGE + 20);
    expect(r.got.map(([id]) => Number(id))).toEqual(Array.from({ length: REPLAY_PAGE + 20 }, (_, i) => i + 1));
    expect(state.overflows).toBe(0);

    // A queue over the hard limit ends the replay with an overflow (the connection is closed).
    state.queued = 2_000_000;
    const over = recorder();
    f.open(0, undefined, { flow })[PUSH](over.sink as never);
    expect(await over.ended).toBeNull();
    expect(state.overflows).toBe(1);
    expect(over.got).toEqual([]);
  });

  it('while a replay waits for the socket, at most replayQueueEvents live events are kept for after it: they follow the replay exactly once; one more overflows', async () => {
    const f = fixture();
    const history = REPLAY_PAGE + 20;
    for (let i = 0; i < history; i++) f.post(`m${i}`);
    const KEEP = 5;

    // Within the bound: kept, and delivered after the replay once the socket drains.
    const ac = new AbortController();
    const a = testFlow({ replayQueueEvents: KEEP });
    a.state.queued = 10_000;
    const r = recorder();
    f.open(0, ac.signal, { flow: a.flow })[PUSH](r.sink as never);
    // Attached once it looks at the queue (the attach comes first): live events are kept from then on.
    await waitFor(() => a.state.polls, 'the stream to wait for the socket', { until: (n) => n >= 1 });
    for (let i = 0; i < KEEP; i++) f.post(`live${i}`);
    expect(a.state.overflows).toBe(0);
    expect(r.got).toEqual([]);
    a.state.queued = 0;
    await r.until(history + KEEP);
    expect(r.got.map(([id]) => Number(id))).toEqual(Array.from({ length: history + KEEP }, (_, i) => i + 1));
    expect(a.state.overflows).toBe(0);
    ac.abort();
    await r.ended;

    // One more than the bound: the stream overflows at that event (MemoryBus fans out at once),
    // leaves the hub, and writes nothing; the client resumes from its last id.
    const b = testFlow({ replayQueueEvents: KEEP });
    b.state.queued = 10_000;
    const over = recorder();
    f.open(0, undefined, { flow: b.flow })[PUSH](over.sink as never);
    await waitFor(() => b.state.polls, 'the stream to wait for the socket', { until: (n) => n >= 1 });
    expect(f.hubs.subscriberCount).toBe(1);
    for (let i = 0; i < KEEP; i++) f.post(`more${i}`);
    expect(b.state.overflows).toBe(0);
    expect(f.hubs.stats.replayQueueOverflows).toBe(0);
    f.post('one too many');
    expect(b.state.overflows).toBe(1);
    expect(f.hubs.stats.replayQueueOverflows).toBe(1);
    expect(await over.ended).toBeNull();
    expect(over.ends()).toBe(1);
    expect(over.got).toEqual([]);
    expect(f.hubs.subscriberCount).toBe(0);
    expect(f.hubs.stats.replayDrainTimeouts).toBe(0);
  });

  it('the live events kept during a replay are bounded by the bytes of their encoding too (replayQueueBytes)', async () => {
    const f = fixture();
    for (let i = 0; i < 10; i++) f.post(`m${i}`);
    const { flow, state } = testFlow({ replayQueueBytes: 5000 });
    state.queued = 10_000;
    const r = recorder();
    f.open(0, undefined, { flow })[PUSH](r.sink as never);
    await waitFor(() => state.polls, 'the stream to wait for the socket', { until: (n) => n >= 1 });
    // Events of about 2 KB: two fit in 5000 bytes, the third does not.
    const big = (i: number) => `${i}`.padEnd(2000, 'b');
    const sizes: number[] = [];
    for (let i = 0; sizes.reduce((n, x) => n + x, 0) <= 5000; i++) {
      expect(state.overflows).toBe(0);
      sizes.push(Buffer.byteLength(encodeEvent(f.post(big(i)))));
    }
    expect(sizes).toHaveLength(3);
    expect(state.overflows).toBe(1);
    expect(f.hubs.stats.replayQueueOverflows).toBe(1);
    expect(await r.ended).toBeNull();
    expect(r.got).toEqual([]);
    expect(f.hubs.subscriberCount).toBe(0);
  });

  it('a replay waits for the socket to drain at most replayDrainMs before a page; then it overflows (the client resumes)', async () => {
    const f = fixture();
    for (let i = 0; i < REPLAY_PAGE + 20; i++) f.post(`m${i}`);
    // The first page goes out; the socket then stays between the soft and the hard limit.
    const r = recorder();
    const { flow, state } = testFlow({ replayDrainMs: 300, buffered: () => (r.got.length < REPLAY_PAGE ? 0 : 10_000) });
    f.open(0, undefined, { flow })[PUSH](r.sink as never);
    expect(await within(r.ended, 10_000, 'the replay to give up on the socket')).toBeNull();
    expect(state.overflows).toBe(1);
    expect(f.hubs.stats.replayDrainTimeouts).toBe(1);
    expect(f.hubs.stats.replayQueueOverflows).toBe(0);
    expect(r.got.map(([id]) => Number(id))).toEqual(Array.from({ length: REPLAY_PAGE }, (_, i) => i + 1));
    expect(f.loads).toEqual([0]);
    expect(f.hubs.subscriberCount).toBe(0);
  });

  it('pulled: the same events through an async iterator; return() ends it and leaves the hub', async () => {
    const f = fixture();
    f.post('a');
    const it = f.open(0)[Symbol.asyncIterator]();
    expect((await it.next()).value?.[0]).toBe('1');
    f.post('b');
    expect((await it.next()).value?.[1]).toMatchObject({ type: 'room.updated', name: 'b', seq: 2 });
    await it.return!();
    expect(await it.next()).toEqual({ value: undefined, done: true });
    expect(f.hubs.subscriberCount).toBe(0);
  });

  it('a replay that fails ends the stream with the error, once, in both modes', async () => {
    const boom = new Error('database unavailable');
    const f = fixture({ failLoad: boom });
    f.post('a');
    const r = recorder();
    f.open(0)[PUSH](r.sink as never);
    expect(await r.ended).toBe(boom);
    expect(r.ends()).toBe(1);
    const it = f.open(0)[Symbol.asyncIterator]();
    await expect(it.next()).rejects.toBe(boom);
    expect(await it.next()).toEqual({ value: undefined, done: true });
    expect(f.hubs.subscriberCount).toBe(0);
  });

  it('a stream is consumed once', () => {
    const f = fixture();
    const s = f.open(null, AbortSignal.abort());
    s[PUSH](recorder().sink as never);
    expect(() => s[Symbol.asyncIterator]()).toThrow(/once/);
  });
});
