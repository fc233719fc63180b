import fc from 'fast-check';
import superjson from 'superjson';
import { describe, expect, it } from 'vitest';
import { serialize, stringify } from '../src/util/superjson-fast.js';

/** Keys that need escaping in superjson's paths, and ordinary ones. */
const key = fc.oneof(fc.constantFrom('a', 'b.c', 'd\\e', '0', '1', 'x.y\\z', 'createdAt', '.', '\\'), fc.string({ maxLength: 6 }));
const leaf = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.date(),
  fc.constant(new Date(Number.NaN)),
  fc.bigInt(),
  fc.constantFrom(Number.NaN, -0, Number.POSITIVE_INFINITY),
);
const tree = fc.letrec((tie) => ({
  node: fc.oneof({ depthSize: 'small' }, leaf, tie('array'), tie('object')),
  array: fc.array(tie('node'), { maxLength: 5 }),
  object: fc.dictionary(key, tie('node'), { maxKeys: 5 }),
})).node;

/** A value where one object is reached twice (superjson records the shared reference). */
const shared = fc.tuple(fc.object(), fc.date()).map(([o, d]) => ({ a: o, b: [o], c: d, d }));

/** What goes over the wire, as the receiver parses it (key order aside). */
const wire = (x: unknown): unknown => JSON.parse(JSON.stringify(x));

/**
 * The wire form of `f()`, or the error it throws: superjson refuses objects with a `__proto__`,
 * `constructor` or `prototype` key (which fast-check's objects can have), and so must the fast path.
 */
function outcome(f: () => unknown): unknown {
  try {
    return { json: wire(f()) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

describe('superjson fast path', () => {
  it('gives the JSON of superjson.serialize for any tree of JSON values, dates and undefined', () => {
    fc.assert(
      fc.property(tree, (v) => {
        expect(outcome(() => serialize(v))).toStrictEqual(outcome(() => superjson.serialize(v)));
        expect(outcome(() => JSON.parse(stringify(v)))).toStrictEqual(outcome(() => JSON.parse(superjson.stringify(v))));
        expect(outcome(() => superjson.deserialize(serialize(v)))).toStrictEqual(outcome(() => superjson.deserialize(superjson.serialize(v))));
      }),
      { numRuns: 2000 },
    );
  });

  it('gives superjson itself for shared references, maps, sets, holes and class instances', () => {
    class Point {
      x = 1;
    }
    const holes: unknown[] = [1];
    holes[3] = 2;
    const cases: unknown[] = [new Map([[1, 2]]), new Set([1]), holes, new Point(), { p: new Point() }, [1n], { s: Symbol('s') }];
    for (const v of cases) expect(JSON.stringify(serialize(v))).toBe(JSON.stringify(superjson.serialize(v)));
    // Key order of meta.values can differ (superjson orders integer-like keys first at each level);
    // deserialization does not depend on it. Everything else is byte for byte.
    const v = { '': [[undefined], new Date(0)] };
    expect(wire(serialize(v))).toStrictEqual(wire(superjson.serialize(v)));
    fc.assert(
      fc.property(shared, (v) => {
        const fast = outcome(() => serialize(v));
        expect(fast).toStrictEqual(outcome(() => superjson.serialize(v)));
        if ('json' in (fast as object)) expect((fast as { json: { meta?: { referentialEqualities?: unknown } } }).json.meta?.referentialEqualities).toBeDefined();
      }),
      { numRuns: 200 },
    );
  });

  it('round-trips through superjson.deserialize (what clients run)', () => {
    const createdAt = new Date('2026-12-03T10:00:00.000Z');
    const msg = { id: 'm1', roomId: 'r1', seq: 7, body: 'hi', editedAt: null, createdAt, meta: { 'a.b': undefined }, attachments: [{ name: 'x', at: new Date(0) }] };
    const back = superjson.deserialize(serialize(msg));
    expect(back).toEqual(msg);
    expect(serialize({ n: 1 })).toEqual({ json: { n: 1 } });
  });
});
