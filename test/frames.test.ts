import superjson from 'superjson';
import { describe, expect, it, vi } from 'vitest';
import { sharedEvents } from '../src/realtime/shared-events.js';
import { frameHead, trackedTail } from '../src/trpc/frames.js';

/** What tRPC's own adapter sends for a tracked data frame (superjson + JSON.stringify). */
function plainFrame(requestId: number | string, eventId: string, event: unknown, jsonrpc?: '2.0') {
  return JSON.stringify({
    id: requestId,
    ...(jsonrpc ? { jsonrpc } : {}),
    result: { type: 'data', data: superjson.serialize({ id: eventId, data: event }), id: eventId },
  });
}

const ourFrame = (requestId: number | string, eventId: string, event: unknown, jsonrpc?: '2.0') => frameHead(requestId, jsonrpc) + trackedTail(eventId, event);

const event = () => ({
  type: 'message.new',
  roomId: 'r1',
  seq: 7,
  message: { id: 'm1', body: 'héllo "quoted" \u0000 \u2028', createdAt: new Date('2026-11-22T03:00:00Z'), reactions: [] },
});

describe('fan-out frames', () => {
  it('are byte-identical to superjson + JSON.stringify, for shared and unshared events', () => {
    const shared = event();
    sharedEvents.add(shared);
    for (const [req, rpc] of [
      [1, undefined],
      ['abc', '2.0'],
      [42, '2.0'],
      ['with "quote"', undefined],
    ] as const) {
      expect(ourFrame(req, '7', shared, rpc)).toBe(plainFrame(req, '7', shared, rpc));
      const alone = event();
      expect(ourFrame(req, '7', alone, rpc)).toBe(plainFrame(req, '7', alone, rpc));
    }
    // Round trip through the client's transformer keeps the Date.
    const frame = JSON.parse(ourFrame(1, '7', shared)) as { result: { data: Parameters<typeof superjson.deserialize>[0] } };
    const back = superjson.deserialize<{ id: string; data: ReturnType<typeof event> }>(frame.result.data);
    expect(back.data.message.createdAt).toEqual(new Date('2026-11-22T03:00:00Z'));
    expect(back.id).toBe('7');
  });

  it('serialize a shared event once for all subscribers, and again only for another event id', () => {
    const shared = event();
    sharedEvents.add(shared);
    const spy = vi.spyOn(superjson, 'serialize');
    try {
      const a = trackedTail('7', shared);
      const b = trackedTail('7', shared);
      expect(b).toBe(a);
      expect(spy).toHaveBeenCalledTimes(1);
      const c = trackedTail('8', shared);
      expect(c).not.toBe(a);
      expect(c).toContain('"id":"8"');
      expect(spy).toHaveBeenCalledTimes(2);
      // An unshared payload is serialized every time (it may change between deliveries).
      const plain = event();
      trackedTail('7', plain);
      plain.seq = 9;
      expect(trackedTail('7', plain)).toContain('"seq":9');
      expect(spy).toHaveBeenCalledTimes(4);
    } finally {
      spy.mockRestore();
    }
  });
});
