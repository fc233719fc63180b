/**
 * `inbox.events` over real wsLink clients on two nodes (two in-process servers on one PostgreSQL
 * database and one Redis prefix): ready first, room.added, direct.created, mention, notification,
 * exact resume across nodes, and isolation between users and tenants. Issue 3.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ChatClient } from '../client/index.js';
import { clientFor, codeOf, fileCluster, recordInbox, Scope, tokenFor, uuid, within, type InboxRecorder } from './fixture.js';

/** Two nodes on one database and one Redis prefix. */
const cl = fileCluster('inbox');
/** The clients of a test, closed after it. */
const open = new Scope();

afterEach(() => open.dispose());

const tag = () => uuid().slice(0, 8);

/** The durable items of a recorder as [id, type] plus their data without seq, for exact comparison. */
const summary = (rec: InboxRecorder) => rec.durable().map((x) => ({ id: x.id, ...x.data }));

/** A service notification used as a barrier: once it arrived, everything published before it has. */
async function barrier(service: ChatClient, rec: InboxRecorder, userId: string) {
  const title = `barrier ${uuid()}`;
  await service.trpc.inbox.notify.mutate({ userId, kind: 'test.barrier', title });
  await rec.next('notification', (e) => e.title === title);
  return title;
}

describe('inbox.events over wsLink', () => {
  it('ready first, then room.added, direct.created, mention and notification; nobody else gets them', async () => {
    const u = tag();
    const [me, o, v, svc] = [`me-${u}`, `o-${u}`, `v-${u}`, `svc-${u}`];
    using meRec = recordInbox(open.use(clientFor(cl.a.url, me, { ws: true })));
    using vRec = recordInbox(open.use(clientFor(cl.b.url, v)));
    // The same user id in another tenant is another user.
    using twinRec = recordInbox(open.use(clientFor(cl.b.url, me, { tenant: `t2-${u}` })));
    expect(await meRec.ready()).toBe(0);
    expect(meRec.events.items[0]).toEqual({ id: '0', data: { type: 'ready', seq: 0 } });
    await Promise.all([vRec.ready(), twinRec.ready()]);

    await using oc = clientFor(cl.b.url, o);
    await using service = clientFor(cl.a.url, svc, { roles: ['service'] });

    // Added at creation (node B), then by addMembers.
    const r1 = await oc.trpc.room.create.mutate({ kind: 'group', name: 'first', memberIds: [me] });
    expect(await meRec.next('room.added', (e) => e.roomId === r1.id)).toEqual({
      type: 'room.added',
      seq: 1,
      roomId: r1.id,
      roomName: 'first',
      roomKind: 'group',
      by: o,
    });
    const r2 = await oc.trpc.room.create.mutate({ kind: 'support', name: 'second' });
    await oc.trpc.room.addMembers.mutate({ roomId: r2.id, userIds: [me] });
    expect(await meRec.next('room.added', (e) => e.roomId === r2.id)).toEqual({
      type: 'room.added',
      seq: 2,
      roomId: r2.id,
      roomName: 'second',
      roomKind: 'support',
      by: o,
    });
    // Adding again changes nothing and notifies nobody.
    expect(await oc.trpc.room.addMembers.mutate({ roomId: r2.id, userIds: [me] })).toEqual({ added: [] });

    // A direct room opened with me (idempotent: the second call creates nothing).
    const direct = await oc.trpc.room.openDirect.mutate({ userId: me });
    expect(await meRec.next('direct.created')).toEqual({ type: 'direct.created', seq: 3, roomId: direct.id, userId: o });
    expect((await oc.trpc.room.openDirect.mutate({ userId: me })).id).toBe(direct.id);

    // A mention (v is not a member: mentioning them does nothing).
    const msg = await oc.trpc.chat.send.mutate({ roomId: r1.id, clientId: uuid(), body: 'hello @me @v', mentions: [me, v] });
    expect(msg.mentions).toEqual([me]);
    expect(await meRec.next('mention')).toEqual({
      type: 'mention',
      seq: 4,
      roomId: r1.id,
      messageId: msg.id,
      messageSeq: msg.seq,
      from: o,
      excerpt: 'hello @me @v',
    });

    // A notification from a service actor; ordinary users may not send one.
    const note = await service.trpc.inbox.notify.mutate({ userId: me, kind: 'order.shipped', title: 'Order 123 shipped', data: { orderId: 123 } });
    expect(note).toMatchObject({ type: 'notification', seq: 5 });
    expect(await meRec.next('notification')).toEqual({
      type: 'notification',
      seq: 5,
      kind: 'order.shipped',
      title: 'Order 123 shipped',
      data: { orderId: 123 },
      from: svc,
    });
    const denied = await oc.trpc.inbox.notify.mutate({ userId: me, kind: 'spam', title: 'spam' }).catch((e: unknown) => e);
    expect(codeOf(denied)).toBe('FORBIDDEN');
    // Keys the wire format refuses to serialize never reach an inbox (stored, every replay of it would fail).
    // (Raw JSON over HTTP: superjson in the typed client refuses to send them at all.)
    for (const [data, message] of [
      ['{"constructor":1}', 'data must not have a constructor key'],
      ['{"order":{"lines":[{"prototype":"x"}]}}', 'data.order.lines[0] must not have a prototype key'],
    ] as const) {
      const res = await fetch(`${cl.a.url}/trpc/inbox.notify`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tokenFor(svc, { roles: ['service'] })}`, 'content-type': 'application/json' },
        body: `{"json":{"userId":"${me}","kind":"k","title":"t","data":${data}}}`,
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { json: { message: string } } }).error.json.message).toContain(message);
    }

    // Barriers on every inbox, then the exact contents.
    const meBarrier = await barrier(service, meRec, me);
    const vBarrier = await barrier(service, vRec, v);
    await using twinService = clientFor(cl.a.url, svc, { roles: ['service'], tenant: `t2-${u}` });
    const twinBarrier = await barrier(twinService, twinRec, me);

    expect(summary(meRec)).toEqual([
      { id: '1', type: 'room.added', seq: 1, roomId: r1.id, roomName: 'first', roomKind: 'group', by: o },
      { id: '2', type: 'room.added', seq: 2, roomId: r2.id, roomName: 'second', roomKind: 'support', by: o },
      { id: '3', type: 'direct.created', seq: 3, roomId: direct.id, userId: o },
      { id: '4', type: 'mention', seq: 4, roomId: r1.id, messageId: msg.id, messageSeq: msg.seq, from: o, excerpt: 'hello @me @v' },
      { id: '5', type: 'notification', seq: 5, kind: 'order.shipped', title: 'Order 123 shipped', data: { orderId: 123 }, from: svc },
      { id: '6', type: 'notification', seq: 6, kind: 'test.barrier', title: meBarrier, data: null, from: svc },
    ]);
    expect(meRec.events.items.filter((x) => x.data.type === 'ready')).toHaveLength(1);
    expect(summary(vRec)).toEqual([{ id: '1', type: 'notification', seq: 1, kind: 'test.barrier', title: vBarrier, data: null, from: svc }]);
    expect(summary(twinRec)).toEqual([{ id: '1', type: 'notification', seq: 1, kind: 'test.barrier', title: twinBarrier, data: null, from: svc }]);
    // The one who opened the direct room and sent the mention got nothing in their own inbox.
    using oRec = recordInbox(oc, { lastEventId: '0' });
    await barrier(service, oRec, o);
    expect(oRec.durable().map((x) => x.data.type)).toEqual(['notification']);
    for (const r of [meRec, vRec, twinRec, oRec]) {
      expect(r.error).toBeNull();
      r.unsubscribe();
    }
  });

  it('notification data nested deeper than 32 levels is BAD_REQUEST: a reserved key below any depth never reaches an inbox', async () => {
    const u = tag();
    const [me, svc] = [`me-${u}`, `svc-${u}`];
    await using service = clientFor(cl.a.url, svc, { roles: ['service'] });
    /** `inner` (JSON text) wrapped in `wrappers` objects `{"a": ...}`. */
    const nest = (wrappers: number, inner: string) => `${'{"a":'.repeat(wrappers)}${inner}${'}'.repeat(wrappers)}`;
    // (Raw JSON over HTTP: superjson in the typed client refuses to send a constructor key at all.)
    const notify = async (data: string) => {
      const res = await fetch(`${cl.a.url}/trpc/inbox.notify`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tokenFor(svc, { roles: ['service'] })}`, 'content-type': 'application/json' },
        body: `{"json":{"userId":"${me}","kind":"k","title":"t","data":${data}}}`,
      });
      const body = (await res.json()) as { error?: { json: { message: string; data: { code: string } } } };
      return { status: res.status, code: body.error?.json.data.code, message: body.error?.json.message };
    };
    const dataTooDeep = 'data is nested too deeply (at most 32 levels of objects and arrays)';
    const inputTooDeep = 'input is nested too deeply (at most 64 levels of objects and arrays)';
    for (const [data, message] of [
      // 33 levels: within what the transport takes, refused by the schema of `data`.
      [nest(32, '{"constructor":1}'), dataTooDeep],
      [nest(32, '{"k":1}'), dataTooDeep],
      [nest(32, '[1]'), dataTooDeep],
      // 66 levels (65 wrappers), below where the reserved-key check used to stop: refused by the transport.
      [nest(65, '{"constructor":1}'), inputTooDeep],
      [nest(500, '{"prototype":1}'), inputTooDeep],
    ] as const) {
      expect(await notify(data), data.slice(-40)).toEqual({ status: 400, code: 'BAD_REQUEST', message: expect.stringContaining(message) });
    }
    // At the bound (32 levels), a reserved key is still found; data without one is delivered.
    expect((await notify(nest(31, '{"constructor":1}'))).message).toContain(`data${'.a'.repeat(31)} must not have a constructor key`);
    const deep = JSON.parse(nest(31, '{"k":1}')) as Record<string, unknown>;
    await service.trpc.inbox.notify.mutate({ userId: me, kind: 'deep', title: 'deep', data: deep });

    // The whole inbox replays (a stored reserved key would fail its serialization): only the deep item and the barrier.
    using rec = recordInbox(open.use(clientFor(cl.b.url, me)), { lastEventId: '0' });
    const title = await barrier(service, rec, me);
    expect(summary(rec)).toEqual([
      { id: '1', type: 'notification', seq: 1, kind: 'deep', title: 'deep', data: deep, from: svc },
      { id: '2', type: 'notification', seq: 2, kind: 'test.barrier', title, data: null, from: svc },
    ]);
    expect(rec.error).toBeNull();
    rec.unsubscribe();
  });

  it('notification data is plain JSON: a Date or an undefined value (which the typed client sends) is BAD_REQUEST naming the path, so live and replayed data are the same', async () => {
    const u = tag();
    const [me, svc] = [`me-${u}`, `svc-${u}`];
    await using service = clientFor(cl.a.url, svc, { roles: ['service'] });
    using live = recordInbox(open.use(clientFor(cl.a.url, me, { ws: true })));
    await live.ready();
    // Stored as jsonb, a Date would replay as a string and an undefined key not at all.
    for (const [data, message] of [
      [{ dueAt: new Date('2026-12-03T10:00:00Z') }, 'data.dueAt is not a JSON value (a non-plain object)'],
      [{ order: { lines: [{ note: undefined }] } }, 'data.order.lines[0].note is not a JSON value (undefined)'],
    ] as const) {
      const err = await service.trpc.inbox.notify.mutate({ userId: me, kind: 'order.due', title: 'due', data }).catch((e: unknown) => e);
      expect({ code: codeOf(err), message: (err as Error).message }).toEqual({ code: 'BAD_REQUEST', message: expect.stringContaining(message) });
    }
    // Nothing was written: live and replayed, the inbox holds only the plain item.
    const data = { dueAt: '2026-12-03T10:00:00.000Z', lines: [1, 'x', true, null] };
    await service.trpc.inbox.notify.mutate({ userId: me, kind: 'order.due', title: 'plain', data });
    await live.next('notification', (e) => e.title === 'plain');
    using replay = recordInbox(open.use(clientFor(cl.b.url, me)), { lastEventId: '0' });
    await replay.next('notification', (e) => e.title === 'plain');
    const plain = { id: '1', type: 'notification', seq: 1, kind: 'order.due', title: 'plain', data, from: svc };
    expect(summary(live)).toEqual([plain]);
    expect(summary(replay)).toEqual([plain]);
  });

  it('notification data is at most 8 KiB in UTF-8 bytes: 8192 bytes of JSON pass, 8193 and 8000 three-byte characters are BAD_REQUEST', async () => {
    const u = tag();
    const [me, svc] = [`me-${u}`, `svc-${u}`];
    await using service = clientFor(cl.a.url, svc, { roles: ['service'] });
    const notify = (note: string) => service.trpc.inbox.notify.mutate({ userId: me, kind: 'k', title: 't', data: { note } });
    // `{"note":"…"}`: 11 bytes around the note; '€' is 3 bytes in UTF-8, 1 UTF-16 unit.
    const atBound = '€'.repeat(2727);
    expect(Buffer.byteLength(JSON.stringify({ note: atBound }))).toBe(8192);
    expect(await notify(atBound)).toMatchObject({ type: 'notification', data: { note: atBound } });
    for (const [note, bytes] of [
      [`${atBound}a`, 8193],
      ['€'.repeat(8000), 24_011],
    ] as const) {
      const err = await notify(note).catch((e: unknown) => e);
      expect({ code: codeOf(err), message: (err as Error).message }, `${bytes} bytes`).toEqual({
        code: 'BAD_REQUEST',
        message: expect.stringContaining(`data is at most 8192 bytes of JSON (got ${bytes})`),
      });
    }
  });

  it('resume with lastEventId replays exactly the missed items in order on the other node, then goes live', async () => {
    const u = tag();
    const [me, o, svc] = [`me-${u}`, `o-${u}`, `svc-${u}`];
    await using onA = clientFor(cl.a.url, me, { ws: true });
    await using oc = clientFor(cl.a.url, o);
    await using service = clientFor(cl.b.url, svc, { roles: ['service'] });

    using first = recordInbox(onA);
    expect(await first.ready()).toBe(0);
    const r1 = await oc.trpc.room.create.mutate({ kind: 'group', name: 'r1', memberIds: [me] });
    await service.trpc.inbox.notify.mutate({ userId: me, kind: 'k', title: 'seen' });
    await first.next('notification');
    expect(first.durable().map((x) => x.id)).toEqual(['1', '2']);
    const lastId = first.durable().at(-1)!.id;
    first.unsubscribe();
    expect(await within(first.ended, 5000, 'the first subscription to end')).not.toBe('error');

    // Missed while away, from both nodes.
    const direct = await oc.trpc.room.openDirect.mutate({ userId: me });
    const m = await open.use(clientFor(cl.b.url, o)).trpc.chat.send.mutate({ roomId: r1.id, clientId: uuid(), body: 'ping', mentions: [me] });
    const r2 = await oc.trpc.room.create.mutate({ kind: 'group', name: 'r2' });
    await oc.trpc.room.addMembers.mutate({ roomId: r2.id, userIds: [me] });
    await service.trpc.inbox.notify.mutate({ userId: me, kind: 'k', title: 'missed' });

    await using onB = clientFor(cl.b.url, me, { ws: true });
    using second = recordInbox(onB, { lastEventId: lastId });
    await second.next('notification', (e) => e.title === 'missed');
    // Live on the new node after the replay.
    await open.use(clientFor(cl.a.url, svc, { roles: ['service'] })).trpc.inbox.notify.mutate({ userId: me, kind: 'k', title: 'live' });
    await second.next('notification', (e) => e.title === 'live');

    expect(second.events.items.some((x) => x.data.type === 'ready')).toBe(false);
    expect(summary(second)).toEqual([
      { id: '3', type: 'direct.created', seq: 3, roomId: direct.id, userId: o },
      { id: '4', type: 'mention', seq: 4, roomId: r1.id, messageId: m.id, messageSeq: m.seq, from: o, excerpt: 'ping' },
      { id: '5', type: 'room.added', seq: 5, roomId: r2.id, roomName: 'r2', roomKind: 'group', by: o },
      { id: '6', type: 'notification', seq: 6, kind: 'k', title: 'missed', data: null, from: svc },
      { id: '7', type: 'notification', seq: 7, kind: 'k', title: 'live', data: null, from: svc },
    ]);
    // The stopped subscription received nothing after it was stopped.
    expect(first.durable().map((x) => x.id)).toEqual(['1', '2']);
    // A resume from 0 replays everything, in order, exactly once.
    using all = recordInbox(onA, { lastEventId: '0' });
    await all.next('notification', (e) => e.title === 'live');
    expect(all.durable().map((x) => x.id)).toEqual(['1', '2', '3', '4', '5', '6', '7']);
    expect(summary(all).slice(2)).toEqual(summary(second));
    expect(second.error).toBeNull();
    second.unsubscribe();
    all.unsubscribe();
  });
});

describe('inbox.notify with a clientId (a service retrying after a timeout)', () => {
  /** The notification rows of a tenant's users, as [user, title], in user order. */
  const rows = (userIds: string[], tenant = 'default') =>
    cl.env
      .sql<{ user_id: string; title: string }>(
        `select user_id, data->>'title' as title from inbox_event where tenant = $1 and user_id = any($2) and type = 'notification' order by user_id, seq`,
        [tenant, userIds],
      )
      .then((r) => r.map((x) => [x.user_id, x.title]));

  it('a repeat with the same content returns the first result and notifies nobody again; other content is CONFLICT; the key is per sender', async () => {
    const u = tag();
    const [me, you, svc, other] = [`me-${u}`, `you-${u}`, `svc-${u}`, `svc2-${u}`];
    await using service = clientFor(cl.a.url, svc, { roles: ['service'] });
    const notify = service.trpc.inbox.notify.mutate;
    const one = { userId: me, kind: 'order.shipped', title: 'Order 1 shipped', data: { orderId: 1, lines: [1, 2] }, clientId: uuid() };
    const first = await notify(one);
    expect(first).toMatchObject({ type: 'notification', seq: 1, title: 'Order 1 shipped', delivered: 1 });
    // The same content with its keys in another order is the same content.
    expect(await notify({ ...one, data: { lines: [1, 2], orderId: 1 } })).toEqual(first);
    expect(await open.use(clientFor(cl.b.url, svc, { roles: ['service'] })).trpc.inbox.notify.mutate(one)).toEqual(first);

    const many = { userIds: [you, me, you], kind: 'quote.approved', title: 'Quote 2 approved', clientId: uuid() };
    expect(await notify(many)).toEqual({ delivered: 2 });
    expect(await notify({ ...many, userIds: [me, you] })).toEqual({ delivered: 2 });

    for (const [changed, what] of [
      [{ ...one, title: 'Order 1 shipped again' }, 'title'],
      [{ ...one, data: { orderId: 2, lines: [1, 2] } }, 'data'],
      [{ ...one, data: null }, 'no data'],
      [{ ...one, kind: 'order.paid' }, 'kind'],
      [{ ...one, userId: you }, 'another user'],
      [{ userIds: [me], kind: one.kind, title: one.title, data: one.data, clientId: one.clientId }, 'userIds instead of userId'],
      [{ ...many, userIds: [me] }, 'fewer users'],
    ] as const) {
      const err = await notify(changed as Parameters<typeof notify>[0]).catch((e: unknown) => e);
      expect({ code: codeOf(err), message: (err as Error).message }, what).toEqual({
        code: 'CONFLICT',
        message: 'clientId was already used for a notification with other content',
      });
    }
    // Another service (or the same service id in another tenant) has keys of its own.
    await using second = clientFor(cl.a.url, other, { roles: ['service'] });
    expect(await second.trpc.inbox.notify.mutate(one)).toMatchObject({ seq: 3, from: other });
    await using elsewhere = clientFor(cl.a.url, svc, { roles: ['service'], tenant: `t2-${u}` });
    expect(await elsewhere.trpc.inbox.notify.mutate(one)).toMatchObject({ seq: 1, from: svc });

    expect(await rows([me, you])).toEqual([
      [me, 'Order 1 shipped'],
      [me, 'Quote 2 approved'],
      [me, 'Order 1 shipped'],
      [you, 'Quote 2 approved'],
    ]);
    // The database itself refuses a second item of one sender's clientId for one user.
    const copy = await cl.env
      .sql(
        `insert into inbox_event (tenant, user_id, seq, type, data, created_at, sender_id, client_id, request_hash)
         select tenant, user_id, seq + 100, type, data, created_at, sender_id, client_id, request_hash from inbox_event
         where tenant = 'default' and user_id = $1 and client_id = $2`,
        [me, one.clientId],
      )
      .catch((e: unknown) => e);
    expect(copy).toMatchObject({ code: '23505', constraint: 'inbox_event_client_id_unique' });
    // Without a clientId every call is a new notification, as before.
    const plain = { userId: you, kind: 'k', title: 'no key' };
    await notify(plain);
    await notify(plain);
    expect((await rows([you])).filter(([, title]) => title === 'no key')).toHaveLength(2);
    await expectBadClientId(notify({ ...plain, clientId: 'not-a-uuid' } as never));
  });

  it('concurrent repeats write one item per user and publish one event each, for a user, a list and a room', async () => {
    const u = tag();
    const [me, you, owner, svc] = [`me-${u}`, `you-${u}`, `owner-${u}`, `svc-${u}`];
    await using onA = clientFor(cl.a.url, svc, { roles: ['service'] });
    await using onB = clientFor(cl.b.url, svc, { roles: ['service'] });
    using meRec = recordInbox(open.use(clientFor(cl.a.url, me, { ws: true })));
    using youRec = recordInbox(open.use(clientFor(cl.b.url, you, { ws: true })));
    await Promise.all([meRec.ready(), youRec.ready()]);
    const room = await open.use(clientFor(cl.a.url, owner)).trpc.room.create.mutate({ kind: 'group', name: 'r', memberIds: [me, you] });

    const single = { userId: me, kind: 'k', title: 'single', clientId: uuid() };
    const [a, b] = await Promise.all([onA.trpc.inbox.notify.mutate(single), onB.trpc.inbox.notify.mutate(single)]);
    expect(b).toEqual(a);
    const list = { userIds: [me, you], kind: 'k', title: 'list', clientId: uuid() };
    expect(await Promise.all([onA.trpc.inbox.notify.mutate(list), onB.trpc.inbox.notify.mutate(list)])).toEqual([{ delivered: 2 }, { delivered: 2 }]);
    const members = { roomId: room.id, kind: 'k', title: 'room', clientId: uuid() };
    expect(await Promise.all([onA.trpc.inbox.notify.mutate(members), onB.trpc.inbox.notify.mutate(members)])).toEqual([
      { delivered: 3 },
      { delivered: 3 },
    ]);

    expect(await rows([me, you, owner])).toEqual([
      [me, 'single'],
      [me, 'list'],
      [me, 'room'],
      [owner, 'room'],
      [you, 'list'],
      [you, 'room'],
    ]);
    // One event each: everything published before the barrier has arrived by then.
    await barrier(onA, meRec, me);
    await barrier(onA, youRec, you);
    const titles = (rec: InboxRecorder) => rec.durable().flatMap((x) => (x.data.type === 'notification' ? [x.data.title] : []));
    expect(titles(meRec)).toEqual(['single', 'list', 'room', expect.stringMatching(/^barrier /)]);
    expect(titles(youRec)).toEqual(['list', 'room', expect.stringMatching(/^barrier /)]);
  });
});

/** A clientId that is not a UUID is BAD_REQUEST naming it. */
async function expectBadClientId(p: Promise<unknown>) {
  const err = await p.catch((e: unknown) => e);
  expect(codeOf(err)).toBe('BAD_REQUEST');
  expect((err as Error).message).toContain('clientId');
}
