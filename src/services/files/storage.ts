/**
 * Where the bytes of uploaded files live: one interface, two drivers (FILE_STORAGE=local | s3).
 * Keys are generated (`<tenant hash>/<file id>` plus a suffix), never names given by users.
 * Uploads go to `<key>.upload`; attaching promotes them to `<key>` before the bytes are checked,
 * so nothing sent to an upload URL later can replace what was checked.
 */
export interface SignedUpload {
  url: string;
  /** Headers the upload request must carry exactly (they are part of the signature). */
  headers: Record<string, string>;
}

export interface DownloadOptions {
  /** The file's name for Content-Disposition. */
  name: string;
  /** The Content-Type to serve. */
  mime: string;
  /** `inline` (images and PDF) or `attachment`. */
  inline: boolean;
  expiresAt: Date;
}

export interface FileStorage {
  readonly kind: 'local' | 's3';
  /** A URL that accepts one PUT of exactly `size` bytes of type `mime` until `expiresAt`. */
  uploadUrl(key: string, o: { size: number; mime: string; expiresAt: Date }): Promise<SignedUpload>;
  /** A URL that serves the object (GET, HEAD, ranges) until `expiresAt`. */
  downloadUrl(key: string, o: DownloadOptions): Promise<string>;
  /** The object's size, or null when there is none. */
  stat(key: string): Promise<{ size: number } | null>;
  /** Moves (or copies and removes) an object to another key; false when there is no object at `from`. */
  promote(from: string, to: string): Promise<boolean>;
  /** The first `bytes` bytes of the object (fewer for a smaller one). */
  readHead(key: string, bytes: number): Promise<Uint8Array>;
  /**
   * Runs `fn` on a file that holds the object's bytes (refused when larger than `maxBytes`): the
   * object's own file (local), or a copy streamed from the store into a temp file of the OS temp
   * directory and removed once `fn` settles (s3). The bytes never sit in memory whole: an image's
   * thumbnail is made from the file, which libvips reads in strips.
   */
  withFile<T>(key: string, maxBytes: number, fn: (path: string) => Promise<T>): Promise<T>;
  write(key: string, data: Buffer, mime: string): Promise<void>;
  /** Removes an object; no object is not an error. */
  remove(key: string): Promise<void>;
  /** Removes temp files of uploads not written for `staleMs` (drivers that keep any). */
  sweepTemp?(staleMs: number): Promise<number>;
  close(): void;
}

/** The suffixes of a file's objects besides the file itself. */
export const UPLOAD_SUFFIX = '.upload';
export const THUMB_SUFFIX = '.thumb';

/** Every key a file may have objects under (removal deletes them all). */
export const keysOf = (key: string) => [key, `${key}${UPLOAD_SUFFIX}`, `${key}${THUMB_SUFFIX}`];

/** What a storage key looks like: nothing else reaches the file system or the bucket. */
export const STORAGE_KEY = /^[0-9a-f]{16}\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(\.upload|\.thumb)?$/;
