/**
 * `npm run bench:statement`: what two statements of the hot paths cost PostgreSQL.
 *
 * The grouped send statement (src/store/hot/append-messages.ts)
 * costs PostgreSQL, per row and per statement, for groups of 1, 16 and 64 messages over 64 rooms,
 * one statement at a time on one connection (the send batcher keeps one group in flight). Both of its
 * forms: without the notification queue (no web push, no e-mail) and with it (web push and digests
 * on, nobody with a device or an address: the queue's CTEs run and find nothing). Next to them, the
 * Socket.IO + PostgreSQL peer's write (bench/peers/socketio-server.ts): one INSERT per message, in
 * autocommit, into its table with its index, run the same way. The database's CPU
 * is its backends' (`backendsOf`, /proc), so run it on a quiet machine.
 *
 * A group of one without the queue is the one-message statement (`LONE`, what a lone send runs).
 *
 * The unread counts of a member's rooms (`unreadCounts`, src/store/receipts.ts: `receipt.unread`;
 * `room.list` and `unread.changed` count the same way) for a member who never read a room of 1,000,
 * 10,000 and 100,000 messages, as they are counted (unread up to `UNREAD_CAP`, mentions among the
 * newest `MENTION_SCAN`), next to the same counts without those bounds (as they were, written out
 * here).
 *
 * The two statements of users coming online (src/store/hot/connect.ts: the rooms that get their
 * presence, the users' rows), in groups of 1 to 3 users of one room of 5,000 members (the `bigroom`
 * bench's shape), as they are (one prepared statement each) next to how they were built before (an
 * `in` list and a `values` list as long as the group: a new text per group size, parsed and planned
 * on every call).
 *
 * The driver's side of a hot statement: this process's CPU per run through node-postgres's own
 * `Query` and through `LeanQuery` (src/store/hot/lean-query.ts), with the database's CPU per run.
 *
 * Last, what one message row costs on its own (a bulk insert with and without the search index and
 * column), to see how much of the grouped statement's cost per row is the row itself.
 *
 * Creates and drops its own database (`BENCH_DB`, default `chat_bench_stmt`).
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { kysely, openDatabase } from '../src/store/database.js';
import { appendMessageRows, type NewMessage } from '../src/store/hot/append-messages.js';
import { presenceRoomsOfUsers, upsertUsers } from '../src/store/hot/connect.js';
import { runPrepared } from '../src/store/hot/lean-query.js';
import { unreadCounts, unreadCountsQuery } from '../src/store/receipts.js';
import { dropDatabase, resetDatabase } from './lib/database.js';
import { backendsOf } from './lib/stat.js';

const DB = process.env.BENCH_DB ?? 'chat_bench_stmt';
const ADMIN = process.env.BENCH_PG_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const URL_ = ADMIN.replace(/\/[^/]*$/, `/${DB}`);
const STATEMENTS = Number(process.env.STATEMENTS ?? 1600);


const row = (form: string, size: number, statements: number, cpuUs: number, wallUs: number) => ({
  form,
  groupSize: size,
  statements,
  dbCpuUsPerStatement: Math.round(cpuUs / statements),
  dbCpuUsPerRow: +(cpuUs / statements / size).toFixed(1),
  wallUsPerStatement: Math.round(wallUs / statements),
});

await resetDatabase(ADMIN, DB);
const db = await openDatabase({ databaseUrl: URL_, dataDir: '', poolMax: 1 });
try {
  const rooms: string[] = [];
  const c = new pg.Client({ connectionString: URL_ });
  await c.connect();
  for (let i = 0; i < 64; i++) {
    const id = randomUUID();
    rooms.push(id);
    await c.query(`insert into room (id, tenant, kind, name, created_by, created_at, updated_at) values ($1, 't', 'group', $2, 'u', now(), now())`, [id, `r${i}`]);
  }
  // The peer's table, as bench/peers/socketio-server.ts creates it.
  await c.query('create table sio_message (id uuid primary key, room_id text not null, sender_id text not null, body text not null, created_at timestamptz not null)');
  await c.query('create index sio_message_room on sio_message (room_id, created_at)');
  await c.end();
  const peer = new pg.Client({ connectionString: URL_ });
  await peer.connect();
  const ctx = { orm: db.orm, prepared: true };
  const group = (n: number): NewMessage[] =>
    Array.from({ length: n }, (_, i) => ({
      id: randomUUID(),
      roomId: rooms[i % 64]!,
      tenant: 't',
      senderId: `s${i}`,
      clientId: randomUUID(),
      body: 'b123456789:1: lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor',
      keyId: null,
      kind: 'text',
      attachments: [],
      metadata: null,
      card: null,
      accessVersion: null,
    }));
  const forms = { plain: null, notify: { push: true, digest: true, coalesceMs: 0, digestDelayMs: 60_000 } };
  /** The peer's write of one message (its driver's `pool.query` sends an unnamed statement). */
  const peerInsert = (m: NewMessage) =>
    peer.query('insert into sio_message (id, room_id, sender_id, body, created_at) values ($1, $2, $3, $4, $5)', [m.id, m.roomId, m.senderId, m.body, new Date()]);
  const dbCpu = () => [...backendsOf(DB).values()].reduce((a, b) => a + b, 0);
  const rows: Record<string, unknown>[] = [];
  // Two rounds: the first warms up (plans, caches); the second is reported.
  for (const round of [1, 2]) {
    for (const size of [1, 16, 64]) {
      for (const [form, queue] of Object.entries(forms)) {
        const statements = Math.max(20, Math.round(STATEMENTS / Math.sqrt(size)));
        const c0 = dbCpu();
        const t0 = performance.now();
        for (let s = 0; s < statements; s++) await appendMessageRows(ctx, group(size), queue);
        const wallUs = (performance.now() - t0) * 1000;
        const cpuUs = dbCpu() - c0;
        if (round === 2) rows.push(row(form, size, statements, cpuUs, wallUs));
      }
    }
    const inserts = STATEMENTS;
    const c0 = dbCpu();
    const t0 = performance.now();
    for (const m of group(inserts)) await peerInsert(m);
    const wallUs = (performance.now() - t0) * 1000;
    if (round === 2) rows.push(row('peer: one INSERT', 1, inserts, dbCpu() - c0, wallUs));
  }
  await peer.end();
  console.table(rows);

  // Unread counts: one room per size, its messages written straight in, a reader who read nothing.
  const unread: Record<string, unknown>[] = [];
  const sql = new pg.Client({ connectionString: URL_ });
  await sql.connect();
  for (const n of [1_000, 10_000, 100_000]) {
    const roomId = randomUUID();
    const reader = `reader${n}`;
    await sql.query(`insert into room (id, tenant, kind, name, created_by, created_at, updated_at, last_seq) values ($1, 'u', 'group', $2, 'w', now(), now(), $3)`, [roomId, `u${n}`, n]);
    await sql.query(`insert into membership (room_id, user_id, role, joined_at) values ($1, $2, 'member', now()), ($1, 'w', 'owner', now())`, [roomId, reader]);
    await sql.query(
      `insert into message (id, room_id, tenant, seq, sender_id, body, kind, attachments, mentions, created_at)
       select gen_random_uuid(), $1, 'u', g, 'w', 'message ' || g, 'text', '[]', '[]', now() from generate_series(1, $2::int) g`,
      [roomId, n],
    );
    await sql.query('analyze message');
    // `unreadCounts` as it was before the cap: both counts read every unread message of the room.
    const uncapped = `select mb.room_id,
        (select count(*) from message u where u.room_id = mb.room_id and u.seq > mb.last_read_seq and u.sender_id <> mb.user_id
            and u.deleted_at is null and u.kind <> 'system')::int as unread,
        (select count(*) from message u where u.room_id = mb.room_id and u.seq > mb.last_read_seq and u.sender_id <> mb.user_id
            and u.deleted_at is null and jsonb_exists(u.mentions, mb.user_id))::int as mentions
      from membership mb join room r on r.id = mb.room_id and r.tenant = 'u' where mb.user_id = $1 order by mb.room_id`;
    const time = async (fn: () => Promise<unknown>) => {
      for (let i = 0; i < 3; i++) await fn();
      const reps = 20;
      const t0 = performance.now();
      for (let i = 0; i < reps; i++) await fn();
      return +((performance.now() - t0) / reps).toFixed(2);
    };
    const counted = await unreadCounts(kysely(db.orm.em.fork()), 'u', reader);
    // Its SQL, run on the same client as the uncapped one (no ORM or builder in either timing).
    const query = unreadCountsQuery(kysely(db.orm.em.fork()), 'u', reader).compile();
    unread.push({
      messages: n,
      unread: counted[0]?.unread,
      mentions: counted[0]?.mentions,
      msNow: await time(() => sql.query(query.sql, [...query.parameters])),
      msUncapped: await time(() => sql.query(uncapped, [reader])),
    });
  }
  console.table(unread);

  // Users coming online: one room of 5,000 members, groups of 1-3 of them, 1,000 calls per form.
  const bigRoom = randomUUID();
  await sql.query(`insert into room (id, tenant, kind, name, created_by, created_at, updated_at) values ($1, 'p', 'group', 'big', 'w', now(), now())`, [bigRoom]);
  await sql.query(`insert into membership (room_id, user_id, role, joined_at) select $1, 'p' || g, 'member', now() from generate_series(1, 5000) g`, [bigRoom]);
  // Settled, as a room some minutes old is (autovacuum has set the visibility map since).
  await sql.query('vacuum analyze membership');
  const usersOf = (k: number) => Array.from({ length: 1 + (k % 3) }, (_, i) => `p${1 + ((k * 7 + i) % 5000)}`);
  // The presence query as the query builder wrote it: an `in` list as long as the group.
  const presenceBefore = (ids: string[]) =>
    sql.query(
      `with "mine" as (select "mb"."user_id", "mb"."room_id" from "membership" as "mb" inner join lateral (select "r"."id" from "room" as "r" where "r"."id" = "mb"."room_id" and "r"."tenant" = $1 offset 0) as "r" on true where "mb"."user_id" in (${ids.map((_, i) => `$${i + 2}`).join(', ')})), "small" as (select "d"."room_id" from (select distinct "mine"."room_id" from "mine") as "d" where not exists (select "x"."user_id" from "membership" as "x" where "x"."room_id" = "d"."room_id" offset $${ids.length + 2} limit 1)) select "mine"."user_id", "mine"."room_id" from "mine" inner join "small" on "small"."room_id" = "mine"."room_id"`,
      ['p', ...ids, 200],
    );
  // The users' upsert as the query builder wrote it: a `values` list as long as the group.
  const usersBefore = (ids: string[]) =>
    sql.query(
      `insert into "chat_user" ("tenant", "id", "name", "roles", "email", "created_at", "last_seen_at") values ${ids.map((_, i) => `($${5 * i + 1}, $${5 * i + 2}, $${5 * i + 3}, $${5 * i + 4}, $${5 * i + 5}, now(), now())`).join(', ')} on conflict ("tenant", "id") do update set "name" = case when "chat_user"."erased_at" is null then "excluded"."name" else "chat_user"."name" end, "roles" = case when "chat_user"."erased_at" is null then "excluded"."roles" else "chat_user"."roles" end, "email" = case when "chat_user"."erased_at" is null then coalesce("excluded"."email", "chat_user"."email") else null end, "last_seen_at" = now()`,
      ids.flatMap((id) => ['p', id, `name ${id}`, ['member'], null]),
    );
  const connectForms: [string, (ids: string[]) => Promise<unknown>][] = [
    ['presence rooms: in list, parsed and planned per call (before)', presenceBefore],
    ['presence rooms: prepared statement (now)', (ids) => presenceRoomsOfUsers(ctx, 'p', ids, 200)],
    ['user rows: values list, parsed and planned per call (before)', usersBefore],
    ['user rows: prepared statement (now)', (ids) => upsertUsers(ctx, ids.map((id) => ({ tenant: 'p', id, name: `name ${id}`, roles: ['member'] })))],
  ];
  const connect: Record<string, unknown>[] = [];
  for (const round of [1, 2]) {
    for (const [form, run] of connectForms) {
      const calls = 1000;
      const c0 = dbCpu();
      const t0 = performance.now();
      for (let k = 0; k < calls; k++) await run(usersOf(k));
      if (round === 2) connect.push({ form, calls, dbCpuUsPerCall: Math.round((dbCpu() - c0) / calls), wallUsPerCall: Math.round(((performance.now() - t0) * 1000) / calls) });
    }
  }
  console.table(connect);

  // The driver's side of a hot statement: node-postgres's own `Query` (Bind, Describe, Execute, Sync
  // and a row description parsed per run) against `LeanQuery` (described once per connection), for a
  // statement with the one-message send's 13 parameters and its one-column outcome row, on one
  // connection, in alternating rounds of 5,000 runs; this process's CPU and the database's per run.
  const driver: Record<string, unknown>[] = [];
  {
    const c = new pg.Client({ connectionString: URL_ });
    await c.connect();
    const text = `select $1::uuid || '|' || $2::uuid || '|' || $3::text || '|' || $4::text || '|' || $5::uuid || '|' || length($6::text) || '|' || coalesce($7::text, '')
                         || '|' || $8::text || '|' || $9::jsonb::text || '|' || coalesce($10::jsonb::text, '') || '|' || coalesce($11::jsonb::text, '') || '|' || coalesce($12::bigint, 0) || '|' || now()::text as o`;
    const params = () => [randomUUID(), rooms[0], 't', 's1', randomUUID(), 'b123456789:1: lorem ipsum dolor sit amet', null, 'text', '[]', null, null, 7];
    const viaQuery = () => c.query({ name: 'bench-driver-query', text, values: params() });
    const viaLean = () => runPrepared(c, 'bench-driver-lean', text, params());
    const forms: [string, () => Promise<unknown>][] = [
      ["node-postgres's Query (described per run)", viaQuery],
      ['LeanQuery (described once per connection)', viaLean],
    ];
    const sums = new Map<string, { cpu: number; db: number; wall: number; n: number }>();
    for (let round = 0; round < 4; round++) {
      for (const [label, run] of forms) {
        const N = 5000;
        const c0 = process.cpuUsage();
        const d0 = dbCpu();
        const t0 = performance.now();
        for (let i = 0; i < N; i++) await run();
        const wall = (performance.now() - t0) * 1000;
        const cpu = process.cpuUsage(c0);
        const db = dbCpu() - d0;
        if (round === 0) continue; // warm-up
        const acc = sums.get(label) ?? { cpu: 0, db: 0, wall: 0, n: 0 };
        acc.cpu += cpu.user + cpu.system;
        acc.db += db;
        acc.wall += wall;
        acc.n += N;
        sums.set(label, acc);
      }
    }
    for (const [form, a] of sums) driver.push({ form, runs: a.n, clientCpuUsPerRun: +(a.cpu / a.n).toFixed(1), dbCpuUsPerRun: +(a.db / a.n).toFixed(1), wallUsPerRun: +(a.wall / a.n).toFixed(1) });
    await c.end();
  }
  console.table(driver);

  // What a message row itself costs: 5,000 rows in one INSERT ... SELECT (no CTEs, no room log row,
  // no lookups), median of five, with every index of the table, then without the search index, then
  // without the search column (its to_tsvector). Last: it changes the table.
  const rowCost: Record<string, number> = {};
  const bulkRoom = randomUUID();
  await sql.query(`insert into room (id, tenant, kind, name, created_by, created_at, updated_at) values ($1, 'b', 'group', 'bulk', 'w', now(), now())`, [bulkRoom]);
  let bulkSeq = 0;
  const bulk = async (label: string) => {
    const per: number[] = [];
    for (let k = 0; k < 5; k++) {
      const t0 = performance.now();
      await sql.query(
        `insert into message (id, room_id, tenant, seq, sender_id, client_id, body, kind, attachments, mentions, created_at)
         select gen_random_uuid(), $1, 'b', $2 + g, 's', gen_random_uuid(), 'b123456789:1: lorem ipsum dolor sit amet, consectetur adipiscing elit ' || g, 'text', '[]', '[]', now()
           from generate_series(1, 5000) g`,
        [bulkRoom, bulkSeq],
      );
      bulkSeq += 5000;
      per.push(((performance.now() - t0) * 1000) / 5000);
    }
    rowCost[label] = +per.sort((a, b) => a - b)[2]!.toFixed(1);
  };
  await bulk('message row, all indexes (wall µs per row)');
  await sql.query('drop index message_search_idx');
  await bulk('without the search index');
  await sql.query('alter table message drop column search');
  await bulk('without the search column');
  await sql.end();
  console.table(rowCost);
  const pgVersion = execFileSync('psql', [ADMIN, '-Atc', 'show server_version']).toString().trim();
  console.log(JSON.stringify({ node: process.version, postgres: pgVersion, rows, unread, connect, driver, rowCost }));
} finally {
  await db.close();
  await dropDatabase(ADMIN, DB);
}
process.exit(0);
