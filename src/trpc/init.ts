import { ConnectionException } from '@mikro-orm/core';
import { initTRPC, TRPCError } from '@trpc/server';
import superjson from 'superjson';
import { isExpired } from '../auth/jwt.js';
import { AppError } from '../domain/errors.js';
import type { Context } from './context.js';
import { TRPC_ERROR_CODES_BY_KEY } from '@trpc/server/rpc';

/** Converts domain and infrastructure errors to typed TRPCErrors (one place). */
export function toTRPCError(err: unknown): TRPCError | null {
  if (err instanceof TRPCError) {
    return err.cause ? toTRPCError(err.cause) ?? err : err;
  }
  if (err instanceof AppError) return new TRPCError({ code: err.code, message: err.message, cause: err });
  if (err instanceof ConnectionException || isConnectionError(err)) {
    return new TRPCError({ code: 'SERVICE_UNAVAILABLE', message: 'database unavailable, retry later', cause: err as Error });
  }
  return null;
}

function isConnectionError(err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', '57P01', '57P03', '08006', '08001'].includes(code)) return true;
  // node-postgres reports a connection the server (or the network) dropped without a code, and
  // MikroORM wraps it in a plain DriverException.
  return typeof message === 'string' && /^(Connection terminated|timeout exceeded when trying to connect)/.test(message);
}

const t = initTRPC.context<Context>().create({
  // superjson on the wire; the WebSocket transport serializes shared fan-out events once (frames.ts).
  transformer: superjson,
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
    return {
      ...shape,
      message: zodIssues ? zodIssues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ') : shape.message,
      data: { ...shape.data, stack: undefined, issues: zodIssues, retryAfterMs },
    };
  },
});

export const router = t.router;
export const createCallerFactory = t.createCallerFactory;

const errors = t.middleware(async ({ next }) => {
  const res = await next();
  if (!res.ok) {
    const mapped = toTRPCError(res.error);
    if (mapped && mapped !== res.error) throw mapped;
  }
  return res;
});

const timing = t.middleware(async ({ ctx, path, type, next }) => {
  const observe = ctx.services.deps.observeProcedure;
  if (!observe || type === 'subscription') return next();
  const start = performance.now();
  const res = await next();
  observe(path, type, res.ok ? 'OK' : res.error.code, (performance.now() - start) / 1000);
  return res;
});

export const publicProcedure = t.procedure.use(timing).use(errors);

export const authedProcedure = publicProcedure.use(({ ctx, next }) => {
  const actor = ctx.session?.actor ?? ctx.actor;
  if (!actor) {
    ctx.services.deps.counters.authFailures++;
    throw new TRPCError({ code: 'UNAUTHORIZED', message: ctx.authError ?? 'missing access token' });
  }
  if (isExpired(actor)) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'access token expired' });
  return next({ ctx: { ...ctx, actor } });
});
