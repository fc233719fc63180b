import { once } from 'node:events';
import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { WebSocket as RawWebSocket } from 'ws';
import { fileServer, getJson, startServer, tcpProxy, tokenFor, within, type TrpcHttpError, type TrpcHttpResult } from './fixture.js';

const srv = fileServer('http');

/** The server still answers: health, and an authenticated tRPC query. */
async function expectServing(url: string) {
  expect((await getJson(`${url}/healthz`)).status).toBe(200);
  const me = await getJson<TrpcHttpResult<{ id: string }>>(`${url}/trpc/auth.me`, { headers: { authorization: `Bearer ${tokenFor('probe')}` } });
  expect(me.status).toBe(200);
  expect(me.body.result.data.json.id).toBe('probe');
}

describe('plain HTTP routes', () => {
  it('/healthz is 200', async () => {
    const res = await getJson(`${srv.url}/healthz`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ok' });
  });

  it('/readyz is 200 with the database and the bus up', async () => {
    const res = await getJson(`${srv.url}/readyz`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      status: 'ready',
      draining: false,
      database: 'up',
      bus: { kind: 'redis', status: 'up' },
      redis: { kind: 'redis', bus: { publisher: 'up', subscriber: 'up' }, presence: 'up', limits: 'up', sessions: 'up' },
    });
  });

  it('/readyz is 503 with database down when the database is unreachable, and 200 again once it is back', async () => {
    // The app reaches PostgreSQL through a TCP proxy the test can cut (Redis stays fine).
    const pgUrl = new URL(srv.env.databaseUrl);
    await using proxy = await tcpProxy({ host: pgUrl.hostname, port: Number(pgUrl.port || 5432) });
    pgUrl.port = String(proxy.port);
    await using app = await startServer({ ...srv.config, databaseUrl: pgUrl.toString() });
    expect((await getJson(`${app.url}/readyz`)).status).toBe(200);
    proxy.cut();
    const res = await within(getJson(`${app.url}/readyz`), 5000, '/readyz');
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ status: 'unavailable', draining: false, database: 'down', bus: { kind: 'redis', status: 'up' } });
    // Liveness is not readiness: the process itself is fine.
    expect((await getJson(`${app.url}/healthz`)).status).toBe(200);
    // A tRPC call needing the database fails cleanly (503, not a crash or a hang).
    const me = await within(
      getJson<TrpcHttpError>(`${app.url}/trpc/room.list`, { headers: { authorization: `Bearer ${tokenFor('probe')}` } }),
      10_000,
      'room.list',
    );
    expect(me.status).toBe(503);
    expect(me.body.error.json.data.code).toBe('SERVICE_UNAVAILABLE');

    proxy.restore();
    const back = await within(getJson<{ database: string }>(`${app.url}/readyz`), 5000, '/readyz');
    expect(back.status).toBe(200);
    expect(back.body.database).toBe('up');
  });

  it('/readyz is 503 while draining', async () => {
    await using app = await startServer(srv.config);
    // An open WebSocket keeps the drain going (close() waits for clients to leave) without
    // touching the answer under test.
    const socket = new RawWebSocket(`${app.url.replace(/^http/, 'ws')}/trpc`);
    await within(new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject)), 5000, 'ws open');
    let closing: Promise<void> | null = null;
    try {
      // Start the shutdown the moment the server has the request: it is answered while draining.
      app.app.server.once('request', () => {
        closing = app.close();
      });
      const res = await within(getJson(`${app.url}/readyz`), 5000, '/readyz');
      expect(closing).not.toBeNull();
      expect(res.status).toBe(503);
      expect(res.body).toMatchObject({ status: 'unavailable', draining: true, database: 'up' });
    } finally {
      socket.close();
    }
  });

  it('an unknown path is 404', async () => {
    // (`/` is the browser page when one is built, so it is not in this list.)
    for (const path of ['/nope', '/trpcx', '/healthz/extra', '/readyz/x']) {
      const res = await getJson(`${srv.url}${path}`);
      expect(res.status, path).toBe(404);
    }
  });

  it('an unknown tRPC procedure is 404 NOT_FOUND', async () => {
    const res = await getJson<TrpcHttpError>(`${srv.url}/trpc/chat.nope`, { headers: { authorization: `Bearer ${tokenFor('probe')}` } });
    expect(res.status).toBe(404);
    expect(res.body.error.json.data.code).toBe('NOT_FOUND');
  });
});

describe('tRPC over HTTP with bad requests', () => {
  const auth = { authorization: `Bearer ${tokenFor('mallory')}` };

  it('a malformed JSON body gives a 4xx, and the server keeps serving', async () => {
    for (const body of ['{"json": ', 'not json at all', '{"json":{"kind":"group","name":"x"}}}', '\u0000\u0001']) {
      const res = await getJson<TrpcHttpError>(`${srv.url}/trpc/room.create`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body,
      });
      expect(res.status, body).toBe(400);
      expect(res.body.error.json.data.code, body).toBe('BAD_REQUEST');
    }
    await expectServing(srv.url);
  });

  it('a malformed batch body and a malformed query input give a 4xx, and the server keeps serving', async () => {
    const batch = await getJson(`${srv.url}/trpc/room.create,room.create?batch=1`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: '{"0": {"json": ',
    });
    expect(batch.status).toBeGreaterThanOrEqual(400);
    expect(batch.status).toBeLessThan(500);

    const query = await getJson<TrpcHttpError>(`${srv.url}/trpc/room.get?input=${encodeURIComponent('{"json": {')}`, { headers: auth });
    expect(query.status).toBe(400);
    expect(query.body.error.json.data.code).toBe('BAD_REQUEST');
    await expectServing(srv.url);
  });

  it('well-formed JSON with an invalid input is 400 BAD_REQUEST with the issues', async () => {
    const res = await getJson<TrpcHttpError>(`${srv.url}/trpc/room.create`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ json: { kind: 'castle', name: '' } }),
    });
    expect(res.status).toBe(400);
    expect(res.body.error.json.data.code).toBe('BAD_REQUEST');
    expect(res.body.error.json.data.issues!.map((i: { path: string }) => i.path).sort()).toEqual(['kind', 'name']);
    await expectServing(srv.url);
  });

  it('a body over the size limit is refused with 413, and the server keeps serving', async () => {
    const big = JSON.stringify({ json: { kind: 'group', name: 'x', topic: 'y'.repeat(srv.config.wsMaxPayloadBytes * 2) } });
    const res = await getJson<TrpcHttpError>(`${srv.url}/trpc/room.create`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: big,
    });
    expect(res.status).toBe(413);
    await expectServing(srv.url);
  });

  it('after a 413 the server reads no more of the body: it answers Connection: close and ends the connection', async () => {
    const url = new URL(srv.url);
    const socket = connect(Number(url.port), url.hostname);
    await once(socket, 'connect');
    socket.on('error', () => undefined);
    let response = '';
    const answered = new Promise<void>((resolve) =>
      socket.on('data', (b: Buffer) => {
        response += b.toString('latin1');
        if (response.includes('\r\n\r\n')) resolve();
      }),
    );
    // Not events.once: it rejects on the socket's 'error' (a write after the server ended it).
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    // A body that never ends (chunked): over the limit with its first chunk, then more for as long as
    // the server reads it, up to 256 times the limit.
    const limit = Math.max(srv.config.wsMaxPayloadBytes, 64 * 1024);
    const piece = Buffer.alloc(limit + 1, 'y');
    const chunk = Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]);
    socket.write(`POST /trpc/room.create HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${tokenFor('mallory')}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
    socket.write(chunk);
    await within(answered, 10_000, 'the answer to the oversized body');
    expect(response).toMatch(/^HTTP\/1\.1 413 /);
    expect(response.toLowerCase()).toContain('\r\nconnection: close\r\n');
    let sent = 1;
    const more = () => {
      if (socket.destroyed || sent >= 256) return;
      sent++;
      socket.write(chunk, (err) => {
        if (!err) more();
      });
    };
    more();
    await within(closed, 10_000, 'the server to end the connection instead of reading the rest of the body');
    expect(sent).toBeLessThan(256);
    await expectServing(srv.url);
  });
});
