/**
 * Reads and room management have budgets too (RATE_READS_PER_10S, RATE_ACTIONS_PER_10S), checked
 * before the input is parsed, and PostgreSQL cancels a statement that runs longer than
 * DB_STATEMENT_TIMEOUT_MS.
 */
import { describe, expect, it } from 'vitest';
import { actor, callerFor, expectTRPCError, fileServer, nativePool, pushKeys, setGuardLookupForTests, TEST_LIMITS, uuid } from './fixture.js';

// The statement timeout test has a server of its own: 300 ms here would cancel the bans below
// while they wait for the room's row lock on a loaded machine.
const t = fileServer('readlimits', { limits: { ...TEST_LIMITS, readsPer10s: 5, actionsPer10s: 4 } });

describe('read and management budgets', () => {
  it('a user gets RATE_READS_PER_10S queries, then TOO_MANY_REQUESTS with the time to wait; another user is not affected', async () => {
    const reader = callerFor(t.app, actor('greedy'));
    // At once, so that the 10 s window cannot roll over between them on a loaded machine.
    const outcomes = await Promise.allSettled(Array.from({ length: 7 }, () => reader.room.list()));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(5);
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => o.reason as { code: string; message: string; cause?: unknown });
    expect(refused).toHaveLength(2);
    for (const err of refused) {
      expect(err).toMatchObject({ code: 'TOO_MANY_REQUESTS', message: expect.stringMatching(/too many reads/) });
      expect(err.cause).toMatchObject({ retryAfterMs: expect.any(Number) });
    }
    // Refused before its input is looked at: a malformed input gets the same answer.
    await expectTRPCError(reader.room.get({ roomId: 'not-a-uuid' }), 'TOO_MANY_REQUESTS');
    expect((await callerFor(t.app, actor('modest')).room.list()).length).toBe(0);
  });

  it('subscriptions spend the read budget too: past it, a subscription is TOO_MANY_REQUESTS before anything is opened', async () => {
    const sub = callerFor(t.app, actor('resubscriber'));
    const outcomes = await Promise.allSettled(Array.from({ length: 7 }, () => sub.inbox.events()));
    const opened = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value] : []));
    expect(opened).toHaveLength(5);
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(refused).toHaveLength(2);
    for (const o of refused) expect(o.reason).toMatchObject({ code: 'TOO_MANY_REQUESTS', message: expect.stringMatching(/too many reads \(queries and subscriptions\)/) });
    for (const s of opened) await s[Symbol.asyncIterator]().return?.();
  });

  it('room management and moderation spend the action budget: a flood of bans is refused', async () => {
    const owner = callerFor(t.app, actor('mod-owner'));
    const room = await owner.room.create({ kind: 'group', name: 'flood', memberIds: ['x1', 'x2', 'x3', 'x4', 'x5'] });
    // room.create spent none of it (it has a budget of its own); five bans at once: four pass.
    const outcomes = await Promise.allSettled(['x1', 'x2', 'x3', 'x4', 'x5'].map((u) => owner.room.ban({ roomId: room.id, userId: u })));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(4);
    const [refused] = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(refused!.reason).toMatchObject({ code: 'TOO_MANY_REQUESTS', message: expect.stringMatching(/too many changes/) });
  });

  it('room.ensure of an existing key spends the action budget (it adds members as addMembers does); its first use, creating the room, does not', async () => {
    const tn = `ensure-${uuid().slice(0, 8)}`;
    const svc = callerFor(t.app, actor('erp', tn, ['service']));
    const key = `order:${uuid()}`;
    const room = await svc.room.ensure({ key, kind: 'group', name: 'Order' });
    // Five ensures of the key at once, each adding a member: four pass (the creation spent none).
    const outcomes = await Promise.allSettled(['e1', 'e2', 'e3', 'e4', 'e5'].map((m) => svc.room.ensure({ key, kind: 'group', name: 'Order', memberIds: [m] })));
    expect(outcomes.filter((o) => o.status === 'fulfilled').map((o) => o.value.id)).toEqual([room.id, room.id, room.id, room.id]);
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(refused.map((o): unknown => o.reason)).toMatchObject([{ code: 'TOO_MANY_REQUESTS', message: expect.stringMatching(/too many changes/) }]);
    // The refused one added nothing: the owner and four members.
    expect(await t.env.sql('select count(*)::int as n from membership where room_id = $1', [room.id])).toEqual([{ n: 5 }]);
    // The budget is the one addMembers spends.
    await expectTRPCError(svc.room.addMembers({ roomId: room.id, userIds: ['a1'] }), 'TOO_MANY_REQUESTS');
  });

  it('device.register spends the action budget (each resolves the endpoint host): the 5th of a burst is TOO_MANY_REQUESTS', async () => {
    // Every name is public here: the registrations themselves succeed.
    setGuardLookupForTests({ lookup: async () => [{ address: '93.184.216.34', family: 4 }] });
    try {
      const user = callerFor(t.app, actor('registrar', `dev-${uuid().slice(0, 8)}`));
      const keys = () => pushKeys().keys;
      const outcomes = await Promise.allSettled(
        Array.from({ length: 5 }, (_, i) => user.device.register({ kind: 'webpush', endpoint: `https://push.example.com/s/${i}`, keys: keys() })),
      );
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(4);
      const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
      expect(refused).toHaveLength(1);
      expect(refused[0]!.reason).toMatchObject({ code: 'TOO_MANY_REQUESTS', message: expect.stringMatching(/too many changes/) });
    } finally {
      setGuardLookupForTests();
    }
  });

  it('webhook.create and webhook.update spend the action budget too, before the input is looked at', async () => {
    setGuardLookupForTests({ lookup: async () => [{ address: '93.184.216.34', family: 4 }] });
    try {
      const tn = `hooks-${uuid().slice(0, 8)}`;
      const creator = callerFor(t.app, actor('hook-admin', tn, ['admin']));
      const created = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => creator.webhook.create({ url: `https://hooks.example.com/${i}`, events: ['*'] })));
      expect(created.filter((o) => o.status === 'fulfilled')).toHaveLength(4);
      expect(created.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o): unknown => o.reason)).toMatchObject([{ code: 'TOO_MANY_REQUESTS' }]);
      // Another admin: updates of a webhook that does not exist spend the budget all the same.
      const updater = callerFor(t.app, actor('hook-admin-2', tn, ['admin']));
      const updated = await Promise.allSettled(Array.from({ length: 5 }, () => updater.webhook.update({ id: uuid(), url: 'https://hooks.example.com/moved' })));
      const codes = updated.map((o) => ((o as PromiseRejectedResult).reason as { code: string }).code).sort();
      expect(codes).toEqual(['NOT_FOUND', 'NOT_FOUND', 'NOT_FOUND', 'NOT_FOUND', 'TOO_MANY_REQUESTS']);
    } finally {
      setGuardLookupForTests();
    }
  });

  it('DB_STATEMENT_TIMEOUT_MS: every connection carries it, and PostgreSQL cancels a longer statement', async () => {
    await using short = await t.env.startServer({ dbStatementTimeoutMs: 300, redisPrefix: t.env.prefix('readlimits-timeout') });
    const pool = await nativePool(short.app.db.orm);
    expect((await pool.query('show statement_timeout')).rows[0]).toEqual({ statement_timeout: '300ms' });
    await expect(pool.query('select pg_sleep(2)')).rejects.toThrow(/statement timeout/);
    // A call whose statement is cancelled (here: a send in a transaction of its own, a mention, waits
    // for a room row another transaction holds): SERVICE_UNAVAILABLE, retryable, nothing written.
    const owner = callerFor(short.app, actor('timeout-owner'));
    const room = await owner.room.create({ kind: 'group', name: 'slow', memberIds: ['timeout-bob'] });
    const holder = await pool.connect();
    try {
      await holder.query("set statement_timeout = '30s'");
      await holder.query('begin');
      await holder.query('select 1 from room where id = $1 for update', [room.id]);
      const clientId = uuid();
      const err = await owner.chat.send({ roomId: room.id, clientId, body: 'waits', mentions: ['timeout-bob'] }).then(
        () => null,
        (e: unknown) => e as { code?: string; message?: string },
      );
      expect({ code: err?.code, message: err?.message }).toEqual({
        code: 'SERVICE_UNAVAILABLE',
        message: 'the database did not answer in time (a statement ran past DB_STATEMENT_TIMEOUT_MS, nothing of it was written), retry later',
      });
      await holder.query('rollback');
      expect((await owner.chat.history({ roomId: room.id })).messages.filter((m) => m.body === 'waits')).toEqual([]);
      // The retry with the same clientId goes through once the row is free.
      expect(await owner.chat.send({ roomId: room.id, clientId, body: 'waits', mentions: ['timeout-bob'] })).toMatchObject({ body: 'waits' });
    } finally {
      holder.release();
    }
  });
});
