import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { StatementPipe } from '../src/store/hot/pipe.js';
import type { HotContext } from '../src/store/hot/query.js';
import { appendMessageRows, fileServer, insertRoom, nativePool, newMessage } from './fixture.js';

/**
 * The grouped sends' pipelined connection (src/store/hot/pipe.ts) against PostgreSQL: statements
 * sent together run one after the other in the order they were sent, on one connection; a failing
 * one leaves those behind it alone; a broken connection fails what was on it and the next statement
 * takes a fresh one; closing waits for the answers and gives the connection back.
 */
const srv = fileServer('pipe');
const sql = <R = Record<string, unknown>>(text: string, params: unknown[] = []) => srv.env.sql<R>(text, params);

const message = (roomId: string, tenant: string, body = 'hello') => newMessage(roomId, tenant, { body });

/** A pipe of its own, a fresh room, and that room's row lock held by another transaction (see `lockRoom`). */
async function lockedRoom() {
  const pipe = new StatementPipe(() => nativePool(srv.app.db.orm));
  const ctx: HotContext = { orm: srv.app.db.orm, prepared: true, pipe };
  const tenant = `t-${randomUUID()}`;
  const room = (await insertRoom(srv.env, tenant)).id;
  return { pipe, ctx, tenant, room, lock: await lockRoom(room) };
}

/** The client the pipe holds (its queue of statements sent and not yet answered is node-postgres's). */
async function heldClient(pipe: StatementPipe): Promise<{ _sentQueryQueue: unknown[]; processID: number }> {
  return (await (pipe as unknown as { client: Promise<unknown> }).client) as never;
}

/** Holds the room's row lock in a transaction of its own until `release` (a statement of the pipe then waits on it). */
async function lockRoom(roomId: string): Promise<{ release(): Promise<void> }> {
  const c = new pg.Client({ connectionString: srv.env.databaseUrl });
  await c.connect();
  await c.query('begin');
  await c.query('select 1 from room where id = $1 for update', [roomId]);
  return {
    async release() {
      await c.query('commit');
      await c.end();
    },
  };
}

/** Resolves once a backend other than the test's waits on a lock for a statement of the pipe. */
async function waitingOnLock(): Promise<number> {
  for (;;) {
    const rows = await sql<{ pid: number }>(
      `select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and wait_event_type = 'Lock' and query like '%numbered%'`,
    );
    if (rows.length > 0) return rows[0]!.pid;
    await new Promise<void>((r) => setImmediate(r));
  }
}

const pending = () => {
  const state = { settled: 0 };
  return { state, track: <T>(p: Promise<T>) => p.finally(() => state.settled++) };
};

describe('statement pipe', () => {
  it('statements sent together go out at once, run one after the other in the order sent, on one connection', async () => {
    const { pipe, ctx, tenant, room, lock } = await lockedRoom();
    const { state, track } = pending();
    // Three groups of the same room, each of two messages, sent without waiting.
    const groups = [0, 1, 2].map(() => [message(room, tenant), message(room, tenant)]);
    const runs = groups.map((g) => track(appendMessageRows(ctx, g, null)));
    await waitingOnLock();
    // The first waits on the lock; the two behind it are already sent (pipeline), not queued here.
    const client = await heldClient(pipe);
    expect(client._sentQueryQueue).toHaveLength(2);
    expect(state.settled).toBe(0);
    await lock.release();
    const results = await Promise.all(runs);
    expect(results.map((r) => r.outcomes.map((o) => (o.kind === 'new' ? o.row.seq : o.kind)))).toEqual([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    expect(pipe.connections).toBe(1);
    await pipe.close();
  });

  it('a statement that fails (data of one message) leaves the ones behind it alone', async () => {
    const { pipe, ctx, tenant, room, lock } = await lockedRoom();
    // PostgreSQL refuses a NUL character in text (22P05 or 22021): the whole statement fails.
    const bad = expect(appendMessageRows(ctx, [message(room, tenant, 'a\u0000b'), message(room, tenant)], null)).rejects.toMatchObject({
      code: expect.stringMatching(/^22/),
    });
    const good = appendMessageRows(ctx, [message(room, tenant), message(room, tenant)], null);
    await waitingOnLock();
    await lock.release();
    await bad;
    const r = await good;
    expect(r.outcomes.map((o) => (o.kind === 'new' ? o.row.seq : o.kind))).toEqual([1, 2]);
    // A failed statement does not cost the connection.
    expect(pipe.connections).toBe(1);
    expect(pipe.holding).toBe(true);
    await pipe.close();
  });

  it('a connection that breaks fails the statements on it; the next one runs on a fresh connection', async () => {
    const { pipe, ctx, tenant, room, lock } = await lockedRoom();
    const first = expect(appendMessageRows(ctx, [message(room, tenant), message(room, tenant)], null)).rejects.toBeInstanceOf(Error);
    const second = expect(appendMessageRows(ctx, [message(room, tenant)], null)).rejects.toBeInstanceOf(Error);
    const pid = await waitingOnLock();
    expect((await heldClient(pipe)).processID).toBe(pid);
    await sql('select pg_terminate_backend($1)', [pid]);
    await first;
    await second;
    await lock.release();
    // Nothing of theirs was written; the next statement takes a new connection and the room goes on.
    expect((await sql<{ n: number }>('select count(*)::int as n from message where room_id = $1', [room]))[0]!.n).toBe(0);
    const next = await appendMessageRows(ctx, [message(room, tenant), message(room, tenant)], null);
    expect(next.outcomes.map((o) => (o.kind === 'new' ? o.row.seq : o.kind))).toEqual([1, 2]);
    expect(pipe.connections).toBe(2);
    await pipe.close();
  });

  it('close waits for the statements on the wire, gives the connection back to the pool, and refuses later ones', async () => {
    const { pipe, ctx, tenant, room, lock } = await lockedRoom();
    const pool = await nativePool(srv.app.db.orm);
    const running = appendMessageRows(ctx, [message(room, tenant), message(room, tenant)], null);
    await waitingOnLock();
    const held = await heldClient(pipe);
    const released: unknown[] = [];
    const onRelease = (_err: unknown, client: unknown) => void released.push(client);
    pool.on('release', onRelease);
    let closed = false;
    const closing = pipe.close().then(() => (closed = true));
    await new Promise<void>((r) => setImmediate(r));
    expect(closed).toBe(false);
    await lock.release();
    const r = await running;
    expect(r.outcomes.map((o) => o.kind)).toEqual(['new', 'new']);
    await closing;
    pool.off('release', onRelease);
    expect(pipe.holding).toBe(false);
    // Given back as it is (not destroyed): the pool keeps it for its other queries.
    expect(released).toContain(held);
    expect((held as unknown as { pipeline: boolean }).pipeline).toBe(false);
    await expect(appendMessageRows(ctx, [message(room, tenant), message(room, tenant)], null)).rejects.toThrow('closed');
  });
});
