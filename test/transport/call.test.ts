/**
 * The transport's procedure call (src/transport/call.ts) against tRPC's `callTRPCProcedure`: the
 * same calls through both give the same results, the same errors and the same options to every
 * middleware; the procedures it cannot run itself (lazy routers not loaded yet, another type,
 * unknown paths, `experimental_caller`) go through tRPC's and still answer the same.
 */
import { type AnyProcedure, callTRPCProcedure, experimental_lazy, initTRPC, TRPCError } from '@trpc/server';
import { describe, expect, test } from 'vitest';
import { z } from 'zod';
import { callProcedure, chainOf } from '../../src/transport/index.js';

interface Ctx {
  user: string | null;
  seen: Record<string, unknown>[];
}

const t = initTRPC.context<Ctx>().meta<{ tag: string }>().create();

/** Records the options every middleware gets (keys and the parts that must match). */
const recorded = t.middleware((opts) => {
  opts.ctx.seen.push({ keys: Object.keys(opts).sort(), path: opts.path, type: opts.type, meta: opts.meta, input: opts.input, ctx: { user: opts.ctx.user } });
  return opts.next();
});
const authed = t.procedure.use(recorded).use(async ({ ctx, next }) => {
  if (!ctx.user) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'who are you' });
  return next({ ctx: { user: ctx.user.toUpperCase(), role: 'member' as const } });
});

const child = t.router({ echo: t.procedure.input(z.string()).query(({ input }) => `lazy ${input}`) });

const router = t.router({
  greet: authed
    .meta({ tag: 'greeting' })
    .input(z.object({ name: z.string().min(1) }))
    .use(recorded)
    .query(({ ctx, input }) => ({ text: `hi ${input.name} from ${ctx.user} (${ctx.role})`, at: new Date(0) })),
  send: authed.input(z.object({ body: z.string() })).mutation(({ input }) => ({ length: input.body.length })),
  crash: t.procedure.mutation(() => {
    throw new Error('secret detail');
  }),
  silent: t.procedure.use((async () => undefined) as never).query(() => 'never'),
  rewrite: t.procedure
    .use(({ next }) => next({ input: { n: 41 } }))
    .use(({ next }) => next({ getRawInput: async () => ({ n: 2 }) }))
    .input(z.object({ n: z.number() }))
    .query(({ input }) => input.n),
  shaped: t.procedure
    .use(async ({ next }) => {
      const res = await next();
      return res.ok ? { ...res, data: { wrapped: res.data } } : res;
    })
    .query(() => 'inner'),
  ticks: t.procedure.input(z.object({ n: z.number() })).subscription(async function* ({ input }) {
    for (let i = 0; i < input.n; i++) yield i;
  }),
  // A procedure with its own caller (tRPC types it for direct calls, not for a router; it runs in one).
  custom: t.procedure
    .experimental_caller(async ({ invoke, _def }) => invoke({ ctx: { user: 'caller', seen: [] }, type: _def.type, path: 'custom', getRawInput: async () => null, input: null, signal: undefined, batchIndex: 0 }))
    .query(({ ctx }) => ctx.user) as unknown as AnyProcedure,
  lazy: experimental_lazy(async () => child),
});

type Outcome = { ok: true; value: unknown; seen: Record<string, unknown>[] } | { ok: false; code: string; message: string; cause: string | undefined; seen: Record<string, unknown>[] };

/** One call through `call`, its result or its error, and what the middlewares saw. */
async function run(call: typeof callProcedure, path: string, type: 'query' | 'mutation' | 'subscription', input: unknown, user: string | null = 'ann'): Promise<Outcome> {
  const ctx: Ctx = { user, seen: [] };
  try {
    let value = await call({ router, path, getRawInput: async () => input, ctx, type, signal: undefined, batchIndex: 0 });
    if (value && typeof value === 'object' && Symbol.asyncIterator in value) {
      const items: unknown[] = [];
      for await (const v of value as AsyncIterable<unknown>) items.push(v);
      value = items;
    }
    return { ok: true, value, seen: ctx.seen };
  } catch (err) {
    expect(err).toBeInstanceOf(TRPCError);
    const e = err as TRPCError;
    return { ok: false, code: e.code, message: e.message, cause: e.cause?.message, seen: ctx.seen };
  }
}

const CASES: [name: string, path: string, type: 'query' | 'mutation' | 'subscription', input: unknown, user?: string | null][] = [
  ['two middlewares, the context merged, meta and input', 'greet', 'query', { name: 'bob' }],
  ['a mutation', 'send', 'mutation', { body: 'hello' }],
  ['a middleware refuses', 'greet', 'query', { name: 'bob' }, null],
  ['the input refused', 'greet', 'query', { name: '' }],
  ['the input missing', 'send', 'mutation', undefined],
  ['a resolver throws', 'crash', 'mutation', null],
  ['a middleware returns nothing', 'silent', 'query', null],
  ['next() replaces the input and the raw input', 'rewrite', 'query', { n: 1 }],
  ['a middleware reshapes the result', 'shaped', 'query', null],
  ['a subscription', 'ticks', 'subscription', { n: 3 }],
  ['another type', 'send', 'query', { body: 'x' }],
  ['an unknown path', 'nope', 'query', null],
  ['a prototype key', 'constructor', 'query', null],
  ['experimental_caller', 'custom', 'query', null],
  ['a lazy router', 'lazy.echo', 'query', 'x'],
];

describe('callProcedure answers as callTRPCProcedure', () => {
  test.each(CASES)('%s', async (_name, path, type, input, user) => {
    const theirs = await run(callTRPCProcedure, path, type, input, user);
    const ours = await run(callProcedure, path, type, input, user);
    expect(ours).toEqual(theirs);
  });

  test('the cases say what they are about', async () => {
    expect(await run(callProcedure, 'greet', 'query', { name: 'bob' })).toEqual({
      ok: true,
      value: { text: 'hi bob from ANN (member)', at: new Date(0) },
      seen: [
        { keys: ['batchIndex', 'ctx', 'getRawInput', 'input', 'meta', 'next', 'path', 'router', 'signal', 'type'], path: 'greet', type: 'query', meta: { tag: 'greeting' }, input: undefined, ctx: { user: 'ann' } },
        { keys: ['batchIndex', 'ctx', 'getRawInput', 'input', 'meta', 'next', 'path', 'router', 'signal', 'type'], path: 'greet', type: 'query', meta: { tag: 'greeting' }, input: { name: 'bob' }, ctx: { user: 'ANN' } },
      ],
    });
    expect(await run(callProcedure, 'rewrite', 'query', { n: 1 })).toMatchObject({ ok: true, value: 2 });
    expect(await run(callProcedure, 'shaped', 'query', null)).toMatchObject({ ok: true, value: { wrapped: 'inner' } });
    expect(await run(callProcedure, 'silent', 'query', null)).toMatchObject({ ok: false, code: 'INTERNAL_SERVER_ERROR', message: expect.stringMatching(/No result from middlewares/) });
    expect(await run(callProcedure, 'crash', 'mutation', null)).toMatchObject({ ok: false, code: 'INTERNAL_SERVER_ERROR', cause: 'secret detail' });
    expect(await run(callProcedure, 'send', 'query', { body: 'x' })).toMatchObject({ ok: false, code: 'NOT_FOUND' });
    expect(await run(callProcedure, 'custom', 'query', null)).toMatchObject({ ok: true, value: 'caller' });
    expect(await run(callProcedure, 'lazy.echo', 'query', 'x')).toMatchObject({ ok: true, value: 'lazy x' });
  });

  test('plain procedures run the chain here; the others go through tRPC', async () => {
    for (const [path, type] of [['greet', 'query'], ['send', 'mutation'], ['ticks', 'subscription'], ['shaped', 'query']] as const) {
      expect(chainOf(router, path, type), path).not.toBeNull();
    }
    expect(chainOf(router, 'send', 'query')).toBeNull();
    expect(chainOf(router, 'nope', 'query')).toBeNull();
    expect(chainOf(router, 'constructor', 'query')).toBeNull();
    expect(chainOf(router, '__proto__', 'query')).toBeNull();
    expect(chainOf(router, 'custom', 'query')).toBeNull();
    const fresh = t.router({ lazy: experimental_lazy(async () => child) });
    expect(chainOf(fresh, 'lazy.echo', 'query')).toBeNull(); // not loaded yet
    const call = { router: fresh, path: 'lazy.echo', getRawInput: async () => 'y', ctx: { user: null, seen: [] }, type: 'query', signal: undefined, batchIndex: 0 } as const;
    expect(await callProcedure(call)).toBe('lazy y');
    expect(chainOf(fresh, 'lazy.echo', 'query')).not.toBeNull(); // loaded: its procedures are in the record now
  });
});
