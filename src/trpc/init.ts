import { ConnectionException } from '@mikro-orm/core';
import { initTRPC, TRPCError } from '@trpc/server';
import { transformer } from './transformer.js';
import { isAdmin, isExpired, isIntegration } from '../domain/actor.js';
import { keyOf } from '../domain/ids.js';
import { AppError } from '../domain/errors.js';
import type { Context } from './context.js';
import { TRPC_ERROR_CODES_BY_KEY } from '@trpc/server/rpc';

/** Converts domain and infrastructure errors to typed TRPCErrors (one place). */
export function toTRPCError(err: unknown): TRPCError | null {
  if (err instanceof TRPCError) {
    return err.cause ? toTRPCError(err.cause) ?? err : err;
  }
  if (err instanceof AppError) return new TRPCError({ code: err.code, message: err.message, cause: err });
  const outage = outageOf(err);
  if (outage) return new TRPCError({ code: 'SERVICE_UNAVAILABLE', message: OUTAGE_MESSAGE[outage], cause: err as Error });
  return null;
}

const OUTAGE_MESSAGE = {
  database: 'database unavailable, retry later',
  busy: 'the database did not answer in time (a statement ran past DB_STATEMENT_TIMEOUT_MS, nothing of it was written), retry later',
  redis: 'redis unavailable, retry later',
  network: 'a backing store is unreachable, retry later',
} as const;

/** PostgreSQL's codes of a server going away or refusing connections (admin shutdown, crash, startup). */
const PG_CONNECTION_CODES = new Set(['57P01', '57P02', '57P03', '08000', '08001', '08003', '08006']);
/** Socket errors: whichever store the call was waiting for cannot be reached. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * The store an error says is out of reach (or too slow: a statement cancelled at its timeout), or
 * null for any other error. An outage of PostgreSQL or Redis is SERVICE_UNAVAILABLE on every kind of
 * call (retryable), never INTERNAL_SERVER_ERROR.
 * Looks through `cause` (drivers and libraries wrap the socket's error).
 */
export function outageOf(err: unknown, depth = 0): keyof typeof OUTAGE_MESSAGE | null {
  if (!err || typeof err !== 'object' || depth > 4) return null;
  if (err instanceof ConnectionException) return 'database';
  const { code, message, name, cause } = err as { code?: unknown; message?: unknown; name?: unknown; cause?: unknown };
  if (typeof code === 'string' && PG_CONNECTION_CODES.has(code)) return 'database';
  // query_canceled: PostgreSQL cancelled a statement at DB_STATEMENT_TIMEOUT_MS (a lock held long, an
  // overloaded server); its transaction was rolled back, so the call can be made again.
  if (code === '57014') return 'busy';
  // node-postgres reports a connection the server (or the network) dropped without a code, and
  // MikroORM wraps it in a plain DriverException.
  if (typeof message === 'string' && /^(Connection terminated|timeout exceeded when trying to connect)/.test(message)) return 'database';
  // ioredis: a command that outlived its retries, or sent on a connection that closed for good.
  if (name === 'MaxRetriesPerRequestError') return 'redis';
  if (typeof message === 'string' && /^(Connection is closed\.|Stream isn't writeable)/.test(message)) return 'redis';
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return 'network';
  return cause !== err ? outageOf(cause, depth + 1) : null;
}

const t = initTRPC.context<Context>().create({
  // superjson on the wire; the WebSocket transport serializes shared fan-out events once (frames.ts).
  transformer,
  // Subscriptions are served over WebSocket only. tRPC also serves them over HTTP (SSE) by default,
  // and such a stream escaped every guard of a live session: token expiry, revocation,
  // subscriptions per connection and the slow-consumer limits (docs/SECURITY.md).
  sse: { enabled: false },
  errorFormatter({ shape, error }) {
    // Errors thrown inside a subscription's generator do not pass the middleware: map them here.
    const mapped = error.code === 'INTERNAL_SERVER_ERROR' ? toTRPCError(error.cause) : null;
    const zodIssues =
      error.code === 'BAD_REQUEST' && error.cause && 'issues' in error.cause
        ? (error.cause as { issues: { path: PropertyKey[]; message: string }[] }).issues.map((i) => ({
            path: i.path.map(String).join('.'),
            message: i.message,
          }))
        : null;
    const cause = (mapped ?? error).cause;
    const retryAfterMs = cause instanceof AppError && cause.retryAfterMs !== undefined ? cause.retryAfterMs : null;
    if (mapped) {
      return {
        ...shape,
        message: mapped.message,
        code: TRPC_ERROR_CODES_BY_KEY[mapped.code],
        data: { ...shape.data, code: mapped.code, stack: undefined, issues: null, retryAfterMs },
      };
    }
    // An unexpected error keeps its text in the server's log: a driver's message (SQL, constraint
    // and column names, values) never reaches a client.
    const internal = error.code === 'INTERNAL_SERVER_ERROR';
    return {
      ...shape,
      message: internal ? 'internal server error' : zodIssues ? zodIssues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ') : shape.message,
      data: { ...shape.data, stack: undefined, issues: zodIssues, retryAfterMs },
    };
  },
});

export const router = t.router;
export const createCallerFactory = t.createCallerFactory;

type Observers = Context['services']['deps']['observers'];

/**
 * Times a call (not subscriptions) and maps what it failed with to a typed TRPCError (`toTRPCError`).
 * One function for the two base middlewares below: every middleware level costs tRPC a spread of
 * the call's options and of its result (a measurable part of a send's CPU), so the hot procedures
 * go through one level instead of three.
 */
async function observed<R extends { ok: boolean; error?: unknown }>(observers: Observers, path: string, type: string, run: () => Promise<R>): Promise<R> {
  const start = type === 'subscription' ? 0 : performance.now();
  let code = 'OK';
  try {
    const res = await run();
    if (!res.ok) {
      const mapped = toTRPCError(res.error);
      if (mapped && mapped !== res.error) throw mapped;
      code = (res.error as TRPCError).code;
    }
    return res;
  } catch (err) {
    const mapped = toTRPCError(err) ?? err;
    code = mapped instanceof TRPCError ? mapped.code : 'INTERNAL_SERVER_ERROR';
    throw mapped;
  } finally {
    if (type !== 'subscription') observers.procedure(path, type, code, (performance.now() - start) / 1000);
  }
}

export const publicProcedure = t.procedure.use(({ ctx, path, type, next }) => observed(ctx.services.deps.observers, path, type, () => next()));

export const authedProcedure = t.procedure.use(({ ctx, path, type, next }) =>
  observed(ctx.services.deps.observers, path, type, async () => {
    const actor = ctx.session?.actor ?? ctx.actor;
    if (!actor) {
      ctx.services.deps.counters.authFailures++;
      throw new TRPCError({ code: 'UNAUTHORIZED', message: ctx.authError ?? 'missing access token' });
    }
    if (isExpired(actor)) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'access token expired' });
    // Reads are budgeted per user too (RATE_READS_PER_10S, all nodes), before any input is parsed.
    // A subscription is a read: its access check and its replay are queries, and a loop of
    // subscribe and stop would otherwise cost the database without any bound.
    if (type === 'query' || type === 'subscription') await ctx.services.limits.consume('read', keyOf(actor.tenant, actor.id));
    const res = await next({ ctx: { ...ctx, actor } });
    // With read replicas: the caller's next reads across rooms must include this write (read-your-writes).
    if (type === 'mutation' && res.ok && ctx.services.reads.enabled) await ctx.services.reads.wrote(keyOf(actor.tenant, actor.id));
    return res;
  }),
);

/**
 * Procedures of the tenant's integration (service and admin tokens): the role is checked before
 * the input is parsed, so nobody else makes the server validate a large input. The services check
 * the same rule (`isIntegration`) again.
 */
export const integrationProcedure = authedProcedure.use(({ ctx, next, path }) => {
  if (!isIntegration(ctx.actor)) throw new TRPCError({ code: 'FORBIDDEN', message: `only tenant admins and service tokens may call ${path}` });
  return next();
});

/**
 * Room management and moderation (members, roles, mutes, bans, updates, archive, delete) and
 * `device.register`/`remove`, `notify.setPreferences`/`setRoomPreference` and `auth.refresh`/`revoke`: budgeted per user with the `action` limit (RATE_ACTIONS_PER_10S, all nodes),
 * before the input is parsed.
 */
export const managementProcedure = authedProcedure.use(async ({ ctx, next }) => {
  await ctx.services.limits.consume('action', keyOf(ctx.actor.tenant, ctx.actor.id));
  return next();
});

/**
 * Integration procedures that change an endpoint (`webhook.create`/`update` resolve the URL's
 * host; `delete`, `rotateSecret`) or many rows (`inbox.notify`): the role first, then the caller's `action` budget, before the input is
 * parsed.
 */
export const integrationManagementProcedure = integrationProcedure.use(async ({ ctx, next }) => {
  await ctx.services.limits.consume('action', keyOf(ctx.actor.tenant, ctx.actor.id));
  return next();
});

/**
 * Procedures of tenant admins only (`admin.*`): the role is checked before the input is parsed.
 * Their reads (exports, the audit trail) spend the read budget like every query; their changes
 * (`admin.eraseUser`: a transaction over every row of a user) the `action` budget.
 */
export const adminProcedure = authedProcedure.use(async ({ ctx, next, path, type }) => {
  if (!isAdmin(ctx.actor)) throw new TRPCError({ code: 'FORBIDDEN', message: `only tenant admins may call ${path}` });
  if (type === 'mutation') await ctx.services.limits.consume('action', keyOf(ctx.actor.tenant, ctx.actor.id));
  return next();
});
