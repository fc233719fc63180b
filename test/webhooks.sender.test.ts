/**
 * The outgoing request's deadline (webhooks and web push share the sender): a receiver that does
 * not answer in time is a timeout, and an answer that came in time while this process stalled (a
 * long GC pause, a starved CPU) is read, not taken for a timeout that would send the event again.
 * The receiver runs in a child process, so it answers while this process is blocked.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
