/**
 * A named prepared statement run through node-postgres's `Submittable` interface (the one pg-cursor
 * and pg-query-stream use), for the hot statements of this folder.
 *
 * node-postgres's own `Query` asks for the portal's row description on every execution (Parse once
 * per connection, then Bind, Describe, Execute, Sync) and builds a `Result` with a parser per field
 * from it each time. A prepared statement's result columns cannot change while it exists (PostgreSQL
 * refuses to run it with "cached plan must not change result type" instead), so this asks once per
 * statement and connection (Bind, Execute, Sync after that), and keeps the field names and parsers
 * for the connection's later runs. Saves the server the row description's parsing and a `Result` per
 * query, and the database a Describe (docs/BENCHMARKS.md, "Issue 18, fourteenth pass").
 *
 * Rows come as node-postgres gives them (objects keyed by column name, values parsed by the pool's
 * type parsers); an error fails the query as node-postgres's would.
 */
import pg from 'pg';

/** A connection's described statements: field names and parsers per statement name. */
interface Described {
  names: string[];
  parsers: ((text: string) => unknown)[];
}

type TypeParsers = { getTypeParser(oid: number, format?: string): (text: string) => unknown };

/** The parts of node-postgres's connection this uses (pg/lib/connection.js). */
interface Connection {
  parsedStatements: Record<string, string>;
  submittedNamedStatements: Record<string, string>;
  stream: { cork?: () => void; uncork?: () => void };
  parse(q: { text: string; name: string }): void;
  bind(c: { statement: string; values: unknown[]; valueMapper: (v: unknown) => unknown }): void;
  describe(m: { type: 'P'; name: string }): void;
  execute(m: object): void;
  sync(): void;
}

/** node-postgres's own value mapping (what `Query` binds with: dates, arrays, buffers, JSON, null). */
const prepareValue: (v: unknown) => unknown = (() => {
  const f = (pg as unknown as { utils?: { prepareValue?: (v: unknown) => unknown } }).utils?.prepareValue;
  if (!f) throw new Error('node-postgres without utils.prepareValue: the hot statements cannot bind their values as its Query does');
  return f;
})();

const described = new WeakMap<Connection, Map<string, Described>>();

export class LeanQuery<R> {
  /** Set by the client (`Client#query`) from the pool's callback. */
  callback?: (err: Error | null, res?: { rows: R[] }) => void;
  /** The client fills `_types` with its type parsers (the pool's `types`). */
  readonly _result: { _types?: TypeParsers } = {};
  private readonly out: R[] = [];
  /** The connection's statements described so far (this one's shape goes in on its first run). */
  private known: Map<string, Described> | undefined;
  /** The result's field names and parsers: known from an earlier run, or from this run's description. */
  private fields: Described | undefined;
  private failed: Error | undefined;
  private done = false;

  constructor(
    readonly name: string,
    readonly text: string,
    private readonly values: unknown[],
  ) {}

  submit(connection: Connection): Error | null {
    const previous = connection.parsedStatements[this.name] ?? connection.submittedNamedStatements[this.name];
    if (previous !== undefined && previous !== this.text) return new Error(`Prepared statements must be unique - '${this.name}' was used for a different statement`);
    let known = described.get(connection);
    if (!known) {
      known = new Map();
      described.set(connection, known);
    }
    this.known = known;
    // A statement parsed anew (its first run here, or after a failed parse) is described anew.
    if (previous === undefined) known.delete(this.name);
    this.fields = known.get(this.name);
    connection.stream.cork?.();
    try {
      if (previous === undefined) {
        connection.parse({ text: this.text, name: this.name });
        connection.submittedNamedStatements[this.name] = this.text;
      }
      connection.bind({ statement: this.name, values: this.values, valueMapper: prepareValue });
      if (!this.fields) connection.describe({ type: 'P', name: '' });
      connection.execute({});
      connection.sync();
    } finally {
      connection.stream.uncork?.();
    }
    return null;
  }

  handleRowDescription(msg: { fields: { name: string; dataTypeID: number; format: string }[] }): void {
    const types = this._result._types ?? (pg.types as unknown as TypeParsers);
    this.fields = { names: msg.fields.map((f) => f.name), parsers: msg.fields.map((f) => types.getTypeParser(f.dataTypeID, f.format || 'text')) };
    this.known?.set(this.name, this.fields);
  }

  handleDataRow(msg: { fields: (string | null)[] }): void {
    if (this.failed) return;
    const f = this.fields;
    if (!f) {
      this.failed = new Error(`statement ${this.name} returned rows without a description`);
      return;
    }
    const row: Record<string, unknown> = {};
    const v = msg.fields;
    try {
      for (let i = 0; i < v.length; i++) {
        const x = v[i];
        row[f.names[i]!] = x === null || x === undefined ? null : f.parsers[i]!(x);
      }
    } catch (err) {
      this.failed = err as Error;
      return;
    }
    this.out.push(row as R);
  }

  handleCommandComplete(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}

  /** The database refused the run (node-postgres then forgets a statement whose parse failed). */
  handleError(err: Error): void {
    this.finish(this.failed ?? err);
  }

  handleReadyForQuery(): void {
    this.finish(this.failed ?? null);
  }

  private finish(err: Error | null): void {
    if (this.done) return;
    this.done = true;
    this.callback?.(err, err ? undefined : { rows: this.out });
  }
}

/**
 * Runs `text` as the named prepared statement `name` on a pool or one client (both take a
 * submittable with a callback): its rows.
 */
export function runPrepared<R>(on: { query(q: never, cb: never): unknown }, name: string, text: string, values: unknown[]): Promise<R[]> {
  return new Promise<R[]>((resolve, reject) => {
    on.query(new LeanQuery<R>(name, text, values) as never, ((err: Error | null, res?: { rows: R[] }) => (err ? reject(err) : resolve(res!.rows))) as never);
  });
}
