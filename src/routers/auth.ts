import { TRPCError } from '@trpc/server';
import { z } from 'zod';
import { AuthError, signToken, verifyToken } from '../auth/jwt.js';
import type { Actor } from '../domain/actor.js';
import { UserId } from './schemas.js';
import { authedProcedure, publicProcedure, router } from '../trpc/init.js';

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
        tenant: z.string().min(1).max(64).regex(/^[A-Za-z0-9_.-]+$/).optional(),
        roles: z.array(z.enum(['admin', 'service', 'support'])).max(3).optional(),
      }),
    )
    .mutation(async ({ ctx, input }) => {
      const { config } = ctx.services.deps;
      if (!config.devLogin) throw new TRPCError({ code: 'FORBIDDEN', message: 'dev login is disabled on this server' });
      const claims = {
        sub: input.username,
        name: input.name ?? input.username,
        tenant: input.tenant ?? 'default',
        roles: input.roles ?? [],
      };
      const token = signToken(claims, config.jwtSecret, config.accessTokenTtlSeconds);
      const user = { id: claims.sub, name: claims.name, tenant: claims.tenant, roles: claims.roles };
      await ctx.services.users.touch(user);
      return { token, user, expiresAt: new Date(Date.now() + config.accessTokenTtlSeconds * 1000) };
    }),

  /**
   * Swaps the token of the live WebSocket connection (same user) before it expires; the
   * connection and its subscriptions go on. Over HTTP every request carries its own token anyway.
   */
  refresh: authedProcedure.input(z.object({ token: z.string().min(1).max(8192) })).mutation(async ({ ctx, input }) => {
    let next: Actor;
    try {
      next = verifyToken(input.token, ctx.services.deps.config.jwtSecret);
    } catch (err) {
      throw new TRPCError({ code: 'UNAUTHORIZED', message: err instanceof AuthError ? err.message : 'invalid access token' });
    }
    if (await ctx.services.sessions.isRevoked(next)) throw new TRPCError({ code: 'UNAUTHORIZED', message: 'access token revoked' });
    if (!ctx.session) return { expiresAt: next.exp ? new Date(next.exp * 1000) : null, connection: false };
    ctx.services.sessions.refresh(ctx.session, next);
    return { expiresAt: next.exp ? new Date(next.exp * 1000) : null, connection: true };
  }),

  /** Admins: ends every session of a user of their tenant, on every node; older tokens stop working. */
  revoke: authedProcedure
    .input(z.object({ userId: UserId }))
    .mutation(({ ctx, input }) => ctx.services.sessions.revoke(ctx.actor, input.userId)),

  me: authedProcedure.query(({ ctx }) => {
    const { id, name, tenant, roles, exp } = ctx.actor;
    return { id, name, tenant, roles, expiresAt: exp ? new Date(exp * 1000) : null };
  }),
});
