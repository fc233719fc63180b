import { AuthError } from '../auth/errors.js';
import type { TokenSigner } from '../auth/signer.js';
import type { TokenVerifier } from '../auth/verifier.js';
import { type Actor, isExpired } from '../domain/actor.js';
import { forbidden } from '../domain/errors.js';
import type { Counters } from '../metrics.js';
import type { Session, SessionService } from './sessions.js';
import type { UserService } from './users.js';

export interface DevLoginInput {
  username: string;
  name?: string | undefined;
  tenant?: string | undefined;
  roles?: string[] | undefined;
}

/**
 * Who a token belongs to: the one verifier (src/auth/verifier.ts) plus the revocation list, for
 * every entry point (connections, HTTP calls, auth.refresh, /admin/stats); and the dev login.
 */
export class AuthService {
  constructor(
    readonly verifier: TokenVerifier,
    /** Null when there is no shared secret (production with a JWKS only): no dev login then. */
    private readonly signer: TokenSigner | null,
    private readonly sessions: SessionService,
    private readonly users: UserService,
    private readonly counters: Counters,
    private readonly settings: { devLogin: boolean; devLoginRoles: boolean; accessTokenTtlSeconds: number; keySetPerTenant: boolean },
  ) {}

  /**
   * With a key set per tenant (AUTH_JWKS_URL naming `{tenant}`): the tenants with users count as seen
   * (src/auth/verifier.ts), so a flood of made-up tenants after a restart cannot hold them. Read in
   * the background: until it is done they are only as new tenants are; a failed read is logged.
   */
  start(tenantsWithUsers: () => Promise<string[]>, onError: (err: unknown) => void): void {
    if (!this.settings.keySetPerTenant) return;
    this.seeding = tenantsWithUsers().then((tenants) => this.verifier.knowTenants(tenants), onError);
  }

  /** The read `start` began (tests wait for it). */
  seeding: Promise<void> = Promise.resolve();

  /**
   * The actor of a valid, unrevoked token. AuthError otherwise: UNAUTHORIZED with the reason, or
   * SERVICE_UNAVAILABLE when the identity provider's keys cannot be loaded. `source`: the client
   * address (the budget of tenants' key sets, src/auth/verifier.ts).
   */
  async authenticate(token: string, source?: string): Promise<Actor> {
    const actor = await this.verifier.verify(token, source).catch((err: unknown) => {
      if (err instanceof AuthError && err.unavailable) this.counters.authUnavailable++;
      throw err;
    });
    if (await this.sessions.isRevoked(actor)) throw new AuthError('access token revoked', { actor });
    return actor;
  }

  /** Development login: a token for any username (FORBIDDEN when disabled). */
  async devLogin(input: DevLoginInput): Promise<{ token: string; user: Pick<Actor, 'id' | 'name' | 'tenant' | 'roles'>; expiresAt: Date }> {
    if (!this.settings.devLogin || !this.signer) throw forbidden('dev login is disabled on this server');
    if (!this.settings.devLoginRoles && ((input.roles?.length ?? 0) > 0 || (input.tenant ?? 'default') !== 'default')) {
      throw forbidden('dev login grants no roles and no tenant but `default` on this server (AUTH_DEV_LOGIN_ROLES=1 allows them)');
    }
    const user = { id: input.username, name: input.name ?? input.username, tenant: input.tenant ?? 'default', roles: input.roles ?? [] };
    const { token, exp } = await this.signer.sign(
      { sub: user.id, name: user.name, tenant: user.tenant, roles: user.roles },
      this.settings.accessTokenTtlSeconds,
    );
    await this.users.touch(user);
    return { token, user, expiresAt: new Date(exp * 1000) };
  }

  /**
   * `auth.refresh`: checks the new token and, on a WebSocket, swaps it into the live session (same
   * user and tenant, FORBIDDEN otherwise), which re-arms the expiry. A token past its `exp` is
   * refused even within the clock tolerance the verifier allows: a connection closes (4001) and
   * calls are refused at `exp` itself (`isExpired`), so swapping it in would close the connection
   * at once, however long its current token still had.
   */
  async refresh(session: Session | undefined, token: string): Promise<{ expiresAt: Date | null; connection: boolean }> {
    const next = await this.authenticate(token);
    if (isExpired(next)) throw new AuthError('access token expired');
    const expiresAt = next.exp ? new Date(next.exp * 1000) : null;
    if (!session) return { expiresAt, connection: false };
    this.sessions.refresh(session, next);
    return { expiresAt, connection: true };
  }
}
