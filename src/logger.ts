import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { pino, stdSerializers, type DestinationStream, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

/**
 * Error serializer that never writes SQL with its parameters (which may hold message bodies) to
 * the log: driver errors are reported as `<query> - <reason>`, so only the reason is kept.
 */
function safeError(err: unknown) {
  const s = stdSerializers.err(err as Error) as Record<string, unknown>;
  if (typeof s.message === 'string' && s.message.includes(' - ') && /^\s*(select|insert|update|delete|with)\b/i.test(s.message)) {
    s.message = `[query] - ${s.message.split(' - ').pop()}`;
    if (typeof s.stack === 'string') s.stack = `${s.type}: ${s.message}`;
    delete s.sql;
    delete s.params;
  }
  return s;
}

/** The HTTP request whose work is running (its id), carried through that work's async calls. */
const requestScope = new AsyncLocalStorage<{ reqId: string }>();

/** An `X-Request-Id` taken as given: a proxy's or a client's id of up to 128 plain characters. */
const REQUEST_ID = /^[\w.:+/=-]{1,128}$/;

/**
 * The id of an HTTP request: its `X-Request-Id` when it is a plain token of at most 128 characters
 * (set by a proxy or the client, so one id follows the request through every hop), else a new UUID.
 */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
}

/** Runs `fn` (an HTTP request's handling) so that every log line written for it carries `reqId`. */
export function inRequest<T>(reqId: string, fn: () => T): T {
  return requestScope.run({ reqId }, fn);
}

/** The process logger (JSON lines on stdout, or into `destination`, e.g. a test's capture). */
export function createLogger(level: string, pretty = false, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { pid: process.pid },
    serializers: { err: safeError, error: safeError },
    // Lines written while an HTTP request is handled name it (`reqId`); WebSocket lines name their connection (`conn`).
    mixin: () => requestScope.getStore() ?? {},
    redact: { paths: ['token', '*.token', 'authorization', '*.authorization', 'body', '*.body', 'payload', '*.payload'], censor: '[redacted]' },
    ...(pretty && !destination ? { transport: { target: 'pino-pretty', options: { colorize: true } } } : {}),
  };
  return destination ? pino(options, destination) : pino(options);
}
