/**
 * Static serving of the browser page: `/` is index.html, assets get their content types, nothing
 * outside the page's folder can be reached (raw `..`, encoded dots and separators, backslashes,
 * dotfiles), and the API routes are unaffected.
 */
import { mkdirSync, mkdtempDisposableSync, writeFileSync, type DisposableTempDir } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dispose, testEnv, tokenFor, type TestEnv, type TestServer } from './fixture.js';

const SECRET = 'TOP-SECRET-OUTSIDE-THE-WEB-ROOT';
let env: TestEnv;
let tmp: DisposableTempDir;
let dir: string;
let app: TestServer;
let bare: TestServer;

beforeAll(async () => {
  // tmp/secret.txt sits beside the web root tmp/site, which has the page, its assets and a dotfile.
  tmp = mkdtempDisposableSync(join(tmpdir(), 'chat-static-'));
  dir = tmp.path;
  writeFileSync(join(dir, 'secret.txt'), SECRET);
  writeFileSync(join(dir, 'site.txt'), SECRET);
  const site = join(dir, 'site');
  mkdirSync(join(site, 'assets'), { recursive: true });
  writeFileSync(join(site, 'index.html'), '<!doctype html><title>chat</title>');
  writeFileSync(join(site, 'assets', 'app-1234.js'), 'console.log(1)');
  writeFileSync(join(site, 'assets', 'app-1234.css'), 'body{}');
  writeFileSync(join(site, 'favicon.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
  writeFileSync(join(site, '.env'), SECRET);
  writeFileSync(join(site, 'notes.unknownext'), SECRET);
  mkdirSync(join(site, 'sub'));

  env = await testEnv('static');
  app = await env.startServer({}, { webDir: site });
  bare = await env.startServer({}, { webDir: join(dir, 'not-built') });
});

afterAll(() => dispose(tmp, env));

/** A raw request: the path goes on the wire exactly as given (no client-side normalization). */
function raw(base: string, path: string, method = 'GET'): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('static page serving', () => {
  it('serves index.html at / and /index.html, fresh, with a strict CSP', async () => {
    for (const path of ['/', '/index.html', '/?x=1']) {
      const res = await raw(app.url, path);
      expect(res.status, path).toBe(200);
      expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(res.headers['cache-control']).toBe('no-cache');
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(String(res.headers['content-security-policy'])).toContain("default-src 'self'");
      expect(res.body).toBe('<!doctype html><title>chat</title>');
    }
  });

  it('the page is isolated from the windows it opens and that open it: Cross-Origin-Opener-Policy same-origin', async () => {
    for (const path of ['/', '/index.html']) {
      const res = await raw(app.url, path);
      expect(res.headers['cross-origin-opener-policy'], path).toBe('same-origin');
      expect(res.headers['x-frame-options'], path).toBe('DENY');
    }
    // HEAD says the same as GET.
    expect((await raw(app.url, '/', 'HEAD')).headers['cross-origin-opener-policy']).toBe('same-origin');
  });

  it('serves assets with their content types; hashed assets are cached for good', async () => {
    const js = await raw(app.url, '/assets/app-1234.js');
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(js.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(js.body).toBe('console.log(1)');
    const css = await raw(app.url, '/assets/app-1234.css');
    expect(css.headers['content-type']).toBe('text/css; charset=utf-8');
    const svg = await raw(app.url, '/favicon.svg');
    expect(svg.status).toBe(200);
    expect(svg.headers['content-type']).toBe('image/svg+xml');
  });

  it('a web root inside a folder named assets: only its own /assets/ files are cached for good, never index.html', async () => {
    // Say the server is deployed under /srv/assets/chat: the page must still be fresh after an upgrade.
    const site = join(dir, 'assets', 'chat');
    mkdirSync(join(site, 'assets'), { recursive: true });
    writeFileSync(join(site, 'index.html'), '<!doctype html><title>chat</title>');
    writeFileSync(join(site, 'sw.js'), 'self.addEventListener("push", () => {})');
    writeFileSync(join(site, 'assets', 'app-1234.js'), 'console.log(1)');
    await using nested = await env.startServer({}, { webDir: site });
    for (const path of ['/', '/sw.js']) expect((await raw(nested.url, path)).headers['cache-control'], path).toBe('no-cache');
    expect((await raw(nested.url, '/assets/app-1234.js')).headers['cache-control']).toBe('public, max-age=31536000, immutable');
  });

  it('HEAD answers the headers without a body; other methods are not served', async () => {
    const head = await raw(app.url, '/assets/app-1234.js', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.headers['content-length']).toBe(String('console.log(1)'.length));
    expect(head.body).toBe('');
    const post = await raw(app.url, '/', 'POST');
    expect(post.status).toBe(404);
  });

  it('never serves anything outside the web root, dotfiles, folders or unknown types', async () => {
    const attempts = [
      '/../secret.txt',
      '/assets/../../secret.txt',
      '/%2e%2e/secret.txt',
      '/%2E%2E/secret.txt',
      '/assets/%2e%2e/%2e%2e/secret.txt',
      '/..%2fsecret.txt',
      '/assets%2f..%2f..%2fsecret.txt',
      '/..%5csecret.txt',
      '/assets\\..\\..\\secret.txt',
      '/%252e%252e/secret.txt',
      '/..',
      '/.',
      '//secret.txt',
      '/./index.html/../../secret.txt',
      '/../site.txt',
      '/%2e%2e%2fsite.txt',
      '/.env',
      '/assets/.%2e/.env',
      '/notes.unknownext',
      '/sub',
      '/sub/',
      '/assets/',
      '/index.html%00.js',
      '/%ff%fe.js',
      '/missing.js',
      `/${join(dir, 'secret.txt')}`,
    ];
    for (const path of attempts) {
      const res = await raw(app.url, path);
      expect([400, 404], `${path} -> ${res.status}`).toContain(res.status);
      expect(res.body, path).not.toContain(SECRET);
    }
  });

  it('leaves the API routes alone', async () => {
    expect((await raw(app.url, '/healthz')).status).toBe(200);
    const me = await new Promise<number>((resolve, reject) => {
      const { hostname, port } = new URL(app.url);
      request({ host: hostname, port, path: '/trpc/auth.me', headers: { authorization: `Bearer ${tokenFor('probe')}` } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    expect(me).toBe(200);
    expect((await raw(app.url, '/trpc/nope')).status).toBe(404);
  });

  it('says how to build the page when it is not built', async () => {
    const res = await raw(bare.url, '/');
    expect(res.status).toBe(503);
    expect(res.body).toContain('npm run build:web');
    expect((await raw(bare.url, '/assets/app-1234.js')).status).toBe(404);
    expect((await raw(bare.url, '/healthz')).status).toBe(200);
  });
});
