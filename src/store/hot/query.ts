import { type Em, nativePool, type Orm } from '../database.js';
import { runPrepared } from './lean-query.js';
import type { StatementPipe } from './pipe.js';

/**
 * The hand-written statements of src/store/hot/ run through here. Everything else goes through the
 * ORM (the entities, the EntityManager, or the typed query builder of src/store/database.ts); a
 * statement belongs in hot/ only when a benchmark showed the ORM's way costs too much, and its file
 * says which benchmark and why.
 */
export interface HotContext {
  orm: Orm;
  /** Named prepared statements (parsed and planned once per connection); off behind PgBouncer. */
  prepared: boolean;
  /** The pipelined connection of the grouped sends (pipe.ts), with prepared statements only; none: the pool. */
  pipe?: StatementPipe | null;
}

/**
 * A hot statement, written with `?` placeholders. Given a transaction's EntityManager it runs there
 * (it must see the transaction); otherwise straight on the pool as a named prepared statement, with
 * none of the ORM's per-query work, described once per connection (`LeanQuery`); with `pipelined`,
 * on the context's statement pipe when it has one (pipe.ts). `R` is the row type the statement's
 * SELECT list produces.
 */
export function hotQuery<R>(name: string, text: string, opts: { pipelined?: boolean } = {}) {
  let n = 0;
  const positional = text.replace(/\?/g, () => `$${++n}`);
  return async (ctx: HotContext, params: unknown[], em?: Em): Promise<R[]> => {
    if (em) return em.execute<R[]>(text, params as never[]);
    if (opts.pipelined && ctx.pipe && ctx.prepared) return ctx.pipe.run<R>(name, positional, params);
    const pool = await nativePool(ctx.orm);
    if (ctx.prepared) return runPrepared<R>(pool, name, positional, params);
    const res = await pool.query({ text: positional, values: params });
    return res.rows as R[];
  };
}
