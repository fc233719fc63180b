/**
 * Grouped sends (group commit): many concurrent plain sends are checked and written in groups, one
 * statement per group across rooms. Against real PostgreSQL and Redis, with two app nodes on one
 * database (to race repeats of a clientId across nodes).
 */
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativePool } from '../src/store/database.js';
import {
  actor,
  callerFor,
  dispose,
  expectTRPCError,
  openEvents,
  Scope,
  testEnv,
  uuid,
  type EventStream,
  type MessageDto,
  type TestEnv,
  type TestServer,
} from './fixture.js';

let env: TestEnv;
let nodeA: TestServer;
let nodeB: TestServer;

beforeAll(async () => {
  env = await testEnv('sendbatch');
  nodeA = await env.startServer();
  // The second node without named prepared statements (DB_PREPARED_STATEMENTS=0): both ways are exercised.
  nodeB = await env.startServer({ dbPreparedStatements: false });
});
afterAll(() => dispose(env));

let n = 0;
const users = (prefix: string, count: number) => {
  n++;
  return Array.from({ length: count }, (_, i) => `${prefix}${n}-${i}`);
};
const as = (id: string, node = nodeA) => callerFor(node.app, actor(id));
const range = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i);

async function groupRoom(owner: string, members: string[]) {
  return as(owner).room.create({ kind: 'group', name: `room ${n}`, memberIds: members.filter((m) => m !== owner) });
}

/** The room's log as PostgreSQL has it: its seqs in order and the room's last_seq. */
async function roomLog(roomId: string): Promise<{ seqs: number[]; lastSeq: number }> {
  const events = await env.sql('select seq from room_event where room_id = $1 order by seq', [roomId]);
  const room = await env.sql('select last_seq from room where id = $1', [roomId]);
  return { seqs: events.map((r) => Number(r.seq)), lastSeq: Number(room[0]!.last_seq) };
}

/** Seqs 1..last_seq, each exactly once: no hole, nothing twice. */
async function expectGapFree(roomId: string): Promise<number> {
  const { seqs, lastSeq } = await roomLog(roomId);
  expect(seqs).toEqual(range(1, lastSeq));
  return lastSeq;
}

/** Every message of a room through history (ascending), paging back from the newest. */
async function history(reader: string, roomId: string): Promise<MessageDto[]> {
  const out: MessageDto[] = [];
  let beforeSeq: number | undefined;
  for (;;) {
    const page = await as(reader).chat.history({ roomId, limit: 100, ...(beforeSeq ? { beforeSeq } : {}) });
    out.unshift(...page.messages);
    if (!page.hasMore) return out;
    beforeSeq = page.messages[0]!.seq;
  }
}

/**
 * Reads the rooms' logs over and over while `running` resolves, and fails on any moment at which a
 * room's committed log had a hole (a higher seq committed before a lower one). Returns the number
 * of reads.
 */
async function watchCommitOrder(roomIds: string[], running: Promise<unknown>): Promise<number> {
  let done = false;
  void running.finally(() => (done = true)).catch(() => undefined);
  let reads = 0;
  while (!done) {
    const rows = await env.sql(
      'select room_id, count(*)::int as n, max(seq)::int as top from room_event where room_id = any($1::uuid[]) group by room_id',
      [roomIds],
    );
    reads++;
    for (const r of rows) if (r.n !== r.top) throw new Error(`room ${r.room_id}: ${r.n} events committed up to seq ${r.top}`);
  }
  return reads;
}

/** Distinct transaction start times of the messages: one per group written (now() is per transaction). */
async function writeTransactions(ids: string[]): Promise<number> {
  const rows = await env.sql<{ n: number }>('select count(distinct created_at)::int as n from message where id = any($1::uuid[])', [ids]);
  return rows[0]!.n;
}

/** A subscriber's view: after `ready`, exactly the messages of `acks` in seq order, then `marker`. */
async function expectStream(s: EventStream, acks: MessageDto[], marker: MessageDto): Promise<void> {
  const sorted = [...acks].sort((a, b) => a.seq - b.seq);
  const events = await s.take(sorted.length + 1);
  expect(events.map((e) => e.id)).toEqual([...sorted, marker].map((m) => String(m.seq)));
  expect(events.map((e) => e.event)).toEqual([...sorted, marker].map((m) => ({ type: 'message.new', roomId: m.roomId, seq: m.seq, message: m })));
}

describe('grouped sends', () => {
  it('one room, 240 concurrent sends: all acked, seqs gap-free and in commit order, acks equal history, subscribers see each once in order', async () => {
    const senders = users('one', 12);
    const room = await groupRoom(senders[0]!, [...senders, `watch${n}`]);
    await using s = await openEvents(nodeA.app, actor(`watch${n}`), { roomId: room.id });
    await using s2 = await openEvents(nodeB.app, actor(`watch${n}`), { roomId: room.id });
    expect((await s.next()).event).toEqual({ type: 'ready', roomId: room.id, seq: room.lastSeq });
    expect((await s2.next()).event).toEqual({ type: 'ready', roomId: room.id, seq: room.lastSeq });
    // Some with metadata (keys out of order, nested) and links: the ack is built from the input
    // and the statement's seq and time, and must still equal what history reads back.
    const extras = (i: number) => ({
      ...(i % 3 === 0 ? { metadata: { z: i, a: { y: [1, 'two', null, 2.5], b: true }, 'ünï': 'ç' } } : {}),
      ...(i % 5 === 0 ? { attachments: [{ url: `https://example.com/${i}.pdf`, name: `${i}.pdf`, size: i + 1, mime: 'application/pdf' }] } : {}),
    });
    const burst = Promise.all(
      range(0, 240).map((i) => as(senders[i % senders.length]!).chat.send({ roomId: room.id, clientId: uuid(), body: `one ${i}`, ...extras(i) })),
    );
    const [acks, reads] = await Promise.all([burst, watchCommitOrder([room.id], burst)]);
    expect(reads).toBeGreaterThan(0);

    const seqs = acks.map((m) => m.seq).sort((a, b) => a - b);
    expect(seqs).toEqual(range(room.lastSeq + 1, 240));
    expect(await expectGapFree(room.id)).toBe(room.lastSeq + 240);
    // Written in groups: fewer transactions than messages.
    expect(await writeTransactions(acks.map((m) => m.id))).toBeLessThan(240);
    acks.forEach((m, i) => {
      expect(m).toMatchObject({ body: `one ${i}`, senderId: senders[i % senders.length], roomId: room.id });
    });

    const fromHistory = await history(senders[1]!, room.id);
    expect(fromHistory.filter((m) => m.kind !== 'system')).toEqual([...acks].sort((a, b) => a.seq - b.seq));

    const marker = await as(senders[0]!).chat.send({ roomId: room.id, clientId: uuid(), body: 'marker' });
    await expectStream(s, acks, marker);
    await expectStream(s2, acks, marker);
  });

  it('40 rooms, 240 concurrent sends: one write holds several rooms, each room gap-free, acks equal history, each room streamed in order', async () => {
    const owners = users('own', 40);
    const rooms = await Promise.all(owners.map((o) => groupRoom(o, [o, `w${o}`])));
    await using open = new Scope();
    const streams = await Promise.all(owners.map((o, r) => openEvents(nodeA.app, actor(`w${o}`), { roomId: rooms[r]!.id }).then((s) => open.use(s))));
    await Promise.all(streams.map((s) => s.next()));
    const burst = Promise.all(
      range(0, 240).map((i) => {
        const r = i % rooms.length;
        // Each room gets sends through both nodes: their groups race for the same room rows.
        const node = Math.floor(i / rooms.length) % 2 ? nodeA : nodeB;
        return as(owners[r]!, node).chat.send({ roomId: rooms[r]!.id, clientId: uuid(), body: `many ${i}` });
      }),
    );
    const [acks] = await Promise.all([burst, watchCommitOrder(rooms.map((r) => r.id), burst)]);

    const rows = await env.sql(
      'select count(distinct room_id)::int as rooms from message where id = any($1::uuid[]) group by created_at order by 1 desc limit 1',
      [acks.map((m) => m.id)],
    );
    expect(rows[0]!.rooms).toBeGreaterThan(1);
    for (const [r, room] of rooms.entries()) {
      const mine = acks.filter((m) => m.roomId === room.id);
      expect(mine.length).toBe(6);
      expect(mine.map((m) => m.seq).sort((a, b) => a - b)).toEqual(range(room.lastSeq + 1, 6));
      expect(await expectGapFree(room.id)).toBe(room.lastSeq + 6);
      expect((await history(owners[r]!, room.id)).filter((m) => m.kind !== 'system')).toEqual(mine.sort((a, b) => a.seq - b.seq));
    }
    const markers = await Promise.all(rooms.map((room, r) => as(owners[r]!).chat.send({ roomId: room.id, clientId: uuid(), body: 'marker' })));
    await Promise.all(
      streams.map((s, r) =>
        expectStream(
          s,
          acks.filter((m) => m.roomId === rooms[r]!.id),
          markers[r]!,
        ),
      ),
    );
  });

  it('repeats of a clientId, in the same burst and later, return the original: one row, no seq used up', async () => {
    const senders = users('rep', 8);
    const [a, b] = [senders[0]!, senders[1]!];
    const room = await groupRoom(a, senders);
    const other = await groupRoom(a, [b]);
    const k1 = uuid();
    const k2 = uuid();
    const kOther = uuid();
    await as(a).chat.send({ roomId: other.id, clientId: kOther, body: 'first in the other room' });

    const sends = [
      ...range(0, 60).map((i) => ({ who: senders[i % senders.length]!, clientId: uuid(), body: `plain ${i}` })),
      ...range(0, 6).map((i) => ({ who: a, clientId: k1, body: i === 0 ? 'k1' : `k1 changed ${i}` })),
      ...range(0, 4).map(() => ({ who: b, clientId: k2, body: 'k2' })),
      // The same clientId from another sender is another message.
      { who: a, clientId: k2, body: 'k2 by a' },
    ];
    // Interleaved, so repeats sit between other sends.
    const order = sends.map((_, i) => i).sort((x, y) => ((x * 37) % sends.length) - ((y * 37) % sends.length));
    const results = new Array<MessageDto>(sends.length);
    const conflict = expectTRPCError(as(a).chat.send({ roomId: room.id, clientId: kOther, body: 'again, here' }), 'CONFLICT', /another room/);
    await Promise.all(
      order.map(async (i) => {
        const x = sends[i]!;
        results[i] = await as(x.who, i % 2 ? nodeA : nodeB).chat.send({ roomId: room.id, clientId: x.clientId, body: x.body });
      }),
    );
    await conflict;

    const byKey = (who: string, clientId: string) => results.filter((_, i) => sends[i]!.who === who && sends[i]!.clientId === clientId);
    const k1s = byKey(a, k1);
    expect(new Set(k1s.map((m) => m.id)).size).toBe(1);
    expect(k1s[0]!.body).toMatch(/^k1/);
    expect(new Set(byKey(b, k2).map((m) => m.id)).size).toBe(1);
    expect(byKey(a, k2)[0]!.id).not.toBe(byKey(b, k2)[0]!.id);

    const distinct = new Set(results.map((m) => m.id));
    expect(distinct.size).toBe(60 + 3);
    expect(await expectGapFree(room.id)).toBe(room.lastSeq + 63);
    const rows = await env.sql('select count(*)::int as n from message where room_id = $1 and kind = $2', [room.id, 'text']);
    expect(rows[0]!.n).toBe(63);

    // Later, in another group: still the original, and still no seq.
    const again = await Promise.all([
      as(a).chat.send({ roomId: room.id, clientId: k1, body: 'k1 once more' }),
      as(b, nodeB).chat.send({ roomId: room.id, clientId: k2, body: 'k2' }),
      as(senders[2]!).chat.send({ roomId: room.id, clientId: uuid(), body: 'new' }),
    ]);
    expect(again[0]).toEqual(k1s[0]);
    expect(again[1].id).toBe(byKey(b, k2)[0]!.id);
    expect(again[2].seq).toBe(room.lastSeq + 64);
    await expectGapFree(room.id);
  });

  it('repeats racing on two nodes (no shared process state) still give one row per clientId and gap-free seqs', async () => {
    const senders = users('race', 6);
    const room = await groupRoom(senders[0]!, senders);
    const keys = range(0, 30).map(() => uuid());
    const results = await Promise.all([
      ...keys.flatMap((k, i) => [nodeA, nodeB].map((node) => as(senders[i % senders.length]!, node).chat.send({ roomId: room.id, clientId: k, body: `race ${i}` }))),
      ...range(0, 60).map((i) => as(senders[i % senders.length]!, i % 2 ? nodeA : nodeB).chat.send({ roomId: room.id, clientId: uuid(), body: `bg ${i}` })),
    ]);
    keys.forEach((_, i) => {
      expect(results[2 * i]!.id).toBe(results[2 * i + 1]!.id);
    });
    const rows = await env.sql('select count(*)::int as n, count(distinct client_id)::int as d from message where room_id = $1 and kind = $2', [
      room.id,
      'text',
    ]);
    expect(rows[0]).toEqual({ n: 90, d: 90 });
    expect(await expectGapFree(room.id)).toBe(room.lastSeq + 90);
  });

  it('a refused send fails alone with its typed error; the rest of its group is written', async () => {
    const senders = users('bad', 6);
    const [owner, muted] = [senders[0]!, senders[1]!];
    const outsider = `outsider${n}`;
    const room = await groupRoom(owner, senders);
    const other = await groupRoom(owner, []);
    await as(owner).room.mute({ roomId: room.id, userId: muted, until: null });
    const parent = await as(owner).chat.send({ roomId: room.id, clientId: uuid(), body: 'parent' });
    const base = (await roomLog(room.id)).lastSeq;
    const nulId = uuid();

    const good = range(0, 60).map((i) => {
      const who = senders[2 + (i % 4)]!;
      return as(who, i % 2 ? nodeA : nodeB).chat.send({ roomId: room.id, clientId: uuid(), body: `ok ${i}` });
    });
    const bad = [
      expectTRPCError(as(muted).chat.send({ roomId: room.id, clientId: uuid(), body: 'muted' }), 'FORBIDDEN', /muted/),
      expectTRPCError(as(outsider).chat.send({ roomId: room.id, clientId: uuid(), body: 'not a member' }), 'NOT_FOUND'),
      expectTRPCError(as(owner).chat.send({ roomId: room.id, clientId: uuid(), body: 'reply', replyToId: uuid() }), 'BAD_REQUEST', /replyToId/),
      // PostgreSQL refuses a NUL character: only this send fails (its group is split and written one by one).
      expectTRPCError(as(senders[2]!).chat.send({ roomId: room.id, clientId: nulId, body: 'nul \u0000 here' }), 'INTERNAL_SERVER_ERROR'),
    ];
    const replyOk = as(owner).chat.send({ roomId: room.id, clientId: uuid(), body: 'a real reply', replyToId: parent.id, mentions: [senders[2]!] });
    const elsewhere = as(owner).chat.send({ roomId: other.id, clientId: uuid(), body: 'other room' });
    const acks = await Promise.all([...good, replyOk, elsewhere]);
    await Promise.all(bad);

    expect(await expectGapFree(room.id)).toBe(base + 61);
    expect(acks.slice(0, 61).map((m) => m.seq).sort((a, b) => a - b)).toEqual(range(base + 1, 61));
    const rows = await env.sql('select count(*)::int as n from message where client_id = $1', [nulId]);
    expect(rows[0]!.n).toBe(0);
    const root = (await as(owner).chat.thread({ messageId: parent.id })).root;
    expect(root.replyCount).toBe(1);
  });

  it('a group the database refuses fails every send in it with the mapped error, uses up no seq, and the same clientIds go through afterwards', async () => {
    const senders = users('down', 4);
    const rooms = await Promise.all(range(0, 3).map(() => groupRoom(senders[0]!, senders)));
    const before: { seqs: number[]; lastSeq: number }[] = [];
    for (const r of rooms) before.push(await roomLog(r.id));
    // Every write of a message is refused as if the server were shutting down (SQLSTATE 57P01).
    await env.sql(`create function refuse_writes() returns trigger language plpgsql as $$
      begin raise exception 'terminating connection due to administrator command' using errcode = '57P01'; end $$`);
    await env.sql('create trigger refuse_writes before insert on message for each statement execute function refuse_writes()');
    const sends = range(0, 45).map((i) => ({ who: senders[i % 4]!, roomId: rooms[i % 3]!.id, clientId: uuid(), body: `down ${i}` }));
    try {
      const outcomes = await Promise.allSettled(sends.map((x) => as(x.who).chat.send(x)));
      for (const o of outcomes) {
        expect(o.status).toBe('rejected');
        expect((o as PromiseRejectedResult).reason).toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
      }
    } finally {
      await env.sql('drop trigger refuse_writes on message');
      await env.sql('drop function refuse_writes()');
    }
    for (const [i, r] of rooms.entries()) expect(await roomLog(r.id)).toEqual(before[i]);

    const acks = await Promise.all(sends.map((x) => as(x.who).chat.send(x)));
    for (const [i, r] of rooms.entries()) {
      expect(await expectGapFree(r.id)).toBe(before[i]!.lastSeq + 15);
      expect(acks.filter((m) => m.roomId === r.id).map((m) => m.seq).sort((a, b) => a - b)).toEqual(range(before[i]!.lastSeq + 1, 15));
    }
  });
  it('node A writes its groups on its statement pipe (two in flight), node B (no prepared statements) through the pool, one at a time', async () => {
    const senders = users('pipe', 8);
    const room = await groupRoom(senders[0]!, senders);
    const before = await roomLog(room.id);
    const sends = range(0, 64).map((i) => ({ who: senders[i % 8]!, roomId: room.id, clientId: uuid(), body: `pipe ${i}` }));
    const acks = await Promise.all(sends.map((x, i) => as(x.who, i % 2 === 0 ? nodeA : nodeB).chat.send(x)));
    expect(acks.map((m) => m.body)).toEqual(sends.map((x) => x.body));
    expect(await expectGapFree(room.id)).toBe(before.lastSeq + 64);
    expect(nodeA.app.services.store.sendGroupsInFlight).toBe(2);
    expect(nodeA.app.db.sendPipe?.holding).toBe(true);
    expect(nodeB.app.services.store.sendGroupsInFlight).toBe(1);
    expect(nodeB.app.db.sendPipe?.holding).toBe(false);
  });
  it('a group write whose backend is killed mid-burst: every send is acked or SERVICE_UNAVAILABLE, retries go through once, no connection is left checked out', async () => {
    const senders = users('kill', 8);
    const room = await groupRoom(senders[0]!, senders);
    const all: { who: string; roomId: string; clientId: string; body: string }[] = [];
    let killed = 0;
    // Bursts until a group's backend was terminated while its statement ran (bounded: a burst lasts
    // long enough for a group to be seen in flight; ten bursts without one fail the test).
    for (let burst = 0; killed === 0 && burst < 10; burst++) {
      const sends = range(0, 200).map((i) => ({ who: senders[i % 8]!, roomId: room.id, clientId: uuid(), body: `kill ${burst}.${i}` }));
      all.push(...sends);
      const running = Promise.allSettled(sends.map((x) => as(x.who).chat.send(x)));
      let done = false;
      void running.finally(() => (done = true));
      while (!done && killed === 0) {
        const rows = await env.sql<{ n: number }>(
          `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
            where datname = current_database() and pid <> pg_backend_pid() and query like '%json_to_recordset%' and state = 'active'`,
        );
        killed += rows[0]!.n;
      }
      for (const o of await running) {
        if (o.status === 'rejected') expect(o.reason).toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
      }
    }
    expect(killed).toBeGreaterThan(0);
    // Every send again with its clientId: the ones that went through come back as they were, the
    // others are written now; one row per clientId, no seq used twice or skipped.
    const acks = await Promise.all(all.map((x) => as(x.who).chat.send(x)));
    expect(new Set(acks.map((m) => m.id)).size).toBe(all.length);
    expect(acks.map((m) => m.body)).toEqual(all.map((x) => x.body));
    expect(await expectGapFree(room.id)).toBe(room.lastSeq + all.length);
    // No connection stays checked out but the statement pipe's (a leak would hold one for good: this
    // waits on the pool's releases until none is). The pipe dropped the killed connection and took a
    // fresh one for the sends after it.
    const pipe = nodeA.app.db.sendPipe!;
    expect(pipe.holding).toBe(true);
    expect(pipe.connections).toBeGreaterThanOrEqual(2);
    const pool = await nativePool(nodeA.app.services.store.orm);
    while (pool.waitingCount > 0 || pool.idleCount !== pool.totalCount - 1) {
      await once(pool, 'release');
      await new Promise<void>((r) => setImmediate(r)); // 'release' fires before the client is idle again
    }
    expect(pool.idleCount).toBe(pool.totalCount - 1);
  });
});
