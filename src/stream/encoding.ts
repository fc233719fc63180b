import superjson from 'superjson';
import { stringify } from '../util/superjson-fast.js';
import type { StreamEvent } from './types.js';

/**
 * One event fanned out to more than one local subscriber, created once per fan-out and handed to
 * every subscriber with the event. Whoever encodes the event for the wire first (the WebSocket
 * transport, src/transport/frames.ts) keeps the bytes here with the event id they were built for; the
 * other subscribers reuse them, so an event is serialized once per process, not once per
 * subscriber: the hot path of fan-out.
 */
export class SharedEncoding<E = unknown> {
  /** The event id `bytes` were built with (a live-only event carries each subscriber's position). */
  id: string | null = null;
  bytes: Buffer | null = null;
  constructor(readonly event: E) {}
}

export function encodeEvent(e: StreamEvent): string {
  return stringify(e);
}

export function decodeEvent<E>(payload: string): E {
  return superjson.parse<E>(payload);
}
