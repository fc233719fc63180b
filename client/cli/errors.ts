/** Turns any failure into one clear line for the terminal (never a stack trace). */
import { TRPCClientError } from '@trpc/client';
import { errorCode, systemErrorCode } from '../errors.js';
import { clean } from './terminal.js';

/** An error whose message is already what the user should read. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

const SYSTEM_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused (is the server running?)',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ECONNRESET: 'connection reset',
  ETIMEDOUT: 'connection timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  UND_ERR_CONNECT_TIMEOUT: 'connection timed out',
};

export function describeError(err: unknown, url: string): string {
  return oneLine(clean(describe(err, url)));
}

function describe(err: unknown, url: string): string {
  if (err instanceof CliError) return err.message;
  if (err instanceof TRPCClientError) {
    const code = errorCode(err);
    const msg = err.message;
    switch (code) {
      case null: {
        const sys = systemErrorCode(err);
        if (sys) return `cannot reach the chat server at ${url}: ${SYSTEM_REASONS[sys] ?? sys}`;
        if (/JSON|transform|Unexpected token|Bad Request|Not Found/i.test(msg)) {
          return `${url} did not answer like a chat server (check --url; the API lives at /trpc)`;
        }
        return `cannot reach the chat server at ${url}: ${innermostMessage(err)}`;
      }
      case 'UNAUTHORIZED':
        return `not authorized by ${url}: ${msg} (run \`chat login\` or pass --token)`;
      case 'BAD_REQUEST':
        return `invalid input: ${msg}`;
      case 'TOO_MANY_REQUESTS':
        return `rate limited: ${msg}`;
      case 'PAYLOAD_TOO_LARGE':
        // The server refused the request's size before reading it: its message is often just the code.
        return `too large for the server${msg && msg !== code ? `: ${msg}` : ''} (a message's text is at most 4000 characters; send a file instead)`;
      case 'SERVICE_UNAVAILABLE':
        return `the server is unavailable: ${msg}`;
      case 'INTERNAL_SERVER_ERROR':
        return `the server failed: ${msg}`;
      default:
        return msg;
    }
  }
  if (err instanceof Error) {
    const sys = systemErrorCode(err);
    if (sys && SYSTEM_REASONS[sys]) return `cannot reach the chat server at ${url}: ${SYSTEM_REASONS[sys]}`;
    return err.message;
  }
  return String(err);
}

function innermostMessage(err: unknown): string {
  let msg = err instanceof Error ? err.message : String(err);
  let cur: unknown = err;
  for (let depth = 0; cur instanceof Error && depth < 8; depth++) {
    if (cur.message) msg = cur.message;
    cur = cur.cause;
  }
  return msg;
}

export function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}
