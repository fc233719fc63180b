import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  deferred,
  dispose,
  range,
  recordEvents,
  REPLAY_PAGE,
  Scope,
  sendMany,
  startServer,
  testEnv,
  uuid,
  waitFor,
  within,
  wsClient,
  type Config,
  type EventsRecorder,
  type RecordedEvent,
  type TestEnv,
  type TestServer,
  type WsTestClient,
} from './fixture.js';

let env: TestEnv;
let config: Config;
let srv: TestServer;
/** What a test opened: its clients, then its extra servers, are released after it. */
const clients = new Scope();
const servers = new Scope();

beforeAll(async () => {
  env = await testEnv('ws_delivery');
  config = env.config();
  srv = await env.startServer();
});
afterEach(async () => {
  vi.restoreAllMocks();
  await clients.dispose();
  await servers.dispose();
  // Once every client is gone the server holds no room hub (no leaked subscriber or bus channel).
  await waitFor(() => srv.app.services.hubs.roomCount === 0, 'every room hub to be released');
  expect(srv.app.services.hubs.subscriberCount).toBe(0);
});
afterAll(() => dispose(env));

function client(userId: string, url: string | (() => string) = srv.url): WsTestClient {
  return clients.use(wsClient({ url, userId }));
}

/** A server of this test on the file's database and Redis prefix. */
async function extraServer(overrides: Partial<Config> = {}): Promise<TestServer> {
  return servers.use(await startServer({ ...config, ...overrides }));
}

/** A room owned by `owner` with `members`; returns the room and the owner's client. */
async function roomWith(owner: string, members: string[], name = 'room') {
  const c = client(owner);
  const room = await c.trpc.room.create.mutate({ kind: 'group', name, memberIds: members });
  return { room, owner: c };
}

/** Bodies of the users' messages (server-generated `system` messages left out). */
const bodies = (xs: RecordedEvent[]) =>
  xs
    .filter((x) => x.data.type === 'message.new' && (x.data as { message: { kind: string } }).message.kind !== 'system')
    .map((x) => (x.data as { message: { body: string } }).message.body);

/** Every tracked id equals its event's seq, for the durable events. */
function expectIdsAreSeqs(rec: EventsRecorder) {
  for (const x of rec.durable()) expect(x.id).toBe(String((x.data as { seq: number }).seq));
}

describe('chat.events over wsLink', () => {
  it('(a) ready comes first with the current seq; later events arrive exactly once in seq order', async () => {
    const u = uuid().slice(0, 8);
    const { room, owner } = await roomWith(`a-owner-${u}`, [`a-bob-${u}`, `a-cy-${u}`]);
    expect(room.lastSeq).toBeGreaterThanOrEqual(3); // at least the three member.joined events
    const bob = client(`a-bob-${u}`);
    using rec = recordEvents(bob, { roomId: room.id });
    const readySeq = await rec.ready();
    expect(readySeq).toBe(room.lastSeq);
    expect((await owner.trpc.room.get.query({ roomId: room.id })).lastSeq).toBe(readySeq);
    expect(rec.events.items[0]!.data).toEqual({ type: 'ready', roomId: room.id, seq: readySeq });
    expect(rec.events.items[0]!.id).toBe(String(readySeq));

    const sent = await sendMany(owner, room.id, 10, 'a', 3);
    expect(sent.map((m) => m.seq)).toEqual(range(readySeq + 1, readySeq + 10));
    await rec.untilSeq(readySeq + 10);
    // A marker after everything: anything duplicated or late would be in before it.
    const [marker] = await sendMany(owner, room.id, 1, 'marker');
    await rec.untilSeq(marker!.seq);

    expect(rec.events.items.filter((x) => x.data.type === 'ready')).toHaveLength(1);
    expect(rec.seqs()).toEqual(range(readySeq + 1, readySeq + 11));
    expect(bodies(rec.events.items)).toEqual([...sent.map((m) => m.body), 'marker0']);
    expectIdsAreSeqs(rec);
    expect(rec.error).toBeNull();
    rec.unsubscribe();
  });

  it('(b) resume with lastEventId replays exactly the missed events, then goes live', async () => {
    const u = uuid().slice(0, 8);
    const { room, owner } = await roomWith(`b-owner-${u}`, [`b-bob-${u}`]);
    const bob = client(`b-bob-${u}`);
    using first = recordEvents(bob, { roomId: room.id });
    const readySeq = await first.ready();
    await sendMany(owner, room.id, 3, 'live1-');
    await first.untilSeq(readySeq + 3);
    const lastId = first.events.items.at(-1)!.id;
    expect(lastId).toBe(String(readySeq + 3));
    first.unsubscribe();
    await within(first.ended, 5000, 'first subscription to end');

    const missed = await sendMany(owner, room.id, 4, 'missed-');
    using second = recordEvents(bob, { roomId: room.id, lastEventId: lastId });
    await second.untilSeq(readySeq + 7);
    const live = await sendMany(owner, room.id, 2, 'live2-');
    await second.untilSeq(readySeq + 9);

    expect(second.events.items.some((x) => x.data.type === 'ready')).toBe(false);
    expect(second.seqs()).toEqual(range(readySeq + 4, readySeq + 9));
    expect(bodies(second.events.items)).toEqual([...missed, ...live].map((m) => m.body));
    expectIdsAreSeqs(second);
    // The first subscription got nothing after it was stopped.
    expect(first.seqs()).toEqual(range(readySeq + 1, readySeq + 3));
    second.unsubscribe();
  });

  it(`(c) a replay larger than one page (${REPLAY_PAGE}) arrives complete, in order, exactly once, in pages`, async () => {
    const u = uuid().slice(0, 8);
    const { room, owner } = await roomWith(`c-owner-${u}`, [`c-bob-${u}`]);
    const N = 450;
    await sendMany(owner, room.id, N, 'c', 25);
    const total = (await owner.trpc.room.get.query({ roomId: room.id })).lastSeq;
    expect(total).toBe(room.lastSeq + N);

    const load = vi.spyOn(srv.app.services.roomEvents, 'load');
    const bob = client(`c-bob-${u}`);
    using rec = recordEvents(bob, { roomId: room.id, lastEventId: '0' });
    await rec.untilSeq(total, 20_000);
    const [live] = await sendMany(owner, room.id, 1, 'after-replay');
    await rec.untilSeq(live!.seq);

    expect(rec.seqs()).toEqual(range(1, total + 1));
    expect(rec.events.items.some((x) => x.data.type === 'ready')).toBe(false);
    expect(rec.events.items[0]!.id).toBe('1');
    expect(rec.durable()[0]!.data).toMatchObject({ roomId: room.id, seq: 1 });
    expect(bodies(rec.events.items)).toHaveLength(N + 1);
    expectIdsAreSeqs(rec);
    // Replayed in pages of REPLAY_PAGE: several reads, none returning more than one page.
    const replayCalls = load.mock.calls.map((args, i) => ({ args, result: load.mock.results[i] })).filter(({ args }) => args[0] === room.id && args[3] === REPLAY_PAGE);
    expect(replayCalls.length).toBeGreaterThanOrEqual(Math.ceil(total / REPLAY_PAGE));
    for (const { result } of replayCalls) expect((await result!.value).length).toBeLessThanOrEqual(REPLAY_PAGE);
    rec.unsubscribe();
  });

  it('(d) an event committed but never published is filled from PostgreSQL before the next live one', async () => {
    const u = uuid().slice(0, 8);
    const { room, owner } = await roomWith(`d-owner-${u}`, [`d-bob-${u}`]);
    const bob = client(`d-bob-${u}`);
    using rec = recordEvents(bob, { roomId: room.id });
    const readySeq = await rec.ready();
    const gapFillsBefore = srv.app.services.hubs.stats.gapFills;

    const { app } = srv;
    // A committed event whose publish was lost: its seq and log row, written without a publish.
    const ghostSeq = await app.services.deps.orm.em.fork().transactional(async (em) => {
      const [row] = await em.execute<{ last_seq: number }[]>('update room set last_seq = last_seq + 1 where id = ? returning last_seq', [room.id]);
      const seq = Number(row!.last_seq);
      await em.execute(`insert into room_event (room_id, seq, type, data, created_at) values (?, ?, 'member.joined', ?, now())`, [
        room.id,
        seq,
        JSON.stringify({ userId: 'ghost', role: 'member', by: 'test' }),
      ]);
      return seq;
    });
    expect(ghostSeq).toBe(readySeq + 1);

    const [msg] = await sendMany(owner, room.id, 1, 'after-ghost');
    expect(msg!.seq).toBe(readySeq + 2);
    await rec.untilSeq(msg!.seq);

    expect(rec.seqs()).toEqual([readySeq + 1, readySeq + 2]);
    expect(rec.durable()[0]!.data).toEqual({ type: 'member.joined', roomId: room.id, seq: ghostSeq, userId: 'ghost', role: 'member', by: 'test' });
    expect(rec.durable()[1]!.data).toMatchObject({ type: 'message.new', seq: msg!.seq, message: { body: 'after-ghost0' } });
    expect(srv.app.services.hubs.stats.gapFills).toBeGreaterThan(gapFillsBefore);
    expectIdsAreSeqs(rec);
    rec.unsubscribe();
  });

  it('(e) 50 subscribers on one server share one room hub; every one gets every message once, in order', async () => {
    // A server of its own, so that its hub count is about this room only.
    const node = await extraServer();
    const u = uuid().slice(0, 8);
    const M = 50;
    const users = range(1, M).map((i) => `e-${i}-${u}`);
    const { room, owner } = await roomWith(`e-owner-${u}`, users);
    const base = room.lastSeq;

    const recs = users.map((id) => recordEvents(client(id, node.url), { roomId: room.id }));
    const readies = await Promise.all(recs.map((r) => r.ready()));
    expect(new Set(readies)).toEqual(new Set([base]));
    expect(node.app.services.hubs.roomCount).toBe(1);
    expect(node.app.services.hubs.subscriberCount).toBe(M);

    // Sent through the other server: they reach this one over Redis.
    const sent = await sendMany(owner, room.id, 20, 'e', 5);
    await Promise.all(recs.map((r) => r.untilSeq(base + 20)));
    for (const r of recs) {
      expect(r.seqs()).toEqual(range(base + 1, base + 20));
      expect(bodies(r.events.items)).toEqual(sent.map((m) => m.body));
      expect(r.error).toBeNull();
    }
    expect(node.app.services.hubs.roomCount).toBe(1);

    for (const r of recs) r.unsubscribe();
    await waitFor(() => node.app.services.hubs.roomCount === 0, 'the room hub to close after every unsubscribe');
    expect(node.app.services.hubs.subscriberCount).toBe(0);
  });

  it('(f) removing a member ends their live subscription and they get nothing after', async () => {
    const u = uuid().slice(0, 8);
    const bobId = `f-bob-${u}`;
    const { room, owner } = await roomWith(`f-owner-${u}`, [bobId, `f-cy-${u}`]);
    const bob = client(bobId);
    const cy = client(`f-cy-${u}`);
    using bobRec = recordEvents(bob, { roomId: room.id });
    using cyRec = recordEvents(cy, { roomId: room.id });
    const readySeq = await bobRec.ready();
    await cyRec.ready();
    const hubs = srv.app.services.hubs;
    const subsBefore = hubs.subscriberCount;

    const [before] = await sendMany(owner, room.id, 1, 'before');
    await bobRec.untilSeq(before!.seq);

    await owner.trpc.room.removeMember.mutate({ roomId: room.id, userId: bobId });
    // The server ends it (tRPC `stopped`), not the client.
    expect(await within(bobRec.ended, 5000, "bob's subscription to end")).toBe('stopped');
    // Bob learns why: his own member.left is the last thing he gets, with nothing missing before it.
    const left = bobRec.events.items.at(-1)!.data as { type: string; seq: number };
    expect(left).toMatchObject({ type: 'member.left', userId: bobId, reason: 'removed', by: `f-owner-${u}` });
    expect(bobRec.seqs()).toEqual(range(readySeq + 1, left.seq));
    // The server no longer holds his subscriber.
    expect(hubs.subscriberCount).toBe(subsBefore - 1);

    const [after] = await sendMany(owner, room.id, 1, 'after');
    await cyRec.untilSeq(after!.seq);
    // A round trip on bob's socket, after the message was fanned out: nothing more for him.
    await expect(bob.trpc.chat.history.query({ roomId: room.id })).rejects.toMatchObject({ data: { code: 'NOT_FOUND' } });
    expect(after!.seq).toBeGreaterThan(left.seq);
    expect(bobRec.seqs()).toEqual(range(readySeq + 1, left.seq));
    expect(bodies(bobRec.events.items)).toEqual(['before0']);
    expect(cyRec.seqs()).toEqual(range(readySeq + 1, after!.seq));
    expect(bodies(cyRec.events.items)).toEqual(['before0', 'after0']);

    // He cannot subscribe again, not even with a lastEventId.
    using again = recordEvents(bob, { roomId: room.id, lastEventId: String(readySeq) });
    expect(await within(again.ended, 5000, 'resubscribe to fail')).toBe('error');
    expect(again.error).toMatchObject({ data: { code: 'NOT_FOUND' } });
    expect(again.events.items).toHaveLength(0);
    cyRec.unsubscribe();
  });

  it('(h) one connection, three subscriptions of one room: one stopped mid-replay, then the room deleted: the others end with room.deleted, the hub is released', async () => {
    const u = uuid().slice(0, 8);
    const bobId = `h-bob-${u}`;
    const { room, owner } = await roomWith(`h-owner-${u}`, [bobId]);
    await sendMany(owner, room.id, 2 * REPLAY_PAGE, 'h', 25);
    const bob = client(bobId);
    using live = recordEvents(bob, { roomId: room.id });
    await live.ready();
    using stopped = recordEvents(bob, { roomId: room.id, lastEventId: '0' });
    // The second page of each replay waits until the room is deleted and its hub has ended its streams.
    const events = srv.app.services.roomEvents;
    const load = events.load.bind(events);
    const gate = deferred();
    vi.spyOn(events, 'load').mockImplementation(async (key, after, upto, limit) => {
      if (key === room.id && limit === REPLAY_PAGE && after > 0) await gate.promise;
      return load(key, after, upto, limit);
    });
    using replaying = recordEvents(bob, { roomId: room.id, lastEventId: '0' });
    await stopped.events.first(() => true, 'the first replayed event');
    stopped.unsubscribe();
    await replaying.untilSeq(REPLAY_PAGE);
    await owner.trpc.room.delete.mutate({ roomId: room.id });
    await within(live.ended, 10_000, 'the live subscription to end');
    gate.resolve();
    for (const [name, rec] of [
      ['live', live],
      ['replaying', replaying],
    ] as const) {
      expect(await within(rec.ended, 10_000, `the ${name} subscription to end`)).toBe('stopped');
      expect(rec.events.items.at(-1)?.data, `the last event of the ${name} subscription`).toMatchObject({ type: 'room.deleted', roomId: room.id });
      // Ended, not reset: the replay stops where it was (its rows being gone is not retention's doing).
      expect(rec.events.items.filter((x) => x.data.type === 'reset')).toEqual([]);
      const seqs = rec.seqs();
      if (name === 'replaying') expect(seqs).toEqual(range(1, REPLAY_PAGE));
    }
    expect(new Set(stopped.seqs()).size).toBe(stopped.seqs().length);
  });

  it('(g) graceful shutdown: the client moves to a new server and misses nothing', async () => {
    const first = await extraServer();
    let target = first.url;
    const u = uuid().slice(0, 8);
    const { room, owner } = await roomWith(`g-owner-${u}`, [`g-bob-${u}`]);
    const bob = client(`g-bob-${u}`, () => target);
    using rec = recordEvents(bob, { roomId: room.id, lastEventId: String(room.lastSeq) });
    await sendMany(owner, room.id, 3, 'g1-');
    await rec.untilSeq(room.lastSeq + 3);
    expect(first.app.services.hubs.subscriberCount).toBe(1);

    const second = await extraServer();
    target = second.url;
    const opensBefore = bob.opens;

    // Messages sent while the first server drains and the client moves.
    const t0 = Date.now();
    const closing = first.close();
    const during = sendMany(owner, room.id, 5, 'g2-');
    await closing;
    // The client left on the reconnect notification: close() did not wait for its 2 s deadline
    // to terminate the socket.
    expect(Date.now() - t0).toBeLessThan(1900);
    await during;
    await waitFor(() => second.app.services.hubs.subscriberCount === 1, 'the subscription to move to the new server', { timeoutMs: 10_000 });
    const after = await sendMany(owner, room.id, 3, 'g3-');
    await rec.untilSeq(after.at(-1)!.seq);

    expect(bob.opens).toBeGreaterThan(opensBefore);
    expect(rec.endedHow).toBeNull();
    expect(rec.error).toBeNull();
    expect(rec.seqs()).toEqual(range(room.lastSeq + 1, room.lastSeq + 11));
    expect(bodies(rec.events.items)).toEqual(['g1-0', 'g1-1', 'g1-2', 'g2-0', 'g2-1', 'g2-2', 'g2-3', 'g2-4', 'g3-0', 'g3-1', 'g3-2']);
    expectIdsAreSeqs(rec);
    rec.unsubscribe();
  });

  it('(g) restart with downtime: the client resubscribes with its lastEventId once a server is back', async () => {
    // A short drain deadline: nobody else to move to, so the socket is terminated at the deadline.
    const first = await extraServer({ shutdownTimeoutMs: 300 });
    let target = first.url;
    const u = uuid().slice(0, 8);
    const { room, owner } = await roomWith(`h-owner-${u}`, [`h-bob-${u}`]);
    const bob = client(`h-bob-${u}`, () => target);
    using rec = recordEvents(bob, { roomId: room.id });
    const readySeq = await rec.ready();
    await sendMany(owner, room.id, 2, 'h1-');
    await rec.untilSeq(readySeq + 2);

    await first.close();
    // Down: the client retries against the dead address while messages keep coming elsewhere.
    const missed = await sendMany(owner, room.id, 4, 'h2-');
    const second = await extraServer();
    target = second.url;
    await rec.untilSeq(readySeq + 6);
    const live = await sendMany(owner, room.id, 2, 'h3-');
    await rec.untilSeq(readySeq + 8);

    expect(rec.endedHow).toBeNull();
    expect(rec.events.items.filter((x) => x.data.type === 'ready')).toHaveLength(1);
    expect(rec.seqs()).toEqual(range(readySeq + 1, readySeq + 8));
    expect(bodies(rec.events.items)).toEqual(['h1-0', 'h1-1', ...missed.map((m) => m.body), ...live.map((m) => m.body)]);
    expectIdsAreSeqs(rec);
    rec.unsubscribe();
  });
});
