/**
 * Inputs are plain JSON: superjson's `meta` may revive dates (and undefined) only. A request that
 * declares anything else (typed arrays, maps, sets, bigints, classes, shared references) is refused
 * with BAD_REQUEST before anything is built, over HTTP and WebSocket, with or without a token.
 */
import { describe, expect, it, vi } from 'vitest';
import { actor, callerFor, clientFor, fileServer, rawClient, tokenFor, uuid } from './fixture.js';

const t = fileServer('plainjson');

const input = { userId: 'bob', kind: 'k', title: 't', data: { a: [0, 0] } };
const HOSTILE: Record<string, unknown>[] = [
  { values: { 'data.a': [['typed-array', 'Float64Array']] }, v: 1 },
  { values: { 'data.a': ['set'] }, v: 1 },
  { values: { 'data.a': ['map'] }, v: 1 },
  { values: { title: ['bigint'] }, v: 1 },
  { values: { title: ['number'] }, v: 1 },
  { values: { title: ['regexp'] }, v: 1 },
  { values: { data: [['class', 'Anything']] }, v: 1 },
  { values: { data: [['custom', 'Anything']] }, v: 1 },
  { values: ['map'], v: 1 },
  // Paths superjson refuses itself (prototype pollution): a refusal like the others, not a parse error.
  { values: { '__proto__.x': ['Date'] }, v: 1 },
  { values: { 'data.constructor.prototype': ['Date'] }, v: 1 },
  { values: { 'data.__proto__': ['undefined'] }, v: 1 },
];

describe('plain JSON inputs', () => {
  it('HTTP: every superjson reviver but Date is refused with BAD_REQUEST', async () => {
    for (const meta of HOSTILE) {
      const res = await fetch(`${t.url}/trpc/inbox.notify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenFor('erp', { roles: ['service'] })}` },
        body: JSON.stringify({ json: input, meta }),
      });
      const body = (await res.json()) as { error: { json: { message: string; data: { code: string } } } };
      expect(res.status, JSON.stringify(meta)).toBe(400);
      expect(body.error.json.data.code).toBe('BAD_REQUEST');
      expect(body.error.json.message).toBe('input must be plain JSON: only dates (and undefined) are revived');
    }
  });

  it('WebSocket, with and without a valid token: refused under the request id, and the socket stays usable', async () => {
    for (const token of [tokenFor('mallory'), undefined]) {
      using c = rawClient(t.url, token ? { token } : { connectionParams: false });
      await c.opened;
      let id = 1;
      for (const meta of HOSTILE) {
        c.send({ id, method: 'mutation', params: { path: 'inbox.notify', input: { json: input, meta } } });
        const f = await c.waitFrame((x) => x.id === id, `the answer to ${id}`);
        expect(f.error?.data?.code, JSON.stringify(meta)).toBe('BAD_REQUEST');
        expect(f.error?.message).toBe('input must be plain JSON: only dates (and undefined) are revived');
        id++;
      }
      c.send({ id, method: 'query', params: { path: 'auth.me', input: { json: undefined } } });
      const me = await c.waitFrame((x) => x.id === id, 'auth.me');
      if (token) expect(me.result).toBeDefined();
      else expect(me.error?.data?.code).toBe('UNAUTHORIZED');
    }
  });

  it('a __proto__ key at the top of inbox.notify data is BAD_REQUEST naming it, as at any level below (zod\'s record parse dropped it: the call went through without it)', async () => {
    const tenant = `proto-${uuid().slice(0, 8)}`;
    const notify = async (data: string) => {
      const res = await fetch(`${t.url}/trpc/inbox.notify`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tokenFor('erp', { tenant, roles: ['service'] })}`, 'content-type': 'application/json' },
        body: `{"json":{"userId":"dave","kind":"order.updated","title":"proto","data":${data}}}`,
      });
      const body = (await res.json()) as { error?: { json: { message: string; data: { code: string } } } };
      return { status: res.status, code: body.error?.json.data.code, message: body.error?.json.message };
    };
    expect(await notify('{"order":{"__proto__":{"status":"paid"}}}')).toMatchObject({ status: 400, code: 'BAD_REQUEST', message: expect.stringContaining('data.order must not have a __proto__ key') });
    expect(await notify('{"__proto__":{"status":"paid"},"orderId":"A-1"}')).toMatchObject({ status: 400, code: 'BAD_REQUEST', message: expect.stringContaining('data must not have a __proto__ key') });
    expect(await notify(`{"${'k'.repeat(65)}":1}`)).toMatchObject({ status: 400, code: 'BAD_REQUEST', message: expect.stringContaining('data keys are at most 64 characters') });
    expect(await notify('[1]')).toMatchObject({ status: 400, code: 'BAD_REQUEST', message: expect.stringContaining('data must be a JSON object') });
    expect(await t.env.sql('select 1 from inbox_event where tenant = $1', [tenant])).toEqual([]);
    expect(await notify('{"orderId":"A-1"}')).toMatchObject({ status: 200 });
  });

  it('one object twice in an input (superjson sends a shared reference) is accepted as two copies', async () => {
    await using c = clientFor(t.url, `s-${uuid().slice(0, 8)}`);
    const room = await c.trpc.room.create.mutate({ kind: 'group', name: 'shared' });
    const part = { sku: 'A-1', qty: 2 };
    const link = { url: 'https://example.com/a.pdf', name: 'a.pdf', size: 1, mime: 'application/pdf' };
    const m = await c.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'x', metadata: { first: part, second: part }, attachments: [link, link] });
    expect(m.metadata).toEqual({ first: part, second: part });
    expect(m.attachments).toEqual([link, link]);
  });

  it('the role of an integration procedure is checked before its input is parsed', async () => {
    const big = { userIds: Array.from({ length: 5000 }, (_, i) => `u${i}`), kind: 'k', title: 't' };
    for (const path of ['inbox.notify', 'webhook.create']) {
      const res = await fetch(`${t.url}/trpc/${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenFor('mallory')}` },
        body: JSON.stringify({ json: big }),
      });
      const body = (await res.json()) as { error: { json: { message: string; data: { code: string } } } };
      // FORBIDDEN, not the BAD_REQUEST the input would get: the input was never looked at.
      expect(body.error.json.data.code, path).toBe('FORBIDDEN');
      expect(body.error.json.message).toBe(`only tenant admins and service tokens may call ${path}`);
    }
  });

  it('a NUL character in any string is BAD_REQUEST (HTTP and WebSocket), not a database error', async () => {
    await using c = clientFor(t.url, `n-${uuid().slice(0, 8)}`, { ws: true });
    const room = await c.trpc.room.create.mutate({ kind: 'group', name: 'nul' });
    const err = await c.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'a\u0000b' }).catch((e: unknown) => e as { data?: { code?: string }; message: string });
    expect(err).toMatchObject({ data: { code: 'BAD_REQUEST' }, message: 'strings must not contain the NUL character (\\u0000)' });
    const res = await fetch(`${t.url}/trpc/chat.send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenFor('nul-user')}` },
      body: JSON.stringify({ json: { roomId: room.id, clientId: uuid(), body: 'x', metadata: { 'k\u0000': 1 } } }),
    });
    expect(res.status).toBe(400);
  });

  it('an input nested deeper than 64 levels is BAD_REQUEST (HTTP and WebSocket): a NUL string below the bound is not skipped', async () => {
    const service = tokenFor('erp', { roles: ['service'] });
    /**
     * The JSON text of an inbox.notify input whose `data.a` nests `levels` arrays around `leaf`
     * (the input and `data` are two more levels). Text, since JSON.stringify overflows the stack first.
     */
    const deep = (levels: number, leaf: unknown) =>
      `{"userId":"bob","kind":"k","title":"t","data":{"a":${'['.repeat(levels)}${JSON.stringify(leaf)}${']'.repeat(levels)}}}`;
    const post = async (json: string) => {
      const res = await fetch(`${t.url}/trpc/inbox.notify`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${service}` },
        body: `{"json":${json}}`,
      });
      const body = (await res.json()) as { error?: { json: { message: string; data: { code: string } } } };
      return { status: res.status, code: body.error?.json.data.code, message: body.error?.json.message };
    };
    const tooDeep = { status: 400, code: 'BAD_REQUEST', message: 'input is nested too deeply (at most 64 levels of objects and arrays)' };
    // 65 levels and more. A NUL this deep used to reach PostgreSQL (500).
    for (const levels of [63, 100, 10_000]) {
      expect(await post(deep(levels, 'a\u0000b')), `${levels}`).toEqual(tooDeep);
      expect(await post(deep(levels, 1)), `${levels}`).toEqual(tooDeep);
    }
    // 64 levels: within the bound, a NUL is found as anywhere else; without one, the schema of `data` refuses the depth.
    expect(await post(deep(62, 'a\u0000b'))).toEqual({ status: 400, code: 'BAD_REQUEST', message: 'strings must not contain the NUL character (\\u0000)' });
    expect(await post(deep(62, 1))).toMatchObject({ status: 400, code: 'BAD_REQUEST', message: expect.stringContaining('data is nested too deeply (at most 32 levels') });

    using c = rawClient(t.url, { token: service });
    await c.opened;
    c.send(`{"id":1,"method":"mutation","params":{"path":"inbox.notify","input":{"json":${deep(100, 'a\u0000b')}}}}`);
    const f = await c.waitFrame((x) => x.id === 1, 'the answer to 1');
    expect(f.error?.data?.code).toBe('BAD_REQUEST');
    expect(f.error?.message).toBe(tooDeep.message);
  });

  it('a lone surrogate in any string is BAD_REQUEST (HTTP and WebSocket), not a database error', async () => {
    await using c = clientFor(t.url, `s-${uuid().slice(0, 8)}`, { ws: true });
    const room = await c.trpc.room.create.mutate({ kind: 'group', name: 'surrogates' });
    const message = 'strings must be well-formed Unicode (no lone surrogate such as \\uD800)';
    for (const body of ['\uD800', 'a\uDC00b', '\uD83D', '😀\uD83D']) {
      const err = await c.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body }).catch((e: unknown) => e as { data?: { code?: string }; message: string });
      expect(err, JSON.stringify(body)).toMatchObject({ data: { code: 'BAD_REQUEST' }, message });
    }
    // In a key, over HTTP.
    const res = await fetch(`${t.url}/trpc/chat.send`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${tokenFor('surrogate-user')}` },
      body: JSON.stringify({ json: { roomId: room.id, clientId: uuid(), body: 'x', metadata: { 'k\uDFFF': 1 } } }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { json: { message: string } } }).error.json.message).toBe(message);
    // Whole pairs are fine, and nothing refused was stored.
    const ok = await c.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: '😀 ok' });
    expect(ok.body).toBe('😀 ok');
    expect((await c.trpc.chat.history.query({ roomId: room.id })).messages.map((m) => m.body)).toEqual(['😀 ok']);
  });

  it("an unexpected error's text stays in the server's log: the client reads 'internal server error'", async () => {
    const spy = vi.spyOn(t.app.services.rooms.read, 'list').mockRejectedValue(new Error('duplicate key value violates unique constraint "user_email" Key (email)=(ceo@acme.example)'));
    try {
      const res = await fetch(`${t.url}/trpc/room.list`, { headers: { authorization: `Bearer ${tokenFor('curious')}` } });
      const text = await res.text();
      expect(res.status).toBe(500);
      expect(text).toContain('internal server error');
      expect(text).not.toContain('ceo@acme.example');
      expect(text).not.toContain('user_email');
    } finally {
      spy.mockRestore();
    }
  });

  it('dates are still revived where the API takes one (room.mute until), through the real client', async () => {
    const owner = `o-${uuid().slice(0, 8)}`;
    await using c = clientFor(t.url, owner);
    const room = await c.trpc.room.create.mutate({ kind: 'group', name: 'dates', memberIds: ['bob'] });
    const until = new Date(Date.now() + 3_600_000);
    await c.trpc.room.mute.mutate({ roomId: room.id, userId: 'bob', until });
    const bob = (await callerFor(t.app, actor(owner)).room.members({ roomId: room.id })).find((m) => m.userId === 'bob');
    expect(bob?.mutedUntil).toEqual(until);
  });
});
