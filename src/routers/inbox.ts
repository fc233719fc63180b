import { tracked } from '@trpc/server';
import { z } from 'zod';
import type { InboxEvent } from '../domain/events.js';
import { authedProcedure, integrationManagementProcedure, router } from '../trpc/init.js';
import { streamConn } from '../trpc/stream-conn.js';
import { ClientId, LastEventId, NotificationKind, RoomId, SmallJson, UserId } from './schemas.js';

const MAX_NOTIFY_USERS = 1000;

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

  /**
   * A notification in the inbox of one user, of up to 1000 users or of a room's members (service and
   * admin tokens); each call spends the caller's action budget (it writes a row per recipient).
   * Idempotent by the optional `clientId` (per sender).
   */
  notify: integrationManagementProcedure
    .input(
      z
        .object({
          userId: UserId.optional(),
          userIds: z.array(UserId).min(1, 'userIds must not be empty').max(MAX_NOTIFY_USERS, `at most ${MAX_NOTIFY_USERS} userIds per call`).optional(),
          roomId: RoomId.optional(),
          kind: NotificationKind,
          title: z.string().min(1).max(200),
          data: SmallJson.nullish(),
          clientId: ClientId.optional(),
        })
        .refine((i) => [i.userId, i.userIds, i.roomId].filter((v) => v !== undefined).length === 1, {
          message: 'give exactly one of userId, userIds or roomId',
          path: ['userId'],
        }),
    )
    .mutation(({ ctx, input }) => {
      const { userId, userIds, roomId, ...what } = input;
      const target = userId !== undefined ? { userId } : userIds !== undefined ? { userIds: [...new Set(userIds)] } : { roomId: roomId! };
      return ctx.services.inbox.notify(ctx.actor, { ...what, ...target });
    }),
});
