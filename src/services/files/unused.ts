import { expiredUploads, releaseUploads } from '../../store/files.js';
import type { Db } from '../../store/database.js';
import type { FileStorage } from './storage.js';
import { UPLOAD_SUFFIX } from './storage.js';

/**
 * Releases upload tickets that were never used: unsent uploads whose URL has expired (plus the
 * clocks' margin) with no object under their keys. No bytes can come for them any more, so they
 * stop counting toward the tenant's quota and go to the file worker for removal. An upload whose
 * bytes are there keeps counting until it is sent or FILE_UNATTACHED_TTL_SECONDS removes it.
 * Looks at up to `max` rows (of `tenant`, or of every tenant), `batch` at a time in id order, so
 * uploads whose bytes are there never hide the unused ones behind them; returns how many were
 * released.
 */
export async function releaseUnusedUploads(
  db: Db,
  storage: FileStorage,
  o: { tenant: string | null; uploadUrlSeconds: number; batch: number; max: number },
): Promise<number> {
  let released = 0;
  let after: string | null = null;
  for (let seen = 0; seen < o.max; ) {
    const rows = await expiredUploads(db, o.tenant, o.uploadUrlSeconds, after, Math.min(o.batch, o.max - seen));
    const unused: string[] = [];
    for (const r of rows) {
      // A refused send moved the bytes from the upload key to the file's key: either counts.
      if ((await storage.stat(`${r.storage_key}${UPLOAD_SUFFIX}`)) === null && (await storage.stat(r.storage_key)) === null) unused.push(r.id);
    }
    released += await releaseUploads(db, unused, o.uploadUrlSeconds);
    seen += rows.length;
    if (rows.length < o.batch) break;
    after = rows[rows.length - 1]!.id;
  }
  return released;
}
