/**
 * Live and resuming clients when data goes away. Retention removes each room log's oldest events
 * only (a batch takes the oldest expired rows and everything of their room up to them), so a resume
 * gets every event after its position or a `reset`, also when retention runs between two of the
 * replay's pages; a node whose bus missed a room's deletion ends its streams of the room once it
 * finds the room gone (its resync after the reconnect, or the idle hubs' position check).
 */
import { describe, expect, it } from 'vitest';
import type { RoomEvent } from '../client/index.js';
import { RetentionService } from '../src/services/retention.js';
import { clientFor, Collector, createLogger, deferred, fileServer, range, tcpProxy, TEST_REDIS_URL, uuid, waitFor, within } from './fixture.js';

const t = fileServer('retention-resume');
const log = createLogger('silent');
const tag = () => uuid().slice(0, 8);

describe('retention and resuming subscribers', () => {
  it('a retention run held between its batches leaves one run of seqs per room: a resume from inside what went gets a reset, never a partial replay', async () => {
    const u = tag();
    await using alice = clientFor(t.url, `a-${u}`);
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'hole' });
    await alice.trpc.room.update.mutate({ roomId: room.id, retentionDays: 1 });
    const k = (await alice.trpc.room.get.query({ roomId: room.id })).lastSeq;
    const old = `now() - interval '2 days'`;
    // What the room's existing rows look like: as old as what follows.
    await t.env.sql(`update message set created_at = ${old} where room_id = $1`, [room.id]);
    await t.env.sql(`update room_event set created_at = ${old} where room_id = $1`, [room.id]);
    const addEvents = (from: number, to: number) =>
      t.env.sql(
        `insert into room_event (room_id, seq, type, message_id, data, created_at)
         select $1, g, 'room.updated', null, jsonb_build_object('name', 'n' || g, 'topic', null, 'metadata', null, 'by', $4::text), ${old}
         from generate_series($2::int, $3::int) g`,
        [room.id, from, to, `a-${u}`],
      );
    // The table's life before: another room's rows at the head of the heap, removed (by an earlier
    // retention run) and vacuumed, so their space is reused by later inserts: physical order is not
    // seq order, as in any long-lived room_event table.
    const other = uuid();
    await t.env.sql(
      `insert into room_event (room_id, seq, type, message_id, data, created_at)
       select $1, g, 'room.updated', null, '{}', now() from generate_series(1, 2000) g`,
      [other],
    );
    await addEvents(k + 1, k + 100); // the room's first 100 events: behind the other room's rows
    await t.env.sql('delete from room_event where room_id = $1', [other]);
    await t.env.sql('vacuum room_event');
    await addEvents(k + 101, k + 200); // its next 100: into the freed space at the head
    const last = k + 200;
    await t.env.sql('update room set last_seq = $2 where id = $1', [room.id, last]);

    // A retention run (the real job, batch 50), held between its room_event batches.
    const reached = deferred();
    const gate = deferred();
    const svc = new RetentionService(t.app.services.store, log, {
      intervalMs: 3_600_000,
      batch: 50,
      days: null,
      onBatch: async (p) => {
        if (p.events === 0) return;
        reached.resolve();
        await gate.promise;
      },
    });
    const running = svc.runOnce();
    try {
      await reached.promise;
      const kept = (await t.env.sql<{ seq: string }>('select seq from room_event where room_id = $1 order by seq', [room.id])).map((r) => Number(r.seq));
      // A client that saw up to k + 20 resumes now.
      const from = k + 20;
      // The room's log lost its oldest events only: what is kept is one run of seqs up to the last.
      expect(kept).toEqual(range(kept[0]!, last));
      const seen = new Collector<RoomEvent>();
      const sub = alice.subscribeRoom(room.id, { onEvent: (e) => seen.push(e) }, { lastEventId: String(from) });
      try {
        const end = kept.at(-1)!;
        await seen.until((xs) => xs.some((e) => e.type === 'reset' || (e as { seq?: number }).seq === end), 'the replay');
        const got = seen.items.filter((e) => e.type !== 'reset').map((e) => (e as { seq: number }).seq);
        const reset = seen.items.some((e) => e.type === 'reset');
        // Either the replay is exact (every seq after `from`), or it says it cannot be (reset).
        const missing = reset ? [] : range(from + 1, end).filter((s) => !got.includes(s));
        const span = missing.length ? `${missing.length} seqs, ${missing[0]}..${missing.at(-1)}` : 'none';
        expect(span, 'seqs skipped by the replay without a reset').toBe('none');
      } finally {
        sub.unsubscribe();
      }
    } finally {
      gate.resolve();
      await running;
    }
  });

  it('retention removing the oldest events while a resume replays page by page: a reset, not a jump over what went between two pages', async () => {
    const u = tag();
    await using alice = clientFor(t.url, `a-${u}`);
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'pages' });
    await alice.trpc.room.update.mutate({ roomId: room.id, retentionDays: 1 });
    const k = (await alice.trpc.room.get.query({ roomId: room.id })).lastSeq;
    const old = `now() - interval '2 days'`;
    await t.env.sql(`update message set created_at = ${old} where room_id = $1`, [room.id]);
    await t.env.sql(`update room_event set created_at = ${old} where room_id = $1`, [room.id]);
    // 600 old events; the room's newest 100 are recent (retention keeps them).
    await t.env.sql(
      `insert into room_event (room_id, seq, type, message_id, data, created_at)
       select $1, g, 'room.updated', null, jsonb_build_object('name', 'n' || g, 'topic', null, 'metadata', null, 'by', $3::text),
              case when g <= $2::int + 600 then ${old} else now() end
       from generate_series($2::int + 1, $2::int + 700) g order by g`,
      [room.id, k, `a-${u}`],
    );
    const last = k + 700;
    await t.env.sql('update room set last_seq = $2 where id = $1', [room.id, last]);
    const from = k + 10;

    // The retention job runs (to its end: the oldest 600 go) while the resume is between its first
    // and second replay page (a page waits for the socket to drain; the job runs on any node).
    const source = t.app.services.roomEvents;
    const load = source.load.bind(source);
    let ran: Promise<unknown> | null = null;
    source.load = async (key, after, upto, limit) => {
      const page = await load(key, after, upto, limit);
      if (key === room.id && after === from && !ran) {
        ran = new RetentionService(t.app.services.store, log, { intervalMs: 3_600_000, batch: 1000, days: null }).runOnce();
        await ran;
      }
      return page;
    };
    try {
      const seen = new Collector<RoomEvent>();
      const sub = alice.subscribeRoom(room.id, { onEvent: (e) => seen.push(e) }, { lastEventId: String(from) });
      try {
        await seen.until((xs) => xs.some((e) => (e as { seq?: number }).seq === last), 'the replay');
        expect(await ran).toMatchObject({ ran: true, events: expect.any(Number) });
        const got = seen.items.filter((e) => e.type !== 'reset').map((e) => (e as { seq: number }).seq);
        const reset = seen.items.some((e) => e.type === 'reset');
        const missing = reset ? [] : range(from + 1, last).filter((s) => !got.includes(s));
        const span = missing.length ? `${missing.length} seqs, ${missing[0]}..${missing.at(-1)}` : 'none';
        expect(span, 'seqs skipped by the replay without a reset').toBe('none');
      } finally {
        sub.unsubscribe();
      }
    } finally {
      source.load = load;
    }
  });
});

describe('room.delete and live subscriptions on another node', () => {
  it('a node whose Redis link was cut while the room was deleted ends its stream of the room (room.deleted) and closes its hub once back', async () => {
    const u = tag();
    const redis = new URL(TEST_REDIS_URL);
    await using proxy = await tcpProxy({ host: redis.hostname, port: Number(redis.port || 6379) });
    const via = new URL(TEST_REDIS_URL);
    via.hostname = '127.0.0.1';
    via.port = String(proxy.port);
    await using b = await t.env.startServer({ redisUrl: via.toString() });
    await using alice = clientFor(t.url, `a-${u}`);
    await using bob = clientFor(b.url, `b-${u}`);
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'doomed', memberIds: [`b-${u}`] });
    const other = await alice.trpc.room.create.mutate({ kind: 'group', name: 'sentinel', memberIds: [`b-${u}`] });
    const seen = new Collector<RoomEvent>();
    const sub = bob.subscribeRoom(room.id, { onEvent: (e) => seen.push(e) });
    const sentinel = new Collector<RoomEvent>();
    const sub2 = bob.subscribeRoom(other.id, { onEvent: (e) => sentinel.push(e) });
    try {
      await seen.first((e) => e.type === 'ready', 'ready on B');
      await sentinel.first((e) => e.type === 'ready', 'ready on B (sentinel room)');
      // B's link to Redis flaps while the room is deleted on A.
      const reconnected = deferred();
      const off = b.app.bus.onReconnect(() => reconnected.resolve());
      proxy.cut();
      await alice.trpc.room.delete.mutate({ roomId: room.id });
      proxy.restore();
      await within(reconnected.promise, 20_000, "B's bus reconnect");
      off();
      // B is back on the bus: a message in another room reaches bob there.
      const m = await alice.trpc.chat.send.mutate({ roomId: other.id, clientId: uuid(), body: 'after' });
      await sentinel.first((e) => e.type === 'message.new' && e.seq === m.seq, 'the sentinel message on B');
      expect(await t.env.sql('select 1 from room where id = $1', [room.id])).toEqual([]);
      // B finds the room gone (its resync after the reconnect; the position check of idle hubs
      // would too): the stream gets room.deleted, without an author, and ends.
      await b.app.services.hubs.checkPositions();
      const deleted = await seen.first((e) => e.type === 'room.deleted', 'room.deleted on B');
      expect(deleted).toEqual({ type: 'room.deleted', roomId: room.id, by: null });
      await waitFor(() => b.app.services.hubs.subscribersOf(room.id), "B's hub of the room to close", { until: (n) => n === 0 });
    } finally {
      sub.unsubscribe();
      sub2.unsubscribe();
    }
  });
});
