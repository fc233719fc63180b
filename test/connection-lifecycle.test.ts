/**
 * A connection's life at its edges.
 *
 * Socket errors around the WebSocket upgrade never end the process. An 'error' event without a
 * listener is thrown as an uncaught exception (vitest reports it and the run fails), and two
 * moments of a socket's life had none:
 * - between Node's 'upgrade' event and `ws`'s handleUpgrade, while the connect rate limit is asked
 *   (a Redis round trip in production): a client that resets its connection then;
 * - a socket refused for the per-address limit (closed with 4029 right after the upgrade) is still
 *   read until its close handshake ends: a bad frame from the client then.
 *
 * A socket refused with 4029 (per address or per user) counts in no limit while its close
 * handshake runs: a client that never answers the close frame is dropped without waiting for it
 * (ws would wait 30 s), so sockets opened and refused one after another are not held for that long.
 *
 * A session whose socket has closed holds no timer: an `auth.refresh` answered after the close
 * (its token check is asynchronous) must not arm the expiry again, or the closed session and its
 * socket stay in memory until the token expires.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { actor, CloseCode, deferred, dispose, fileServer, rawClient, Scope, TEST_LIMITS, tokenFor, waitFor, within } from './fixture.js';

const server = fileServer('upgrade-errors', { limits: { ...TEST_LIMITS, connectionsPerIp: 1 } });
const open = new Scope();

/**
 * A raw TCP connection to the server (default: the file's) that sends a WebSocket upgrade of /trpc
 * (with `headers`, e.g. an Authorization), then `after` in the same write. It never answers a frame.
 */
async function rawUpgrade(after: Buffer = Buffer.alloc(0), opts: { url?: string; headers?: Record<string, string> } = {}): Promise<{ socket: Socket; received: () => Buffer }> {
  const url = new URL(opts.url ?? server.url);
  const socket = connect(Number(url.port), url.hostname);
  await once(socket, 'connect');
  const chunks: Buffer[] = [];
  socket.on('data', (b: Buffer) => chunks.push(b));
  socket.on('error', () => undefined);
  const key = randomBytes(16).toString('base64');
  const extra = Object.entries(opts.headers ?? {})
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const request = `GET /trpc HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`;
  socket.write(Buffer.concat([Buffer.from(request), after]));
  return { socket, received: () => Buffer.concat(chunks) };
}

/** A tRPC round trip on a fresh authenticated WebSocket: the server still upgrades and serves. */
async function servesAgain(user: string): Promise<void> {
  const c = open.use(rawClient(server.url, { token: tokenFor(user) }));
  c.send({ id: 1, method: 'query', params: { path: 'auth.me' } });
  const answer = await c.waitFrame((f) => f.id === 1, 'auth.me after the bad socket');
  expect(answer.result?.type).toBe('data');
  c.terminate();
  await within(c.closed, 5000, 'the check connection to close');
  // The server counts the address's connection until its own side has closed (one per address here).
  await waitFor(() => Object.keys(server.app.services.sessions.clientStats()).length === 0, 'the server to let the check connection go');
}

describe('socket errors around the upgrade', () => {
  it('a client that resets its connection while the connect limit is asked: its socket is dropped, the server serves on', async () => {
    const limits = server.app.services.limits;
    const ask = limits.allow;
    const asked = deferred<void>();
    const answer = deferred<void>();
    // Holds the connect limit's answer until the reset has reached the server.
    limits.allow = async (kind, key) => {
      if (kind === 'connect') {
        asked.resolve();
        await answer.promise;
      }
      return ask.call(limits, kind, key);
    };
    try {
      const serverSide = new Promise<Duplex>((resolve) => server.app.server.once('upgrade', (_req, socket: Duplex) => resolve(socket)));
      const { socket } = await rawUpgrade();
      await within(asked.promise, 5000, 'the connect limit to be asked');
      const s = await serverSide;
      // Not events.once: it listens for 'error' itself (and would hide a missing listener).
      const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
      socket.resetAndDestroy();
      await within(closed, 5000, 'the server side of the reset connection to close');
      expect(s.destroyed).toBe(true);
    } finally {
      answer.resolve();
      limits.allow = ask;
    }
    await servesAgain('after-reset');
  });

  it('a socket refused for the per-address limit that sends a bad frame (no mask): closed with 4029, the server serves on', async () => {
    await waitFor(() => Object.keys(server.app.services.sessions.clientStats()).length === 0, 'no connection open on the server');
    const first = open.use(rawClient(server.url, { token: tokenFor('ip-first') }));
    first.send({ id: 1, method: 'query', params: { path: 'auth.me' } });
    await first.waitFrame((f) => f.id === 1, 'the first connection to be served');
    // A client frame must be masked: 0x81 0x00 (a final empty text frame without a mask) is a
    // protocol error for the server's receiver.
    const { socket, received } = await rawUpgrade(Buffer.from([0x81, 0x00]));
    await within(once(socket, 'close'), 5000, 'the refused socket to be closed by the server');
    const bytes = received();
    const headerEnd = bytes.indexOf('\r\n\r\n');
    expect(bytes.subarray(0, headerEnd).toString()).toMatch(/^HTTP\/1\.1 101 /);
    const frame = bytes.subarray(headerEnd + 4);
    expect(frame[0]).toBe(0x88); // a close frame
    expect(frame.readUInt16BE(2)).toBe(CloseCode.TooManyConnections);
    first.terminate();
    await within(first.closed, 5000, 'the first connection to close');
    await waitFor(() => Object.keys(server.app.services.sessions.clientStats()).length === 0, 'the server to let the first connection go');
    await servesAgain('after-bad-frame');
  });
});

/** The close frame the server sent after its 101 answer: code and reason. */
function closeFrameOf(bytes: Buffer): { code: number; reason: string } {
  const headerEnd = bytes.indexOf('\r\n\r\n');
  expect(bytes.subarray(0, headerEnd).toString()).toMatch(/^HTTP\/1\.1 101 /);
  const frame = bytes.subarray(headerEnd + 4);
  expect(frame[0]).toBe(0x88); // a close frame
  const len = frame[1]! & 0x7f;
  return { code: frame.readUInt16BE(2), reason: frame.subarray(4, 2 + len).toString() };
}

describe('sockets refused with 4029 that never answer the close frame', () => {
  it('per address: the server drops the refused socket without waiting for its close frame, and serves on', async () => {
    await waitFor(() => Object.keys(server.app.services.sessions.clientStats()).length === 0, 'no connection open on the server');
    const first = open.use(rawClient(server.url, { token: tokenFor('ip-holder') }));
    first.send({ id: 1, method: 'query', params: { path: 'auth.me' } });
    await first.waitFrame((f) => f.id === 1, 'the first connection to be served');
    const { socket, received } = await rawUpgrade();
    // ws waits 30 s for the client's close frame; the refused socket is not counted meanwhile.
    await within(once(socket, 'close'), 10_000, 'the server to drop the refused socket that never answered its close frame');
    expect(closeFrameOf(received())).toEqual({ code: CloseCode.TooManyConnections, reason: 'too many connections from this address' });
    first.terminate();
    await within(first.closed, 5000, 'the first connection to close');
    await waitFor(() => Object.keys(server.app.services.sessions.clientStats()).length === 0, 'the server to let the first connection go');
    await servesAgain('after-silent-refusal');
  });

  it('per user: the server drops the refused socket without waiting for its close frame', async () => {
    await using perUser = await server.env.startServer({ limits: { ...TEST_LIMITS, connectionsPerUser: 1 } });
    const token = tokenFor('user-holder');
    const first = open.use(rawClient(perUser.url, { token }));
    first.send({ id: 1, method: 'query', params: { path: 'auth.me' } });
    await first.waitFrame((f) => f.id === 1, 'the first connection to be served');
    const { socket, received } = await rawUpgrade(Buffer.alloc(0), { url: perUser.url, headers: { authorization: `Bearer ${token}` } });
    await within(once(socket, 'close'), 10_000, 'the server to drop the refused socket that never answered its close frame');
    expect(closeFrameOf(received())).toEqual({ code: CloseCode.TooManyConnections, reason: 'too many connections for this user (at most 1)' });
    first.terminate();
    await within(first.closed, 5000, 'the first connection to close');
  });
});

describe('sessions', () => {
  it('an auth.refresh that lands after its socket closed arms no expiry timer (the closed session is not kept alive)', () => {
    const sessions = server.app.services.sessions;
    const socket = Object.assign(new EventEmitter(), { bufferedAmount: 0, close: () => undefined });
    const exp = () => Math.floor(Date.now() / 1000) + 3600;
    const s = sessions.open({ ...actor('late-refresher'), exp: exp() }, socket);
    expect(s.expiryTimer).not.toBeNull();
    socket.emit('close');
    expect(s.expiryTimer).toBeNull();
    sessions.refresh(s, { ...actor('late-refresher'), exp: exp() });
    expect(s.expiryTimer).toBeNull();
    expect(sessions.clientStats()).toEqual({});
  });
});

afterAll(() => dispose(open));
