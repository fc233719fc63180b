import { z } from 'zod';
import { authedProcedure, managementProcedure, router } from '../trpc/init.js';
import { RoomId } from './schemas.js';

const HHMM = (name: string) => z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, `${name} must be a time HH:MM (00:00-23:59)`);

/** Notification preferences of the caller (docs/API.md, "notify"). */
export const notifyRouter = router({
  /** Mine: `{ email, push, quietHours, rooms: [{ roomId, level, muteUntil }] }` (defaults without a row). */
  preferences: authedProcedure.query(({ ctx }) => ctx.services.preferences.get(ctx.actor)),

  /** Changes of preferences spend the action budget (each is an upsert and reads around it). */
  setPreferences: managementProcedure
    .input(
      z.object({
        email: z.enum(['digest', 'off'], { error: "email must be 'digest' or 'off'" }).optional(),
        push: z.boolean({ error: 'push must be true or false' }).optional(),
        /** Pushes are held until the end of these hours; null turns them off. */
        quietHours: z
          .object({ start: HHMM('quietHours.start'), end: HHMM('quietHours.end'), timeZone: z.string().min(1, 'quietHours.timeZone is required').max(64, 'quietHours.timeZone is at most 64 characters') })
          .nullish(),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.preferences.set(ctx.actor, input)),

  /** A room's level for me: `all` messages, `mentions` (and direct messages, replies, invites; the default) or `none`; muted until `muteUntil`. */
  setRoomPreference: managementProcedure
    .input(
      z.object({
        roomId: RoomId,
        level: z.enum(['all', 'mentions', 'none'], { error: "level must be 'all', 'mentions' or 'none'" }),
        muteUntil: z.coerce.date({ error: 'muteUntil must be a date' }).nullish(),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.preferences.setRoom(ctx.actor, input)),
});
