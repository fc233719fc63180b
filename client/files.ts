/**
 * File uploads and downloads of the typed client (docs/CLIENT.md, "Files"). The bytes go in one
 * plain HTTP request to the URL `file.createUpload` hands out (this server's `/files/...` or an
 * S3 presigned URL); progress comes from XMLHttpRequest in browsers and from the request body
 * stream in Node.
 */

/** Upload progress: bytes sent so far of `total`. */
export interface UploadProgress {
  loaded: number;
  total: number;
}

export interface UploadFileOptions {
  /** The name shown to others (default: the File's name, else `file`). Never used as a path. */
  name?: string;
  /** The type (default: the Blob's type, else application/octet-stream); the server checks it against the bytes. */
  mime?: string;
  onProgress?: (p: UploadProgress) => void;
  signal?: AbortSignal;
}

/** What `uploadFile` answers: pass it in `chat.send({ attachments: [file] })`. */
export interface UploadedFile {
  fileId: string;
  name: string;
  size: number;
  mime: string;
}

/** The bytes to upload: a File/Blob (browsers) or bytes (Node, browsers). */
export type UploadBody = Blob | ArrayBuffer | Uint8Array;

const CHUNK = 64 * 1024;

/** The parts of the browser's XMLHttpRequest used here (the client is typed without the DOM library). */
interface Xhr {
  open(method: string, url: string): void;
  setRequestHeader(name: string, value: string): void;
  upload: { onprogress: ((e: { loaded: number }) => void) | null };
  onload: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
  readonly status: number;
  readonly responseText: string;
  abort(): void;
  send(body: Blob): void;
}
const browserXhr = (): (new () => Xhr) | undefined => (globalThis as { XMLHttpRequest?: new () => Xhr }).XMLHttpRequest;

/** An HTTP error of the upload or download itself (not of a tRPC call). */
export class FileTransferError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'FileTransferError';
  }
}

export function toBlob(data: UploadBody, type: string): Blob {
  if (data instanceof Blob) return data;
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  return new Blob([bytes as Uint8Array<ArrayBuffer>], { type });
}

async function refusal(status: number, text: string): Promise<FileTransferError> {
  let detail = text.slice(0, 300);
  try {
    const j = JSON.parse(text) as { error?: unknown };
    if (typeof j.error === 'string') detail = j.error;
  } catch {
    // S3 answers XML: kept as text.
  }
  return new FileTransferError(status, `upload refused (HTTP ${status})${detail ? `: ${detail}` : ''}`);
}

/** PUTs a Blob with progress: XMLHttpRequest where there is one (browsers), else fetch with a body stream (Node). */
export function putWithProgress(url: string, headers: Record<string, string>, blob: Blob, o: Pick<UploadFileOptions, 'onProgress' | 'signal'>): Promise<void> {
  const total = blob.size;
  const XHR = browserXhr();
  if (XHR) {
    return new Promise((resolve, reject) => {
      const xhr = new XHR();
      xhr.open('PUT', url);
      for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (e) => o.onProgress?.({ loaded: e.loaded, total });
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          o.onProgress?.({ loaded: total, total });
          resolve();
        } else void refusal(xhr.status, xhr.responseText).then(reject);
      };
      xhr.onerror = () => reject(new FileTransferError(0, 'upload failed: network error'));
      xhr.onabort = () => reject(o.signal?.reason ?? new Error('upload aborted'));
      o.signal?.addEventListener('abort', () => xhr.abort(), { once: true });
      xhr.send(blob);
    });
  }
  return (async () => {
    let loaded = 0;
    let offset = 0;
    // Progress counts what the request has taken from the body (sent, or in the socket's buffer).
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (offset >= total) {
          c.close();
          return;
        }
        const chunk = new Uint8Array(await blob.slice(offset, offset + CHUNK).arrayBuffer());
        offset += chunk.length;
        c.enqueue(chunk);
        loaded += chunk.length;
        o.onProgress?.({ loaded, total });
      },
    });
    // Node's fetch sends the given content-length with a stream body (S3 needs it; browsers use XHR above).
    const init: RequestInit & { duplex: 'half' } = {
      method: 'PUT',
      headers: { ...headers, 'content-length': String(total) },
      body: total === 0 ? null : body,
      duplex: 'half',
      ...(o.signal ? { signal: o.signal } : {}),
    };
    const res = await fetch(url, init);
    const text = await res.text();
    if (!res.ok) throw await refusal(res.status, text);
    if (total === 0) o.onProgress?.({ loaded: 0, total: 0 });
  })();
}
