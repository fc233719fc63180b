/**
 * Uploaded files with the local storage driver (issue 15), against a real server, PostgreSQL and
 * Redis, with real HTTP uploads and downloads: tickets, checked attachments, access-checked
 * downloads (headers, ranges, signatures, expiry), limits and quota, previews with `file.ready`,
 * and every way a file's objects are removed. Waits are on events, never sleeps; the file worker's
 * rounds are run directly where a removal is under test.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { FileWorker, isInline, type FileStorage } from '../src/services/files/index.js';
import {
  actor,
  callerFor,
  checkContent,
  contentDisposition,
  expectTRPCError,
  fileServer,
  loadConfig,
  LocalStorage,
  makeConfig,
  makePreview,
  nextOf,
  openEvents,
  openLive,
  parseRange,
  roomKit,
  uuid,
  waitFor,
  type Config,
  type RoomEvent,
} from './fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'chat-files-local-'));
const MAX = 2 * 1024 * 1024;
const filesConfig = (over: Partial<Config['files']> = {}): Config['files'] => ({ ...makeConfig().files, dir, maxBytes: MAX, ...over });
const t = fileServer('files_local', { files: filesConfig() });
const { users, as, groupRoom, allMessages } = roomKit(() => t);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const png = (width: number, height: number) => sharp({ create: { width, height, channels: 3, background: '#3366cc' } }).png().toBuffer();
const PDF = Buffer.from('%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n');

const abs = (url: string) => new URL(url, t.url).toString();

async function put(ticket: { uploadUrl: string; headers: Record<string, string> }, body: Uint8Array | ReadableStream<Uint8Array>) {
  const init: RequestInit & { duplex?: 'half' } = { method: 'PUT', headers: ticket.headers, body };
  if (body instanceof ReadableStream) init.duplex = 'half';
  return fetch(abs(ticket.uploadUrl), init);
}

/** A PUT body of `size` bytes that sends 1 KiB, then the rest once `release` is called (a slow client). */
function heldBody(size: number): { body: ReadableStream<Uint8Array>; release: () => void } {
  let release!: () => void;
  const released = new Promise<void>((r) => {
    release = r;
  });
  let step = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(c) {
      step++;
      if (step === 1) return c.enqueue(new Uint8Array(1024).fill(1));
      await released;
      c.enqueue(new Uint8Array(size - 1024).fill(2));
      c.close();
    },
  });
  return { body, release };
}

/**
 * A ticket of alice's whose PUT is under way: 1 KiB sent and stored in its temp file, the rest held
 * until `release` (`heldBody`). `parts`: the temp files of the ticket's folder.
 */
async function heldUpload(size: number, name: string) {
  const [alice] = users('alice');
  const room = await groupRoom(alice!, []);
  const ticket = await as(alice!).file.createUpload({ roomId: room.id, name, size, mime: 'application/octet-stream' });
  const key = (await storageKey(ticket.fileId))!;
  const folder = join(dir, key.split('/')[0]!);
  const parts = async () => (await readdir(folder).catch(() => [] as string[])).filter((n) => n.endsWith('.part'));
  const { body, release } = heldBody(size);
  const first = put(ticket, body);
  await waitFor(async () => (await parts()).length === 1, "the upload's temp file");
  return { ticket, key, parts, first, release };
}

/** createUpload, then PUT the bytes: the ticket. */
async function upload(who: string, roomId: string, bytes: Uint8Array, mime: string, name = 'file.bin') {
  const ticket = await as(who).file.createUpload({ roomId, name, size: bytes.length, mime });
  const res = await put(ticket, bytes);
  expect(res.status, await res.clone().text()).toBe(200);
  return ticket;
}

const storageKey = async (fileId: string) => (await t.env.sql<{ storage_key: string }>('select storage_key from file where id = $1', [fileId]))[0]?.storage_key;
const storage = () => t.app.services.files.storage;

/** A zip archive of stored (uncompressed) entries, in the order given. */
function storedZip(entries: [string, Buffer][]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const n = Buffer.from(name);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(n.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(n.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, n, data);
    centrals.push(central, n);
    offset += 30 + n.length + data.length;
  }
  const dir = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(dir.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, dir, end]);
}

describe('upload, attach, download (local driver)', () => {
  it('a member uploads an image, sends it by fileId; events carry metadata only; members get signed URLs, nobody else; the thumbnail comes with file.ready', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!]);
    const image = await png(1200, 800);
    await using stream = await openLive(t.app, bob!, room.id);

    const ticket = await as(alice!).file.createUpload({ roomId: room.id, name: 'holiday photo.png', size: image.length, mime: 'image/png' });
    expect(ticket).toMatchObject({ method: 'PUT', headers: { 'content-type': 'image/png' } });
    expect(ticket.uploadUrl).toMatch(/^\/files\/[0-9a-f]{16}\/[0-9a-f-]{36}\.upload\?/);
    expect(ticket.expiresAt.getTime()).toBeGreaterThan(Date.now());
    expect((await put(ticket, image)).status).toBe(200);

    const sent = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'look', kind: 'image', attachments: [{ fileId: ticket.fileId }] });
    const meta = { fileId: ticket.fileId, name: 'holiday photo.png', size: image.length, mime: 'image/png', width: null, height: null, thumbnail: false };
    expect(sent.attachments).toEqual([meta]);
    const created = await nextOf(stream, 'message.new');
    expect(created.message.attachments).toEqual([meta]);
    expect(JSON.stringify(created)).not.toContain('/files/');

    // Members get short-lived URLs; a non-member and another tenant get NOT_FOUND, as for rooms.
    const got = await as(bob!).file.get({ fileId: ticket.fileId });
    expect(got).toMatchObject({ id: ticket.fileId, roomId: room.id, messageId: sent.id, name: 'holiday photo.png', size: image.length, mime: 'image/png' });
    expect(got.expiresAt.getTime() - Date.now()).toBeLessThanOrEqual(300_000);
    await expectTRPCError(as(carol!).file.get({ fileId: ticket.fileId }), 'NOT_FOUND', 'file not found');
    await expectTRPCError(as(alice!, 'other-tenant').file.get({ fileId: ticket.fileId }), 'NOT_FOUND', 'file not found');
    await expectTRPCError(as(bob!).file.get({ fileId: uuid() }), 'NOT_FOUND', 'file not found');

    const res = await fetch(abs(got.url));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/png');
    expect(res.headers.get('content-disposition')).toBe(`inline; filename="holiday photo.png"; filename*=UTF-8''holiday%20photo.png`);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    expect(Buffer.from(await res.arrayBuffer()).equals(image)).toBe(true);

    // A range of it.
    const part = await fetch(abs(got.url), { headers: { range: 'bytes=10-19' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 10-19/${image.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(image.subarray(10, 20))).toBe(true);
    const tail = await fetch(abs(got.url), { headers: { range: 'bytes=-5' } });
    expect(Buffer.from(await tail.arrayBuffer()).equals(image.subarray(-5))).toBe(true);
    expect((await fetch(abs(got.url), { headers: { range: `bytes=${image.length}-` } })).status).toBe(416);

    // The preview is made off the request path and announced.
    const ready = await nextOf(stream, 'file.ready');
    expect(ready).toMatchObject({ roomId: room.id, fileId: ticket.fileId, messageId: sent.id, width: 1200, height: 800, thumbnail: true });
    const after = await as(bob!).file.get({ fileId: ticket.fileId });
    expect(after).toMatchObject({ width: 1200, height: 800 });
    const thumb = await fetch(abs(after.thumbnailUrl!));
    expect(thumb.headers.get('content-type')).toBe('image/webp');
    const dims = await sharp(Buffer.from(await thumb.arrayBuffer())).metadata();
    expect([dims.format, dims.width, dims.height]).toEqual(['webp', 512, 341]);
    // History shows the dimensions too, and a replay from before gives file.ready again.
    const [inHistory] = (await allMessages(bob!, room.id)).filter((m) => m.id === sent.id);
    expect(inHistory!.attachments).toEqual([{ ...meta, width: 1200, height: 800, thumbnail: true }]);
    await using replay = await openEvents(t.app, actor(bob!), { roomId: room.id, lastEventId: String(sent.seq) });
    expect((await replay.next()).event).toMatchObject({ type: 'file.ready', fileId: ticket.fileId, width: 1200 });
  });

  it('other files download as attachments with the name encoded (RFC 6266/5987); text-like types are accepted when the bytes are no binary type', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const name = 'résumé "final" 100%.csv';
    const csv = Buffer.from('a,b\n1,2\n');
    const ticket = await upload(alice!, room.id, csv, 'text/csv', name);
    const json = await upload(alice!, room.id, Buffer.from('{"a":1}'), 'application/json', 'a.json');
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: '', kind: 'file', attachments: [{ fileId: ticket.fileId }, { fileId: json.fileId }] });
    expect(m.attachments.map((a) => a.mime)).toEqual(['text/csv', 'application/json']);
    const got = await as(alice!).file.get({ fileId: ticket.fileId });
    const res = await fetch(abs(got.url));
    // Served from the page's origin, a file that is not shown inline is bytes to save, whatever its
    // type (its type is the record's: `file.get`, the attachment): a script or style sheet someone
    // uploaded can never load as one of the page's (test/web.security.e2e.test.ts).
    expect(res.headers.get('content-type')).toBe('application/octet-stream');
    expect(got.mime).toBe('text/csv');
    expect(res.headers.get('content-disposition')).toBe(`attachment; filename="r_sum_ _final_ 100_.csv"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22%20100%25.csv`);
    expect(await res.text()).toBe('a,b\n1,2\n');
    // HEAD answers the headers only.
    const head = await fetch(abs(got.url), { method: 'HEAD' });
    expect([head.status, head.headers.get('content-length')]).toEqual([200, String(csv.length)]);
  });

  it('tampered, expired and misused URLs are refused; keys never come from names (no path traversal)', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    // Names are stored exactly as given (not even trimmed), whatever they look like.
    const spaced = await upload(alice!, room.id, Buffer.from('x'), 'text/plain', ' ..\\ two  spaces.txt ');
    expect((await as(alice!).file.get({ fileId: spaced.fileId })).name).toBe(' ..\\ two  spaces.txt ');
    await expectTRPCError(as(alice!).file.createUpload({ roomId: room.id, name: '   ', size: 1, mime: 'text/plain' }), 'BAD_REQUEST', 'name must not be blank');
    await expectTRPCError(as(alice!).file.createUpload({ roomId: room.id, name: 'a\nb', size: 1, mime: 'text/plain' }), 'BAD_REQUEST', 'name must not contain control characters');
    const ticket = await upload(alice!, room.id, Buffer.from('hello'), 'text/plain', '../../etc/passwd');
    await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x', attachments: [{ fileId: ticket.fileId }] });
    const got = await as(alice!).file.get({ fileId: ticket.fileId });
    const url = new URL(abs(got.url));
    expect(url.pathname).not.toContain('passwd');
    expect((await fetch(url)).status).toBe(200);

    const tamper = async (name: string, value: string) => {
      const u = new URL(url);
      u.searchParams.set(name, value);
      const res = await fetch(u);
      return [res.status, ((await res.json()) as { error: string }).error];
    };
    expect(await tamper('s', `${url.searchParams.get('s')!.slice(0, -2)}AA`)).toEqual([403, 'invalid signature']);
    expect(await tamper('t', 'text/html')).toEqual([403, 'invalid signature']);
    expect(await tamper('d', 'i')).toEqual([403, 'invalid signature']);
    expect(await tamper('e', String(Number(url.searchParams.get('e')) + 3600))).toEqual([403, 'invalid signature']);
    // Another file's key with this signature.
    const other = new URL(url);
    other.pathname = other.pathname.replace(/[0-9a-f]{12}$/, '000000000000');
    expect((await fetch(other)).status).toBe(403);
    // Traversal: not a key at all.
    const raw = await fetch(`${t.url}/files/..%2F..%2Fetc%2Fpasswd?${url.searchParams}`);
    expect(raw.status).toBe(404);
    // A download URL cannot upload, an upload URL cannot download.
    expect((await fetch(url, { method: 'PUT', body: 'x' })).status).toBe(403);
    expect((await fetch(abs(ticket.uploadUrl))).status).toBe(403);
    expect((await fetch(url, { method: 'DELETE' })).status).toBe(405);

    // Expired: a URL signed for a moment ago.
    const key = (await storageKey(ticket.fileId))!;
    const expired = await storage().downloadUrl(key, { name: 'x', mime: 'text/plain', inline: false, expiresAt: new Date(Date.now() - 1000) });
    const res = await fetch(abs(expired));
    expect([res.status, ((await res.json()) as { error: string }).error]).toEqual([403, 'this link has expired']);
  });

  it('FILE_MAX_BYTES: refused at createUpload (PAYLOAD_TOO_LARGE), and a body larger than signed is cut off and refused; a short one too', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    await expectTRPCError(as(alice!).file.createUpload({ roomId: room.id, name: 'big.bin', size: MAX + 1, mime: 'application/octet-stream' }), 'PAYLOAD_TOO_LARGE', /at most 2097152 bytes \(2 MiB\)/);

    const ticket = await as(alice!).file.createUpload({ roomId: room.id, name: 'x.bin', size: 1000, mime: 'application/octet-stream' });
    const key = (await storageKey(ticket.fileId))!;
    // Declared larger: refused before reading.
    const declared = await put(ticket, new Uint8Array(5000)).catch((err: unknown) => err);
    if (declared instanceof Response) expect(declared.status).toBe(413);
    // Streamed without a length, larger than signed: cut off.
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= 64 * 1024 * 1024) return c.close();
        sent += 16 * 1024;
        c.enqueue(new Uint8Array(16 * 1024));
      },
    });
    const streamed = await put(ticket, body).catch((err: unknown) => err);
    if (streamed instanceof Response) expect(streamed.status).toBe(413);
    const seen = (r: unknown) => (r instanceof Response ? `HTTP ${r.status}` : `connection closed (${(r as Error).message})`);
    console.log(`[files] oversize uploads: declared 5000 of 1000 bytes -> ${seen(declared)}; streamed without a length -> ${seen(streamed)} after ${sent} bytes were produced`);
    expect(sent).toBeLessThan(64 * 1024 * 1024);
    expect(await storage().stat(`${key}.upload`)).toBeNull();
    // Too short: refused, nothing kept.
    const short = await put(ticket, new Uint8Array(999));
    expect(short.status).toBe(400);
    expect(await storage().stat(`${key}.upload`)).toBeNull();
    // Exactly right: kept.
    expect((await put(ticket, new Uint8Array(1000))).status).toBe(200);
    expect(await storage().stat(`${key}.upload`)).toEqual({ size: 1000 });
  });

  it('a storage that fails before the upload is read (directory unwritable, disk full) answers 500; the process serves on', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const ticket = await as(alice!).file.createUpload({ roomId: room.id, name: 'x.bin', size: 10, mime: 'application/octet-stream' });
    const local = storage() as unknown as { uploadTemp: (key: string) => Promise<unknown> };
    const { uploadTemp } = local;
    // Creating the upload's directory fails: outside the upload's own error handling.
    local.uploadTemp = async () => {
      throw Object.assign(new Error('ENOSPC: no space left on device, mkdir'), { code: 'ENOSPC' });
    };
    try {
      const res = await put(ticket, new Uint8Array(10));
      expect(res.status).toBe(500);
      expect(await res.json()).toEqual({ error: 'storage failed' });
    } finally {
      local.uploadTemp = uploadTemp;
    }
    // The same ticket works once the storage does.
    expect((await put(ticket, new Uint8Array(10))).status).toBe(200);
  });

  it('a send checks each file: uploaded, the declared size, a type matching its bytes; then it is attached once, in its own room only', async () => {
    const [alice, bob, eve] = users('alice', 'bob', 'eve');
    const room = await groupRoom(alice!, [bob!]);
    const elsewhere = await groupRoom(alice!, [eve!]);
    const send = (who: string, roomId: string, attachments: ({ fileId: string } | Record<string, unknown>)[]) =>
      as(who).chat.send({ roomId, clientId: uuid(), body: 'f', attachments: attachments as never });

    // Declared image/png, the bytes are a PDF.
    const fake = await upload(alice!, room.id, PDF, 'image/png', 'fake.png');
    await expectTRPCError(send(alice!, room.id, [{ fileId: fake.fileId }]), 'BAD_REQUEST', 'file "fake.png" was declared image/png, but its bytes are application/pdf, not image/png');
    // Declared text/plain, binary bytes.
    const bin = await upload(alice!, room.id, Buffer.from([0x00, 0x01, 0x02, 0x00]), 'text/plain', 'bin.txt');
    await expectTRPCError(send(alice!, room.id, [{ fileId: bin.fileId }]), 'BAD_REQUEST', /its bytes are binary, not text\/plain/);
    // Never uploaded.
    const missing = await as(alice!).file.createUpload({ roomId: room.id, name: 'never.pdf', size: PDF.length, mime: 'application/pdf' });
    await expectTRPCError(send(alice!, room.id, [{ fileId: missing.fileId }]), 'BAD_REQUEST', /has not been uploaded/);
    // Another size than declared (a store that did not enforce it): written behind the endpoint's back.
    const key = (await storageKey(missing.fileId))!;
    await storage().write(`${key}.upload`, Buffer.concat([PDF, Buffer.from('more')]), 'application/pdf');
    await expectTRPCError(send(alice!, room.id, [{ fileId: missing.fileId }]), 'BAD_REQUEST', `file "never.pdf" has ${PDF.length + 4} bytes, but ${PDF.length} were declared`);

    const pdf = await upload(alice!, room.id, PDF, 'application/pdf', 'doc.pdf');
    // Another room, another user, another tenant: NOT_FOUND.
    await expectTRPCError(send(alice!, elsewhere.id, [{ fileId: pdf.fileId }]), 'NOT_FOUND', `file ${pdf.fileId} not found`);
    await expectTRPCError(send(bob!, room.id, [{ fileId: pdf.fileId }]), 'NOT_FOUND', `file ${pdf.fileId} not found`);
    await expectTRPCError(send(alice!, room.id, [{ fileId: uuid() }]), 'NOT_FOUND');
    await expectTRPCError(send(alice!, room.id, [{ fileId: pdf.fileId }, { fileId: pdf.fileId }]), 'BAD_REQUEST', 'the same file is attached twice');
    // Attached once.
    const first = await send(alice!, room.id, [{ fileId: pdf.fileId }]);
    expect(first.attachments).toEqual([{ fileId: pdf.fileId, name: 'doc.pdf', size: PDF.length, mime: 'application/pdf', width: null, height: null, thumbnail: false }]);
    await expectTRPCError(send(alice!, room.id, [{ fileId: pdf.fileId }]), 'BAD_REQUEST', /already attached/);
    // Two sends of one file at once: the file row is locked through the check and the write, so one
    // wins and the other finds it attached.
    const raced = await upload(alice!, room.id, PDF, 'application/pdf', 'raced.pdf');
    const both = await Promise.allSettled([send(alice!, room.id, [{ fileId: raced.fileId }]), send(alice!, room.id, [{ fileId: raced.fileId }])]);
    expect(both.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(String((both.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason)).toMatch(/already attached/);
    // A repeat of the same send (clientId) answers the original.
    const clientId = uuid();
    const again = await upload(alice!, room.id, PDF, 'application/pdf');
    const once = await as(alice!).chat.send({ roomId: room.id, clientId, body: 'r', attachments: [{ fileId: again.fileId }] });
    const twice = await as(alice!).chat.send({ roomId: room.id, clientId, body: 'r', attachments: [{ fileId: again.fileId }] });
    expect(twice.id).toBe(once.id);
    // PDFs are shown inline.
    const got = await as(bob!).file.get({ fileId: pdf.fileId });
    expect((await fetch(abs(got.url))).headers.get('content-disposition')).toMatch(/^inline; /);
    // Bytes sent to the upload URL after the check never replace what was checked.
    expect((await put(pdf, Buffer.alloc(PDF.length, 0x41))).status).toBe(200);
    expect(Buffer.from(await (await fetch(abs(got.url))).arrayBuffer()).equals(PDF)).toBe(true);
  });

  it('office documents as browsers declare them (.xls, .doc: compound files) are attached with their type and download as attachments', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    const cfb = Buffer.concat([Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]), randomBytes(1024)]);
    const xls = await upload(alice!, room.id, cfb, 'application/vnd.ms-excel', 'stock.xls');
    const doc = await upload(alice!, room.id, cfb, 'application/msword', 'spec.doc');
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: '', kind: 'file', attachments: [{ fileId: xls.fileId }, { fileId: doc.fileId }] });
    expect(m.attachments.map((a) => a.mime)).toEqual(['application/vnd.ms-excel', 'application/msword']);
    const res = await fetch(abs((await as(bob!).file.get({ fileId: xls.fileId })).url));
    expect([res.status, res.headers.get('content-type'), res.headers.get('content-disposition')?.split(';')[0]]).toEqual([200, 'application/octet-stream', 'attachment']);
    expect(Buffer.from(await res.arrayBuffer()).equals(cfb)).toBe(true);
  });

  it('links: https only (javascript:, data: and http: are refused); at most 10 attachments', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const link = (url: string) => ({ url, name: 'l', size: 1, mime: 'text/html' });
    for (const url of ['javascript:alert(1)', 'data:text/html,<script>alert(1)</script>', 'http://example.com/x', 'ftp://example.com/x']) {
      await expectTRPCError(as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x', attachments: [link(url)] }), 'BAD_REQUEST', /must be an https:\/\/ URL/);
    }
    const ok = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x', attachments: [link('https://example.com/x')] });
    expect(ok.attachments).toEqual([link('https://example.com/x')]);
    // Stored and served as given, in history too.
    const [inHistory] = (await allMessages(alice!, room.id)).filter((m) => m.id === ok.id);
    expect(inHistory!.attachments).toEqual([link('https://example.com/x')]);
    const ids = Array.from({ length: 11 }, () => ({ fileId: uuid() }));
    await expectTRPCError(as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'x', attachments: ids }), 'BAD_REQUEST', /at most 10 attachments/);
  });

  it('only members who may post get upload tickets', async () => {
    const [alice, bob, carol] = users('alice', 'bob', 'carol');
    const room = await groupRoom(alice!, [bob!]);
    const input = { roomId: room.id, name: 'a.txt', size: 1, mime: 'text/plain' };
    await expectTRPCError(as(carol!).file.createUpload(input), 'NOT_FOUND', 'room not found');
    await expectTRPCError(as(bob!, 'other-tenant').file.createUpload(input), 'NOT_FOUND', 'room not found');
    const broadcast = await as(alice!).room.create({ kind: 'broadcast', name: 'news', memberIds: [bob!] });
    await expectTRPCError(as(bob!).file.createUpload({ ...input, roomId: broadcast.id }), 'FORBIDDEN', /may post/);
    await expectTRPCError(callerFor(t.app, null).file.createUpload(input), 'UNAUTHORIZED');
  });
});

describe('previews: durable jobs', () => {
  it('an image that cannot be decoded gets file.ready with thumbnail: false; a claimed job whose lease ran out is done again, one still leased is left alone', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    await using stream = await openLive(t.app, alice!, room.id);
    // A PNG's signature and header, then garbage: its type is found, its pixels cannot be decoded.
    const broken = Buffer.concat([(await png(64, 32)).subarray(0, 33), Buffer.alloc(200, 7)]);
    const bad = await upload(alice!, room.id, broken, 'image/png', 'broken.png');
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'b', attachments: [{ fileId: bad.fileId }] });
    expect(await nextOf(stream, 'file.ready')).toMatchObject({ fileId: bad.fileId, messageId: m.id, width: null, height: null, thumbnail: false });
    expect(await as(alice!).file.get({ fileId: bad.fileId })).toMatchObject({ thumbnailUrl: null, width: null });

    const good = await upload(alice!, room.id, await png(64, 32), 'image/png', 'good.png');
    await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'g', attachments: [{ fileId: good.fileId }] });
    await nextOf(stream, 'file.ready');
    // As if a node had claimed both jobs and died: one lease has run out, the other has not.
    await t.env.sql(`update file set preview = 'pending', lease_until = now() - interval '1 second' where id = $1`, [good.fileId]);
    await t.env.sql(`update file set preview = 'pending', lease_until = now() + interval '1 hour' where id = $1`, [bad.fileId]);
    const round = await t.app.services.fileWorker.runOnce();
    expect(round.previews).toBe(1);
    expect(await nextOf(stream, 'file.ready')).toMatchObject({ fileId: good.fileId, width: 64, height: 32, thumbnail: true });
    const rows = await t.env.sql<{ id: string; preview: string }>('select id, preview from file where id = any($1)', [[good.fileId, bad.fileId]]);
    expect(Object.fromEntries(rows.map((r) => [r.id, r.preview]))).toEqual({ [good.fileId]: 'ready', [bad.fileId]: 'pending' });
  });
});

describe('previews and removals on two nodes', () => {
  it('a thumbnail finished after its file was removed meanwhile (by another node) does not outlive the file', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    await using stream = await openLive(t.app, alice!, room.id);
    const ticket = await upload(alice!, room.id, await png(80, 40), 'image/png', 'late.png');
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'late', attachments: [{ fileId: ticket.fileId }] });
    await nextOf(stream, 'file.ready');
    const key = (await storageKey(ticket.fileId))!;
    await storage().remove(`${key}.thumb`);
    // A second worker whose read of the image is slow: meanwhile the message is deleted and this
    // node's worker removes the file's objects.
    const base = storage();
    const slow: FileStorage = Object.create(base);
    slow.withFile = (k, max, fn) =>
      base.withFile(k, max, async (path) => {
        const made = await fn(path);
        await as(alice!).chat.delete({ messageId: m.id });
        await t.app.services.fileWorker.runOnce();
        await expect(base.stat(key)).resolves.toBeNull();
        return made;
      });
    const other = new FileWorker(t.app.services.store, slow, filesConfig(), t.app.log);
    await t.env.sql(`update file set preview = 'pending', lease_until = null where id = $1`, [ticket.fileId]);
    expect((await other.runOnce()).previews).toBeGreaterThanOrEqual(1);
    await other.stop();
    for (const k of [key, `${key}.upload`, `${key}.thumb`]) expect(await storage().stat(k)).toBeNull();
  });
});

describe('cleanup', () => {
  const worker = () => t.app.services.fileWorker;
  const gone = async (key: string) => {
    for (const k of [key, `${key}.upload`, `${key}.thumb`]) expect(await storage().stat(k)).toBeNull();
  };
  const row = async (fileId: string) =>
    (await t.env.sql<{ state: string; name: string; deferred: boolean }>(
      `select state, name, lease_until between created_at + ${makeConfig().files.uploadTtlSeconds} * interval '1 second' and created_at + ${makeConfig().files.uploadTtlSeconds + 60} * interval '1 second' as deferred from file where id = $1`,
      [fileId],
    ))[0];
  /** As if the file's upload URL had expired and the deferral with it. */
  const expireUploadUrl = (fileId: string) => t.env.sql(`update file set created_at = now() - interval '1 hour', lease_until = null where id = $1`, [fileId]);

  it('deleting a message removes its files from storage (object, thumbnail, row)', async () => {
    const [alice, bob] = users('alice', 'bob');
    const room = await groupRoom(alice!, [bob!]);
    await using stream = await openLive(t.app, bob!, room.id);
    const ticket = await upload(alice!, room.id, await png(100, 50), 'image/png', 'p.png');
    const m = await as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'p', attachments: [{ fileId: ticket.fileId }] });
    await nextOf(stream, 'file.ready');
    const key = (await storageKey(ticket.fileId))!;
    expect(await storage().stat(`${key}.thumb`)).not.toBeNull();
    const deleted = await as(alice!).chat.delete({ messageId: m.id });
    expect(deleted.attachments).toEqual([]);
    await expectTRPCError(as(bob!).file.get({ fileId: ticket.fileId }), 'NOT_FOUND');
    await worker().runOnce();
    await gone(key);
    // Its upload URL is still valid: the row stays (name cleared) until it has expired, so that
    // bytes PUT to it now are removed too (with S3, by the second removal), then the row goes. The
    // local endpoint refuses them at once: 410, nothing kept.
    expect(await row(ticket.fileId)).toEqual({ state: 'deleting', name: '', deferred: true });
    const late = await put(ticket, await png(100, 50));
    expect({ status: late.status, body: await late.json() }).toEqual({ status: 410, body: { error: expect.stringMatching(/given up/) } });
    expect(await storage().stat(`${key}.upload`)).toBeNull();
    await worker().runOnce();
    await expireUploadUrl(ticket.fileId);
    await worker().runOnce();
    await gone(key);
    expect(await storageKey(ticket.fileId)).toBeUndefined();
  });

  it('uploads never attached are removed after FILE_UNATTACHED_TTL_SECONDS; younger ones stay', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const old = await upload(alice!, room.id, Buffer.from('old'), 'text/plain');
    const young = await upload(alice!, room.id, Buffer.from('young'), 'text/plain');
    await t.env.sql(`update file set created_at = now() - interval '25 hours' where id = $1`, [old.fileId]);
    const [oldKey, youngKey] = [(await storageKey(old.fileId))!, (await storageKey(young.fileId))!];
    await worker().runOnce();
    await gone(oldKey);
    expect(await storageKey(old.fileId)).toBeUndefined();
    expect(await storage().stat(`${youngKey}.upload`)).toEqual({ size: 5 });
  });

  it('an upload the sweep may be removing is never attached: older than FILE_UNATTACHED_TTL_SECONDS, or claimed for removal', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const send = (fileId: string) => as(alice!).chat.send({ roomId: room.id, clientId: uuid(), body: 'late', attachments: [{ fileId }] });
    const old = await upload(alice!, room.id, Buffer.from('old'), 'text/plain', 'old.txt');
    await t.env.sql(`update file set created_at = now() - interval '25 hours' where id = $1`, [old.fileId]);
    await expectTRPCError(send(old.fileId), 'BAD_REQUEST', 'file "old.txt" was uploaded more than 24 h ago and never sent: it is removed; upload it again');
    // As if a node's sweep had claimed it (its removal under way): the send waits for no one and refuses.
    const claimed = await upload(alice!, room.id, Buffer.from('claimed'), 'text/plain', 'claimed.txt');
    await t.env.sql(`update file set lease_until = now() + interval '2 minutes' where id = $1`, [claimed.fileId]);
    await expectTRPCError(send(claimed.fileId), 'BAD_REQUEST', /file "claimed.txt" was uploaded more than 24 h ago and never sent/);
    const key = (await storageKey(old.fileId))!;
    await worker().runOnce();
    await gone(key);
    expect(await storageKey(old.fileId)).toBeUndefined();
    // A young upload is attached as ever.
    const young = await upload(alice!, room.id, Buffer.from('young'), 'text/plain', 'young.txt');
    expect((await send(young.fileId)).attachments).toMatchObject([{ fileId: young.fileId, name: 'young.txt' }]);
  });

  it('retention and room deletion remove the files of what they delete', async () => {
    const [alice] = users('alice');
    const kept = await groupRoom(alice!, []);
    const doomed = await groupRoom(alice!, []);
    const a = await upload(alice!, kept.id, Buffer.from('a'), 'text/plain');
    const b = await upload(alice!, kept.id, Buffer.from('b'), 'text/plain');
    const c = await upload(alice!, doomed.id, Buffer.from('c'), 'text/plain');
    const d = await upload(alice!, doomed.id, Buffer.from('d'), 'text/plain');
    const old = await as(alice!).chat.send({ roomId: kept.id, clientId: uuid(), body: 'old', attachments: [{ fileId: a.fileId }] });
    await as(alice!).chat.send({ roomId: kept.id, clientId: uuid(), body: 'new', attachments: [{ fileId: b.fileId }] });
    await as(alice!).chat.send({ roomId: doomed.id, clientId: uuid(), body: 'c', attachments: [{ fileId: c.fileId }] });
    const keys = Object.fromEntries(await Promise.all([a, b, c, d].map(async (x) => [x.fileId, (await storageKey(x.fileId))!] as const)));

    await t.env.sql(`update room set retention_days = 1 where id = $1`, [kept.id]);
    await t.env.sql(`update message set created_at = now() - interval '2 days' where id = $1`, [old.id]);
    expect((await t.app.services.retention.runOnce()).messages).toBe(1);
    await as(alice!).room.delete({ roomId: doomed.id });
    await worker().runOnce();
    await gone(keys[a.fileId]!);
    await gone(keys[c.fileId]!);
    await gone(keys[d.fileId]!);
    expect(await storage().stat(keys[b.fileId]!)).toEqual({ size: 1 });
    // An upload of the deleted room still in flight after the removal is refused and not kept (with
    // S3 it lands and goes with the second removal, once its URL has expired).
    expect((await put(d, Buffer.from('d'))).status).toBe(410);
    expect(await storage().stat(`${keys[d.fileId]!}.upload`)).toBeNull();
    await expireUploadUrl(d.fileId);
    await worker().runOnce();
    await gone(keys[d.fileId]!);
    expect(await storageKey(d.fileId)).toBeUndefined();
  });
});

describe('two nodes on one shared folder', () => {
  it('a URL signed by one node is served by the other (the key comes from the shared config), and either node\'s worker may do the removal', async () => {
    await using b = await t.env.startServer({ files: filesConfig() });
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const ticket = await as(alice!).file.createUpload({ roomId: room.id, name: 'n.txt', size: 5, mime: 'text/plain' });
    expect((await fetch(new URL(ticket.uploadUrl, b.url), { method: 'PUT', headers: ticket.headers, body: 'hello' })).status).toBe(200);
    const m = await callerFor(b.app, actor(alice!)).chat.send({ roomId: room.id, clientId: uuid(), body: 'n', attachments: [{ fileId: ticket.fileId }] });
    const got = await callerFor(b.app, actor(alice!)).file.get({ fileId: ticket.fileId });
    expect(await (await fetch(new URL(got.url, t.url))).text()).toBe('hello');
    const key = (await storageKey(ticket.fileId))!;
    await as(alice!).chat.delete({ messageId: m.id });
    // Both workers look (the delete woke A's already): one of them claims the row (SKIP LOCKED, a lease).
    await Promise.all([t.app.services.fileWorker.runOnce(), b.app.services.fileWorker.runOnce()]);
    expect(await storage().stat(key)).toBeNull();
    // Kept, name cleared, until its upload URL has expired (see "cleanup"); then either node removes it.
    expect((await t.env.sql<{ state: string; name: string }>('select state, name from file where id = $1', [ticket.fileId]))).toEqual([{ state: 'deleting', name: '' }]);
    await t.env.sql(`update file set created_at = now() - interval '1 hour', lease_until = null where id = $1`, [ticket.fileId]);
    await Promise.all([t.app.services.fileWorker.runOnce(), b.app.services.fileWorker.runOnce()]);
    expect(await storageKey(ticket.fileId)).toBeUndefined();
  });
});

describe('tenant quota (FILE_TENANT_QUOTA_BYTES)', () => {
  it('uploads past the quota are refused with a clear message; removed files free their bytes', async () => {
    await using q = await t.env.startServer({ files: filesConfig({ tenantQuotaBytes: 1000 }) });
    const caller = (who: string, tenant: string) => callerFor(q.app, actor(who, tenant));
    const tenant = `quota-${uuid().slice(0, 8)}`;
    const room = await caller('owner', tenant).room.create({ kind: 'group', name: 'q' });
    const input = (size: number) => ({ roomId: room.id, name: 'q.bin', size, mime: 'application/octet-stream' });
    await expectTRPCError(caller('owner', tenant).file.createUpload(input(1001)), 'PAYLOAD_TOO_LARGE', /more than the tenant's whole storage quota of 1000 bytes/);
    const first = await caller('owner', tenant).file.createUpload(input(600));
    await expectTRPCError(caller('owner', tenant).file.createUpload(input(500)), 'FORBIDDEN', /quota is used up: 600 of 1000 bytes in use, this file needs 500 more/);
    // Another tenant has its own quota.
    const other = await caller('owner', `${tenant}-b`).room.create({ kind: 'group', name: 'q' });
    await expect(caller('owner', `${tenant}-b`).file.createUpload({ ...input(500), roomId: other.id })).resolves.toBeTruthy();
    // Once the first upload is swept, its bytes are free again.
    await t.env.sql(`update file set created_at = now() - interval '2 days' where id = $1`, [first.fileId]);
    await q.app.services.fileWorker.runOnce();
    await expect(caller('owner', tenant).file.createUpload(input(500))).resolves.toBeTruthy();
  });
});

describe('one upload per URL at a time', () => {
  it('a second PUT to an upload URL while the first is under way gets 409; the first completes; one temp file only', async () => {
    const size = 256 * 1024;
    // The first PUT sends 1 KiB, then waits for the test before it sends the rest.
    const { ticket, key, parts, first, release } = await heldUpload(size, 'c.bin');

    const second = await put(ticket, new Uint8Array(size).fill(3));
    expect(second.status).toBe(409);
    expect(((await second.json()) as { error: string }).error).toMatch(/already in progress/);
    expect(await parts()).toEqual([`${key.split('/')[1]}.upload.part`]);

    release();
    const done = await first;
    expect(done.status, await done.clone().text()).toBe(200);
    expect(await storage().stat(`${key}.upload`)).toEqual({ size });
    const head = await storage().readHead(`${key}.upload`, 2048);
    expect([head[0], head[1023], head[1024]]).toEqual([1, 1, 2]);
    expect(await parts()).toEqual([]);
    // Once it is done, the URL takes a new upload (which replaces the bytes).
    expect((await put(ticket, new Uint8Array(size).fill(4))).status).toBe(200);
  });

  it('a temp file left stale (its writer gone) is replaced by the next PUT and removed by the file worker', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const local = storage() as LocalStorage;
    const ticket = await as(alice!).file.createUpload({ roomId: room.id, name: 's.bin', size: 4, mime: 'application/octet-stream' });
    const key = (await storageKey(ticket.fileId))!;
    const { utimes, writeFile } = await import('node:fs/promises');
    const stale = `${local.path(`${key}.upload`)}.part`;
    const old = new Date(Date.now() - (makeConfig().files.uploadTtlSeconds + 60) * 1000);
    await writeFile(stale, 'left');
    await utimes(stale, old, old);
    expect((await put(ticket, Buffer.from('new!'))).status).toBe(200);
    expect(Buffer.from(await storage().readHead(`${key}.upload`, 10)).toString()).toBe('new!');
    // Left by a process that died: the worker's round removes it; a fresh one stays.
    const other = `${local.path(`${key}.upload`)}.0a0b0c.part`;
    await writeFile(stale, 'left');
    await utimes(stale, old, old);
    await writeFile(other, 'fresh');
    await t.app.services.fileWorker.runOnce();
    const names = await readdir(join(dir, key.split('/')[0]!));
    expect(names).not.toContain(`${key.split('/')[1]}.upload.part`);
    expect(names).toContain(`${key.split('/')[1]}.upload.0a0b0c.part`);
    await storage().remove(`${key}.upload`);
    const { rm } = await import('node:fs/promises');
    await rm(other);
  });
});

describe('an upload that outlasts its URL', () => {
  it('a PUT still under way when the worker released its ticket (its URL expired with no bytes) answers 410 and keeps nothing: no bytes without a row', async () => {
    // The PUT sends 1 KiB, then waits for the test before it sends the rest (a slow client).
    const { ticket, key, parts, first, release } = await heldUpload(64 * 1024, 'slow.bin');
    // Its URL expires (and the clocks' margin): the worker finds no bytes behind the ticket and
    // releases it, the row goes.
    await t.env.sql(`update file set created_at = now() - interval '1 hour' where id = $1`, [ticket.fileId]);
    await t.app.services.fileWorker.runOnce();
    expect(await storageKey(ticket.fileId)).toBeUndefined();

    release();
    const res = await first;
    expect({ status: res.status, body: await res.json() }).toEqual({ status: 410, body: { error: expect.stringMatching(/given up \(its link expired before the bytes arrived/) } });
    expect(await storage().stat(`${key}.upload`)).toBeNull();
    expect(await storage().stat(key)).toBeNull();
    expect(await parts()).toEqual([]);
  });
});

describe('tenant quota: upload tickets never used', () => {
  it('tickets whose URL expired with no bytes stop holding the quota and are removed; an expired one with bytes keeps counting', async () => {
    await using q = await t.env.startServer({ files: filesConfig({ tenantQuotaBytes: 2 * MAX }) });
    const tenant = `hog-${uuid().slice(0, 8)}`;
    const caller = (who: string) => callerFor(q.app, actor(who, tenant));
    const room = await caller('hog').room.create({ kind: 'group', name: 'q', memberIds: ['victim'] });
    const input = { roomId: room.id, name: 'big.bin', size: MAX, mime: 'application/octet-stream' };
    // The hog takes the whole quota with two tickets; one is used, the other never.
    const used = await caller('hog').file.createUpload(input);
    const unused = await caller('hog').file.createUpload(input);
    expect((await fetch(new URL(used.uploadUrl, q.url), { method: 'PUT', headers: used.headers, body: new Uint8Array(MAX) })).status).toBe(200);
    await expectTRPCError(caller('victim').file.createUpload(input), 'FORBIDDEN', /quota is used up: 4194304 of 4194304 bytes in use/);
    // While their URLs are valid, the worker leaves them alone.
    await q.app.services.fileWorker.runOnce();
    await expectTRPCError(caller('victim').file.createUpload(input), 'FORBIDDEN', /quota is used up/);

    // Their URLs expire (and the clocks' margin).
    await t.env.sql(`update file set created_at = now() - interval '1 hour' where id = any($1)`, [[used.fileId, unused.fileId]]);
    const mine = await caller('victim').file.createUpload(input);
    expect(mine.fileId).toBeTruthy();
    // The unused ticket was released; the used one still holds its bytes (and may still be sent).
    const states = async () =>
      Object.fromEntries((await t.env.sql<{ id: string; state: string }>('select id, state from file where id = any($1)', [[used.fileId, unused.fileId]])).map((r) => [r.id, r.state]));
    expect((await states())[used.fileId]).toBe('uploading');
    await q.app.services.fileWorker.runOnce();
    expect(await states()).toEqual({ [used.fileId]: 'uploading' });
    await expectTRPCError(caller('victim').file.createUpload(input), 'FORBIDDEN', /quota is used up: 4194304 of 4194304 bytes in use/);
    await expect(caller('hog').chat.send({ roomId: room.id, clientId: uuid(), body: 'late', attachments: [{ fileId: used.fileId }] })).resolves.toBeTruthy();
  });
});

describe('configuration', () => {
  it('local storage without a URL key (production with a JWKS only): file calls are PRECONDITION_FAILED, the endpoint accepts nothing', async () => {
    await using s = await t.env.startServer({ files: filesConfig({ urlSecret: null }) });
    const room = await callerFor(s.app, actor('nokey')).room.create({ kind: 'group', name: 'k' });
    const input = { roomId: room.id, name: 'a.txt', size: 1, mime: 'text/plain' };
    await expectTRPCError(callerFor(s.app, actor('nokey')).file.createUpload(input), 'PRECONDITION_FAILED', /set FILE_URL_SECRET \(or JWT_SECRET\), or FILE_STORAGE=s3/);
    await expectTRPCError(callerFor(s.app, actor('nokey')).file.get({ fileId: uuid() }), 'PRECONDITION_FAILED');
  });

  const load = (env: Record<string, string>) => () => loadConfig(env);
  it('defaults: local storage under DATA_DIR/files, 25 MiB, 300 s URLs, no quota, a day for unattached uploads', () => {
    const c = loadConfig({ DATA_DIR: '/var/chat' }).files;
    expect(c).toMatchObject({ storage: 'local', dir: '/var/chat/files', maxBytes: 25 * 1024 * 1024, urlTtlSeconds: 300, tenantQuotaBytes: null, unattachedTtlSeconds: 86_400, s3: null });
    expect(c.urlSecret?.length).toBe(32);
  });
  it('refuses what cannot work: S3 without a bucket, a short FILE_URL_SECRET; production with a JWKS only has no local URL key (file calls refused, never a built-in key)', () => {
    expect(load({ FILE_STORAGE: 's3' })).toThrow(/FILE_STORAGE=s3 needs S3_BUCKET/);
    expect(load({ FILE_URL_SECRET: 'short' })).toThrow(/FILE_URL_SECRET must be at least 32 bytes/);
    const prod = { NODE_ENV: 'production', AUTH_JWKS_URL: 'https://idp.example.com/keys', AUTH_ISSUER: 'i', AUTH_AUDIENCE: 'a', AUTH_DEV_LOGIN: 'off' };
    expect(loadConfig(prod).files.urlSecret).toBeNull();
    expect(loadConfig({ ...prod, FILE_URL_SECRET: 'x'.repeat(32) }).files.urlSecret?.toString()).toBe('x'.repeat(32));
    const s3 = loadConfig({ FILE_STORAGE: 's3', S3_BUCKET: 'chat-files', S3_ENDPOINT: 'http://minio:9000', S3_FORCE_PATH_STYLE: '1', S3_ACCESS_KEY_ID: 'k', S3_SECRET_ACCESS_KEY: 's' }).files.s3;
    expect(s3).toMatchObject({ bucket: 'chat-files', endpoint: 'http://minio:9000', forcePathStyle: true, region: 'us-east-1' });
  });
});

describe('previews, type checks, headers (units)', () => {
  it('an animated GIF gives its first frame; a rotated JPEG its displayed size; the thumbnail is never enlarged', async () => {
    const frame = (c: string) => sharp({ create: { width: 300, height: 200, channels: 3, background: c } }).png().toBuffer();
    const gif = await sharp([await frame('#f00'), await frame('#00f')], { join: { animated: true } }).gif().toBuffer();
    const g = await makePreview(gif);
    expect([g.width, g.height]).toEqual([300, 200]);
    const gm = await sharp(g.thumbnail).metadata();
    expect([gm.format, gm.width, gm.height, gm.pages ?? 1]).toEqual(['webp', 300, 200, 1]);
    const jpeg = await sharp({ create: { width: 300, height: 200, channels: 3, background: '#0f0' } }).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const j = await makePreview(jpeg);
    expect([j.width, j.height]).toEqual([200, 300]);
    expect(await sharp(j.thumbnail).metadata().then((m) => [m.width, m.height])).toEqual([200, 300]);
    await expect(makePreview(Buffer.from('\x89PNG\r\n\x1a\nnot really'))).rejects.toThrow();
  });

  it('a GIF over 25 megapixels gets no thumbnail (its decoder holds the whole frame); a PNG of the same size still does', async () => {
    const big = { create: { width: 6000, height: 5000, channels: 3 as const, background: '#c00' } }; // 30 megapixels
    await expect(makePreview(await sharp(big).gif().toBuffer())).rejects.toThrow(/pixel limit/);
    const png = await makePreview(await sharp(big).png({ compressionLevel: 1 }).toBuffer());
    expect([png.width, png.height]).toEqual([6000, 5000]);
  });

  it('type checks: found types must match (aliases allowed), text-like types need non-binary bytes, octet-stream takes the found type', async () => {
    const jpeg = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#000' } }).jpeg().toBuffer();
    expect(await checkContent(jpeg, 'image/jpg')).toEqual({ ok: true, mime: 'image/jpeg' });
    expect(await checkContent(jpeg, 'IMAGE/JPEG; q=1')).toEqual({ ok: true, mime: 'image/jpeg' });
    expect(await checkContent(jpeg, 'application/octet-stream')).toEqual({ ok: true, mime: 'image/jpeg' });
    expect(await checkContent(jpeg, 'text/plain')).toEqual({ ok: false, reason: 'its bytes are image/jpeg, not text/plain' });
    expect(await checkContent(Buffer.from('plain words'), 'image/png')).toEqual({ ok: false, reason: 'its bytes are not recognisably image/png' });
    expect(await checkContent(Buffer.from('a;b\n'), 'text/csv')).toEqual({ ok: true, mime: 'text/csv' });
    expect(await checkContent(Buffer.from('[1,2]'), 'application/json')).toEqual({ ok: true, mime: 'application/json' });
    expect(await checkContent(Buffer.alloc(0), 'text/plain')).toEqual({ ok: true, mime: 'text/plain' });
  });

  it('type checks: a declared type matches bytes of its family (browser voice notes, APNG, Matroska, M4A, gzip, RAR); the declared type is kept', async () => {
    const ebml = (docType: string) => {
      const d = Buffer.from(docType);
      const fields = Buffer.from([0x42, 0x86, 0x81, 0x01, 0x42, 0xf7, 0x81, 0x01, 0x42, 0xf2, 0x81, 0x04, 0x42, 0xf3, 0x81, 0x08]);
      return Buffer.concat([Buffer.from([0x1a, 0x45, 0xdf, 0xa3, 0x80 | (fields.length + 3 + d.length)]), fields, Buffer.from([0x42, 0x82, 0x80 | d.length]), d, Buffer.alloc(64)]);
    };
    const chunk = (type: string, data: Buffer) => {
      const b = Buffer.alloc(12 + data.length);
      b.writeUInt32BE(data.length, 0);
      b.write(type, 4, 'ascii');
      data.copy(b, 8);
      return b;
    };
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(1, 0);
    ihdr.writeUInt32BE(1, 4);
    ihdr[8] = 8;
    ihdr[9] = 6;
    const apng = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('acTL', Buffer.alloc(8)), chunk('IDAT', Buffer.alloc(4)), chunk('IEND', Buffer.alloc(0))]);
    const ftyp = Buffer.alloc(96);
    ftyp.writeUInt32BE(32, 0);
    ftyp.write('ftypM4A ', 4, 'ascii');
    ftyp.write('isom', 16, 'ascii');
    const gzip = Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3]), Buffer.alloc(20)]);
    const rar = Buffer.concat([Buffer.from([0x52, 0x61, 0x72, 0x21, 0x1a, 0x07, 0x00]), Buffer.alloc(20)]);
    const cases: [Buffer, string, string][] = [
      [ebml('webm'), 'audio/webm', 'video/webm'],
      [ebml('webm'), 'audio/webm;codecs=opus', 'video/webm'],
      [apng, 'image/png', 'image/apng'],
      [ebml('matroska'), 'video/x-matroska', 'video/matroska'],
      [ftyp, 'audio/mp4', 'audio/x-m4a'],
      [gzip, 'application/x-gzip', 'application/gzip'],
      [rar, 'application/vnd.rar', 'application/x-rar-compressed'],
    ];
    for (const [bytes, declared, found] of cases) {
      expect(await checkContent(bytes, 'application/octet-stream'), declared).toEqual({ ok: true, mime: found });
      expect(await checkContent(bytes, declared), declared).toEqual({ ok: true, mime: declared.split(';')[0] });
    }
    // Other families still do not match, and nothing new is served inline: APNG declared as PNG is a PNG.
    expect(await checkContent(ebml('webm'), 'audio/mpeg')).toEqual({ ok: false, reason: 'its bytes are video/webm, not audio/mpeg' });
    expect(await checkContent(apng, 'image/gif')).toEqual({ ok: false, reason: 'its bytes are image/apng, not image/gif' });
    expect(await checkContent(gzip, 'application/vnd.rar')).toEqual({ ok: false, reason: 'its bytes are application/gzip, not application/vnd.rar' });
    expect(isInline('image/png') && !isInline('video/webm') && !isInline('audio/webm') && !isInline('image/apng')).toBe(true);
  });

  it('type checks: office documents whose bytes file-type only knows as their container (OLE compound file, zip) match their declared type; CSV declared as Excel by Windows too', async () => {
    // Every legacy Office file (.doc, .xls, .ppt, Outlook .msg) starts with the compound file signature.
    const cfb = Buffer.concat([Buffer.from([0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1]), Buffer.alloc(504)]);
    expect(await checkContent(cfb, 'application/octet-stream')).toEqual({ ok: true, mime: 'application/x-cfb' });
    for (const declared of ['application/msword', 'application/vnd.ms-excel', 'application/vnd.ms-powerpoint', 'application/vnd.ms-outlook', 'application/vnd.ms-project']) {
      expect(await checkContent(cfb, declared), declared).toEqual({ ok: true, mime: declared });
    }
    // A .docx whose telling entries lie past the sniffed head (a large thumbnail first), and a zip-based type file-type does not know.
    const docx = storedZip([
      ['docProps/thumbnail.jpeg', Buffer.alloc(80 * 1024, 7)],
      ['[Content_Types].xml', Buffer.from('<Types/>')],
      ['word/document.xml', Buffer.from('<w:document/>')],
    ]);
    const docxType = 'application/vnd.openxmlformats-officedocument.wordprocessingml.document';
    expect(await checkContent(docx, 'application/octet-stream')).toEqual({ ok: true, mime: 'application/zip' });
    expect(await checkContent(docx, docxType)).toEqual({ ok: true, mime: docxType });
    expect(await checkContent(docx, 'application/vnd.google-earth.kmz')).toEqual({ ok: true, mime: 'application/vnd.google-earth.kmz' });
    // Windows declares .csv files application/vnd.ms-excel where Excel is installed: text bytes are accepted.
    expect(await checkContent(Buffer.from('a;b\n1;2\n'), 'application/vnd.ms-excel')).toEqual({ ok: true, mime: 'application/vnd.ms-excel' });
    // A container is no image, PDF or text, and other types still need their own bytes.
    expect(await checkContent(cfb, 'image/png')).toEqual({ ok: false, reason: 'its bytes are application/x-cfb, not image/png' });
    expect(await checkContent(docx, 'application/pdf')).toEqual({ ok: false, reason: 'its bytes are application/zip, not application/pdf' });
    expect(await checkContent(docx, 'text/plain')).toEqual({ ok: false, reason: 'its bytes are application/zip, not text/plain' });
    expect(await checkContent(cfb, docxType)).toEqual({ ok: false, reason: `its bytes are application/x-cfb, not ${docxType}` });
    expect(await checkContent(Buffer.from([0, 1, 2]), 'application/vnd.ms-excel')).toEqual({ ok: false, reason: 'its bytes are binary, not application/vnd.ms-excel' });
    expect(await checkContent(Buffer.from('words'), 'application/msword')).toEqual({ ok: false, reason: 'its bytes are not recognisably application/msword' });
  });

  it('FILE_PUBLIC_URL makes the local driver\'s URLs absolute; a grant is bound to its method, key and expiry', async () => {
    const cfg = loadConfig({ FILE_PUBLIC_URL: 'https://chat.example.com/', FILE_URL_SECRET: 'k'.repeat(32) }).files;
    expect(cfg.publicUrl).toBe('https://chat.example.com');
    const local = new LocalStorage(dir, cfg.urlSecret!, cfg.publicUrl!);
    const key = `${'a'.repeat(16)}/${uuid()}`;
    const up = await local.uploadUrl(`${key}.upload`, { size: 3, mime: 'text/plain', expiresAt: new Date(Date.now() + 60_000) });
    expect(up.url.startsWith(`https://chat.example.com/files/${key}.upload?`)).toBe(true);
    const q = new URL(up.url).searchParams;
    expect(local.verify('PUT', `${key}.upload`, q)).toMatchObject({ method: 'PUT', size: 3, mime: 'text/plain' });
    expect(local.verify('GET', `${key}.upload`, q)).toBe('this link only allows uploads');
    expect(local.verify('PUT', key, q)).toBe('invalid signature');
    expect(local.verify('PUT', `${key}.upload`, q, Date.now() + 120_000)).toBe('this link has expired');
    expect(local.verify('PUT', '../../etc/passwd', q)).toBe('no such file');
    expect(() => local.path('../x')).toThrow('invalid storage key');
  });

  it('Content-Disposition and ranges', () => {
    expect(contentDisposition('a b.pdf', true)).toBe(`inline; filename="a b.pdf"; filename*=UTF-8''a%20b.pdf`);
    expect(contentDisposition('日本\r\n.txt', false)).toBe(`attachment; filename="____.txt"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%0D%0A.txt`);
    expect(contentDisposition("it's (1).txt", false)).toBe(`attachment; filename="it's (1).txt"; filename*=UTF-8''it%27s%20%281%29.txt`);
    expect(parseRange(undefined, 10)).toBeNull();
    expect(parseRange('bytes=2-4', 10)).toEqual([2, 4]);
    expect(parseRange('bytes=8-', 10)).toEqual([8, 9]);
    expect(parseRange('bytes=-3', 10)).toEqual([7, 9]);
    expect(parseRange('bytes=5-100', 10)).toEqual([5, 9]);
    expect(parseRange('bytes=10-', 10)).toBe('unsatisfiable');
    expect(parseRange('bytes=0-1,4-5', 10)).toBeNull();
    expect(parseRange('items=0-1', 10)).toBeNull();
  });
});

describe('measured', () => {
  // Kept light (a plain image, 8 MiB): the suite runs files in parallel, and CPU spent here is taken
  // from timing-sensitive tests elsewhere.
  it('an 8 MiB upload, its check at send, its download; a 12-megapixel image to file.ready', async () => {
    await using m = await t.env.startServer({ files: filesConfig({ maxBytes: 25 * 1024 * 1024 }) });
    const caller = callerFor(m.app, actor('measure'));
    const room = await caller.room.create({ kind: 'group', name: 'm' });
    const bytes = randomBytes(8 * 1024 * 1024);
    const ticket = await caller.file.createUpload({ roomId: room.id, name: 'big.bin', size: bytes.length, mime: 'application/octet-stream' });
    let t0 = performance.now();
    const res = await fetch(new URL(ticket.uploadUrl, m.url), { method: 'PUT', headers: ticket.headers, body: bytes });
    expect(res.status).toBe(200);
    const putMs = performance.now() - t0;
    t0 = performance.now();
    await caller.chat.send({ roomId: room.id, clientId: uuid(), body: 'big', attachments: [{ fileId: ticket.fileId }] });
    const sendMs = performance.now() - t0;
    t0 = performance.now();
    const got = await caller.file.get({ fileId: ticket.fileId });
    const body = Buffer.from(await (await fetch(new URL(got.url, m.url))).arrayBuffer());
    const getMs = performance.now() - t0;
    expect(body.equals(bytes)).toBe(true);

    const image = await sharp({ create: { width: 4000, height: 3000, channels: 3, background: '#808080' } }).jpeg({ quality: 85 }).toBuffer();
    await using stream = await openLive(m.app, 'measure', room.id);
    const img = await caller.file.createUpload({ roomId: room.id, name: 'photo.jpg', size: image.length, mime: 'image/jpeg' });
    expect((await fetch(new URL(img.uploadUrl, m.url), { method: 'PUT', headers: img.headers, body: image })).status).toBe(200);
    t0 = performance.now();
    await caller.chat.send({ roomId: room.id, clientId: uuid(), body: 'photo', attachments: [{ fileId: img.fileId }] });
    const imgSendMs = performance.now() - t0;
    let ready: RoomEvent;
    do ready = (await stream.next(20_000)).event;
    while (ready.type !== 'file.ready');
    const readyMs = performance.now() - t0;
    expect(ready).toMatchObject({ width: 4000, height: 3000, thumbnail: true });
    const mib = (ms: number) => `${((bytes.length / 1024 / 1024) / (ms / 1000)).toFixed(0)} MiB/s`;
    console.log(
      `[files] local driver, loopback: 8 MiB PUT ${putMs.toFixed(0)} ms (${mib(putMs)}); chat.send with it (move, stat, sniff 64 KiB, write) ${sendMs.toFixed(0)} ms; ` +
        `file.get + GET ${getMs.toFixed(0)} ms (${mib(getMs)}); 4000x3000 JPEG (${(image.length / 1024).toFixed(0)} KiB): send ${imgSendMs.toFixed(0)} ms, file.ready ${readyMs.toFixed(0)} ms after the send began`,
    );
  });
});
