import type { FilesConfig } from '../../config.js';
import { readFileHead } from '../../util/file-head.js';
import type { Logger } from '../../logger.js';
import { claimPreviews, claimRemovals, fileById, finishPreview, finishRemoval, noteFileError } from '../../store/files.js';
import type { Store } from '../../store/store.js';
import { type FileStorage, keysOf, THUMB_SUFFIX } from './storage.js';
import { releaseUnusedUploads } from './unused.js';

/** Longest side of a thumbnail, in pixels. */
export const THUMBNAIL_SIZE = 512;
/** Rows claimed per round, and how long a claim holds. */
const BATCH = 20;
const LEASE_MS = 120_000;
/** A preview whose object cannot be read this many times is given up (file.ready without thumbnail). */
const MAX_PREVIEW_ATTEMPTS = 5;

export interface FileWorkResult {
  removed: number;
  previews: number;
}

/** The largest image a thumbnail is made of (a decompression bomb fails at its header). */
const MAX_PIXELS = 100_000_000;
/**
 * A GIF's decoder holds its whole frame (about 5 bytes per pixel: a 67-KB GIF of 100 megapixels
 * took the process from 67 to 555 MB), where the other formats are read in strips: a quarter.
 */
const GIF_MAX_PIXELS = 25_000_000;
const isGif = (bytes: Buffer) => bytes.length >= 6 && (bytes.toString('latin1', 0, 6) === 'GIF87a' || bytes.toString('latin1', 0, 6) === 'GIF89a');

let sharpModule: Promise<typeof import('sharp')['default']> | null = null;
/**
 * sharp, loaded with the first image (libvips and its bindings: memory a node without uploads never
 * needs). Its cache holds no file open: a temp copy removed after its thumbnail must not keep its
 * disk space, and an object's file is read once.
 */
const loadSharp = () =>
  (sharpModule ??= import('sharp').then(({ default: sharp }) => {
    sharp.cache({ files: 0 });
    return sharp;
  }));

/**
 * Throws when making a preview of the file at `path` failed because it could not be read (the file
 * gone or unreadable since the storage checked it), not because its image cannot be decoded: an
 * error of the file system itself, or a file that cannot be read now. libvips' errors do not tell
 * the two apart ("Input file is missing", and "unsupported image format" for a path that is no
 * file any more, carry no code), so the file's first byte is read again to tell.
 */
async function throwIfUnreadable(path: string, err: unknown): Promise<void> {
  const e = err as NodeJS.ErrnoException | null;
  if (typeof e?.code === 'string' && typeof e.syscall === 'string') throw err;
  await readFileHead(path, 1);
}

export interface Preview {
  width: number;
  height: number;
  thumbnail: Buffer;
}

/**
 * An image's dimensions (as displayed: EXIF rotation applied; a GIF's first frame) and its WebP
 * thumbnail. Given a file's path, libvips reads the file itself, in strips where the format allows:
 * the memory it takes follows the image's width, not the file's size.
 */
export async function makePreview(input: string | Buffer): Promise<Preview> {
  const sharp = await loadSharp();
  const gif = isGif(typeof input === 'string' ? await readFileHead(input, 6) : input);
  const image = sharp(input, { animated: false, limitInputPixels: gif ? GIF_MAX_PIXELS : MAX_PIXELS });
  const meta = await image.metadata();
  const rotated = (meta.orientation ?? 1) >= 5;
  const w = meta.width;
  const h = meta.pageHeight ?? meta.height;
  const thumbnail = await image
    .rotate()
    .resize(THUMBNAIL_SIZE, THUMBNAIL_SIZE, { fit: 'inside', withoutEnlargement: true })
    .webp({ quality: 80 })
    .toBuffer();
  return rotated ? { width: h, height: w, thumbnail } : { width: w, height: h, thumbnail };
}

/**
 * The durable background work of files, on every node, each row claimed by one node (FOR UPDATE
 * SKIP LOCKED and a lease, like the webhook outbox): thumbnails of attached images (then a
 * `file.ready` event through the room log), removal of the objects of deleted messages, deleted
 * rooms, retention and uploads never attached. A node that dies mid-job leaves the row to another
 * once its lease ends: nothing is lost. Runs every FILE_SWEEP_INTERVAL_MS and when woken.
 */
export class FileWorker {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<FileWorkResult> | null = null;
  private queued: Promise<FileWorkResult> | null = null;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly storage: FileStorage,
    private readonly cfg: FilesConfig,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.wake(), this.cfg.sweepIntervalMs);
    this.timer.unref();
  }

  /** Runs a round soon (now, or right after the one in progress). */
  wake(): void {
    if (this.stopped) return;
    void this.runOnce().catch((err: unknown) => this.log.warn({ err }, 'file worker round failed'));
  }

  /**
   * A round that starts now, or right after the one in progress (never one that started before this
   * call: it sees every row handed over before). Calls while one is waiting share it.
   */
  runOnce(): Promise<FileWorkResult> {
    if (this.queued !== null) return this.queued;
    if (this.running === null) return this.begin();
    const queued = this.running
      .catch(() => {})
      .then(() => {
        this.queued = null;
        return this.begin();
      });
    this.queued = queued;
    return queued;
  }

  private begin(): Promise<FileWorkResult> {
    if (this.stopped) return Promise.resolve({ removed: 0, previews: 0 });
    const round = this.round().finally(() => {
      if (this.running === round) this.running = null;
    });
    this.running = round;
    return round;
  }

  private async round(): Promise<FileWorkResult> {
    const result: FileWorkResult = { removed: 0, previews: 0 };
    // Upload tickets that expired unused: handed to the removals below.
    await releaseUnusedUploads(this.store.db(), this.storage, { tenant: null, uploadUrlSeconds: this.cfg.uploadTtlSeconds, batch: 100, max: Number.POSITIVE_INFINITY });
    await this.storage.sweepTemp?.(this.cfg.uploadTtlSeconds * 1000).catch((err: unknown) => this.log.warn({ err }, 'cannot remove stale upload temp files'));
    for (;;) {
      const n = await this.removals();
      result.removed += n;
      if (n < BATCH || this.stopped) break;
    }
    for (;;) {
      const n = await this.previews();
      result.previews += n;
      if (n < BATCH || this.stopped) break;
    }
    if (result.removed) this.log.info({ files: result }, 'file objects removed');
    return result;
  }

  private async removals(): Promise<number> {
    const rows = await claimRemovals(this.store.db(), BATCH, LEASE_MS, this.cfg.unattachedTtlSeconds);
    await Promise.all(
      rows.map(async (r) => {
        try {
          for (const key of keysOf(r.storage_key)) await this.storage.remove(key);
          await finishRemoval(this.store.db(), r.id, this.cfg.uploadTtlSeconds);
        } catch (err) {
          this.log.warn({ err, fileId: r.id }, 'cannot remove a file object (retried later)');
          await noteFileError(this.store.db(), r.id, String(err)).catch(() => {});
        }
      }),
    );
    return rows.length;
  }

  private async previews(): Promise<number> {
    const rows = await claimPreviews(this.store.db(), BATCH, LEASE_MS);
    for (const r of rows) {
      if (!r.message_id) continue;
      // Read from a file (the object's own, or a temp copy of it), never into memory whole. A read
      // that fails is retried; an image that cannot be decoded is not.
      let made: { preview: Preview } | { err: unknown };
      try {
        made = await this.storage.withFile(r.storage_key, this.cfg.maxBytes, (path) =>
          makePreview(path).then(
            (preview) => ({ preview }),
            async (err: unknown) => {
              await throwIfUnreadable(path, err);
              return { err };
            },
          ),
        );
      } catch (err) {
        this.log.warn({ err, fileId: r.id }, 'cannot read an image for its preview');
        await noteFileError(this.store.db(), r.id, String(err)).catch(() => {});
        if (r.attempts < MAX_PREVIEW_ATTEMPTS) continue;
        await this.finish(r.id, r.room_id, r.message_id, null);
        continue;
      }
      let preview: Preview | null = null;
      try {
        if ('err' in made) throw made.err;
        await this.storage.write(`${r.storage_key}${THUMB_SUFFIX}`, made.preview.thumbnail, 'image/webp');
        preview = made.preview;
      } catch (err) {
        this.log.warn({ err, fileId: r.id }, 'cannot make the preview of an image');
      }
      if (!(await this.finish(r.id, r.room_id, r.message_id, preview)) && preview) {
        // The file went meanwhile (its message, room or uploader deleted): another node's removal
        // may have run before this thumbnail was written, which must not outlive it.
        const now = await fileById(this.store.db(), r.id);
        if (!now || now.state === 'deleting') await this.storage.remove(`${r.storage_key}${THUMB_SUFFIX}`);
      }
    }
    return rows.length;
  }

  /** Records the preview (or that there is none) and announces it with `file.ready`; false when the file or its message went. */
  private async finish(fileId: string, roomId: string, messageId: string, p: { width: number; height: number } | null): Promise<boolean> {
    const result = { width: p?.width ?? null, height: p?.height ?? null, ok: p !== null };
    return this.store.transact(async (tx) => {
      if (!(await finishPreview(tx, { id: fileId, messageId }, result))) return false;
      await tx.append({ type: 'file.ready', roomId, fileId, messageId, width: result.width, height: result.height, thumbnail: result.ok });
      return true;
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.queued?.catch(() => {});
    await this.running?.catch(() => {});
  }
}
