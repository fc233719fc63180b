/**
 * The client side of files: `uploadFile` of the typed client (Node: fetch with a body stream and
 * progress; the browser's XMLHttpRequest path is feature-detected), `downloadFile`, and the CLI's
 * `send --file` (progress bar) and `download` as real processes against a real server.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChatClient, type ChatClient, type UploadProgress } from '../client/index.js';
import { safeFileName } from '../client/cli/files.js';
import { dispose, makeConfig, PROJECT_ROOT, Scope, testEnv, tokenFor, type TestEnv, type TestServer } from './fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'chat-files-client-'));
let env: TestEnv;
let server: TestServer;
const clients = new Scope();

beforeAll(async () => {
  env = await testEnv('files_client');
  server = await env.startServer({ files: { ...makeConfig().files, dir: join(dir, 'store') } });
});

afterAll(async () => {
  await dispose(clients, env);
  rmSync(dir, { recursive: true, force: true });
});

const client = (userId: string): ChatClient => clients.use(createChatClient({ url: server.url, token: tokenFor(userId), lazy: true }));

/** Runs the CLI in `cwd` (default: the temporary folder, where `download` without -o saves). */
function cli(args: string[], user: string, cwd = dir): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(PROJECT_ROOT, 'client/cli.ts'), ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, CHAT_URL: server.url, CHAT_TOKEN: tokenFor(user), CHAT_CONFIG: join(dir, `${user}.json`), NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((res) => child.once('close', (code) => res({ code, stdout, stderr })));
}

describe('typed client', () => {
  it('uploadFile reports progress and answers a descriptor that chat.send attaches; downloadFile gives the bytes back', async () => {
    const alice = client('alice-c1');
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'files' });
    const bytes = new Uint8Array(300 * 1024).map((_, i) => 32 + (i % 90));
    const progress: UploadProgress[] = [];
    const file = await alice.uploadFile(room.id, bytes, { name: 'notes.txt', mime: 'text/plain', onProgress: (p) => progress.push(p) });
    expect(file).toMatchObject({ name: 'notes.txt', size: bytes.length, mime: 'text/plain' });
    expect(progress.length).toBeGreaterThan(2);
    expect(progress.at(-1)).toEqual({ loaded: bytes.length, total: bytes.length });
    expect(progress.every((p, i) => i === 0 || p.loaded >= progress[i - 1]!.loaded)).toBe(true);

    const m = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: crypto.randomUUID(), body: 'notes', kind: 'file', attachments: [file] });
    expect(m.attachments).toEqual([{ fileId: file.fileId, name: 'notes.txt', size: bytes.length, mime: 'text/plain', width: null, height: null, thumbnail: false }]);
    const { file: info, response } = await alice.downloadFile(file.fileId);
    expect(info.id).toBe(file.fileId);
    expect(new Uint8Array(await response.arrayBuffer())).toEqual(bytes);
    const part = await alice.downloadFile(file.fileId, { range: 'bytes=0-9' });
    expect(part.response.status).toBe(206);
    expect(new Uint8Array(await part.response.arrayBuffer())).toEqual(bytes.subarray(0, 10));
    // A Blob works too, its type taken as the mime; an upload refused by the server is an error.
    const blob = await alice.uploadFile(room.id, new Blob(['{"a":1}'], { type: 'application/json' }), { name: 'a.json' });
    expect(blob).toMatchObject({ mime: 'application/json', size: 7 });
    await expect(client('stranger-c1').downloadFile(file.fileId)).rejects.toThrow(/file not found/);
  });
});

describe('CLI', () => {
  it('send --file uploads with a progress bar and attaches; download saves the file (never overwriting without -o/--force)', async () => {
    const alice = client('alice-c2');
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'cli files', memberIds: ['bob-c2'] });
    await mkdir(join(dir, 'src'), { recursive: true });
    const src = join(dir, 'src', 'report.csv');
    const content = 'id,value\n'.concat(Array.from({ length: 2000 }, (_, i) => `${i},${i * i}`).join('\n'));
    await writeFile(src, content);

    const sent = await cli(['send', room.id, 'the report', '--file', src], 'alice-c2');
    expect(sent.code, sent.stderr).toBe(0);
    expect(sent.stderr).toMatch(/uploading report\.csv \[#{24}\] 100% /);
    expect(sent.stdout).toMatch(/^sent #\d+ to cli files with 1 file\n$/);
    const [m] = (await alice.trpc.chat.history.query({ roomId: room.id })).messages.filter((x) => x.kind === 'file');
    const att = m!.attachments[0]!;
    expect(att).toMatchObject({ name: 'report.csv', size: Buffer.byteLength(content), mime: 'text/csv' });
    const fileId = 'fileId' in att ? att.fileId : '';

    const out = join(dir, 'saved.csv');
    const got = await cli(['download', fileId, '-o', out, '--json'], 'bob-c2');
    expect(got.code, got.stderr).toBe(0);
    expect(JSON.parse(got.stdout)).toMatchObject({ fileId, name: 'report.csv', path: out, mime: 'text/csv' });
    expect(await readFile(out, 'utf8')).toBe(content);
    // Without -o: the file's name in the working folder; an existing file is not overwritten.
    const plain = await cli(['download', fileId], 'bob-c2');
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).toMatch(/downloading report\.csv \[#{24}\] 100%/);
    expect(plain.stdout).toMatch(/^saved report\.csv \(/);
    expect(await readFile(join(dir, 'report.csv'), 'utf8')).toBe(content);
    const exists = await cli(['download', fileId], 'bob-c2');
    expect([exists.code, exists.stderr]).toEqual([1, expect.stringMatching(/report\.csv exists: pass -o <path> \(or --force to overwrite\)/)]);
    expect((await cli(['download', fileId, '--force'], 'bob-c2')).code).toBe(0);
    // Not a member: one line, non-zero.
    const refused = await cli(['download', fileId], 'carol-c2');
    expect([refused.code, refused.stderr.trim().split('\n').length]).toEqual([1, 1]);
    expect(refused.stderr).toMatch(/file not found/);
  });

  it('names from the server are made safe as file names', () => {
    expect(safeFileName('../../etc/passwd')).toBe('_.._etc_passwd');
    expect(safeFileName('.bashrc')).toBe('bashrc');
    expect(safeFileName('a\u001b[31mred.txt')).not.toContain('\u001b');
    expect(safeFileName('')).toBe('download');
  });
});
