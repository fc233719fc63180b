/**
 * Thumbnails of large images with both storage drivers (local, and S3 against s3rver): the file
 * worker makes a thumbnail from a file (the object's own, or a temp copy streamed from the store),
 * never from the image's bytes read into memory, so what a thumbnail takes does not grow with the
 * file's size. Checked without measuring memory: every storage call the worker makes goes through a
 * wrapper that adds up the bytes each answer hands over in memory (a Buffer or byte array), and that
 * sum must stay 0 for a 3 MB image. The S3 driver's temp copy is checked too: it holds exactly the
 * object's bytes, is gone once used (also when its use fails), and is refused past the size limit.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileWorker, type FileStorage } from '../src/services/files/index.js';
import { makeConfig, openLive, roomKit, testEnv, uuid, type Config, type EventStream, type TestEnv, type TestServer } from './fixture.js';

const BUCKET = 'chat-thumbs';
const MAX = 4 * 1024 * 1024;
let dir: string;
let s3: S3rver;
let env: TestEnv;
const servers: Record<'local' | 's3', TestServer | null> = { local: null, s3: null };
const filesConfig: Record<'local' | 's3', Config['files'] | null> = { local: null, s3: null };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'chat-files-thumbs-'));
  s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: join(dir, 's3'), configureBuckets: [{ name: BUCKET, configs: [] }] });
  const { port } = await s3.run();
  env = await testEnv('files_thumbs');
  filesConfig.local = { ...makeConfig().files, dir: join(dir, 'local'), maxBytes: MAX };
  filesConfig.s3 = {
    ...makeConfig().files,
    storage: 's3',
    maxBytes: MAX,
    s3: { endpoint: `http://127.0.0.1:${port}`, publicEndpoint: undefined, region: 'us-east-1', bucket: BUCKET, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true },
  };
  servers.local = await env.startServer({ files: filesConfig.local });
  servers.s3 = await env.startServer({ files: filesConfig.s3 });
});

afterAll(async () => {
  await env?.[Symbol.asyncDispose]();
  await s3?.close();
  rmSync(dir, { recursive: true, force: true });
});

/**
 * `base` as the worker sees it, adding up the bytes that its answers hand over in memory: a
 * Buffer or byte array answered by any call (a whole-object read, a head read, ...).
 */
function counting(base: FileStorage): { storage: FileStorage; held: () => number } {
  let held = 0;
  const count = (v: unknown) => {
    if (v instanceof Uint8Array) held += v.byteLength;
    return v;
  };
  const storage = new Proxy(base, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        const r = (v as (...a: unknown[]) => unknown).apply(target, args);
        return r instanceof Promise ? r.then(count) : count(r);
      };
    },
  });
  return { storage, held: () => held };
}

/** A PNG of noise: about 3 bytes per pixel whatever the compression, so the file is large. */
const noisePng = (width: number, height: number) => sharp(randomBytes(width * height * 3), { raw: { width, height, channels: 3 } }).png().toBuffer();

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe.each(['local', 's3'] as const)('%s storage', (kind) => {
  const server = () => servers[kind]!;
  const { users, as, groupRoom } = roomKit(server);
  const storage = () => server().app.services.files.storage;
  const storageKey = async (fileId: string) => (await env.sql<{ storage_key: string }>('select storage_key from file where id = $1', [fileId]))[0]!.storage_key;

  /** createUpload, PUT the bytes (to this server or to the store), send them in a message. */
  async function sendImage(who: string, roomId: string, bytes: Buffer) {
    const ticket = await as(who).file.createUpload({ roomId, name: 'noise.png', size: bytes.length, mime: 'image/png' });
    const res = await fetch(new URL(ticket.uploadUrl, server().url), { method: 'PUT', headers: ticket.headers, body: bytes });
    expect(res.status, await res.clone().text()).toBe(200);
    const m = await as(who).chat.send({ roomId, clientId: uuid(), body: '', kind: 'image', attachments: [{ fileId: ticket.fileId }] });
    return { fileId: ticket.fileId, message: m };
  }

  async function nextReady(s: EventStream) {
    for (;;) {
      const { event } = await s.next(20_000);
      if (event.type === 'file.ready') return event;
    }
  }

  it('a large image gets its thumbnail without its bytes ever handed to the worker in memory', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    await using stream = await openLive(server().app, alice!, room.id);
    const image = await noisePng(1000, 1000);
    expect(image.length).toBeGreaterThan(2_900_000);
    const { fileId } = await sendImage(alice!, room.id, image);
    // The server's own worker makes the first preview; the one under test makes it again.
    expect(await nextReady(stream)).toMatchObject({ fileId, thumbnail: true });
    const key = await storageKey(fileId);
    await storage().remove(`${key}.thumb`);

    const { storage: seen, held } = counting(storage());
    const worker = new FileWorker(server().app.services.store, seen, filesConfig[kind]!, server().app.log);
    await env.sql(`update file set preview = 'pending', lease_until = null where id = $1`, [fileId]);
    try {
      expect((await worker.runOnce()).previews).toBeGreaterThanOrEqual(1);
    } finally {
      await worker.stop();
    }
    expect(await nextReady(stream)).toMatchObject({ fileId, width: 1000, height: 1000, thumbnail: true });
    const thumb = await storage().stat(`${key}.thumb`);
    expect(thumb?.size).toBeGreaterThan(0);
    // Not one byte of the 3 MB image came back from the storage into memory.
    expect(held()).toBe(0);
  });

  it("withFile: a file with exactly the object's bytes; refused past the size limit", async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const image = await noisePng(300, 200);
    const { fileId } = await sendImage(alice!, room.id, image);
    const key = await storageKey(fileId);

    let used = '';
    const digest = await storage().withFile(key, MAX, async (path) => {
      used = path;
      return sha(await readFile(path));
    });
    expect(digest).toBe(sha(image));
    await expect(storage().withFile(key, image.length - 1, async () => 'read')).rejects.toThrow(`is larger than ${image.length - 1} bytes`);

    if (kind === 's3') {
      // A temp copy of its own, gone once used, also when its use fails.
      expect(used.startsWith(tmpdir())).toBe(true);
      await expect(stat(used)).rejects.toMatchObject({ code: 'ENOENT' });
      let failed = '';
      await expect(
        storage().withFile(key, MAX, async (path) => {
          failed = path;
          throw new Error('use failed');
        }),
      ).rejects.toThrow('use failed');
      await expect(stat(failed)).rejects.toMatchObject({ code: 'ENOENT' });
    } else {
      // The object's own file: nothing copied.
      expect(used).toBe(join(filesConfig.local!.dir, key));
    }
  });
});
