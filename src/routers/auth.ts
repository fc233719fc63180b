import { TRPCError } from '@trpc/server';
import { z } from 'zod';
import { signToken } from '../auth/jwt.js';
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

  me: authedProcedure.query(({ ctx }) => {
    const { id, name, tenant, roles, exp } = ctx.actor;
    return { id, name, tenant, roles, expiresAt: exp ? new Date(exp * 1000) : null };
  }),
});
