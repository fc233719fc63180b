/**
 * PostgreSQL failover (several hosts in DATABASE_URL, `target_session_attrs=read-write`;
 * src/store/pg-hosts.ts): a private primary and a synchronous streaming standby (test/fault-env.ts),
 * both named in DATABASE_URL. The primary crashes under traffic and the test promotes the standby:
 * sends fail with SERVICE_UNAVAILABLE during the switch and succeed after it, retried with their
 * clientId; no acknowledged message is lost and none is written twice.
 *
 *   npx vitest run test/pg-failover.test.ts
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  clientFor,
  codeOf,
  deferred,
  expectPerfect,
  FaultEnv,
  getJson,
  type PrivatePostgres,
  Scope,
  StreamLog,
  startServer,
  testConfig,
  type TestServer,
  uuid,
  waitFor,
  wsClient,
} from './fixture.js';

describe('PostgreSQL failover (a primary and a standby in DATABASE_URL, the standby promoted)', () => {
  const faults = new FaultEnv();
  let primary: PrivatePostgres;
  let standby: PrivatePostgres;
  let srv: TestServer;
  const multiUrl = (first: PrivatePostgres, second: PrivatePostgres) =>
    `postgresql://postgres@127.0.0.1:${first.port},127.0.0.1:${second.port}/chat?target_session_attrs=read-write`;
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    ({ primary, standby } = await faults.primaryWithStandby('chat', timings));
    let t = performance.now();
    const lap = (what: string) => {
      timings[what] = Math.round(performance.now() - t);
      t = performance.now();
    };
    // Synchronous replication: a commit is acknowledged once the standby has it, so the failover
    // cannot lose an acknowledged message (set on the primary only: the standby must not wait for
    // a standby of its own once promoted).
    await primary.sql('postgres', "alter system set synchronous_standby_names = '*'");
    await primary.sql('postgres', 'select pg_reload_conf()');
    await waitFor(async () => (await primary.sql<{ s: string }>('postgres', 'select sync_state as s from pg_stat_replication'))[0]?.s, 'a synchronous standby', {
      until: (s) => s === 'sync',
    });
    lap('synchronous replication on (ms)');
    srv = await startServer(testConfig({ databaseUrl: multiUrl(primary, standby) }));
    lap('server: start + migrations (ms)');
    console.log('set-up', timings);
  }, 90_000);

  afterAll(async () => {
    await srv?.close();
    await faults.cleanup();
  }, 30_000);

  it('the standby named first is passed over: the server writes to the primary', async () => {
    await using reversed = await startServer(testConfig({ databaseUrl: multiUrl(standby, primary) }));
    await using alice = clientFor(reversed.url, 'f-first');
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'standby first', memberIds: [] });
    const m = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'to the primary' });
    const rows = await primary.sql<{ body: string }>('chat', 'select body from message where id = $1', [m.id]);
    expect(rows.map((r) => r.body)).toEqual(['to the primary']);
  });

  it('the primary crashes under traffic and the standby is promoted: SERVICE_UNAVAILABLE during the switch, then success; none lost, none twice', async () => {
    await using scope = new Scope();
    const SENDERS = 3;
    const PER = 60;
    const CRASH_AT = 45;
    const senderIds = Array.from({ length: SENDERS }, (_, i) => `f-sender${i}`);
    // Over HTTP, and one of them over the WebSocket.
    const senders = senderIds.map((id, i) => scope.use(clientFor(srv.url, id, { ws: i === SENDERS - 1 })));
    const room = await senders[0]!.trpc.room.create.mutate({ kind: 'group', name: 'failover', memberIds: [...senderIds.slice(1), 'f-sub'] });
    // A subscriber from before the crash to after the promotion.
    const watcher = scope.use(wsClient({ url: srv.url, userId: 'f-sub' }));
    const log = new StreamLog('f-sub');
    const sub = watcher.trpc.chat.events.subscribe({ roomId: room.id }, { onData: log.onData, onError: log.got.fail });
    scope.use({ close: () => sub.unsubscribe() });
    await log.ready();

    const acked: { clientId: string; id: string; seq: number; attempts: number }[] = [];
    const errors: Record<string, number> = {};
    const failed = new Set<number>();
    const allFailed = deferred();
    const crashed = deferred();
    const promoted = deferred();
    let crashing = false;
    let crashAt = 0;
    let promotedAt = 0;
    let firstAfter = 0;

    const sending = Promise.all(
      senders.map(async (c, i) => {
        for (let n = 0; n < PER; n++) {
          const clientId = uuid();
          let attempts = 0;
          for (;;) {
            attempts++;
            if (attempts > 30) throw new Error(`sender ${i} message ${n}: still failing after 30 attempts`);
            try {
              const m = await c.trpc.chat.send.mutate({ roomId: room.id, clientId, body: `s${i}-${n}` });
              acked.push({ clientId, id: m.id, seq: m.seq, attempts });
              if (promotedAt && !firstAfter) firstAfter = performance.now();
              if (acked.length === CRASH_AT && !crashing) {
                crashing = true;
                crashAt = performance.now();
                void primary.stop('immediate').then(crashed.resolve, crashed.reject);
              }
              break;
            } catch (err) {
              const code = codeOf(err) ?? 'none';
              errors[code] = (errors[code] ?? 0) + 1;
              if (code !== 'SERVICE_UNAVAILABLE') throw err;
              // The client's retry policy: the same clientId again once the switch is over.
              failed.add(i);
              if (failed.size === SENDERS) allFailed.resolve();
              await promoted.promise;
            }
          }
        }
      }),
    );

    await crashed.promise;
    await allFailed.promise;
    const whileDown = await getJson<{ status: string }>(`${srv.url}/readyz`);
    expect(whileDown.status).toBe(503);
    await standby.promote();
    promotedAt = performance.now();
    promoted.resolve();
    await sending;
    const ready = await waitFor(() => getJson<{ status: string }>(`${srv.url}/readyz`), 'readyz after the failover', {
      until: (r) => r.status === 200,
      everyMs: 50,
    });
    expect(ready.body.status).toBe('ready');

    // Every acknowledged message is on the new primary, exactly once, with the seq it was acknowledged with.
    const rows = (
      await standby.sql<{ id: string; s: string; client_id: string }>('chat', 'select id, seq::text as s, client_id from message where room_id = $1 order by seq', [room.id])
    ).map((r) => ({ id: r.id, seq: Number(r.s), client_id: r.client_id }));
    expect(acked).toHaveLength(SENDERS * PER);
    expect(rows).toHaveLength(SENDERS * PER);
    expect(new Set(rows.map((r) => r.client_id)).size).toBe(rows.length);
    const byClientId = new Map(rows.map((r) => [r.client_id, r]));
    for (const a of acked) expect(byClientId.get(a.clientId)).toMatchObject({ id: a.id, seq: a.seq });
    // And the history the clients read agrees.
    const seen: number[] = [];
    let after = 0;
    for (;;) {
      const page = await senders[1]!.trpc.chat.history.query({ roomId: room.id, afterSeq: after, limit: 100 });
      seen.push(...page.messages.map((m) => m.seq));
      if (!page.hasMore) break;
      after = page.messages.at(-1)!.seq;
    }
    expect(seen).toEqual(rows.map((r) => r.seq));
    // The subscriber got every message exactly once, in order, across the switch.
    const sent = acked.map((a) => a.seq).sort((a, b) => a - b);
    await log.all(sent, 'every acknowledged message', 30_000);
    expectPerfect([log], sent);
    const retried = acked.filter((a) => a.attempts > 1).length;
    console.log(
      `failover: ${acked.length} sends acknowledged, ${retried} of them after a retry; errors ${JSON.stringify(errors)};` +
        ` crash to promoted ${Math.round(promotedAt - crashAt)} ms (the test waits for every sender to fail first), promoted to the first acknowledged send ${Math.round(firstAfter - promotedAt)} ms`,
    );
    expect(Object.keys(errors)).toEqual(['SERVICE_UNAVAILABLE']);
    expect(retried).toBeGreaterThanOrEqual(SENDERS);
  });
});
