import { z } from 'zod';
import { authedProcedure, managementProcedure, router } from '../trpc/init.js';

const DeviceId = z.uuid({ error: 'id must be a device id (a UUID)' });
const Base64Url = (name: string, max: number) =>
  z
    .string()
    .min(1, `${name} is required`)
    .max(max, `${name} is at most ${max} characters`)
    .regex(/^[A-Za-z0-9_-]+={0,2}$/, `${name} must be base64url`);

/** Web push subscriptions of the caller (docs/API.md, "device"). */
export const deviceRouter = router({
  /**
   * Registers the browser's PushSubscription (an endpoint registered before is taken over). Spends
   * the action budget: each call resolves the endpoint's host (the SSRF guard).
   */
  register: managementProcedure
    .input(
      z.object({
        kind: z.literal('webpush', { error: "kind must be 'webpush'" }),
        endpoint: z
          .url({ protocol: /^https?$/, error: 'endpoint must be the https URL of the push subscription' })
          .max(2000, 'endpoint is at most 2000 characters'),
        keys: z.object({ p256dh: Base64Url('keys.p256dh', 200), auth: Base64Url('keys.auth', 100) }),
        label: z.string().trim().min(1, 'label must not be empty').max(100, 'label is at most 100 characters').nullish(),
      }),
    )
    .mutation(({ ctx, input }) => ctx.services.devices.register(ctx.actor, input)),

  list: authedProcedure.query(({ ctx }) => ctx.services.devices.list(ctx.actor)),

  /** Spends the action budget, like register: every change of the caller's devices does. */
  remove: managementProcedure.input(z.object({ id: DeviceId })).mutation(({ ctx, input }) => ctx.services.devices.remove(ctx.actor, input.id)),

  /** The public VAPID key to subscribe with (`publicKey: null`: web push is not configured). */
  vapidKey: authedProcedure.query(({ ctx }) => ctx.services.devices.vapidKey()),
});
