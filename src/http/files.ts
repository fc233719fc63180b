import { createReadStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import type { Logger } from '../logger.js';
import { contentDisposition, type LocalStorage, UploadInProgress } from '../services/files/index.js';

const PREFIX = '/files/';

class TooLarge extends Error {}

/**
 * Browsers upload and download with the signed URL alone (no cookie, no token): any origin may use
 * a URL it was given, which is what `*` allows; the signature is the credential.
 */
const CORS = {
  'access-control-allow-origin': '*',
  'access-control-expose-headers': 'content-length, content-range, content-disposition, accept-ranges, etag',
};

function fail(res: ServerResponse, status: number, error: string, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...CORS, ...extra });
  res.end(JSON.stringify({ error }));
}

/** One `bytes=` range of a file of `size` bytes: `[start, end]`, null (whole file) or 'unsatisfiable'. */
export function parseRange(header: string | undefined, size: number): [number, number] | null | 'unsatisfiable' {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  // Several ranges or another unit: served whole (allowed by RFC 9110).
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return null;
  }
  if (start >= size || size === 0) return 'unsatisfiable';
  return [start, end];
}

/**
 * The local storage driver's endpoint (FILE_STORAGE=local): `PUT /files/<key>?...` takes exactly the
 * signed number of bytes (a larger body is cut off and refused with 413, a shorter one refused with
 * 400, nothing is kept of either); `GET`/`HEAD /files/<key>?...` serve the file with the signed type
 * and disposition, `X-Content-Type-Options: nosniff`, a sandboxing CSP and single byte ranges.
 * Returns false for other paths.
 */
export function fileHandler(storage: LocalStorage, log: Logger, uploadOwned: (uploadKey: string) => Promise<boolean>) {
  return (req: IncomingMessage, res: ServerResponse, path: string): boolean => {
    if (!path.startsWith(PREFIX)) return false;
    const method = req.method ?? 'GET';
    if (method === 'OPTIONS') {
      res.writeHead(204, {
        ...CORS,
        'access-control-allow-methods': 'GET, HEAD, PUT',
        'access-control-allow-headers': 'content-type, range',
        'access-control-max-age': '600',
      });
      res.end();
      return true;
    }
    const key = path.slice(PREFIX.length);
    const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    const grant = storage.verify(method, key, query);
    if (typeof grant === 'string') {
      const status = grant === 'method not allowed' ? 405 : grant === 'no such file' ? 404 : 403;
      fail(res, status, grant, status === 405 ? { allow: 'GET, HEAD, PUT' } : {});
      req.resume();
      return true;
    }
    // A failure of the storage itself (the directory unwritable, the disk full) answers 500; it must
    // never be a rejection nobody handles, which would end the process.
    const failed = (err: unknown) => {
      log.error({ err, key: grant.key }, 'file storage failed');
      fail(res, 500, 'storage failed');
      req.resume();
    };
    if (grant.method === 'PUT') upload(req, res, storage, grant.key, grant.size, log, uploadOwned).catch(failed);
    else download(req, res, storage, grant.key, { mime: grant.mime, inline: grant.inline, name: grant.name }, method === 'HEAD').catch(failed);
    return true;
  };
}

async function upload(
  req: IncomingMessage,
  res: ServerResponse,
  storage: LocalStorage,
  key: string,
  size: number,
  log: Logger,
  uploadOwned: (uploadKey: string) => Promise<boolean>,
): Promise<void> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > size) {
    // Refused before a byte is read; the connection closes so the body is not read either.
    fail(res, 413, `this upload takes exactly ${size} bytes`, { connection: 'close' });
    res.once('finish', () => req.destroy());
    return;
  }
  let tmp: Awaited<ReturnType<LocalStorage['uploadTemp']>>;
  try {
    tmp = await storage.uploadTemp(key);
  } catch (err) {
    if (!(err instanceof UploadInProgress)) throw err;
    // One upload per URL at a time: a second one would hold another signed size on disk.
    fail(res, 409, err.message, { connection: 'close' });
    res.once('finish', () => req.destroy());
    return;
  }
  let received = 0;
  const limit = new Transform({
    transform(chunk: Buffer, _enc, done) {
      received += chunk.length;
      if (received > size) return done(new TooLarge());
      done(null, chunk);
    },
  });
  try {
    await pipeline(req, limit, tmp.handle.createWriteStream());
    if (received !== size) {
      await tmp.abort();
      return fail(res, 400, `this upload takes exactly ${size} bytes; ${received} were sent`);
    }
    await tmp.commit();
    // A PUT that outlasted its URL (a slow client, up to the server's request timeout) may find its
    // ticket released by the file worker meanwhile: no row would own these bytes, no quota count
    // them, no removal ever come. Bytes of a file being removed (its message or room deleted) are
    // not kept either. Checked after the bytes are in place: a release after this check finds them
    // and leaves the ticket, a removal after it takes them with the file's other keys.
    if (!(await uploadOwned(key))) {
      await storage.remove(key);
      return fail(res, 410, 'this upload was given up (its link expired before the bytes arrived, or its message or room was deleted): nothing was kept');
    }
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', ...CORS });
    res.end(JSON.stringify({ size: received }));
  } catch (err) {
    await tmp.abort().catch((abortErr: unknown) => log.warn({ err: abortErr }, 'could not remove a failed upload'));
    if (err instanceof TooLarge) {
      fail(res, 413, `this upload takes exactly ${size} bytes`, { connection: 'close' });
      res.once('finish', () => req.destroy());
      return;
    }
    // The client went away mid-upload: nothing is kept.
    if (!res.headersSent && !req.destroyed) log.warn({ err }, 'file upload failed');
    fail(res, 500, 'upload failed');
  }
}

async function download(
  req: IncomingMessage,
  res: ServerResponse,
  storage: LocalStorage,
  key: string,
  o: { mime: string; inline: boolean; name: string },
  headOnly: boolean,
): Promise<void> {
  const stat = await storage.stat(key).catch(() => null);
  if (!stat) return fail(res, 404, 'no such file');
  const headers: Record<string, string> = {
    ...CORS,
    // Only a type shown inline is named: any other file (a script, a style sheet, HTML) is bytes to
    // save, so a page of this origin can never load an upload as its script or style (nosniff).
    'content-type': o.inline ? o.mime || 'application/octet-stream' : 'application/octet-stream',
    'content-disposition': contentDisposition(o.name || 'file', o.inline),
    'x-content-type-options': 'nosniff',
    // Shown inline or not, a file is never a page of this origin (no scripts, no plugins).
    'content-security-policy': "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox",
    'cache-control': 'private, max-age=60',
    'accept-ranges': 'bytes',
  };
  const range = parseRange(req.headers.range, stat.size);
  if (range === 'unsatisfiable') return fail(res, 416, 'range not satisfiable', { 'content-range': `bytes */${stat.size}` });
  const [start, end] = range ?? [0, stat.size - 1];
  const length = stat.size === 0 ? 0 : end - start + 1;
  res.writeHead(range ? 206 : 200, {
    ...headers,
    'content-length': String(length),
    ...(range ? { 'content-range': `bytes ${start}-${end}/${stat.size}` } : {}),
  });
  if (headOnly || length === 0) {
    res.end();
    return;
  }
  await pipeline(createReadStream(storage.path(key), { start, end }), res).catch(() => res.destroy());
}
