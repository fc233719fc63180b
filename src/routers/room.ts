import { z } from 'zod';
import { authedProcedure, router } from '../trpc/init.js';
import { MAX_MEMBERS_PER_CALL, Role, RoomId, RoomKey, RoomName, Topic, UserId } from './schemas.js';

const RoomMember = z.object({ roomId: RoomId, userId: UserId });

export const roomRouter = router({
  create: authedProcedure
    .input(
      z.object({
        kind: z.enum(['group', 'support', 'broadcast']),
        name: RoomName,
        topic: Topic.nullish(),
        key: RoomKey.nullish(),
        memberIds: z.array(UserId).max(MAX_MEMBERS_PER_CALL, `at most ${MAX_MEMBERS_PER_CALL} members per call`).optional(),
        encrypted: z.boolean().optional(),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.rooms.create(ctx.actor, input)),

  openDirect: authedProcedure
    .input(z.object({ userId: UserId }))
    .mutation(({ ctx, input }) => ctx.services.rooms.openDirect(ctx.actor, input.userId)),

  list: authedProcedure.query(({ ctx }) => ctx.services.rooms.list(ctx.actor)),

  get: authedProcedure.input(z.object({ roomId: RoomId })).query(({ ctx, input }) => ctx.services.rooms.get(ctx.actor, input.roomId)),

  byKey: authedProcedure.input(z.object({ key: RoomKey })).query(({ ctx, input }) => ctx.services.rooms.byKey(ctx.actor, input.key)),

  members: authedProcedure
    .input(z.object({ roomId: RoomId }))
    .query(({ ctx, input }) => ctx.services.rooms.members(ctx.actor, input.roomId)),

  addMembers: authedProcedure
    .input(
      z.object({
        roomId: RoomId,
        userIds: z.array(UserId).min(1).max(MAX_MEMBERS_PER_CALL, `at most ${MAX_MEMBERS_PER_CALL} members per call`),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.rooms.addMembers(ctx.actor, input.roomId, input.userIds)),

  removeMember: authedProcedure.input(RoomMember).mutation(async ({ ctx, input }) => {
    await ctx.services.rooms.removeMember(ctx.actor, input.roomId, input.userId);
    return { ok: true as const };
  }),

  leave: authedProcedure.input(z.object({ roomId: RoomId })).mutation(async ({ ctx, input }) => {
    await ctx.services.rooms.leave(ctx.actor, input.roomId);
    return { ok: true as const };
  }),

  update: authedProcedure
    .input(
      z.object({
        roomId: RoomId,
        name: RoomName.optional(),
        topic: Topic.nullish(),
        retentionDays: z.number().int().min(1).max(36_500).nullish(),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.rooms.update(ctx.actor, input.roomId, input)),

  setRole: authedProcedure
    .input(RoomMember.extend({ role: Role }))
    .mutation(({ ctx, input }) => ctx.services.rooms.setRole(ctx.actor, input.roomId, input.userId, input.role)),

  mute: authedProcedure
    .input(RoomMember.extend({ until: z.date().nullish() }))
    .mutation(({ ctx, input }) => ctx.services.rooms.mute(ctx.actor, input.roomId, input.userId, input.until ?? null)),

  unmute: authedProcedure.input(RoomMember).mutation(({ ctx, input }) => ctx.services.rooms.unmute(ctx.actor, input.roomId, input.userId)),

  ban: authedProcedure.input(RoomMember).mutation(async ({ ctx, input }) => {
    await ctx.services.rooms.ban(ctx.actor, input.roomId, input.userId);
    return { ok: true as const };
  }),

  unban: authedProcedure.input(RoomMember).mutation(({ ctx, input }) => ctx.services.rooms.unban(ctx.actor, input.roomId, input.userId)),

  bans: authedProcedure.input(z.object({ roomId: RoomId })).query(({ ctx, input }) => ctx.services.rooms.bans(ctx.actor, input.roomId)),
});
