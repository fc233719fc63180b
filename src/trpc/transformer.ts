import { TRPCError } from '@trpc/server';
import superjson from 'superjson';
import { isWellFormed } from '../domain/text.js';
import { fastSuperjson } from '../util/superjson-fast.js';

/**
 * Inputs are plain JSON: of superjson's revivers only `Date` and `undefined` are honoured (the API
 * takes dates, e.g. `muteUntil`). Everything else superjson could build from a request's `meta`
 * (typed arrays of any declared length, Maps, Sets, BigInts, classes) is refused before anything is
 * built: one small request declaring a typed array of 1.5 million elements blocked the event loop
 * for over a second. Shared references (`referentialEqualities`, which a client sends when one
 * object appears twice in its input) are dropped: the JSON already holds a copy at each place, and
 * resolving them could build cycles. Outputs stay full superjson.
 */
const REVIVED = new Set(['Date', 'undefined']);

const plainAnnotation = (a: unknown): boolean => Array.isArray(a) && a.length === 1 && typeof a[0] === 'string' && REVIVED.has(a[0]);

/** The refusal of an input that is not plain JSON (the WebSocket transport answers it under the request's id). */
export class InputNotPlainJson extends TRPCError {
  constructor(message = 'input must be plain JSON: only dates (and undefined) are revived') {
    super({ code: 'BAD_REQUEST', message });
  }
}

/**
 * How deeply an input may nest objects and arrays (the input itself is level 1). The deepest input
 * of the API is far below: `metadata` nests at most 8 levels, `inbox.notify`'s `data` at most 32
 * (src/routers/schemas.ts).
 */
export const MAX_INPUT_DEPTH = 64;


/**
 * Refuses, with a clear answer instead of a failing query, what PostgreSQL cannot store or what
 * cannot be checked: a NUL character (refused in text and JSON), an ill-formed string (a lone
 * surrogate, refused in JSON), and nesting deeper than MAX_INPUT_DEPTH (refused, not skipped: no
 * string below the bound escapes these checks, and no deeper value reaches a schema's own checks).
 * `outer`: how many objects and arrays enclose `value`.
 */
function refuseUnstorable(value: unknown, outer = 0): void {
  if (typeof value === 'string') {
    if (value.includes('\u0000')) throw new InputNotPlainJson('strings must not contain the NUL character (\\u0000)');
    if (!isWellFormed(value)) throw new InputNotPlainJson('strings must be well-formed Unicode (no lone surrogate such as \\uD800)');
    return;
  }
  if (value === null || typeof value !== 'object') return;
  if (outer >= MAX_INPUT_DEPTH) throw new InputNotPlainJson(`input is nested too deeply (at most ${MAX_INPUT_DEPTH} levels of objects and arrays)`);
  if (Array.isArray(value)) {
    for (const v of value) refuseUnstorable(v, outer + 1);
    return;
  }
  for (const [k, v] of Object.entries(value)) {
    refuseUnstorable(k, outer + 1);
    refuseUnstorable(v, outer + 1);
  }
}

/** The meta to revive with (the shared references dropped), or a refusal. */
function checkedMeta(meta: unknown): { values?: unknown; v?: number } | undefined {
  if (meta === undefined || meta === null) return undefined;
  const refuse = (): never => {
    throw new InputNotPlainJson();
  };
  if (typeof meta !== 'object' || Array.isArray(meta)) refuse();
  const { values, referentialEqualities: _shared, v, ...rest } = meta as Record<string, unknown>;
  if (Object.keys(rest).length > 0) refuse();
  if (v !== undefined && typeof v !== 'number') refuse();
  if (values === undefined) return {};
  if (Array.isArray(values)) {
    if (!plainAnnotation(values)) refuse();
  } else {
    if (typeof values !== 'object' || values === null) refuse();
    for (const a of Object.values(values as Record<string, unknown>)) if (!plainAnnotation(a)) refuse();
  }
  return { values, ...(typeof v === 'number' ? { v } : {}) };
}

export const inputTransformer = {
  serialize: (value: unknown) => fastSuperjson.serialize(value),
  deserialize: (payload: unknown) => {
    if (payload === null || typeof payload !== 'object') return superjson.deserialize({ json: payload as never });
    const { json, meta } = payload as { json?: unknown; meta?: unknown };
    const checked = checkedMeta(meta);
    refuseUnstorable(json);
    // In place: the JSON was parsed for this call alone, superjson's deep copy of it is not needed.
    try {
      return superjson.deserialize({ json: json as never, ...(checked ? { meta: checked as never } : {}) }, { inPlace: true });
    } catch {
      // superjson refuses some paths itself (`__proto__`, `constructor.prototype`): a refusal of this
      // call's input like the others, not an error of the whole message.
      throw new InputNotPlainJson();
    }
  },
};

/** The server's transformer: restricted on the way in, superjson on the way out (its fast path, src/util/superjson-fast.ts). */
export const transformer = { input: inputTransformer, output: fastSuperjson };
