/**
 * PostgreSQL read replicas (DATABASE_REPLICA_URLS; src/services/read-routing.ts): a primary and a
 * streaming standby of this file's own (initdb, then `pg_basebackup -R -X stream` to another port;
 * test/fault-env.ts), a server reading history, threads, search, room lists and replays there.
 * Checked: what a caller has seen (their own sends, the room's position) is always in what they
 * read next; a replica whose replay is paused is skipped for what it lacks and reported; a replica
 * that is stopped costs nothing but load on the primary.
 *
 *   npx vitest run test/pg-replica.test.ts
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFor, FaultEnv, getJson, type PrivatePostgres, Scope, startServer, testConfig, type TestServer, uuid, waitFor } from './fixture.js';

type Health = { status: string; database: string; replicas?: { name: string; status: string; lagMs: number | null }[] };

describe('PostgreSQL read replica (a streaming standby of a private primary)', () => {
  const faults = new FaultEnv();
  let primary: PrivatePostgres;
  let standby: PrivatePostgres;
  /** Replicas may lag 30 s: within the tests they are never skipped for lag, only for what they lack. */
  let srv: TestServer;
  /** The same pair with a bound of 300 ms: a paused replay makes it skip the replica and say so. */
  let tight: TestServer;
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    ({ primary, standby } = await faults.primaryWithStandby('chat', timings));
    let t = performance.now();
    const lap = (what: string) => {
      timings[what] = Math.round(performance.now() - t);
      t = performance.now();
    };
    const config = { databaseUrl: primary.url('chat'), databaseReplicaUrls: [standby.url('chat')] };
    srv = await startServer(testConfig({ ...config, databaseReplicaMaxLagMs: 30_000 }));
    lap('server with a replica: start + migrations (ms)');
    tight = await startServer(testConfig({ ...config, databaseReplicaMaxLagMs: 300 }));
    lap('second server: start (ms)');
    console.log('set-up', timings);
  }, 90_000);

  afterAll(async () => {
    await Promise.allSettled([srv?.close(), tight?.close()]);
    await faults.cleanup();
  }, 30_000);

  const counters = () => srv.app.services.deps.counters;
  const readyz = (s: TestServer) => getJson<Health>(`${s.url}/readyz`);
  /**
   * Resolves once the standby has replayed everything the primary has written so far, and both
   * servers' read routing has checked it since (a check runs every second: a server that last
   * looked while the standby was still replaying the set-up's writes would count it as lagging
   * until its next check).
   */
  async function caughtUp(): Promise<void> {
    const lsn = (await primary.sql<{ lsn: string }>('chat', 'select pg_current_wal_lsn()::text as lsn'))[0]!.lsn;
    await waitFor(
      async () => (await standby.sql<{ ok: boolean }>('chat', 'select pg_last_wal_replay_lsn() >= $1::pg_lsn as ok', [lsn]))[0]?.ok,
      'the standby to replay the primary',
    );
    await Promise.all([srv, tight].map((s) => s.app.services.reads.check()));
  }

  it('reads go to the replica once it has the room; a send is in the very next read of its sender and of others', async () => {
    await using scope = new Scope();
    const alice = scope.use(clientFor(srv.url, 'r-alice'));
    const bob = scope.use(clientFor(srv.url, 'r-bob'));
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'replica', memberIds: ['r-bob'] });
    await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'before' });
    await caughtUp();

    const before = { ...counters() };
    const page = await bob.trpc.chat.history.query({ roomId: room.id });
    expect(page.messages.map((m) => m.body)).toEqual(['before']);
    expect(counters().replicaReads).toBe(before.replicaReads + 1);

    // Each send is read back at once, by its sender and by another member, whichever server
    // answers: the replica when it already has the room's seq, the primary otherwise.
    const ROUNDS = 20;
    const start = { ...counters() };
    for (let i = 0; i < ROUNDS; i++) {
      const body = `round ${i} ${uuid()}`;
      const sent = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body });
      const mine = await alice.trpc.chat.history.query({ roomId: room.id, limit: 5 });
      expect(mine.messages.at(-1)).toMatchObject({ seq: sent.seq, body });
      const theirs = await bob.trpc.chat.history.query({ roomId: room.id, afterSeq: sent.seq - 1 });
      expect(theirs.messages.map((m) => m.seq)).toEqual([sent.seq]);
      const list = await alice.trpc.room.list.query();
      expect(list.find((r) => r.id === room.id)?.lastMessage?.seq).toBe(sent.seq);
    }
    const reads = counters().replicaReads - start.replicaReads;
    const fallbacks = counters().replicaFallbacks - start.replicaFallbacks;
    console.log(`read-your-writes: ${ROUNDS * 3} reads right after a send: ${reads} on the replica, ${fallbacks} on the primary`);
    expect(reads + fallbacks).toBe(ROUNDS * 3);

    // Search of the room and of every room, replica or not, finds the newest message.
    const word = `needle${uuid().slice(0, 8)}`;
    await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `a ${word} here` });
    for (const roomId of [room.id, undefined]) {
      const found = await alice.trpc.chat.search.query({ query: word, ...(roomId ? { roomId } : {}) });
      expect(found.hits.map((h) => h.message.body)).toEqual([`a ${word} here`]);
    }
    const health = await readyz(srv);
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({ status: 'ready', replicas: [{ name: 'replica-1', status: 'up' }] });
  });

  it('a replica whose replay is paused: what it lacks is read from the primary (history, thread, search, list, replay), the rest still from it; /readyz says degraded', async () => {
    await using scope = new Scope();
    const alice = scope.use(clientFor(srv.url, 'l-alice'));
    const bob = scope.use(clientFor(srv.url, 'l-bob'));
    const busy = await alice.trpc.room.create.mutate({ kind: 'group', name: 'busy', memberIds: ['l-bob'] });
    const quiet = await alice.trpc.room.create.mutate({ kind: 'group', name: 'quiet', memberIds: ['l-bob'] });
    const root = await alice.trpc.chat.send.mutate({ roomId: busy.id, clientId: uuid(), body: 'root' });
    await bob.trpc.chat.send.mutate({ roomId: quiet.id, clientId: uuid(), body: 'quiet one' });
    await caughtUp();
    await standby.sql('chat', 'select pg_wal_replay_pause()');
    try {
      await waitFor(async () => (await standby.sql<{ s: string }>('chat', 'select pg_get_wal_replay_pause_state() as s'))[0]?.s, 'replay paused', {
        until: (s) => s === 'paused',
      });
      const word = `lagword${uuid().slice(0, 8)}`;
      const m = await alice.trpc.chat.send.mutate({ roomId: busy.id, clientId: uuid(), body: `new ${word}` });
      const reply = await bob.trpc.chat.send.mutate({ roomId: busy.id, clientId: uuid(), body: 'a reply', replyToId: root.id });
      // The replica does not have them (its replay stopped before them).
      const onReplica = await standby.sql<{ n: string }>('chat', 'select count(*)::text as n from message where id = any($1::uuid[])', [[m.id, reply.id]]);
      expect(onReplica[0]?.n).toBe('0');

      const c0 = { ...counters() };
      const history = await bob.trpc.chat.history.query({ roomId: busy.id });
      expect(history.messages.map((x) => x.seq)).toEqual([root.seq, m.seq, reply.seq]);
      const thread = await alice.trpc.chat.thread.query({ messageId: root.id });
      expect(thread.replies.map((x) => x.id)).toEqual([reply.id]);
      const found = await alice.trpc.chat.search.query({ query: word, roomId: busy.id });
      expect(found.hits.map((h) => h.message.id)).toEqual([m.id]);
      const everywhere = await alice.trpc.chat.search.query({ query: word });
      expect(everywhere.hits.map((h) => h.message.id)).toEqual([m.id]);
      const list = await bob.trpc.room.list.query();
      expect(list.find((r) => r.id === busy.id)?.lastMessage?.id).toBe(reply.id);
      expect(counters().replicaFallbacks - c0.replicaFallbacks).toBe(5);

      // Replay from a position before the new events (a client resuming with lastEventId).
      const got: number[] = [];
      const replayed = new Promise<void>((resolve, reject) => {
        const sub = alice.trpc.chat.events.subscribe(
          { roomId: busy.id, lastEventId: String(root.seq) },
          {
            onData: (e) => {
              const seq = (e.data as { seq?: number }).seq;
              if (typeof seq === 'number') got.push(seq);
              if (got.includes(reply.seq)) {
                sub.unsubscribe();
                resolve();
              }
            },
            onError: reject,
          },
        );
      });
      await replayed;
      expect(got.filter((s) => s > root.seq)).toEqual([m.seq, reply.seq]);

      // A room the replica has in full is still read there.
      const c1 = { ...counters() };
      const q = await alice.trpc.chat.history.query({ roomId: quiet.id });
      expect(q.messages.map((x) => x.body)).toEqual(['quiet one']);
      expect(counters().replicaReads).toBe(c1.replicaReads + 1);

      // With a 300 ms bound the paused replica is skipped altogether, and reported (still ready: 200).
      const degraded = await waitFor(() => readyz(tight), 'the tight server to report the lagging replica', {
        until: (r) => r.body.replicas?.[0]?.status === 'lagging',
        everyMs: 50,
      });
      expect(degraded.status).toBe(200);
      expect(degraded.body.status).toBe('degraded');
      const metrics = await (await fetch(`${tight.url}/metrics`)).text();
      expect(metrics).toMatch(/chat_db_replica_up\{replica="replica-1"\} 0/);
    } finally {
      await standby.sql('chat', 'select pg_wal_replay_resume()');
    }
    await waitFor(() => readyz(tight), 'the tight server to use the replica again', { until: (r) => r.body.status === 'ready', timeoutMs: 10_000, everyMs: 50 });
  });

  it('a replica that is stopped: every read still answers (from the primary), /readyz says degraded with 200; back when it returns', async () => {
    await using scope = new Scope();
    const alice = scope.use(clientFor(srv.url, 'd-alice'));
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'down', memberIds: [] });
    await standby.stop('immediate');
    try {
      const sent = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'while the replica is down' });
      const page = await alice.trpc.chat.history.query({ roomId: room.id });
      expect(page.messages.map((x) => x.id)).toEqual([sent.id]);
      const list = await alice.trpc.room.list.query();
      expect(list.find((r) => r.id === room.id)?.lastMessage?.id).toBe(sent.id);
      const found = await alice.trpc.chat.search.query({ query: 'replica' });
      expect(found.hits.map((h) => h.message.id)).toContain(sent.id);
      const down = await waitFor(() => readyz(srv), 'readyz to report the replica down', {
        until: (r) => r.body.replicas?.[0]?.status === 'down',
        everyMs: 50,
      });
      expect(down.status).toBe(200);
      expect(down.body).toMatchObject({ status: 'degraded', database: 'up', replicas: [{ name: 'replica-1', status: 'down', lagMs: null }] });
    } finally {
      await standby.start();
    }
    await waitFor(() => readyz(srv), 'readyz to report the replica up again', { until: (r) => r.body.status === 'ready', timeoutMs: 15_000, everyMs: 50 });
    await caughtUp();
    const c0 = { ...counters() };
    const page = await alice.trpc.chat.history.query({ roomId: room.id });
    expect(page.messages).toHaveLength(1);
    expect(counters().replicaReads).toBe(c0.replicaReads + 1);
  });
});
