import type { AddressInfo } from 'node:net';
import superjson from 'superjson';
import { describe, expect, it, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { frameHead, SharedEncoding, trackedTail, writeTextFrame } from './fixture.js';

/** What tRPC's own adapter sends for a tracked data frame (superjson + JSON.stringify). */
function plainFrame(requestId: number | string, eventId: string, event: unknown, jsonrpc?: '2.0') {
  return JSON.stringify({
    id: requestId,
    ...(jsonrpc ? { jsonrpc } : {}),
    result: { type: 'data', data: superjson.serialize({ id: eventId, data: event }), id: eventId },
  });
}

const ourFrame = (requestId: number | string, eventId: string, event: unknown, jsonrpc?: '2.0', shared?: SharedEncoding) =>
  Buffer.concat([Buffer.from(frameHead(requestId, jsonrpc)), trackedTail(eventId, event, shared)]).toString('utf8');

const event = () => ({
  type: 'message.new',
  roomId: 'r1',
  seq: 7,
  message: { id: 'm1', body: 'héllo "quoted" \u0000 \u2028', createdAt: new Date('2026-11-22T03:00:00Z'), reactions: [] },
});

describe('fan-out frames', () => {
  it('are byte-identical to superjson + JSON.stringify, for shared and unshared events', () => {
    const shared = event();
    const encoding = new SharedEncoding(shared);
    for (const [req, rpc] of [
      [1, undefined],
      ['abc', '2.0'],
      [42, '2.0'],
      ['with "quote"', undefined],
    ] as const) {
      expect(ourFrame(req, '7', shared, rpc, encoding)).toBe(plainFrame(req, '7', shared, rpc));
      const alone = event();
      expect(ourFrame(req, '7', alone, rpc)).toBe(plainFrame(req, '7', alone, rpc));
    }
    // Round trip through the client's transformer keeps the Date.
    const frame = JSON.parse(ourFrame(1, '7', shared, undefined, encoding)) as { result: { data: Parameters<typeof superjson.deserialize>[0] } };
    const back = superjson.deserialize<{ id: string; data: ReturnType<typeof event> }>(frame.result.data);
    expect(back.data.message.createdAt).toEqual(new Date('2026-11-22T03:00:00Z'));
    expect(back.id).toBe('7');
  });

  it('serialize a shared event once for all subscribers, and again only for another event id', () => {
    const shared = event();
    const encoding = new SharedEncoding(shared);
    const spy = vi.spyOn(superjson, 'serialize');
    try {
      const a = trackedTail('7', shared, encoding);
      const b = trackedTail('7', shared, encoding);
      expect(b).toBe(a);
      expect(spy).toHaveBeenCalledTimes(1);
      const c = trackedTail('8', shared, encoding);
      expect(c).not.toBe(a);
      expect(c.toString()).toContain('"id":"8"');
      expect(spy).toHaveBeenCalledTimes(2);
      // An unshared payload is serialized every time (it may change between deliveries).
      const plain = event();
      trackedTail('7', plain);
      plain.seq = 9;
      expect(trackedTail('7', plain).toString()).toContain('"seq":9');
      expect(spy).toHaveBeenCalledTimes(4);
      // An encoding made for another event is never used for this one.
      expect(trackedTail('7', plain, encoding).toString()).toContain('"seq":9');
      expect(spy).toHaveBeenCalledTimes(5);
    } finally {
      spy.mockRestore();
    }
  });

  it('are written as WebSocket text frames a real client reads back, for every length encoding', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise<void>((r) => wss.once('listening', () => r()));
    const server = new Promise<WebSocket>((r) => wss.once('connection', (ws) => r(ws)));
    const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
    const got: string[] = [];
    const all = new Promise<void>((resolve) =>
      client.on('message', (data, isBinary) => {
        expect(isBinary).toBe(false);
        got.push(data.toString());
        if (got.length === 4) resolve();
      }),
    );
    try {
      const ws = await server;
      const counters = { wsDirectWrites: 0, wsFallbackWrites: 0 };
      // Payloads of 2-byte (<126), 4-byte (<65536) and 10-byte length headers, with multibyte text.
      const texts = ['{"id":1,"x":"é"}', `{"id":2,"x":"${'ü'.repeat(200)}"}`, `{"id":3,"x":"${'a'.repeat(70_000)}"}`, '{"id":"ünï"}'];
      for (const t of texts) {
        // The head is a string (frameHead): the last one has multibyte characters (bytes, not length).
        const cut = t.indexOf(',') > 0 ? t.indexOf(',') : t.length - 2;
        writeTextFrame(ws as never, t.slice(0, cut), Buffer.from(t.slice(cut)), counters);
      }
      await all;
      expect(got).toEqual(texts);
      // Every frame took the fast path (ws's sendFrame), none the fallback.
      expect(counters).toEqual({ wsDirectWrites: 4, wsFallbackWrites: 0 });
    } finally {
      client.terminate();
      await new Promise<void>((r) => wss.close(() => r()));
    }
  });
});
