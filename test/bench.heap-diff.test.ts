import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeHeapSnapshot } from 'node:v8';
import { afterAll, describe, expect, it } from 'vitest';
import { heapDiff } from '../bench/lib/heap-diff.js';

/** A stand-in for what a server keeps per connection: an object, and a closure made per object. */
class HeapProbe {
  readonly n: number;
  readonly onClose: () => number;
  constructor(n: number) {
    this.n = n;
    this.onClose = () => this.n;
  }
}

const dir = mkdtempSync(join(tmpdir(), 'heap-diff-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// The idle scenario's `--heap-snapshot` (bench/lib/heap-diff.ts): live heap per connection between
// two snapshots, by constructor, and closures by the line that made them.
describe('bench heap diff', () => {
  it('counts what was added between two snapshots per connection, and names the line of a closure made per connection', () => {
    const held: HeapProbe[] = [];
    const first = writeHeapSnapshot(join(dir, 'a.heapsnapshot'));
    for (let i = 0; i < 2000; i++) held.push(new HeapProbe(i));
    const second = writeHeapSnapshot(join(dir, 'b.heapsnapshot'));
    const d = heapDiff(first, second, 2000, 200);
    const probe = d.top.find((r) => r.what === 'object HeapProbe');
    expect(probe).toMatchObject({ count: 1 });
    expect(probe!.bytes).toBeGreaterThan(0);
    const closure = d.top.find((r) => r.what.startsWith('closure '));
    expect(closure?.what).toMatch(/ @test\/bench\.heap-diff\.test\.ts:\d+$/);
    expect(closure?.count).toBe(1);
    // The probe, its closure and the closure's context at least; the array that holds them grows too.
    expect(d.bytesPerConnection).toBeGreaterThanOrEqual(probe!.bytes + closure!.bytes);
    expect(held).toHaveLength(2000);
  });
});
