#!/usr/bin/env node
/**
 * Builds the browser page (web/) into web/dist with Vite, which the server serves at `/`.
 * Runs before `npm start` and the browser test; builds only when web/dist is missing or older
 * than its sources (`--force` always builds). The new build is written beside web/dist and
 * swapped in, so a running server never sees a half-written folder for long.
 *
 * Without Vite (an install with `--omit=dev`) it keeps an existing web/dist and otherwise says
 * how to get one; the API works either way.
 */
import { existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const web = join(root, 'web');
const dist = join(web, 'dist');
const force = process.argv.includes('--force');

/** Newest modification time of the page's sources (and of the client library it bundles). */
function newestSource() {
  let newest = 0;
  const visit = (p) => {
    const st = statSync(p);
    if (st.isDirectory()) {
      for (const name of readdirSync(p)) if (name !== 'dist' && name !== 'node_modules') visit(join(p, name));
    } else newest = Math.max(newest, st.mtimeMs);
  };
  visit(web);
  visit(join(root, 'client'));
  for (const f of ['package-lock.json', 'tsconfig.json']) if (existsSync(join(root, f))) visit(join(root, f));
  return newest;
}

const builtAt = existsSync(join(dist, 'index.html')) ? statSync(join(dist, 'index.html')).mtimeMs : 0;
if (!force && builtAt > 0 && builtAt >= newestSource()) {
  console.log('web: web/dist is up to date');
  process.exit(0);
}

let vite;
try {
  vite = await import('vite');
} catch {
  if (builtAt > 0) {
    console.warn('web: vite is not installed (npm install --omit=dev?): serving the existing web/dist');
  } else {
    console.warn('web: vite is not installed and web/dist is missing: run `npm install` then `npm run build:web` to get the page at /');
  }
  process.exit(0);
}

const tmp = join(web, `.dist-${process.pid}`);
const started = Date.now();
try {
  await vite.build({
    configFile: join(web, 'vite.config.ts'),
    logLevel: 'warn',
    build: { outDir: tmp, emptyOutDir: true },
  });
  rmSync(dist, { recursive: true, force: true });
  try {
    renameSync(tmp, dist);
  } catch (err) {
    // Another build finished first and put its (identical) result in place.
    if (!existsSync(join(dist, 'index.html'))) throw err;
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
console.log(`web: built web/dist in ${Date.now() - started} ms`);
