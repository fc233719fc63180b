import type pg from 'pg';
import { runPrepared } from './lean-query.js';

/**
 * Why: the grouped send statement on one connection of its own, in node-postgres's pipeline mode
 * (`Client#pipeline`: each statement goes out at once, the answers come back in order). The send
 * batcher (src/services/send-batcher.ts) then writes its next group right behind the one in flight,
 * so PostgreSQL starts it the moment the first commits, instead of waiting for this process to read
 * the first answer and send the next: with 64 senders that wait was about a third of the database's
 * time. Measured with `npm run bench -- --only sends` (docs/BENCHMARKS.md, "twentieth pass").
 *
 * One connection also keeps the groups in order: PostgreSQL runs a connection's statements one after
 * the other, so a room's messages take their seqs in the order their groups were sent, as with one
 * group at a time. Each statement is its own transaction (Sync after each): one that fails leaves the
 * ones behind it untouched.
 *
 * The connection is taken from the pool on first use and kept. When it breaks (or answers as a
 * standby that can no longer write, after a failover), the statements on it fail as a pooled query
 * would, and the next one takes a fresh connection. Used with named prepared statements only, never
 * for the embedded PostgreSQL, and turned off behind a transaction-mode pooler (`DB_SEND_PIPELINE=0`,
 * docs/OPERATIONS.md: a pooler may run two pipelined statements on two server connections).
 */
export class StatementPipe {
  private client: Promise<pg.PoolClient> | null = null;
  private closed = false;
  /** Connections taken from the pool so far (the first, and one after each break). */
  connections = 0;

  constructor(private readonly pool: () => Promise<pg.Pool>) {}

  /** Whether a connection is taken from the pool (or being taken) for the pipe. */
  get holding(): boolean {
    return this.client !== null;
  }

  /** Runs the named prepared statement on the pipe's connection: its rows. */
  async run<R>(name: string, text: string, values: unknown[]): Promise<R[]> {
    const client = await this.acquire();
    try {
      return await runPrepared<R>(client, name, text, values);
    } catch (err) {
      if (breaksConnection(err)) this.drop(client, err);
      throw err;
    }
  }

  private acquire(): Promise<pg.PoolClient> {
    if (this.closed) return Promise.reject(new Error('the statement pipe is closed'));
    if (this.client) return this.client;
    const taking = (async () => {
      const client = await (await this.pool()).connect();
      this.connections++;
      (client as unknown as { pipeline: boolean }).pipeline = true;
      // A checked-out client's errors are its holder's: without a listener one would crash the process.
      client.on('error', (err) => this.drop(client, err));
      if (this.closed) {
        this.release(client);
        throw new Error('the statement pipe is closed');
      }
      return client;
    })();
    this.client = taking;
    // A failed connect is not kept: the next statement tries again.
    taking.catch(() => {
      if (this.client === taking) this.client = null;
    });
    return taking;
  }

  /** Forgets a broken connection (once) and hands it back to the pool to be destroyed. */
  private drop(client: pg.PoolClient, err: unknown): void {
    const current = this.client;
    if (!current) return;
    void current.then((c) => {
      if (c !== client || this.client !== current) return;
      this.client = null;
      client.release(err instanceof Error ? err : true);
    }, () => undefined);
  }

  private release(client: pg.PoolClient): void {
    (client as unknown as { pipeline: boolean }).pipeline = false;
    client.release();
  }

  /** Hands the connection back to the pool, once the statements on it are answered; later runs fail. */
  async close(): Promise<void> {
    this.closed = true;
    const current = this.client;
    this.client = null;
    const client = await current?.catch(() => null);
    if (!client) return;
    // Statements still on the wire: the pool may end this connection only once they are answered.
    const pending = client as unknown as { _queryQueue: unknown[]; _sentQueryQueue?: unknown[]; _activeQuery?: unknown };
    if (pending._activeQuery || (pending._sentQueryQueue?.length ?? 0) > 0 || pending._queryQueue.length > 0) {
      await new Promise<void>((resolve) => {
        client.once('drain', resolve);
        client.once('end', resolve);
      });
    }
    if ((client as unknown as { _queryable?: boolean })._queryable === false) client.release(true);
    else this.release(client);
  }
}

/**
 * An error after which the connection is not used again: it broke (no SQLSTATE), PostgreSQL is
 * shutting it down or the server cannot take connections (classes 08 and 57P), or it is a standby
 * now (25006, read-only transaction: the primary moved).
 */
function breaksConnection(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true;
  return code.startsWith('08') || code.startsWith('57P') || code === '25006';
}
