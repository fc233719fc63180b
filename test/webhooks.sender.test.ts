/**
 * The outgoing request's deadline (webhooks and web push share the sender): a receiver that does
 * not answer in time is a timeout, and an answer that came in time while this process stalled (a
 * long GC pause, a starved CPU) is read, not taken for a timeout that would send the event again.
 * The receiver runs in a child process, so it answers while this process is blocked.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postWebhook, waitFor, within } from './fixture.js';

/**
 * Answers each POST with 200 once the file `go-<n>` exists (n: the request's number, from 1), then
 * writes `sent-<n>` when the answer is handed to the socket; writes `got-<n>` when the request is in.
 */
const RECEIVER = `
const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const dir = process.argv[1];
let n = 0;
http.createServer((req, res) => {
  const i = ++n;
  req.resume();
  req.on('end', () => {
    fs.writeFileSync(path.join(dir, 'got-' + i), '');
    const t = setInterval(() => {
      if (!fs.existsSync(path.join(dir, 'go-' + i))) return;
      clearInterval(t);
      res.end('ok', () => fs.writeFileSync(path.join(dir, 'sent-' + i), ''));
    }, 5);
  });
}).listen(0, '127.0.0.1', function () { process.stdout.write(this.address().port + '\\n'); });
`;

let dir: string;
let child: ChildProcess;
let url: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hook-deadline-'));
  child = spawn(process.execPath, ['-e', RECEIVER, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await within(
    new Promise<string>((resolve) => child.stdout!.once('data', (b: Buffer) => resolve(b.toString().trim()))),
    10_000,
    'the receiver listening',
  );
  url = `http://127.0.0.1:${port}/hook`;
});

afterAll(() => {
  child?.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const TIMEOUT_MS = 300;
const send = () => postWebhook(url, {}, '{"x":1}', { timeoutMs: TIMEOUT_MS, allowPrivate: true, signal: new AbortController().signal });
const file = (name: string) => join(dir, name);

/** Blocks this process (no event loop) until `done()` holds; fails after `maxMs`. */
function blockUntil(done: () => boolean, maxMs: number, what: string): void {
  const end = Date.now() + maxMs;
  while (!done()) if (Date.now() > end) throw new Error(`blocked for ${maxMs} ms waiting for ${what}`);
}

describe('the sender’s deadline', () => {
  it('a receiver that does not answer within it: a timeout', async () => {
    const started = Date.now();
    const r = await send(); // request 1: never told to answer
    expect(r).toEqual({ ok: false, statusCode: null, error: `no answer within ${TIMEOUT_MS} ms` });
    expect(Date.now() - started).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    expect(existsSync(file('got-1'))).toBe(true);
  });

  it('an answer that came in time while this process stalled past the deadline is read: delivered, not a timeout', async () => {
    const p = send(); // request 2
    await waitFor(() => existsSync(file('got-2')), 'the request at the receiver');
    // This process stalls in a callback of the event loop's check phase (as in any I/O callback, where
    // most of the server's work runs): the receiver answers meanwhile, and the deadline passes. The
    // loop's next turn starts with its timers, where the deadline is found passed, before the poll
    // phase reads the answer. (A stall inside a timer callback would not show it: the loop's clock
    // is read once per turn, so the deadline would count as passed only after the poll phase.)
    await new Promise<void>((resolve, reject) =>
      setImmediate(() => {
        try {
          const stalled = Date.now();
          writeFileSync(file('go-2'), '');
          blockUntil(() => existsSync(file('sent-2')) && Date.now() - stalled > TIMEOUT_MS + 50, 10_000, 'the answer sent and the deadline passed');
          resolve();
        } catch (err) {
          reject(err);
        }
      }),
    );
    expect(await p).toEqual({ ok: true, statusCode: 200 });
  });
});

/** A raw TCP endpoint on 127.0.0.1 that answers each request with `answer(the request's body)`. */
async function rawEndpoint(answer: (body: string, socket: Socket) => void): Promise<{ url: string } & AsyncDisposable> {
  const server = createServer((socket) => {
    let got = '';
    socket.on('data', (d: Buffer) => {
      got += d.toString('utf8');
      const head = got.indexOf('\r\n\r\n');
      const length = Number(/content-length: *(\d+)/i.exec(got)?.[1] ?? 0);
      if (head >= 0 && Buffer.byteLength(got.slice(head + 4)) >= length) answer(got.slice(head + 4), socket);
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    [Symbol.asyncDispose]: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('what the sender reports of a failure', () => {
  const payload = JSON.stringify({ type: 'message.new', data: { message: { body: 'the launch code is 1234' } } });
  const post = (to: string) => postWebhook(to, {}, payload, { timeoutMs: 10_000, allowPrivate: true, signal: new AbortController().signal });

  it('the status and the size and type of the body, never its text: answers that echo the request, in their body, a header or a malformed answer', async () => {
    const cases: [string, (body: string) => string, string][] = [
      ['a 500 echoing the request', (b) => `HTTP/1.1 500 Oops\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(b)}\r\n\r\n${b}`, `HTTP 500 (body of ${Buffer.byteLength(payload)} bytes, application/json, not kept)`],
      ['a content type made of the request', (b) => `HTTP/1.1 502 Oops\r\ncontent-type: text/x-${encodeURIComponent(b)}\r\ncontent-length: 2\r\n\r\nno`, 'HTTP 502 (body of 2 bytes, another content-type, not kept)'],
      ['a 503 without a body', () => 'HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n', 'HTTP 503'],
      ['a malformed answer quoting the request', (b) => `HTTP/1.1 500 Oops\r\nx-echo: ${b}\u0001\r\n\r\n`, 'invalid HTTP answer (HPE_INVALID_HEADER_TOKEN)'],
      ['the request instead of an answer', (b) => `${b}\r\n\r\n`, 'invalid HTTP answer (HPE_INVALID_CONSTANT)'],
    ];
    for (const [what, answer, expected] of cases) {
      await using endpoint = await rawEndpoint((body, socket) => socket.end(answer(body)));
      const r = await within(post(endpoint.url), 10_000, what);
      expect(r.ok, what).toBe(false);
      const error = r.ok ? '' : r.error;
      for (const part of ['launch code', 'message.new']) expect(error, what).not.toContain(part);
      expect(error, what).toBe(expected);
    }
  });

  it('an endpoint that is not listening: connection refused, with the address', async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    expect(await post(`http://127.0.0.1:${port}/hook`)).toEqual({ ok: false, statusCode: null, error: `connection refused to 127.0.0.1:${port} (ECONNREFUSED)` });
  });

  it('an answer cut short (the connection closed before the end of its body) is a failed attempt, not a request that never ends; a 2xx cut short is delivered', async () => {
    {
      await using endpoint = await rawEndpoint((_body, socket) => socket.end('HTTP/1.1 500 Oops\r\ncontent-length: 50\r\n\r\nabc'));
      expect(await within(post(endpoint.url), 10_000, 'the 500 cut short')).toEqual({ ok: false, statusCode: 500, error: 'HTTP 500, connection closed before the end of its body' });
    }
    {
      await using endpoint = await rawEndpoint((_body, socket) => socket.end('HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nabc'));
      expect(await within(post(endpoint.url), 10_000, 'the 200 cut short')).toEqual({ ok: true, statusCode: 200 });
    }
  });
});
