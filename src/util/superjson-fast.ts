import superjson from 'superjson';

/**
 * `superjson.serialize` with a fast path for what this server sends: plain objects, arrays, strings,
 * finite numbers, booleans, null, `undefined` and `Date`. The output is superjson's (the same `json`,
 * the same `meta.values` and `meta.v`; only the key order of `meta.values` may differ, as superjson puts
 * integer-like keys first at each level, and its deserialize does not depend on it); anything else (a Map, a Set, a BigInt, a class
 * instance, NaN, -0, an invalid date, an array with holes, or one object reached twice, which superjson
 * records as a shared reference) is handed to superjson itself. A property test holds the two equal
 * (test/superjson-fast.test.ts).
 *
 * Why: superjson's walker builds a path array, a seen-map entry and an annotations object for every
 * node; on the hot paths (a reply per send, an event per publish) it was about 15% of a send's CPU
 * (docs/BENCHMARKS.md, "Persisted sends: where a send's CPU goes").
 */

type Annotation = ['Date'] | ['undefined'];
type SuperJSONResult = ReturnType<typeof superjson.serialize>;

/** Returned by the walk when the value needs superjson itself. */
const BAIL: unique symbol = Symbol('bail');

const escapeKey = (key: string): string => (key.includes('\\') || key.includes('.') ? key.replace(/\\/g, '\\\\').replace(/\./g, '\\.') : key);

class Walk {
  values: Record<string, Annotation> | null = null;
  rootAnnotation: Annotation | null = null;
  private readonly seen = new Set<object>();
  /** The keys from the root to the node being walked (`keys[0..depth)`); a path is built only for an annotation. */
  private readonly keys: (string | number)[] = [];

  private annotate(depth: number, a: Annotation): void {
    if (depth === 0) {
      this.rootAnnotation = a;
      return;
    }
    let path = escapeKey(String(this.keys[0]));
    for (let i = 1; i < depth; i++) path += `.${escapeKey(String(this.keys[i]))}`;
    this.values ??= {};
    this.values[path] = a;
  }

  /** The JSON of `v`, or BAIL. `depth`: how many keys lead to `v` from the root. */
  node(v: unknown, depth: number): unknown {
    switch (typeof v) {
      case 'string':
      case 'boolean':
        return v;
      case 'number':
        // NaN, ±Infinity and -0 are annotated by superjson as numbers: left to it.
        return Number.isFinite(v) && !(v === 0 && 1 / v < 0) ? v : BAIL;
      case 'undefined':
        this.annotate(depth, ['undefined']);
        return null;
      case 'object': {
        if (v === null) return null;
        if (this.seen.has(v)) return BAIL;
        this.seen.add(v);
        if (v instanceof Date) {
          const t = v.getTime();
          if (Number.isNaN(t) || Object.getPrototypeOf(v) !== Date.prototype) return BAIL;
          this.annotate(depth, ['Date']);
          return v.toISOString();
        }
        if (Array.isArray(v)) {
          if (Object.getPrototypeOf(v) !== Array.prototype) return BAIL;
          const out: unknown[] = new Array(v.length);
          for (let i = 0; i < v.length; i++) {
            if (!(i in v)) return BAIL;
            this.keys[depth] = i;
            const j = this.node(v[i], depth + 1);
            if (j === BAIL) return BAIL;
            out[i] = j;
          }
          return out;
        }
        const proto: unknown = Object.getPrototypeOf(v);
        if (proto !== Object.prototype && proto !== null) return BAIL;
        const out: Record<string, unknown> = {};
        for (const key of Object.keys(v)) {
          // superjson refuses these (prototype pollution): its own error, not ours.
          if (key === '__proto__' || key === 'constructor' || key === 'prototype') return BAIL;
          this.keys[depth] = key;
          const j = this.node((v as Record<string, unknown>)[key], depth + 1);
          if (j === BAIL) return BAIL;
          out[key] = j;
        }
        return out;
      }
      default:
        // bigint, symbol, function
        return BAIL;
    }
  }
}

export function serialize(value: unknown): SuperJSONResult {
  const walk = new Walk();
  const json = walk.node(value, 0);
  if (json === BAIL) return superjson.serialize(value);
  const values = walk.rootAnnotation ?? walk.values;
  return (values === null ? { json } : { json, meta: { values, v: 1 } }) as SuperJSONResult;
}

export function stringify(value: unknown): string {
  return JSON.stringify(serialize(value));
}

/** superjson with the fast `serialize` and `stringify`; everything else is superjson's own. */
export const fastSuperjson = {
  serialize,
  stringify,
  deserialize: <T = unknown>(payload: SuperJSONResult): T => superjson.deserialize<T>(payload),
  parse: <T = unknown>(s: string): T => superjson.parse<T>(s),
};
