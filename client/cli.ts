#!/usr/bin/env node
/**
 * The chat CLI: the client package's `chat` bin (compiled JavaScript), or `npm run cli -- <command>`
 * in a checkout.
 *
 * Every command takes --url (env CHAT_URL, default http://127.0.0.1:3000), --token (env
 * CHAT_TOKEN, else the stored login) and --json (one JSON object per line). Exit code 0 on
 * success; otherwise 1 with one line on stderr (2 for usage errors; 3 for `chat` when a line was
 * sent but not confirmed). docs/CLIENT.md describes it.
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import pc from 'picocolors';
import { chat } from './cli/chat.js';
import * as cmd from './cli/commands.js';
import { Context, DEFAULT_URL, type CommonOptions } from './cli/context.js';
import { demo } from './cli/demo.js';
import { download } from './cli/files.js';
import { CliError, describeError, oneLine } from './cli/errors.js';
import { notify } from './cli/notify.js';
import { packageVersion } from './cli/version.js';

const int =
  (what: string, min = 0) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`${what} must be an integer >= ${min}`);
    return n;
  };
const collect = (v: string, prev: string[]) => [...prev, ...v.split(',').map((s) => s.trim()).filter(Boolean)];

/** The options every command takes. */
function common(c: Command): Command {
  return c
    .addOption(new Option('--url <url>', 'chat server URL').env('CHAT_URL').default(DEFAULT_URL))
    .addOption(new Option('--token <token>', 'access token (default: the stored login)').env('CHAT_TOKEN'))
    .option('--json', 'machine-readable output: one JSON object per line');
}

let current: Context | null = null;
let currentUrl = DEFAULT_URL;

/** Wraps a command: builds its Context from the options, runs it, closes its clients. */
function run<A extends unknown[]>(fn: (ctx: Context, ...args: A) => Promise<void>) {
  return async (...args: unknown[]) => {
    const command = args.at(-1) as Command;
    const opts = command.opts<CommonOptions>();
    currentUrl = opts.url;
    const source = command.getOptionValueSource('token');
    const ctx = new Context(opts, source === 'cli' ? 'cli' : source === 'env' ? 'env' : null);
    current = ctx;
    try {
      await fn(ctx, ...(args.slice(0, -1) as A));
    } finally {
      await ctx.close();
    }
  };
}

export function buildProgram(): Command {
  const program = new Command('chat')
    .description('Terminal client for the tRPC chat server')
    .version(packageVersion(), '-V, --version', 'print the version')
    // Usage errors too are one line (commander adds "Did you mean ...?" on a line of its own).
    .configureOutput({ outputError: (str, write) => write(`${pc.red(oneLine(str))} (see --help)\n`) })
    // Before the commands are added, so that they inherit it: a usage error of a command (a bad
    // option or argument value) is thrown to `main` (exit 2) instead of exiting with 1.
    .exitOverride();

  common(program.command('login [username]'))
    .description('log in: dev login as <username>, or store a given --token (saved with mode 0600)')
    .option('--name <name>', 'display name (dev login)')
    .option('--tenant <tenant>', 'tenant (dev login)')
    .action(run((ctx, username: string | undefined, o: { name?: string; tenant?: string }) => cmd.login(ctx, username, o)));

  common(program.command('logout')).description('forget the stored login for --url').action(run((ctx) => cmd.logout(ctx)));

  common(program.command('whoami')).description('who the token says you are').action(run((ctx) => cmd.whoami(ctx)));

  common(program.command('rooms')).description('your rooms, newest activity first, with unread counts').action(run((ctx) => cmd.rooms(ctx)));

  common(program.command('create <name>'))
    .description('create a room (you become its owner)')
    .option('--member <userId>', 'add a member (repeatable, or comma-separated)', collect, [])
    .addOption(new Option('--kind <kind>', 'room kind').choices(['group', 'support', 'broadcast']).default('group'))
    .option('--key <key>', 'external key, e.g. order:123')
    .option('--topic <topic>', 'room topic')
    .action(
      run((ctx, name: string, o: { member: string[]; kind: 'group' | 'support' | 'broadcast'; key?: string; topic?: string }) =>
        cmd.create(ctx, name, o),
      ),
    );

  common(program.command('dm <user>')).description('open (or find) the direct room with a user').action(run((ctx, user: string) => cmd.dm(ctx, user)));

  common(program.command('members <room>'))
    .description('members of a room (by id, key or name) with their presence')
    .action(run((ctx, room: string) => cmd.members(ctx, room)));

  common(program.command('history <room>'))
    .description('messages of a room, oldest first (the newest page unless --before/--after)')
    .option('--limit <n>', 'how many (1-100, default 50)', int('--limit', 1))
    .option('--before <seq>', 'messages before this seq', int('--before'))
    .option('--after <seq>', 'messages after this seq', int('--after'))
    .action(run((ctx, room: string, o: { limit?: number; before?: number; after?: number }) => cmd.history(ctx, room, o)));

  common(program.command('send <room> [text...]'))
    .description('send a message, with files uploaded first (--file, with a progress bar)')
    .option('--file <path>', 'attach a file (repeatable, at most 10)', (v: string, prev: string[]) => [...prev, v], [])
    .option('--mime <type>', 'the files\' type (default: by extension; the server checks it against the bytes)')
    .action(run((ctx, room: string, text: string[], opts: { file: string[]; mime?: string }) => cmd.send(ctx, room, text, opts)));

  common(program.command('download <fileId>'))
    .description('save a file of a message (members of its room only)')
    .option('-o, --output <path>', 'where to save it (default: its name, in this folder, never overwriting)')
    .option('--force', 'overwrite an existing file of that name')
    .action(run((ctx, fileId: string, opts: { output?: string; force?: boolean }) => download(ctx, fileId, opts)));

  common(program.command('tail <room>'))
    .description('follow a room (Ctrl-C to stop); --json prints each event object as the subscription yields it')
    .option('--since <seq>', 'replay events after this seq first', int('--since'))
    .action(run((ctx, room: string, o: { since?: number }) => cmd.tail(ctx, room, o)));

  common(program.command('search <query...>'))
    .description('full-text search over your rooms')
    .option('--room <room>', 'only this room')
    .option('--limit <n>', 'how many hits (1-100)', int('--limit', 1))
    .action(run((ctx, query: string[], o: { room?: string; limit?: number }) => cmd.search(ctx, query, o)));

  // The seq is parsed by commander, so a bad one is its usage error (one line, exit 2).
  common(program.command('read <room>').argument('[seq]', 'the seq to mark read', int('seq')))
    .description("mark a room read up to seq (default: the room's last seq)")
    .action(run((ctx, room: string, seq: number | undefined) => cmd.read(ctx, room, seq)));

  common(program.command('meet <room>'))
    .description('start a video meeting in a room and print the join link and token')
    .option('--title <title>', 'meeting title')
    .action(run((ctx, room: string, o: { title?: string }) => cmd.meet(ctx, room, o)));

  common(program.command('notify [room] [level]'))
    .description('show your notification preferences, or set a room to all|mentions|none (pushes and e-mail while away)')
    .option('--mute-until <when>', 'mute the room until a date (2026-03-01T18:00Z) or for a while (30m, 8h, 2d)')
    .option('--email <mode>', 'e-mail digests: digest or off')
    .option('--push <state>', 'web push: on or off')
    .action(
      run((ctx, room: string | undefined, level: string | undefined, o: { muteUntil?: string; email?: string; push?: string }) => notify(ctx, room, level, o)),
    );

  common(program.command('chat <room>'))
    .description('interactive chat in a room (/help inside for commands)')
    .option('--history <n>', 'messages of scrollback (default 30)', int('--history', 1))
    .action(run((ctx, room: string, o: { history?: number }) => chat(ctx, room, o)));

  common(program.command('demo'))
    .description('two simulated users talk in a new room (needs dev login on the server)')
    .option('--messages <n>', 'how many messages before exiting', int('--messages', 1), 6)
    .option('--delay <ms>', 'typing pause before each message', int('--delay'), 600)
    .action(run((ctx, o: { messages: number; delay: number }) => demo(ctx, o)));

  return program;
}

async function flush(): Promise<void> {
  await new Promise<void>((r) => process.stdout.write('', () => r()));
  await new Promise<void>((r) => process.stderr.write('', () => r()));
}

export async function main(argv = process.argv): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    const e = err as { code?: unknown; exitCode?: unknown };
    // commander has already printed its own one-line usage error (or the help / version).
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      return e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help' ? 0 : 2;
    }
    const url = current?.url ?? currentUrl;
    process.stderr.write(`${pc.red('error:')} ${describeError(err, url)}\n`);
    // CHAT_DEBUG=1 shows the whole error (with its causes) for bug reports.
    if (process.env.CHAT_DEBUG) console.error(err);
    return err instanceof CliError ? err.exitCode : 1;
  }
}

// A closed pipe (`chat tail --json | head -1`) ends the process quietly.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
});

const code = await main();
await flush();
process.exit(code);
