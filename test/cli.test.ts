/**
 * The Node CLI (client/cli.ts), spawned as a real process against real servers (PostgreSQL +
 * Redis): stored login, every command's --json output, `tail --json` while someone sends, the
 * interactive `chat` driven through stdin (also across a server restart), the demo, and one-line
 * errors with a non-zero exit. Waits are on output, never sleeps.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempDisposable, readFile, stat } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readConfig, removeLogin, saveLogin, type StoredLogin } from '../client/cli/config.js';
import { createChatClient, type ChatClient } from '../client/index.js';
import { Collector, dispose, freePort, PROJECT_ROOT, Scope, testEnv, TERMINAL_CONTROL, tokenFor, uuid, within, type TestEnv, type TestServer } from './fixture.js';

let env: TestEnv;
let port: number;
let server: TestServer;
let noDevLogin: TestServer;
let home: AsyncDisposable & { path: string };
let dir: string;
let url: string;
/** The file's chat clients (the library itself, lazy). */
const clients = new Scope();
const procs = new Set<ChildProcess>();

beforeAll(async () => {
  env = await testEnv('cli');
  port = await freePort();
  home = await mkdtempDisposable(join(tmpdir(), 'chat-cli-test-'));
  dir = home.path;
  [server, noDevLogin] = await Promise.all([env.startServer({ port }), env.startServer({ devLogin: false })]);
  url = server.url;
});

afterAll(async () => {
  for (const p of procs) p.kill('SIGKILL');
  await dispose(home, env, clients);
});

function client(userId: string): ChatClient {
  return clients.use(createChatClient({ url, token: tokenFor(userId), lazy: true }));
}

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout lines parsed as JSON (fails the test if one is not JSON). */
  json<T = Record<string, unknown>>(): T[];
}

function cliEnv(user: string, env: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    CHAT_URL: url,
    CHAT_CONFIG: join(dir, `${user}.json`),
    NO_COLOR: '1',
    ...env,
  };
}

/** Spawns `node --import tsx client/cli.ts ...args` and tracks it for cleanup. */
function spawnCli(args: string[], user: string, env: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'client/cli.ts', ...args], { cwd: PROJECT_ROOT, env: cliEnv(user, env), stdio: ['pipe', 'pipe', 'pipe'] });
  procs.add(child);
  child.once('exit', () => procs.delete(child));
  return child;
}

/** Runs a command to completion (`input`: what its stdin reads before it ends). */
async function cli(args: string[], user = 'alice', env: Record<string, string> = {}, input = ''): Promise<CliRun> {
  const child = spawnCli(args, user, env);
  child.stdin!.end(input);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  // 'close', not 'exit': output can still be in the pipes when the process has exited.
  const code = await new Promise<number | null>((res) => child.once('close', (c) => res(c)));
  return {
    code,
    stdout,
    stderr,
    json<T>() {
      return stdout
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => {
          try {
            return JSON.parse(l) as T;
          } catch {
            throw new Error(`not a JSON line: ${l}\nstderr: ${stderr}`);
          }
        });
    },
  };
}

/** A long-running CLI (tail, chat): its output lines as they come, stdin to drive it. */
class LiveCli {
  readonly out = new Collector<string>();
  readonly err = new Collector<string>();
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (l) => this.out.push(l));
    createInterface({ input: child.stderr! }).on('line', (l) => this.err.push(l));
    this.exited = new Promise((res) => child.once('exit', (c) => res(c)));
  }
  write(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }
  /** Waits for a line matching `pred` and returns it. */
  async line(pred: (l: string) => boolean, what: string, timeoutMs = 15_000): Promise<string> {
    try {
      const lines = await this.out.until((ls) => ls.some(pred), what, timeoutMs);
      return lines.find(pred)!;
    } catch (err) {
      throw new Error(`${(err as Error).message}\n--- stdout ---\n${this.out.items.join('\n')}\n--- stderr ---\n${this.err.items.join('\n')}`);
    }
  }
  /**
   * For live-only signals (typing), which a subscription that is not attached yet never sees:
   * repeats `act` until a line matching `pred` shows up (each try waits on the output).
   */
  async lineAfter(act: () => Promise<unknown>, pred: (l: string) => boolean, what: string, tries = 10): Promise<string> {
    for (let i = 1; ; i++) {
      await act();
      try {
        return await this.line(pred, what, i === tries ? 15_000 : 1_000);
      } catch (err) {
        if (i === tries) throw err;
      }
    }
  }

  count(pred: (l: string) => boolean): number {
    return this.out.items.filter(pred).length;
  }
}

/** Logs a user in through the CLI (dev login) into their own config file. */
async function login(user: string): Promise<void> {
  const r = await cli(['login', user], user);
  expect(r.code, r.stderr).toBe(0);
}

describe('chat CLI', () => {
  it('login stores the token in a 0600 file; rooms/create/send/history/search/read speak JSON lines', async () => {
    const [r] = await Promise.all([cli(['login', 'alice', '--json']), login('bob')]);
    expect(r.code, r.stderr).toBe(0);
    const [out] = r.json<{ user: { id: string }; url: string; config: string }>();
    expect(out).toMatchObject({ user: { id: 'alice' }, url, config: join(dir, 'alice.json') });
    const file = join(dir, 'alice.json');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(await readFile(file, 'utf8')) as { logins: Record<string, { token: string; via: string }> };
    const token = stored.logins[url]!.token;
    expect(stored.logins[url]!.via).toBe('dev');
    // The stored token is a real one.
    const c = clients.use(createChatClient({ url, token, lazy: true }));
    expect((await c.trpc.auth.me.query()).id).toBe('alice');

    // Only service and admin tokens link rooms to keys: alice's admin token (same user) creates it.
    const created = await cli(['create', 'cli-room', '--member', 'bob', '--key', 'order:42', '--json', '--token', tokenFor('alice', { roles: ['admin'] })]);
    expect(created.code, created.stderr).toBe(0);
    const [room] = created.json<{ id: string; name: string; kind: string; key: string }>();
    expect(room).toMatchObject({ name: 'cli-room', kind: 'group', key: 'order:42' });

    const [sent1, sent2] = await Promise.all([
      cli(['send', room!.id, 'hello from the cli', '--json']),
      cli(['send', 'cli-room', 'second', 'line', '--json'], 'bob'), // by name, words joined
    ]);
    expect(sent1.code, sent1.stderr).toBe(0);
    expect(sent2.code, sent2.stderr).toBe(0);
    const m1 = sent1.json<{ seq: number; body: string; senderId: string }>()[0]!;
    const m2 = sent2.json<{ seq: number; body: string; senderId: string }>()[0]!;
    expect(m1).toMatchObject({ body: 'hello from the cli', senderId: 'alice' });
    expect(m2).toMatchObject({ body: 'second line', senderId: 'bob' });

    const [history, search, rooms, members, dm, text] = await Promise.all([
      cli(['history', 'order:42', '--limit', '10', '--json']),
      cli(['search', 'hello', '--room', room!.id, '--json']),
      cli(['rooms', '--json'], 'bob'),
      cli(['members', room!.id, '--json']),
      cli(['dm', 'bob', '--json']),
      // Text mode too (the compiled bin of the packed client: test/client.package.test.ts).
      cli(['history', room!.id], 'alice'),
    ]);
    for (const r2 of [history, search, rooms, members, dm, text]) expect(r2.code, r2.stderr).toBe(0);
    expect(dm.json()).toEqual([expect.objectContaining({ kind: 'direct' })]);
    const msgs = history.json<{ seq: number; body: string | null; kind: string }>().filter((m) => m.kind !== 'system');
    expect(msgs.map((m) => m.body)).toEqual(expect.arrayContaining(['hello from the cli', 'second line']));
    const seqs = history.json<{ seq: number }>().map((m) => m.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(search.json<{ message: { seq: number }; roomId: string }>()).toEqual([expect.objectContaining({ roomId: room!.id, message: expect.objectContaining({ seq: m1.seq }) })]);
    const bobsRooms = rooms.json<{ id: string; unreadCount: number }>();
    expect(bobsRooms.find((x) => x.id === room!.id)?.unreadCount).toBe(1);
    expect(members.json<{ userId: string; role: string }>().map((m) => [m.userId, m.role]).sort()).toEqual([
      ['alice', 'owner'],
      ['bob', 'member'],
    ]);

    // read: default is the room's last seq; an explicit seq too.
    const read = await cli(['read', room!.id, '--json'], 'bob');
    expect(read.code, read.stderr).toBe(0);
    expect(read.json()[0]).toEqual({ roomId: room!.id, lastReadSeq: Math.max(m1.seq, m2.seq) });
    const unread = await client('bob').trpc.receipt.unread.query();
    expect(unread.find((u) => u.roomId === room!.id)?.unread ?? 0).toBe(0);

    expect(text.stdout).toMatch(new RegExp(`#${m1.seq} alice: hello from the cli`));
    expect(text.stdout).toMatch(new RegExp(`#${m2.seq} bob: second line`));
  });

  it('logins saved and removed at the same time (two commands, a renewal) all keep the others\' entries', async () => {
    const path = join(dir, 'shared', 'config.json');
    const entry = (id: string): StoredLogin => ({ token: `t-${id}`, user: { id, name: id, tenant: 'default' }, expiresAt: null, via: 'dev', savedAt: new Date().toISOString() });
    const urls = ['http://a.example', 'http://b.example', 'http://c.example', 'http://d.example'];
    const saved = await Promise.allSettled(urls.map((u) => saveLogin(u, entry(u), path)));
    expect(Object.keys((await readConfig(path)).logins).sort()).toEqual(urls);
    expect(saved.filter((r) => r.status === 'rejected')).toEqual([]);
    await Promise.all([removeLogin(urls[0]!, path), saveLogin('http://e.example', entry('e'), path), saveLogin(urls[1]!, entry('b2'), path)]);
    const after = (await readConfig(path)).logins;
    expect(Object.keys(after).sort()).toEqual([...urls.slice(1), 'http://e.example']);
    expect(after[urls[1]!]!.user.id).toBe('b2');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('tail --json prints one event object per line while another client sends', async () => {
    await login('carol');
    const dave = client('dave');
    const room = await dave.trpc.room.create.mutate({ kind: 'group', name: 'tail-room', memberIds: ['carol'] });
    const tail = new LiveCli(spawnCli(['tail', room.id, '--json'], 'carol'));
    const parse = (l: string) => JSON.parse(l) as { type: string; seq?: number; message?: { body: string } };
    const ready = parse(await tail.line((l) => parse(l).type === 'ready', 'ready'));
    expect(ready.seq).toBe(room.lastSeq);

    const first = await dave.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'tail one' });
    await dave.trpc.chat.react.mutate({ messageId: first.id, emoji: '🎉' });
    await dave.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'tail two' });
    await tail.line((l) => parse(l).message?.body === 'tail two', 'the second message');
    // Presence is live and unordered with the room's log: carol's own `online`, published as her
    // connection is admitted, may come before or after `ready`. The log's events are exactly these.
    const events = tail.out.items.map(parse).filter((e) => e.type !== 'presence');
    expect(events.map((e) => e.type)).toEqual(['ready', 'message.new', 'reaction.added', 'message.new']);
    expect(events[1]).toMatchObject({ type: 'message.new', roomId: room.id, seq: first.seq, message: { body: 'tail one', senderId: 'dave' } });
    expect(events[2]).toMatchObject({ type: 'reaction.added', messageId: first.id, userId: 'dave', emoji: '🎉' });

    tail.child.kill('SIGINT');
    expect(await tail.exited).toBe(0);
  });

  it("tail shows other members' presence, not the user's own", async () => {
    await login('gina');
    const room = await client('hal').trpc.room.create.mutate({ kind: 'group', name: 'presence-room', memberIds: ['gina'] });
    // Presence is of connected users: hal and gina each hold a subscription (a WebSocket).
    const hal = client('hal');
    const gina = client('gina');
    for (const c of [hal, gina]) {
      await new Promise<void>((resolve, reject) => {
        c.subscribeRoom(room.id, { onEvent: (e) => e.type === 'ready' && resolve(), onError: reject });
      });
    }
    const tail = new LiveCli(spawnCli(['tail', room.id], 'gina'));
    // Presence is live only: each try sets gina's status (her own event: never shown), then hal's
    // (shown), in this order through the same node's publisher, until tail prints hal's.
    await tail.lineAfter(
      async () => {
        await gina.trpc.presence.set.mutate({ status: 'away' });
        await hal.trpc.presence.set.mutate({ status: 'dnd' });
      },
      (l) => l.includes('hal is dnd'),
      "hal's presence",
    );
    expect(tail.count((l) => l.includes('gina is'))).toBe(0);
    tail.child.kill('SIGINT');
    expect(await tail.exited).toBe(0);
  });

  it('chat: scrollback, sending with Enter, a message from another user, typing, /react, /edit, /who, /quit', async () => {
    await login('erin');
    const frank = client('frank');
    const room = await frank.trpc.room.create.mutate({ kind: 'group', name: 'chat-room', memberIds: ['erin'] });
    const old = await frank.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'before you came' });

    const chat = new LiveCli(spawnCli(['chat', 'chat-room'], 'erin'));
    await chat.line((l) => l.includes(`#${old.seq} frank: before you came`), 'scrollback');

    chat.write('hi frank, erin here');
    const mine = await chat.line((l) => / erin: hi frank, erin here$/.test(l), 'my own message');
    const mySeq = Number(/#(\d+)/.exec(mine)![1]);

    // Toggled so that the server forwards each try (it coalesces unchanged refreshes).
    const frankTypes = async () => {
      await frank.trpc.chat.typing.mutate({ roomId: room.id, typing: false });
      await frank.trpc.chat.typing.mutate({ roomId: room.id, typing: true });
    };
    await chat.lineAfter(frankTypes, (l) => l.includes('frank is typing'), 'typing shown');
    const reply = await frank.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'welcome erin' });
    await chat.line((l) => l.includes(`#${reply.seq} frank: welcome erin`), "frank's message");

    chat.write(`/react ${reply.seq} 👍`);
    await chat.line((l) => l.includes(`erin reacted 👍 to #${reply.seq}`), 'the reaction');
    chat.write(`/edit ${mySeq} hi frank (edited)`);
    await chat.line((l) => l.includes(`#${mySeq} ✎ edited erin: hi frank (edited)`), 'the edit');
    chat.write('/who');
    await chat.line((l) => /^\s+\S+ frank owner/.test(l), 'the member list');
    await chat.line((l) => /^\s+\S+ erin member/.test(l), 'the member list');
    chat.write('/react 99999 👍');
    await chat.line((l) => l.includes('no message #99999'), 'an error for an unknown seq');

    // What the server has: the reaction by erin, the edit, each message once.
    const h = await frank.trpc.chat.history.query({ roomId: room.id });
    expect(h.messages.find((m) => m.id === reply.id)!.reactions).toEqual([{ emoji: '👍', count: 1, me: false }]);
    expect(h.messages.filter((m) => m.senderId === 'erin').map((m) => m.body)).toEqual(['hi frank (edited)']);
    expect(chat.count((l) => l.includes('frank: welcome erin'))).toBe(1);
    expect(chat.count((l) => / erin: hi frank, erin here$/.test(l))).toBe(1);

    chat.write('/quit');
    expect(await chat.exited).toBe(0);
  });

  it('chat in a terminal: the prompt shows who is typing, and stops showing it when the indicator runs out without a stop', async () => {
    // A server whose typing TTL (60 s) outlives the client's (10 s): the stop never comes in
    // time, as when the typing user's node dies or the stop is lost across a reconnect.
    await using slow = await env.startServer({ typingTtlMs: 60_000 });
    const jack = clients.use(createChatClient({ url: slow.url, token: tokenFor('jack'), lazy: true }));
    const room = await jack.trpc.room.create.mutate({ kind: 'group', name: 'tty-room', memberIds: ['ivy'] });
    // `script` gives the CLI a terminal (stdin and stdout are TTYs); its output is the raw screen.
    const cmd = [process.execPath, '--import', 'tsx', 'client/cli.ts', 'chat', room.id].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(' ');
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { cwd: PROJECT_ROOT, env: { ...cliEnv('ivy', { CHAT_URL: slow.url, CHAT_TOKEN: tokenFor('ivy') }), TERM: 'xterm' }, stdio: ['pipe', 'pipe', 'pipe'] });
    procs.add(child);
    child.once('exit', () => procs.delete(child));
    const screen = new Collector<string>();
    child.stdout!.on('data', (d: Buffer) => screen.push(d.toString()));
    const text = () => screen.items.join('');
    // Drawn again with the prompt: after a cursor move or a clear, not after "is typing… ".
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the terminal's escape sequences are the point
    const bare = /(\r|\n|\x1b\[[0-9;]*[A-Za-z])tty-room> /;

    await screen.until(() => bare.test(text()), 'the first prompt', 15_000);
    for (let i = 1; !text().includes('jack is typing'); i++) {
      // Live only: repeated until the chat's subscription is up (each try waits on the screen).
      await jack.trpc.chat.typing.mutate({ roomId: room.id, typing: false });
      await jack.trpc.chat.typing.mutate({ roomId: room.id, typing: true });
      await screen.until(() => text().includes('jack is typing'), 'typing in the prompt', i === 10 ? 15_000 : 1_000).catch((err) => {
        if (i === 10) throw err;
      });
    }
    expect(text()).toMatch(/jack is typing… tty-room> /);
    // No event comes now: the prompt is drawn again without it when the client's TTL runs out.
    await screen.until(() => bare.test(text().slice(text().lastIndexOf('jack is typing'))), 'the prompt without the indicator', 20_000);
    child.stdin!.write('/quit\r');
    expect(await new Promise((res) => child.once('exit', res))).toBe(0);
  });

  it('chat survives a server restart: reconnects, resumes, sends what was typed meanwhile, no line lost or repeated', async () => {
    await login('gina');
    const hugo = client('hugo');
    const room = await hugo.trpc.room.create.mutate({ kind: 'group', name: 'restart-room', memberIds: ['gina'] });
    const chat = new LiveCli(spawnCli(['chat', room.id], 'gina'));
    // Typing is live-only: seeing it proves the chat's subscription is up.
    const hugoTypes = async () => {
      await hugo.trpc.chat.typing.mutate({ roomId: room.id, typing: false });
      await hugo.trpc.chat.typing.mutate({ roomId: room.id, typing: true });
    };
    await chat.lineAfter(hugoTypes, (l) => l.includes('hugo is typing'), 'the live subscription');
    const before = await hugo.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'before the restart' });
    await chat.line((l) => l.includes('hugo: before the restart'), 'a live message');

    await server.close();
    await chat.line((l) => l.includes('connection lost'), 'the lost connection');
    chat.write('typed while the server was down');
    await chat.line((l) => l.includes('server unreachable'), 'the queued line');
    server = await env.startServer({ port });
    const during = await hugo.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'right after the restart' });

    await chat.line((l) => l.includes('gina: typed while the server was down'), 'the queued line sent', 20_000);
    await chat.line((l) => l.includes(`#${during.seq} hugo: right after the restart`), 'the message sent before the resume', 20_000);
    await chat.line((l) => l.includes('reconnected'), 'reconnected');
    const after = await hugo.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'after the restart' });
    await chat.line((l) => l.includes(`#${after.seq} hugo: after the restart`), 'a live message after the restart');

    for (const body of ['before the restart', 'right after the restart', 'after the restart']) {
      expect(chat.count((l) => l.endsWith(`hugo: ${body}`))).toBe(1);
    }
    expect(chat.count((l) => l.endsWith('gina: typed while the server was down'))).toBe(1);
    const h = await hugo.trpc.chat.history.query({ roomId: room.id });
    expect(h.messages.filter((m) => m.senderId === 'gina').map((m) => m.body)).toEqual(['typed while the server was down']);
    expect(before.seq).toBeLessThan(during.seq);

    chat.child.stdin!.end(); // Ctrl-D
    expect(await chat.exited).toBe(0);
  });

  it('chat with piped input: prints the scrollback, then the piped lines as the room shows them, before it exits', async () => {
    await login('pia');
    const paul = client('paul');
    const room = await paul.trpc.room.create.mutate({ kind: 'group', name: 'piped-room', memberIds: ['pia'] });
    const old = await paul.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'earlier words' });

    // `printf 'first line\nsecond line\n' | chat <room>`: stdin ends at once.
    const r = await cli(['chat', room.id], 'pia', {}, 'first line\nsecond line\n');
    expect(r.code, r.stderr).toBe(0);
    const mine = (await paul.trpc.chat.history.query({ roomId: room.id })).messages.filter((m) => m.senderId === 'pia');
    expect(mine.map((m) => m.body)).toEqual(['first line', 'second line']);
    const lines = r.stdout.split('\n');
    const at = (text: string) => lines.findIndex((l) => l.includes(text));
    expect(at(`#${old.seq} paul: earlier words`), r.stdout).toBeGreaterThanOrEqual(0);
    expect(at(`#${mine[0]!.seq} pia: first line`), r.stdout).toBeGreaterThan(at(`#${old.seq} paul: earlier words`));
    expect(at(`#${mine[1]!.seq} pia: second line`), r.stdout).toBeGreaterThan(at(`#${mine[0]!.seq} pia: first line`));
    for (const body of ['earlier words', 'first line', 'second line']) expect(lines.filter((l) => l.endsWith(`: ${body}`)), r.stdout).toHaveLength(1);

    // --json: the scrollback as `history` lines, each piped line as its `message.new`.
    const j = await cli(['chat', room.id, '--json', '--history', '1'], 'pia', {}, 'third line\n');
    expect(j.code, j.stderr).toBe(0);
    const events = j.json<{ type: string; message?: { body: string } }>().filter((e) => e.type === 'history' || e.type === 'message.new');
    expect(events.map((e) => [e.type, e.message?.body])).toEqual([
      ['history', 'second line'],
      ['message.new', 'third line'],
    ]);
  });

  it('chat with piped input exits 1 when a line was refused, naming it; the other lines are sent', async () => {
    await login('pia');
    const paul = client('paul');
    const room = await paul.trpc.room.create.mutate({ kind: 'group', name: 'refused-room', memberIds: ['pia'] });
    // `printf 'deploy done\n<a line over the 4000 characters>\n' | chat <room> || alert`
    const tooLong = 'y'.repeat(4001);
    const r = await cli(['chat', room.id], 'pia', {}, `deploy done\n${tooLong}\nall good\n`);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(/not sent: "y{59}…" \(invalid input: .*body is at most 4000 characters\)/);
    expect(r.stderr.trimEnd().split('\n'), r.stderr).toEqual(['error: 1 of 3 lines not sent']);
    const mine = (await paul.trpc.chat.history.query({ roomId: room.id })).messages.filter((m) => m.senderId === 'pia');
    expect(mine.map((m) => m.body)).toEqual(['deploy done', 'all good']);

    // --json: stdout stays JSON lines; the exit code and the one error line are the same.
    const j = await cli(['chat', room.id, '--json'], 'pia', {}, `${tooLong}\n`);
    expect(j.code, j.stderr).toBe(1);
    expect(j.json().filter((e) => e.type === 'message.new')).toEqual([]);
    expect(j.stderr).toContain('error: 1 of 1 line not sent');
  });

  it('chat: Ctrl-C while a send has no answer yet exits 3, the line reported not confirmed', async () => {
    const heldPort = await freePort();
    const held = await env.startServer({ port: heldPort });
    const room = await clients
      .use(createChatClient({ url: held.url, token: tokenFor('paco'), lazy: true }))
      .trpc.room.create.mutate({ kind: 'group', name: 'unconfirmed-room', memberIds: ['rosa'] });
    expect((await cli(['login', 'rosa'], 'rosa', { CHAT_URL: held.url })).code).toBe(0);
    const chat = new LiveCli(spawnCli(['chat', room.id], 'rosa', { CHAT_URL: held.url }));
    await chat.line((l) => l.includes('online'), 'the room shown');

    // The server goes; its port takes a send and never answers it (other requests are dropped).
    await held.close();
    const sends = new Collector<string>();
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.once('data', (d: Buffer) => {
        const request = d.toString('latin1').split('\r\n')[0]!;
        if (request.startsWith('POST ') && request.includes('chat.send')) sends.push(request);
        else socket.destroy();
      });
    });
    await new Promise<void>((resolve) => silent.listen(heldPort, '127.0.0.1', resolve));
    try {
      chat.write('sent into the silence');
      await sends.until((s) => s.length === 1, 'the send on its way');
      chat.child.kill('SIGINT');
      expect(await within(chat.exited, 15_000, 'the CLI to exit')).toBe(3);
      await chat.line((l) => l.includes('not confirmed') && l.includes('sent into the silence'), 'the line reported not confirmed');
      expect(chat.err.items).toContain('error: 1 of 1 line not confirmed: it may have been sent');
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });

  it('chat: Ctrl-C while a line waits to be retried (server down) exits without waiting for the retry; the line is reported not sent', async () => {
    const downPort = await freePort();
    const down = await env.startServer({ port: downPort });
    const room = await clients
      .use(createChatClient({ url: down.url, token: tokenFor('paco'), lazy: true }))
      .trpc.room.create.mutate({ kind: 'group', name: 'sigint-room', memberIds: ['rosa'] });
    expect((await cli(['login', 'rosa'], 'rosa', { CHAT_URL: down.url })).code).toBe(0);
    // CHAT_DEBUG=1: a line on stderr each time a send fails and waits to be retried.
    const chat = new LiveCli(spawnCli(['chat', room.id], 'rosa', { CHAT_URL: down.url, CHAT_DEBUG: '1' }));
    await chat.line((l) => l.includes('online'), 'the room shown');

    // The server goes; its port drops every connection, counting the sends that reach it.
    await down.close();
    const sends = new Collector<string>();
    const gone = createServer((socket) => {
      socket.on('error', () => undefined);
      socket.once('data', (d: Buffer) => {
        const request = d.toString('latin1').split('\r\n')[0]!;
        if (request.startsWith('POST ') && request.includes('chat.send')) sends.push(request);
        socket.destroy();
      });
    });
    await new Promise<void>((resolve) => gone.listen(downPort, '127.0.0.1', resolve));
    try {
      chat.write('typed while the server is down');
      await chat.line((l) => l.includes('server unreachable'), 'the queued line');
      // Three failed tries, the CLI now waiting (0.5 to 1 s) before the fourth.
      const retries = () => chat.err.items.filter((l) => l.includes('failed: retry in')).length;
      await chat.err.until(() => retries() >= 3, 'three failed tries of the send', 30_000);
      const tries = sends.items.length;
      expect(tries).toBe(retries());
      chat.child.kill('SIGINT');
      // Exit 1: a line of the run was not sent.
      expect(await within(chat.exited, 15_000, 'the CLI to exit')).toBe(1);
      // Out at once: no try after Ctrl-C (the old behaviour waited for the back-off and tried again).
      expect(sends.items.length).toBe(tries);
      await chat.line((l) => l.includes('not sent') && l.includes('typed while the server is down'), 'the line reported not sent');
      await expect(stat(join(dir, 'rosa.json.lock'))).rejects.toMatchObject({ code: 'ENOENT' });
    } finally {
      await new Promise<void>((resolve) => gone.close(() => resolve()));
    }
  });

  it('notify: shows the preferences, sets a room level with --mute-until, turns e-mail off', async () => {
    await login('nora');
    const room = await client('nora').trpc.room.create.mutate({ kind: 'group', name: 'notify-room' });
    const shown = await cli(['notify'], 'nora');
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain('push: on, e-mail: digest, quiet hours: none');
    const set = await cli(['notify', 'notify-room', 'none', '--mute-until', '2h', '--json'], 'nora');
    expect(set.code, set.stderr).toBe(0);
    const [res] = set.json<{ roomId: string; level: string; muteUntil: string }>();
    expect(res).toMatchObject({ roomId: room.id, level: 'none' });
    expect(new Date(res!.muteUntil).getTime()).toBeGreaterThan(Date.now() + 3600_000);
    const off = await cli(['notify', '--email', 'off'], 'nora');
    expect(off.code, off.stderr).toBe(0);
    expect(off.stdout).toContain('e-mail: off');
    expect(off.stdout).toMatch(/notify-room: none, muted until/);
    const bad = await cli(['notify', 'notify-room', 'loud'], 'nora');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('give a level: chat notify <room> all|mentions|none');
  });

  it('demo: two simulated users talk, then it exits 0', async () => {
    const r = await cli(['demo', '--messages', '4', '--delay', '0']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('demo-alice: Hi Bob!');
    expect(r.stdout).toContain('demo-bob: Hey Alice');
    expect(r.stdout).toMatch(/demo done: 4 messages, each received once and in order by both users/);
  });

  it('prints nothing of another user\'s terminal control sequences (history text and JSON, rooms)', async () => {
    await login('erin');
    const frank = client('frank');
    const room = await frank.trpc.room.create.mutate({ kind: 'group', name: 'ctl-room', memberIds: ['erin'] });
    const hostile = 'a\u001b[2J\u001b[H\u001b]8;;https://evil.example\u001b\\b\u001b]0;title\u0007c\u009b6nd\u202ee\u2066f\rg\u0007h\ni';
    await frank.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: hostile });
    const [text, json, rooms] = await Promise.all([
      cli(['history', room.id], 'erin'),
      cli(['history', room.id, '--json'], 'erin'),
      cli(['rooms'], 'erin'),
    ]);
    for (const r of [text, json, rooms]) {
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).not.toMatch(TERMINAL_CONTROL);
    }
    // The body's own second line is indented under its head: it cannot pass for a line of its own.
    expect(text.stdout).toMatch(/ frank: abcdefgh\n {4}i\n/);
    expect(json.json<{ body: string | null }>().map((m) => m.body)).toContain('abcdefgh\ni');
    expect(rooms.stdout).toContain('frank: abcdefgh i');
  });

  it("no line break another user chose starts a line of its own: a link's name, a topic, a system message", async () => {
    await login('pia');
    const quin = client('quin');
    const room = await quin.trpc.room.create.mutate({ kind: 'group', name: 'spoof-room', memberIds: ['pia'] });
    const fake = (n: number) => `\n12:00 #${n} ceo: wire the money`;
    await quin.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'see link', attachments: [{ url: 'https://x.example/a', name: `doc${fake(91)}` }] });
    const erp = clients.use(createChatClient({ url, token: tokenFor('erp-spoof', { roles: ['service'] }), lazy: true }));
    await erp.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `synced${fake(92)}`, kind: 'system' });
    await quin.trpc.room.update.mutate({ roomId: room.id, topic: `plans${fake(93)}` });
    const last = await quin.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'the end' });
    // `tail --since 0` prints the messages and the topic change (an event only, not in the history).
    const tail = new LiveCli(spawnCli(['tail', room.id, '--since', '0'], 'pia'));
    await tail.line((l) => l.includes(`#${last.seq} quin: the end`), 'the last message');
    tail.child.kill('SIGINT');
    expect(await tail.exited).toBe(0);
    expect(tail.count((l) => l.includes('wire the money'))).toBe(3);
    expect(tail.out.items.filter((l) => /^\d\d:\d\d #9\d ceo:/.test(l)), tail.out.items.join('\n')).toEqual([]);
  });

  it('prints a card as a few lines: title, label: value per field, links; without control sequences', async () => {
    await login('gwen');
    const erp = clients.use(createChatClient({ url, token: tokenFor('erp-cli', { roles: ['service'] }), lazy: true }));
    const room = await client('gwen').trpc.room.create.mutate({ kind: 'group', name: 'card-room' });
    await erp.trpc.chat.send.mutate({
      roomId: room.id,
      clientId: uuid(),
      body: 'Order 4711 shipped',
      kind: 'card',
      card: {
        title: 'Order 4711\u001b[2J',
        fields: [
          { label: 'Status', value: 'shipped' },
          { label: 'Carrier', value: 'DHL\nExpress' },
        ],
        links: [{ label: 'Tracking', url: 'https://tracking.example.com/4711' }],
      },
    });
    const text = await cli(['history', room.id], 'gwen');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).not.toMatch(TERMINAL_CONTROL);
    expect(text.stdout).toMatch(/ erp-cli: Order 4711\n {4}Status: shipped\n {4}Carrier: DHL Express\n {4}↗ Tracking: https:\/\/tracking\.example\.com\/4711\n/);
  });

  it('errors: one line on stderr and a non-zero exit for a bad URL, a refused login, an unknown room, no video', async () => {
    const deadPort = await freePort();
    const token = tokenFor('ivan');
    const runs = await Promise.all([
      cli(['rooms', '--url', `http://127.0.0.1:${deadPort}`, '--token', token]),
      cli(['rooms', '--url', 'not a url', '--token', token]),
      cli(['login', 'ivan', '--url', noDevLogin.url], 'ivan'),
      cli(['login', '--token', 'not-a-token'], 'ivan'),
      cli(['history', uuid(), '--token', token]),
      cli(['send', 'no-such-room', 'hi', '--token', token]),
      cli(['meet', 'no-such-room', '--token', token]),
      cli(['rooms'], 'nobody'),
    ]);
    const expected = [
      `cannot reach the chat server at http://127.0.0.1:${deadPort}: connection refused`,
      'invalid server URL "not a url"',
      'login refused by',
      'login refused by',
      'not found (or you are not a member)',
      'room "no-such-room" not found among your rooms',
      'room "no-such-room" not found',
      `not logged in to ${url}`,
    ];
    runs.forEach((r, i) => {
      expect(r.code, `${expected[i]}: ${r.stderr}`).not.toBe(0);
      expect(r.stderr.trimEnd().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toContain(expected[i]);
      expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    });
    expect(runs[2]!.stderr).toContain('dev login is disabled');

    // meet in a real room: this server has no video provider configured.
    const ivan = client('ivan');
    const room = await ivan.trpc.room.create.mutate({ kind: 'group', name: 'meet-room' });
    const meet = await cli(['meet', room.id, '--token', token]);
    expect(meet.code).not.toBe(0);
    expect(meet.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(meet.stderr).toMatch(/video is not configured/);

    // A message over the server's request size: refused before it is read (413), told as such.
    const huge = await cli(['send', room.id, 'x'.repeat(70_000), '--token', token]);
    expect(huge.code).toBe(1);
    expect(huge.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(huge.stderr).toContain("too large for the server (a message's text is at most 4000 characters; send a file instead)");
  });

  it("usage errors: one line on stderr and exit 2, for a command's bad argument or option value as for an unknown command", async () => {
    const token = tokenFor('ivan');
    const runs = await Promise.all([
      cli(['read', 'some-room', 'abc', '--token', token]),
      cli(['search', 'x', '--limit', 'abc', '--token', token]),
      cli(['rooms', '--bogus', '--token', token]),
      cli(['no-such-command']),
    ]);
    const expected = ["value 'abc' is invalid for argument 'seq'", "'--limit <n>' argument 'abc' is invalid", "unknown option '--bogus'", "unknown command 'no-such-command'"];
    runs.forEach((r, i) => {
      expect(r.code, `${expected[i]}: ${r.stderr}`).toBe(2);
      expect(r.stderr.trimEnd().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toContain(expected[i]);
    });
  });
});
