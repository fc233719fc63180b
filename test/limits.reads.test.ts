/**
 * Reads and room management have budgets too (RATE_READS_PER_10S, RATE_ACTIONS_PER_10S), checked
 * before the input is parsed, and PostgreSQL cancels a statement that runs longer than
 * DB_STATEMENT_TIMEOUT_MS.
 */
import { describe, expect, it } from 'vitest';
import { actor, callerFor, expectTRPCError, fileServer, nativePool, TEST_LIMITS } from './fixture.js';

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

  it('DB_STATEMENT_TIMEOUT_MS: every connection carries it, and PostgreSQL cancels a longer statement', async () => {
    await using short = await t.env.startServer({ dbStatementTimeoutMs: 300, redisPrefix: t.env.prefix('readlimits-timeout') });
    const pool = await nativePool(short.app.db.orm);
    expect((await pool.query('show statement_timeout')).rows[0]).toEqual({ statement_timeout: '300ms' });
    await expect(pool.query('select pg_sleep(2)')).rejects.toThrow(/statement timeout/);
  });
});
