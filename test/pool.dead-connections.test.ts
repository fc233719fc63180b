/**
 * A transaction whose PostgreSQL backend dies (a restart, a failover, `pg_terminate_backend`) gives
 * its pool connection back: kysely releases a transaction's connection only after its COMMIT or
 * ROLLBACK succeeded, both fail on a dead connection, and the node's pool client class releases
 * itself when its connection dies while checked out (src/store/database.ts). Before, every such fault
 * kept one of the DB_POOL_MAX slots for good, and then every query of the node waited forever.
 */
import { TRPCError } from '@trpc/server';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { actor, callerFor, fileServer, nativePool, uuid, waitFor, within } from './fixture.js';

const srv = fileServer('pool_dead');
const sql = <R = Record<string, unknown>>(text: string, params: unknown[] = []) => srv.env.sql<R>(text, params);

describe('transactions whose backend is terminated', () => {
  it('give their pool connection back: after more such faults than DB_POOL_MAX the node still answers', async () => {
    // DB_POOL_MAX=3: the statement pipe holds one connection once a plain send ran; two remain for the rest.
    const node = await srv.env.startServer({ dbPoolMax: 3 });
    const [owner, bob] = ['tx-owner', 'tx-bob'];
    const room = await callerFor(node.app, actor(owner)).room.create({ kind: 'group', name: 'tx', memberIds: [bob] });
    await callerFor(node.app, actor(owner)).chat.send({ roomId: room.id, clientId: uuid(), body: 'plain, takes the pipe' });
    const pool = await nativePool(node.app.db.orm);
    const state = () => `pool total ${pool.totalCount}, idle ${pool.idleCount}, waiting ${pool.waitingCount}`;
    try {
      const codes: string[] = [];
      for (let i = 0; i < 3; i++) {
        const locker = new pg.Client({ connectionString: srv.env.databaseUrl });
        await locker.connect();
        await locker.query('begin');
        await locker.query('select 1 from room where id = $1 for update', [room.id]);
        // A send with mentions runs in a transaction of its own (src/store/tx.ts) and waits for the room's row lock.
        const sending = callerFor(node.app, actor(owner))
          .chat.send({ roomId: room.id, clientId: uuid(), body: `mention ${i}`, mentions: [bob] })
          .then(
            () => 'ok',
            (err: unknown) => (err instanceof TRPCError ? err.code : `untyped ${String(err)}`),
          );
        let pid: number | undefined;
        for (let polls = 0; pid === undefined; polls++) {
          if (polls > 2000) throw new Error(`send ${i} never reached the room lock (${state()})`);
          const rows = await sql<{ pid: number }>(
            `select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and wait_event_type = 'Lock' and query like 'update "room"%'`,
          );
          pid = rows[0]?.pid;
        }
        // The fault: the transaction's backend is terminated while it waits.
        await sql('select pg_terminate_backend($1)', [pid]);
        codes.push(await sending);
        await locker.query('commit');
        await locker.end();
      }
      // Each send fails with the documented retryable code (a retry with its clientId is safe).
      expect(codes).toEqual(['SERVICE_UNAVAILABLE', 'SERVICE_UNAVAILABLE', 'SERVICE_UNAVAILABLE']);
      // And the node still answers: a history read needs one pool connection.
      const history = await within(callerFor(node.app, actor(owner)).chat.history({ roomId: room.id, limit: 10 }), 10_000, `a history read (${state()})`);
      expect(history.messages.map((m) => m.body)).toContain('plain, takes the pipe');
      // Nothing is left checked out but the statement pipe's connection.
      await waitFor(() => pool.totalCount - pool.idleCount, 'the dead connections to be gone from the pool', { until: (n) => n <= 1 });
    } finally {
      await node[Symbol.asyncDispose]();
    }
  });
});
