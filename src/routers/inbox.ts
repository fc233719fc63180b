import { tracked } from '@trpc/server';
import { z } from 'zod';
import type { InboxEvent } from '../domain/events.js';
import { authedProcedure, router } from '../trpc/init.js';
import { streamConn } from '../trpc/stream-conn.js';
import { LastEventId, NotificationKind, SmallJson, UserId } from './schemas.js';

const wrap = (id: string, event: InboxEvent) => tracked(id, event);

export const inboxRouter = router({
  /** What concerns me across rooms; resumable with lastEventId like room events. */
  events: authedProcedure
    .input(z.object({ lastEventId: LastEventId }).optional())
    .subscription(({ ctx, input, signal }) => {
      const conn = streamConn(ctx, signal);
      try {
        return ctx.services.inbox.open(ctx.actor, input?.lastEventId, signal, wrap, conn);
      } catch (err) {
        conn.release?.();
        throw err;
      }
    }),

  /** A notification in a user's inbox (service and admin tokens). */
  notify: authedProcedure
    .input(z.object({ userId: UserId, kind: NotificationKind, title: z.string().min(1).max(200), data: SmallJson.nullish() }))
    .mutation(({ ctx, input }) => ctx.services.inbox.notify(ctx.actor, input)),
});
