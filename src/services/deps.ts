import type pg from 'pg';
import type { Config } from '../config.js';
import type { Em, Orm } from '../store/database.js';
import type { EventBus } from '../realtime/bus.js';
import type { Logger } from '../logger.js';
import type { Counters, Observers } from '../metrics.js';
import type { RateLimits } from './limits.js';

/** The concrete parts wired by createApp, before the services build their own shared parts. */
export interface BaseDeps {
  config: Config;
  orm: Orm;
  bus: EventBus;
  log: Logger;
  /** Plain counters read by the metrics registry. */
  counters: Counters;
  /** Where procedure durations and fan-outs are reported (the metrics). */
  observers: Observers;
}

/** What every service gets: the base parts and the rate limits (always present: no limiter, no service). */
export interface Deps extends BaseDeps {
  limits: RateLimits;
}

export type { Em };

/** A fresh EntityManager per operation (never the global one). */
export function em(deps: Deps): Em {
  return deps.orm.em.fork();
}

/** Runs a raw query on an EntityManager (inside its transaction, if any). */
export function sql<T = Record<string, any>>(em: Em, query: string, params: unknown[] = []): Promise<T[]> {
  return em.execute<T[]>(query, params as any[]);
}

/**
 * The ORM's own node-postgres pool, for the few hot statements that skip the ORM's per-query work
 * (parameter inlining, query logging). Same connections, same limits, so the pool size still bounds
 * everything.
 */
export function nativePool(deps: Deps): Promise<pg.Pool> {
  const conn = deps.orm.em.getDriver().getConnection() as unknown as { getNativeClient(): Promise<pg.Pool> };
  return conn.getNativeClient();
}

/**
 * A hot query, written with `?` placeholders like `sql`. Given a transaction's EntityManager it runs
 * there (it must see the transaction); otherwise straight on the pool as a named prepared statement:
 * parsed and planned once per connection, and none of the ORM's per-query work.
 */
export function hotQuery<T = Record<string, any>>(name: string, text: string) {
  let n = 0;
  const positional = text.replace(/\?/g, () => `$${++n}`);
  return async (deps: Deps, params: unknown[], em?: Em): Promise<T[]> => {
    if (em) return sql<T>(em, text, params);
    const pool = await nativePool(deps);
    // Embedded PostgreSQL (no DATABASE_URL) serves every connection from one backend: names would collide.
    const named = deps.config.dbPreparedStatements && deps.config.databaseUrl !== undefined;
    const res = await pool.query({ name: named ? name : undefined, text: positional, values: params });
    return res.rows as T[];
  };
}
