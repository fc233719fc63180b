import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runPrepared } from '../src/store/hot/lean-query.js';
import { dispose, type TestEnv, testEnv } from './fixture.js';

/**
 * The hot statements' named prepared statement (src/store/hot/lean-query.ts): described once per
 * statement and connection, its rows the same as node-postgres's own `Query` gives (with the pool's
 * type parsers), and an error fails that query only.
 */
let env: TestEnv;
let client: pg.Client;
/** Describe messages this client sent. */
let describes = 0;

const connect = async () => {
  const c = new pg.Client({ connectionString: env.databaseUrl, types: { getTypeParser: (oid: number, format?: string) => (oid === 20 ? Number : pg.types.getTypeParser(oid, format as 'text')) } as never });
  await c.connect();
  const con = (c as unknown as { connection: { describe(m: unknown): void } }).connection;
  const describe = con.describe.bind(con);
  con.describe = (m) => {
    describes++;
    describe(m);
  };
  return c;
};

/** A run on one client, its rows as node-postgres's result has them. */
const lean = async <R = Record<string, unknown>>(c: pg.Client, name: string, text: string, values: unknown[]) => ({ rows: await runPrepared<R>(c, name, text, values) });

const TEXT = `select $1::int8 as n, $2::text as t, '2026-01-02T03:04:05Z'::timestamptz as at, null::text as none, $3::jsonb as j, array[1, 2]::int4[] as a
                from generate_series(1, $4::int) as g`;

beforeAll(async () => {
  env = await testEnv('lean-query');
  client = await connect();
});
afterAll(async () => {
  await client?.end();
  await dispose(env);
});

describe('LeanQuery', () => {
  it("gives node-postgres's rows, parsed by the client's type parsers, and asks for the row description only on the first run", async () => {
    const before = describes;
    const params = (k: number) => [String(40 + k), `x${k}`, JSON.stringify({ k }), 2];
    const first = await lean(client, 'lean-rows', TEXT, params(1));
    expect(describes - before).toBe(1);
    for (let k = 2; k < 6; k++) {
      const mine = await lean(client, 'lean-rows', TEXT, params(k));
      const theirs = await client.query({ text: TEXT, values: params(k) });
      expect(mine.rows).toEqual(theirs.rows);
      expect(mine.rows[0]).toEqual({ n: 40 + k, t: `x${k}`, at: new Date('2026-01-02T03:04:05Z'), none: null, j: { k }, a: [1, 2] });
    }
    // pg's own unnamed queries above described each time (4); the named statement never again.
    expect(describes - before).toBe(1 + 4);
    expect(first.rows).toHaveLength(2);
    // No rows: an empty list, still no description asked for.
    expect((await lean(client, 'lean-rows', TEXT, [...params(9).slice(0, 3), 0])).rows).toEqual([]);
    expect(describes - before).toBe(5);
  });

  it("binds values as node-postgres's Query does: dates, arrays, buffers, objects as JSON, null", async () => {
    const text = 'select $1::timestamptz as d, $2::int4[] as arr, $3::bytea as b, $4::jsonb as j, $5::text as n';
    const values = [new Date('2026-03-04T05:06:07.089Z'), [3, 1, 2], Buffer.from('hi'), { a: [1, { b: null }] }, null];
    const mine = await lean(client, 'lean-bind', text, values);
    const theirs = await client.query({ text, values });
    expect(mine.rows).toEqual(theirs.rows);
    expect(mine.rows[0]).toEqual({ d: new Date('2026-03-04T05:06:07.089Z'), arr: [3, 1, 2], b: Buffer.from('hi'), j: { a: [1, { b: null }] }, n: null });
  });

  it('fails a run whose execution fails with the database error; the next run on the connection works', async () => {
    const text = 'select 10 / $1::int as q';
    expect((await lean(client, 'lean-div', text, [2])).rows).toEqual([{ q: 5 }]);
    await expect(lean(client, 'lean-div', text, [0])).rejects.toMatchObject({ code: '22012' });
    expect((await lean(client, 'lean-div', text, [5])).rows).toEqual([{ q: 2 }]);
  });

  it('a statement that does not parse fails every run; a name taken by another text is refused', async () => {
    await expect(lean(client, 'lean-bad', 'selec 1', [])).rejects.toMatchObject({ code: '42601' });
    await expect(lean(client, 'lean-bad', 'selec 1', [])).rejects.toMatchObject({ code: '42601' });
    expect((await lean(client, 'lean-one', 'select 1::int as one', [])).rows).toEqual([{ one: 1 }]);
    await expect(lean(client, 'lean-one', 'select 2::int as two', [])).rejects.toThrow(/Prepared statements must be unique/);
    expect((await lean(client, 'lean-one', 'select 1::int as one', [])).rows).toEqual([{ one: 1 }]);
  });

  it('a type parser that throws fails that run only, after the database answered', async () => {
    let throwing = true;
    const c = new pg.Client({
      connectionString: env.databaseUrl,
      types: { getTypeParser: (oid: number, format?: string) => (oid === 25 ? (v: string) => (throwing ? (() => { throw new Error(`cannot read ${v}`); })() : v) : pg.types.getTypeParser(oid, format as 'text')) } as never,
    });
    await c.connect();
    try {
      await expect(lean(c, 'lean-parse', 'select $1::text as t', ['boom'])).rejects.toThrow('cannot read boom');
      throwing = false;
      expect((await lean(c, 'lean-parse', 'select $1::text as t', ['fine'])).rows).toEqual([{ t: 'fine' }]);
    } finally {
      await c.end();
    }
  });

  it('each connection asks once: a new connection describes the statement again', async () => {
    const other = await connect();
    try {
      const before = describes;
      await lean(other, 'lean-rows', TEXT, ['1', 'a', '{}', 1]);
      await lean(other, 'lean-rows', TEXT, ['2', 'b', '{}', 1]);
      await lean(client, 'lean-rows', TEXT, ['3', 'c', '{}', 1]);
      expect(describes - before).toBe(1);
    } finally {
      await other.end();
    }
  });
});
