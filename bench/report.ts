/**
 * `npx tsx bench/report.ts [bench/results/full.json]`: the Markdown tables of docs/BENCHMARKS.md
 * from a results file (figures, ratios to each peer, and the issue's targets).
 */
import { readFileSync } from 'node:fs';

type Row = Record<string, unknown>;
interface Results {
  machine: Row;
  mode: string;
  startedAt: string;
  durationSec: number;
  command: string;
  scenarios: Record<string, Record<string, Row>>;
}

const file = process.argv[2] ?? 'bench/results/full.json';
const r = JSON.parse(readFileSync(file, 'utf8')) as Results;
const SYS = ['ours', 'socketio', 'socketioPg', 'ws'];
const NAMES: Record<string, string> = { ours: 'ours (tRPC)', socketio: 'Socket.IO 4', socketioPg: 'Socket.IO 4 + pg insert', ws: 'raw ws' };

function f(v: unknown, d = 1): string {
  if (v === null || v === undefined) return '–';
  if (typeof v !== 'number') return String(v);
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  return String(Math.round(v * 10 ** d) / 10 ** d);
}

const ratio = (a: unknown, b: unknown) => (typeof a === 'number' && typeof b === 'number' && b !== 0 ? `${(a / b).toFixed(2)}x` : '–');

function table(cols: [string, (x: Row) => unknown][], rows: [string, Row][]): string {
  const out = [`| system | ${cols.map((c) => c[0]).join(' | ')} |`, `|---|${cols.map(() => '---:').join('|')}|`];
  for (const [name, x] of rows) out.push(`| ${name} | ${cols.map(([, g]) => (x.error ? 'error' : f(g(x)))).join(' | ')} |`);
  return out.join('\n');
}

function rowsOf(scen: string, pick: (x: Row) => Row = (x) => x): [string, Row][] {
  const s = r.scenarios[scen] ?? {};
  return SYS.filter((k) => s[k]).map((k) => [NAMES[k]!, pick(s[k]!)]);
}

const std: [string, (x: Row) => unknown][] = [
  ['deliveries/s', (x) => x.deliveriesPerSec],
  ['p50 ms', (x) => x.p50Ms],
  ['p99 ms', (x) => x.p99Ms],
  ['p99.9 ms', (x) => x.p999Ms],
  ['server CPU %', (x) => x.cpuPct],
  ['CPU µs/delivery', (x) => x.cpuUsPerDelivery],
  ['RSS MB', (x) => x.rssMb],
  ['lost', (x) => x.lost],
  ['dup', (x) => x.duplicated],
];

function ratios(scen: string, keys: [string, string][], pick: (x: Row) => Row = (x) => x): string {
  const s = r.scenarios[scen] ?? {};
  const ours = s.ours ? pick(s.ours) : null;
  if (!ours) return '';
  const lines = [`| ours ÷ | ${keys.map((k) => k[1]).join(' | ')} |`, `|---|${keys.map(() => '---:').join('|')}|`];
  for (const peer of ['socketio', 'socketioPg', 'ws']) {
    if (!s[peer]) continue;
    const p = pick(s[peer]!);
    lines.push(`| ${NAMES[peer]} | ${keys.map(([k]) => ratio(ours[k], p[k])).join(' | ')} |`);
  }
  return lines.join('\n');
}

const out: string[] = [];
const m = r.machine;
out.push(`Run: \`${r.command}\`, ${r.startedAt}, ${r.durationSec} s (${r.mode}). Machine: ${m.nproc} cores (${m.cpuModel}), ${m.memGb} GB, Node ${m.node}, PostgreSQL ${m.postgres}, Redis ${m.redis}, kernel ${m.kernel}; busy before start: ${JSON.stringify(m.busyPctBeforeStart)} %.`);

const fan = r.scenarios.fanout ?? {};
out.push('\n### 1. Fan-out: one room, one sender, at the maximum (16 messages not yet delivered to all)\n');
out.push(table(std, rowsOf('fanout')));
out.push('');
out.push(ratios('fanout', [['deliveriesPerSec', 'deliveries/s'], ['cpuUsPerDelivery', 'CPU µs/delivery'], ['p99Ms', 'p99']]));
const rates = Object.keys((fan.ours?.rates as Row | undefined) ?? {});
for (const rate of rates) {
  out.push(`\n#### Fixed rate: ${rate} messages/s (${f(fan.ours?.subscribers)} subscribers)\n`);
  out.push(table(std, rowsOf('fanout', (x) => ((x.rates as Row | undefined)?.[rate] as Row | undefined) ?? {})));
  out.push('');
  out.push(ratios('fanout', [['cpuUsPerDelivery', 'CPU µs/delivery'], ['p99Ms', 'p99']], (x) => ((x.rates as Row | undefined)?.[rate] as Row | undefined) ?? {}));
}

out.push('\n### 2. Many rooms: direct rooms, 2 connections each, fixed total rate\n');
out.push(table(std, rowsOf('rooms')));
out.push('');
out.push(ratios('rooms', [['cpuUsPerDelivery', 'CPU µs/delivery'], ['p99Ms', 'p99']]));

const feedRow = r.scenarios.feed?.ours;
if (feedRow && !feedRow.error) {
  out.push('\n#### The same with every connection on `inbox.events` (the room list feed; ours only)\n');
  out.push(table(std, rowsOf('feed')));
  out.push(`\n\`room.activity\` received: ${f(feedRow.inboxActivity)} for ${f(feedRow.deliveries)} room deliveries (rooms scenario without inboxes: ${f(r.scenarios.rooms?.ours?.cpuUsPerDelivery)} µs/delivery).`);
}

out.push('\n### 3. Persisted sends: acknowledged messages/s and ack latency (one message in flight per sender)\n');
const sends = r.scenarios.sends ?? {};
const caseKeys = Object.keys((sends.ours?.cases as Row | undefined) ?? {});
if (caseKeys.length) {
  const head = caseKeys[caseKeys.length - 1]!;
  const lines = [
    `| system | ${caseKeys.map((k) => `${k} acks/s (p99 ms)`).join(' | ')} | server CPU µs/ack (${head}) | database CPU µs/ack (${head}) | machine busy % (${head}) |`,
    `|---|${caseKeys.map(() => '---:').join('|')}|---:|---:|---:|`,
  ];
  for (const k of SYS) {
    const x = sends[k];
    if (!x || x.error) continue;
    const cs = x.cases as Record<string, Row>;
    const h = cs[head];
    lines.push(`| ${NAMES[k]} | ${caseKeys.map((c) => `${f(cs[c]?.ackedPerSec)} (${f(cs[c]?.ackP99Ms)})`).join(' | ')} | ${f(h?.cpuUsPerAck)} | ${f(h?.dbCpuUsPerAck)} | ${f(h?.machineCpuPct)} |`);
  }
  out.push(lines.join('\n'));
}

out.push('\n### 4. Idle connections, one subscription each\n');
out.push(
  table(
    [
      ['connections', (x) => x.connections],
      ['KB/connection', (x) => x.kbPerConnection],
      ['KB/connection, the second half', (x) => x.kbPerConnectionMarginal],
      ['KB/connection after holding them 30 s', (x) => x.kbPerConnectionHeld],
      ['CPU % while holding them', (x) => x.idleCpuPct],
      ['RSS before MB', (x) => x.rssBeforeMb],
      ['RSS after MB', (x) => x.rssMb],
      ['connects/s', (x) => x.connectsPerSec],
      ['CPU µs/connect', (x) => x.cpuUsPerConnect],
    ],
    rowsOf('idle'),
  ),
);
out.push('');
out.push(ratios('idle', [['kbPerConnection', 'KB/connection'], ['kbPerConnectionMarginal', 'KB/connection, the second half']]));

out.push('\n### 5. Reconnect storm: the server restarts while messages keep coming\n');
out.push(
  table(
    [
      ['subscribers', (x) => x.subscribers],
      ['downtime ms', (x) => x.downtimeMs],
      ['all resubscribed ms', (x) => x.resubscribedMs],
      ['all caught up ms', (x) => x.catchUpMs],
      ['acked msgs', (x) => x.acked],
      ['lost', (x) => x.lost],
      ['dup', (x) => x.duplicated],
      ['subs with loss', (x) => x.subsWithLoss],
      ['p50 ms', (x) => x.p50Ms],
      ['p99 ms', (x) => x.p99Ms],
    ],
    rowsOf('storm'),
  ),
);

out.push('\n### 6. Scale-out: fan-out at the maximum, one node vs two nodes with Redis\n');
out.push(
  table(
    [
      ['1 node deliveries/s', (x) => (x.oneNode as Row | undefined)?.deliveriesPerSec],
      ['2 nodes deliveries/s', (x) => x.deliveriesPerSec],
      ['speedup', (x) => x.speedup],
      ['1 node CPU µs/delivery', (x) => (x.oneNode as Row | undefined)?.cpuUsPerDelivery],
      ['2 nodes CPU µs/delivery', (x) => x.cpuUsPerDelivery],
      ['2 nodes p99 ms', (x) => x.p99Ms],
      ['load CPU %', (x) => x.loadCpuPct],
      ['lost', (x) => x.lost],
    ],
    rowsOf('scaleout'),
  ),
);

process.stdout.write(`${out.join('\n')}\n`);
