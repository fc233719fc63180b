import { z } from 'zod';
import { MAX_TOKEN_LENGTH } from '../auth/verifier.js';
import { TenantId, UserId } from './schemas.js';
import { authedProcedure, managementProcedure, publicProcedure, router } from '../trpc/init.js';

export const authRouter = router({
  /** Development login: mints a token for any username. Disabled in production. */
  devLogin: publicProcedure
    .input(
      z.object({
        username: z
          .string()
          .min(1)
          .max(64)
          .regex(/^[A-Za-z0-9_.-]+$/, 'username may contain letters, digits, _ . - only'),
        name: z.string().min(1).max(200).optional(),
        tenant: TenantId.optional(),
        roles: z.array(z.enum(['admin', 'service', 'support'])).max(3).optional(),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.auth.devLogin(input)),

  /**
   * Swaps the token of the live WebSocket connection (same user) before it expires; the
   * connection and its subscriptions go on. Over HTTP every request carries its own token anyway.
   * Spends the action budget (each call verifies a token, which may fetch the identity provider's keys).
   */
  refresh: managementProcedure
    .input(z.object({ token: z.string().min(1).max(MAX_TOKEN_LENGTH) }))
    .mutation(({ ctx, input }) => ctx.services.auth.refresh(ctx.session, input.token)),

  /**
   * Admins: ends every session of a user of their tenant, on every node; older tokens stop working.
   * Spends the action budget (an audit row, a Redis write and a message to every node).
   */
  revoke: managementProcedure
    .input(z.object({ userId: UserId }))
    .mutation(({ ctx, input }) => ctx.services.sessions.revoke(ctx.actor, input.userId)),

  me: authedProcedure.query(({ ctx }) => {
    const { id, name, tenant, roles, exp } = ctx.actor;
    return { id, name, tenant, roles, expiresAt: exp ? new Date(exp * 1000) : null };
  }),
});
