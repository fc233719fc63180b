import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { TRPCError } from '@trpc/server';
import { AuthError } from '../auth/errors.js';
import { clientAddress } from '../http/client-address.js';
import { type RefusedSocket, refuseSocket } from '../http/refusals.js';
import type { Actor } from '../domain/actor.js';
import type { Services } from '../services/index.js';
import { CloseCode } from '../domain/close-codes.js';
import type { Session, SessionClosed, SessionSocket } from '../services/sessions.js';
import { clientInfoOf } from '../domain/client-info.js';

/**
 * The context of every call. The members tagged internal are left out of the client package's
 * declarations (built with `stripInternal`): the `AppRouter` type a frontend imports carries the
 * router's procedures, not the server's services and their libraries.
 */
export interface Context {
  actor: Actor | null;
  /** Why there is no actor (shown in UNAUTHORIZED errors). */
  authError: string | null;
  /** @internal */
  services: Services;
  /**
   * WebSocket connections only: the live session (its actor may be swapped by auth.refresh).
   * @internal
   */
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
 * (connectionParams.token; runs once per connection). A bad token yields a null actor, rejected by
 * the authed procedures, so clients do not reconnect in a loop. The one throw: SERVICE_UNAVAILABLE
 * when the token cannot be checked now (the identity provider's keys cannot be loaded). HTTP calls
 * answer 503; a WebSocket gets the error and is closed, and its client reconnects with backoff and
 * authenticates again.
 */
export function contextFactory(services: Services) {
  const warn = (err: unknown) => services.deps.log.warn({ err }, 'presence update failed');
  // What a WebSocket's close does once its session is forgotten: one function for every connection
  // (a closure per connection kept this call's whole scope alive for the connection's life).
  const closed: SessionClosed = (s, code) => {
    services.deps.log.info({ audit: 'ws_close', conn: s.connId, tenant: s.actor.tenant, user: s.actor.id, code }, 'connection closed');
    void services.presence.disconnected(s.connId).catch(warn);
  };
  return async (opts: {
    req?: IncomingMessage;
    res?: unknown;
    info?: { connectionParams?: Record<string, string | undefined> | null };
  }): Promise<Context> => {
    const params = opts.info?.connectionParams;
    const token = (params && typeof params.token === 'string' ? params.token : null) ?? bearer(opts.req);
    if (!token) return { actor: null, authError: 'missing access token', services };
    const audit = services.deps.log;
    const ip = opts.req ? clientAddress(opts.req, services.deps.config.trustProxy) : 'unknown';
    try {
      const actor = await services.auth.authenticate(token, ip);
      // The user's row is brought up to date while the connection is admitted (both are awaited
      // before the first call runs).
      const touched = services.users.touch(actor).catch((err) => services.deps.log.warn({ err }, 'user upsert failed'));
      if (isWebSocket(opts.res)) {
        const ws = opts.res;
        const max = services.deps.config.limits.connectionsPerUser;
        const connId = randomUUID();
        // Counted and registered in one atomic step on all nodes: connections opened at the same
        // moment cannot all slip under the limit. Registered before the first call runs, so
        // presence.get right after connecting is right. Store unreachable: admitted, as before.
        const [admitted] = await Promise.all([
          services.presence.admit(actor, connId, max).catch(async (err: unknown) => {
            warn(err);
            await services.presence.connected(actor, connId).catch(warn);
            return true;
          }),
          touched,
        ]);
        if (!admitted) {
          services.deps.counters.rateLimited++;
          // Dropped if its close handshake has not ended within REFUSED_CLOSE_MS (ws waits 30 s).
          refuseSocket(ws, CloseCode.TooManyConnections, `too many connections for this user (at most ${max})`);
          return { actor: null, authError: 'too many connections', services };
        }
        // The client may have left during the awaits above: its 'close' has fired already and would
        // never release what is registered now (a ghost holding a connection slot and presence).
        if (ws.readyState !== WS_OPEN) {
          await services.presence.disconnected(connId).catch(warn);
          return { actor: null, authError: 'connection closed', services };
        }
        // Revoked while it was being admitted (the revocation found no session of it to close):
        // checked in the same tick as `open` below, so a later one finds the session instead.
        if (services.sessions.revokedHere(actor)) {
          ws.close(CloseCode.Revoked, 'sessions revoked');
          await services.presence.disconnected(connId).catch(warn);
          return { actor: null, authError: 'token revoked', services };
        }
        const client = clientInfoOf(params);
        const session = services.sessions.open(actor, ws, client, connId, closed);
        audit.info({ audit: 'ws_open', conn: connId, tenant: actor.tenant, user: actor.id, ip, ...client }, 'connection opened');
        return { actor, authError: null, services, session };
      }
      await touched;
      return { actor, authError: null, services };
    } catch (err) {
      if (err instanceof AuthError && err.unavailable) {
        audit.warn({ err: err.cause, ip }, 'access token not verified: identity provider keys unavailable');
        throw new TRPCError({ code: 'SERVICE_UNAVAILABLE', message: err.message, cause: err });
      }
      if (err instanceof AuthError && err.actor) {
        const { tenant, id: user } = err.actor;
        services.deps.counters.authFailures++;
        audit.warn({ audit: 'auth_failed', reason: 'revoked', tenant, user, ip }, 'revoked token refused');
        return { actor: null, authError: err.message, services };
      }
      const reason = err instanceof AuthError ? err.message : 'invalid access token';
      audit.warn({ audit: 'auth_failed', reason, ip }, 'token refused');
      return { actor: null, authError: reason, services };
    }
  };
}

const WS_OPEN = 1;

interface SocketLike extends SessionSocket, RefusedSocket {
  readyState: number;
  ping: unknown;
}

function isWebSocket(res: unknown): res is SocketLike {
  return !!res && typeof (res as SocketLike).on === 'function' && typeof (res as SocketLike).ping === 'function';
}


/**
 * The context of an HTTP request. A subscription is refused before anything runs: tRPC's HTTP
 * handler with SSE off (src/trpc/init.ts) refuses it only after its procedure ran, so its access
 * check, read budget and side effects (an export's audit row) would happen for an answer never
 * given. The token comes from the Authorization header only: tRPC also reads `?connectionParams=`
 * on HTTP, and a token in a URL ends up in access logs and browser history.
 */
export function httpContextFactory(create: ReturnType<typeof contextFactory>) {
  return (opts: { req: IncomingMessage; res: unknown; info: { type: string } }): Promise<Context> => {
    if (opts.info.type === 'subscription') {
      throw new TRPCError({ code: 'METHOD_NOT_SUPPORTED', message: 'subscriptions are served over WebSocket only' });
    }
    return create({ req: opts.req, res: opts.res });
  };
}
