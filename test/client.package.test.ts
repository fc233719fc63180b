/**
 * The client package seen from outside, as a frontend in another repository and a user with the
 * CLI on PATH see it: `npm run pack:client` writes one tarball; a throw-away project (its own
 * package.json: the tarball, typescript and the declared peers only) type-checks a program under
 * `strict` (NodeNext, and bundler resolution as Vite uses), a misspelled `chat.send` field is a
 * type error, the `/react` entry type-checks, and the program runs in Node against a live server:
 * send, receive through `chat.events`, resume. Then `npm i -g <tarball>` (into a private prefix)
 * gives a `chat` that runs compiled JavaScript: --version, --help, login, tail, with another
 * user's terminal control sequences stripped.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempDisposable, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFor, Collector, dispose, PROJECT_ROOT, Scope, testEnv, TERMINAL_CONTROL, tokenFor, uuid, type TestEnv, type TestServer } from './fixture.js';

const run = promisify(execFile);

let env: TestEnv;
let server: TestServer;
let home: AsyncDisposable & { path: string };
let tarball: string;
let app: string;
const clients = new Scope();
const procs = new Set<ChildProcess>();

const rootPkg = JSON.parse(await readFile(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
const clientPkg = JSON.parse(await readFile(join(PROJECT_ROOT, 'client', 'package.json'), 'utf8')) as {
  name: string;
  version: string;
  dependencies: Record<string, string>;
  peerDependencies: Record<string, string>;
};

/** npm with the registry settings of this machine, quiet, and never prompting. */
async function npm(args: string[], cwd: string): Promise<string> {
  const { stdout } = await run('npm', [...args, '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], {
    cwd,
    env: { ...process.env, npm_config_update_notifier: 'false' },
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout;
}

/** Runs the project's TypeScript compiler; resolves with its exit code and output. */
async function tsc(args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await run(join(app, 'node_modules', '.bin', 'tsc'), args, { cwd: app });
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

beforeAll(async () => {
  env = await testEnv('clientpkg');
  server = await env.startServer();
  home = await mkdtempDisposable(join(tmpdir(), 'chat-client-package-'));
  // `.ci/run` packs the client before the tests (the heaviest compile of any test, which would
  // otherwise share the cores with the whole parallel run) and names the directory and the
  // command's output here; a plain `npm test` packs it now. Either way the same checks follow.
  const prebuilt = process.env.CLIENT_PACK_DIR;
  const packs = prebuilt ?? join(home.path, 'packs');
  const { stdout } = prebuilt
    ? { stdout: await readFile(join(prebuilt, 'pack.log'), 'utf8') }
    : await run(process.execPath, ['scripts/pack-client.mjs', packs], { cwd: PROJECT_ROOT, maxBuffer: 16 * 1024 * 1024 });
  const written = (await readdir(packs)).filter((f) => f.endsWith('.tgz'));
  expect(written).toHaveLength(1);
  tarball = join(packs, written[0]!);
  expect(stdout.trim().split('\n').at(-1)).toBe(tarball);

  app = join(home.path, 'app');
  await run('mkdir', ['-p', app]);
  const peers = { '@types/react': rootPkg.devDependencies['@types/react']! };
  await writeFile(
    join(app, 'package.json'),
    JSON.stringify({
      name: 'outside-app',
      private: true,
      type: 'module',
      dependencies: { [clientPkg.name]: `file:${tarball}` },
      devDependencies: { typescript: rootPkg.devDependencies.typescript!, ...peers },
    }),
  );
  await npm(['install'], app);
}, 120_000);

afterAll(async () => {
  for (const p of procs) p.kill('SIGKILL');
  await dispose(clients, env, home);
});

const TSCONFIG = {
  compilerOptions: {
    target: 'ES2023',
    // @trpc/server's own declarations use Disposable (a Vite template's skipLibCheck hides that).
    lib: ['ES2023', 'DOM', 'ESNext.Disposable'],
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    strict: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    skipLibCheck: false,
    jsx: 'react-jsx',
    outDir: 'out',
    types: [],
  },
};

/** The program a Node service of a product team would write. */
const MAIN = `
import { createChatClient, isDurableEvent, type AppRouter, type Message, type RoomEvent, type RouterInputs, type RouterOutputs } from '${clientPkg.name}';
import { config } from './config.js';

// The event union narrows on \`type\`.
function describe(event: RoomEvent): string {
  switch (event.type) {
    case 'message.new':
      return 'new ' + event.message.body;
    case 'member.joined':
      return 'joined ' + event.userId + ' as ' + event.role;
    case 'typing':
      return event.userId + (event.typing ? ' typing' : ' stopped');
    default:
      return event.type;
  }
}

const send: RouterInputs['chat']['send'] = { roomId: '', clientId: crypto.randomUUID(), body: '' };
type Room = RouterOutputs['room']['create'];
const routerIsATypeOnly: AppRouter | null = null;

const alice = createChatClient({ url: config.url, token: config.alice });
const bob = createChatClient({ url: config.url, getToken: async () => config.bob });
const room: Room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'outside', memberIds: ['bob'] });

const seen: string[] = [];
let lastEventId: string | undefined;
let arrived: () => void = () => {};
let live: () => void = () => {};
const isLive = new Promise<void>((resolve) => (live = resolve));
const subscribe = (from: string | undefined) =>
  bob.trpc.chat.events.subscribe(
    { roomId: room.id, lastEventId: from ?? null },
    {
      onData: ({ id, data }) => {
        if (data.type === 'ready') return live();
        if (isDurableEvent(data)) lastEventId = id;
        seen.push(describe(data));
        arrived();
      },
    },
  );
const waitFor = (n: number) =>
  new Promise<void>((resolve) => {
    arrived = () => seen.length >= n && resolve();
    arrived();
  });

let sub = subscribe(undefined);
// Without lastEventId the stream starts at the room's present (\`ready\`): send after it.
await isLive;
const first: Message = await alice.trpc.chat.send.mutate({ ...send, roomId: room.id, body: 'one' });
await waitFor(1);
sub.unsubscribe();
// Sent while bob is away; the subscription resumes after the last event it saw.
await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: crypto.randomUUID(), body: 'two' });
await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: crypto.randomUUID(), body: 'three' });
sub = subscribe(lastEventId);
await waitFor(3);
sub.unsubscribe();
console.log(JSON.stringify({ roomId: room.id, firstSeq: first.seq, seen, routerIsATypeOnly }));
await Promise.all([alice.close(), bob.close()]);
`;

/** A component of a Vite + React frontend over the \`/react\` entry. */
const UI = `
import { useChatClient, useRoomEvents } from '${clientPkg.name}/react';
import type { Message } from '${clientPkg.name}';

export function Room(props: { url: string; token: () => Promise<string>; roomId: string }) {
  const chat = useChatClient({ url: props.url, getToken: props.token });
  const room = useRoomEvents(chat, props.roomId, { onEvent: (e) => e.type === 'message.new' && console.log(e.message.body) });
  const line = (m: Message) => <li key={m.id}>{m.senderId}: {m.body ?? 'deleted'}</li>;
  return (
    <section>
      {room.connection.state !== 'open' && <p>Reconnecting…</p>}
      <ol>{room.messages.map(line)}</ol>
      {room.typing.length > 0 && <p>{room.typing.join(', ')} typing…</p>}
    </section>
  );
}
`;

/** A field of chat.send misspelled: must not compile. */
const WRONG = `
import { createChatClient } from '${clientPkg.name}';
const chat = createChatClient({ url: 'http://127.0.0.1:1' });
await chat.trpc.chat.send.mutate({ roomId: 'r', clientId: 'c', bdoy: 'hello' });
`;

describe('client package', () => {
  it('carries only compiled JavaScript and self-contained declarations; depends on client packages only', async () => {
    const { stdout } = await run('tar', ['tzf', tarball]);
    const files = stdout.trim().split('\n');
    expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    expect(files).toEqual(expect.arrayContaining(['package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/react.d.ts', 'package/dist/cli.js']));
    const installed = join(app, 'node_modules', ...clientPkg.name.split('/'));
    const dts = await readFile(join(installed, 'dist', 'index.d.ts'), 'utf8');
    const specifiers = [...dts.matchAll(/from\s+'([^']+)'|import\("([^"]+)"\)/g)].map((m) => m[1] ?? m[2]);
    expect(new Set(specifiers.map((s) => s!.split('/').slice(0, 2).join('/')))).toEqual(new Set(['@trpc/client', '@trpc/server']));
    expect(dts).not.toMatch(/\.\.\/src\/|node_modules/);
    expect(Object.keys(clientPkg.dependencies).sort()).toEqual(['@trpc/client', '@trpc/server', 'commander', 'picocolors', 'superjson']);
    expect(Object.keys(clientPkg.peerDependencies).sort()).toEqual(['@types/react', 'react', 'ws']);
    const modules = await readdir(join(app, 'node_modules'));
    for (const serverOnly of ['@mikro-orm', 'ioredis', 'pg', 'livekit-server-sdk', 'pino', 'tsx', 'zod']) expect(modules).not.toContain(serverOnly);
  });

  it('type-checks a strict program and a React component from outside, and refuses a misspelled chat.send field', async () => {
    await writeFile(join(app, 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, include: ['main.ts', 'config.ts', 'ui.tsx'] }));
    await writeFile(join(app, 'main.ts'), MAIN);
    await writeFile(join(app, 'ui.tsx'), UI);
    await writeFile(join(app, 'config.ts'), `export const config = { url: '', alice: '', bob: '' };\n`);
    const nodeNext = await tsc(['-p', 'tsconfig.json', '--noEmit']);
    expect(nodeNext.out).toBe('');
    expect(nodeNext.code).toBe(0);
    // As a Vite + React template configures it: bundler resolution, DOM libs, skipLibCheck.
    const vite = ['--module', 'preserve', '--moduleResolution', 'bundler', '--lib', 'ES2022,DOM,DOM.Iterable', '--skipLibCheck'];
    const bundler = await tsc(['-p', 'tsconfig.json', '--noEmit', ...vite]);
    expect(bundler.out).toBe('');

    await writeFile(join(app, 'tsconfig.wrong.json'), JSON.stringify({ ...TSCONFIG, include: ['wrong.ts'] }));
    await writeFile(join(app, 'wrong.ts'), WRONG);
    const wrong = await tsc(['-p', 'tsconfig.wrong.json', '--noEmit']);
    expect(wrong.code).not.toBe(0);
    expect(wrong.out).toMatch(/wrong\.ts.*error TS\d+:.*'bdoy'/);
  });

  it('runs in Node against a live server: send, receive through chat.events, resume after the last event', async () => {
    await writeFile(join(app, 'tsconfig.json'), JSON.stringify({ ...TSCONFIG, include: ['main.ts', 'config.ts'] }));
    await writeFile(join(app, 'main.ts'), MAIN);
    const config = { url: server.url, alice: tokenFor('alice'), bob: tokenFor('bob') };
    await writeFile(join(app, 'config.ts'), `export const config = ${JSON.stringify(config)};\n`);
    const built = await tsc(['-p', 'tsconfig.json']);
    expect(built.out).toBe('');
    const { stdout } = await run(process.execPath, [join(app, 'out', 'main.js')], { cwd: app, timeout: 60_000 });
    const result = JSON.parse(stdout.trim()) as { roomId: string; firstSeq: number; seen: string[] };
    expect(result.seen).toEqual(['new one', 'new two', 'new three']);
    const history = await clients.use(clientFor(server.url, 'alice')).trpc.chat.history.query({ roomId: result.roomId });
    expect(history.messages.filter((m) => m.kind === 'text').map((m) => m.body)).toEqual(['one', 'two', 'three']);
  });

  it('installs globally: `chat` runs compiled JavaScript (--version, --help, login, tail) and strips control characters', async () => {
    const prefix = join(home.path, 'global');
    await npm(['install', '--global', '--prefix', prefix, tarball], home.path);
    const installed = join(prefix, 'lib', 'node_modules', ...clientPkg.name.split('/'));
    expect(await readdir(join(installed, 'node_modules')).catch(() => [])).not.toContain('tsx');
    const bin = join(prefix, 'bin');
    const cliEnv = {
      PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      HOME: home.path,
      CHAT_URL: server.url,
      CHAT_CONFIG: join(home.path, 'carol.json'),
      NO_COLOR: '1',
    };
    const chat = async (args: string[]) => (await run('chat', args, { env: cliEnv, cwd: home.path })).stdout;

    expect((await chat(['--version'])).trim()).toBe(clientPkg.version);
    expect(await chat(['--help'])).toMatch(/tail \[options\] <room>/);
    expect(await chat(['login', 'carol'])).toMatch(/carol/);

    const dave = clients.use(clientFor(server.url, 'dave'));
    const room = await dave.trpc.room.create.mutate({ kind: 'group', name: 'pkg-tail', memberIds: ['carol'] });
    const tail = spawn('chat', ['tail', room.id], { env: cliEnv, cwd: home.path, stdio: ['ignore', 'pipe', 'pipe'] });
    procs.add(tail);
    const lines = new Collector<string>();
    createInterface({ input: tail.stdout! }).on('line', lines.push);
    const notes = new Collector<string>();
    createInterface({ input: tail.stderr! }).on('line', notes.push);
    const exited = new Promise<number | null>((res) => tail.once('exit', (c) => res(c)));
    // tail says on stderr when its subscription is live (the room's `ready` event).
    await notes.first((l) => l.startsWith('following pkg-tail'), 'tail to be following', 20_000);

    const hostile = 'pay \u001b[2J\u001b]0;owned\u0007now\u001b[31m red\u009b1m \u202eevil\r\u0008 done';
    await dave.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'hello carol' });
    await dave.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: hostile });
    const line = await lines.first((l) => l.includes('done'), 'the hostile message in tail', 20_000);
    expect(lines.items[0]).toMatch(/ dave: hello carol$/);
    expect(line).toMatch(/ dave: pay now red evil done$/);
    for (const l of lines.items) expect(l).not.toMatch(TERMINAL_CONTROL);

    tail.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});
