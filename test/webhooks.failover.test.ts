/**
 * At least once across a crash: deliveries pending on a node that is killed with SIGKILL are sent
 * by another node (server processes of src/main.ts on one database and Redis), including one that
 * was in flight when the node died (retried once its lease ran out).
 */
import { expect, it } from 'vitest';
import { clientFor, hookReceiver, testEnv, uuid, waitFor } from './fixture.js';

const HOOK_ENV = {
  WEBHOOK_ALLOW_PRIVATE_URLS: '1',
  WEBHOOK_RETRY_BASE_MS: '50',
  WEBHOOK_POLL_MS: '50',
  // A claimed row's lease is this plus 5 s: the request in flight at the kill is retried after it.
  WEBHOOK_TIMEOUT_MS: '3000',
  WEBHOOK_MAX_ATTEMPTS: '40',
  RATE_SEND_PER_SECOND: '100000',
  RATE_SEND_BURST: '100000',
};

it('a node killed with SIGKILL while deliveries are pending: another node delivers every event, each verified', async () => {
  await using env = await testEnv('hookkill');
  await using rx = await hookReceiver();
  // The very first request is left unanswered (in flight when the node dies); the others are refused.
  let requests = 0;
  rx.respond = () => (++requests === 1 ? 'hang' : 503);
  const tenant = `kill-${uuid().slice(0, 8)}`;
  const a = await env.startNode('A', HOOK_ENV);
  await using admin = clientFor(a.url, 'boss', { tenant, roles: ['admin'] });
  await using alice = clientFor(a.url, 'alice', { tenant });
  const hook = await admin.trpc.webhook.create.mutate({ url: rx.url, events: ['*'] });
  rx.secrets = [hook.secret];
  // Two rooms: the hung request holds back the rest of its room (order per room), the other room's
  // events are refused and retried.
  const logIds: string[][] = [];
  for (const name of ['crash-1', 'crash-2']) {
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name });
    const ids = [`${room.id}:1`];
    for (let i = 0; i < 10; i++) ids.push(`${room.id}:${(await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m${i}` })).seq}`);
    logIds.push(ids);
  }
  // Every event is in the outbox once its call returned; nothing is accepted, so all stay pending.
  await rx.requests.until((r) => r.length >= 3, 'the hung request and refused attempts');
  await a.kill('SIGKILL');
  const rows = await env.sql<{ status: string; n: number }>(`select status, count(*)::int as n from webhook_delivery group by status`);
  expect(rows).toEqual([{ status: 'pending', n: 24 }]);
  const hung = rx.requests.items[0]!;

  rx.respond = () => 200;
  const b = await env.startNode('B', HOOK_ENV);
  const all = logIds.flat();
  const got = await rx.accepted.until(
    (acc) => all.every((id) => acc.some((x) => x.id === id)) && acc.filter((x) => x.body.type === 'room.created').length === 2,
    'every event delivered by node B',
    40_000,
  );
  expect(got.every((r) => r.verifiedWith === 0)).toBe(true);
  expect(got.some((r) => r.id === hung.id)).toBe(true);
  const unique = new Set(got.map((r) => r.id));
  expect(unique.size).toBe(24);
  const duplicates = got.length - unique.size;
  console.log(`[hooks] SIGKILL failover: ${unique.size} events delivered by node ${b.label}, ${duplicates} duplicate deliveries, ${rx.requests.items.length} requests in all`);
  // In order per room: each room's log events were first accepted in seq order.
  const firstSeen = [...unique];
  for (const ids of logIds) expect(firstSeen.filter((id) => ids.includes(id))).toEqual(ids);
  await waitFor(() => env.sql<{ n: number }>(`select count(*)::int as n from webhook_delivery where status <> 'delivered'`), 'every row delivered', {
    until: (r) => r[0]?.n === 0,
  });
});
