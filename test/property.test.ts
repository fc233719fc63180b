/**
 * Property-based tests (fast-check) over EVERY procedure of the AppRouter (issue 6, "Bad input"):
 * each procedure of `appRouter._def.procedures` is called through `createCaller` with random and
 * hostile inputs (fc.anything(), wrong types, huge strings, prototype-pollution keys, unicode, deep
 * nesting, valid-looking ids of other rooms, messages and tenants) as various actors. Properties:
 *
 *   1. every failure is a TRPCError whose code is not INTERNAL_SERVER_ERROR (no 500);
 *   2. no success and no error message of an actor ever contains data of a room it may not see
 *      (each seeded room carries a unique marker in its name, topic, key, messages, edits and
 *      reactions; a marker in an actor's output is checked against PostgreSQL's membership table);
 *      nor the names of another tenant's users;
 *   3. nothing crashes: no unhandled rejection, Object.prototype is never touched.
 *
 *   npx vitest run test/property.test.ts      (PROPERTY_SEED=<n> PROPERTY_RUNS=<n> to vary)
 */
import { randomBytes } from 'node:crypto';
import { isTrackedEnvelope, TRPCError } from '@trpc/server';
import fc from 'fast-check';
import superjson from 'superjson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appRouter, callerFor, dispose, freePort, testEnv, tokenFor, toTRPCError, uuid, type Actor, type TestEnv, type TestServer } from './fixture.js';
import { TEST_REMOVALS } from './video-doubles.js';

const SEED = Number(process.env.PROPERTY_SEED ?? 6_2026_1122);
const RUNS = Number(process.env.PROPERTY_RUNS ?? 80);
const SUBSCRIPTION_RUNS = Math.max(10, Math.round(RUNS / 2));
/** How long a subscription may take to yield its first item before it is aborted (a bound, not a wait). */
const FIRST_ITEM_MS = 250;

const hex = randomBytes(5).toString('hex');
const T1 = `ptenant1-${hex}`;
const T2 = `ptenant2-${hex}`;
/** Markers: a room's marker is in its name, topic, key, message bodies, edits and reactions. */
const MARK = { A: `zqmarkA${hex}`, B: `zqmarkB${hex}`, C: `zqmarkC${hex}` };
/**
 * Each room's `key` (its external id). Not a leak marker: actors type known keys themselves (they
 * may even create rooms of their own with them), so a key in an output proves nothing by itself.
 * An outsider's CONFLICT naming a seeded key is counted instead (`keyEchoes`).
 */
const KEY_MARK = { A: `zqkeyA${hex}`, B: `zqkeyB${hex}`, C: `zqkeyC${hex}` };
/** In the display names of each tenant's users: the other tenant must never see them. */
const TENANT_MARK = { [T1]: `zqtenantOne${hex}`, [T2]: `zqtenantTwo${hex}` } as Record<string, string>;

const u = (id: string, tenant: string, roles: string[] = []): Actor => ({ id, name: `${id} ${TENANT_MARK[tenant]}`, tenant, roles });
/** The actors the properties run as (null: no token). */
const ACTORS: Record<string, Actor | null> = {
  memberOfA: u('alice', T1),
  sameTenantOutsider: u('eve', T1),
  serviceOfT1: u('svc', T1, ['service']),
  otherTenantUser: u('mallory', T2),
  otherTenantAdmin: u('root', T2, ['admin', 'service', 'support']),
  anonymous: null,
};
const USERS = ['alice', 'owner-a', 'carol', 'bob', 'dave', 'eve', 'svc', 'mallory', 'root', 'nobody'];

let env: TestEnv;
let srv: TestServer;

interface Seeded {
  rooms: { key: 'A' | 'B' | 'C'; id: string; tenant: string; roomKey: string }[];
  roomIds: string[];
  messageIds: string[];
  /** Message ids per seeded room (A, B, C). */
  messagesOf: Record<'A' | 'B' | 'C', string[]>;
  clientIds: string[];
  roomKeys: string[];
  tokens: string[];
}
let seeded: Seeded;

const unhandled: unknown[] = [];
const onUnhandled = (err: unknown) => unhandled.push(err);
const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort().join(',');

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  env = await testEnv('prop');
  // Video configured against a provider API that is down (a closed loopback port): the video
  // procedures then run their access checks and their provider-failure paths, not only
  // PRECONDITION_FAILED ("not configured").
  const deadApi = `http://127.0.0.1:${await freePort()}`;
  srv = await env.startServer({
    redisUrl: undefined,
    video: { provider: 'daily', livekit: null, daily: { apiKey: 'prop-key', apiUrl: deadApi, webhookSecret: null }, tokenTtlSeconds: 600, removals: TEST_REMOVALS },
  });
  const app = srv.app;
  const as = (a: Actor) => callerFor(app, a);
  for (const t of [T1, T2]) {
    for (const id of USERS) await app.services.users.touch(u(id, t));
  }
  const ownerA = u('owner-a', T1);
  const bob = u('bob', T1);
  const mallory = u('mallory', T2);
  const roomOf = async (owner: Actor, key: 'A' | 'B' | 'C', members: string[]) => {
    const m = MARK[key];
    const roomKey = `key:${KEY_MARK[key]}`;
    // Keys are set by service and admin tokens: the owner's admin token (same user) creates the room.
    const room = await as({ ...owner, roles: ['admin'] }).room.create({ kind: 'group', name: `Room ${m}`, topic: `topic ${m}`, key: roomKey, memberIds: members });
    return { key, id: room.id, tenant: owner.tenant, roomKey };
  };
  // A: alice is a plain member (she can neither add members nor change the room); B: alice is not in it.
  const rooms = [await roomOf(ownerA, 'A', ['alice', 'carol']), await roomOf(bob, 'B', ['dave']), await roomOf(mallory, 'C', ['root'])];
  const messageIds: string[] = [];
  const messagesOf: Seeded['messagesOf'] = { A: [], B: [], C: [] };
  const clientIds: string[] = [];
  const authors: Record<'A' | 'B' | 'C', Actor[]> = { A: [ownerA, u('alice', T1)], B: [bob, u('dave', T1)], C: [mallory, u('root', T2)] };
  for (const r of rooms) {
    const m = MARK[r.key];
    const [owner, member] = authors[r.key];
    const sent = [];
    for (let i = 0; i < 4; i++) {
      const clientId = uuid();
      clientIds.push(clientId);
      const who = i % 2 === 0 ? owner! : member!;
      sent.push(await as(who).chat.send({ roomId: r.id, clientId, body: `secret ${i} ${m}`, mentions: [member!.id] }));
    }
    messageIds.push(...sent.map((s) => s.id));
    messagesOf[r.key].push(...sent.map((s) => s.id));
    await as(owner!).chat.edit({ messageId: sent[0]!.id, body: `edited ${m}` });
    await as(member!).chat.react({ messageId: sent[0]!.id, emoji: `:${m}:` });
    await as(member!).chat.send({ roomId: r.id, clientId: uuid(), body: `reply ${m}`, replyToId: sent[0]!.id });
    await as(owner!).chat.delete({ messageId: sent[3]!.id });
    await as(member!).receipt.markRead({ roomId: r.id, seq: sent[2]!.seq });
  }
  seeded = {
    rooms,
    roomIds: rooms.map((r) => r.id),
    messageIds,
    messagesOf,
    clientIds,
    roomKeys: rooms.map((r) => r.roomKey),
    // Valid tokens of other users and tenants (for auth.refresh and friends).
    tokens: [tokenFor('alice', { tenant: T1 }), tokenFor('mallory', { tenant: T2 }), tokenFor('root', { tenant: T2, roles: ['admin'] })],
  };
}, 60_000);

afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await dispose(env);
});

// ---------------------------------------------------------------------------------------------
// Hostile values

/** An object with an OWN property named `name` (e.g. `__proto__`, which `{ __proto__: x }` would not create). */
function withOwn(base: Record<string, unknown>, name: string, value: unknown): Record<string, unknown> {
  const o = { ...base };
  Object.defineProperty(o, name, { value, enumerable: true, configurable: true, writable: true });
  return o;
}

const POLLUTION_KEYS = ['__proto__', 'constructor', 'prototype', '__defineGetter__', 'toString', 'valueOf', 'hasOwnProperty'];

function deep(depth: number, leaf: unknown, asArray: boolean): unknown {
  let v: unknown = leaf;
  for (let i = 0; i < depth; i++) v = asArray ? [v] : { a: v };
  return v;
}

const hugeStrings = fc.constantFrom(
  'x'.repeat(5_000),
  'é'.repeat(70_000),
  '\u{1F600}'.repeat(40_000),
  'a'.repeat(1_100_000),
  '\u0000'.repeat(10_000),
  `${'9'.repeat(400)}`,
);

const weirdStrings = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    '\t\n',
    '\u0000',
    '\uD800',
    '\u202E\u202D',
    'null',
    'undefined',
    'NaN',
    '[object Object]',
    '__proto__',
    'constructor',
    '0',
    '-1',
    '1e400',
    '00000000-0000-0000-0000-000000000000',
    'ffffffff-ffff-ffff-ffff-ffffffffffff',
    "'; drop table message; --",
    '%00',
    '../../etc/passwd',
    '<script>alert(1)</script>',
    'key:*',
    '%',
    '_',
    '\\',
  ),
  fc.string(),
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 100 }),
  fc.uuid(),
);

const weirdNumbers = fc.oneof(
  fc.constantFrom(NaN, Infinity, -Infinity, -0, 0, -1, 1, 2 ** 31, 2 ** 53, 2 ** 53 + 2, -(2 ** 53), Number.MAX_VALUE, Number.MIN_VALUE, 0.5),
  fc.integer(),
  fc.double(),
  fc.bigInt(),
);

function hostileScalar(): fc.Arbitrary<unknown> {
  return fc.oneof(
    weirdStrings,
    weirdNumbers,
    hugeStrings,
    fc.constantFrom(null, undefined, true, false, Symbol('s'), () => 1, new Date(NaN), new Date(8.64e15), /x/g, new Map([['a', 1]]), new Set([1])),
    fc.date(),
    fc.uint8Array({ maxLength: 16 }),
  );
}

/** Valid-looking ids and values of OTHER rooms, messages, users and tenants. */
function knownValues(): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.constantFrom(...seeded.roomIds, ...seeded.messageIds, ...seeded.clientIds, ...seeded.roomKeys, ...USERS, ...seeded.tokens, T1, T2),
    fc.uuid(),
  );
}

function hostileNested(): fc.Arbitrary<unknown> {
  return fc.oneof(
    fc.constantFrom(
      deep(2_000, 'x', false),
      deep(2_000, 1, true),
      deep(100_000, null, true),
      withOwn({}, '__proto__', { polluted: 'yes', isAdmin: true }),
      withOwn({ roomId: '00000000-0000-0000-0000-000000000000' }, '__proto__', { roomId: 'x' }),
      withOwn({}, 'constructor', { prototype: { polluted: 'yes' } }),
      Object.create(null),
      Object.create({ roomId: 'inherited' }),
      new Array(100_000).fill('a'),
      Array.from({ length: 1000 }, (_, i) => ({ [`k${i}`]: i })),
    ),
    fc.anything({
      maxDepth: 4,
      maxKeys: 6,
      withBigInt: true,
      withDate: true,
      withMap: true,
      withSet: true,
      withTypedArray: true,
      withSparseArray: true,
      withNullPrototype: true,
      withObjectString: true,
      withBoxedValues: true,
      withUnicodeString: true,
    }),
  );
}

/** Plausible values for a field of that name (a value the schema may accept, pointing at data of others). */
function plausible(key: string): fc.Arbitrary<unknown> {
  // Room A (where the member acts and outsiders probe) most often, then the others, then a random id.
  const [a, b, c] = seeded.rooms.map((r) => r.id) as [string, string, string];
  const rooms = fc.oneof({ weight: 4, arbitrary: fc.constant(a) }, fc.constant(b), fc.constant(c), fc.uuid());
  const msgs = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...seeded.messagesOf.A) },
    fc.constantFrom(...seeded.messagesOf.B),
    fc.constantFrom(...seeded.messagesOf.C),
    fc.uuid(),
  );
  const ids = (xs: string[]) => fc.oneof(fc.constantFrom(...xs), fc.uuid());
  const users = fc.constantFrom(...USERS);
  const seqs = fc.oneof(fc.nat({ max: 30 }), fc.constantFrom(0, 2 ** 53 - 1));
  const text = fc.oneof(fc.string({ minLength: 1, maxLength: 50 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 50 }));
  switch (key) {
    case 'roomId':
      return rooms;
    case 'messageId':
    case 'replyToId':
      return msgs;
    case 'meetingId':
      return fc.uuid();
    case 'clientId':
      return ids(seeded.clientIds);
    case 'userId':
    case 'toUserId':
    case 'username':
      return users;
    case 'userIds':
    case 'memberIds':
    case 'mentions':
      return fc.array(users, { minLength: 1, maxLength: 4 });
    case 'key':
      return fc.oneof(fc.constantFrom(...seeded.roomKeys), fc.constantFrom('order:1', 'key:*', 'key:%'));
    case 'seq':
    case 'beforeSeq':
    case 'afterSeq':
      return seqs;
    case 'limit':
    case 'ttlMinutes':
    case 'retentionDays':
      return fc.integer({ min: -2, max: 150 });
    case 'lastEventId':
      return fc.oneof(fc.constantFrom('0', '1', '3', '999999999999999', '-1', '1.5', ''), fc.nat().map(String));
    case 'kind':
      return fc.constantFrom('group', 'support', 'broadcast', 'direct', 'text', 'image', 'file', 'system');
    case 'role':
      return fc.constantFrom('owner', 'admin', 'moderator', 'member', 'root');
    case 'roles':
      return fc.array(fc.constantFrom('admin', 'service', 'support', 'root'), { maxLength: 3 });
    case 'status':
      return fc.constantFrom('online', 'away', 'dnd', 'offline');
    case 'type':
      return fc.constantFrom('offer', 'answer', 'ice', 'hangup', 'x');
    case 'tenant':
      return fc.constantFrom(T1, T2, 'default');
    case 'token':
      return fc.oneof(fc.constantFrom(...seeded.tokens), fc.string());
    case 'typing':
    case 'encrypted':
    case 'live':
      return fc.boolean();
    case 'until':
      return fc.oneof(fc.date(), fc.constant(null));
    case 'attachments':
      return fc.array(
        fc.record({
          url: fc.constantFrom('https://example.com/a.png', 'javascript:alert(1)', 'file:///etc/passwd'),
          name: text,
          size: fc.integer({ min: -1, max: 2 ** 40 }),
          mime: fc.constantFrom('image/png', 'text/html', 'x'),
        }),
        { maxLength: 3 },
      );
    case 'data':
    case 'payload':
      return fc.oneof(fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 }), fc.jsonValue({ maxDepth: 2 }));
    default:
      return text;
  }
}

// ---------------------------------------------------------------------------------------------
// The procedures, their input keys, and input arbitraries

type AnyProcedure = { _def: { type: 'query' | 'mutation' | 'subscription'; inputs: unknown[] } };
const procedures = (appRouter as unknown as { _def: { procedures: Record<string, AnyProcedure> } })._def.procedures;

/** Field names a zod (v4) schema accepts at its top level (objects, optional/nullable wrappers, unions, pipes). */
function keysOf(schema: unknown, depth = 0): string[] {
  if (!schema || typeof schema !== 'object' || depth > 6) return [];
  const s = schema as { shape?: Record<string, unknown>; options?: unknown[]; def?: Record<string, unknown>; unwrap?: () => unknown };
  if (s.shape && typeof s.shape === 'object') return Object.keys(s.shape);
  if (Array.isArray(s.options)) return [...new Set(s.options.flatMap((o) => keysOf(o, depth + 1)))];
  const def = s.def ?? {};
  for (const inner of [def.innerType, def.in, def.schema, def.left, def.right]) {
    const k = keysOf(inner, depth + 1);
    if (k.length) return k;
  }
  if (typeof s.unwrap === 'function') {
    try {
      return keysOf(s.unwrap(), depth + 1);
    } catch {
      return [];
    }
  }
  return [];
}

type Schema = { safeParse(v: unknown): { success: boolean } };

/** The top-level fields of a procedure's input: for each key, the schemas that may check it, and whether it may be left out. */
function fieldsOf(schema: unknown, depth = 0): Map<string, { schemas: Schema[]; optional: boolean }> {
  const out = new Map<string, { schemas: Schema[]; optional: boolean }>();
  if (!schema || typeof schema !== 'object' || depth > 6) return out;
  const s = schema as { shape?: Record<string, Schema>; options?: unknown[]; def?: Record<string, unknown>; unwrap?: () => unknown };
  if (s.shape && typeof s.shape === 'object') {
    for (const [k, f] of Object.entries(s.shape)) out.set(k, { schemas: [f], optional: f.safeParse(undefined).success });
    return out;
  }
  if (Array.isArray(s.options)) {
    for (const o of s.options) {
      for (const [k, f] of fieldsOf(o, depth + 1)) {
        const cur = out.get(k);
        out.set(k, cur ? { schemas: [...cur.schemas, ...f.schemas], optional: cur.optional && f.optional } : f);
      }
    }
    return out;
  }
  const def = s.def ?? {};
  for (const inner of [def.innerType, def.in, def.schema]) {
    const f = fieldsOf(inner, depth + 1);
    if (f.size) return f;
  }
  if (typeof s.unwrap === 'function') {
    try {
      return fieldsOf(s.unwrap(), depth + 1);
    } catch {
      return out;
    }
  }
  return out;
}

/**
 * Mostly schema-valid inputs pointing at seeded data (so calls pass validation and the services'
 * access checks are what decides), now and then with one hostile field. Valid values are found by
 * sampling `plausible(key)` and keeping what the field's own schema accepts.
 */
function validishArb(fields: Map<string, { schemas: Schema[]; optional: boolean }>): fc.Arbitrary<unknown> | null {
  if (!fields.size) return null;
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  const required: string[] = [];
  for (const [k, f] of fields) {
    const ok = fc
      .sample(plausible(k), { numRuns: 300, seed: SEED })
      .filter((v) => f.schemas.some((sc) => sc.safeParse(v).success));
    const valid = ok.length ? fc.constantFrom(...ok) : plausible(k);
    parts[k] = fc.oneof({ weight: 30, arbitrary: valid }, { weight: 1, arbitrary: hostileScalar() }, { weight: 1, arbitrary: knownValues() });
    if (!f.optional) required.push(k);
  }
  return fc.record(parts, { requiredKeys: required });
}

function inputArb(keys: string[], fields: Map<string, { schemas: Schema[]; optional: boolean }>): fc.Arbitrary<unknown> {
  // Mostly plausible values (so calls get past validation and reach the services' access checks),
  // sometimes hostile ones.
  const field = (k: string) => fc.oneof({ weight: 14, arbitrary: plausible(k) }, { weight: 1, arbitrary: hostileScalar() }, { weight: 1, arbitrary: knownValues() });
  const structured = keys.length
    ? fc
        .tuple(
          fc.record(Object.fromEntries(keys.map((k) => [k, field(k)])), { requiredKeys: [] }),
          fc.array(fc.tuple(fc.constantFrom(...POLLUTION_KEYS, 'extra', 'roomId', 'tenant', 'actor'), fc.oneof(hostileNested(), knownValues())), { maxLength: 2 }),
        )
        .map(([rec, extras]) => extras.reduce<Record<string, unknown>>((o, [k, v]) => withOwn(o, k, v), rec))
    : fc.constant(undefined);
  const validish = validishArb(fields);
  return fc.oneof(
    ...(validish ? [{ weight: 10, arbitrary: validish }] : []),
    { weight: 5, arbitrary: structured },
    { weight: 2, arbitrary: hostileNested() },
    { weight: 1, arbitrary: hostileScalar() },
    { weight: 1, arbitrary: knownValues() },
  );
}

// ---------------------------------------------------------------------------------------------
// The properties

/**
 * Puts the seeded memberships back (a random `room.leave` or `room.removeMember` of an earlier
 * procedure's run must not turn the member of A into an outsider for the rest of the file). The
 * owner may have left too (mallory, an actor of the properties, owns C): a service token of the
 * room's tenant adds back whoever is missing, owner included.
 */
async function restoreMemberships(): Promise<void> {
  const seededMembers: Record<'A' | 'B' | 'C', string[]> = { A: ['owner-a', 'alice', 'carol'], B: ['bob', 'dave'], C: ['mallory', 'root'] };
  // A random `room.archive` must not leave the seeded rooms read-only either.
  await env.sql('update room set archived_at = null where id = any($1::uuid[])', [seeded.roomIds]);
  for (const room of seeded.rooms) {
    const members = seededMembers[room.key];
    const have = await env.sql<{ user_id: string }>('select user_id from membership where room_id = $1', [room.id]);
    const missing = members.filter((m) => !have.some((r) => r.user_id === m));
    if (missing.length) {
      await env.sql('delete from room_ban where room_id = $1 and user_id = any($2)', [room.id, missing]);
      await callerFor(srv.app, u('restorer', room.tenant, ['service'])).room.addMembers({ roomId: room.id, userIds: missing });
    }
  }
}

/**
 * Procedures that show a service token every keyed room of its tenant, member or not (docs/API.md:
 * `room.byKey`, `room.ensure`): what an integration finds its order's room by.
 */
const KEYED_FOR_SERVICES = new Set(['room.byKey', 'room.ensure']);

/**
 * What an actor may see of a seeded room: tenant and a membership row, per PostgreSQL right now
 * (or, through `KEYED_FOR_SERVICES`, a service token of the room's tenant).
 */
async function maySee(a: Actor | null, room: Seeded['rooms'][number], path?: string): Promise<boolean> {
  if (!a || a.tenant !== room.tenant) return false;
  if (path !== undefined && KEYED_FOR_SERVICES.has(path) && a.roles.includes('service')) return true;
  const r = await env.sql('select 1 from membership where room_id = $1 and user_id = $2', [room.id, a.id]);
  return r.length === 1;
}

/** Markers in `text` the actor has no right to see (inputs never contain them: only seeded data does). */
async function leaks(a: Actor | null, text: string, path?: string): Promise<string[]> {
  const out: string[] = [];
  for (const room of seeded.rooms) {
    if (text.includes(MARK[room.key]) && !(await maySee(a, room, path))) out.push(`room ${room.key} (${MARK[room.key]})`);
  }
  for (const [tenant, mark] of Object.entries(TENANT_MARK)) {
    if (text.includes(mark) && a?.tenant !== tenant) out.push(`names of tenant ${tenant}`);
  }
  return out;
}

function serialize(v: unknown): string {
  try {
    return superjson.stringify(v);
  } catch {
    try {
      return String(v);
    } catch {
      return `[unserializable ${typeof v}]`;
    }
  }
}

function describeInput(input: unknown): string {
  const s = serialize(input);
  return s.length > 300 ? `${s.slice(0, 300)}… (${s.length} chars)` : s;
}

/**
 * `room.delete` of a seeded room would take it from every later procedure's run: its seeded room
 * ids are swapped for fresh ones (its rules are tested in rooms.lifecycle.test.ts).
 */
function spareSeededRooms(path: string, input: unknown): unknown {
  if (path !== 'room.delete' || !input || typeof input !== 'object') return input;
  const roomId = (input as { roomId?: unknown }).roomId;
  return typeof roomId === 'string' && seeded.roomIds.includes(roomId) ? { ...input, roomId: uuid() } : input;
}

/** Calls one procedure; returns what succeeded (for the leak check) or the failure. */
async function call(path: string, type: string, a: Actor | null, input: unknown): Promise<{ ok: true; value: unknown } | { ok: false; error: unknown }> {
  const walk = (root: unknown) => path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], root) as (i: unknown) => Promise<unknown>;
  if (type !== 'subscription') {
    try {
      return { ok: true, value: await walk(callerFor(srv.app, a))(input) };
    } catch (error) {
      return { ok: false, error };
    }
  }
  // Subscriptions: at most one item, within FIRST_ITEM_MS, then abort.
  const ac = new AbortController();
  let iterable: AsyncIterable<unknown>;
  try {
    iterable = (await walk(callerFor(srv.app, a, { signal: ac.signal }))(input)) as AsyncIterable<unknown>;
  } catch (error) {
    ac.abort();
    return { ok: false, error };
  }
  const it = iterable[Symbol.asyncIterator]();
  let timer: NodeJS.Timeout | undefined;
  try {
    const first = await Promise.race([
      it.next(),
      new Promise<'none'>((r) => {
        timer = setTimeout(() => r('none'), FIRST_ITEM_MS);
      }),
    ]);
    if (first === 'none' || first.done) return { ok: true, value: null };
    const v = first.value;
    return { ok: true, value: isTrackedEnvelope(v) ? v[1] : v };
  } catch (error) {
    // Errors raised while streaming reach a wsLink client through the error formatter, which
    // maps them like the middleware does: judge them after that same mapping.
    return { ok: false, error: error instanceof TRPCError ? error : (toTRPCError(error) ?? error) };
  } finally {
    clearTimeout(timer);
    ac.abort();
    // With the signal aborted the pending next() settles and return() completes.
    await Promise.race([it.return?.(undefined), new Promise((r) => setTimeout(r, 2000))]).catch(() => undefined);
  }
}

interface Tally {
  runs: number;
  ok: number;
  /** Successful calls per actor. */
  okBy: Record<string, number>;
  codes: Record<string, number>;
  /** Error messages (first 70 characters) and how often (printed with PROPERTY_VERBOSE=1). */
  messages: Record<string, number>;
}
const summary: Record<string, Tally> = {};
/** The member of room A more often: the calls that succeed are the ones that can leak. */
const actorArb = (names: string[]) =>
  fc.oneof({ weight: 3, arbitrary: fc.constant('memberOfA') }, { weight: names.length - 1, arbitrary: fc.constantFrom(...names.filter((n) => n !== 'memberOfA')) });
/** Successful results that carried a seeded marker, per actor (proof the seeded data is reached and checked). */
const markersSeen: Record<string, number> = {};
/** Outsiders' errors that repeated a room key they had typed (they learn that such a room exists). */
const keyEchoes: string[] = [];

describe('property: every procedure, random and hostile inputs, several actors', () => {
  const paths = Object.keys(procedures).sort();

  it('the leak oracle flags a marker shown to an outsider (and not to a member)', async () => {
    const roomA = await callerFor(srv.app, u('owner-a', T1)).room.get({ roomId: seeded.roomIds[0]! });
    const text = serialize(roomA);
    expect(await leaks(ACTORS.sameTenantOutsider!, text)).toEqual([`room A (${MARK.A})`]);
    expect(await leaks(ACTORS.otherTenantUser!, text)).toEqual([`room A (${MARK.A})`]);
    expect(await leaks(null, text)).toEqual([`room A (${MARK.A})`]);
    expect(await leaks(ACTORS.memberOfA!, text)).toEqual([]);
    expect(await leaks(ACTORS.otherTenantUser!, `{"name":"alice ${TENANT_MARK[T1]}"}`)).toEqual([`names of tenant ${T1}`]);
    // A service token of the tenant finds keyed rooms by key (room.byKey, room.ensure), not through the other reads.
    expect(await leaks(ACTORS.serviceOfT1!, text, 'room.byKey')).toEqual([]);
    expect(await leaks(ACTORS.serviceOfT1!, text, 'room.get')).toEqual([`room A (${MARK.A})`]);
    expect(await leaks(ACTORS.otherTenantAdmin!, text, 'room.byKey')).toEqual([`room A (${MARK.A})`]);
  });

  it('enumerates the whole router', () => {
    expect(paths.length).toBeGreaterThanOrEqual(40);
    for (const ns of ['auth', 'room', 'chat', 'receipt', 'presence', 'inbox']) {
      expect(paths.some((p) => p.startsWith(`${ns}.`)), ns).toBe(true);
    }
  });

  for (const path of paths) {
    const proc = procedures[path]!;
    const type = proc._def.type;
    const keys = [...new Set(proc._def.inputs.flatMap((s) => keysOf(s)))];
    const fields = new Map(proc._def.inputs.flatMap((s) => [...fieldsOf(s)]));
    it(`${type} ${path} (${keys.join(', ') || 'no input'})`, async () => {
      const stats: Tally = { runs: 0, ok: 0, okBy: {}, codes: {}, messages: {} };
      await restoreMemberships();
      summary[path] = stats;
      const actorNames = Object.keys(ACTORS);
      await fc.assert(
        fc.asyncProperty(actorArb(actorNames), inputArb(keys, fields), async (who, input) => {
          const a = ACTORS[who]!;
          stats.runs++;
          const res = await call(path, type, a, spareSeededRooms(path, input));
          const where = `${path} as ${who} with ${describeInput(input)}`;
          if (res.ok) {
            stats.ok++;
            stats.okBy[who] = (stats.okBy[who] ?? 0) + 1;
            const text = serialize(res.value);
            if (Object.values(MARK).some((m) => text.includes(m))) markersSeen[who] = (markersSeen[who] ?? 0) + 1;
            const leaked = await leaks(a, text, path);
            if (leaked.length) throw new Error(`${where}: the result shows ${leaked.join(', ')}: ${serialize(res.value).slice(0, 400)}`);
          } else {
            const err = res.error;
            if (!(err instanceof TRPCError)) throw new Error(`${where}: failed with a non-TRPCError: ${String((err as Error)?.stack ?? err)}`);
            stats.codes[err.code] = (stats.codes[err.code] ?? 0) + 1;
            const m = `${err.code}: ${err.message.replace(/\s+/g, ' ').slice(0, 90)}`;
            stats.messages[m] = (stats.messages[m] ?? 0) + 1;
            if (err.code === 'INTERNAL_SERVER_ERROR') {
              throw new Error(`${where}: INTERNAL_SERVER_ERROR: ${err.message}\ncause: ${String((err.cause as Error)?.stack ?? err.cause)}`);
            }
            const leaked = await leaks(a, err.message);
            for (const room of seeded.rooms) {
              if (err.code === 'CONFLICT' && err.message.includes(room.roomKey) && !(await maySee(a, room))) {
                keyEchoes.push(`${path} as ${who}: ${err.message}`);
              }
            }
            if (leaked.length) throw new Error(`${where}: the error message shows ${leaked.join(', ')}: ${err.message}`);
          }
          const proto = Object.getOwnPropertyNames(Object.prototype).sort().join(',');
          if (proto !== protoBefore || ({} as Record<string, unknown>).polluted !== undefined || ({} as Record<string, unknown>).isAdmin !== undefined) {
            throw new Error(`${where}: Object.prototype was modified`);
          }
        }),
        { numRuns: type === 'subscription' ? SUBSCRIPTION_RUNS : RUNS, seed: SEED, endOnFailure: true },
      );
      expect(unhandled, 'unhandled rejections').toEqual([]);
    }, 60_000);
  }

  it('nothing crashed, nothing leaked (summary)', async () => {
    const verbose = process.env.PROPERTY_VERBOSE === '1';
    const rows = Object.entries(summary).map(
      ([p, s]) =>
        `  ${p.padEnd(20)} runs ${String(s.runs).padStart(3)}  ok ${String(s.ok).padStart(3)} ${JSON.stringify(s.okBy)}  errors ${JSON.stringify(s.codes)}` +
        (verbose
          ? Object.entries(s.messages)
              .sort((a, b) => b[1] - a[1])
              .slice(0, 6)
              .map(([m, n]) => `\n      ${n} x ${m}`)
              .join('')
          : ''),
    );
    const total = Object.values(summary).reduce((n, s) => n + s.runs, 0);
    console.log(
      `[property] ${Object.keys(summary).length} procedures, ${total} calls (seed ${SEED}):\n${rows.join('\n')}\n` +
        `  successful results carrying a seeded room marker, per actor (all allowed): ${JSON.stringify(markersSeen)}\n` +
        `  outsiders' errors echoing a room key they typed (existence of the key is visible): ${keyEchoes.length}` +
        (keyEchoes.length ? `, e.g. ${keyEchoes[0]}` : ''),
    );
    // The member of A did get A's data back: the leak check ran on real data, not only on errors.
    expect(markersSeen.memberOfA ?? 0).toBeGreaterThan(0);
    expect(unhandled).toEqual([]);
    // The app still serves normally after all of it.
    const room = await callerFor(srv.app, u('owner-a', T1)).room.get({ roomId: seeded.roomIds[0]! });
    expect(room.id).toBe(seeded.roomIds[0]);
  });
});
