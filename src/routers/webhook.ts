import { z } from 'zod';
import { WEBHOOK_EVENT_TYPES } from '../domain/webhooks.js';
import { integrationManagementProcedure, integrationProcedure, router } from '../trpc/init.js';

const WebhookId = z.uuid({ error: 'id must be a webhook id (a UUID)' });
const WebhookUrl = z
  .url({ protocol: /^https?$/, error: 'url must be an http(s) URL, e.g. https://example.com/hooks/chat' })
  .max(2000, 'url is at most 2000 characters');
const EventTypes = z
  .array(z.enum(WEBHOOK_EVENT_TYPES, { error: `each event must be one of ${WEBHOOK_EVENT_TYPES.join(', ')}` }))
  .min(1, 'events needs at least one event type (or "*" for all)')
  .max(WEBHOOK_EVENT_TYPES.length, 'events lists each type once');
const Description = z.string().max(500, 'description is at most 500 characters');

/** Outgoing webhooks of the caller's tenant (tenant admins and service tokens; docs/INTEGRATION.md). */
export const webhookRouter = router({
  /** Registers an endpoint; the answer is the only time its secret is shown (besides rotateSecret). */
  create: integrationManagementProcedure
    .input(z.object({ url: WebhookUrl, events: EventTypes, description: Description.nullish() }))
    .mutation(({ ctx, input }) => ctx.services.webhooks.create(ctx.actor, input)),

  list: integrationProcedure.query(({ ctx }) => ctx.services.webhooks.list(ctx.actor)),

  /** create and update spend the caller's action budget: each resolves the URL's host (the SSRF guard). */
  update: integrationManagementProcedure
    .input(z.object({ id: WebhookId, url: WebhookUrl.optional(), events: EventTypes.optional(), enabled: z.boolean().optional(), description: Description.nullish() }))
    .mutation(({ ctx, input }) => ctx.services.webhooks.update(ctx.actor, input)),

  /** delete and rotateSecret spend the action budget too: every change of an endpoint does. */
  delete: integrationManagementProcedure
    .input(z.object({ id: WebhookId }))
    .mutation(({ ctx, input }) => ctx.services.webhooks.delete(ctx.actor, input.id)),

  /** Recent deliveries of the endpoint, newest first (default 50, at most 200). */
  deliveries: integrationProcedure
    .input(z.object({ id: WebhookId, limit: z.number().int().min(1).max(200, 'limit is at most 200').optional() }))
    .query(({ ctx, input }) => ctx.services.webhooks.deliveries(ctx.actor, input.id, input.limit ?? 50)),

  /** A new secret (shown once); spends the action budget (it writes a sealed secret and an audit row). */
  rotateSecret: integrationManagementProcedure
    .input(z.object({ id: WebhookId }))
    .mutation(({ ctx, input }) => ctx.services.webhooks.rotateSecret(ctx.actor, input.id)),
});
