/**
 * What the JavaScript heap holds per connection: the difference of two V8 heap snapshots of one
 * server, taken while it held `a` and then `b` idle connections (the idle scenario's
 * `--heap-snapshot`), divided by `b - a`. Taking a snapshot runs a full garbage collection first,
 * so only live objects count; a fixed cost (code, caches) cancels out.
 *
 * Objects are grouped by type and constructor; closures by where they were defined (script and
 * line), so a closure made per connection names its line.
 *
 * CLI: `npx tsx bench/lib/heap-diff.ts <first.heapsnapshot> <second.heapsnapshot> <connections between> [top]`.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Snapshot {
  snapshot: {
    meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]]; location_fields?: string[] };
  };
  nodes: number[];
  edges: number[];
  strings: string[];
  locations?: number[];
}

/** Bytes and objects per group of one snapshot. */
type Groups = Map<string, { count: number; bytes: number }>;

function groups(file: string): { groups: Groups; bytes: number } {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
  const m = snap.snapshot.meta;
  const nf = m.node_fields.length;
  const ef = m.edge_fields.length;
  const types = m.node_types[0];
  const edgeTypes = m.edge_types[0];
  const [iType, iName, iSize, iEdges] = ['type', 'name', 'self_size', 'edge_count'].map((f) => m.node_fields.indexOf(f)) as [number, number, number, number];
  const [eType, eName, eTo] = ['type', 'name_or_index', 'to_node'].map((f) => m.edge_fields.indexOf(f)) as [number, number, number];
  const { nodes, edges, strings } = snap;
  const firstEdge = new Uint32Array(nodes.length / nf + 1);
  for (let i = 0, k = 0, e = 0; i < nodes.length; i += nf, k++) {
    firstEdge[k] = e;
    e += nodes[i + iEdges]! * ef;
    firstEdge[k + 1] = e;
  }
  const edgeTo = (node: number, name: string): number => {
    const k = node / nf;
    for (let j = firstEdge[k]!; j < firstEdge[k + 1]!; j += ef) {
      const t = edgeTypes[edges[j + eType]!];
      if (t !== 'element' && t !== 'hidden' && strings[edges[j + eName]!] === name) return edges[j + eTo]!;
    }
    return -1;
  };
  // Where each closure was defined: its line (locations) and its script's name (shared -> script -> name).
  const lineOf = new Map<number, number>();
  const lf = m.location_fields?.length ?? 4;
  const locs = snap.locations ?? [];
  for (let i = 0; i < locs.length; i += lf) lineOf.set(locs[i]!, locs[i + 2]! + 1);
  // A script's name may be a concatenation (a test runner's wrapped module): its two halves.
  const stringValue = (node: number, depth = 0): string => {
    if (types[nodes[node + iType]!] === 'concatenated string' && depth < 32) {
      const first = edgeTo(node, 'first');
      const second = edgeTo(node, 'second');
      if (first >= 0 && second >= 0) return stringValue(first, depth + 1) + stringValue(second, depth + 1);
    }
    return strings[nodes[node + iName]!]!;
  };
  const scriptNames = new Map<number, string>();
  const scriptOf = (closure: number): string => {
    const shared = edgeTo(closure, 'shared');
    const script = shared < 0 ? -1 : edgeTo(shared, 'script');
    if (script < 0) return '?';
    let name = scriptNames.get(script);
    if (name === undefined) {
      const n = edgeTo(script, 'name');
      name = (n < 0 ? '?' : stringValue(n)).replace(/^.*node_modules\//, '').replace(/^(file:\/\/)?\/.*?\/(dist\/)?(src|bench|test)\//, '$3/');
      scriptNames.set(script, name);
    }
    return name;
  };
  const out: Groups = new Map();
  let total = 0;
  for (let i = 0; i < nodes.length; i += nf) {
    const type = types[nodes[i + iType]!]!;
    const name = strings[nodes[i + iName]!]!;
    const key =
      type === 'closure'
        ? `closure ${name || '(anonymous)'} @${scriptOf(i)}:${lineOf.get(i) ?? '?'}`
        : type.includes('string')
          ? 'strings'
          : type === 'code' || type === 'number'
            ? type
            : `${type} ${name.slice(0, 60)}`;
    const size = nodes[i + iSize]!;
    total += size;
    const g = out.get(key) ?? { count: 0, bytes: 0 };
    g.count++;
    g.bytes += size;
    out.set(key, g);
  }
  return { groups: out, bytes: total };
}

export interface HeapDiff {
  /** Live JavaScript heap per connection, bytes. */
  bytesPerConnection: number;
  /** The groups that grew most, per connection. */
  top: { what: string; bytes: number; count: number }[];
}

export function heapDiff(first: string, second: string, connections: number, top = 30): HeapDiff {
  const a = groups(first);
  const b = groups(second);
  const rows = [...b.groups].map(([what, g]) => ({
    what,
    bytes: Math.round((g.bytes - (a.groups.get(what)?.bytes ?? 0)) / connections),
    count: Math.round(((g.count - (a.groups.get(what)?.count ?? 0)) / connections) * 100) / 100,
  }));
  rows.sort((x, y) => y.bytes - x.bytes);
  return { bytesPerConnection: Math.round((b.bytes - a.bytes) / connections), top: rows.slice(0, top).filter((r) => r.bytes > 0) };
}

export function formatHeapDiff(d: HeapDiff): string {
  return [`${d.bytesPerConnection} bytes of live heap per connection`, ...d.top.map((r) => `${String(r.bytes).padStart(6)} B ${r.count.toFixed(2).padStart(6)}  ${r.what}`)].join('\n');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [first, second, n, top] = process.argv.slice(2);
  if (!first || !second || !n) {
    console.error('usage: heap-diff.ts <first.heapsnapshot> <second.heapsnapshot> <connections between> [top]');
    process.exit(2);
  }
  console.log(formatHeapDiff(heapDiff(first, second, Number(n), top ? Number(top) : 30)));
}
