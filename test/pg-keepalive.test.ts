/**
 * TCP keepalive on every PostgreSQL connection of a node's pools (src/store/database.ts): a
 * connection whose peer vanished without FIN or RST (a failover behind a load balancer, a host
 * gone from the network) is otherwise never noticed, and a statement waiting on it waits for good.
 * Checked on the real sockets: the local PostgreSQL names the client port of the connection a query
 * ran on (`inet_client_port()`), and `ss` shows that socket's keepalive timer, due within
 * DB_KEEPALIVE_IDLE_MS. The main pool, a read replica's pool and the pool of a multi-host URL.
 *
 *   npx vitest run test/pg-keepalive.test.ts
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DB_KEEPALIVE_IDLE_MS } from '../src/store/database.js';
import { dispose, testEnv, type TestEnv, type TestServer, waitFor } from './fixture.js';

const run = promisify(execFile);

/** The timer of our end of a TCP connection (local port `port`) as `ss -o` shows it: `keepalive`, `on` (a retransmission), ... or `none`. */
async function timerOf(port: number): Promise<{ kind: string; seconds: number }> {
  const { stdout } = await run('ss', ['-tnoH', 'state', 'established', '(', 'sport', '=', `:${port}`, ')']);
  const lines = stdout.trim().split('\n').filter(Boolean);
  if (lines.length !== 1) throw new Error(`ss shows ${lines.length} connections from local port ${port}: ${stdout}`);
  const m = /timer:\((\w+),([^,]*),/.exec(lines[0]!);
  if (!m) return { kind: 'none', seconds: Number.NaN };
  // `1min29sec`, `9.976sec`, `119min` (ss writes some values under 10 s with `ms`: read as written, which only makes them smaller).
  const unit: Record<string, number> = { min: 60, sec: 1, ms: 0.001 };
  let seconds = 0;
  for (const [, n, u] of m[2]!.matchAll(/([\d.]+)(min|sec|ms)/g)) seconds += Number(n) * unit[u!]!;
  return { kind: m[1]!, seconds };
}

/** Our end of the connection a query ran on, once it is idle (no retransmission pending): its timer. */
async function idleTimer(clientPort: () => Promise<number>): Promise<{ kind: string; seconds: number }> {
  const port = await clientPort();
  return waitFor(() => timerOf(port), `the connection from port ${port} to be idle`, { until: (t) => t.kind !== 'on' });
}

describe('TCP keepalive on the PostgreSQL connections', () => {
  let env: TestEnv;
  let withReplica: TestServer;
  beforeAll(async () => {
    env = await testEnv('pg_keepalive');
    // The test database serves as its own "replica": what is checked is the replica pool's sockets.
    withReplica = await env.startServer({ databaseReplicaUrls: [env.databaseUrl] });
  }, 60_000);
  afterAll(() => dispose(env));

  const expectKeepalive = (timer: { kind: string; seconds: number }) => {
    expect(timer.kind).toBe('keepalive');
    // Not the system's default (two hours on Linux): ours.
    expect(timer.seconds).toBeLessThanOrEqual(DB_KEEPALIVE_IDLE_MS / 1000);
  };

  it('the main pool: keepalive on, first probe within DB_KEEPALIVE_IDLE_MS of silence', async () => {
    const port = async () => {
      const rows = await withReplica.app.db.orm.em.fork().getConnection().execute<{ port: number }[]>('select inet_client_port() as port');
      return rows[0]!.port;
    };
    expectKeepalive(await idleTimer(port));
  });

  it("a read replica's pool: the same", async () => {
    const replica = withReplica.app.db.replicas[0]!;
    const port = async () => (await sql<{ port: number }>`select inet_client_port() as port`.execute(replica.db())).rows[0]!.port;
    expectKeepalive(await idleTimer(port));
  });

  it('the pool of a DATABASE_URL with several hosts (its own client class): the same', async () => {
    const url = new URL(env.databaseUrl);
    const multi = `postgresql://${url.username}@${url.host},${url.host}${url.pathname}`;
    const node = await env.startServer({ databaseUrl: multi });
    const port = async () => {
      const rows = await node.app.db.orm.em.fork().getConnection().execute<{ port: number }[]>('select inet_client_port() as port');
      return rows[0]!.port;
    };
    expectKeepalive(await idleTimer(port));
  });
});
