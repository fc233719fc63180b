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
    let t = p.startTime;
    for (let i = 0; i < p.samples.length; i++) {
      const id = p.samples[i]!;
      const dt = Math.max(0, p.timeDeltas[i] ?? 0);
      t += dt;
      if (window && (t < window.fromUs || t > window.toUs)) continue;
      self.set(id, (self.get(id) ?? 0) + dt);
    }
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
  const pct = (v: number) => `${((100 * v) / Math.max(1, busy)).toFixed(1).padStart(5)}%`;
  const lines: string[] = [];
  if (window) lines.push(`window: ${((window.toUs - window.fromUs) / 1e6).toFixed(1)} s (the measured phase only)`);
  lines.push(`profile: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (${((100 * busy) / Math.max(1, total)).toFixed(0)}%); shares below are of busy time`);
  lines.push('');
  lines.push(`top ${n} frames by self time:`);
  for (const [k, v] of [...frames.entries()].sort((a, b) => b[1] - a[1]).slice(0, n)) lines.push(`  ${pct(v)}  ${k}`);
  lines.push('');
  lines.push('self time by origin:');
  for (const [k, v] of [...origins.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)) lines.push(`  ${pct(v)}  ${k}`);
  return `${lines.join('\n')}\n`;
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
