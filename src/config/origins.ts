import type { z } from 'zod';

/**
 * CORS_ORIGINS: a comma list of exact browser origins (`scheme://host[:port]`), each normalised as
 * browsers send it in `Origin` (`HTTPS://App.Example.com:443` -> `https://app.example.com`). No
 * wildcard, no path: every bad entry is one issue naming it.
 */
export function corsOrigins(raw: string | undefined, ctx: z.RefinementCtx): string[] {
  const origins = new Set<string>();
  for (const entry of (raw ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    if (entry.includes('*')) {
      ctx.addIssue(`"${entry}": wildcards are refused; list the exact origin of each frontend, e.g. https://app.example.com (docs/SECURITY.md says why)`);
      continue;
    }
    let url: URL | null = null;
    try {
      url = new URL(entry);
    } catch {
      // not a URL at all: reported below
    }
    const parts = /^https?:\/\/([^/?#\\]+)(.*)$/i.exec(entry);
    if (!url || !parts || url.username || url.password) {
      ctx.addIssue(`"${entry}" is not an origin: expected http(s)://host[:port], e.g. https://app.example.com`);
    } else if (parts[2]) {
      ctx.addIssue(`"${entry}" has a path: an origin is scheme://host[:port] only (here ${url.origin})`);
    } else {
      origins.add(url.origin);
    }
  }
  return [...origins];
}
