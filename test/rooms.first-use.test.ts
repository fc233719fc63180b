/**
 * Rooms created on first use (`room.ensure` by key, `room.openDirect` by pair) under concurrency:
 * one room, every caller answered with it, and only the call that created it spends the creator's
 * room budget (RATE_ROOM_CREATES_PER_MINUTE), also when the burst is larger than the budget.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { fileServer, roomKit, uuid, within } from './fixture.js';

/** A small room-creation budget (2 per minute per user), so that a burst of concurrent calls reaches it. */
const t = fileServer('rooms_first_use', { limits: { roomCreatesPerMinute: 2 } });
const { users, as } = roomKit(() => t);

/** How many statements of the test database wait for a lock now. */
const lockWaiters = async () =>
  Number((await t.env.sql<{ n: string }>(`select count(*) as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'`))[0]!.n);

/**
 * Runs `calls` while a test transaction holds `LOCK TABLE room IN SHARE MODE`: reads of `room` go
 * on, inserts wait. Released once every call either waits for it or has settled, so every call has
 * done its lookup before any room row is inserted: the calls are truly concurrent first uses,
 * deterministically.
 */
async function withRoomInsertsHeld<T>(calls: () => Promise<T>[]): Promise<PromiseSettledResult<T>[]> {
  const holder = new pg.Client({ connectionString: `${t.config.databaseUrl}` });
  await holder.connect();
  try {
    await holder.query('begin');
    await holder.query('lock table room in share mode');
    let done = 0;
    const ps = calls().map((p) => p.finally(() => void done++));
    const all = Promise.allSettled(ps);
    await within(
      (async () => {
        while ((await lockWaiters()) + done < ps.length) await new Promise((r) => setImmediate(r));
      })(),
      10_000,
      'every call waiting at its insert or settled',
    );
    await holder.query('commit');
    return await all;
  } finally {
    await holder.end();
  }
}

const outcome = <T extends { id: string }>(r: PromiseSettledResult<T>) =>
  r.status === 'fulfilled' ? r.value.id : `${(r.reason as { code?: string }).code}: ${(r.reason as Error).message}`;

describe('rooms created on first use, under concurrency', () => {
  it('room.ensure: concurrent first calls for one key all return the one room (none refused by the room budget, only the creation spends it)', async () => {
    const [svc, bob] = users('svc', 'bob');
    const key = `order:${uuid()}`;
    const ensure = () => as(svc!, 'default', ['service']).room.ensure({ kind: 'group', name: 'Order', key, memberIds: [bob!] });
    // 4 concurrent ensures of one new key by one service token (budget: 2 room creations a minute).
    const res = await withRoomInsertsHeld(() => [ensure(), ensure(), ensure(), ensure()]);
    const rooms = await t.env.sql<{ id: string }>('select id from room where key = $1', [key]);
    expect(rooms).toHaveLength(1);
    // API.md `ensure`: "Idempotent, also under concurrency (... the losers return the winner's room)".
    expect(res.map(outcome)).toEqual([rooms[0]!.id, rooms[0]!.id, rooms[0]!.id, rooms[0]!.id]);
    // One creation spent of 2: one more room, then the budget is over.
    const create = (name: string) => as(svc!, 'default', ['service']).room.ensure({ kind: 'group', name, key: `order:${uuid()}` });
    await expect(create('second')).resolves.toMatchObject({ name: 'second' });
    expect(await create('third').catch((e: { code?: string }) => e.code)).toBe('TOO_MANY_REQUESTS');
  });

  it('room.openDirect: concurrent first calls for one pair all return the one room (none refused by the room budget, only the creation spends it)', async () => {
    const [alice, bob] = users('alice', 'bob');
    const open = () => as(alice!).room.openDirect({ userId: bob! });
    const res = await withRoomInsertsHeld(() => [open(), open(), open(), open()]);
    const rooms = await t.env.sql<{ id: string }>(`select id from room where kind = 'direct' and created_by = $1`, [alice]);
    expect(rooms).toHaveLength(1);
    // API.md `openDirect`: "idempotent (also under concurrency)"; SECURITY.md: only "the first
    // room.openDirect of a pair" counts against RATE_ROOM_CREATES_PER_MINUTE.
    expect(res.map(outcome)).toEqual([rooms[0]!.id, rooms[0]!.id, rooms[0]!.id, rooms[0]!.id]);
  });
});
