import { AsyncLocalStorage } from 'node:async_hooks';

/** The HTTP request whose work is running (its id), carried through that work's async calls. */
const scope = new AsyncLocalStorage<{ reqId: string }>();

/** Runs `fn` (an HTTP request's handling) so that every log line written for it carries `reqId` (src/logger.ts). */
export function inRequest<T>(reqId: string, fn: () => T): T {
  return scope.run({ reqId }, fn);
}

/**
 * Runs `fn` outside any request: for what outlives the request that happened to start it, such as
 * a pooled connection's socket (its callbacks would otherwise keep that request's id for good).
 */
export function outsideRequest<T>(fn: () => T): T {
  return scope.exit(fn);
}

/** The fields naming the request whose work is running (`{ reqId }`), or undefined outside one. */
export function requestFields(): { reqId: string } | undefined {
  return scope.getStore();
}
