import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { MikroORM, type Options, type PostgreSqlConnection, PostgreSqlDriver } from '@mikro-orm/postgresql';
import { Migrator } from '@mikro-orm/migrations';
import pg from 'pg';
import { withTimeout } from '../util/async.js';
import { entities } from './entities.js';
import { migrationsList } from './migrations/index.js';

export type Orm = MikroORM;

/** Arbitrary constant key of the advisory lock that serializes migrations across processes. */
const MIGRATION_LOCK_KEY = 7_305_118_200_001;

export function ormOptions(clientUrl: string, poolMax = 10): Options {
  return {
    driver: PostgreSqlDriver,
    clientUrl,
    entities,
    extensions: [Migrator],
    migrations: {
      migrationsList,
      transactional: true,
      allOrNothing: true,
      snapshot: false,
      silent: true,
    },
    pool: { min: 0, max: poolMax },
    debug: false,
    allowGlobalContext: false,
    discovery: { warnWhenNoEntities: true },
  };
}

export interface Database {
  orm: Orm;
  /** The URL the ORM connects to (for embedded mode, the local socket server). */
  url: string;
  embedded: boolean;
  /** Returns true when a trivial query succeeds within the timeout. */
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

interface Embedded {
  url: string;
  stop(): Promise<void>;
}

/** Starts PGlite with data under dataDir and exposes it over the PostgreSQL wire protocol. */
async function startEmbedded(dataDir: string): Promise<Embedded> {
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');
  const dir = resolve(dataDir, 'pglite');
  mkdirSync(dir, { recursive: true });
  const db = await PGlite.create(dir);
  // The default of one connection breaks the pool; the socket server keeps transactions isolated.
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 32 });
  await server.start();
  const [host, port] = server.getServerConn().split(':');
  return {
    url: `postgresql://postgres@${host}:${port}/postgres?sslmode=disable`,
    async stop() {
      await server.stop();
      await db.close();
    },
  };
}

/**
 * Applies pending migrations while holding a PostgreSQL advisory lock on a dedicated connection,
 * so several processes starting together apply each migration exactly once.
 */
export async function migrate(orm: Orm, url: string): Promise<string[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    const done = await orm.migrator.up();
    return done.map((m) => m.name);
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]).catch(() => undefined);
    await client.end().catch(() => undefined);
  }
}

export async function openDatabase(opts: {
  databaseUrl: string | undefined;
  dataDir: string;
  poolMax?: number;
  migrate?: boolean;
}): Promise<Database> {
  let embedded: Embedded | undefined;
  let url = opts.databaseUrl;
  if (!url) {
    embedded = await startEmbedded(opts.dataDir);
    url = embedded.url;
  }
  let orm: Orm;
  try {
    orm = (await MikroORM.init(ormOptions(url, embedded ? 8 : (opts.poolMax ?? 10)))) as unknown as Orm;
    if (opts.migrate !== false) await migrate(orm, url);
  } catch (err) {
    await embedded?.stop().catch(() => undefined);
    throw err;
  }
  const finalUrl = url;
  return {
    orm,
    url: finalUrl,
    embedded: !!embedded,
    async ping(timeoutMs = 2000) {
      try {
        await withTimeout(orm.em.fork().getConnection().execute('select 1 as ok'), timeoutMs, 'database ping');
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      // kysely 0.29's PostgresDriver.destroy() drops its pool reference before `pool.end()`: a
      // connection the pool hands out after that (to a query queued while the pool was full) makes
      // kysely throw before it can release it, and `pool.end()`, hence `orm.close()`, never returns.
      // So let queued work finish first, and never wait on the close without a bound.
      await drainPool(orm, 3000).catch(() => undefined);
      await withTimeout(orm.close(true), 5000, 'closing the ORM').catch(() => undefined);
      await embedded?.stop().catch(() => undefined);
    },
  };
}

/** Resolves once no query waits for a connection and none is checked out (or after `timeoutMs`). */
async function drainPool(orm: Orm, timeoutMs: number): Promise<void> {
  const pool = await (orm.em.getConnection() as unknown as PostgreSqlConnection).getNativeClient();
  const drained = () => pool.waitingCount === 0 && pool.idleCount === pool.totalCount;
  if (drained()) return;
  await new Promise<void>((resolve) => {
    // `release` fires before the client is back in the idle list: look again on the next turn.
    const check = () => setImmediate(() => drained() && done());
    const done = () => {
      clearTimeout(timer);
      pool.off('release', check);
      pool.off('remove', check);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    pool.on('release', check);
    pool.on('remove', check);
  });
}

