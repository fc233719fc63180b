/** hdr-histogram-js helpers: merge the workers' histograms (µs) and summarize them in ms. */
import hdr from 'hdr-histogram-js';

export function merge(encoded: string[]) {
  const h = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
  for (const e of encoded) {
    const part = hdr.decodeFromCompressedBase64(e, 32, false);
    h.add(part);
  }
  return h;
}

export interface LatencySummary {
  count: number;
  p50Ms: number | null;
  p99Ms: number | null;
  p999Ms: number | null;
  maxMs: number | null;
}

const ms = (us: number) => Math.round(us / 10) / 100;

export function summarize(encoded: string[]): LatencySummary {
  const h = merge(encoded);
  const count = h.totalCount;
  if (count === 0) return { count, p50Ms: null, p99Ms: null, p999Ms: null, maxMs: null };
  return {
    count,
    p50Ms: ms(h.getValueAtPercentile(50)),
    p99Ms: ms(h.getValueAtPercentile(99)),
    p999Ms: ms(h.getValueAtPercentile(99.9)),
    maxMs: ms(h.maxValue),
  };
}
