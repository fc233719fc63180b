import pg from 'pg';

/**
 * Several PostgreSQL hosts behind one `DATABASE_URL`, as libpq writes them:
 * `postgresql://user@db-a:5432,db-b:5432/chat?target_session_attrs=read-write`. node-postgres (8.x)
 * connects to one host only, so the pool gets a client class that finds the read-write one: each
 * new connection goes to the host that answered last as the primary; when that one refuses or turns
 * out to be a standby, the next connection probes the hosts in order (`pg_is_in_recovery()`) and
 * keeps the first primary. The connection that failed reports a connection error (the caller gets
 * SERVICE_UNAVAILABLE and retries): a failover is never hidden, and a send retried with its clientId
 * cannot be written twice.
 */

export interface HostPort {
  host: string;
  port: number;
}

export interface MultiHostUrl {
  /** Several hosts only (empty: a URL of one host, used as it is). */
  hosts: HostPort[];
  /** The URL with the first host only, for everything that reads user, password, database and options. */
  firstUrl: string;
  /** `read-write` (default for several hosts) or `any`. */
  targetSessionAttrs: 'read-write' | 'any';
}

/**
 * Splits a URL with a comma list of hosts. A URL with one host gives one host and itself back.
 * Throws on a malformed list (empty host, bad port) or an unknown `target_session_attrs`.
 */
export function parseMultiHostUrl(url: string): MultiHostUrl {
  // The last @ before the path ends the user and password (as pg reads them): an @ inside them is kept.
  const m = /^(postgres(?:ql)?:\/\/)([^/?#]*@)?([^@/?#]*)(.*)$/.exec(url);
  if (!m) return { hosts: [], firstUrl: url, targetSessionAttrs: 'any' };
  const [, scheme, auth = '', hostList = '', rest = ''] = m;
  // One host (or none: a socket directory in the query): the URL stays exactly as it is.
  if (!hostList.includes(',')) return { hosts: [], firstUrl: url, targetSessionAttrs: 'any' };
  const hosts = hostList.split(',').map((part) => {
    const hp = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(part.trim());
    if (!hp) throw new Error(`DATABASE_URL: cannot read the host "${part}"`);
    const port = hp[2] ? Number(hp[2]) : 5432;
    if (!(port > 0 && port < 65536)) throw new Error(`DATABASE_URL: bad port in "${part}"`);
    return { host: hp[1]!.replace(/^\[|\]$/g, ''), port };
  });
  const query = new URLSearchParams(rest.includes('?') ? rest.slice(rest.indexOf('?') + 1).split('#')[0] : '');
  const attrs = query.get('target_session_attrs') ?? (hosts.length > 1 ? 'read-write' : 'any');
  if (attrs !== 'read-write' && attrs !== 'any') {
    throw new Error(`DATABASE_URL: target_session_attrs=${attrs} is not supported (read-write or any)`);
  }
  // pg would pass an unknown parameter on to the server as a setting: drop it from the URL it reads.
  query.delete('target_session_attrs');
  const path = rest.includes('?') ? rest.slice(0, rest.indexOf('?')) : rest;
  const qs = query.toString();
  const first = hosts[0]!;
  const hostText = first.host.includes(':') ? `[${first.host}]` : first.host;
  return { hosts, firstUrl: `${scheme}${auth}${hostText}:${first.port}${path}${qs ? `?${qs}` : ''}`, targetSessionAttrs: attrs };
}

/** A connection error as pg reports one (SQLSTATE 08001), so callers treat it as an outage. */
function unableToConnect(message: string): Error {
  return Object.assign(new Error(message), { code: '08001' });
}

async function isPrimary(config: pg.ClientConfig, host: HostPort, timeoutMs: number): Promise<boolean> {
  const c = new pg.Client({ ...config, host: host.host, port: host.port, connectionTimeoutMillis: timeoutMs });
  c.on('error', () => undefined);
  try {
    await c.connect();
    const r = await c.query<{ standby: boolean }>('select pg_is_in_recovery() as standby');
    return r.rows[0]?.standby === false;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Where the pool's connections go: the host found to be the primary, and how it is found again. */
export class PrimaryLocator {
  private current: HostPort | null;
  private probing: Promise<HostPort> | null = null;
  /** How many times the primary was looked for (a failover, or a start). */
  searches = 0;

  constructor(
    readonly hosts: HostPort[],
    private readonly probeTimeoutMs = 2000,
  ) {
    this.current = hosts.length === 1 ? hosts[0]! : null;
  }

  /** The last known primary, or the first read-write host in list order (probed once for all callers). */
  async primary(config: pg.ClientConfig): Promise<HostPort> {
    if (this.current) return this.current;
    this.probing ??= (async () => {
      this.searches++;
      for (const h of this.hosts) {
        if (await isPrimary(config, h, this.probeTimeoutMs)) return h;
      }
      throw unableToConnect(`no read-write PostgreSQL among ${this.hosts.map((h) => `${h.host}:${h.port}`).join(', ')}`);
    })().finally(() => {
      this.probing = null;
    });
    const found = await this.probing;
    this.current = found;
    return found;
  }

  /** Forget `host` as the primary (it refused a connection or is a standby now). */
  lost(host: HostPort): void {
    if (this.hosts.length > 1 && this.current === host) this.current = null;
  }
}

/** How long one connection attempt to one host may take. */
const CONNECT_TIMEOUT_MS = 5000;

type ConnectCallback = (err: Error | undefined, client?: pg.Client) => void;

/**
 * A pg Client class for the pool that connects to the locator's primary and checks, like libpq's
 * `target_session_attrs=read-write`, that the session can write.
 */
export function multiHostClient(locator: PrimaryLocator, opts: { readWrite: boolean }): typeof pg.Client {
  return class MultiHostClient extends pg.Client {
    private readonly base: pg.ClientConfig;

    constructor(config?: string | pg.ClientConfig) {
      const base: pg.ClientConfig = typeof config === 'string' ? { connectionString: config } : { ...config };
      // A host that does not answer (a crashed machine, a partition) counts as down after this long,
      // like libpq's connect_timeout: the pool's own wait for a free connection stays unbounded.
      super({ ...base, connectionTimeoutMillis: base.connectionTimeoutMillis || CONNECT_TIMEOUT_MS });
      this.base = base;
    }

    // @ts-expect-error: one implementation for pg's callback and promise overloads.
    override connect(callback?: ConnectCallback): Promise<pg.Client> | undefined {
      const self = this as unknown as pg.Client;
      const attempt = this.connectToPrimary().then(() => self);
      if (!callback) return attempt;
      attempt.then(
        () => callback(undefined, self),
        (err: Error) => callback(err),
      );
      return undefined;
    }

    private async connectToPrimary(): Promise<void> {
      const { user, database, password, ssl } = this.base;
      const target = await locator.primary({ user, database, password, ssl });
      const self = this as unknown as { host: string; port: number; connectionParameters: { host: string; port: number } };
      self.host = target.host;
      self.port = target.port;
      self.connectionParameters.host = target.host;
      self.connectionParameters.port = target.port;
      try {
        await super.connect();
      } catch (err) {
        locator.lost(target);
        throw err;
      }
      if (!opts.readWrite) return;
      let standby = true;
      try {
        standby = (await this.query<{ standby: boolean }>('select pg_is_in_recovery() as standby')).rows[0]?.standby !== false;
      } catch (err) {
        locator.lost(target);
        throw err;
      }
      if (standby) {
        locator.lost(target);
        await this.end().catch(() => undefined);
        throw unableToConnect(`PostgreSQL at ${target.host}:${target.port} is a standby (read-only); looking for the primary`);
      }
    }
  } as unknown as typeof pg.Client;
}
