import type { SharedFrame } from './push.js';

/**
 * Data frames of tracked subscription values, built the way tRPC's WebSocket adapter builds them:
 * `{"id":<request id>[,"jsonrpc":"2.0"],"result":{"type":"data","data":<serialize({id,data})>,"id":"<event id>"}}`
 * where `serialize` is the router's output transformer (identity without one).
 *
 * A frame is its head (request id, per subscription) plus its tail (everything after, per value).
 * The tail of a shared value (one event delivered to many subscribers, handed over with a
 * `SharedFrame`) is built once per fan-out and reused by every subscriber, so per delivery no
 * serialization is left: the hot path of fan-out. Frames are byte-identical to tRPC's own.
 */

export type Serialize = (value: unknown) => unknown;

const identity: Serialize = (v) => v;

function buildTail(eventId: string, data: unknown, serialize: Serialize): Buffer {
  return Buffer.from(`,"result":{"type":"data","data":${JSON.stringify(serialize({ id: eventId, data }))},"id":${JSON.stringify(eventId)}}}`);
}

/**
 * The tail of a tracked value's frame as UTF-8 bytes. Given the fan-out's `shared` encoding of this
 * very value, the tail is kept there: every subscriber's socket gets the same buffer (never
 * modified once built), rebuilt only for another event id. One process serves one transformer per
 * shared value (the bytes are keyed by value and event id, not by transformer).
 */
export function trackedTail(eventId: string, data: unknown, shared?: SharedFrame, serialize: Serialize = identity): Buffer {
  if (shared !== undefined && shared.event === data) {
    if (shared.id === eventId && shared.bytes !== null) return shared.bytes;
    const tail = buildTail(eventId, data, serialize);
    shared.id = eventId;
    shared.bytes = tail;
    return tail;
  }
  return buildTail(eventId, data, serialize);
}

/**
 * The head of every frame answering one request: `{"id":<id>` and the echoed `"jsonrpc"`. A string,
 * kept by each subscription for its life: a small `Buffer` would be a slice of node's 8-KB allocation
 * pool and keep the whole slab alive (about 650 bytes per idle connection; docs/BENCHMARKS.md,
 * seventeenth pass). `writeTextFrame` writes it into the frame's first buffer.
 */
export function frameHead(requestId: number | string, jsonrpc: '2.0' | undefined): string {
  return `{"id":${JSON.stringify(requestId)}${jsonrpc === '2.0' ? ',"jsonrpc":"2.0"' : ''}`;
}

/** What the fast path needs of a `ws` socket (internals of the pinned ws version, see below). */
interface FramedSocket {
  send(data: Buffer, opts: { binary: boolean }): void;
  _sender?: { _state?: number; sendFrame?: (list: Buffer[]) => void };
  _extensions?: Record<string, unknown>;
}

/** Where frame writes are counted (e.g. by a metrics exporter). */
export interface FrameWriteCounters {
  /** Written with `sendFrame`: the fast path. */
  wsDirectWrites: number;
  /**
   * Written with `ws.send` (the fast path's internals were missing or the sender was busy), or
   * without corking the socket (connection.ts).
   */
  wsFallbackWrites: number;
}

/**
 * Writes one text message made of `head` + `tail` to a server-side `ws` socket without copying the
 * tail: a small buffer holds the WebSocket frame header and the head, the shared tail follows it
 * (what Socket.IO does for broadcasts with `ws`'s `Sender.sendFrame`); `headBytes`, the head's UTF-8
 * length, is measured once per subscription by the caller. Falls back to `send` when the
 * sender is busy (compression) or the internals are not there; `counters` tell which way each
 * frame went, so a ws upgrade that removes the internals shows.
 */
export function writeTextFrame(ws: FramedSocket, head: string, tail: Buffer, counters: FrameWriteCounters, headBytes = Buffer.byteLength(head)): void {
  const sender = ws._sender;
  if (sender?._state !== 0 || typeof sender.sendFrame !== 'function' || ws._extensions?.['permessage-deflate']) {
    counters.wsFallbackWrites++;
    ws.send(Buffer.concat([Buffer.from(head), tail]), { binary: false });
    return;
  }
  counters.wsDirectWrites++;
  const len = headBytes + tail.length;
  const hl = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const first = Buffer.allocUnsafe(hl + headBytes);
  first[0] = 0x81; // FIN + text
  if (hl === 2) {
    first[1] = len;
  } else if (hl === 4) {
    first[1] = 126;
    first.writeUInt16BE(len, 2);
  } else {
    first[1] = 127;
    first.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    first.writeUInt32BE(len >>> 0, 6);
  }
  first.write(head, hl);
  sender.sendFrame([first, tail]);
}
