/**
 * Answers given before the request's body was read (an unknown path or procedure, a wrong method, a
 * refusal): the connection ends once the answer is out, so a client cannot make a node read (and
 * drop) a body of any size; a body declared at most 64 KiB long is read instead, and its connection
 * kept. Requests whose body was read (tRPC calls, uploads) keep their keep-alive connection.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, type IncomingMessage, request, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { EARLY_ANSWER_READ_MAX_BYTES } from '../src/http/refusals.js';
import { deferred, fileServer, makeConfig, roomKit, tokenFor, within } from './fixture.js';

const dir = mkdtempSync(join(tmpdir(), 'chat-http-early-'));
const srv = fileServer('http_early', { files: { ...makeConfig().files, dir } });
const { users, as, groupRoom } = roomKit(() => srv);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** What the client offers at most: far more than the kernel buffers of both ends hold. */
const OFFERED = 64 * 1024 * 1024;
/** What the server may read of such a connection at most (headers and the body's first reads included). */
const READ_BOUND = 1024 * 1024;
const PIECE = Buffer.alloc(64 * 1024, 'y');
const CHUNK = Buffer.concat([Buffer.from(`${PIECE.length.toString(16)}\r\n`), PIECE, Buffer.from('\r\n')]);

interface ServerSide {
  req: IncomingMessage;
  res: ServerResponse;
  socket: Socket;
}

/** The server's side of the request carrying `X-Request-Id: id`, once the server has it. */
function serverSideOf(id: string): Promise<ServerSide> {
  const found = deferred<ServerSide>();
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    if (req.headers['x-request-id'] !== id) return;
    srv.app.server.off('request', onRequest);
    found.resolve({ req, res, socket: req.socket });
  };
  srv.app.server.on('request', onRequest);
  return found.promise;
}

type Framing = 'chunked' | 'length';

/**
 * A raw connection sending the request line and headers of `head` with a body of OFFERED bytes
 * (chunked, or its length declared), and the body's first 64 KiB. `more()` sends the rest, 64 KiB
 * at a time (each once the previous one is handed to the kernel), for as long as the connection
 * stays open; `offered` resolves once all of it was written, `ended` once the connection ended.
 */
function longBody(head: string, framing: Framing) {
  const url = new URL(srv.url);
  const id = randomUUID();
  const server = within(serverSideOf(id), 5000, 'the request on the server');
  const socket = connect(Number(url.port), url.hostname);
  socket.on('error', () => undefined);
  let seen = '';
  const answered = deferred();
  socket.on('data', (b: Buffer) => {
    seen += b.toString('latin1');
    if (seen.includes('\r\n\r\n')) answered.resolve();
  });
  // Not events.once: it rejects on the socket's 'error' (a write after the server ended it).
  const ended = new Promise<'ended'>((resolve) => socket.once('close', () => resolve('ended')));
  const offered = deferred<'offered'>();
  const piece = framing === 'chunked' ? CHUNK : PIECE;
  let written = PIECE.length;
  const more = () => {
    if (socket.destroyed) return;
    if (written >= OFFERED) return offered.resolve('offered');
    socket.write(piece, (err) => {
      if (err) return;
      written += PIECE.length;
      more();
    });
  };
  const length = framing === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${OFFERED}`;
  socket.write(`${head}Host: ${url.host}\r\nX-Request-Id: ${id}\r\nContent-Type: application/json\r\n${length}\r\n\r\n`);
  socket.write(piece);
  return {
    server,
    answered: answered.promise,
    ended,
    offered: offered.promise,
    more,
    written: () => written,
    /** The head of the answer as the client read it ('' if it read none). */
    seen: () => (seen.includes('\r\n\r\n') ? seen.slice(0, seen.indexOf('\r\n\r\n') + 2) : ''),
    /** Ends the connection (if still open) and returns what the server read of it in all, once its side closed. */
    async close(side: ServerSide): Promise<number> {
      socket.destroy();
      if (!side.socket.destroyed) await within(new Promise((r) => side.socket.once('close', r)), 5000, "the server's socket to close");
      return side.socket.bytesRead;
    },
  };
}

/**
 * `head` with a long body is answered `status` with `Connection: close`, and the connection ends
 * with the server having read less than READ_BOUND: while the client keeps writing, and when the
 * client reads the answer before it writes more (then it sees `Connection: close`). (A client that
 * keeps writing may not read an answer that came before the connection ended: its failed write
 * closes its socket. The answer is checked on the server's side.)
 */
async function expectEndedEarly(head: string, status: number, framing: Framing = 'chunked') {
  for (const answerFirst of [false, true]) {
    const body = longBody(head, framing);
    if (answerFirst) await within(body.answered, 10_000, 'the answer');
    body.more();
    const first = await within(Promise.race([body.ended, body.offered]), 30_000, 'the connection to end or the whole body to be written');
    const side = await body.server;
    const serverRead = await body.close(side);
    const what = `${head.split('\r\n')[0]} (${framing}${answerFirst ? ', answer read first' : ''}): ${body.written()} bytes written, ${serverRead} read by the server`;
    expect([side.res.statusCode, side.res.getHeader('connection')], what).toEqual([status, 'close']);
    expect(first, `${what}; the connection is still open after the whole body was written`).toBe('ended');
    expect(serverRead, what).toBeLessThan(READ_BOUND);
    if (answerFirst) {
      expect(body.seen(), what).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(body.seen().toLowerCase(), what).toContain('\r\nconnection: close\r\n');
    }
  }
}

const bearer = (who: string) => `Authorization: Bearer ${tokenFor(who)}\r\n`;

describe('an answer given before the body was read ends the connection', () => {
  it('an unknown path (404), the body chunked or its length declared', async () => {
    await expectEndedEarly('POST /nope HTTP/1.1\r\n', 404);
    await expectEndedEarly('POST /nope HTTP/1.1\r\n', 404, 'length');
  });

  it('an unknown tRPC procedure (404)', async () => {
    await expectEndedEarly(`POST /trpc/chat.nope HTTP/1.1\r\n${bearer('probe')}`, 404);
  });

  it('a wrong method on /trpc: a query sent as POST (405), and PUT (405)', async () => {
    await expectEndedEarly(`POST /trpc/auth.me HTTP/1.1\r\n${bearer('probe')}`, 405);
    await expectEndedEarly(`PUT /trpc/room.create HTTP/1.1\r\n${bearer('probe')}`, 405);
  });

  it('refusals: a refused browser origin (403), an invalid admin token (401), a bad file link (403)', async () => {
    await expectEndedEarly(`POST /trpc/room.create HTTP/1.1\r\nOrigin: https://evil.example\r\n${bearer('probe')}`, 403);
    await expectEndedEarly('POST /admin/stats HTTP/1.1\r\nAuthorization: Bearer not-a-token\r\n', 401);
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const ticket = await as(alice!).file.createUpload({ roomId: room.id, name: 'a.bin', size: 1000, mime: 'application/octet-stream' });
    const link = new URL(ticket.uploadUrl, srv.url);
    link.searchParams.set('s', 'forged');
    await expectEndedEarly(`PUT ${link.pathname}${link.search} HTTP/1.1\r\n`, 403);
  });

  it('a tRPC call whose answer waits (on the database) reads no more than its body limit meanwhile', async () => {
    // The first call of a user writes the user's row before it is answered: held by a lock on the table.
    const db = new pg.Client({ connectionString: srv.env.databaseUrl });
    await db.connect();
    try {
      await db.query('begin');
      await db.query('lock table chat_user in share mode');
      const [late] = users('late');
      const body = longBody(`POST /trpc/chat.nope HTTP/1.1\r\n${bearer(late!)}`, 'chunked');
      const side = await body.server;
      // Past tRPC's body limit the server stops reading (pauses the request), or it reads it all.
      const paused = new Promise<'paused'>((resolve) => side.req.once('pause', () => resolve('paused')));
      body.more();
      const first = await within(Promise.race([paused, body.offered]), 30_000, 'the server to stop reading or the whole body to be written');
      await db.query('commit');
      const ended = await within(Promise.race([body.ended, body.offered]), 30_000, 'the connection to end or the whole body to be written');
      const serverRead = await body.close(side);
      const what = `${body.written()} bytes written, ${serverRead} read by the server`;
      expect(first, `${what}: the server read on while the answer waited`).toBe('paused');
      expect([side.res.statusCode, side.res.getHeader('connection')], what).toEqual([404, 'close']);
      expect(ended, what).toBe('ended');
      expect(serverRead, what).toBeLessThan(READ_BOUND);
    } finally {
      await db.query('rollback').catch(() => undefined);
      await db.end();
    }
  });
});

describe('requests whose body was read keep their connection', () => {
  /** One request on `agent`: its status, its `connection` header, its body, and the server's socket for it. */
  async function send(agent: Agent, method: string, path: string, headers: Record<string, string>, body: Buffer | string) {
    const id = randomUUID();
    const server = within(serverSideOf(id), 5000, 'the request on the server');
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request(`${srv.url}${path}`, { agent, method, headers: { ...headers, 'x-request-id': id, 'content-length': String(Buffer.byteLength(body)) } }, resolve);
      req.on('error', reject);
      req.end(body);
    });
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    return { status: res.statusCode, connection: res.headers.connection, body: Buffer.concat(chunks).toString('utf8'), socket: (await server).socket };
  }

  it('tRPC POSTs (a body of several packets included) and a file upload share one keep-alive connection', async () => {
    const [alice] = users('alice');
    const room = await groupRoom(alice!, []);
    const size = 300 * 1024;
    const ticket = await as(alice!).file.createUpload({ roomId: room.id, name: 'a.bin', size, mime: 'application/octet-stream' });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const auth = { authorization: `Bearer ${tokenFor(alice!)}`, 'content-type': 'application/json' };
      const input = (name: string) => JSON.stringify({ json: { kind: 'group', name } });
      const answers = [
        await send(agent, 'POST', '/trpc/room.create', auth, input('one')),
        // Padded to about 60 KiB (under the body limit): read in several packets.
        await send(agent, 'POST', '/trpc/room.create', auth, input('two') + ' '.repeat(60 * 1024)),
        await send(agent, 'PUT', new URL(ticket.uploadUrl, srv.url).pathname + new URL(ticket.uploadUrl, srv.url).search, ticket.headers, Buffer.alloc(size, 7)),
        await send(agent, 'POST', '/trpc/room.create', auth, input('three')),
      ];
      expect(answers.map((a) => [a.status, a.connection])).toEqual([
        [200, 'keep-alive'],
        [200, 'keep-alive'],
        [200, 'keep-alive'],
        [200, 'keep-alive'],
      ]);
      expect(JSON.parse(answers[2]!.body)).toEqual({ size });
      expect(new Set(answers.map((a) => a.socket)).size).toBe(1);
    } finally {
      agent.destroy();
    }
  });

  it('an early answer to a request with a short body (its length declared, at most 64 KiB) keeps the connection: the rest is read', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const auth = { authorization: `Bearer ${tokenFor('probe')}`, 'content-type': 'application/json' };
      const answers = [
        await send(agent, 'POST', '/trpc/auth.me', auth, '{}'),
        await send(agent, 'POST', '/nope', {}, Buffer.alloc(EARLY_ANSWER_READ_MAX_BYTES, 'y')),
        await send(agent, 'POST', '/trpc/room.create', { ...auth, origin: 'https://evil.example' }, Buffer.alloc(32 * 1024, ' ')),
        await send(agent, 'POST', '/trpc/room.create', auth, JSON.stringify({ json: { kind: 'group', name: 'kept' } })),
      ];
      expect(answers.map((a) => [a.status, a.connection])).toEqual([
        [405, 'keep-alive'],
        [404, 'keep-alive'],
        [403, 'keep-alive'],
        [200, 'keep-alive'],
      ]);
      expect(new Set(answers.map((a) => a.socket)).size).toBe(1);
    } finally {
      agent.destroy();
    }
  });
});
