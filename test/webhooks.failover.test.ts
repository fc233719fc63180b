/**
 * At least once across a crash: deliveries pending on a node that is killed with SIGKILL are sent
 * by another node (server processes of src/main.ts on one database and Redis).
 */
import { expect, it } from 'vitest';
import { clientFor, hookReceiver, testEnv, uuid, waitFor } from './fixture.js';

const HOOK_ENV = {
  WEBHOOK_ALLOW_PRIVATE_URLS: '1',
  WEBHOOK_RETRY_BASE_MS: '50',
  WEBHOOK_POLL_MS: '50',
  WEBHOOK_TIMEOUT_MS: '1000',
  WEBHOOK_MAX_ATTEMPTS: '40',
  RATE_SEND_PER_SECOND: '100000',
  RATE_SEND_BURST: '100000',
};

it('a node killed with SIGKILL while deliveries are pending: another node delivers every event, each verified', async () => {
  await using env = await testEnv('hookkill');
  await using rx = await hookReceiver();
  rx.respond = () => 503;
  const tenant = `kill-${uuid().slice(0, 8)}`;
  const a = await env.startNode('A', HOOK_ENV);
  await using admin = clientFor(a.url, 'boss', { tenant, roles: ['admin'] });
  await using alice = clientFor(a.url, 'alice', { tenant });
  const hook = await admin.trpc.webhook.create.mutate({ url: rx.url, events: ['*'] });
  rx.secrets = [hook.secret];
  const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'crash' });
  const sent = [];
  for (let i = 0; i < 20; i++) sent.push(await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m${i}` }));
  // Every event is in the outbox once its call returned; the receiver refuses, so all stay pending.
  const logIds = [`${room.id}:1`, ...sent.map((m) => `${room.id}:${m.seq}`)];
  await rx.requests.until((r) => r.length >= 3, 'the first refused attempts');

  await a.kill('SIGKILL');
  const rows = await env.sql<{ status: string; n: number }>(`select status, count(*)::int as n from webhook_delivery group by status`);
  expect(rows).toEqual([{ status: 'pending', n: 22 }]);

  rx.respond = () => 200;
  const b = await env.startNode('B', HOOK_ENV);
  const got = await rx.accepted.until(
    (acc) => logIds.every((id) => acc.some((x) => x.id === id)) && acc.some((x) => x.body.type === 'room.created'),
    'every event delivered by node B',
    40_000,
  );
  expect(got.every((r) => r.verifiedWith === 0)).toBe(true);
  const unique = new Set(got.map((r) => r.id));
  expect(unique.size).toBe(22);
  const duplicates = got.length - unique.size;
  console.log(`[hooks] SIGKILL failover: ${unique.size} events delivered by node ${b.label}, ${duplicates} duplicate deliveries, ${rx.requests.items.length} requests in all`);
  // In order per room: the messages arrived in seq order.
  const firstSeen = [...unique].filter((id) => id.startsWith(room.id));
  expect(firstSeen).toEqual(logIds);
  await waitFor(() => env.sql<{ n: number }>(`select count(*)::int as n from webhook_delivery where status <> 'delivered'`), 'every row delivered', {
    until: (r) => r[0]?.n === 0,
  });
});
