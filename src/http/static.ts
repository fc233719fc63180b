import { createReadStream, existsSync, type Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where `npm run build:web` (and `npm start`'s prestart) puts the browser page: web/dist at the
 * project's root, seen from src/http (run from source) or dist/src/http (the compiled build).
 */
export const DEFAULT_WEB_DIR = ['../../web/dist', '../../../web/dist']
  .map((rel) => fileURLToPath(new URL(rel, import.meta.url)))
  .reduce((found, dir) => (existsSync(resolve(dir, '..', 'index.html')) ? dir : found));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.webmanifest': 'application/manifest+json',
};

/**
 * The page's CSP: it talks to its own origin (HTTP and WebSocket on /trpc) and to the origins of
 * the file storage's signed URLs (`fileOrigins`: uploads with XMLHttpRequest, thumbnails as
 * images; S3, or FILE_PUBLIC_URL of the local driver); no inline script or style, no framing.
 */
export function pageCsp(fileOrigins: readonly string[] = []): string {
  const files = fileOrigins.map((o) => ` ${o}`).join('');
  return (
    `default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:${files}; connect-src 'self'${files}; ` +
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
  );
}

export type StaticHandler = (req: IncomingMessage, res: ServerResponse, path: string) => boolean;

/**
 * Serves the built browser page from `root`: `/` is `index.html`, `/assets/*` are Vite's hashed
 * files (cached for a year). Only GET and HEAD, only regular files inside `root` (no `..`, no
 * encoded separators, no dotfiles). Returns false when the path is not one it serves, so the
 * caller answers (404); a page that is not built yet gets a 503 that says how to build it.
 */
export function createStaticHandler(root: string = DEFAULT_WEB_DIR, fileOrigins: readonly string[] = []): StaticHandler {
  const base = resolve(root);
  const csp = pageCsp(fileOrigins);
  return (req, res, path) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false;
    const rel = safeRelative(path);
    if (rel === null) return false;
    const file = resolve(base, rel);
    if (file !== base && !file.startsWith(base + sep)) return false;
    void stat(file).then(
      (st) => send(req, res, file, st, csp, rel.startsWith('assets/')),
      () => {
        if (rel === 'index.html') {
          res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
          res.end('The web page is not built yet: run `npm run build:web` (npm start does it for you).\n');
        } else {
          notFound(res);
        }
      },
    );
    return true;
  };
}

/** `/` -> `index.html`; `/a/b.js` -> `a/b.js`; null for anything that could leave the root. */
function safeRelative(path: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return null;
  }
  if (decoded === '/' || decoded === '/index.html') return 'index.html';
  if (!decoded.startsWith('/') || decoded.includes('\0') || decoded.includes('\\')) return null;
  const parts = decoded.slice(1).split('/');
  // No empty segments, no `.`/`..`, no dotfiles; and only files with a known type.
  if (parts.some((p) => p === '' || p.startsWith('.'))) return null;
  if (!TYPES[extname(decoded).toLowerCase()]) return null;
  return parts.join('/');
}

function send(req: IncomingMessage, res: ServerResponse, file: string, st: Stats, csp: string, hashed: boolean) {
  if (!st.isFile()) return notFound(res);
  const ext = extname(file).toLowerCase();
  const headers: Record<string, string | number> = {
    'content-type': TYPES[ext] ?? 'application/octet-stream',
    'content-length': st.size,
    'last-modified': st.mtime.toUTCString(),
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    // Vite's assets (the root's own assets/, whatever folders the root sits in) carry a content
    // hash in their names; the HTML that names them must be fresh.
    'cache-control': hashed ? 'public, max-age=31536000, immutable' : 'no-cache',
  };
  if (ext === '.html') {
    headers['content-security-policy'] = csp;
    headers['x-frame-options'] = 'DENY';
    // No window it opens or that opens it keeps a handle on it: the page opens others' pages (meeting
    // UIs, files, links) with noopener and needs no popup's opener (no OAuth popup; push goes
    // through the service worker).
    headers['cross-origin-opener-policy'] = 'same-origin';
  }
  res.writeHead(200, headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const stream = createReadStream(file);
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}

function notFound(res: ServerResponse) {
  res.writeHead(404, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify({ error: 'not found' }));
}
