/**
 * Fault tests of the delivery guarantee (docs/DELIVERY.md; issue 6 "Faults"): real server
 * processes (src/main.ts) on a PostgreSQL cluster and a Redis server of this file's own
 * (test/fault-env.ts), so they can be killed and restarted without touching the machine's shared
 * services. Every loop is bounded; every wait is on an event, a process, or a bounded /readyz poll.
 * Each test prints, per subscriber, what it received and ends with zero lost, zero duplicated and
 * order kept.
 *
 *   npx vitest run test/faults.test.ts          (FAULT_SEED=<n> to vary the random cut points)
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  actor,
  analyze,
  callerFor,
  clientFor,
  deferred,
  dispose,
  errInfo,
  expectPerfect,
  FaultEnv,
  getJson,
  perfect,
  POSITION_CHECK_MS,
  ProcGroup,
  prng,
  recordingWebSocket,
  runSenders,
  Scope,
  startServer,
  stats,
  StreamLog,
  TEST_SECRET,
  testConfig,
  tokenFor,
  uuid,
  waitFor,
  wsClient,
  type Counts,
  type PrivatePostgres,
  type PrivateRedis,
  type Sender,
  type ServerProc,
  type WsTestClient,
} from './fixture.js';

const SEED = Number(process.env.FAULT_SEED ?? 20261122);
const TEST_TIMEOUT = 180_000;

const fault = new FaultEnv();
const group = new ProcGroup();
let redis: PrivateRedis;
let pgc: PrivatePostgres;
let dbUrl: string;
/** The database of the nodes, on the private cluster. */
const DB = 'chat_faults';
const nodes: { A: ServerProc | null; B: ServerProc | null } = { A: null, B: null };

function nodeEnv(): Record<string, string> {
  return {
    DATABASE_URL: dbUrl,
    REDIS_URL: redis.url,
    REDIS_PREFIX: 'fault:',
    JWT_SECRET: TEST_SECRET,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
  };
}

/** Both nodes up (a previous test may have killed one): respawns what is missing. */
async function ensureNodes(): Promise<{ A: ServerProc; B: ServerProc }> {
  if (!redis.running) await redis.start();
  if (!pgc.running) await pgc.start();
  const missing = (['A', 'B'] as const).filter((k) => !nodes[k]?.alive);
  const started = await Promise.all(missing.map((k) => group.spawn({ label: k, env: nodeEnv(), startTimeoutMs: 60_000 })));
  missing.forEach((k, i) => {
    nodes[k] = started[i]!;
  });
  return { A: nodes.A!, B: nodes.B! };
}

beforeAll(async () => {
  redis = await fault.redis();
  pgc = await fault.postgres();
  dbUrl = await pgc.createDatabase(DB);
  await ensureNodes();
}, 120_000);

afterAll(() => dispose(fault, group), 60_000);

/** The code of a failed call as the client sees it (`NETWORK` when no tRPC error came back). */
const codeOf = (err: unknown): string => errInfo(err).code ?? 'NETWORK';

// ---------------------------------------------------------------------------------------------
// What a subscriber got

function report(name: string, rows: { label: string; counts: Counts; extra?: string }[]) {
  const lines = rows.map(
    (r) =>
      `  ${r.label.padEnd(14)} received ${r.counts.received}  duplicates ${r.counts.duplicates}  missing ${r.counts.missing}  ` +
      `outOfOrder ${r.counts.outOfOrder}  unexpected ${r.counts.unexpected}  badIds ${r.counts.badIds}  readies ${r.counts.readies}` +
      (r.extra ? `  ${r.extra}` : ''),
  );
  console.log(`[faults] ${name}\n${lines.join('\n')}`);
}

/** Creates a room with the given members (the creator is `owner`). */
async function newRoom(creator: Sender, name: string, memberIds: string[]) {
  return creator.trpc.room.create.mutate({ kind: 'group', name, memberIds });
}

/** Subscribes a fresh subscription from `ready` and records it. */
function subscribe(client: { trpc: WsTestClient['trpc'] | ReturnType<typeof clientFor>['trpc'] }, roomId: string, label: string) {
  const log = new StreamLog(label);
  const sub = client.trpc.chat.events.subscribe({ roomId }, { onData: log.onData, onError: log.got.fail });
  return { log, sub };
}

/** median / p99 / max of a list of milliseconds. */
function latencies(ms: number[]): string {
  if (!ms.length) return 'n/a';
  const s = stats(ms);
  return `median ${s.p50.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms, max ${s.max.toFixed(1)} ms (n=${s.n})`;
}

/** The room hubs' totals of a node (GET /admin/stats): `filled` counts events taken from PostgreSQL to close gaps. */
interface HubTotals {
  gapFills: number;
  filled: number;
  duplicates: number;
  positionCatchUps: number;
}

async function hubStats(url: string): Promise<HubTotals> {
  const r = await getJson<{ events: HubTotals }>(`${url}/admin/stats`, { headers: { authorization: `Bearer ${tokenFor('fault-admin', { roles: ['operator'] })}` } });
  if (r.status !== 200) throw new Error(`/admin/stats: ${r.status} ${JSON.stringify(r.body)}`);
  const { gapFills, filled, duplicates, positionCatchUps } = r.body.events;
  return { gapFills, filled, duplicates, positionCatchUps };
}

const delta = (a: HubTotals, b: HubTotals) =>
  `gapFills +${b.gapFills - a.gapFills}, filled +${b.filled - a.filled}, duplicates dropped +${b.duplicates - a.duplicates}, ` +
  `position catch-ups +${b.positionCatchUps - a.positionCatchUps}`;

async function readyz(url: string) {
  return getJson(`${url}/readyz`);
}

// ---------------------------------------------------------------------------------------------

describe('faults (real processes, private PostgreSQL and Redis)', () => {
  it(
    '1. Redis restarted while two nodes carry traffic: the bus reconnects, gaps are filled from PostgreSQL',
    async () => {
      const { A, B } = await ensureNodes();
      const SENDERS = 4;
      const PER = 150;
      const KILL_AT = 150;
      const DURING_OUTAGE = 120;
      const senderIds = Array.from({ length: SENDERS }, (_, i) => `r-sender${i}`);
      const subIds = Array.from({ length: 6 }, (_, i) => `r-sub${i}`);
      await using open = new Scope();
      const senders = senderIds.map((id, i) => open.use(clientFor(i % 2 === 0 ? A.url : B.url, id)));
      const subClients = subIds.map((id, i) => open.use(wsClient({ url: i < 3 ? A.url : B.url, userId: id })));
      // Connects and subscribes while Redis is down (created then).
      let late: WsTestClient | null = null;
      const room = await newRoom(senders[0]!, 'redis-restart', [...senderIds.slice(1), ...subIds, 'r-late']);
      const subs = subClients.map((c, i) => subscribe(c, room.id, `${i < 3 ? 'A' : 'B'}:${subIds[i]}`));
      await Promise.all(subs.map((s) => s.log.ready()));
      const stats0 = await Promise.all([A, B].map((n) => hubStats(n.url)));

      let sent = 0;
      let sentDuringOutage = 0;
      let phase: 'before' | 'down' | 'recovering' | 'after' = 'before';
      const killed = deferred();
      const quotaReached = deferred();
      const resume = deferred();
      let held = 0;
      const latDown: number[] = [];
      const latUp: number[] = [];
      let killing: Promise<void> | null = null;
      const t0 = performance.now();
      const sending = runSenders(senders, room.id, PER, {
        before: async () => {
          // Traffic pauses once DURING_OUTAGE messages were accepted with Redis down (every
          // sender held, nothing in flight), and goes on after the hubs caught up: that
          // catch-up can only come from the reconnect's resync.
          if (phase === 'down' && sentDuringOutage >= DURING_OUTAGE) {
            if (++held === SENDERS) quotaReached.resolve();
            await resume.promise;
          }
        },
        onSent: (ms) => {
          sent++;
          (phase === 'down' ? latDown : latUp).push(ms);
          if (phase === 'down') sentDuringOutage++;
          if (sent === KILL_AT && !killing) {
            killing = redis.kill().then(() => {
              phase = 'down';
              killed.resolve();
            });
          }
        },
      });
      await killed.promise;
      const downAt = performance.now();
      const during = await readyz(A.url);
      await quotaReached.promise;
      const sentBeforeRestart = sent;
      // A client connecting now (its node's room hub exists): how long until it is live?
      const lateStart = performance.now();
      late = open.use(wsClient({ url: A.url, userId: 'r-late' }));
      const lateSub = subscribe(late, room.id, 'A:r-late (joined while down)');
      await lateSub.log.ready(30_000);
      const lateReadyMs = performance.now() - lateStart;
      // Restart on the same port; every message accepted so far must reach every subscriber
      // without further traffic (the reconnect resync).
      await redis.start();
      const restartedAt = performance.now();
      phase = 'recovering';
      // Every send acknowledged so far (all senders are held, none in flight), from PostgreSQL.
      const ackedSoFar = (await pgc.sql<{ seq: string }>(DB, 'select seq from message where room_id = $1 order by seq', [room.id])).map((x) => Number(x.seq));
      expect(ackedSoFar).toHaveLength(sentBeforeRestart);
      await Promise.all(subs.map((s) => s.log.all(ackedSoFar, `the ${ackedSoFar.length} messages sent before the restart`, 60_000)));
      const recoveredMs = performance.now() - restartedAt;
      const stats1 = await Promise.all([A, B].map((n) => hubStats(n.url)));
      // Every Redis link of the node (bus, limits, presence, sessions) reconnects with its own backoff;
      // the messages above may all have come through PostgreSQL before the last one is back.
      const after = await waitFor(() => readyz(B.url), 'B /readyz 200 after the restart', { until: (r) => r.status === 200, timeoutMs: 60_000, everyMs: 100 });
      phase = 'after';
      resume.resolve();
      const seqs = await sending;
      const lateReady = lateSub.log.readySeq();
      const lateSeqs = seqs.filter((x) => x > lateReady);
      await Promise.all(subs.map((s) => s.log.all(seqs, `all ${seqs.length} messages`, 60_000)));
      await lateSub.log.all(lateSeqs, 'every message after its ready', 60_000);
      const totalMs = performance.now() - t0;

      const rows = [
        ...subs.map((s) => ({ label: s.log.label, counts: analyze(s.log.got.items, seqs) })),
        { label: lateSub.log.label, counts: analyze(lateSub.log.got.items, lateSeqs), extra: `connected and ready ${lateReadyMs.toFixed(0)} ms after it was created with Redis down` },
      ];
      report(
        `Redis restart: ${seqs.length} messages from ${SENDERS} senders (2 per node), 6 subscribers (3 per node); ` +
          `Redis SIGKILLed after ${KILL_AT} sends, ${sentDuringOutage} sends accepted while down (outage ${(restartedAt - downAt).toFixed(0)} ms), ` +
          `all subscribers caught up ${recoveredMs.toFixed(0)} ms after the restart with no new traffic; total ${totalMs.toFixed(0)} ms; ` +
          `send latency with Redis up ${latencies(latUp)}, with Redis down ${latencies(latDown)}; ` +
          `hubs until caught up: A ${delta(stats0[0]!, stats1[0]!)}; B ${delta(stats0[1]!, stats1[1]!)}`,
        rows,
      );
      expect(during.status).toBe(503);
      expect(during.body).toMatchObject({ status: 'unavailable', database: 'up', bus: { kind: 'redis', status: 'down' } });
      expect(after.status).toBe(200);
      expect(sentDuringOutage).toBeGreaterThanOrEqual(DURING_OUTAGE);
      expect(seqs).toHaveLength(SENDERS * PER);
      expect(new Set(seqs).size).toBe(SENDERS * PER);
      expectPerfect(
        subs.map((s) => s.log),
        seqs,
      );
      expectPerfect([lateSub.log], lateSeqs);
      for (const s of [...subs, lateSub]) s.sub.unsubscribe();
    },
    TEST_TIMEOUT,
  );

  it(
    '2. PostgreSQL restarted: typed retryable errors while down, nothing half-written, resumes by itself, /readyz reports it',
    async () => {
      const { A, B } = await ensureNodes();
      const SENDERS = 4;
      const PER = 100;
      const STOP_AT = 120;
      const FAILS_PER_SENDER = 5;
      const senderIds = Array.from({ length: SENDERS }, (_, i) => `p-sender${i}`);
      const subIds = Array.from({ length: 4 }, (_, i) => `p-sub${i}`);
      await using open = new Scope();
      const senders = senderIds.map((id, i) => open.use(clientFor(i % 2 === 0 ? A.url : B.url, id)));
      const subClients = subIds.map((id, i) => open.use(wsClient({ url: i < 2 ? A.url : B.url, userId: id })));
      // Subscribes (resuming) only while the database is down, then again after it is back.
      const late = open.use(wsClient({ url: B.url, userId: 'p-late' }));
      try {
        const room = await newRoom(senders[0]!, 'pg-restart', [...senderIds.slice(1), ...subIds, 'p-late']);
        const subs = subClients.map((c, i) => subscribe(c, room.id, `${i < 2 ? 'A' : 'B'}:${subIds[i]}`));
        await Promise.all(subs.map((s) => s.log.ready()));

        let sent = 0;
        let down = false;
        let stopping: Promise<void> | null = null;
        const stopped = deferred();
        const back = deferred();
        const errors: { code: string; down: boolean }[] = [];
        const failsWhileDown = new Array<number>(SENDERS).fill(0);
        const allFailed = deferred();
        const acked: { clientId: string; body: string; seq: number; id: string; sender: number; attempts: number }[] = [];

        const t0 = performance.now();
        const sending = Promise.all(
          senders.map(async (c, i) => {
            for (let n = 0; n < PER; n++) {
              const clientId = uuid();
              const body = `p${i}-${n}`;
              let attempts = 0;
              for (;;) {
                attempts++;
                if (attempts > 50) throw new Error(`sender ${i} message ${n}: still failing after 50 attempts`);
                try {
                  const m = await c.trpc.chat.send.mutate({ roomId: room.id, clientId, body });
                  acked.push({ clientId, body, seq: m.seq, id: m.id, sender: i, attempts });
                  sent++;
                  if (sent === STOP_AT && !stopping) {
                    stopping = pgc.stop('immediate').then(() => {
                      down = true;
                      stopped.resolve();
                    });
                  }
                  break;
                } catch (err) {
                  const code = codeOf(err);
                  errors.push({ code, down: down || stopping !== null });
                  if (code !== 'SERVICE_UNAVAILABLE') throw err;
                  // Retry the same clientId: at once while counting the outage's failures, then
                  // when the database is back (the client's retry policy; no timer involved).
                  if (down) {
                    failsWhileDown[i]!++;
                    if (failsWhileDown.every((f) => f >= FAILS_PER_SENDER)) allFailed.resolve();
                    if (failsWhileDown[i]! >= FAILS_PER_SENDER) await back.promise;
                  } else {
                    await stopped.promise;
                  }
                }
              }
            }
          }),
        );
        await stopped.promise;
        const downAt = performance.now();
        await allFailed.promise;
        const [readyA, readyB] = await Promise.all([readyz(A.url), readyz(B.url)]);
        // A client (re)subscribing now, e.g. after its own network blip: a typed, retryable error.
        const from = String(subs[0]!.log.readySeq());
        const lateDuring = await new Promise<unknown>((resolve) => {
          const s = late.trpc.chat.events.subscribe(
            { roomId: room.id, lastEventId: from },
            { onData: (d) => resolve(new Error(`data while the database is down: ${JSON.stringify(d)}`)), onError: resolve },
          );
          void back.promise.then(() => s.unsubscribe());
        });
        await pgc.start();
        const startedAt = performance.now();
        // No event says "the pool reconnected": poll /readyz (bounded) on both nodes.
        const readyAfterMs = await Promise.all(
          [A, B].map(async (n) => {
            const t = Date.now();
            const ready = () => readyz(n.url).then((r) => r.status === 200, () => false);
            await waitFor(ready, `${n.label} /readyz 200 after the restart`, { timeoutMs: 60_000, everyMs: 100 });
            return Date.now() - t;
          }),
        );
        back.resolve();
        // ... and it resumes from the same lastEventId once the database is back.
        const lateLog = new StreamLog('B:p-late (resumed)');
        const lateSub = late.trpc.chat.events.subscribe({ roomId: room.id, lastEventId: from }, { onData: lateLog.onData, onError: lateLog.got.fail });
        await sending;
        const sendMs = performance.now() - t0;
        const seqs = acked.map((a) => a.seq);
        await Promise.all([...subs.map((s) => s.log), lateLog].map((l) => l.all(seqs, `all ${seqs.length} messages`, 60_000)));

        // Nothing half-written: the room's log and its messages agree, one row per acknowledged send.
        let dbCheck: { messages: number; distinctClientIds: number; events: number; lastSeq: number; minEvent: number; maxEvent: number; orphans: number };
        {
          const q = async (sql: string) => (await pgc.sql<Record<string, string>>(DB, sql, [room.id]))[0]!;
          const m = await q('select count(*) n, count(distinct client_id) d from message where room_id = $1');
          const e = await q('select count(*) n, min(seq) lo, max(seq) hi from room_event where room_id = $1');
          const r = await q('select last_seq from room where id = $1');
          const o = await q(
            `select count(*) n from room_event e left join message m on m.id = e.message_id
              where e.room_id = $1 and e.type = 'message.new' and m.id is null`,
          );
          dbCheck = {
            messages: Number(m.n),
            distinctClientIds: Number(m.d),
            events: Number(e.n),
            lastSeq: Number(r.last_seq),
            minEvent: Number(e.lo),
            maxEvent: Number(e.hi),
            orphans: Number(o.n),
          };
        }

        // Retrying every acknowledged clientId after the outage returns the original, never a second row.
        const repeats = await Promise.all(
          acked.map((a) => senders[a.sender]!.trpc.chat.send.mutate({ roomId: room.id, clientId: a.clientId, body: a.body })),
        );
        const history: number[] = [];
        let beforeSeq: number | undefined;
        for (let page = 0; page < 20; page++) {
          const h = await senders[1]!.trpc.chat.history.query({ roomId: room.id, limit: 100, ...(beforeSeq ? { beforeSeq } : {}) });
          history.unshift(...h.messages.map((m) => m.seq));
          if (!h.hasMore || !h.messages.length) break;
          beforeSeq = h.messages[0]!.seq;
        }

        const retried = acked.filter((a) => a.attempts > 1);
        const codes = [...new Set(errors.map((e) => e.code))];
        report(
          `PostgreSQL restart (pg_ctl stop -m immediate after ${STOP_AT} sends, outage ${(startedAt - downAt).toFixed(0)} ms): ` +
            `${acked.length} sends acknowledged, ${errors.length} failed attempts (codes ${codes.join(',')}), ${retried.length} messages needed retries; ` +
            `/readyz during: A ${readyA.status} ${JSON.stringify(readyA.body)} B ${readyB.status}; /readyz 200 again ${readyAfterMs.map((x) => x.toFixed(0)).join('/')} ms after start; ` +
            `db ${JSON.stringify(dbCheck)}; sends done after ${sendMs.toFixed(0)} ms`,
          [...subs.map((s) => s.log), lateLog].map((l) => ({ label: l.label, counts: analyze(l.got.items, seqs) })),
        );
        expect(codes).toEqual(['SERVICE_UNAVAILABLE']);
        expect(codeOf(lateDuring), `a subscription opened during the outage: ${String(lateDuring)}`).toBe('SERVICE_UNAVAILABLE');
        expect(analyze(lateLog.got.items, seqs)).toEqual({ ...perfect(seqs.length), readies: 0 });
        expect(lateLog.messageSeqs()).toEqual(Array.from({ length: seqs.length }, (_, i) => Number(from) + 1 + i));
        expect(failsWhileDown.every((f) => f >= FAILS_PER_SENDER)).toBe(true);
        for (const r of [readyA, readyB]) {
          expect(r.status).toBe(503);
          expect(r.body).toMatchObject({ status: 'unavailable', database: 'down' });
        }
        expect(acked).toHaveLength(SENDERS * PER);
        expect(new Set(seqs).size).toBe(SENDERS * PER);
        expect(dbCheck.messages).toBe(SENDERS * PER);
        expect(dbCheck.distinctClientIds).toBe(SENDERS * PER);
        expect(dbCheck.orphans).toBe(0);
        // room_event seqs are exactly 1..last_seq (no hole, nothing half-written).
        expect(dbCheck).toMatchObject({ minEvent: 1, maxEvent: dbCheck.lastSeq, events: dbCheck.lastSeq });
        expect(repeats.map((m) => [m.id, m.seq])).toEqual(acked.map((a) => [a.id, a.seq]));
        expect(history).toEqual([...seqs].sort((a, b) => a - b));
        expectPerfect(
          subs.map((s) => s.log),
          seqs,
        );
        for (const s of subs) s.sub.unsubscribe();
        lateSub.unsubscribe();
      } finally {
        if (!pgc.running) await pgc.start();
      }
    },
    TEST_TIMEOUT,
  );

  it(
    '3. one of two nodes SIGKILLed mid-stream: its clients move to the other node and resume',
    async () => {
      const { A, B } = await ensureNodes();
      const SENDERS = 4;
      const PER = 150;
      const KILL_AT = 200;
      const senderIds = Array.from({ length: SENDERS }, (_, i) => `k-sender${i}`);
      const subIds = Array.from({ length: 6 }, (_, i) => `k-sub${i}`);
      let target = A.url;
      const connectedTo: string[][] = subIds.map(() => []);
      // Senders 0 and 1 speak WebSocket to A and follow it to B; 2 and 3 use HTTP on B.
      await using open = new Scope();
      const senders: Sender[] = senderIds.map((id, i) =>
        open.use(i < 2 ? wsClient({ url: () => target, userId: id }) : clientFor(B.url, id)),
      );
      // Subscribers 0-3 on A (they move), 4-5 on B (they stay).
      const subClients = subIds.map((id, i) =>
        open.use(
          wsClient({
            url:
              i < 4
                ? () => {
                    connectedTo[i]!.push(target === A.url ? 'A' : 'B');
                    return target;
                  }
                : () => {
                    connectedTo[i]!.push('B');
                    return B.url;
                  },
            userId: id,
          }),
        ),
      );
      const room = await newRoom(senders[2]!, 'sigkill', [...senderIds.filter((s) => s !== 'k-sender2'), ...subIds]);
      const subs = subClients.map((c, i) => subscribe(c, room.id, `${i < 4 ? 'A->B' : 'B'}:${subIds[i]}`));
      await Promise.all(subs.map((s) => s.log.ready()));

      let sent = 0;
      let kill: { atSent: number } | null = null;
      let killedAt = 0;
      const failures: string[] = [];
      const acked: { seq: number; attempts: number }[] = [];
      const t0 = performance.now();
      await Promise.all(
        senders.map(async (c, i) => {
          for (let n = 0; n < PER; n++) {
            const clientId = uuid();
            for (let attempt = 1; ; attempt++) {
              if (attempt > 20) throw new Error(`sender ${i} message ${n}: still failing after 20 attempts`);
              try {
                const m = await c.trpc.chat.send.mutate({ roomId: room.id, clientId, body: `k${i}-${n}` });
                acked.push({ seq: m.seq, attempts: attempt });
                break;
              } catch (err) {
                // The send in flight on the killed node: its outcome is unknown, so the client
                // retries the same clientId (on the other node); idempotency makes that safe.
                failures.push(`${i}:${codeOf(err)}`);
              }
            }
            sent++;
            if (!kill && sent >= KILL_AT) {
              kill = { atSent: sent };
              killedAt = performance.now();
              target = B.url;
              A.child.kill('SIGKILL');
            }
          }
        }),
      );
      const seqs = acked.map((a) => a.seq);
      await Promise.all(subs.map((s) => s.log.all(seqs, `all ${seqs.length} messages after the kill`, 60_000)));
      const totalMs = performance.now() - t0;
      const exit = await A.exited;

      report(
        `SIGKILL of node A after ${kill ? (kill as { atSent: number }).atSent : '?'} of ${SENDERS * PER} sends (exit ${JSON.stringify(exit)}): ` +
          `${failures.length} sends failed in flight and were retried with the same clientId (${failures.join(' ')}); all delivered after ${totalMs.toFixed(0)} ms`,
        subs.map((s, i) => {
          const next = s.log.times.find((t) => t > killedAt);
          return {
            label: s.log.label,
            counts: analyze(s.log.got.items, seqs),
            extra: `connections ${connectedTo[i]!.join(',')}; first event ${next ? (next - killedAt).toFixed(0) : '?'} ms after the kill`,
          };
        }),
      );
      expect(kill).not.toBeNull();
      expect(exit.signal).toBe('SIGKILL');
      expect(seqs).toHaveLength(SENDERS * PER);
      expect(new Set(seqs).size).toBe(SENDERS * PER);
      for (let i = 0; i < 4; i++) {
        expect(connectedTo[i]![0], subIds[i]).toBe('A');
        expect(connectedTo[i]!.at(-1), subIds[i]).toBe('B');
      }
      expectPerfect(
        subs.map((s) => s.log),
        seqs,
      );
      for (const s of subs) s.sub.unsubscribe();
    },
    TEST_TIMEOUT,
  );

  it(
    "4. a client's network cut 10 times at random points during a burst: exactly once, in order",
    async () => {
      const { A, B } = await ensureNodes();
      const SENDERS = 4;
      const PER = 125;
      const TOTAL = SENDERS * PER;
      const CUTS = 10;
      const senderIds = Array.from({ length: SENDERS }, (_, i) => `c-sender${i}`);
      const subIds = ['c-subA', 'c-subB'];
      await using open = new Scope();
      const senders = senderIds.map((id, i) => open.use(clientFor(i % 2 === 0 ? A.url : B.url, id)));
      const recs = subIds.map(() => recordingWebSocket());
      const subClients = subIds.map((id, i) =>
        open.use(wsClient({ url: i === 0 ? A.url : B.url, userId: id, WebSocket: recs[i]!.WebSocket, retryDelayMs: () => 20 })),
      );
      const room = await newRoom(senders[0]!, 'cuts', [...senderIds.slice(1), ...subIds]);
      const rnd = prng(SEED);
      // Cut points: distinct random counts of messages received by the subscriber, drawn from the seed.
      const plans = subIds.map(() => {
        const at = new Set<number>();
        while (at.size < CUTS) at.add(1 + Math.floor(rnd.next() * (TOTAL - 20)));
        return [...at].sort((a, b) => a - b);
      });
      // A cut planned at a message that is read from a socket already cut (ws delivers what it had
      // received after terminate()) destroys the next socket once it opens: `deferred`.
      const done: { atReceived: number; sockets: number; deferred: boolean }[][] = subIds.map(() => []);
      const cuts: Promise<void>[] = [];
      const subs = subClients.map((c, i) => subscribe(c, room.id, `${i === 0 ? 'A' : 'B'}:${subIds[i]} (cut)`));
      subs.forEach((s, i) => {
        let next = 0;
        s.log.onMessage = (n) => {
          const plan = plans[i]!;
          while (next < plan.length && n >= plan[next]!) {
            next++;
            const wasOpen = recs[i]!.sockets.some((w) => w.readyState === WebSocket.OPEN);
            cuts.push(recs[i]!.cutOpen().then((sockets) => void done[i]!.push({ atReceived: n, sockets, deferred: !wasOpen })));
          }
        };
      });
      await Promise.all(subs.map((s) => s.log.ready()));
      const t0 = performance.now();
      const seqs = await runSenders(senders, room.id, PER);
      const sendMs = performance.now() - t0;
      await Promise.all(subs.map((s) => s.log.all(seqs, `all ${TOTAL} messages`, 60_000)));
      const recvMs = performance.now() - t0;
      // A cut deferred at the very end waits for the client's next socket (it reconnects in 20 ms).
      await Promise.all(cuts);

      report(
        `network cuts (seed ${SEED}): ${TOTAL} messages from ${SENDERS} senders in ${sendMs.toFixed(0)} ms, all received after ${recvMs.toFixed(0)} ms`,
        subs.map((s, i) => ({
          label: s.log.label,
          counts: analyze(s.log.got.items, seqs),
          extra: `cuts at received ${done[i]!.map((d) => `${d.atReceived}${d.deferred ? ' (at the next open)' : ''}`).join(',')}; sockets opened ${subClients[i]!.opens}`,
        })),
      );
      for (let i = 0; i < subs.length; i++) {
        expect(done[i]!.length, `${subIds[i]} cuts`).toBe(CUTS);
        expect(
          done[i]!.every((d) => d.sockets === 1),
          `${subIds[i]} each cut destroyed the open socket`,
        ).toBe(true);
        expect(subClients[i]!.opens).toBeGreaterThanOrEqual(CUTS + 1);
      }
      expect(new Set(seqs).size).toBe(TOTAL);
      expectPerfect(
        subs.map((s) => s.log),
        seqs,
      );
      for (const s of subs) s.sub.unsubscribe();
    },
    TEST_TIMEOUT,
  );
  it(
    '5. a node dies between COMMIT and PUBLISH: the committed event still reaches every subscriber, with no further traffic',
    async () => {
      const { A, B } = await ensureNodes();
      // A writer whose publishes reach no other process: the database state a node SIGKILLed
      // right after COMMIT (before its PUBLISH) leaves behind, made deterministic.
      await using lost = await startServer(testConfig({ databaseUrl: dbUrl, redisUrl: undefined }));
      await using open = new Scope();
      const owner = open.use(clientFor(B.url, 'l-owner'));
      const subIds = ['l-sub0', 'l-sub1', 'l-sub2', 'l-sub3'];
      const subClients = subIds.map((id, i) => open.use(wsClient({ url: i < 2 ? A.url : B.url, userId: id })));
      const room = await newRoom(owner, 'commit-no-publish', ['l-writer', ...subIds]);
      const subs = subClients.map((c, i) => subscribe(c, room.id, `${i < 2 ? 'A' : 'B'}:${subIds[i]}`));
      await Promise.all(subs.map((s) => s.log.ready()));
      const first = await owner.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'published' });
      await Promise.all(subs.map((s) => s.log.all([first.seq], 'the published message')));
      const stats0 = await Promise.all([A, B].map((n) => hubStats(n.url)));
      const writer = callerFor(lost.app, actor('l-writer'));
      const clientId = uuid();
      const t0 = performance.now();
      const orphan = await writer.chat.send({ roomId: room.id, clientId, body: 'committed, never published' });
      // Nothing else happens in the room: only the nodes themselves can notice the gap.
      await Promise.all(subs.map((s) => s.log.all([orphan.seq], 'the committed but unpublished message', 30_000)));
      const healedMs = performance.now() - t0;
      const stats1 = await Promise.all([A, B].map((n) => hubStats(n.url)));
      // The writer's client, its node gone, retries the same clientId elsewhere: the original comes back.
      const writerElsewhere = open.use(clientFor(B.url, 'l-writer'));
      const retry = await writerElsewhere.trpc.chat.send.mutate({ roomId: room.id, clientId, body: 'committed, never published' });
      await open.close(writerElsewhere);
      const seqs = [first.seq, orphan.seq];
      report(
        `commit without publish: delivered to every subscriber ${healedMs.toFixed(0)} ms after the commit, with no further traffic ` +
          `(position check every ${POSITION_CHECK_MS} ms); hubs: A ${delta(stats0[0]!, stats1[0]!)}; B ${delta(stats0[1]!, stats1[1]!)}`,
        subs.map((s) => ({ label: s.log.label, counts: analyze(s.log.got.items, seqs) })),
      );
      expect([retry.id, retry.seq]).toEqual([orphan.id, orphan.seq]);
      // Found by the position check on both nodes (no live event could reveal the gap).
      for (let i = 0; i < 2; i++) expect(stats1[i]!.positionCatchUps).toBeGreaterThan(stats0[i]!.positionCatchUps);
      expectPerfect(
        subs.map((s) => s.log),
        seqs,
      );
      for (const s of subs) s.sub.unsubscribe();
    },
    TEST_TIMEOUT,
  );
});
