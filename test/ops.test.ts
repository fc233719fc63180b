import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFor, Collector, dispose, testEnv, tokenFor, uuid, type RecordedEvent, type TestEnv, type TestServer } from './fixture.js';

let env: TestEnv;
let srv: TestServer;
let other: TestServer;

beforeAll(async () => {
  env = await testEnv('ops');
  const config = { retentionDays: 30, retentionBatch: 5000 };
  srv = await env.startServer(config);
  other = await env.startServer(config);
});
afterAll(() => dispose(env));

function metricValue(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line ? Number(line.split(' ').at(-1)) : NaN;
}

describe('/metrics', () => {
  it('exposes connections, subscriptions, sends, deliveries, latencies and process metrics in Prometheus format', async () => {
    await using alice = clientFor(srv.url, 'm-alice');
    await using bob = clientFor(srv.url, 'm-bob');
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'metrics', memberIds: ['m-bob'] });
    const got = new Collector<RecordedEvent>();
    const sub = bob.trpc.chat.events.subscribe({ roomId: room.id }, { onData: got.push, onError: got.fail });
    await got.until((xs) => xs.some((x) => x.data.type === 'ready'));
    for (let i = 0; i < 3; i++) await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `m${i}` });
    await got.until((xs) => xs.filter((x) => x.data.type === 'message.new').length === 3);
    // Refusals are timed under the code the client got: a domain error mapped (NOT_FOUND), an auth failure.
    await expect(alice.trpc.chat.send.mutate({ roomId: uuid(), clientId: uuid(), body: 'nowhere' })).rejects.toMatchObject({ data: { code: 'NOT_FOUND' } });
    const anonymous = await fetch(`${srv.url}/trpc/room.list`);
    expect(anonymous.status).toBe(401);

    const res = await fetch(`${srv.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    expect(metricValue(text, 'chat_connections_open')).toBeGreaterThanOrEqual(1);
    expect(metricValue(text, 'chat_subscriptions')).toBe(1);
    expect(metricValue(text, 'chat_room_hubs')).toBe(1);
    expect(metricValue(text, 'chat_messages_sent_total')).toBeGreaterThanOrEqual(3);
    expect(metricValue(text, 'chat_events_delivered_total')).toBeGreaterThanOrEqual(3);
    expect(metricValue(text, 'chat_delivery_lag_seconds_count')).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/chat_procedure_duration_seconds_count\{path="chat.send",type="mutation",code="OK"\} [1-9]/);
    expect(text).toMatch(/chat_procedure_duration_seconds_count\{path="chat.send",type="mutation",code="NOT_FOUND"\} 1\n/);
    expect(text).toMatch(/chat_procedure_duration_seconds_count\{path="room.list",type="query",code="UNAUTHORIZED"\} 1\n/);
    expect(text).toContain('chat_process_nodejs_eventloop_lag_seconds');
    expect(text).toContain('chat_db_pool_total');
    // Two nodes on one Redis prefix (srv and other): neither is alone.
    expect(metricValue(text, 'chat_bus_alone')).toBe(0);
    // Labels stay bounded: no room ids anywhere.
    expect(text).not.toContain(room.id);
    sub.unsubscribe();
  });

  it('chat_send_group_size and chat_send_group_seconds: every plain send written is counted in exactly one group', async () => {
    const scrape = async () => {
      const text = await (await fetch(`${srv.url}/metrics`)).text();
      return {
        groups: metricValue(text, 'chat_send_group_size_count'),
        sends: metricValue(text, 'chat_send_group_size_sum'),
        timed: metricValue(text, 'chat_send_group_seconds_count'),
      };
    };
    await using alice = clientFor(srv.url, 'g-alice', { ws: true });
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'groups', memberIds: [] });
    const before = await scrape();
    // One after the other: a group each.
    for (let i = 0; i < 3; i++) await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `one ${i}` });
    const lone = await scrape();
    expect(lone.groups - before.groups).toBe(3);
    expect(lone.sends - before.sends).toBe(3);
    // Thirty at once on one socket (it takes 32 calls in flight), with a reply among them: the reply
    // is written in a transaction of its own (not a group).
    const ids = Array.from({ length: 30 }, () => uuid());
    const first = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: ids[0]!, body: 'first' });
    await Promise.all([
      ...ids.slice(1).map((clientId, i) => alice.trpc.chat.send.mutate({ roomId: room.id, clientId, body: `many ${i}` })),
      alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'a reply', replyToId: first.id }),
    ]);
    const after = await scrape();
    // Each of the 30 sends is in one group (the first alone), the reply in none.
    expect(after.sends - lone.sends).toBe(30);
    expect(after.groups - lone.groups).toBeGreaterThanOrEqual(2);
    expect(after.timed).toBe(after.groups);
  });

  it('chat_bus_alone: 1 for a node alone on its Redis prefix, 0 with REDIS_SOLO=0', async () => {
    const gauge = async (url: string) => metricValue(await (await fetch(`${url}/metrics`)).text(), 'chat_bus_alone');
    const alone = await env.startServer({ redisPrefix: env.prefix('ops-alone') });
    const publishing = await env.startServer({ redisPrefix: env.prefix('ops-solo-off'), redisSolo: false });
    expect(await gauge(alone.url)).toBe(1);
    expect(await gauge(publishing.url)).toBe(0);
  });
});

describe('/admin/stats', () => {
  it("is the operator's (operator role or ADMIN_TOKEN), not a tenant admin's, and reports live totals of the node", async () => {
    expect((await fetch(`${srv.url}/admin/stats`)).status).toBe(401);
    const plain = await fetch(`${srv.url}/admin/stats`, { headers: { authorization: `Bearer ${tokenFor('someone')}` } });
    expect(plain.status).toBe(403);
    // A tenant's admin sees node-wide data no more.
    const tenantAdmin = await fetch(`${srv.url}/admin/stats`, { headers: { authorization: `Bearer ${tokenFor('root', { roles: ['admin'] })}` } });
    expect(tenantAdmin.status).toBe(403);
    expect(await tenantAdmin.json()).toEqual({ error: 'node-wide statistics are for the operator: a token with the operator role, or ADMIN_TOKEN' });
    // The static operator secret, compared in constant time; a wrong one is just a bad token.
    await using withSecret = await env.startServer({ adminToken: 'x'.repeat(40) });
    expect((await fetch(`${withSecret.url}/admin/stats`, { headers: { authorization: `Bearer ${'x'.repeat(40)}` } })).status).toBe(200);
    expect((await fetch(`${withSecret.url}/admin/stats`, { headers: { authorization: `Bearer ${'x'.repeat(39)}y` } })).status).toBe(401);
    const res = await fetch(`${srv.url}/admin/stats`, { headers: { authorization: `Bearer ${tokenFor('ops', { roles: ['operator'] })}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { connections: unknown; counters: { messagesSent: unknown } };
    expect(body).toMatchObject({ node: { pid: expect.any(Number), draining: false }, bus: 'redis', database: 'postgresql' });
    expect(typeof body.connections).toBe('number');
    expect(typeof body.counters.messagesSent).toBe('number');
  });

  it("counts clients whose type or version is the name of an object member ('constructor', 'toString') like any other: the node answers and lives on", async () => {
    const adminToken = 'a'.repeat(40);
    // A node of its own process: a throw in the handler would end it.
    await using node = await env.startNode('stats', { ADMIN_TOKEN: adminToken });
    const odd = [
      clientFor(node.url, 'mallory', { ws: true, client: { clientType: 'constructor', clientVersion: 'valueOf' } }),
      clientFor(node.url, 'trudy', { ws: true, client: { clientType: 'toString', clientVersion: 'constructor' } }),
    ];
    try {
      await Promise.all(odd.map((c) => c.trpc.auth.me.query()));
      const res = await fetch(`${node.url}/admin/stats`, { headers: { authorization: `Bearer ${adminToken}` } });
      expect(res.status).toBe(200);
      const body = (await res.json()) as { clients: Record<string, { connections: number; versions: Record<string, number> }> };
      expect(Object.entries(body.clients).filter(([type]) => type === 'constructor' || type === 'toString')).toEqual([
        ['constructor', { connections: 1, devices: 0, versions: { valueOf: 1 } }],
        ['toString', { connections: 1, devices: 0, versions: { constructor: 1 } }],
      ]);
      expect(node.child.exitCode).toBeNull();
    } finally {
      await Promise.all(odd.map((c) => c.close()));
    }
  });
});

describe('retention', () => {
  it('deletes old messages in batches on a large table, honours the room override, and keeps sends going', async () => {
    await using owner = clientFor(srv.url, 'r-owner');
    const keep = await owner.trpc.room.create.mutate({ kind: 'group', name: 'default retention' });
    const short = await owner.trpc.room.create.mutate({ kind: 'group', name: 'short retention' });
    await owner.trpc.room.update.mutate({ roomId: short.id, retentionDays: 1 });
    expect((await owner.trpc.room.get.query({ roomId: short.id })).retentionDays).toBe(1);

    // 120k old (40 days) + 20k recent messages in the default room; 10k two-day-old ones in the short room.
    const fill = async (roomId: string, from: number, n: number, ageDays: number) => {
      await env.sql(
        `with s as (select g from generate_series($2::int, $2::int + $3::int - 1) g)
         insert into message (id, room_id, tenant, seq, sender_id, body, kind, attachments, mentions, created_at)
         select gen_random_uuid(), $1, 'default', g, 'r-owner', 'old message ' || g, 'text', '[]', '[]',
                now() - make_interval(days => $4::int) from s`,
        [roomId, from, n, ageDays],
      );
      await env.sql(
        `insert into room_event (room_id, seq, type, message_id, data, created_at)
         select room_id, seq, 'message.new', id, '{}', created_at from message where room_id = $1 and seq between $2::int and $2::int + $3::int - 1`,
        [roomId, from, n],
      );
      await env.sql('update room set last_seq = greatest(last_seq, $2::int + $3::int - 1) where id = $1', [roomId, from, n]);
    };
    await fill(keep.id, 1_000, 120_000, 40);
    await fill(keep.id, 200_000, 20_000, 0);
    await fill(short.id, 1_000, 10_000, 2);
    // A room's log loses its oldest events only (the retention job removes whole prefixes): the rooms'
    // first events (their creation, the retention change), written now but before the backdated rows
    // in seq order, go with them.
    const [{ n: earlier }] = (await env.sql<{ n: number }>('select count(*)::int as n from room_event where room_id = any($1) and seq < 1000', [[keep.id, short.id]])) as [
      { n: number },
    ];
    expect(earlier).toBeGreaterThan(0);

    // Both nodes try at once: exactly one runs (the lease), and a send during the run is not blocked.
    const [a, b, sent] = await Promise.all([
      srv.app.services.retention.runOnce(),
      other.app.services.retention.runOnce(),
      owner.trpc.chat.send.mutate({ roomId: keep.id, clientId: uuid(), body: 'during retention' }),
    ]);
    const ran = [a, b].filter((r) => r.ran);
    expect(ran).toHaveLength(1);
    const result = ran[0]!;
    expect(result.messages).toBe(130_000);
    expect(result.events).toBe(130_000 + earlier);
    expect(result.batches).toBeGreaterThan(2 * (130_000 / 5000));
    console.log(`[retention] removed ${result.messages} messages and ${result.events} events in ${result.batches} batches, ${result.ms} ms`);

    const counts = await env.sql<{ room_id: string; n: string }>('select room_id, count(*) as n from message group by room_id');
    const n = new Map(counts.map((r) => [r.room_id, Number(r.n)]));
    expect(n.get(keep.id)).toBe(20_001);
    expect(n.get(short.id) ?? 0).toBe(0);
    expect(sent.body).toBe('during retention');

    // History and resume keep working on what is left.
    const page = await owner.trpc.chat.history.query({ roomId: keep.id, limit: 2 });
    expect(page.messages.map((m) => m.body)).toEqual(['old message 219999', 'during retention']);
    const again = await srv.app.services.retention.runOnce();
    expect(again).toMatchObject({ ran: true, messages: 0, events: 0 });
  });
});
