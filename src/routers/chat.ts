import { tracked } from '@trpc/server';
import { z } from 'zod';
import type { RoomEvent } from '../realtime/events.js';
import { HISTORY_MAX_LIMIT } from '../services/messages.js';
import { authedProcedure, router } from '../trpc/init.js';
import { Attachment, Body, ClientId, LastEventId, MAX_ATTACHMENTS, MAX_MENTIONS, MessageId, RoomId, Seq, UserId } from './schemas.js';

const wrap = (id: string, event: RoomEvent) => tracked(id, event);

export const chatRouter = router({
  send: authedProcedure
    .input(
      z.object({
        roomId: RoomId,
        clientId: ClientId,
        body: Body,
        kind: z.enum(['text', 'image', 'file']).optional(),
        attachments: z.array(Attachment).max(MAX_ATTACHMENTS, `at most ${MAX_ATTACHMENTS} attachments`).optional(),
        replyToId: MessageId.nullish(),
        mentions: z.array(UserId).max(MAX_MENTIONS, `at most ${MAX_MENTIONS} mentions`).optional(),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.messages.send(ctx.actor, input)),

  history: authedProcedure
    .input(
      z.object({
        roomId: RoomId,
        beforeSeq: Seq.nullish(),
        afterSeq: Seq.nullish(),
        limit: z.number().int().min(1, 'limit must be at least 1').max(HISTORY_MAX_LIMIT, `limit must be at most ${HISTORY_MAX_LIMIT}`).nullish(),
      }),
    )
    .query(({ ctx, input }) => ctx.services.messages.history(ctx.actor, input)),

  /**
   * The room's live events with the delivery guarantee. Pass the last seen event id to resume;
   * without it the first event is `ready` with the room's current seq.
   */
  events: authedProcedure
    .input(z.object({ roomId: RoomId, lastEventId: LastEventId }))
    .subscription(({ ctx, input, signal }) => ctx.services.streams.open(ctx.actor, input.roomId, input.lastEventId, signal, wrap)),
});
