import { pino, stdSerializers, type DestinationStream, type Logger as PinoLogger } from 'pino';
import { requestFields } from './util/request-scope.js';

export type Logger = PinoLogger;

/**
 * Fields of an error that are written to the log: what it is and where it came from, never the
 * data it was about. A driver error may carry the statement's parameters, PostgreSQL's `detail`
 * ("Failing row contains (...)") the row's values, and ioredis's `command` the command's arguments
 * (a published event, with its message body): none of them is kept.
 */
const ERROR_FIELDS = ['type', 'message', 'stack', 'code', 'errno', 'syscall', 'address', 'port', 'severity', 'routine', 'constraint', 'table', 'column', 'statusCode'] as const;

/**
 * Error serializer that never writes SQL with its parameters (which may hold message bodies) to
 * the log: driver errors are reported as `<query> - <reason>`, so only the reason is kept. Only
 * ERROR_FIELDS are kept, a Redis command by its name, causes and aggregated errors alike.
 */
function safeError(err: unknown, depth = 0): Record<string, unknown> {
  const full = stdSerializers.err(err as Error) as Record<string, unknown>;
  const s: Record<string, unknown> = {};
  for (const f of ERROR_FIELDS) if (full[f] !== undefined) s[f] = full[f];
  if (typeof s.message === 'string' && s.message.includes(' - ') && /^\s*(select|insert|update|delete|with)\b/i.test(s.message)) {
    s.message = `[query] - ${s.message.split(' - ').pop()}`;
    if (typeof s.stack === 'string') s.stack = `${s.type}: ${s.message}`;
  }
  const command = (err as { command?: { name?: unknown } } | null)?.command;
  if (command && typeof command.name === 'string') s.command = command.name;
  if (depth < 5) {
    const cause = (err as { cause?: unknown } | null)?.cause;
    if (cause instanceof Error) s.cause = safeError(cause, depth + 1);
    const errors = (err as { errors?: unknown } | null)?.errors;
    if (Array.isArray(errors)) s.errors = errors.slice(0, 10).map((e) => (e instanceof Error ? safeError(e, depth + 1) : String(e)));
  }
  return s;
}

/** The process logger (JSON lines on stdout, or into `destination`, e.g. a test's capture). */
export function createLogger(level: string, pretty = false, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { pid: process.pid },
    serializers: { err: (e: unknown) => safeError(e), error: (e: unknown) => safeError(e) },
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
