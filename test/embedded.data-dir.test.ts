/**
 * The embedded database (no DATABASE_URL) takes its data directory for one process at a time: two
 * PGlite instances on one directory each keep their own copy of the files, and the last to close
 * wins (two servers gave one seq to two messages and one of them was lost after a restart;
 * `keys:reencrypt` beside a server reported work the server's close then undid). A second server,
 * or the key job, on a directory in use refuses to start with a clear message; a stopped or killed
 * holder frees it. Real processes, each with a data directory of its own.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempDisposableSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { clientFor, PROJECT_ROOT, ProcGroup, TEST_SECRET, uuid } from './fixture.js';

const run = promisify(execFile);

/** The environment of a server in embedded mode (no DATABASE_URL, no REDIS_URL). */
function embeddedEnv(dataDir: string): Record<string, string> {
  return { DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', JWT_SECRET: TEST_SECRET, LOG_LEVEL: 'info', SHUTDOWN_TIMEOUT_MS: '8000' };
}

/** `src/rekey-main.ts` (what `npm run keys:reencrypt` / `keys:status` run) on a data directory: its exit, last JSON line or error text. */
async function rekeyMain(dataDir: string, keys: string, ...args: string[]): Promise<{ ok: true; bodies: Record<string, number> } | { ok: false; stderr: string }> {
  try {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/rekey-main.ts', ...args], {
      cwd: PROJECT_ROOT,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', DATA_DIR: dataDir, JWT_SECRET: TEST_SECRET, MESSAGE_KEYS: keys, LOG_LEVEL: 'warn' },
    });
    const last = JSON.parse(stdout.trim().split('\n').at(-1)!) as { usage: { bodies: Record<string, number> } };
    return { ok: true, bodies: last.usage.bodies };
  } catch (err) {
    return { ok: false, stderr: String((err as { stderr?: string }).stderr ?? err) };
  }
}

describe('the embedded database: one process per data directory', () => {
  const procs = new ProcGroup();
  const dirs: Array<{ path: string; [Symbol.dispose](): void }> = [];
  const newDir = () => {
    const d = mkdtempDisposableSync(join(tmpdir(), 'chat-emb-lock-'));
    dirs.push(d);
    return d.path;
  };
  afterAll(async () => {
    await procs.killAll();
    for (const d of dirs) d[Symbol.dispose]();
  });

  it('a second server on a data directory in use refuses to start; the first serves on; once it stopped the directory is free', async () => {
    const dataDir = newDir();
    const a = await procs.spawn({ label: 'A', env: embeddedEnv(dataDir), startTimeoutMs: 60_000 });
    await using alice = clientFor(a.url, 'alice');
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'first', memberIds: ['bob'] });
    await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'one' });
    // A second `npm start` on the same directory (another port), or a restart that overlaps.
    const second = await procs.spawn({ label: 'B', env: embeddedEnv(dataDir), startTimeoutMs: 60_000 }).then(
      () => 'started',
      (err: Error) => err.message,
    );
    expect(second).toMatch(/exited before listening/);
    expect(second).toContain(`is in use by process ${a.child.pid}: it takes one process at a time`);
    await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'two' });
    await alice.close();
    // Stopped: the directory is free, and everything acknowledged is there.
    await a.kill('SIGTERM');
    expect(existsSync(join(dataDir, 'pglite.lock'))).toBe(false);
    const c = await procs.spawn({ label: 'C', env: embeddedEnv(dataDir), startTimeoutMs: 60_000 });
    await using carol = clientFor(c.url, 'alice');
    expect((await carol.trpc.chat.history.query({ roomId: room.id })).messages.filter((m) => m.kind !== 'system').map((m) => m.body)).toEqual(['one', 'two']);
    // Three embedded servers start one after the other (each opens PGlite: seconds on a loaded machine).
  }, 180_000);

  it("a killed server's lock names a process that is gone: the next start takes the directory over and removes the killed one's socket directory", async () => {
    const dataDir = newDir();
    // The servers' temporary directory: the socket directories are theirs alone to look at.
    const tmp = newDir();
    const socketDirs = () => readdirSync(tmp).filter((name) => name.startsWith('chat-pg-')).sort();
    const env = { ...embeddedEnv(dataDir), TMPDIR: tmp };
    const a = await procs.spawn({ label: 'K1', env, startTimeoutMs: 60_000 });
    const [left] = socketDirs();
    expect({ dirs: socketDirs().length, socket: left !== undefined && readdirSync(join(tmp, left)).some((f) => f.startsWith('.s.PGSQL.')) }).toEqual({ dirs: 1, socket: true });
    {
      await using alice = clientFor(a.url, 'alice');
      const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'kept' });
      await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'before the kill' });
    }
    await a.kill('SIGKILL');
    // Nothing of the killed process ran: its lock and its socket directory are still there.
    expect(existsSync(join(dataDir, 'pglite.lock'))).toBe(true);
    expect(socketDirs()).toEqual([left]);
    const b = await procs.spawn({ label: 'K2', env, startTimeoutMs: 60_000 });
    const now = socketDirs();
    expect({ leftRemoved: !now.includes(left!), dirs: now.length }).toEqual({ leftRemoved: true, dirs: 1 });
    {
      await using again = clientFor(b.url, 'alice');
      expect((await again.trpc.room.list.query({})).map((r) => r.name)).toContain('kept');
    }
    // A clean stop removes its own.
    await b.kill('SIGTERM');
    expect(socketDirs()).toEqual([]);
  }, 180_000);

  it('`keys:reencrypt` refuses a data directory an embedded server holds; with the server stopped it re-seals every row, and the work stays', async () => {
    const dataDir = newDir();
    const k1 = `k1:${randomBytes(32).toString('base64')}`;
    const k2 = `k2:${randomBytes(32).toString('base64')}`;
    const a = await procs.spawn({ label: 'R1', env: { ...embeddedEnv(dataDir), MESSAGE_KEYS: k1 }, startTimeoutMs: 60_000 });
    {
      await using alice = clientFor(a.url, 'alice');
      const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'secret', memberIds: ['bob'], encrypted: true });
      for (let i = 0; i < 3; i++) await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `sealed ${i}` });
    }
    // The rotation while the server serves: refused, nothing reported done.
    const beside = await rekeyMain(dataDir, `${k2},${k1}`);
    expect(beside).toMatchObject({ ok: false, stderr: expect.stringContaining(`is in use by process ${a.child.pid}`) });
    await a.kill('SIGTERM');
    expect(await rekeyMain(dataDir, `${k2},${k1}`)).toEqual({ ok: true, bodies: { k2: 3 } });
    expect(await rekeyMain(dataDir, `${k2},${k1}`, '--status')).toEqual({ ok: true, bodies: { k2: 3 } });
  }, 180_000);
});
