import { randomBytes } from 'node:crypto';
import type { FilesConfig } from '../../config.js';
import { LocalStorage } from './local.js';
import type { FileStorage } from './storage.js';

export { FileService, type AttachmentInput, type CheckedFile, type CreateUploadInput, type PreparedAttachments } from './service.js';
export { FileWorker, type FileWorkResult, makePreview, THUMBNAIL_SIZE } from './worker.js';
export { LocalStorage, type LocalGrant, UploadInProgress } from './local.js';
export type { FileStorage } from './storage.js';
export { contentDisposition, isInline } from './content.js';

/**
 * The storage driver of FILE_STORAGE. The AWS SDK is loaded only for `s3` (about 8 MB of heap and
 * a tenth of a second of start-up a node on local storage does without).
 */
export async function createStorage(cfg: FilesConfig): Promise<FileStorage> {
  if (cfg.storage === 's3' && cfg.s3) {
    const { S3Storage } = await import('./s3.js');
    return new S3Storage(cfg.s3);
  }
  // Without a key FileService refuses every file call; a random one makes the endpoint accept nothing.
  return new LocalStorage(cfg.dir, cfg.urlSecret ?? randomBytes(32), cfg.publicUrl ?? '', cfg.uploadTtlSeconds * 1000);
}
