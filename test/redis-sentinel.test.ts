/**
 * Redis Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_NAME): a private master, its replica and three
 * sentinels (test/fixture/redis-topologies.ts), two nodes of ours on them. The master is SIGKILLed
 * while both nodes take sends and serve subscribers: /readyz says 503 during the outage, sends go
 * on after the failover, and every subscriber gets every message exactly once, in order (what
 * pub/sub lost meanwhile is filled from PostgreSQL).
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisSentinelEnv } from './fixture/redis-topologies.js';
import { analyze, clientFor, dispose, expectPerfect, Scope, sendUntilStopped, StreamLog, testEnv, uuid, waitFor, type TestEnv, type TestServer } from './fixture.js';

let sentinel: RedisSentinelEnv;
let env: TestEnv;
let a: TestServer;
let b: TestServer;

beforeAll(async () => {
  sentinel = await RedisSentinelEnv.start({ downAfterMs: 1000, failoverTimeoutMs: 5000 });
  env = await testEnv('rsentinel');
  a = await env.startServer({ redisUrl: undefined, redisTopology: sentinel.topology });
  b = await env.startServer({ redisUrl: undefined, redisTopology: sentinel.topology });
}, 60_000);

afterAll(async () => {
  await dispose(a, b);
  await dispose(env, sentinel);
}, 60_000);

/** How long after the failover the sends must go through again: "the failover time plus a few seconds". */
const RESUME_WITHIN_MS = 5000;

describe('two nodes on Redis Sentinel', () => {
  it('/readyz names Sentinel', async () => {
    for (const s of [a, b]) {
      const r = await fetch(`${s.url}/readyz`);
      expect(r.status).toBe(200);
      expect(await r.json()).toMatchObject({ status: 'ready', redis: { kind: 'redis', topology: 'sentinel' } });
    }
  });

  it('the master is killed under traffic: 503 during the outage, sends resume after the failover, every message once and in order', async () => {
    await using open = new Scope();
    const senderIds = ['s0', 's1', 's2', 's3'];
    const senders = senderIds.map((id, i) => open.use(clientFor(i % 2 === 0 ? a.url : b.url, id)));
    const room = await senders[0]!.trpc.room.create.mutate({ kind: 'group', name: 'failover', memberIds: [...senderIds.slice(1), 'watcher'] });
    const logs = [a, b].map((s, i) => {
      const w = open.use(clientFor(s.url, 'watcher'));
      const log = new StreamLog(i === 0 ? 'on A' : 'on B');
      const sub = w.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
      open.use({ close: () => sub.unsubscribe() });
      return log;
    });
    await Promise.all(logs.map((l) => l.ready()));

    // /readyz of both nodes, polled all along.
    const readyz: { at: number; node: 'A' | 'B'; status: number }[] = [];
    /** The body of each node's last answer that was not 200: what a failed wait below names. */
    const lastUnready: Record<string, unknown> = {};
    let polling = true;
    const poller = (async () => {
      while (polling) {
        await Promise.all(
          (['A', 'B'] as const).map(async (node) => {
            const res = await fetch(`${(node === 'A' ? a : b).url}/readyz`).catch(() => null);
            if (res && res.status !== 200) lastUnready[node] = await res.json().catch(() => null);
            else await res?.body?.cancel();
            readyz.push({ at: performance.now(), node, status: res?.status ?? 0 });
          }),
        );
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    // Senders go on until told to stop; a failed send is repeated with the same clientId (idempotent).
    const traffic = sendUntilStopped(senders, room.id, 's');
    const acked = traffic.acked;

    await waitFor(() => acked.length, '80 messages before the kill', { until: (n) => n >= 80, timeoutMs: 20_000 });
    const oldPort = await sentinel.masterPort();
    const killedAt = performance.now();
    const ackedAtKill = acked.length;
    await sentinel.killMaster();
    const newPort = await sentinel.failedOver(oldPort);
    const failedOverAt = performance.now();
    // Sends go through again soon after the failover: every sender has messages acknowledged that it started after it.
    await waitFor(
      () => senderIds.map((_, i) => acked.filter((x) => x.sender === i && x.startedAt > failedOverAt).length),
      'sends acknowledged after the failover',
      { until: (xs) => xs.every((n) => n >= 10), timeoutMs: RESUME_WITHIN_MS + 5000, everyMs: 20 },
    );
    const firstAfter = acked.filter((x) => x.startedAt > failedOverAt).sort((x, y) => x.at - y.at)[0]!;
    // /readyz: 503 on both nodes during the outage, 200 again after it.
    await waitFor(
      () => (['A', 'B'] as const).every((node) => readyz.some((r) => r.node === node && r.at > failedOverAt && r.status === 200)),
      'both nodes ready again',
      { timeoutMs: 15_000, everyMs: 20 },
    ).catch((err: Error) => {
      const links = [a, b].map((s) =>
        s.app.infra.redis.map((l) => {
          const c = l.client as unknown as { status: string; stream?: { remotePort?: number } };
          return `${l.role}:${c.status}@${c.stream?.remotePort ?? '-'}`;
        }),
      );
      throw new Error(
        `${err.message}; each node's last answer other than 200: ${JSON.stringify(lastUnready)}; links (new master ${newPort}): ${JSON.stringify(links)}`,
      );
    });
    await traffic.stop();
    polling = false;
    await poller;
    const end = await senders[1]!.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'end' });
    const all = [...acked.map((x) => x.seq), end.seq];
    await Promise.all(logs.map((l) => l.all(all, 'every acknowledged message', 30_000)));

    const unready = (node: 'A' | 'B') => readyz.filter((r) => r.node === node && r.at > killedAt && r.status === 503);
    const window = (node: 'A' | 'B') => {
      const xs = unready(node);
      return xs.length ? `${Math.round(xs[0]!.at - killedAt)}-${Math.round(xs.at(-1)!.at - killedAt)} ms` : 'none';
    };
    // The longest time without an acknowledgement, around the kill.
    const ats = acked.map((x) => x.at).sort((x, y) => x - y);
    let longest = 0;
    for (let i = 1; i < ats.length; i++) longest = Math.max(longest, ats[i]! - ats[i - 1]!);
    console.log(
      `[sentinel] master ${oldPort} killed after ${ackedAtKill} sends; sentinels promoted ${newPort} after ${Math.round(failedOverAt - killedAt)} ms; ` +
        `first send started after the failover acknowledged ${Math.round(firstAfter.at - failedOverAt)} ms after it; longest pause between acknowledgements ${Math.round(longest)} ms; ` +
        `failed sends (repeated) ${traffic.errors()}; /readyz 503 on A ${window('A')}, on B ${window('B')} after the kill; ${all.length} messages; ` +
        `counts ${logs.map((l) => JSON.stringify(analyze(l.got.items, all))).join(' ')}`,
    );
    expect(unready('A').length, 'A unready during the outage').toBeGreaterThan(0);
    expect(unready('B').length, 'B unready during the outage').toBeGreaterThan(0);
    expect(new Set(all).size).toBe(all.length);
    expectPerfect(logs, all);
  });
});
