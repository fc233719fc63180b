import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { AuthError, verifyToken } from '../auth/jwt.js';
import type { Actor } from '../services/actor.js';
import type { Services } from '../services/index.js';

export interface Context {
  actor: Actor | null;
  /** Why there is no actor (shown in UNAUTHORIZED errors). */
  authError: string | null;
  services: Services;
}

function bearer(req: IncomingMessage | undefined): string | null {
  const h = req?.headers?.authorization;
  if (!h) return null;
  const m = /^Bearer\s+(.+)$/i.exec(h);
  return m?.[1]?.trim() ?? null;
}

/**
 * Builds the context for an HTTP request (Authorization: Bearer) or a WebSocket connection
 * (connectionParams.token; runs once per connection). Never throws: a bad token yields a null
 * actor, rejected by the authed procedures, so clients do not reconnect in a loop.
 */
export function contextFactory(services: Services) {
  return async (opts: {
    req?: IncomingMessage;
    res?: unknown;
    info?: { connectionParams?: Record<string, string | undefined> | null };
  }): Promise<Context> => {
    const params = opts.info?.connectionParams;
    const token = (params && typeof params.token === 'string' ? params.token : null) ?? bearer(opts.req);
    if (!token) return { actor: null, authError: 'missing access token', services };
    try {
      const actor = verifyToken(token, services.deps.config.jwtSecret);
      await services.users.touch(actor).catch((err) => services.deps.log.warn({ err }, 'user upsert failed'));
      if (isWebSocket(opts.res)) trackPresence(services, actor, opts.res);
      return { actor, authError: null, services };
    } catch (err) {
      return { actor: null, authError: err instanceof AuthError ? err.message : 'invalid access token', services };
    }
  };
}

interface SocketLike {
  readyState: number;
  once(event: 'close', fn: () => void): unknown;
  ping: unknown;
}

function isWebSocket(res: unknown): res is SocketLike {
  return !!res && typeof (res as SocketLike).once === 'function' && typeof (res as SocketLike).ping === 'function';
}

/** A user is online while any of their WebSocket connections is open (on any node). */
function trackPresence(services: Services, actor: NonNullable<Context['actor']>, ws: SocketLike): void {
  const connId = randomUUID();
  const warn = (err: unknown) => services.deps.log.warn({ err }, 'presence update failed');
  const connected = services.presence.connected(actor, connId).catch(warn);
  ws.once('close', () => void connected.then(() => services.presence.disconnected(connId)).catch(warn));
}
