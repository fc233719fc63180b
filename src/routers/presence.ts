import { z } from 'zod';
import { authedProcedure, router } from '../trpc/init.js';
import { UserId } from './schemas.js';

export const presenceRouter = router({
  set: authedProcedure
    .input(z.object({ status: z.enum(['online', 'away', 'dnd']) }))
    .mutation(({ ctx, input }) => ctx.services.presence.set(ctx.actor, input.status)),
  get: authedProcedure
    .input(z.object({ userIds: z.array(UserId).min(1).max(200, 'at most 200 users per call') }))
    .query(({ ctx, input }) => ctx.services.presence.get(ctx.actor, input.userIds)),
});
