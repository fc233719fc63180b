import superjson from 'superjson';
import { describe, expect, it, vi } from 'vitest';
import { sharedEvents } from '../src/realtime/shared-events.js';
import { fanoutEncoder, fanoutTransformer } from '../src/trpc/fanout-serialization.js';

/** What tRPC's own adapter would send for a tracked data frame (superjson + JSON.stringify). */
function plainFrame(requestId: number | string, eventId: string, event: unknown, jsonrpc?: '2.0') {
  return JSON.stringify({
    id: requestId,
    ...(jsonrpc ? { jsonrpc } : {}),
    result: { type: 'data', data: superjson.serialize({ id: eventId, data: event }), id: eventId },
  });
}

function ourFrame(requestId: number | string, eventId: string, event: unknown, jsonrpc?: '2.0') {
  return fanoutEncoder.encode({
    id: requestId,
    jsonrpc,
    result: { type: 'data', data: fanoutTransformer.output.serialize({ id: eventId, data: event }), id: eventId },
  }) as string;
}

const event = () => ({
  type: 'message.new',
  roomId: 'r1',
  seq: 7,
  message: { id: 'm1', body: 'héllo "quoted" \u0000 \u2028', createdAt: new Date('2026-11-22T03:00:00Z'), reactions: [] },
});

describe('fan-out serialization', () => {
  it('produces frames byte-identical to superjson + JSON.stringify, for shared and unshared events', () => {
    const shared = event();
    sharedEvents.add(shared);
    for (const [req, rpc] of [
      [1, undefined],
      ['abc', '2.0'],
      [42, '2.0'],
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

  it('serializes a shared event once for all subscribers, and again only for another event id', () => {
    const shared = event();
    sharedEvents.add(shared);
    const spy = vi.spyOn(superjson, 'serialize');
    try {
      const a = fanoutTransformer.output.serialize({ id: '7', data: shared });
      const b = fanoutTransformer.output.serialize({ id: '7', data: shared });
      expect(b).toBe(a);
      expect(spy).toHaveBeenCalledTimes(1);
      const c = fanoutTransformer.output.serialize({ id: '8', data: shared });
      expect(c).not.toBe(a);
      expect(spy).toHaveBeenCalledTimes(2);
      // An unshared payload is never cached.
      const plain = event();
      expect(fanoutTransformer.output.serialize({ id: '7', data: plain })).not.toBe(fanoutTransformer.output.serialize({ id: '7', data: plain }));
    } finally {
      spy.mockRestore();
    }
  });

  it('decodes JSON text frames and refuses binary ones', () => {
    expect(fanoutEncoder.decode('{"id":1}')).toEqual({ id: 1 });
    expect(() => fanoutEncoder.decode(Buffer.from('{}'))).toThrow(/binary/);
  });
});
