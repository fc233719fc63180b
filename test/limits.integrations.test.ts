/**
 * Every change of a webhook endpoint, a push device or notification preferences, every
 * `inbox.notify` and every `admin.eraseUser`, spends the caller's action budget (RATE_ACTIONS_PER_10S), like
 * `webhook.create`/`update` and `device.register`: past it, TOO_MANY_REQUESTS.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { actor, callerFor, fileServer, pushKeys, setGuardLookupForTests, TEST_LIMITS, tokenFor, uuid } from './fixture.js';

const BUDGET = 4;
const t = fileServer('limits-integrations', { limits: { ...TEST_LIMITS, actionsPer10s: BUDGET } });

// Every host is public here: the webhooks and devices themselves are accepted.
beforeEach(() => setGuardLookupForTests({ lookup: async () => [{ address: '93.184.216.34', family: 4 }] }));
afterEach(() => setGuardLookupForTests());

/**
 * BUDGET + 1 calls at once (so that the 10 s window cannot roll over between them): one of them on
 * a real target, the others on ids that do not exist (NOT_FOUND, budget spent all the same).
 * Exactly one is refused, with the typed TOO_MANY_REQUESTS of every budget; returns whether the
 * refused one was the real target's.
 */
async function overBudget(call: (id: string) => Promise<unknown>, realId: string): Promise<boolean> {
  const ids = [realId, ...Array.from({ length: BUDGET }, () => uuid())];
  const outcomes = await Promise.allSettled(ids.map((id) => call(id)));
  const refused = outcomes.flatMap((o, i) => (o.status === 'rejected' && (o.reason as { code?: string }).code === 'TOO_MANY_REQUESTS' ? [{ i, reason: o.reason as unknown }] : []));
  expect(refused).toHaveLength(1);
  expect(refused[0]!.reason).toMatchObject({ name: 'TRPCError', code: 'TOO_MANY_REQUESTS', message: expect.stringMatching(/too many changes/), cause: { retryAfterMs: expect.any(Number) } });
  // The others went through to the service: done, or NOT_FOUND for the made-up ids.
  outcomes.forEach((o, i) => {
    if (i === refused[0]!.i) return;
    if (i === 0) expect(o.status).toBe('fulfilled');
    else expect(o).toMatchObject({ status: 'rejected', reason: { code: 'NOT_FOUND' } });
  });
  return refused[0]!.i === 0;
}

/** BUDGET + 1 calls at once: exactly BUDGET go through, one is refused with the typed TOO_MANY_REQUESTS. */
async function oneRefused(call: (i: number) => Promise<unknown>): Promise<void> {
  const outcomes = await Promise.allSettled(Array.from({ length: BUDGET + 1 }, (_, i) => call(i)));
  const refused = outcomes.filter((o) => o.status === 'rejected');
  expect(refused).toHaveLength(1);
  expect((refused[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'TOO_MANY_REQUESTS', message: expect.stringMatching(/too many changes/) });
}

describe('the action budget of notifications', () => {
  it('inbox.notify spends it (each call writes a row per recipient): past it, TOO_MANY_REQUESTS, and nothing written for the refused call', async () => {
    const tenant = `notify-${uuid().slice(0, 8)}`;
    const service = callerFor(t.app, actor('notifier', tenant, ['service']));
    const userIds = Array.from({ length: 50 }, (_, i) => `n-${i}`);
    await oneRefused(() => service.inbox.notify({ userIds, kind: 'build.done', title: 'Build done' }));
    const [row] = await t.env.sql<{ n: string }>('select count(*) as n from inbox_event where tenant = $1', [tenant]);
    expect(Number(row!.n)).toBe(BUDGET * userIds.length);
  });

  it('notify.setPreferences and setRoomPreference spend it: past it, TOO_MANY_REQUESTS', async () => {
    const tenant = `prefs-${uuid().slice(0, 8)}`;
    const user = callerFor(t.app, actor('pref-user', tenant));
    await oneRefused((i) => user.notify.setPreferences({ push: i % 2 === 0 }));
    const owner = callerFor(t.app, actor('pref-owner', tenant));
    const room = await t.app.services.rooms.lifecycle.create(actor('pref-owner', tenant), { kind: 'group', name: 'prefs', memberIds: [] });
    await oneRefused((i) => owner.notify.setRoomPreference({ roomId: room.id, level: i % 2 === 0 ? 'all' : 'none' }));
  });
});

describe('the action budget of token refreshes and revocations', () => {
  it('auth.refresh and auth.revoke spend it: past it, TOO_MANY_REQUESTS', async () => {
    const tenant = `auth-${uuid().slice(0, 8)}`;
    const user = callerFor(t.app, actor('refresher', tenant));
    const token = tokenFor('refresher', { tenant });
    await oneRefused(() => user.auth.refresh({ token }));
    const admin = callerFor(t.app, actor('revoker', tenant, ['admin']));
    await oneRefused((i) => admin.auth.revoke({ userId: `revoked-${i}` }));
  });
});

describe('the action budget of integrations and devices', () => {
  it('webhook.delete spends it: past it, TOO_MANY_REQUESTS (and the webhook stays)', async () => {
    const tenant = `hooks-${uuid().slice(0, 8)}`;
    const creator = callerFor(t.app, actor('hook-creator', tenant, ['admin']));
    const { id } = await creator.webhook.create({ url: 'https://hooks.example.com/delete', events: ['*'] });
    // Another admin of the tenant: a budget of its own, untouched by the create.
    const deleter = callerFor(t.app, actor('hook-deleter', tenant, ['admin']));
    const refusedReal = await overBudget((hookId) => deleter.webhook.delete({ id: hookId }), id);
    expect((await creator.webhook.list()).map((h) => h.id)).toEqual(refusedReal ? [id] : []);
  });

  it('webhook.rotateSecret spends it: past it, TOO_MANY_REQUESTS', async () => {
    const tenant = `hooks-${uuid().slice(0, 8)}`;
    const creator = callerFor(t.app, actor('hook-creator', tenant, ['admin']));
    const { id } = await creator.webhook.create({ url: 'https://hooks.example.com/rotate', events: ['*'] });
    const rotator = callerFor(t.app, actor('hook-rotator', tenant, ['service']));
    await overBudget((hookId) => rotator.webhook.rotateSecret({ id: hookId }), id);
  });

  it('device.remove spends it: past it, TOO_MANY_REQUESTS (and the device stays)', async () => {
    const owner = actor('device-owner', `dev-${uuid().slice(0, 8)}`);
    const { keys } = pushKeys();
    // Registered through the service: the owner's budget is whole when the removals start.
    const device = await t.app.services.devices.register(owner, { kind: 'webpush', endpoint: 'https://push.example.com/s/remove', keys });
    const user = callerFor(t.app, owner);
    const refusedReal = await overBudget((deviceId) => user.device.remove({ id: deviceId }), device.id);
    expect((await user.device.list()).map((d) => d.id)).toEqual(refusedReal ? [device.id] : []);
  });
});

describe('the action budget of tenant admins', () => {
  it('admin.eraseUser spends it (one transaction over every row of a user): past it, TOO_MANY_REQUESTS, and the user is not erased by the refused call', async () => {
    const tenant = `erase-${uuid().slice(0, 8)}`;
    const admin = callerFor(t.app, actor('erase-admin', tenant, ['admin']));
    const bob = callerFor(t.app, actor('erase-bob', tenant));
    const room = await bob.room.create({ kind: 'group', name: 'erase-budget', memberIds: [] });
    await bob.chat.send({ roomId: room.id, clientId: uuid(), body: 'still here' });
    const refusedWasReal = await overBudget((userId) => admin.admin.eraseUser({ userId }), 'erase-bob');
    const [row] = await t.env.sql<{ body: string | null }>('select body from message where room_id = $1 and sender_id = $2', [room.id, 'erase-bob']);
    if (refusedWasReal) expect(row!.body).not.toBeNull();
    else expect(row!.body).toBeNull();
  });
});
