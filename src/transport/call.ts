import { type AnyRouter, callTRPCProcedure, getTRPCErrorFromUnknown, TRPCError } from '@trpc/server';
import { middlewareMarker } from '@trpc/server/unstable-core-do-not-import';

/**
 * `callTRPCProcedure` with tRPC's middleware chain run here, with the same contract: each middleware
 * gets the call's options plus `meta`, `input` and `next`; `next(opts?)` runs the next one with the
 * context merged (`{ ...ctx, ...opts.ctx }`), the input and `getRawInput` replaced when given; a
 * throw becomes `{ ok: false, error }`; the procedure's result is the last middleware's `data`.
 *
 * Why: tRPC's published build copies those option objects with Babel's `_objectSpread2` helper
 * (own keys, `forEach`, `defineProperty` per key), several copies per middleware level. Run
 * with native spreads, a mutation with one middleware and a zod input costs 1.6 µs of CPU instead of
 * 11.2 (`npm run bench:call`); in the chat's small rooms the helper alone was the fourth function of
 * the server's profile (`npm run bench -- --perf`).
 *
 * Only a plain procedure of the router's own record with the call's type takes this path (the
 * resolver's `middlewares` list, `procedure: true`); a lazy router not loaded yet, an unknown path
 * or another type (NOT_FOUND), and a procedure with `experimental_caller` go through tRPC's own
 * `callTRPCProcedure`, as do procedures of a tRPC version whose internals differ.
 */
export type CallOptions = Parameters<typeof callTRPCProcedure>[0];

interface ChainDef {
  middlewares: Middleware[];
  meta: unknown;
  type: string;
  caller?: unknown;
}

type Result = { ok: true; data: unknown } | { ok: false; error: TRPCError };
type Middleware = (opts: Record<string, unknown>) => Promise<Result | undefined>;
interface NextOptions {
  ctx?: object;
  input?: unknown;
  getRawInput?: () => Promise<unknown>;
}

/** The procedure's chain when this file can run it (see above), else null. */
export function chainOf(router: AnyRouter, path: string, type: string): ChainDef | null {
  const procedures = router._def.procedures as Record<string, unknown>;
  if (!Object.hasOwn(procedures, path)) return null;
  const proc = procedures[path] as ((...args: never[]) => unknown) & { procedure?: unknown; _def?: Partial<ChainDef> };
  if (typeof proc !== 'function' || proc.procedure !== true) return null;
  const def = proc._def;
  if (!def || def.type !== type || def.caller || !Array.isArray(def.middlewares)) return null;
  return def as ChainDef;
}

async function callRecursive(index: number, def: ChainDef, opts: Record<string, unknown>): Promise<Result | undefined> {
  try {
    const middleware = def.middlewares[index]!;
    return await middleware({
      ...opts,
      meta: def.meta,
      input: opts.input,
      next(nextOpts?: NextOptions) {
        return callRecursive(index + 1, def, {
          ...opts,
          ctx: nextOpts?.ctx ? { ...(opts.ctx as object), ...nextOpts.ctx } : opts.ctx,
          input: nextOpts && 'input' in nextOpts ? nextOpts.input : opts.input,
          getRawInput: nextOpts?.getRawInput ?? opts.getRawInput,
        });
      },
    });
  } catch (cause) {
    return { ok: false, error: getTRPCErrorFromUnknown(cause), marker: middlewareMarker } as Result;
  }
}

/** Calls the procedure at `opts.path` (tRPC's `callTRPCProcedure`, same result and errors). */
export async function callProcedure(opts: CallOptions): Promise<unknown> {
  const def = chainOf(opts.router, opts.path, opts.type);
  if (def === null) return callTRPCProcedure(opts);
  const result = await callRecursive(0, def, opts as unknown as Record<string, unknown>);
  if (!result) throw new TRPCError({ code: 'INTERNAL_SERVER_ERROR', message: 'No result from middlewares - did you forget to `return next()`?' });
  if (!result.ok) throw result.error;
  return result.data;
}
