/**
 * The S3 storage driver (FILE_STORAGE=s3) against s3rver, an S3 API on a temporary folder, started
 * here on a private loopback port: presigned PUT straight to the store (signed with its length and
 * type; s3rver checks no V4 signature, so the test checks it with AWS's algorithm, and the re-check
 * at send refuses another size), the checks at send, presigned GET with the file's type and disposition, the preview, and
 * removal when the message is deleted. And the browser page in Chromium uploading straight to the
 * store (the bucket's CORS as docs/OPERATIONS.md gives it, the page's CSP allowing the store).
 */
import { createHash, createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildWebPage, TestBrowser } from './fixture/browser.js';
import S3rver from 's3rver';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createChatClient, type UploadProgress } from '../client/index.js';
import { fileOrigins, type S3Config } from '../src/config.js';
import { S3Storage } from '../src/services/files/s3.js';
import {
  clientFor,
  expectTRPCError,
  makeConfig,
  openLive,
  roomKit,
  testEnv,
  tokenFor,
  uuid,
  waitFor,
  type RoomEvent,
  type TestEnv,
  type TestServer,
} from './fixture.js';

/** The bucket CORS of docs/OPERATIONS.md, for the pages of this test's servers (any loopback port). */
const CORS = `<CORSConfiguration><CORSRule>
  <AllowedOrigin>http://127.0.0.1:*</AllowedOrigin>
  <AllowedMethod>PUT</AllowedMethod><AllowedMethod>GET</AllowedMethod><AllowedMethod>HEAD</AllowedMethod>
  <AllowedHeader>content-type</AllowedHeader><AllowedHeader>range</AllowedHeader>
  <ExposeHeader>etag</ExposeHeader><ExposeHeader>content-length</ExposeHeader><ExposeHeader>content-range</ExposeHeader><ExposeHeader>content-disposition</ExposeHeader>
  <MaxAgeSeconds>600</MaxAgeSeconds>
</CORSRule></CORSConfiguration>`;

const BUCKET = 'chat-files';
let dir: string;
let s3: S3rver;
let env: TestEnv;
let server: TestServer;
const { users, as, groupRoom } = roomKit(() => server);

beforeAll(async () => {
  // The page the server serves at `/` (built only when web/dist is missing or stale).
  buildWebPage();
  dir = mkdtempSync(join(tmpdir(), 'chat-files-s3-'));
  s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: [{ name: BUCKET, configs: [CORS] }] });
  const { port } = await s3.run();
  env = await testEnv('files_s3');
  server = await env.startServer({
    files: {
      ...makeConfig().files,
      storage: 's3',
      maxBytes: 1024 * 1024,
      s3: { endpoint: `http://127.0.0.1:${port}`, publicEndpoint: undefined, region: 'us-east-1', bucket: BUCKET, accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true },
    },
  });
});

afterAll(async () => {
  await server?.close();
  await env?.[Symbol.asyncDispose]();
  await s3?.close();
  rmSync(dir, { recursive: true, force: true });
});

const storage = () => server.app.services.files.storage;

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const hmac = (key: string | Buffer, s: string) => createHmac('sha256', key).update(s).digest();
/** RFC 3986 encoding as SigV4 wants it. */
const enc = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/**
 * What S3 and MinIO check on a presigned request (AWS Signature V4, query form): the signature of
 * the URL is the one of this method and these header values. s3rver does not check it, so the
 * check is made here, with AWS's algorithm.
 */
function presignedAccepts(url: string, method: string, headers: Record<string, string>, secretAccessKey: string): boolean {
  const u = new URL(url);
  const q = [...u.searchParams].filter(([k]) => k !== 'X-Amz-Signature').map(([k, v]) => `${enc(k)}=${enc(v)}`);
  const signed = u.searchParams.get('X-Amz-SignedHeaders')!.split(';');
  const values: Record<string, string> = { host: u.host, ...headers };
  const canonical = [method, u.pathname, q.sort().join('&'), signed.map((h) => `${h}:${values[h]?.trim() ?? ''}\n`).join(''), signed.join(';'), 'UNSIGNED-PAYLOAD'].join('\n');
  const [, day, region, service] = u.searchParams.get('X-Amz-Credential')!.split('/') as [string, string, string, string];
  const toSign = ['AWS4-HMAC-SHA256', u.searchParams.get('X-Amz-Date')!, `${day}/${region}/${service}/aws4_request`, sha256(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secretAccessKey}`, day), region), service), 'aws4_request');
  return hmac(key, toSign).toString('hex') === u.searchParams.get('X-Amz-Signature');
}
const storageKey = async (fileId: string) => (await env.sql<{ storage_key: string }>('select storage_key from file where id = $1', [fileId]))[0]?.storage_key;

describe('S3 driver (s3rver)', () => {
  it('presigned PUT straight to the store, checked attach, metadata in events, presigned GET for members, preview, removal on delete', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!]);
    await using stream = await openLive(server.app, bob!, room.id);
    const image = await sharp({ create: { width: 640, height: 1280, channels: 4, background: '#00aa0080' } }).webp().toBuffer();

    const ticket = await as(alice!).file.createUpload({ roomId: room.id, name: 'tall é.webp', size: image.length, mime: 'image/webp' });
    const url = new URL(ticket.uploadUrl);
    expect(url.origin).not.toBe(new URL(server.url).origin);
    expect(url.searchParams.get('X-Amz-SignedHeaders')).toContain('content-length');
    // The size and type are signed: a store that checks signatures (S3, MinIO, R2) refuses any other.
    const exact = { 'content-type': 'image/webp', 'content-length': String(image.length) };
    expect(presignedAccepts(ticket.uploadUrl, 'PUT', exact, 'S3RVER')).toBe(true);
    expect(presignedAccepts(ticket.uploadUrl, 'PUT', { ...exact, 'content-length': String(image.length + 1) }, 'S3RVER')).toBe(false);
    expect(presignedAccepts(ticket.uploadUrl, 'PUT', { ...exact, 'content-type': 'text/html' }, 'S3RVER')).toBe(false);
    expect(presignedAccepts(ticket.uploadUrl, 'GET', exact, 'S3RVER')).toBe(false);
    // Another length than signed: S3 and MinIO refuse it (the length is a signed header); s3rver
    // checks no V4 signature, so here it is the re-check at send that refuses it.
    const wrong = await fetch(ticket.uploadUrl, { method: 'PUT', headers: ticket.headers, body: image.subarray(0, image.length - 1) });
    expect(wrong.status).toBe(200);
    await expectTRPCError(
      as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x', attachments: [{ fileId: ticket.fileId }] }),
      'BAD_REQUEST',
      `file "tall é.webp" has ${image.length - 1} bytes, but ${image.length} were declared`,
    );
    const put = await fetch(ticket.uploadUrl, { method: 'PUT', headers: ticket.headers, body: image });
    expect(put.status, await put.clone().text()).toBe(200);

    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: '', kind: 'image', attachments: [{ fileId: ticket.fileId }] });
    expect(m.attachments).toEqual([{ fileId: ticket.fileId, name: 'tall é.webp', size: image.length, mime: 'image/webp', width: null, height: null, thumbnail: false }]);

    const events: RoomEvent[] = [];
    for (;;) {
      const { event } = await stream.next(10_000);
      events.push(event);
      if (event.type === 'file.ready') break;
    }
    expect(events[0]).toMatchObject({ type: 'message.new', message: { id: m.id } });
    expect(events.at(-1)).toMatchObject({ type: 'file.ready', fileId: ticket.fileId, messageId: m.id, width: 640, height: 1280, thumbnail: true });

    const got = await as(bob!).file.get({ fileId: ticket.fileId });
    expect(presignedAccepts(got.url, 'GET', {}, 'S3RVER')).toBe(true);
    expect(Number(new URL(got.url).searchParams.get('X-Amz-Expires'))).toBeLessThanOrEqual(300);
    await expectTRPCError(as(carol!).file.get({ fileId: ticket.fileId }), 'NOT_FOUND', 'file not found');
    const res = await fetch(got.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/webp');
    expect(res.headers.get('content-disposition')).toBe(`inline; filename="tall _.webp"; filename*=UTF-8''tall%20%C3%A9.webp`);
    expect(Buffer.from(await res.arrayBuffer()).equals(image)).toBe(true);
    const thumb = await sharp(Buffer.from(await (await fetch(got.thumbnailUrl!)).arrayBuffer())).metadata();
    expect([thumb.width, thumb.height]).toEqual([256, 512]);
    const ranged = await fetch(got.url, { headers: { range: 'bytes=0-3' } });
    expect([ranged.status, Buffer.from(await ranged.arrayBuffer()).toString('latin1')]).toEqual([206, 'RIFF']);

    // A type that does not match the bytes is refused at send, as with the local driver.
    const fake = await as(alice!).file.createUpload({ roomId: room.id, name: 'f.pdf', size: image.length, mime: 'application/pdf' });
    expect((await fetch(fake.uploadUrl, { method: 'PUT', headers: fake.headers, body: image })).status).toBe(200);
    await expectTRPCError(
      as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x', attachments: [{ fileId: fake.fileId }] }),
      'BAD_REQUEST',
      'file "f.pdf" was declared application/pdf, but its bytes are image/webp, not application/pdf',
    );

    const key = (await storageKey(ticket.fileId))!;
    expect(await storage().stat(key)).toEqual({ size: image.length });
    await as(alice!).chat.delete({ messageId: m.id });
    await server.app.services.fileWorker.runOnce();
    for (const k of [key, `${key}.upload`, `${key}.thumb`]) expect(await storage().stat(k)).toBeNull();
    expect((await fetch(got.url)).status).toBe(404);
  });

  it('the typed client uploads to the store with progress (a body stream with its Content-Length) and downloads through the presigned URL', async () => {
    const chat = createChatClient({ url: server.url, token: tokenFor('s3-client'), lazy: true });
    try {
      const room = await chat.trpc.room.create.mutate({ kind: 'group', name: 's3' });
      const bytes = new TextEncoder().encode('x,y\n'.repeat(100_000));
      const progress: UploadProgress[] = [];
      const file = await chat.uploadFile(room.id, bytes, { name: 'data.csv', mime: 'text/csv', onProgress: (p) => progress.push(p) });
      expect(progress.length).toBeGreaterThan(3);
      expect(progress.at(-1)).toEqual({ loaded: bytes.length, total: bytes.length });
      const m = await chat.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: '', kind: 'file', attachments: [file] });
      expect(m.attachments[0]).toMatchObject({ fileId: file.fileId, size: bytes.length, mime: 'text/csv' });
      const { response } = await chat.downloadFile(file.fileId);
      expect(response.headers.get('content-disposition')).toBe(`attachment; filename="data.csv"; filename*=UTF-8''data.csv`);
      expect(new Uint8Array(await response.arrayBuffer())).toEqual(bytes);
    } finally {
      await chat.close();
    }
  });

  it('the page allows the store in its CSP (connect-src, img-src), as the SDK addresses it for any configuration', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const store = new URL((await as(alice!).file.createUpload({ roomId: room.id, name: 'x', size: 1, mime: 'text/plain' })).uploadUrl).origin;
    const csp = String((await fetch(server.url)).headers.get('content-security-policy'));
    const directive = (name: string) => csp.split(';').map((d) => d.trim().split(' ')).find((d) => d[0] === name)?.slice(1);
    // Path-style here (S3_FORCE_PATH_STYLE): the endpoint's origin is the store's only one.
    expect(directive('connect-src')).toEqual(["'self'", store]);
    expect(directive('img-src')).toEqual(["'self'", 'data:', store]);
    // AWS (no endpoint; virtual-hosted, or path-style for a bucket name with dots), R2, MinIO behind
    // another public address: each presigned URL's origin is one the page allows.
    const key = `${'0'.repeat(16)}/${uuid()}`;
    const cases: S3Config[] = [
      { endpoint: undefined, publicEndpoint: undefined, region: 'eu-central-1', bucket: 'chat-files', accessKeyId: 'k', secretAccessKey: 's', forcePathStyle: false },
      { endpoint: undefined, publicEndpoint: undefined, region: 'us-east-1', bucket: 'chat.files', accessKeyId: 'k', secretAccessKey: 's', forcePathStyle: false },
      { endpoint: 'https://acc.r2.cloudflarestorage.com', publicEndpoint: undefined, region: 'auto', bucket: 'chat-files', accessKeyId: 'k', secretAccessKey: 's', forcePathStyle: false },
      { endpoint: 'http://minio:9000', publicEndpoint: 'http://localhost:9000', region: 'us-east-1', bucket: 'chat-files', accessKeyId: 'k', secretAccessKey: 's', forcePathStyle: true },
    ];
    for (const s3cfg of cases) {
      const driver = new S3Storage(s3cfg);
      const origins = fileOrigins({ ...makeConfig().files, storage: 's3', s3: s3cfg });
      const up = new URL((await driver.uploadUrl(key, { size: 1, mime: 'text/plain', expiresAt: new Date(Date.now() + 60_000) })).url).origin;
      const down = new URL(await driver.downloadUrl(key, { name: 'x', mime: 'text/plain', inline: false, expiresAt: new Date(Date.now() + 60_000) })).origin;
      expect(origins, JSON.stringify(s3cfg)).toContain(up);
      expect(origins, JSON.stringify(s3cfg)).toContain(down);
      driver.close();
    }
    // The local driver: its own origin, or FILE_PUBLIC_URL's.
    expect(fileOrigins({ ...makeConfig().files, storage: 'local', publicUrl: null })).toEqual([]);
    expect(fileOrigins({ ...makeConfig().files, storage: 'local', publicUrl: 'https://files.example.com/chat' })).toEqual(['https://files.example.com']);
  });

  it('the browser page (Chromium) uploads a picked image straight to the store with progress, and shows its preview from the store', async () => {
    const browser = await TestBrowser.launch();
    try {
      const errors: string[] = [];
      const { page } = await browser.newPage(errors, { timeoutMs: 10_000, viewport: { width: 1180, height: 760 }, consoleErrors: true });
      const puts: string[] = [];
      page.on('requestfinished', (r) => {
        if (r.method() === 'PUT') puts.push(new URL(r.url()).origin);
      });

      await page.goto(server.url);
      await page.locator('#login-username').fill('pia');
      await page.locator('#login-name').fill('Pia');
      await page.locator('#login-form button[type=submit]').click();
      await page.locator('#me').filter({ hasText: 'Pia' }).waitFor();
      await page.waitForSelector('#conn[data-state="open"]');
      await using api = clientFor(server.url, 'pia');
      const room = await api.trpc.room.create.mutate({ kind: 'group', name: 'Shop floor' });
      await page.locator('#room-list .room-item[data-room-name="Shop floor"]').click();
      await page.locator('#room-title').filter({ hasText: /^Shop floor$/ }).waitFor();
      await page.evaluate(`(() => {
        const seen = (window.progressSeen = []);
        new MutationObserver(() => {
          for (const p of document.querySelectorAll('#uploads progress')) seen.push(Math.round((p.value / p.max) * 100));
        }).observe(document.getElementById('uploads'), { subtree: true, childList: true, attributes: true });
      })()`);

      const photo = await sharp({ create: { width: 900, height: 600, channels: 3, background: '#c05030' } }).png().toBuffer();
      await page.locator('#composer-file').setInputFiles([{ name: 'press 3.png', mimeType: 'image/png', buffer: photo }]);
      const card = page.locator('#messages .msg[data-seq] .file-card[data-mime="image/png"]');
      await card.filter({ hasText: 'press 3.png' }).waitFor();
      // (Polled with page.evaluate: waitForFunction's string form is an eval the page's CSP forbids.)
      const loaded = await waitFor(
        () =>
          page.evaluate<string | null>(`(() => {
            const i = document.querySelector('#messages .file-card[data-mime="image/png"] img');
            return i && i.complete && i.naturalWidth > 0 ? i.currentSrc : null;
          })()`),
        'the preview image loaded from the store',
        { timeoutMs: 10_000, everyMs: 50 },
      );
      const store = new URL((await as('pia').file.createUpload({ roomId: room.id, name: 'p', size: 1, mime: 'text/plain' })).uploadUrl).origin;
      expect(new URL(loaded!).origin).toBe(store);
      expect(puts).toEqual([store]);
      expect(Math.max(...(await page.evaluate<number[]>('window.progressSeen')))).toBe(100);
      const [m] = (await api.trpc.chat.history.query({ roomId: room.id })).messages;
      expect(m!.attachments).toEqual([expect.objectContaining({ name: 'press 3.png', size: photo.length, mime: 'image/png', width: 900, height: 600, thumbnail: true })]);
      expect(errors).toEqual([]);
    } finally {
      await browser[Symbol.asyncDispose]();
    }
  });
});
