import { readFileSync } from 'node:fs';

const NAME = '@trpc-chat/client';

/**
 * The client package's version, from its package.json: next to `dist/` once installed, or
 * `client/package.json` in a checkout.
 */
export function packageVersion(): string {
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === NAME && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not there: try the next place
    }
  }
  return 'unknown';
}
