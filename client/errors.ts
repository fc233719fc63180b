/**
 * Error helpers shared by the client library and the CLI. No server imports: errors arrive as
 * `TRPCClientError`s whose `data.code` is the tRPC error code key (`NOT_FOUND`, `UNAUTHORIZED`, ...).
 */
import { TRPCClientError } from '@trpc/client';
import type { AppErrorCode } from '../src/domain/errors.js';

/** The server's domain error codes (type-only import), plus what tRPC and the client add. */
export type ErrorCode = AppErrorCode | 'INTERNAL_SERVER_ERROR' | 'TIMEOUT' | (string & {});

/** The tRPC error code of a server answer, or null for transport failures (refused, reset, closed). */
export function errorCode(err: unknown): ErrorCode | null {
  if (err instanceof TRPCClientError) {
    const data = err.data as { code?: unknown } | undefined;
    if (data && typeof data.code === 'string') return data.code;
    const shape = err.shape as { data?: { code?: unknown } } | undefined;
    if (shape?.data && typeof shape.data.code === 'string') return shape.data.code;
  }
  return null;
}

/** Milliseconds the server asked us to wait (TOO_MANY_REQUESTS), when it said so. */
export function retryAfterMs(err: unknown): number | null {
  if (!(err instanceof TRPCClientError)) return null;
  const v = (err.data as { retryAfterMs?: unknown } | undefined)?.retryAfterMs;
  return typeof v === 'number' ? v : null;
}

/**
 * Worth retrying later: the server is unavailable or busy, or the transport failed before any
 * answer. Authorization, validation and not-found answers are final.
 */
export function isTransient(err: unknown): boolean {
  const code = errorCode(err);
  if (code === null) return true;
  return code === 'SERVICE_UNAVAILABLE' || code === 'TOO_MANY_REQUESTS' || code === 'INTERNAL_SERVER_ERROR' || code === 'TIMEOUT';
}

/** The innermost system error code of a failed fetch or socket (`ECONNREFUSED`, `ENOTFOUND`, ...). */
export function systemErrorCode(err: unknown): string | null {
  let cur: unknown = err;
  for (let depth = 0; cur && depth < 8; depth++) {
    const c = cur as { code?: unknown; cause?: unknown; errors?: unknown[] };
    if (typeof c.code === 'string' && /^E[A-Z_]+$/.test(c.code)) return c.code;
    if (Array.isArray(c.errors) && c.errors.length > 0) {
      const inner = systemErrorCode(c.errors[0]);
      if (inner) return inner;
    }
    cur = c.cause;
  }
  return null;
}
