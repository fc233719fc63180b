import { z } from 'zod';
import { DIRECTORY_MAX_LIMIT, MEMBERS_MAX_LIMIT, ROOMS_MAX_LIMIT } from '../services/rooms/index.js';
import { authedProcedure, managementProcedure, router } from '../trpc/init.js';
import { InputDate, MAX_MEMBERS_PER_CALL, Metadata, PageLimit, Role, RoomId, RoomKey, RoomName, Topic, UserId } from './schemas.js';

const RoomMember = z.object({ roomId: RoomId, userId: UserId });
const Visibility = z.enum(['public', 'private']);
/** A page of a room's members or bans, by user id: those after `after`, at most `limit`. */
const UserPage = z.object({ roomId: RoomId, after: UserId.nullish(), limit: PageLimit(MEMBERS_MAX_LIMIT).nullish() });
/**
 * A page of my room list: those after `before` (the last room of the page before: its activity,
 * `lastMessage.createdAt ?? createdAt`, and its id), at most `limit`.
 */
const RoomListPage = z.object({
  archived: z.boolean().optional(),
  before: z.object({ activityAt: InputDate('before.activityAt'), roomId: RoomId }).nullish(),
  limit: PageLimit(ROOMS_MAX_LIMIT).nullish(),
});
/**
 * Where a page of the directory starts: after the room `roomId` named `name` (the last room of the
 * page before). Taken as given, not trimmed: it is compared with the stored name. PostgreSQL text
 * holds no NUL, so no stored name has one.
 */
const DirectoryCursor = z.object(
  {
    name: z
      .string({ error: 'after.name must be a string' })
      .max(200, 'after.name is at most 200 characters')
      .refine((name) => !name.includes('\0'), 'after.name must not contain NUL characters'),
    roomId: z.uuid({ error: 'after.roomId must be a UUID' }),
  },
  { error: 'after must be { name, roomId } of the last room of the page before' },
);
const MemberIds = z.array(UserId).max(MAX_MEMBERS_PER_CALL, `at most ${MAX_MEMBERS_PER_CALL} members per call`);
const NewRoom = z.object({
  kind: z.enum(['group', 'support', 'broadcast']),
  name: RoomName,
  topic: Topic.nullish(),
  memberIds: MemberIds.optional(),
  encrypted: z.boolean().optional(),
  metadata: Metadata.nullish(),
  visibility: Visibility.optional(),
});

export const roomRouter = router({
  create: authedProcedure
    .input(NewRoom.extend({ key: RoomKey.nullish() }))
    .mutation(({ ctx, input }) => ctx.services.rooms.lifecycle.create(ctx.actor, input)),

  /**
   * The room of an external key, created on first use (service and admin tokens); idempotent. The
   * creation spends the room budget, every later call (it may add members) the action budget.
   */
  ensure: authedProcedure
    .input(NewRoom.extend({ key: RoomKey }))
    .mutation(({ ctx, input }) => ctx.services.rooms.lifecycle.ensure(ctx.actor, input)),

  openDirect: authedProcedure
    .input(z.object({ userId: UserId }))
    .mutation(({ ctx, input }) => ctx.services.rooms.lifecycle.openDirect(ctx.actor, input.userId)),

  /**
   * My rooms, most recently active first, a page at a time (`before`: the last room of the previous
   * page); archived ones only with `archived: true` (and then only those).
   */
  list: authedProcedure
    .input(RoomListPage.optional())
    .query(({ ctx, input }) => ctx.services.rooms.read.list(ctx.actor, input ?? {})),

  get: authedProcedure.input(z.object({ roomId: RoomId })).query(({ ctx, input }) => ctx.services.rooms.read.get(ctx.actor, input.roomId)),

  byKey: authedProcedure.input(z.object({ key: RoomKey })).query(({ ctx, input }) => ctx.services.rooms.read.byKey(ctx.actor, input.key)),

  /** The room's members by user id, a page at a time (`after`: the last user id of the previous page). */
  members: authedProcedure.input(UserPage).query(({ ctx, input }) => ctx.services.rooms.read.members(ctx.actor, input.roomId, input)),

  addMembers: managementProcedure
    .input(
      z.object({
        roomId: RoomId,
        userIds: z.array(UserId).min(1).max(MAX_MEMBERS_PER_CALL, `at most ${MAX_MEMBERS_PER_CALL} members per call`),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.rooms.membership.addMembers(ctx.actor, input.roomId, input.userIds)),

  removeMember: managementProcedure.input(RoomMember).mutation(async ({ ctx, input }) => {
    await ctx.services.rooms.membership.removeMember(ctx.actor, input.roomId, input.userId);
    return { ok: true as const };
  }),

  leave: managementProcedure.input(z.object({ roomId: RoomId })).mutation(async ({ ctx, input }) => {
    await ctx.services.rooms.membership.leave(ctx.actor, input.roomId);
    return { ok: true as const };
  }),

  update: managementProcedure
    .input(
      z.object({
        roomId: RoomId,
        name: RoomName.optional(),
        topic: Topic.nullish(),
        retentionDays: z.number().int().min(1).max(36_500).nullish(),
        metadata: Metadata.nullish(),
        visibility: Visibility.optional(),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.rooms.lifecycle.update(ctx.actor, input.roomId, input)),

  setRole: managementProcedure
    .input(RoomMember.extend({ role: Role }))
    .mutation(({ ctx, input }) => ctx.services.rooms.moderation.setRole(ctx.actor, input.roomId, input.userId, input.role)),

  mute: managementProcedure
    .input(RoomMember.extend({ until: InputDate('until').nullish() }))
    .mutation(({ ctx, input }) => ctx.services.rooms.moderation.mute(ctx.actor, input.roomId, input.userId, input.until ?? null)),

  unmute: managementProcedure.input(RoomMember).mutation(({ ctx, input }) => ctx.services.rooms.moderation.unmute(ctx.actor, input.roomId, input.userId)),

  ban: managementProcedure.input(RoomMember).mutation(async ({ ctx, input }) => {
    await ctx.services.rooms.moderation.ban(ctx.actor, input.roomId, input.userId);
    return { ok: true as const };
  }),

  unban: managementProcedure.input(RoomMember).mutation(({ ctx, input }) => ctx.services.rooms.moderation.unban(ctx.actor, input.roomId, input.userId)),

  /** The room's bans by user id, paged like `members`. */
  bans: authedProcedure.input(UserPage).query(({ ctx, input }) => ctx.services.rooms.moderation.bans(ctx.actor, input.roomId, input)),

  archive: managementProcedure.input(z.object({ roomId: RoomId })).mutation(({ ctx, input }) => ctx.services.rooms.archive.archive(ctx.actor, input.roomId)),

  unarchive: managementProcedure
    .input(z.object({ roomId: RoomId }))
    .mutation(({ ctx, input }) => ctx.services.rooms.archive.unarchive(ctx.actor, input.roomId)),

  delete: managementProcedure.input(z.object({ roomId: RoomId })).mutation(async ({ ctx, input }) => {
    await ctx.services.rooms.archive.delete(ctx.actor, input.roomId);
    return { ok: true as const };
  }),

  /** Public, non-archived rooms of my tenant by name, a page at a time (`after`: the last room of the previous page). */
  directory: authedProcedure
    .input(
      z
        .object({
          query: z.string().max(200, 'query must be at most 200 characters').optional(),
          limit: z.number().int().min(1, 'limit must be at least 1').max(DIRECTORY_MAX_LIMIT, `limit must be at most ${DIRECTORY_MAX_LIMIT}`).optional(),
          after: DirectoryCursor.nullish(),
        })
        .optional(),
    )
    .query(({ ctx, input }) => ctx.services.rooms.directory.list(ctx.actor, input ?? {})),

  join: authedProcedure.input(z.object({ roomId: RoomId })).mutation(({ ctx, input }) => ctx.services.rooms.directory.join(ctx.actor, input.roomId)),
});
