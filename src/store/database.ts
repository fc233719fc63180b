import { lockDataDir } from './data-dir-lock.js';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { MikroORM, type Options, type PostgreSqlConnection, PostgreSqlDriver, type EntityManager as PostgreSqlEntityManager } from '@mikro-orm/postgresql';
import type { Kysely } from 'kysely';
import { Migrator } from '@mikro-orm/migrations';
import pg from 'pg';
import { withTimeout } from '../util/async.js';
import { outsideRequest } from '../util/request-scope.js';
import { entities } from './entities.js';
import { StatementPipe } from './hot/pipe.js';
import { migrationsList } from './migrations/index.js';
import { multiHostClient, parseMultiHostUrl, PrimaryLocator } from './pg-hosts.js';

/** The ORM, typed with the entities: `em.getKysely()` knows every table and column. */
export type Orm = MikroORM<PostgreSqlEntityManager, typeof entities>;
/** An EntityManager of this schema (fork one per operation, never use the global one). */
export type Em = Orm['em'];
/** The ORM's own node-postgres pool: the same connections and limits as every other query. */
export function nativePool(orm: Orm): Promise<pg.Pool> {
  return (orm.em.getConnection() as unknown as PostgreSqlConnection).getNativeClient() as Promise<pg.Pool>;
}

/**
 * PostgreSQL's unique_violation (23505) on the named constraint. Matches the driver's error both as
 * the typed query builder passes it on (it does not wrap errors in MikroORM's exception classes)
 * and as MikroORM wraps it (the code and constraint are kept).
 */
export function violatesUnique(err: unknown, constraint: string): boolean {
  const e = err as { code?: unknown; constraint?: unknown } | null;
  return e?.code === '23505' && e.constraint === constraint;
}

/** The typed query builder of an EntityManager (bound to its transaction, if any). */
export function kysely(em: Em) {
  return em.getKysely();
}
/** The typed query builder MikroORM derives from the entities (tables and snake_case columns). */
export type Db = ReturnType<typeof kysely>;
/** The typed tables, for row types: `Selectable<Tables['message']>`. */
export type Tables = Db extends Kysely<infer T> ? T : never;

/** Arbitrary constant key of the advisory lock that serializes migrations across processes. */
const MIGRATION_LOCK_KEY = 7_305_118_200_001;

/**
 * The PostgreSQL driver with its read replicas reachable one by one: MikroORM picks a random
 * replica for `connectionType: 'read'`, while the read routing (src/services/read-routing.ts) must
 * ask the replica it checked.
 */
export class ChatPostgreSqlDriver extends PostgreSqlDriver {
  replicaConnections(): PostgreSqlConnection[] {
    return this.replicas as PostgreSqlConnection[];
  }
}

/** How long a replica may take to accept a connection before it counts as down. */
const REPLICA_CONNECT_TIMEOUT_MS = 2000;

/**
 * TCP keepalive of every pool connection: after this long without traffic the kernel probes the
 * peer (Node sets 10 probes a second apart), so a connection whose server vanished without FIN or
 * RST (a failover behind a load balancer or a virtual IP, a host gone from the network) errors out
 * about 20 s after its last traffic and leaves the pool, and a statement waiting for its answer on
 * it fails (SERVICE_UNAVAILABLE) instead of waiting for good. PostgreSQL's statement_timeout cannot
 * end that wait: the server that would cancel the statement is the one that is gone.
 */
export const DB_KEEPALIVE_IDLE_MS = 10_000;

export interface OrmExtras {
  /** Read replicas (`DATABASE_REPLICA_URLS`): connected lazily, used only where asked for explicitly. */
  replicaUrls?: string[];
  /** The pool's client class (several hosts in DATABASE_URL: src/store/pg-hosts.ts). */
  client?: typeof pg.Client;
  /** A unix socket's directory (the embedded database): pg connects to `<dir>/.s.PGSQL.<port>`. */
  socketDir?: string;
}

/** What pg-pool sets on a client it hands out: gives it back (with an error: destroyed). */
type Release = (err?: Error | boolean) => void;
const noRelease: Release = () => undefined;

/**
 * A pool client that connects outside any HTTP request's context. A connection is opened by
 * whichever query first needs it, often during a request, and its socket's callbacks (errors,
 * notices, every answer's parsing) would otherwise run in that request's context for the
 * connection's whole life, naming it in lines it never caused (src/util/request-scope.ts).
 *
 * And a client whose connection dies while it is checked out goes back to the pool by itself, to be
 * destroyed: kysely (under MikroORM's transactions) releases a transaction's connection only once its
 * COMMIT or ROLLBACK succeeded, and on a connection PostgreSQL terminated (a restart, a failover,
 * `pg_terminate_backend`) both fail, so the slot stayed checked out for good: after `DB_POOL_MAX`
 * such faults every query of the node waited forever (test/pool.dead-connections.test.ts). pg-pool
 * sets `release` on each checkout; it is kept here made idempotent, so the holder's own release
 * later (if any) does nothing.
 */
export function contextFreeClient(Base: typeof pg.Client): typeof pg.Client {
  class ContextFreeClient extends Base {
    #release: Release | null = null;

    constructor(...args: ConstructorParameters<typeof pg.Client>) {
      super(...args);
      const dead = (err?: Error) => this.#release?.(err ?? new Error('the database connection ended'));
      this.on('error', dead);
      this.on('end', () => dead());
    }

    /** The release of the latest checkout; calling it again, or after the pool has the client back, does nothing. */
    get release(): Release {
      return this.#release ?? noRelease;
    }

    set release(give: Release) {
      let given = false;
      this.#release = (err) => {
        if (given) return;
        given = true;
        give(err);
      };
    }
  }
  const connect = Base.prototype.connect;
  // pg's two forms (a promise, or a callback) are passed through as they came.
  ContextFreeClient.prototype.connect = function (this: pg.Client, ...args: unknown[]) {
    return outsideRequest(() => (connect as (...a: unknown[]) => unknown).apply(this, args));
  } as pg.Client['connect'];
  return ContextFreeClient;
}

export function ormOptions(clientUrl: string, poolMax = 10, statementTimeoutMs = 0, extras: OrmExtras = {}): Options {
  // Sent with every connection's startup (pg's `statement_timeout`): one statement that runs
  // longer is cancelled by PostgreSQL (a request gets an error, the pool slot is freed).
  const timeout = statementTimeoutMs > 0 ? { statement_timeout: statementTimeoutMs } : {};
  // Every pool connection, the replicas' and the multi-host client's included (it passes its config on).
  const keepAlive = { keepAlive: true, keepAliveInitialDelayMillis: DB_KEEPALIVE_IDLE_MS };
  const driverOptions = {
    ...timeout,
    ...keepAlive,
    Client: contextFreeClient(extras.client ?? pg.Client),
    ...(extras.socketDir ? { host: extras.socketDir } : {}),
  };
  const replicaUrls = extras.replicaUrls ?? [];
  return {
    driver: ChatPostgreSqlDriver,
    clientUrl,
    driverOptions,
    // Nothing moves to a replica by itself: every query reads the primary unless a read path asks
    // the read routing for a replica.
    preferReadReplicas: false,
    ...(replicaUrls.length > 0
      ? {
          replicas: replicaUrls.map((url, i) => ({
            name: `replica-${i + 1}`,
            clientUrl: url,
            driverOptions: { ...timeout, ...keepAlive, Client: contextFreeClient(pg.Client), connectionTimeoutMillis: REPLICA_CONNECT_TIMEOUT_MS },
          })),
        }
      : {}),
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

/** The readiness check's own connection, as pg_stat_activity names it. */
const READINESS_APPLICATION_NAME = 'chat-readiness';

/** The readiness check's connection, its connect() under way or done, and its end once asked for. */
interface ProbeConnection {
  client: pg.Client;
  connected: Promise<unknown>;
  ended: Promise<void> | null;
}

/**
 * The readiness check (`/readyz`) on one connection of its own beside the pool. Through the pool,
 * the check waited in its queue whenever every connection was busy (long statements, a burst) and
 * timed out: every node of a busy deployment reported not ready at once, and the load balancer took
 * them all out of service. This connection has the pool's settings (server, user, client class:
 * several hosts, the embedded socket), is opened by the first check, kept between checks, dropped
 * on any failure (the next check opens another) and ended by close().
 */
class ReadinessProbe {
  #conn: ProbeConnection | null = null;
  /** The check under way: one at a time (a second statement would wait behind the first on the connection). */
  #checking: Promise<boolean> | null = null;
  #closed = false;

  constructor(private readonly pool: () => Promise<pg.Pool>) {}

  ping(timeoutMs: number): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    this.#checking ??= this.#check(timeoutMs)
      .catch(() => false)
      .finally(() => {
        this.#checking = null;
      });
    return this.#checking;
  }

  async #check(timeoutMs: number): Promise<boolean> {
    if (this.#conn === null) {
      const settings = (await this.pool()).options;
      if (this.#closed) return false;
      this.#conn = this.#open(settings, timeoutMs);
    }
    const conn = this.#conn;
    try {
      await withTimeout(
        conn.connected.then(() => conn.client.query('select 1 as ok')),
        timeoutMs,
        'database readiness check',
      );
      return true;
    } catch {
      void this.#drop(conn);
      return false;
    }
  }

  #open(settings: pg.PoolConfig, timeoutMs: number): ProbeConnection {
    const Client = (settings.Client ?? pg.Client) as unknown as typeof pg.Client;
    const client = new Client({ ...settings, connectionTimeoutMillis: timeoutMs, application_name: READINESS_APPLICATION_NAME });
    const conn: ProbeConnection = { client, connected: outsideRequest(() => client.connect()), ended: null };
    // A connect that outlives its check (timed out) is ended by #drop; its error is handled there.
    conn.connected.catch(() => undefined);
    // Lost between checks (a restart, a failover, an idle timeout): the next check opens another.
    client.on('error', () => void this.#drop(conn));
    client.on('end', () => void this.#drop(conn));
    return conn;
  }

  /** Forgets the connection and ends it, once its connect settled (one still under way would open after). */
  #drop(conn: ProbeConnection): Promise<void> {
    if (this.#conn === conn) this.#conn = null;
    conn.ended ??= conn.connected.then(() => conn.client.end()).catch(() => undefined);
    return conn.ended;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const conn = this.#conn;
    if (conn !== null) await withTimeout(this.#drop(conn), 3000, 'closing the readiness connection').catch(() => undefined);
  }
}

/** A read replica as the read routing uses it. */
export interface Replica {
  /** `replica-1`, ... in the order of DATABASE_REPLICA_URLS (what /readyz and the logs show). */
  name: string;
  /** The typed query builder on this replica's pool. */
  db(): Db;
}

export interface Database {
  orm: Orm;
  /** The read replicas (none without DATABASE_REPLICA_URLS). */
  replicas: Replica[];
  /** The URL the ORM connects to (for embedded mode, the local socket server). */
  url: string;
  embedded: boolean;
  /** The grouped sends' pipelined connection (src/store/hot/pipe.ts); none in embedded mode. */
  sendPipe: StatementPipe | null;
  /**
   * Returns true when a trivial query succeeds within the timeout, on a connection of its own: a
   * pool whose every connection is busy does not fail it (ReadinessProbe).
   */
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

interface Embedded {
  url: string;
  /** The private directory of the unix socket the embedded server listens on. */
  socketDir: string;
  stop(): Promise<void>;
}

/** The port in the socket's file name (`.s.PGSQL.5432`); nothing listens on a TCP port. */
const EMBEDDED_SOCKET_PORT = 5432;

/**
 * Starts PGlite with data under dataDir and exposes it over the PostgreSQL wire protocol on a unix
 * socket in a new directory only this process's user may enter (mode 0700). PGlite has no
 * authentication: on a TCP port any local user or process could read and change every message.
 */
async function startEmbedded(dataDir: string): Promise<Embedded> {
  const { PGlite } = await import('@electric-sql/pglite');
  const { PGLiteSocketServer } = await import('@electric-sql/pglite-socket');
  // pg_trgm: the trigram indexes of room.directory (migration 20261204170052).
  const { pg_trgm } = await import('@electric-sql/pglite/contrib/pg_trgm');
  const dir = resolve(dataDir, 'pglite');
  mkdirSync(dir, { recursive: true });
  // Under the system's temporary directory: a socket path must stay short (about 100 bytes).
  const socketDir = mkdtempSync(join(tmpdir(), 'chat-pg-'));
  chmodSync(socketDir, 0o700);
  // One process at a time on a data directory (src/store/data-dir-lock.ts). The lock names the
  // socket directory: when this process is killed before its stop, the next start removes it.
  let unlock: () => void;
  try {
    unlock = lockDataDir(resolve(dataDir), socketDir);
  } catch (err) {
    rmSync(socketDir, { recursive: true, force: true });
    throw err;
  }
  let db: Awaited<ReturnType<typeof PGlite.create>>;
  try {
    db = await PGlite.create(dir, { extensions: { pg_trgm } });
  } catch (err) {
    rmSync(socketDir, { recursive: true, force: true });
    unlock();
    throw err;
  }
  // The default of one connection breaks the pool; the socket server keeps transactions isolated.
  const server = new PGLiteSocketServer({ db, path: join(socketDir, `.s.PGSQL.${EMBEDDED_SOCKET_PORT}`), maxConnections: 32 });
  try {
    await server.start();
  } catch (err) {
    rmSync(socketDir, { recursive: true, force: true });
    await db.close();
    unlock();
    throw err;
  }
  return {
    url: `postgresql://postgres@localhost:${EMBEDDED_SOCKET_PORT}/postgres?host=${encodeURIComponent(socketDir)}`,
    socketDir,
    async stop() {
      await server.stop();
      await db.close();
      rmSync(socketDir, { recursive: true, force: true });
      unlock();
    },
  };
}

/**
 * Applies pending migrations while holding a PostgreSQL advisory lock on a dedicated connection,
 * so several processes starting together apply each migration exactly once.
 */
export async function migrate(orm: Orm, url: string, socketDir?: string): Promise<string[]> {
  // Keepalive like the pool's: a start must not wait for good on a server that vanished mid-migration.
  const client = new pg.Client({
    connectionString: url,
    keepAlive: true,
    keepAliveInitialDelayMillis: DB_KEEPALIVE_IDLE_MS,
    ...(socketDir ? { host: socketDir } : {}),
  });
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
  /** PostgreSQL's statement_timeout for every connection (0: none). */
  statementTimeoutMs?: number;
  /** Read replicas (DATABASE_REPLICA_URLS); ignored in embedded mode. */
  replicaUrls?: string[];
}): Promise<Database> {
  let embedded: Embedded | undefined;
  let url = opts.databaseUrl;
  if (!url) {
    embedded = await startEmbedded(opts.dataDir);
    url = embedded.url;
  }
  // Several hosts (`host-a:5432,host-b:5432`): the pool finds the read-write one (src/store/pg-hosts.ts).
  const multi = embedded ? null : parseMultiHostUrl(url);
  const locator = multi && multi.hosts.length > 1 ? new PrimaryLocator(multi.hosts) : null;
  let orm: Orm;
  try {
    const extras: OrmExtras = {
      replicaUrls: embedded ? [] : (opts.replicaUrls ?? []),
      ...(embedded ? { socketDir: embedded.socketDir } : {}),
      ...(locator ? { client: multiHostClient(locator, { readWrite: multi!.targetSessionAttrs === 'read-write' }) } : {}),
    };
    const ormUrl = locator ? multi!.firstUrl : url;
    orm = (await MikroORM.init(ormOptions(ormUrl, embedded ? 8 : (opts.poolMax ?? 10), opts.statementTimeoutMs ?? 0, extras))) as unknown as Orm;
    await parseAsDeclared(orm);
    if (opts.migrate !== false) {
      // The migration lock must be taken on the primary the pool writes to.
      const primary = locator ? await locator.primary(pgConfigOf(ormUrl)) : null;
      await migrate(orm, primary ? withHost(ormUrl, primary.host, primary.port) : url, embedded?.socketDir);
    }
  } catch (err) {
    await embedded?.stop().catch(() => undefined);
    throw err;
  }
  const finalUrl = url;
  const replicaConnections = (orm.driver as unknown as ChatPostgreSqlDriver).replicaConnections();
  const replicas: Replica[] = replicaConnections.map((c, i) => ({
    name: `replica-${i + 1}`,
    db: () => c.getClient() as unknown as Db,
  }));
  const sendPipe = embedded ? null : new StatementPipe(() => nativePool(orm));
  const readiness = new ReadinessProbe(() => nativePool(orm));
  return {
    orm,
    replicas,
    url: finalUrl,
    embedded: !!embedded,
    sendPipe,
    ping(timeoutMs = 2000) {
      return readiness.ping(timeoutMs);
    },
    async close() {
      await readiness.close();
      // kysely 0.29's PostgresDriver.destroy() drops its pool reference before `pool.end()`: a
      // connection the pool hands out after that (to a query queued while the pool was full) makes
      // kysely throw before it can release it, and `pool.end()`, hence `orm.close()`, never returns.
      // So let queued work finish first, and never wait on the close without a bound.
      // The pipe's connection goes back first (once its statements are answered): the drain waits for every connection.
      await withTimeout(sendPipe?.close() ?? Promise.resolve(), 3000, 'closing the statement pipe').catch(() => undefined);
      await drainPool(orm, 3000).catch(() => undefined);
      await withTimeout(orm.close(true), 5000, 'closing the ORM').catch(() => undefined);
      await embedded?.stop().catch(() => undefined);
    },
  };
}

/**
 * Rows arrive as the entities and the typed query builder declare them, on every query of the pool
 * (the ORM's, the typed builder's and the hand-written ones alike): int8 columns (sequence numbers,
 * counts; far below 2^53) as numbers (`p.bigint('number')`), timestamptz as Date (`p.datetime()`).
 * The ORM's own pool setup keeps timestamps as strings and converts them per entity property; the
 * typed builder does no such conversion, so without this its Date-typed columns would be strings.
 */
async function parseAsDeclared(orm: Orm): Promise<void> {
  const replicas = (orm.driver as unknown as ChatPostgreSqlDriver).replicaConnections();
  const pools = [await nativePool(orm), ...(await Promise.all(replicas.map((c) => c.getNativeClient() as Promise<pg.Pool>)))];
  for (const pool of pools) {
    const types = (pool as unknown as { options: { types?: { setTypeParser(oid: number, parse: (v: string) => unknown): void } } }).options
      .types;
    if (!types) throw new Error('the PostgreSQL pool has no type parsers to configure');
    types.setTypeParser(20, (v: string) => Number(v));
    types.setTypeParser(1184, (v: string) => new Date(v));
  }
}

/** User, password and database of a URL, for a probing connection. */
function pgConfigOf(url: string): pg.ClientConfig {
  const u = new URL(url);
  return { user: decodeURIComponent(u.username), password: u.password ? decodeURIComponent(u.password) : undefined, database: decodeURIComponent(u.pathname.slice(1)) };
}

/** The URL with another host and port. */
function withHost(url: string, host: string, port: number): string {
  const u = new URL(url);
  u.hostname = host.includes(':') ? `[${host}]` : host;
  u.port = String(port);
  return u.toString();
}

/** Resolves once no query waits for a connection and none is checked out (or after `timeoutMs`). */
async function drainPool(orm: Orm, timeoutMs: number): Promise<void> {
  const pool = await nativePool(orm);
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

