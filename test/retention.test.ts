/**
 * Retention's one-node-at-a-time lease and its shutdown: a lease row (`job_lease`) that works where
 * each statement may go to another server connection (PgBouncer in transaction mode), that a dead
 * node's run gives up when it runs out, that a run whose lease was taken over stops, and a stop()
 * that ends the run in progress between batches and resolves once it has ended.
 */
import { Kysely, type PostgresPool, PostgresDialect } from 'kysely';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { RetentionService, type RetentionOptions } from '../src/services/retention.js';
import type { Db, Tables } from '../src/store/database.js';
import { actor, callerFor, createLogger, deferred, fileServer } from './fixture.js';

const t = fileServer('retention');
const log = createLogger('silent');
/** Messages are 40 days old, the services keep 30 days, and delete 10 per batch. */
const OPTS: RetentionOptions = { intervalMs: 3_600_000, batch: 10, days: 30 };

const store = () => t.app.services.store;
const leases = () => t.env.sql<{ name: string; owner: string }>('select name, owner from job_lease');
const oldMessages = async () => Number((await t.env.sql<{ n: string }>(`select count(*) as n from message where created_at < now() - interval '30 days'`))[0]!.n);

/** A room with `n` messages (and their log rows) 40 days old. */
async function roomWithOldMessages(n: number): Promise<string> {
  const room = await callerFor(t.app, actor('ret-owner')).room.create({ kind: 'group', name: 'old' });
  await t.env.sql(
    `insert into message (id, room_id, tenant, seq, sender_id, body, kind, attachments, mentions, created_at)
     select gen_random_uuid(), $1, 'default', g, 'ret-owner', 'old ' || g, 'text', '[]', '[]', now() - interval '40 days'
     from generate_series(1000, 999 + $2::int) g`,
    [room.id, n],
  );
  await t.env.sql(
    `insert into room_event (room_id, seq, type, message_id, data, created_at)
     select room_id, seq, 'message.new', id, '{}', created_at from message where room_id = $1 and seq >= 1000`,
    [room.id],
  );
  await t.env.sql('update room set last_seq = 999 + $2::int where id = $1', [room.id, n]);
  return room.id;
}

/** An onBatch hook that holds the run after its first batch until `release()`; `reached` resolves when it is held there. */
function holdAfterFirstBatch() {
  const reached = deferred();
  const gate = deferred();
  return {
    reached: reached.promise,
    release: () => gate.resolve(),
    onBatch: async (p: { batches: number }) => {
      if (p.batches !== 1) return;
      reached.resolve();
      await gate.promise;
    },
  };
}

/**
 * A stand-in for PgBouncer in transaction mode in front of the test database: each statement
 * outside a transaction goes to the next free server connection (round robin), a transaction keeps
 * its one from BEGIN to COMMIT or ROLLBACK. Nothing of a session (a session advisory lock) follows
 * the client from one statement to the next. `used` records the server connections statements ran on.
 */
async function transactionPooler(url: string, size = 3): Promise<{ db: Db; used: Set<number> } & AsyncDisposable> {
  const servers = await Promise.all(
    Array.from({ length: size }, async (_, i) => {
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => undefined);
      await client.connect();
      return { i, client, busy: false };
    }),
  );
  type Server = (typeof servers)[number];
  const used = new Set<number>();
  const waiting: (() => void)[] = [];
  let next = 0;
  const acquire = async (): Promise<Server> => {
    for (;;) {
      for (let k = 0; k < size; k++) {
        const s = servers[(next + k) % size]!;
        if (s.busy) continue;
        s.busy = true;
        next = (s.i + 1) % size;
        return s;
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
  };
  const release = (s: Server) => {
    s.busy = false;
    waiting.shift()?.();
  };
  const pool = {
    options: {},
    end: async () => {
      await Promise.all(servers.map((s) => s.client.end()));
    },
    connect: async () => {
      let pinned: Server | null = null;
      return {
        release: () => undefined,
        query: async (text: string, params: unknown[]) => {
          const s = pinned ?? (await acquire());
          used.add(s.i);
          const begins = /^\s*(begin|start transaction)\b/i.test(text);
          const ends = /^\s*(commit|rollback)\s*$/i.test(text);
          try {
            return await s.client.query(text, params);
          } finally {
            if (begins) pinned = s;
            else if (ends || !pinned) {
              pinned = null;
              release(s);
            }
          }
        },
      };
    },
  };
  const db = new Kysely<Tables>({ dialect: new PostgresDialect({ pool: pool as unknown as PostgresPool }) }) as unknown as Db;
  return { db, used, [Symbol.asyncDispose]: () => db.destroy() };
}

describe('retention: one node at a time (a lease row)', () => {
  it('behind a transaction-mode pooler (each statement on another server connection): a second node skips while one runs, and both can run after', async () => {
    await roomWithOldMessages(35);
    await using poolA = await transactionPooler(t.env.databaseUrl);
    await using poolB = await transactionPooler(t.env.databaseUrl);
    const hold = holdAfterFirstBatch();
    const a = new RetentionService({ db: () => poolA.db }, log, { ...OPTS, onBatch: hold.onBatch });
    const b = new RetentionService({ db: () => poolB.db }, log, OPTS);

    const running = a.runOnce();
    await hold.reached;
    // Mid-run (between batches, no statement of A in flight): the lease is A's, B skips.
    expect(await leases()).toEqual([{ name: 'retention', owner: expect.any(String) }]);
    expect(await b.runOnce()).toMatchObject({ ran: false, batches: 0, messages: 0 });
    hold.release();
    const done = await running;
    expect(done).toMatchObject({ ran: true, interrupted: null });
    expect(done.messages).toBeGreaterThanOrEqual(35);
    expect(await oldMessages()).toBe(0);
    // A's statements really went to several server connections, and the lease is free again:
    // B runs, then A again.
    expect(poolA.used.size).toBeGreaterThan(1);
    expect(await leases()).toEqual([]);
    expect(await b.runOnce()).toMatchObject({ ran: true, messages: 0 });
    expect(await a.runOnce()).toMatchObject({ ran: true, messages: 0 });
    expect(await leases()).toEqual([]);
  });

  it('a node that died holding the lease keeps the others out until the lease runs out; then one runs', async () => {
    await roomWithOldMessages(5);
    const old = await oldMessages();
    const svc = new RetentionService(store(), log, OPTS);
    // What a node that died mid-run leaves behind: its lease, for up to a minute.
    await t.env.sql(`insert into job_lease (name, owner, lease_until) values ('retention', 'dead-node/1/x', now() + interval '1 minute')`);
    expect(await svc.runOnce()).toMatchObject({ ran: false });
    expect(await oldMessages()).toBe(old);
    // Its time ran out.
    await t.env.sql(`update job_lease set lease_until = now() - interval '1 second' where owner = 'dead-node/1/x'`);
    expect(await svc.runOnce()).toMatchObject({ ran: true, messages: old, interrupted: null });
    expect(await leases()).toEqual([]);
  });

  it('a run whose lease ran out and was taken by another node stops at its next batch, deleting nothing more', async () => {
    await roomWithOldMessages(35);
    const old = await oldMessages();
    const hold = holdAfterFirstBatch();
    const slow = new RetentionService(store(), log, { ...OPTS, onBatch: hold.onBatch });
    const other = new RetentionService(store(), log, OPTS);
    const running = slow.runOnce();
    await hold.reached;
    // The slow node's lease runs out (a long pause); the other takes it and does the work.
    await t.env.sql(`update job_lease set lease_until = now() - interval '1 second'`);
    expect(await other.runOnce()).toMatchObject({ ran: true, messages: old - 10, interrupted: null });
    hold.release();
    expect(await running).toMatchObject({ ran: true, messages: 10, batches: 1, interrupted: 'lease lost' });
    expect(await leases()).toEqual([]);
  });
});

describe('retention: stop()', () => {
  it('ends the run in progress between batches and resolves only once it has ended, with the lease released', async () => {
    await roomWithOldMessages(200);
    const before = await oldMessages();
    const hold = holdAfterFirstBatch();
    const svc = new RetentionService(store(), log, { ...OPTS, onBatch: hold.onBatch });
    let ended = false;
    const running = svc.runOnce().finally(() => {
      ended = true;
    });
    await hold.reached;
    const stopped = svc.stop();
    hold.release();
    await stopped;
    expect(ended).toBe(true);
    const result = await running;
    // 200 old messages need 21 batches of 10 (and as many for their events): it stopped after one.
    expect(result).toMatchObject({ ran: true, batches: 1, messages: 10, events: 0, interrupted: 'stopping' });
    expect(await oldMessages()).toBe(before - 10);
    expect(await leases()).toEqual([]);
    // Stopped: no new run starts.
    expect(await svc.runOnce()).toMatchObject({ ran: false, batches: 0 });
  });

  it('app.close() waits for a run in progress, which ends before the database is closed', async () => {
    await roomWithOldMessages(300);
    const srv = await t.env.startServer({ retentionDays: 30, retentionBatch: 10, redisPrefix: t.env.prefix('retention-close') });
    let settled = false;
    const outcome = srv.app.services.retention.runOnce().then(
      (result) => ({ result, error: null }),
      (error: unknown) => ({ result: null, error }),
    );
    void outcome.finally(() => {
      settled = true;
    });
    // Whether the run had ended when the app went on to close the database.
    let endedBeforeDbClose: boolean | null = null;
    const db = srv.app.db;
    const closeDb = db.close.bind(db);
    db.close = () => {
      endedBeforeDbClose = settled;
      return closeDb();
    };
    await srv.close();
    expect(endedBeforeDbClose).toBe(true);
    const { result, error } = await outcome;
    expect(error).toBeNull();
    expect(result).toMatchObject({ ran: true });
    expect(await leases()).toEqual([]);
  });
});

describe('retention: video meetings', () => {
  it('meetings over (ended, or past their expiry) for longer than the room keeps messages go with their participants; live, recent and unexpired ones stay', async () => {
    const owner = callerFor(t.app, actor('ret-meet'));
    const kept = await owner.room.create({ kind: 'group', name: 'meetings, default retention' });
    const short = await owner.room.create({ kind: 'group', name: 'meetings, one day' });
    await owner.room.update({ roomId: short.id, retentionDays: 1 });
    /** A meeting row of `room`: `ended` and `expires` as SQL intervals from now (null ended: never ended). */
    const meeting = async (room: string, status: string, created: string, ended: string | null, expires: string) => {
      const [row] = await t.env.sql<{ id: string }>(
        `insert into meeting (id, tenant, room_id, created_by, provider, url, status, created_at, ended_at, expires_at)
         values (gen_random_uuid(), 'default', $1, 'ret-meet', 'livekit', 'https://video.example.com/x', $2,
                 now() + $3::interval, now() + $4::interval, now() + $5::interval)
         returning id`,
        [room, status, created, ended, expires],
      );
      await t.env.sql(
        `insert into meeting_participant (meeting_id, session_id, user_id, joined_at, left_at)
         values ($1, 's1', 'ret-meet', now() + $2::interval, null), ($1, 's2', 'someone', now() + $2::interval, null)`,
        [row!.id, created],
      );
      return row!.id;
    };
    const endedLongAgo = await meeting(kept.id, 'ended', '-41 days', '-40 days', '-39 days');
    const endedRecently = await meeting(kept.id, 'ended', '-11 days', '-10 days', '-9 days');
    // Never ended by a webhook, but expired long ago: over.
    const expiredLongAgo = await meeting(kept.id, 'live', '-36 days', null, '-35 days');
    // Created long ago and still going (not expired): kept, whatever its age.
    const stillLive = await meeting(kept.id, 'live', '-40 days', null, '+1 day');
    // The room keeps one day: a call that ended two days ago goes, one that ended an hour ago stays.
    const shortOld = await meeting(short.id, 'ended', '-3 days', '-2 days', '-1 day');
    const shortNew = await meeting(short.id, 'ended', '-2 hours', '-1 hour', '+1 hour');

    const result = await new RetentionService(store(), log, { ...OPTS, batch: 2 }).runOnce();
    expect(result).toMatchObject({ ran: true, interrupted: null, meetings: 3 });

    const left = await t.env.sql<{ id: string }>(`select id from meeting where room_id in ($1, $2) order by id`, [kept.id, short.id]);
    expect(left.map((r) => r.id).sort()).toEqual([endedRecently, stillLive, shortNew].sort());
    const participants = await t.env.sql<{ meeting_id: string; n: string }>(
      `select meeting_id, count(*) as n from meeting_participant where meeting_id = any($1::uuid[]) group by meeting_id`,
      [[endedLongAgo, endedRecently, expiredLongAgo, stillLive, shortOld, shortNew]],
    );
    expect(Object.fromEntries(participants.map((p) => [p.meeting_id, Number(p.n)]))).toEqual({ [endedRecently]: 2, [stillLive]: 2, [shortNew]: 2 });
    // Nothing more to do on the next run.
    expect(await new RetentionService(store(), log, OPTS).runOnce()).toMatchObject({ ran: true, meetings: 0 });
  });
});
