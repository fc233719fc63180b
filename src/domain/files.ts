/** Uploaded files: what `file.*` answers (docs/API.md, "Files"). */

/** `file.createUpload`: where and how to send the bytes (one plain HTTP request). */
export interface UploadTicket {
  fileId: string;
  /**
   * Absolute for S3; for the local driver relative to the server (`/files/...`) unless
   * FILE_PUBLIC_URL is set: resolve it against the server's base URL.
   */
  uploadUrl: string;
  method: 'PUT';
  /** Headers the upload must carry exactly (e.g. `content-type`). */
  headers: Record<string, string>;
  expiresAt: Date;
}

/** `file.get`: the file's metadata and short-lived download URLs (members of its room only). */
export interface FileDto {
  id: string;
  roomId: string;
  /** The message it is attached to (null: uploaded, not sent yet; only its uploader sees it then). */
  messageId: string | null;
  /** The name as the uploader gave it (never used as a path). */
  name: string;
  size: number;
  /** The type the server found in the bytes (declared type for text-like files). */
  mime: string;
  /** Signed, expires at `expiresAt` (FILE_URL_TTL_SECONDS); relative for the local driver unless FILE_PUBLIC_URL is set. */
  url: string;
  /** A WebP preview, longest side at most 512 px (images, once `file.ready` came); null: none (yet). */
  thumbnailUrl: string | null;
  width: number | null;
  height: number | null;
  expiresAt: Date;
}

/** The image types that get a thumbnail and their dimensions. */
export const PREVIEW_TYPES: readonly string[] = ['image/png', 'image/jpeg', 'image/webp', 'image/gif'];
