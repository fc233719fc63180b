/**
 * Bad input never crashes the server nor answers INTERNAL_SERVER_ERROR (property tests at the edges).
 *
 * Schema-valid inputs at the edges (every field generated from its own zod schema: strings at their
 * length limits in astral characters, numbers at their bounds, dates at their bounds, arrays full,
 * ids of the caller's own rooms, messages, files, webhooks) for every procedure, through createCaller
 * as a tenant admin with every role: no call may fail with anything but a typed error.
 *
 *   npx vitest run test/property.edges.test.ts   (PROPERTY_SEED, PROPERTY_RUNS: another seed, more runs)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isTrackedEnvelope, TRPCError } from '@trpc/server';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appRouter, callerFor, createLogger, dispose, makeConfig, pushKeys, testEnv, uuid, type Actor, type TestEnv, type TestServer } from './fixture.js';
import { startLiveKitDouble, TEST_REMOVALS, type LiveKitDouble } from './video-doubles.js';

const SEED = Number(process.env.PROPERTY_SEED ?? 12_2026);
const RUNS = Number(process.env.PROPERTY_RUNS ?? 30);
const TENANT = 'fuzz';
const me: Actor = { id: 'fz-admin', name: 'fz admin', tenant: TENANT, roles: ['admin', 'service', 'support'] };
const USERS = ['fz-admin', 'fz-bob', 'fz-carol', 'fz-dave'];

let env: TestEnv;
let srv: TestServer;
let lk: LiveKitDouble;
let sink: Server;
let sinkUrl = '';
let dir = '';
/** The server's log lines at warn level and above. */
const logLines: string[] = [];
const capture = new Writable({
  write(chunk: Buffer, _enc, cb) {
    logLines.push(chunk.toString('utf8'));
    cb();
  },
});
const seed = {
  roomIds: [] as string[],
  messageIds: [] as string[],
  editIds: [] as string[],
  fileIds: [] as string[],
  webhookIds: [] as string[],
  deviceIds: [] as string[],
  clientIds: [] as string[],
  meetingIds: [] as string[],
};

beforeAll(async () => {
  env = await testEnv('edges');
  dir = mkdtempSync(join(tmpdir(), 'chat-edges-files-'));
  lk = await startLiveKitDouble();
  sink = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(201).end());
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  sinkUrl = `http://127.0.0.1:${(sink.address() as { port: number }).port}`;
  srv = await env.startServer({
    redisUrl: undefined,
    files: { ...makeConfig().files, dir },
    webhooks: { ...makeConfig().webhooks, allowPrivateUrls: true },
    notify: { ...makeConfig().notify, allowPrivateUrls: true },
    video: { provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret }, daily: null, tokenTtlSeconds: 600, removals: TEST_REMOVALS },
  }, { log: createLogger('warn', false, capture) });
  const c = callerFor(srv.app, me);
  for (const id of USERS) await srv.app.services.users.touch({ id, name: id, tenant: TENANT, roles: [] });
  for (let i = 0; i < 2; i++) {
    const room = await c.room.create({ kind: 'group', name: `fuzz room ${i}`, memberIds: ['fz-bob', 'fz-carol'], visibility: 'public' });
    seed.roomIds.push(room.id);
    for (let j = 0; j < 3; j++) {
      const clientId = uuid();
      seed.clientIds.push(clientId);
      const m = await c.chat.send({ roomId: room.id, clientId, body: `hello ${j}` });
      seed.messageIds.push(m.id);
    }
    await c.chat.edit({ messageId: seed.messageIds.at(-1)!, body: 'edited' });
    const up = await c.file.createUpload({ roomId: room.id, name: 'a.txt', size: 3, mime: 'text/plain' });
    seed.fileIds.push(up.fileId);
  }
  const edits = await env.sql<{ id: string }>('select id from message_edit');
  seed.editIds.push(...edits.map((r) => r.id));
  const hook = await c.webhook.create({ url: `${sinkUrl}/hook`, events: ['*'] as never });
  seed.webhookIds.push(hook.id);
  const dev = await c.device.register({ kind: 'webpush', endpoint: `${sinkUrl}/push`, ...pushKeys() });
  seed.deviceIds.push(dev.id);
  const meeting = await c.video.create({ roomId: seed.roomIds[0]! });
  seed.meetingIds.push(meeting.id);
}, 60_000);

afterAll(async () => {
  await dispose(env);
  await lk?.close();
  sink?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Puts the seeded rooms back as they were (a fuzzed archive, ban or removal must not end the rest of the file). */
async function restore(): Promise<void> {
  await env.sql('update room set archived_at = null where id = any($1::uuid[])', [seed.roomIds]);
  await env.sql('delete from room_ban where room_id = any($1::uuid[])', [seed.roomIds]);
  for (const roomId of seed.roomIds) {
    await env.sql(`update membership set role = 'owner', muted_until = null where room_id = $1 and user_id = $2`, [roomId, me.id]);
    const have = (await env.sql<{ user_id: string }>('select user_id from membership where room_id = $1', [roomId])).map((r) => r.user_id);
    const missing = ['fz-bob', 'fz-carol'].filter((u) => !have.includes(u));
    if (missing.length) await callerFor(srv.app, me).room.addMembers({ roomId, userIds: missing });
  }
}

// ---------------------------------------------------------------------------------------------
// zod (v4) schema -> fast-check arbitrary, at the edges

type Def = Record<string, unknown> & { type: string; checks?: { _zod: { def: Record<string, unknown> } }[] };
const defOf = (s: unknown) => (s as { _zod: { def: Def } })._zod.def;
const checksOf = (d: Def) => (d.checks ?? []).map((c) => c._zod.def);

const wellFormed = (s: string) => !s.includes('\u0000') && (s as string & { isWellFormed(): boolean }).isWellFormed();

/** Characters to build long strings of (UTF-16 length 1 or 2, combining, invisible, RTL). */
const CHARS = ['a', 'é', 'e\u0301', '😀', '👩‍👩‍👧', '\u202e', '\ufeff', '\u200b', 'ß', 'ﬃ', '\uffff', '𝔘', ' ', '%', '\\', "'", '"', '_', '\u2028', 'İ'];

function stringArb(d: Def): fc.Arbitrary<string> {
  const cs = checksOf(d);
  const max = (cs.find((c) => c.check === 'max_length')?.maximum as number | undefined) ?? 300;
  const min = (cs.find((c) => c.check === 'min_length')?.minimum as number | undefined) ?? 0;
  const regex = cs.find((c) => c.check === 'string_format' && c.format === 'regex')?.pattern as RegExp | undefined;
  const format = d.format as string | undefined;
  if (format === 'uuid' || format === 'guid') return fc.oneof(fc.uuid(), fc.constant('00000000-0000-0000-0000-000000000000'), fc.constant('ffffffff-ffff-ffff-ffff-ffffffffffff'));
  if (format === 'url') {
    return fc.oneof(
      fc.constantFrom('https://example.com/', 'http://127.0.0.1:9/x', 'https://[::1]/', 'http://localhost/é', 'https://example.com/?q=%00', 'https://xn--nxasmq6b.com/'),
      fc.webUrl({ withQueryParameters: true, withFragments: true }),
      fc.nat({ max: 1990 }).map((n) => `https://example.com/${'é'.repeat(Math.min(n, 990))}`),
    );
  }
  const long = (ch: string, units: number) => {
    let s = '';
    while (s.length + ch.length <= units) s += ch;
    return s;
  };
  const parts: fc.Arbitrary<string>[] = [
    fc.string({ unit: 'grapheme', minLength: min, maxLength: Math.min(max, 40) }),
    fc.string({ unit: 'binary', minLength: min, maxLength: Math.min(max, 40) }),
    fc.constantFrom(...CHARS).map((ch) => long(ch, max)),
    fc.constantFrom(...CHARS).map((ch) => long(ch, Math.max(min, 1))),
  ];
  if (regex) parts.unshift(fc.stringMatching(regex, { size: 'small' }), fc.stringMatching(regex, { size: 'large' }));
  return fc.oneof(...parts).filter(wellFormed);
}

function numberArb(d: Def): fc.Arbitrary<number> {
  const cs = checksOf(d);
  const int = cs.some((c) => c.check === 'number_format' && String(c.format).includes('int'));
  const lo = cs.find((c) => c.check === 'greater_than')?.value as number | undefined;
  const hi = cs.find((c) => c.check === 'less_than')?.value as number | undefined;
  const edges = [lo, hi, 0, -0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 53 - 1, 1e21, -1].filter((v): v is number => typeof v === 'number');
  return fc.oneof(fc.constantFrom(...edges), int ? fc.integer({ min: lo ?? -(2 ** 31), max: hi ?? 2 ** 31 }) : fc.double({ noNaN: true, noDefaultInfinity: true }));
}

function dateArb(d: Def): fc.Arbitrary<Date> {
  const cs = checksOf(d);
  const lo = cs.find((c) => c.check === 'greater_than')?.value as Date | undefined;
  const hi = cs.find((c) => c.check === 'less_than')?.value as Date | undefined;
  return fc.oneof(
    fc.constantFrom(new Date(8.64e15), new Date(-8.64e15), new Date('0001-01-01T00:00:00Z'), new Date('9999-12-31T23:59:59.999Z'), new Date(Date.now() + 60_000), new Date(0)),
    fc.date({ noInvalidDate: true }),
    ...(lo || hi ? [fc.constantFrom(...[lo, hi].filter((x): x is Date => !!x))] : []),
  );
}

const json = fc.jsonValue({ maxDepth: 4 });

/** Values by field name: the caller's own rooms, messages, files, users. */
function byName(key: string): fc.Arbitrary<unknown> | null {
  const users = fc.constantFrom(...USERS);
  switch (key) {
    case 'roomId':
      return fc.constantFrom(...seed.roomIds);
    case 'messageId':
    case 'replyToId':
      return fc.constantFrom(...seed.messageIds);
    case 'fileId':
      return fc.constantFrom(...seed.fileIds);
    case 'beforeId':
    case 'afterId':
      return seed.editIds.length ? fc.constantFrom(...seed.editIds) : null;
    case 'userId':
    case 'toUserId':
    case 'actorId':
      return fc.oneof(users, users, fc.constantFrom('😀'.repeat(64), 'é'.repeat(128), 'ǅ', 'x'.repeat(128)));
    case 'clientId':
      return fc.oneof(fc.uuid(), fc.constantFrom(...seed.clientIds));
    case 'id':
      return fc.constantFrom(...seed.webhookIds, ...seed.deviceIds, uuid());
    case 'meetingId':
      return fc.constantFrom(...seed.meetingIds);
    case 'keys':
      return fc.constant(null).map(() => pushKeys().keys);
    case 'lastEventId':
      return fc.oneof(fc.constantFrom('0', '1', '999999999999999', '000000000000001', '9007199254740991'), fc.nat().map(String));
    default:
      return null;
  }
}

function arb(schema: unknown, key = '', depth = 0): fc.Arbitrary<unknown> {
  const d = defOf(schema);
  const named = depth < 3 ? byName(key) : null;
  switch (d.type) {
    case 'optional':
      return fc.oneof({ weight: 1, arbitrary: fc.constant(undefined) }, { weight: 4, arbitrary: arb(d.innerType, key, depth) });
    case 'nullable':
      return fc.oneof({ weight: 1, arbitrary: fc.constant(null) }, { weight: 4, arbitrary: arb(d.innerType, key, depth) });
    case 'default':
    case 'prefault':
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      return arb(d.innerType, key, depth);
    case 'pipe':
      return arb(d.in, key, depth);
    case 'string':
      return named ?? stringArb(d);
    case 'number':
      return named ?? numberArb(d);
    case 'boolean':
      return fc.boolean();
    case 'date':
      return dateArb(d);
    case 'literal':
      return fc.constantFrom(...(d.values as unknown[]));
    case 'enum':
      return fc.constantFrom(...Object.values(d.entries as Record<string, unknown>));
    case 'array': {
      const cs = checksOf(d);
      const max = (cs.find((c) => c.check === 'max_length')?.maximum as number | undefined) ?? 5;
      const min = (cs.find((c) => c.check === 'min_length')?.minimum as number | undefined) ?? 0;
      const item = arb(d.element, key.replace(/s$/, '').replace(/Ids$/, 'Id').replace(/^mention$/, 'userId').replace(/^memberId$/, 'userId'), depth + 1);
      return fc.oneof(
        fc.array(item, { minLength: min, maxLength: Math.min(max, 6) }),
        item.map((x) => Array.from({ length: max }, () => x)),
        fc.array(item, { minLength: max, maxLength: max }),
      );
    }
    case 'object': {
      const shape = d.shape as Record<string, unknown>;
      const rec: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [k, v] of Object.entries(shape)) rec[k] = validOnly(v, arb(v, k, depth + 1));
      return fc.record(rec);
    }
    case 'union':
      return fc.oneof(...(d.options as unknown[]).map((o) => arb(o, key, depth)));
    case 'record':
      return fc.dictionary(arb(d.keyType, '', depth + 1) as fc.Arbitrary<string>, json, { maxKeys: 6 });
    case 'custom':
    case 'unknown':
    case 'any':
      return fc.oneof(
        fc.dictionary(fc.string({ unit: 'grapheme', maxLength: 12 }).filter(wellFormed), json, { maxKeys: 6 }),
        fc.constant({ big: 1e308, tiny: 5e-324, neg: -0, e21: 1e21 }),
        fc.constant({ a: { b: { c: { d: { e: { f: { g: 'h' } } } } } } }),
      );
    default:
      throw new Error(`no arbitrary for zod type ${d.type} (${key})`);
  }
}

/** Values of `a` that `schema` accepts (sampled), so a call gets past validation; `a` itself when none does. */
function validOnly(schema: unknown, a: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  const sc = schema as { safeParse(v: unknown): { success: boolean } };
  const ok = fc.sample(a, { numRuns: 150, seed: SEED }).filter((v) => sc.safeParse(v).success);
  return ok.length >= 5 ? fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...ok) }, { weight: 1, arbitrary: a }) : a;
}

/** Inputs with a rule across fields: inbox.notify takes exactly one target. */
function fixup(path: string, v: unknown): unknown {
  if (path === 'inbox.notify' && v && typeof v === 'object') {
    const o = { ...(v as Record<string, unknown>) };
    const pick = ['userId', 'userIds', 'roomId'].find((k) => o[k] !== undefined) ?? 'userId';
    for (const k of ['userId', 'userIds', 'roomId']) if (k !== pick) delete o[k];
    if (o[pick] === undefined) o.userId = 'fz-bob';
    return o;
  }
  return v;
}

type AnyProcedure = { _def: { type: 'query' | 'mutation' | 'subscription'; inputs: unknown[] } };
const procedures = (appRouter as unknown as { _def: { procedures: Record<string, AnyProcedure> } })._def.procedures;

/** Calls one procedure as `me`; subscriptions: their first item (or 300 ms), then stopped. */
async function call(path: string, type: string, input: unknown, actor: Actor = me): Promise<{ ok: true; value: unknown } | { ok: false; error: unknown }> {
  const walk = (root: unknown) => path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], root) as (i: unknown) => Promise<unknown>;
  if (type !== 'subscription') {
    try {
      return { ok: true, value: await walk(callerFor(srv.app, actor))(input) };
    } catch (error) {
      return { ok: false, error };
    }
  }
  const ac = new AbortController();
  let it: AsyncIterator<unknown>;
  try {
    it = ((await walk(callerFor(srv.app, actor, { signal: ac.signal }))(input)) as AsyncIterable<unknown>)[Symbol.asyncIterator]();
  } catch (error) {
    ac.abort();
    return { ok: false, error };
  }
  let timer: NodeJS.Timeout | undefined;
  try {
    const first = await Promise.race([it.next(), new Promise<'none'>((r) => (timer = setTimeout(() => r('none'), 300)))]);
    if (first === 'none' || first.done) return { ok: true, value: null };
    return { ok: true, value: isTrackedEnvelope(first.value) ? first.value[1] : first.value };
  } catch (error) {
    return { ok: false, error };
  } finally {
    clearTimeout(timer);
    ac.abort();
    await Promise.race([it.return?.(undefined), new Promise((r) => setTimeout(r, 1000))]).catch(() => undefined);
  }
}

const SKIP = new Set(['room.delete', 'room.leave', 'admin.eraseUser', 'auth.revoke', 'webhook.delete']);

describe('fuzz: schema-valid inputs at the edges, every procedure (createCaller)', () => {
  const hits: string[] = [];
  const stats: string[] = [];
  const LAST = ['chat.delete', 'room.archive', 'room.ban', 'room.removeMember', 'room.setRole', 'video.end'];
  const paths = [...Object.keys(procedures).sort().filter((p) => !LAST.includes(p)), ...LAST];
  for (const path of paths) {
    const proc = procedures[path]!;
    const input = proc._def.inputs[0];
    if (!input || SKIP.has(path)) continue;
    it(`${proc._def.type} ${path}`, async () => {
      const schema = input as { safeParse(v: unknown): { success: boolean } };
      const tally: Record<string, number> = {};
      await restore();
      await fc.assert(
        fc.asyncProperty(arb(input).map((v) => fixup(path, v)), async (value) => {
          if (!schema.safeParse(value).success) {
            tally.invalid = (tally.invalid ?? 0) + 1;
            return;
          }
          const res = await call(path, proc._def.type, value);
          const code = res.ok ? 'OK' : res.error instanceof TRPCError ? res.error.code : 'THROWN';
          tally[code] = (tally[code] ?? 0) + 1;
          if (res.ok) return;
          const err = res.error;
          if (!(err instanceof TRPCError) || err.code === 'INTERNAL_SERVER_ERROR') {
            const cause = err instanceof TRPCError ? err.cause : err;
            hits.push(`${path}: ${JSON.stringify(value).slice(0, 400)}\n   -> ${String((cause as Error)?.message ?? cause).slice(0, 300)}`);
          }
          expect(err instanceof TRPCError && err.code !== 'INTERNAL_SERVER_ERROR', hits.at(-1)).toBe(true);
        }),
        { numRuns: RUNS, seed: SEED },
      );
      stats.push(`${path}: ${JSON.stringify(tally)}`);
    });
  }
  afterAll(() => {
    const logged = [...new Set(logLines.map((l) => { try { const j = JSON.parse(l); return `${j.level} ${j.msg} ${j.err?.message ?? ''} ${j.path ?? ''}`.slice(0, 300); } catch { return l.slice(0, 300); } }))];
    if (process.env.FUZZ_VERBOSE === '1') console.log(`[fuzz] ${stats.join('\n')}\n${hits.length} hits\n${hits.join('\n')}\nlogged:\n${logged.join('\n')}`);
  });
});

describe('fuzz: odd paths and frames over HTTP and WebSocket', () => {
  it('paths that name members of Object.prototype are NOT_FOUND over HTTP', async () => {
    const { tokenFor } = await import('./fixture.js');
    const token = tokenFor(me.id, { tenant: TENANT, roles: me.roles });
    for (const path of ['toString', '__proto__', 'constructor', 'hasOwnProperty', 'valueOf', 'room.__proto__', 'room', 'room.', '', 'room.list.x', '__defineGetter__']) {
      for (const method of ['GET', 'POST']) {
        const res = await fetch(`${srv.url}/trpc/${path}${method === 'GET' ? '?input=%7B%7D' : ''}`, {
          method,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          ...(method === 'POST' ? { body: '{"json":{}}' } : {}),
        });
        expect(res.status, `${method} ${path}`).toBe(404);
      }
    }
  });

  it('odd WebSocket frames: typed answers, no INTERNAL_SERVER_ERROR, the socket keeps serving', async () => {
    const { rawClient, tokenFor } = await import('./fixture.js');
    using c = rawClient(srv.url, { token: tokenFor(me.id, { tenant: TENANT, roles: me.roles }) });
    await c.opened;
    const roomId = seed.roomIds[0]!;
    const msgs: unknown[] = [];
    for (const path of ['toString', '__proto__', 'constructor', 'hasOwnProperty', 'room.__proto__', 'room', '']) {
      for (const method of ['query', 'mutation', 'subscription']) msgs.push({ method, params: { path, input: { json: {} } } });
    }
    msgs.push(
      { method: 'subscription', params: { path: 'chat.events', input: { json: { roomId } }, lastEventId: 'a\u0000' } },
      { method: 'subscription', params: { path: 'inbox.events', input: { json: null }, lastEventId: '\uD800' } },
      { method: 'subscription', params: { path: 'inbox.events', input: { json: 'a\u0000' }, lastEventId: '1' } },
      { method: 'query', params: { path: 'room.list', input: { json: ['\uD800'] } } },
      { method: 'query', params: { path: 'room.list', input: { json: 'garbage', meta: { values: ['Date'] } } } },
      { method: 'mutation', params: { path: 'room.mute', input: { json: { roomId, userId: 'fz-bob', until: 'garbage' }, meta: { values: { until: ['Date'] } } } } },
      { method: 'mutation', params: { path: 'room.mute', input: { json: { roomId, userId: 'fz-bob', until: 8.64e15 }, meta: { values: { until: ['Date'] } } } } },
      { method: 'mutation', params: { path: 'notify.setRoomPreference', input: { json: { roomId, level: 'all', muteUntil: 8.64e15 } } } },
      { method: 'mutation', params: { path: 'notify.setRoomPreference', input: { json: { roomId, level: 'all', muteUntil: '275760-09-13' } } } },
    );
    let id = 1;
    for (const m of msgs) {
      const mid = id++;
      c.send({ id: mid, ...(m as object) });
      const f = await c.waitFrame((x) => x.id === mid && (x.error !== undefined || x.result?.type === 'data' || x.result?.type === 'started'), `the answer to ${JSON.stringify(m).slice(0, 120)}`);
      expect(f.error?.data?.code, JSON.stringify(m).slice(0, 200)).not.toBe('INTERNAL_SERVER_ERROR');
    }
    const probe = id++;
    c.send({ id: probe, method: 'query', params: { path: 'auth.me', input: { json: undefined } } });
    expect((await c.waitFrame((x) => x.id === probe, 'auth.me')).result?.data).toMatchObject({ id: me.id });
    expect(c.isClosed).toBe(false);
  });
});
