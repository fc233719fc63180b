import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { readFileHead } from '../../util/file-head.js';
import { type DownloadOptions, type FileStorage, type SignedUpload, STORAGE_KEY } from './storage.js';

/** A PUT to a key whose upload is already under way (answered 409 Conflict). */
export class UploadInProgress extends Error {
  constructor() {
    super('an upload to this URL is already in progress: wait for it to finish (or fail) before sending the file again');
  }
}

/** The temp file of an upload under way: `<key>.part`, created exclusively. */
export interface UploadTemp {
  path: string;
  /** The file, opened for writing (its stream closes it). */
  handle: FileHandle;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

const PART = '.part';

/** What a local URL grants, read back from its query string. */
export type LocalGrant =
  | { method: 'PUT'; key: string; expiresAt: number; size: number; mime: string }
  | { method: 'GET'; key: string; expiresAt: number; mime: string; inline: boolean; name: string };

/**
 * FILE_STORAGE=local: objects under FILE_DIR (default DATA_DIR/files), uploaded and downloaded
 * through this server's `/files/<key>` endpoint (src/http/files.ts) with HMAC-signed URLs that
 * bind the method, the key (so the file), the expiry and what is served or accepted.
 */
export class LocalStorage implements FileStorage {
  readonly kind = 'local';

  constructor(
    private readonly dir: string,
    private readonly secret: Buffer,
    /** Base of the URLs handed out ('' for relative URLs). */
    private readonly publicUrl: string,
    /**
     * FILE_UPLOAD_TTL_SECONDS in ms: an upload's temp file untouched for longer is stale (its writer
     * died or stalled past any URL's life): it is replaced by a new PUT and removed by `sweepTemp`.
     */
    private readonly staleMs = 900_000,
  ) {}

  /** The object's path; throws for anything that is not a generated key (no traversal). */
  path(key: string): string {
    if (!STORAGE_KEY.test(key)) throw new Error('invalid storage key');
    return join(this.dir, key);
  }

  private sign(g: LocalGrant): string {
    const fields = g.method === 'PUT' ? ['v1', g.method, g.key, g.expiresAt, g.size, g.mime] : ['v1', g.method, g.key, g.expiresAt, g.mime, g.inline, g.name];
    return createHmac('sha256', this.secret).update(JSON.stringify(fields)).digest('base64url');
  }

  async uploadUrl(key: string, o: { size: number; mime: string; expiresAt: Date }): Promise<SignedUpload> {
    const g: LocalGrant = { method: 'PUT', key, expiresAt: Math.floor(o.expiresAt.getTime() / 1000), size: o.size, mime: o.mime };
    const q = new URLSearchParams({ m: 'PUT', e: String(g.expiresAt), z: String(g.size), t: g.mime, s: this.sign(g) });
    return { url: `${this.publicUrl}/files/${key}?${q}`, headers: { 'content-type': o.mime } };
  }

  async downloadUrl(key: string, o: DownloadOptions): Promise<string> {
    const g: LocalGrant = { method: 'GET', key, expiresAt: Math.floor(o.expiresAt.getTime() / 1000), mime: o.mime, inline: o.inline, name: o.name };
    const q = new URLSearchParams({ e: String(g.expiresAt), t: g.mime, d: o.inline ? 'i' : 'a', n: o.name, s: this.sign(g) });
    return `${this.publicUrl}/files/${key}?${q}`;
  }

  /**
   * What a request to `/files/<key>?...` may do, or why not: the signature is compared in constant
   * time, then the expiry. HEAD is allowed by a GET grant.
   */
  verify(method: string, key: string, q: URLSearchParams, nowMs = Date.now()): LocalGrant | string {
    if (!STORAGE_KEY.test(key)) return 'no such file';
    const expiresAt = Number(q.get('e'));
    if (!Number.isSafeInteger(expiresAt)) return 'invalid link';
    let g: LocalGrant;
    if (method === 'PUT') {
      if (q.get('m') !== 'PUT') return 'this link does not allow uploads';
      const size = Number(q.get('z'));
      if (!Number.isSafeInteger(size) || size < 0) return 'invalid link';
      g = { method: 'PUT', key, expiresAt, size, mime: q.get('t') ?? '' };
    } else if (method === 'GET' || method === 'HEAD') {
      if (q.has('m')) return 'this link only allows uploads';
      g = { method: 'GET', key, expiresAt, mime: q.get('t') ?? '', inline: q.get('d') === 'i', name: q.get('n') ?? '' };
    } else {
      return 'method not allowed';
    }
    const given = Buffer.from(q.get('s') ?? '', 'base64url');
    const expected = Buffer.from(this.sign(g), 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'invalid signature';
    if (expiresAt * 1000 < nowMs) return 'this link has expired';
    return g;
  }

  /**
   * The temp file of a PUT to `key`: `<key>.part`, created with `wx`, so one upload per key runs at
   * a time on every node sharing the folder, and one signed URL never holds more than its signed
   * size on disk however many requests use it. UploadInProgress while another one is under way; a
   * stale one (not written for `staleMs`) is replaced.
   */
  async uploadTemp(key: string): Promise<UploadTemp> {
    const final = this.path(key);
    await mkdir(dirname(final), { recursive: true });
    const tmp = `${final}${PART}`;
    let handle: FileHandle;
    try {
      handle = await open(tmp, 'wx');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const s = await stat(tmp).catch(() => null);
      if (s !== null && Date.now() - s.mtimeMs <= this.staleMs) throw new UploadInProgress();
      await rm(tmp, { force: true });
      try {
        handle = await open(tmp, 'wx');
      } catch (again) {
        if ((again as NodeJS.ErrnoException).code === 'EEXIST') throw new UploadInProgress();
        throw again;
      }
    }
    return {
      path: tmp,
      handle,
      commit: () => rename(tmp, final),
      abort: async () => {
        await handle.close().catch(() => {});
        await rm(tmp, { force: true });
      },
    };
  }

  /**
   * Removes temp files (`.part`) not written for `staleMs`: left by a process that died mid-write
   * or by an upload that stalled. The file worker runs it each round. Returns how many.
   */
  async sweepTemp(staleMs = this.staleMs): Promise<number> {
    let removed = 0;
    const dirs = await readdir(this.dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [];
      throw err;
    });
    const cutoff = Date.now() - staleMs;
    for (const d of dirs) {
      if (!d.isDirectory() || !/^[0-9a-f]{16}$/.test(d.name)) continue;
      const sub = join(this.dir, d.name);
      for (const name of await readdir(sub).catch(() => [] as string[])) {
        if (!name.endsWith(PART)) continue;
        const s = await stat(join(sub, name)).catch(() => null);
        if (s === null || s.mtimeMs >= cutoff) continue;
        await rm(join(sub, name), { force: true });
        removed++;
      }
    }
    return removed;
  }

  /** A new file next to `key`'s path to write into, then `commit` or `abort` (the server's own writes). */
  async temp(key: string): Promise<{ path: string; commit(): Promise<void>; abort(): Promise<void> }> {
    const final = this.path(key);
    await mkdir(dirname(final), { recursive: true });
    const tmp = `${final}.${randomBytes(6).toString('hex')}.part`;
    return {
      path: tmp,
      commit: () => rename(tmp, final),
      abort: () => rm(tmp, { force: true }),
    };
  }

  async stat(key: string): Promise<{ size: number } | null> {
    try {
      const s = await stat(this.path(key));
      return s.isFile() ? { size: s.size } : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async promote(from: string, to: string): Promise<boolean> {
    try {
      await rename(this.path(from), this.path(to));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  readHead(key: string, bytes: number): Promise<Uint8Array> {
    return readFileHead(this.path(key), bytes);
  }

  /** The object's own file (objects are never rewritten once promoted). */
  async withFile<T>(key: string, maxBytes: number, fn: (path: string) => Promise<T>): Promise<T> {
    const s = await this.stat(key);
    if (!s) throw new Error(`object ${key} is missing`);
    if (s.size > maxBytes) throw new Error(`object ${key} is larger than ${maxBytes} bytes`);
    return fn(this.path(key));
  }

  async write(key: string, data: Buffer): Promise<void> {
    const t = await this.temp(key);
    try {
      await writeFile(t.path, data);
      await t.commit();
    } catch (err) {
      await t.abort();
      throw err;
    }
  }

  async remove(key: string): Promise<void> {
    await unlink(this.path(key)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  close(): void {}
}
