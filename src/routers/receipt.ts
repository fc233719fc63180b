import { z } from 'zod';
import { authedProcedure, router } from '../trpc/init.js';
import { READERS_PAGE } from '../services/receipts.js';
import { PageLimit, RoomId, Seq, UserId } from './schemas.js';

export const receiptRouter = router({
  markRead: authedProcedure
    .input(z.object({ roomId: RoomId, seq: Seq }))
    .mutation(({ ctx, input }) => ctx.services.receipts.markRead(ctx.actor, input.roomId, input.seq)),
  markUnread: authedProcedure
    .input(z.object({ roomId: RoomId, seq: Seq.min(1, 'seq must be at least 1') }))
    .mutation(({ ctx, input }) => ctx.services.receipts.markUnread(ctx.actor, input.roomId, input.seq)),
  markAllRead: authedProcedure.mutation(({ ctx }) => ctx.services.receipts.markAllRead(ctx.actor)),
  unread: authedProcedure.query(({ ctx }) => ctx.services.receipts.unread(ctx.actor)),
  /** A page (by user id, after `after`) of who has read up to `seq`. */
  readers: authedProcedure
    .input(z.object({ roomId: RoomId, seq: Seq, after: UserId.nullish(), limit: PageLimit(READERS_PAGE).nullish() }))
    .query(({ ctx, input }) => ctx.services.receipts.readers(ctx.actor, input.roomId, input.seq, input)),
});
