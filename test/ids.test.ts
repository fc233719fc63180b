/**
 * Keys built from ids are unambiguous: two different (tenant, user, ...) tuples never share a bus
 * channel, a Redis key or a rate-limit bucket, whatever the characters of the ids (src/domain/ids.ts).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { channels, keyOf } from './fixture.js';

const id = fc.string({ unit: 'grapheme', minLength: 0, maxLength: 12 });

describe('keys from ids', () => {
  it('channels.user: tenant "a:b" with user "c" and tenant "a" with user "b:c" are two channels', () => {
    expect(channels.user('a:b', 'c')).not.toBe(channels.user('a', 'b:c'));
    expect(channels.user('acme', 'pat')).toBe('user:acme:pat');
  });

  it('keyOf is injective over tuples of the same length (property)', () => {
    fc.assert(
      fc.property(fc.array(id, { minLength: 1, maxLength: 4 }), fc.array(id, { minLength: 1, maxLength: 4 }), (a, b) => {
        fc.pre(a.length === b.length && a.some((x, i) => x !== b[i]));
        expect(keyOf(...a)).not.toBe(keyOf(...b));
      }),
      { numRuns: 2000 },
    );
    // A part made of separators and escapes stays itself.
    expect(keyOf('a', 'b:c')).not.toBe(keyOf('a:b', 'c'));
    expect(keyOf('a%3Ab', 'c')).not.toBe(keyOf('a:b', 'c'));
  });

  it('keyOf is each part percent-encoded, joined by ":" (property): keys kept in Redis (revocations, limits) stay the same across versions', () => {
    const anyPart = fc.oneof(id, fc.string({ unit: 'binary', maxLength: 12 }), fc.constantFrom('', 'acme', 'a.b_c-d', "!~*'()", 'a b', 'ä', '%41', 'x:y'));
    fc.assert(
      fc.property(fc.array(anyPart, { minLength: 0, maxLength: 4 }), (parts) => {
        expect(keyOf(...parts)).toBe(parts.map(encodeURIComponent).join(':'));
      }),
      { numRuns: 2000 },
    );
    expect(keyOf('acme', '6f1c2d3e-0000-4000-8000-000000000001', 'auth0|5f1c')).toBe('acme:6f1c2d3e-0000-4000-8000-000000000001:auth0%7C5f1c');
  });

  it('channels.user is injective too (property)', () => {
    fc.assert(
      fc.property(id, id, id, id, (t1, u1, t2, u2) => {
        fc.pre(t1 !== t2 || u1 !== u2);
        expect(channels.user(t1, u1)).not.toBe(channels.user(t2, u2));
      }),
      { numRuns: 2000 },
    );
  });
});
