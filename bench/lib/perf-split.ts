/**
 * Where a server's CPU goes, the kernel included: a `perf record -g` of the server process (node
 * started with `--perf-basic-prof`, so JIT frames carry their function and file), split by origin.
 *
 * A CPU profile of node (`--cpu-prof`) sees only JavaScript: a socket read that libuv does before it
 * calls JavaScript, and the kernel's side of every system call, count there as idle. perf samples
 * the whole thread, so the split below adds up to the server CPU that /proc reports.
 *
 * Each sample is charged to the innermost frame that says where it comes from: a kernel leaf to the
 * system call it serves (socket writes, reads and epoll, other), a garbage collector frame to
 * `GC`, and anything else (V8 builtins, the runtime, libc) to the nearest JavaScript frame above it,
 * by that frame's file: our `src/`, a package of node_modules, or node's own `node:` modules.
 *
 * CLI: `npx tsx bench/lib/perf-split.ts <perf.data> [messages] [top]` prints the split (per
 * message when `messages` is given) and the `top` functions samples are charged to (default 30).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PerfSplit {
  label: string;
  samples: number;
  hz: number;
  /** µs of CPU per sample. */
  usPerSample: number;
  /** Samples per origin. */
  by: Record<string, number>;
  /** Samples per JavaScript function (the frame a sample is charged to), for `top`. */
  fns: Record<string, number>;
}

/** The project's root: function names are shown relative to it (no path of the machine they ran on). */
const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');

const GC = /Scavenger|v8::internal::Heap::|MarkCompact|ConcurrentMarking|MinorMarkSweep|Sweeper|GCTracer|MarkingVisitor/;

/** The origin of one stack (frames leaf first, as `perf script` prints them). */
export function originOf(frames: string[]): string {
  return chargeOf(frames).origin;
}

/** The origin of one stack and the JavaScript frame it is charged to (none for kernel and GC). */
function chargeOf(frames: string[]): { origin: string; fn?: string } {
  const leaf = frames[0] ?? '';
  if (leaf.includes('[kernel.kallsyms]')) {
    const all = frames.join('\n');
    if (/\b(__GI___writev|__libc_write|writev|__write)\b/.test(all) || /sock_write_iter|tcp_sendmsg/.test(all)) return { origin: 'kernel: socket writes' };
    if (/epoll_pwait|epoll_wait|__libc_read|\bread\b|uv__read|tcp_recvmsg|sock_read_iter/.test(all)) return { origin: 'kernel: reads and epoll' };
    if (/finish_task_switch|schedule/.test(all)) return { origin: 'kernel: scheduling' };
    return { origin: 'kernel: other' };
  }
  for (const f of frames) {
    if (GC.test(f)) return { origin: 'GC' };
    if (!f.includes('JS:')) continue;
    const fn = f
      .replace(/^\s*[0-9a-f]+ /, '')
      .replace(/ \(\/tmp\/perf-\d+\.map\)$/, '')
      .replace(/file:\/\/\S*?\/(dist\/)?src\//, 'src/')
      .replace(/\S*node_modules\//, '')
      .replaceAll(`file://${ROOT}/`, '')
      .replaceAll(`${ROOT}/`, '');
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f);
    if (m) return { origin: m[1]!, fn };
    if (/\/(dist\/)?src\//.test(f)) return { origin: 'src/ (ours)', fn };
    if (/\/bench\/peers\//.test(f)) return { origin: 'peer server script', fn };
    if (/ node:/.test(f) || /'node:/.test(f) || /JS:[*+~^]?'?[\w$.<> ]* node:/.test(f)) return { origin: 'node: (streams, net, timers...)', fn };
    return { origin: 'other JavaScript', fn };
  }
  if (frames.some((f) => /uv_|uv__|libuv/.test(f))) return { origin: 'libuv and node native' };
  return { origin: 'native (no JavaScript frame)' };
}

/**
 * `--perf-basic-prof` appends a line per compiled function to /tmp/perf-<pid>.map and never takes
 * one back: when the collector frees code and V8 puts other code at the same address, perf names
 * the new code after the old (the set-up's query builder charged with the steady phase's frames).
 * Keeps, of overlapping entries, the newest (the code in place at the end, when the record was
 * made); the original stays as `.orig`.
 */
export function newestCodeOnly(mapFile: string): void {
  if (!existsSync(mapFile) || existsSync(`${mapFile}.orig`)) return;
  const lines = readFileSync(mapFile, 'utf8').split('\n').filter(Boolean);
  const kept: { start: number; end: number; line: string }[] = [];
  /** Kept ranges, sorted by start (they never overlap). */
  const sorted: { start: number; end: number }[] = [];
  for (let i = lines.length - 1; i >= 0; i--) {
    const [a, b] = lines[i]!.split(' ');
    const start = Number.parseInt(a!, 16);
    const end = start + Number.parseInt(b!, 16);
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid]!.start < start) lo = mid + 1;
      else hi = mid;
    }
    const before = sorted[lo - 1];
    const after = sorted[lo];
    if ((before && before.end > start) || (after && after.start < end)) continue;
    sorted.splice(lo, 0, { start, end });
    kept.push({ start, end, line: lines[i]! });
  }
  renameSync(mapFile, `${mapFile}.orig`);
  writeFileSync(mapFile, `${kept.reverse().map((k) => k.line).join('\n')}\n`);
}

export function perfSplit(dataFile: string, label: string): PerfSplit {
  const script = () => execFileSync('perf', ['script', '-i', dataFile, '-F', 'ip,sym,dso'], { maxBuffer: 1 << 30, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  for (const m of new Set(script().match(/\/tmp\/perf-\d+\.map/g) ?? [])) newestCodeOnly(m);
  const out = script();
  const by: Record<string, number> = {};
  const fns: Record<string, number> = {};
  let samples = 0;
  for (const block of out.split('\n\n')) {
    const frames = block
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    if (frames.length === 0) continue;
    samples++;
    const c = chargeOf(frames);
    by[c.origin] = (by[c.origin] ?? 0) + 1;
    if (c.fn) fns[c.fn] = (fns[c.fn] ?? 0) + 1;
  }
  const hz = Number(/sample_freq\s*\}?\s*=\s*(\d+)/.exec(execFileSync('perf', ['report', '-i', dataFile, '--header-only'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }))?.[1] ?? 999);
  return { label, samples, hz, usPerSample: 1e6 / hz, by, fns };
}

/** The splits side by side, in µs per `unit` (or % of samples without a count of units). */
export function formatSplits(splits: { split: PerfSplit; messages?: number }[], unit = 'message'): string {
  const origins = new Map<string, number>();
  for (const { split } of splits) for (const [o, n] of Object.entries(split.by)) origins.set(o, (origins.get(o) ?? 0) + n);
  const order = [...origins].sort((a, b) => b[1] - a[1]).map(([o]) => o);
  const cell = (s: PerfSplit, n: number, messages?: number) =>
    messages ? ((n * s.usPerSample) / messages).toFixed(1) : `${((100 * n) / s.samples).toFixed(1)}%`;
  const what = splits.every((s) => s.messages) ? `µs of server CPU per ${unit}` : 'share of samples';
  const head = ['origin'.padEnd(34), ...splits.map(({ split }) => split.label.padStart(14))].join('');
  const rows = order.map((o) => [o.padEnd(34), ...splits.map(({ split, messages }) => cell(split, split.by[o] ?? 0, messages).padStart(14))].join(''));
  const total = ['total'.padEnd(34), ...splits.map(({ split, messages }) => cell(split, split.samples, messages).padStart(14))].join('');
  return [`(${what})`, head, ...rows, total].join('\n');
}

/** The JavaScript functions most samples are charged to (their own time and the builtins they call). */
export function formatTop(split: PerfSplit, n: number, messages?: number): string {
  return Object.entries(split.fns)
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([fn, c]) => `${(messages ? ((c * split.usPerSample) / messages).toFixed(1) : `${((100 * c) / split.samples).toFixed(1)}%`).padStart(8)}  ${fn}`)
    .join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [file, messages, top] = process.argv.slice(2);
  if (!file) {
    console.error('usage: npx tsx bench/lib/perf-split.ts <perf.data> [messages] [top]');
    process.exit(2);
  }
  const split = perfSplit(file, 'server');
  const m = messages ? Number(messages) : undefined;
  console.log(formatSplits([{ split, messages: m }]));
  console.log(`\ntop functions (${m ? 'µs per message' : 'share of samples'}):\n${formatTop(split, Number(top ?? 30), m)}`);
}
