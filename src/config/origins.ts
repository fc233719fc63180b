import type { z } from 'zod';

/**
 * Schemes never taken as an app's origin: the web's own (a page's origin is http(s); `ws(s)` is the
 * socket's URL, not the page's) and ones a browser never sends as an origin. A typo of http(s) is
 * not an app's scheme either (`nearHttp`).
 */
const NOT_APP_SCHEMES = new Set(['ws', 'wss', 'ftp', 'file', 'data', 'blob', 'javascript', 'about', 'filesystem', 'null']);

/** Edit distance (insertions, deletions, substitutions) between two short strings. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length]!;
}

/** `htps`, `httpx`, `hxxps`: within two edits of http or https, so most likely a mistyped web origin. */
const nearHttp = (scheme: string): boolean => distance(scheme, 'http') <= 2 || distance(scheme, 'https') <= 2;

/**
 * The origin of an app's web view or a browser extension (`capacitor://localhost`,
 * `ionic://localhost`, `chrome-extension://<id>`): a scheme of its own and a host, lower-cased, or
 * null for anything else (http(s) origins included: they are URLs' origins, `normaliseOrigin`).
 */
export function appOrigin(value: string): string | null {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([a-z0-9._-]+(?::\d{1,5})?)$/i.exec(value);
  if (!m) return null;
  const scheme = m[1]!.toLowerCase();
  if (nearHttp(scheme) || NOT_APP_SCHEMES.has(scheme)) return null;
  return `${scheme}://${m[2]!.toLowerCase()}`;
}

/**
 * CORS_ORIGINS: a comma list of exact browser origins (`scheme://host[:port]`), each normalised as
 * browsers send it in `Origin` (`HTTPS://App.Example.com:443` -> `https://app.example.com`), and
 * origins of hybrid apps and extensions with a scheme of their own (`capacitor://localhost`). No
 * wildcard, no path: every bad entry is one issue naming it.
 */
export function corsOrigins(raw: string | undefined, ctx: z.RefinementCtx): string[] {
  const origins = new Set<string>();
  for (const entry of (raw ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    if (entry.includes('*')) {
      ctx.addIssue(`"${entry}": wildcards are refused; list the exact origin of each frontend, e.g. https://app.example.com (docs/SECURITY.md says why)`);
      continue;
    }
    const app = appOrigin(entry);
    if (app !== null) {
      origins.add(app);
      continue;
    }
    let url: URL | null = null;
    try {
      url = new URL(entry);
    } catch {
      // not a URL at all: reported below
    }
    const parts = /^https?:\/\/([^/?#\\]+)(.*)$/i.exec(entry);
    if (/^wss?:\/\//i.test(entry)) {
      ctx.addIssue(`"${entry}" is a WebSocket URL: list the origin of the page that opens it, e.g. https://app.example.com`);
    } else if (!url || !parts || url.username || url.password) {
      ctx.addIssue(
        `"${entry}" is not an origin: expected http(s)://host[:port], e.g. https://app.example.com, or an app's own scheme and host, e.g. capacitor://localhost`,
      );
    } else if (parts[2]) {
      ctx.addIssue(`"${entry}" has a path: an origin is scheme://host[:port] only (here ${url.origin})`);
    } else {
      origins.add(url.origin);
    }
  }
  return [...origins];
}
