/**
 * The push queue survives a crash: pushes queued on a node that is killed with SIGKILL (one of them
 * in flight, its request unanswered; the other refused and waiting for a retry) are delivered by
 * another node (server processes of src/main.ts on one database and Redis), at least once each: the
 * one in flight once its lease (PUSH_TIMEOUT_MS + 5 s) has run out.
 */
import { expect, it } from 'vitest';
import { clientFor, generateVapidKeys, pushService, testEnv, uuid, waitFor } from './fixture.js';

const vapid = generateVapidKeys();
const NOTIFY_ENV = {
  VAPID_PUBLIC_KEY: vapid.publicKey,
  VAPID_PRIVATE_KEY: vapid.privateKey,
  VAPID_SUBJECT: 'mailto:ops@example.com',
  PUSH_ALLOW_PRIVATE_URLS: '1',
  NOTIFY_POLL_MS: '50',
  NOTIFY_RETRY_BASE_MS: '50',
  NOTIFY_MAX_ATTEMPTS: '40',
  NOTIFY_COALESCE_MS: '0',
  PUSH_TIMEOUT_MS: '2000',
};

it('a node killed with SIGKILL while pushes are queued: another node delivers each of them', async () => {
  await using env = await testEnv('pushkill');
  await using ps = await pushService(vapid.publicKey);
  // The first request is left unanswered (in flight when the node dies); the others are refused.
  await ps.answer({ next: ['hang'], otherwise: 503 });
  const tenant = `kill-${uuid().slice(0, 8)}`;
  const a = await env.startNode('A', NOTIFY_ENV);
  await using alice = clientFor(a.url, 'alice', { tenant });
  const sub = ps.subscribe();
  {
    // The client library opens its socket at once: bob is online until it is closed.
    await using bob = clientFor(a.url, 'bob', { tenant });
    await bob.trpc.device.register.mutate({ kind: 'webpush', endpoint: sub.endpoint, keys: sub.keys });
  }
  const dm = await alice.trpc.room.openDirect.mutate({ userId: 'bob' });
  const group = await alice.trpc.room.create.mutate({ kind: 'group', name: 'Crash', memberIds: ['bob'] });
  // (Presence is visible to those who share a room: asked once the rooms exist.)
  await waitFor(() => alice.trpc.presence.get.query({ userIds: ['bob'] }), 'bob offline', { until: (s) => s[0]?.status === 'offline' });
  const direct = await alice.trpc.chat.send.mutate({ roomId: dm.id, clientId: uuid(), body: 'before the crash' });
  const mention = await alice.trpc.chat.send.mutate({ roomId: group.id, clientId: uuid(), body: '@bob look', mentions: ['bob'] });
  // Both are tried (one hangs, one is refused and queued for a retry) before the node dies.
  await ps.received.until((r) => new Set(r.map((x) => x.payload.messageId)).size >= 2, 'both pushes tried on node A', 15_000).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\nrejected: ${ps.rejected.join('; ')}\n${a.output.join('\n')}`);
  });
  await a.kill('SIGKILL');
  const queued = await env.sql<{ room_id: string; pending: number }>(`select room_id, pending from notify_push where pending > 0 order by room_id`);
  expect(queued.map((q) => q.room_id).sort()).toEqual([dm.id, group.id].sort());

  await ps.answer({});
  const refusedOnA = ps.received.items.length;
  const b = await env.startNode('B', NOTIFY_ENV);
  const got = await ps.received.until(
    (r) => [direct.id, mention.id].every((id) => r.some((x) => x.status === 201 && x.payload.messageId === id)),
    `both pushes delivered by node ${b.label}`,
    20_000,
  );
  const accepted = got.filter((x) => x.status === 201);
  expect(accepted.find((x) => x.payload.messageId === direct.id)!.payload).toMatchObject({ type: 'direct', roomId: dm.id, body: 'before the crash' });
  expect(accepted.find((x) => x.payload.messageId === mention.id)!.payload).toMatchObject({ type: 'mention', roomId: group.id, body: '@bob look' });
  expect(ps.received.items[0]!.status).toBe(0);
  console.log(`[push] SIGKILL failover: ${accepted.length} pushes accepted from node B for 2 queued, ${refusedOnA} attempts on node A (1 left hanging)`);
  await waitFor(() => env.sql<{ n: number }>(`select coalesce(sum(pending), 0)::int as n from notify_push`), 'the queue drained', { until: (r) => r[0]?.n === 0 });
});
