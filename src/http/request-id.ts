import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

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
