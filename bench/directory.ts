/**
 * `npm run bench:directory`: what `room.directory` costs PostgreSQL in a tenant with many public rooms.
 *
 * Fills a database of its own (`BENCH_DB`, default `chat_bench_dir`) with `ROOMS` public rooms of one
 * tenant (default 100,000; as many private ones and another tenant's beside them), names and topics
 * of random words, then times the directory's query (`directoryRows`, src/store/rooms.ts) as
 * `room.directory` runs it: no query (the first page by name), a word in a few rooms, a word in many,
 * and two characters. Median wall time of `RUNS` runs each (default 21), with the plan's scans.
 */
import { randomInt } from 'node:crypto';
import pg from 'pg';
import { kysely, openDatabase } from '../src/store/database.js';
import { directoryQuery, directoryRows } from '../src/store/rooms.js';
import { dropDatabase, resetDatabase } from './lib/database.js';

const DB = process.env.BENCH_DB ?? 'chat_bench_dir';
const ADMIN = process.env.BENCH_PG_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const URL_ = ADMIN.replace(/\/[^/]*$/, `/${DB}`);
const ROOMS = Number(process.env.ROOMS ?? 100_000);
const RUNS = Number(process.env.RUNS ?? 21);

// Words a team names rooms with; one of them is rare on purpose.
const WORDS = ['sales', 'support', 'design', 'backend', 'frontend', 'ops', 'marketing', 'finance', 'hiring', 'launch', 'weekly', 'team', 'project', 'alpha', 'beta', 'release'];
const RARE = 'quartzite';
const name = (i: number) =>
  `${WORDS[randomInt(WORDS.length)]} ${WORDS[randomInt(WORDS.length)]} ${i % 5000 === 0 ? `${RARE} ` : ''}${i.toString(36)}`;

await resetDatabase(ADMIN, DB);
const db = await openDatabase({ databaseUrl: URL_, dataDir: '', poolMax: 2 });
const c = new pg.Client({ connectionString: URL_ });
await c.connect();
try {
  const t0 = Date.now();
  for (const [tenant, visibility, n] of [
    ['t', 'public', ROOMS],
    ['t', 'private', ROOMS],
    ['other', 'public', ROOMS],
  ] as const) {
    for (let from = 0; from < n; from += 5000) {
      const names = Array.from({ length: Math.min(5000, n - from) }, (_, k) => name(from + k));
      await c.query(
        `insert into room (id, tenant, kind, name, topic, visibility, created_by, created_at, updated_at)
         select gen_random_uuid(), $1, 'group', n, 'about ' || n, $2, 'u', now(), now() from unnest($3::text[]) as n`,
        [tenant, visibility, names],
      );
    }
  }
  await c.query('analyze room');
  console.log(`${ROOMS.toLocaleString('en')} public rooms in the tenant (and ${(2 * ROOMS).toLocaleString('en')} others), filled in ${Date.now() - t0} ms`);

  const q = kysely(db.orm.em.fork());
  const cases: [string, string | null][] = [
    ['no query (first page by name)', null],
    [`a rare word ("${RARE}", 1 room in 5,000)`, RARE],
    ['a common word ("design", 1 room in 8)', 'design'],
    ['two characters ("al")', 'al'],
  ];
  console.log('| query | rows | median ms | p90 ms | scans in the plan |');
  console.log('|---|---:|---:|---:|---|');
  for (const [label, query] of cases) {
    const times: number[] = [];
    let rows = 0;
    for (let i = 0; i < RUNS; i++) {
      const t = process.hrtime.bigint();
      rows = (await directoryRows(q, 't', 'someone', query, 50)).length;
      times.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    times.sort((a, b) => a - b);
    const sqlText = directoryQuery(q, 't', 'someone', query, 50).compile();
    const plan = await c.query(`explain ${sqlText.sql}`, sqlText.parameters as unknown[]);
    const scans = [
      ...new Set(
        plan.rows
          .map((r: Record<string, string>) => r['QUERY PLAN']!)
          .filter((l) => /Scan/.test(l) && !/membership/.test(l))
          .map((l) => l.replace(/^[\s>-]+/, '').replace(/\s+\(cost.*$/, '')),
      ),
    ].join('; ');
    console.log(`| ${label} | ${rows} | ${times[Math.floor(RUNS / 2)]!.toFixed(2)} | ${times[Math.floor(RUNS * 0.9)]!.toFixed(2)} | ${scans} |`);
  }
} finally {
  await c.end();
  await db.close();
  await dropDatabase(ADMIN, DB);
}
