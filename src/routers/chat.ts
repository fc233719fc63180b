import { tracked } from '@trpc/server';
import { z } from 'zod';
import type { RoomEvent } from '../domain/events.js';
import { EDITS_MAX_LIMIT, HISTORY_MAX_LIMIT } from '../services/messages/index.js';
import { authedProcedure, router } from '../trpc/init.js';
import { streamConn } from '../trpc/stream-conn.js';
import {
  Attachment,
  Body,
  Card,
  ClientId,
  Emoji,
  LastEventId,
  MAX_ATTACHMENTS,
  MAX_MENTIONS,
  MessageId,
  Metadata,
  PageLimit,
  RoomId,
  SearchQuery,
  Seq,
  UserId,
} from './schemas.js';

const wrap = (id: string, event: RoomEvent) => tracked(id, event);
const Limit = z
  .number()
  .int()
  .min(1, 'limit must be at least 1')
  .max(HISTORY_MAX_LIMIT, `limit must be at most ${HISTORY_MAX_LIMIT}`);
const Reaction = z.object({ messageId: MessageId, emoji: Emoji });

export const chatRouter = router({
  send: authedProcedure
    .input(
      z.object({
        roomId: RoomId,
        clientId: ClientId,
        body: Body,
        kind: z.enum(['text', 'image', 'file', 'system', 'card'], { error: 'kind must be text, image, file, system or card' }).optional(),
        attachments: z.array(Attachment).max(MAX_ATTACHMENTS, `at most ${MAX_ATTACHMENTS} attachments`).optional(),
        replyToId: MessageId.nullish(),
        mentions: z.array(UserId).max(MAX_MENTIONS, `at most ${MAX_MENTIONS} mentions`).optional(),
        metadata: Metadata.nullish(),
        card: Card.nullish(),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.messages.sender.send(ctx.actor, input)),

  history: authedProcedure
    .input(z.object({ roomId: RoomId, beforeSeq: Seq.nullish(), afterSeq: Seq.nullish(), limit: Limit.nullish() }))
    .query(({ ctx, input }) => ctx.services.messages.reader.history(ctx.actor, input)),

  edit: authedProcedure
    .input(z.object({ messageId: MessageId, body: Body }))
    .mutation(({ ctx, input }) => ctx.services.messages.changes.edit(ctx.actor, input.messageId, input.body)),

  /** A message's earlier versions, oldest first, paged like `history` (cursors: the versions' ids). */
  edits: authedProcedure
    .input(
      z.object({
        messageId: MessageId,
        beforeId: z.uuid({ error: 'beforeId must be the id of an earlier version' }).nullish(),
        afterId: z.uuid({ error: 'afterId must be the id of an earlier version' }).nullish(),
        limit: PageLimit(EDITS_MAX_LIMIT).nullish(),
      }),
    )
    .query(({ ctx, input }) => ctx.services.messages.reader.edits(ctx.actor, input)),

  delete: authedProcedure
    .input(z.object({ messageId: MessageId }))
    .mutation(({ ctx, input }) => ctx.services.messages.changes.delete(ctx.actor, input.messageId)),

  react: authedProcedure.input(Reaction).mutation(({ ctx, input }) => ctx.services.messages.changes.react(ctx.actor, input.messageId, input.emoji)),

  unreact: authedProcedure.input(Reaction).mutation(({ ctx, input }) => ctx.services.messages.changes.unreact(ctx.actor, input.messageId, input.emoji)),

  thread: authedProcedure
    .input(z.object({ messageId: MessageId, afterSeq: Seq.nullish(), limit: Limit.nullish() }))
    .query(({ ctx, input }) => ctx.services.messages.reader.thread(ctx.actor, input)),

  search: authedProcedure
    .input(z.object({ query: SearchQuery, roomId: RoomId.nullish(), limit: Limit.nullish() }))
    .query(({ ctx, input }) => ctx.services.messages.reader.search(ctx.actor, input)),

  typing: authedProcedure
    .input(z.object({ roomId: RoomId, typing: z.boolean() }))
    .mutation(({ ctx, input }) => ctx.services.typing.set(ctx.actor, input.roomId, input.typing)),

  /**
   * The room's live events with the delivery guarantee. Pass the last seen event id to resume;
   * without it the first event is `ready` with the room's current seq.
   */
  events: authedProcedure
    .input(z.object({ roomId: RoomId, lastEventId: LastEventId }))
    .subscription(async ({ ctx, input, signal }) => {
      const conn = streamConn(ctx, signal);
      try {
        return await ctx.services.streams.open(ctx.actor, input.roomId, input.lastEventId, signal, wrap, conn);
      } catch (err) {
        conn.release?.();
        throw err;
      }
    }),
});
