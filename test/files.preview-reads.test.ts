/**
 * The file worker makes a thumbnail from the image's file (local storage: the object's own). An
 * image it could not read (the file gone or unreadable between the storage's size check and the
 * read) is retried, as any read that fails; only one that was read and cannot be decoded is given
 * up at once (`file.ready` with `thumbnail: false`). The server's own worker is stopped: the worker
 * under test runs its rounds directly, on a storage that spoils the file for its first read.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir, rename, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileWorker, type FileStorage } from '../src/services/files/index.js';
import { fileServer, makeConfig, nextOf, openLive, roomKit, uuid } from './fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'chat-files-reads-'));
const files = { ...makeConfig().files, dir, maxBytes: 1024 * 1024 };
const t = fileServer('files_reads', { files });
const { users, as, groupRoom } = roomKit(() => t);

// Only the worker under test makes previews.
beforeAll(() => t.app.services.fileWorker.stop());
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const png = (width: number, height: number) => sharp({ create: { width, height, channels: 3, background: '#3366cc' } }).png().toBuffer();

/** Uploads `bytes` and sends them as a message's image: its preview is then due. */
async function attachImage(who: string, roomId: string, bytes: Buffer) {
  const ticket = await as(who).file.createUpload({ roomId, name: 'photo.png', size: bytes.length, mime: 'image/png' });
  const res = await fetch(new URL(ticket.uploadUrl, t.url), { method: 'PUT', headers: ticket.headers, body: bytes });
  expect(res.status, await res.clone().text()).toBe(200);
  const m = await as(who).chat.send({ roomId, clientId: uuid(), body: '', kind: 'image', attachments: [{ fileId: ticket.fileId }] });
  return { fileId: ticket.fileId, messageId: m.id };
}

/**
 * The server's storage, whose first `withFile` finds `spoil` done to the file after the size check
 * and before the worker reads it (undone once that read is over).
 */
function spoiledOnce(spoil: (path: string) => Promise<() => Promise<void>>): FileStorage {
  const base = t.app.services.files.storage;
  const storage: FileStorage = Object.create(base);
  let armed = true;
  storage.withFile = (key, maxBytes, fn) =>
    base.withFile(key, maxBytes, async (path) => {
      if (!armed) return fn(path);
      armed = false;
      const undo = await spoil(path);
      try {
        return await fn(path);
      } finally {
        await undo();
      }
    });
  return storage;
}

const fileRow = async (fileId: string) =>
  (await t.env.sql<{ preview: string; attempts: number; last_error: string | null }>('select preview, attempts, last_error from file where id = $1', [fileId]))[0];

describe('previews: a read that fails is retried, an image that cannot be decoded is not', () => {
  const readFailures = [
    {
      what: 'gone (removed after the size check)',
      error: 'ENOENT',
      spoil: async (path: string) => {
        await rename(path, `${path}.away`);
        return () => rename(`${path}.away`, path);
      },
    },
    {
      // A directory in its place: a read fails whoever runs the tests (a mode of 000 stops no root).
      what: 'unreadable (not a file any more)',
      error: 'EISDIR',
      spoil: async (path: string) => {
        await rename(path, `${path}.away`);
        await mkdir(path);
        return async () => {
          await rmdir(path);
          await rename(`${path}.away`, path);
        };
      },
    },
  ];

  it.each(readFailures)('an image whose file is $what when the worker reads it is retried, then gets its thumbnail', async ({ error, spoil }) => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    await using stream = await openLive(t.app, alice!, room.id);
    const { fileId, messageId } = await attachImage(alice!, room.id, await png(64, 32));
    const worker = new FileWorker(t.app.services.store, spoiledOnce(spoil), files, t.app.log);
    try {
      expect((await worker.runOnce()).previews).toBe(1);
      // Not given up: still pending, the read's error noted, retried once its lease has run out.
      expect(await fileRow(fileId)).toMatchObject({ preview: 'pending', attempts: 1, last_error: expect.stringContaining(error) });
      await t.env.sql('update file set lease_until = null where id = $1', [fileId]);
      expect((await worker.runOnce()).previews).toBe(1);
    } finally {
      await worker.stop();
    }
    // The first file.ready is the thumbnail's: no `thumbnail: false` came before it.
    expect(await nextOf(stream, 'file.ready')).toMatchObject({ fileId, messageId, width: 64, height: 32, thumbnail: true });
    expect(await fileRow(fileId)).toMatchObject({ preview: 'ready', attempts: 2 });
  });

  it('an image that was read and cannot be decoded gets file.ready with thumbnail: false at once', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    await using stream = await openLive(t.app, alice!, room.id);
    // A PNG's signature and header, then garbage: its type is found, its pixels cannot be decoded.
    const broken = Buffer.concat([(await png(64, 32)).subarray(0, 33), Buffer.alloc(200, 7)]);
    const { fileId, messageId } = await attachImage(alice!, room.id, broken);
    const worker = new FileWorker(t.app.services.store, t.app.services.files.storage, files, t.app.log);
    try {
      expect((await worker.runOnce()).previews).toBe(1);
    } finally {
      await worker.stop();
    }
    expect(await nextOf(stream, 'file.ready')).toMatchObject({ fileId, messageId, width: null, height: null, thumbnail: false });
    expect(await fileRow(fileId)).toMatchObject({ preview: 'failed', attempts: 1 });
  });
});
