import { z } from 'zod';
import { authedProcedure, router } from '../trpc/init.js';
import { MeetingId, MeetingTitle, MeetingTtlMinutes, RoomId } from './schemas.js';

/** Video meetings on the configured provider (LiveKit or Daily); see docs/VIDEO.md. */
export const videoRouter = router({
  /** Creates a meeting in a room and invites its other members (`meeting.invite` in their inbox). */
  create: authedProcedure
    .input(z.object({ roomId: RoomId, title: MeetingTitle.nullish(), ttlMinutes: MeetingTtlMinutes.nullish() }))
    .mutation(({ ctx, input }) => ctx.services.meetings.lifecycle.create(ctx.actor, input)),

  /** Mints a short-lived provider token (a mutation: every call mints a new one). */
  joinToken: authedProcedure
    .input(z.object({ meetingId: MeetingId }))
    .mutation(({ ctx, input }) => ctx.services.meetings.lifecycle.joinToken(ctx.actor, input.meetingId)),

  /** The meeting with its status and participants; `live: true` also asks the provider who is in now. */
  get: authedProcedure
    .input(z.object({ meetingId: MeetingId, live: z.boolean().optional() }))
    .query(({ ctx, input }) => ctx.services.meetings.read.get(ctx.actor, input.meetingId, input.live ?? false)),

  /** The room's meetings, newest first (at most 50). */
  list: authedProcedure
    .input(z.object({ roomId: RoomId }))
    .query(({ ctx, input }) => ctx.services.meetings.read.list(ctx.actor, input.roomId)),

  /** Which provider meetings run on (`provider: null`: none, `unavailableReason` says what to set). */
  config: authedProcedure.query(({ ctx }) => ctx.services.meetings.config()),

  /** Ends the meeting on the provider (creator or moderator+). */
  end: authedProcedure
    .input(z.object({ meetingId: MeetingId }))
    .mutation(({ ctx, input }) => ctx.services.meetings.lifecycle.end(ctx.actor, input.meetingId)),
});
