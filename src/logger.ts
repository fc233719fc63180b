import { pino, stdSerializers, type DestinationStream, type Logger as PinoLogger } from 'pino';
import { requestFields } from './util/request-scope.js';

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

/** The process logger (JSON lines on stdout, or into `destination`, e.g. a test's capture). */
export function createLogger(level: string, pretty = false, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { pid: process.pid },
    serializers: { err: safeError, error: safeError },
    // Lines written while an HTTP request is handled name it (`reqId`); WebSocket lines name their
    // connection (`conn`). A fresh object per line: pino merges each line's fields into what this
    // returns, and the scope's own object would carry them into every later line of the request.
    mixin: () => {
      const request = requestFields();
      return request ? { reqId: request.reqId } : {};
    },
    redact: { paths: ['token', '*.token', 'authorization', '*.authorization', 'body', '*.body', 'payload', '*.payload'], censor: '[redacted]' },
    ...(pretty && !destination ? { transport: { target: 'pino-pretty', options: { colorize: true } } } : {}),
  };
  return destination ? pino(options, destination) : pino(options);
}
