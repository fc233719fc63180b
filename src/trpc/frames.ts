import superjson from 'superjson';
import { sharedEvents } from '../realtime/shared-events.js';

/**
 * Data frames of tracked subscription events, built the way tRPC's WebSocket adapter builds them:
 * `{"id":<request id>[,"jsonrpc":"2.0"],"result":{"type":"data","data":<superjson of {id,data}>,"id":"<event id>"}}`.
 *
 * A frame is its head (request id, per subscription) plus its tail (everything after, per event).
 * The tail of a shared event (one hub event delivered to many subscribers) is built once per
 * process and reused by every subscriber, so per delivery only one string concatenation is left:
 * the hot path of fan-out (ARCHITECTURE section 3). Frames are byte-identical to tRPC's own.
 */

/** Per shared event: the event id its tail was built with, and the tail. */
const tails = new WeakMap<object, { id: string; tail: string }>();

function buildTail(eventId: string, data: unknown): string {
  return `,"result":{"type":"data","data":${JSON.stringify(superjson.serialize({ id: eventId, data }))},"id":${JSON.stringify(eventId)}}}`;
}

/** The tail of a tracked event's frame, cached for shared events. */
export function trackedTail(eventId: string, data: unknown): string {
  if (data !== null && typeof data === 'object' && sharedEvents.has(data)) {
    const hit = tails.get(data);
    if (hit && hit.id === eventId) return hit.tail;
    const tail = buildTail(eventId, data);
    tails.set(data, { id: eventId, tail });
    return tail;
  }
  return buildTail(eventId, data);
}

/** The head of every frame answering one request: `{"id":<id>` and the echoed `"jsonrpc"`. */
export function frameHead(requestId: number | string, jsonrpc: '2.0' | undefined): string {
  return `{"id":${JSON.stringify(requestId)}${jsonrpc === '2.0' ? ',"jsonrpc":"2.0"' : ''}`;
}
