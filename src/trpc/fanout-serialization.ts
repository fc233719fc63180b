import type { Encoder } from '@trpc/server/adapters/ws';
import superjson from 'superjson';
import { sharedEvents } from '../realtime/shared-events.js';

type Serialized = ReturnType<typeof superjson.serialize>;

/** Per shared event: the last tracked id it was serialized with, and the result. */
const serializedByEvent = new WeakMap<object, { id: unknown; out: Serialized }>();
/** Serialized payloads handed to more than one subscriber, with their JSON text once computed. */
const sharedOutputs = new WeakMap<object, string | null>();

/**
 * superjson, except that the tracked payload `{ id, data }` of a shared event (one hub event
 * delivered to many subscribers) is serialized once and the same result object is returned to
 * every subscriber. Wire format unchanged: clients use plain superjson.
 */
export const fanoutTransformer = {
  input: superjson,
  output: {
    serialize(value: unknown): Serialized {
      if (value && typeof value === 'object') {
        const v = value as { id?: unknown; data?: unknown };
        const data = v.data;
        if (data && typeof data === 'object' && sharedEvents.has(data) && 'id' in v && Object.keys(v).length === 2) {
          const hit = serializedByEvent.get(data);
          if (hit && hit.id === v.id) return hit.out;
          const out = superjson.serialize(value);
          serializedByEvent.set(data, { id: v.id, out });
          sharedOutputs.set(out, null);
          return out;
        }
      }
      return superjson.serialize(value);
    },
    deserialize: superjson.deserialize,
  },
};

const PLACEHOLDER_VALUE = '\u0000fanout\u0000';
const PLACEHOLDER = JSON.stringify(PLACEHOLDER_VALUE);

/**
 * tRPC's JSON encoder, except that a data frame whose payload is a shared serialized event reuses
 * its JSON text: per subscriber only the small envelope (request id, event id) is stringified.
 * The frame is byte-identical to `JSON.stringify(message)`.
 */
export const fanoutEncoder: Encoder = {
  encode(message: unknown): string {
    const result = (message as { result?: { data?: unknown } } | null)?.result;
    const data = result?.data;
    if (data && typeof data === 'object' && sharedOutputs.has(data)) {
      let json = sharedOutputs.get(data);
      if (json == null) {
        json = JSON.stringify(data);
        sharedOutputs.set(data, json);
      }
      const envelope = JSON.stringify({ ...(message as object), result: { ...result, data: PLACEHOLDER_VALUE } });
      const text = json;
      return envelope.replace(PLACEHOLDER, () => text);
    }
    return JSON.stringify(message);
  },
  decode(data: unknown): unknown {
    if (typeof data !== 'string') throw new Error('binary frames are not supported: send JSON text frames');
    return JSON.parse(data);
  },
};
