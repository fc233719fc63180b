import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { AuthError, verifyToken } from '../auth/jwt.js';
import type { Actor } from '../services/actor.js';
import type { Services } from '../services/index.js';
import { CloseCode } from '../realtime/close-codes.js';
import type { Session, SessionSocket } from '../services/sessions.js';

export interface Context {
  actor: Actor | null;
  /** Why there is no actor (shown in UNAUTHORIZED errors). */
  authError: string | null;
  services: Services;
  /** WebSocket connections only: the live session (its actor may be swapped by auth.refresh). */
  session?: Session;
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
      if (await services.sessions.isRevoked(actor)) {
        services.deps.counters.authFailures++;
        return { actor: null, authError: 'access token revoked', services };
      }
      await services.users.touch(actor).catch((err) => services.deps.log.warn({ err }, 'user upsert failed'));
      if (isWebSocket(opts.res)) {
        const ws = opts.res;
        const max = services.deps.config.limits.connectionsPerUser;
        const open = await services.presence.connections(actor).catch(() => 0);
        if (open >= max) {
          services.deps.counters.rateLimited++;
          ws.close(CloseCode.TooManyConnections, `too many connections for this user (at most ${max})`);
          return { actor: null, authError: 'too many connections', services };
        }
        const session = services.sessions.open(actor, ws);
        // Registered before the first call runs, so presence.get right after connecting is right.
        await trackPresence(services, actor, ws);
        return { actor, authError: null, services, session };
      }
      return { actor, authError: null, services };
    } catch (err) {
      return { actor: null, authError: err instanceof AuthError ? err.message : 'invalid access token', services };
    }
  };
}

interface SocketLike extends SessionSocket {
  readyState: number;
  ping: unknown;
}

function isWebSocket(res: unknown): res is SocketLike {
  return !!res && typeof (res as SocketLike).once === 'function' && typeof (res as SocketLike).ping === 'function';
}

/** A user is online while any of their WebSocket connections is open (on any node). */
async function trackPresence(services: Services, actor: NonNullable<Context['actor']>, ws: SocketLike): Promise<void> {
  const connId = randomUUID();
  const warn = (err: unknown) => services.deps.log.warn({ err }, 'presence update failed');
  const connected = services.presence.connected(actor, connId).catch(warn);
  ws.once('close', () => void connected.then(() => services.presence.disconnected(connId)).catch(warn));
  await connected;
}
