import { z } from 'zod';
import { authedProcedure, router } from '../trpc/init.js';
import { RoomId, Seq } from './schemas.js';

export const receiptRouter = router({
  markRead: authedProcedure
    .input(z.object({ roomId: RoomId, seq: Seq }))
    .mutation(({ ctx, input }) => ctx.services.receipts.markRead(ctx.actor, input.roomId, input.seq)),
  markUnread: authedProcedure
    .input(z.object({ roomId: RoomId, seq: Seq.min(1, 'seq must be at least 1') }))
    .mutation(({ ctx, input }) => ctx.services.receipts.markUnread(ctx.actor, input.roomId, input.seq)),
  markAllRead: authedProcedure.mutation(({ ctx }) => ctx.services.receipts.markAllRead(ctx.actor)),
  unread: authedProcedure.query(({ ctx }) => ctx.services.receipts.unread(ctx.actor)),
  readers: authedProcedure
    .input(z.object({ roomId: RoomId, seq: Seq }))
    .query(({ ctx, input }) => ctx.services.receipts.readers(ctx.actor, input.roomId, input.seq)),
});
