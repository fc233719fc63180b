/**
 * Summarizes a V8 .cpuprofile (node --cpu-prof): self time per function, and per origin (our src/,
 * each node_modules package, node internals, GC, idle). Also usable on its own:
 *   npx tsx bench/lib/cpuprofile.ts bench/results/profiles/<file>.cpuprofile [topN [fromUs toUs]]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

function origin(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1]!;
  if (url.startsWith('node:')) return 'node internals';
  const src = /\/(src|bench|test)\//.exec(url);
  if (src) return `${src[1]}/`;
  return url;
}

function shortUrl(url: string): string {
  const m = /node_modules\/(.+)$/.exec(url);
  if (m) return m[1]!;
  const s = /\/((?:src|bench|test)\/.+)$/.exec(url);
  return s ? s[1]! : url;
}

/**
 * `window`: only the samples taken in [fromUs, toUs] of CLOCK_MONOTONIC (V8 stamps its samples with
 * that clock, the one of `process.hrtime`), e.g. a measured phase of the bench.
 */
export function topFrames(file: string, n = 25, window?: { fromUs: number; toUs: number }): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const self = new Map<number, number>();
  if (p.samples && p.timeDeltas) {
    for (const { id, dt } of timedSamples(p, window)) self.set(id, (self.get(id) ?? 0) + dt);
  } else {
    const per = (p.endTime - p.startTime) / Math.max(1, p.nodes.reduce((a, x) => a + (x.hitCount ?? 0), 0));
    for (const x of p.nodes) self.set(x.id, (x.hitCount ?? 0) * per);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const idle = [...self.entries()].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((a, [, v]) => a + v, 0);
  const busy = total - idle;
  const frames = new Map<string, number>();
  const origins = new Map<string, number>();
  for (const [id, us] of self) {
    const cf = byId.get(id)!.callFrame;
    if (cf.functionName === '(idle)') continue;
    const key = `${cf.functionName || '(anonymous)'}  ${cf.url ? `${shortUrl(cf.url)}:${cf.lineNumber + 1}` : ''}`.trim();
    frames.set(key, (frames.get(key) ?? 0) + us);
    const o = origin(cf.url, cf.functionName);
    origins.set(o, (origins.get(o) ?? 0) + us);
  }
  const pct = (v: number) => share(v, busy);
  const lines: string[] = [];
  if (window) lines.push(`window: ${((window.toUs - window.fromUs) / 1e6).toFixed(1)} s (the measured phase only: ${Math.round(window.fromUs)} ${Math.round(window.toUs)})`);
  lines.push(`profile: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (${((100 * busy) / Math.max(1, total)).toFixed(0)}%); shares below are of busy time`);
  lines.push('');
  lines.push(`top ${n} frames by self time:`);
  for (const [k, v] of [...frames.entries()].sort((a, b) => b[1] - a[1]).slice(0, n)) lines.push(`  ${pct(v)}  ${k}`);
  lines.push('');
  lines.push('self time by origin:');
  for (const [k, v] of [...origins.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)) lines.push(`  ${pct(v)}  ${k}`);
  if (p.samples && p.timeDeltas) lines.push('', ...socketWrites(p, byId, busy, window), '', ...busyStretches(p, byId, window));
  return `${lines.join('\n')}\n`;
}

/** `v` as a percentage of `busy`, padded for a column. */
const share = (v: number, busy: number) => `${((100 * v) / Math.max(1, busy)).toFixed(1).padStart(5)}%`;

/** Each sample with its time (CLOCK_MONOTONIC µs) and the time it stands for, inside the window. */
function* timedSamples(p: Profile, window?: { fromUs: number; toUs: number }): Generator<{ id: number; t: number; dt: number }> {
  let t = p.startTime;
  for (let i = 0; i < p.samples!.length; i++) {
    const dt = Math.max(0, p.timeDeltas![i] ?? 0);
    t += dt;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    yield { id: p.samples![i]!, t, dt };
  }
}

const parentsOf = (p: Profile) => {
  const parent = new Map<number, number>();
  for (const x of p.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
  return parent;
};

/**
 * The socket writes (`writev`, `writeUtf8String`, `writeBuffer`) by who made them: the first caller
 * outside node's own streams (a package, or src/). A write's time includes the loopback delivery to
 * the peer process, and any time this thread waited for the core meanwhile (the profiler samples on
 * wall-clock ticks).
 */
function socketWrites(p: Profile, byId: Map<number, Node>, busy: number, window?: { fromUs: number; toUs: number }): string[] {
  const parent = parentsOf(p);
  const writes = new Set(['writev', 'writeUtf8String', 'writeBuffer', 'writeLatin1String']);
  const by = new Map<string, number>();
  let all = 0;
  for (const { id, dt } of timedSamples(p, window)) {
    if (!writes.has(byId.get(id)!.callFrame.functionName)) continue;
    all += dt;
    let who = '(unknown)';
    for (let up = parent.get(id); up !== undefined; up = parent.get(up)) {
      const cf = byId.get(up)!.callFrame;
      if (cf.url && !cf.url.startsWith('node:')) {
        who = origin(cf.url, cf.functionName);
        if (who === 'src/') who = `src/ (${shortUrl(cf.url)})`;
        break;
      }
    }
    by.set(who, (by.get(who) ?? 0) + dt);
  }
  const pct = (v: number) => share(v, busy);
  return [`socket writes: ${pct(all)} of busy time, by caller:`, ...[...by].sort((a, b) => b[1] - a[1]).map(([k, v]) => `  ${pct(v)}  ${k}`)];
}

/**
 * Busy stretches of the event loop: runs of samples that are not idle (gaps under 0.3 ms joined),
 * by length. A message that arrives during a stretch waits for its end, so their lengths bound
 * what the latency percentiles can be.
 */
function busyStretches(p: Profile, byId: Map<number, Node>, window?: { fromUs: number; toUs: number }): string[] {
  const bounds = [1, 2, 4, 8, 16, Number.POSITIVE_INFINITY];
  const counts = bounds.map(() => 0);
  const time = bounds.map(() => 0);
  let from = -1;
  let to = -1;
  const close = () => {
    if (from < 0) return;
    const ms = (to - from) / 1000;
    const b = bounds.findIndex((x) => ms < x);
    counts[b]!++;
    time[b]! += ms;
    from = -1;
  };
  for (const { id, t, dt } of timedSamples(p, window)) {
    const fn = byId.get(id)!.callFrame.functionName;
    if (fn === '(idle)') {
      if (from >= 0 && t - to > 300) close();
      continue;
    }
    if (from < 0) from = t - dt;
    to = t;
  }
  close();
  const label = (i: number) => (i === 0 ? '< 1 ms' : bounds[i] === Number.POSITIVE_INFINITY ? `>= ${bounds[i - 1]} ms` : `${bounds[i - 1]}-${bounds[i]} ms`);
  return ['busy stretches of the event loop (gaps under 0.3 ms joined):', ...bounds.map((_, i) => `  ${label(i).padEnd(9)} ${String(counts[i]).padStart(6)} stretches, ${time[i]!.toFixed(0).padStart(6)} ms in all`)];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: tsx bench/lib/cpuprofile.ts <file.cpuprofile> [topN]');
    process.exit(2);
  }
  const [from, to] = [Number(process.argv[4]), Number(process.argv[5])];
  process.stdout.write(topFrames(file, Number(process.argv[3] ?? 25), from && to ? { fromUs: from, toUs: to } : undefined));
}
