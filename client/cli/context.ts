/**
 * What every command needs: the server URL, the token (flag, CHAT_TOKEN or the stored login), a
 * typed client, room lookup by id or name, and output in text or JSON lines.
 */
import { allRooms, createChatClient, type ChatClient, type ChatClientOptions, type Room } from '../index.js';
import { configPath, readConfig, saveLogin, type StoredLogin } from './config.js';
import { CliError } from './errors.js';
import { terminalSafeLink } from './terminal.js';
import { packageVersion } from './version.js';

export const DEFAULT_URL = 'http://127.0.0.1:3000';

/** Every client the CLI makes: what the server sends is cleaned of terminal controls on arrival. */
export function terminalClient(opts: ChatClientOptions): ChatClient {
  return createChatClient({
    client: { clientType: 'cli', clientVersion: packageVersion() },
    ...opts,
    links: [terminalSafeLink(), ...(opts.links ?? [])],
  });
}

export interface CommonOptions {
  url: string;
  token?: string;
  json?: boolean;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: string) => UUID_RE.test(s);

/** http(s)://host[:port][/prefix], without a trailing slash or `/trpc`; ws(s) URLs are accepted too. */
export function normalizeUrl(raw: string): string {
  const bad = () => new CliError(`invalid server URL "${raw}": expected http(s)://host[:port]`);
  let u: URL;
  try {
    u = new URL(raw.trim());
  } catch {
    throw bad();
  }
  const protocol = { 'http:': 'http:', 'https:': 'https:', 'ws:': 'http:', 'wss:': 'https:' }[u.protocol];
  if (!protocol || !u.hostname) throw bad();
  const path = u.pathname.replace(/\/+$/, '').replace(/\/trpc$/, '');
  return `${protocol}//${u.host}${path}`;
}

/** Refresh a dev-login token this long before it expires. */
const RENEW_BEFORE_MS = 5 * 60_000;

export class Output {
  constructor(readonly json: boolean) {}

  /** One result: a JSON line in --json mode, else the text. */
  result(value: unknown, text: string | (() => string)): void {
    if (this.json) this.jsonLine(value);
    else this.line(typeof text === 'function' ? text() : text);
  }

  jsonLine(value: unknown): void {
    process.stdout.write(`${JSON.stringify(value)}\n`);
  }

  line(text: string): void {
    process.stdout.write(`${text}\n`);
  }

  /** A note for people (stderr; silent in --json mode). */
  note(text: string): void {
    if (!this.json) process.stderr.write(`${text}\n`);
  }
}

export class Context {
  readonly url: string;
  readonly out: Output;
  private stored: StoredLogin | null | undefined;
  private clients: ChatClient[] = [];

  constructor(
    readonly opts: CommonOptions,
    /** Where the explicit token came from, if any (`cli` flag or `env` CHAT_TOKEN). */
    readonly tokenSource: 'cli' | 'env' | null,
  ) {
    this.url = normalizeUrl(opts.url);
    this.out = new Output(!!opts.json);
  }

  get json(): boolean {
    return this.out.json;
  }

  async storedLogin(): Promise<StoredLogin | null> {
    if (this.stored === undefined) this.stored = (await readConfig()).logins[this.url] ?? null;
    return this.stored;
  }

  /** The token to use: --token / CHAT_TOKEN, else the stored login (a dev login is renewed when it nears expiry). */
  async token(): Promise<string> {
    if (this.opts.token) return this.opts.token;
    const login = await this.storedLogin();
    if (!login) throw new CliError(`not logged in to ${this.url}: run \`chat login <username>\` or pass --token (or set CHAT_TOKEN)`);
    const expires = login.expiresAt ? Date.parse(login.expiresAt) : Number.POSITIVE_INFINITY;
    if (expires - Date.now() > RENEW_BEFORE_MS) return login.token;
    if (login.via === 'dev') {
      const anon = terminalClient({ url: this.url, lazy: true });
      try {
        const res = await anon.trpc.auth.devLogin.mutate({ username: login.user.id, name: login.user.name, tenant: login.user.tenant });
        const next: StoredLogin = { ...login, token: res.token, expiresAt: res.expiresAt.toISOString(), savedAt: new Date().toISOString() };
        await saveLogin(this.url, next);
        this.stored = next;
        return next.token;
      } catch {
        // Fall through: report the expiry below if the old token is no good any more.
      } finally {
        await anon.close();
      }
    }
    if (expires <= Date.now()) throw new CliError(`your login at ${this.url} expired: run \`chat login\` again (config: ${configPath()})`);
    return login.token;
  }

  /**
   * A client for this server. Lazy: the WebSocket opens only while a subscription needs it, so
   * one-shot commands speak plain HTTP. The token is re-read on every reconnect.
   */
  async client(opts: Pick<ChatClientOptions, 'onOpen' | 'onClose'> = {}): Promise<ChatClient> {
    await this.token(); // fail now, with a clear message, rather than on the first call
    const c = terminalClient({
      url: this.url,
      getToken: () => this.token(),
      lazy: true,
      ...(opts.onOpen ? { onOpen: opts.onOpen } : {}),
      ...(opts.onClose ? { onClose: opts.onClose } : {}),
    });
    this.clients.push(c);
    return c;
  }

  /** A room by id, or by key or name among my rooms. */
  async resolveRoom(client: ChatClient, arg: string): Promise<Room> {
    if (isUuid(arg)) {
      try {
        return await client.trpc.room.get.query({ roomId: arg });
      } catch (err) {
        if (isCode(err, 'NOT_FOUND')) throw new CliError(`room ${arg} not found (or you are not a member)`);
        throw err;
      }
    }
    const rooms = await allRooms(client);
    const byKey = rooms.filter((r) => r.key === arg);
    const byName = byKey.length > 0 ? byKey : rooms.filter((r) => r.name.toLowerCase() === arg.toLowerCase());
    if (byName.length === 0) throw new CliError(`room "${arg}" not found among your rooms (see \`chat rooms\`)`);
    if (byName.length > 1) {
      throw new CliError(`"${arg}" matches ${byName.length} rooms: use a room id (${byName.map((r) => r.id).join(', ')})`);
    }
    return client.trpc.room.get.query({ roomId: byName[0]!.id });
  }

  async close(): Promise<void> {
    const all = this.clients;
    this.clients = [];
    // Bounded: a socket that never got anywhere must not keep the CLI from exiting.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(all.map((c) => c.close())),
      new Promise((r) => (timer = setTimeout(r, 2_000))),
    ]);
    clearTimeout(timer);
  }
}

export function isCode(err: unknown, code: string): boolean {
  const data = (err as { data?: { code?: unknown } } | null)?.data;
  return !!data && data.code === code;
}
