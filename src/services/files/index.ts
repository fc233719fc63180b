import { randomBytes } from 'node:crypto';
import type { FilesConfig } from '../../config.js';
import { LocalStorage } from './local.js';
import { S3Storage } from './s3.js';
import type { FileStorage } from './storage.js';

export { FileService, type AttachmentInput, type CheckedFile, type CreateUploadInput, type PreparedAttachments } from './service.js';
export { FileWorker, type FileWorkResult, makePreview, THUMBNAIL_SIZE } from './worker.js';
export { LocalStorage, type LocalGrant } from './local.js';
export { S3Storage } from './s3.js';
export type { FileStorage } from './storage.js';
export { contentDisposition, isInline } from './content.js';

/** The storage driver of FILE_STORAGE. */
export function createStorage(cfg: FilesConfig): FileStorage {
  if (cfg.storage === 's3' && cfg.s3) return new S3Storage(cfg.s3);
  // Without a key FileService refuses every file call; a random one makes the endpoint accept nothing.
  return new LocalStorage(cfg.dir, cfg.urlSecret ?? randomBytes(32), cfg.publicUrl ?? '');
}
