import { defineEntity, p } from '@mikro-orm/core';

/** The tables of outgoing webhooks (listed in `entities`, src/store/entities.ts). */

/**
 * An outgoing webhook of a tenant (docs/INTEGRATION.md, "Webhooks"). `events`: event types or `*`.
 * `failingSince`: start of the current run of failed deliveries (null after a success).
 */
export const WebhookEndpoint = defineEntity({
  name: 'WebhookEndpoint',
  tableName: 'webhook_endpoint',
  properties: {
    id: p.uuid().primary(),
    tenant: p.string().length(64),
    url: p.string().length(2000),
    events: p.array().default([]),
    description: p.string().length(500).nullable(),
    /** The Standard Webhooks secret, sealed with MESSAGE_KEYS when keys are configured (src/services/webhooks/secrets.ts). */
    secret: p.string().length(255),
    enabled: p.boolean().default(true),
    failingSince: p.datetime().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    updatedAt: p.datetime().onCreate(() => new Date()).onUpdate(() => new Date()),
  },
  indexes: [{ name: 'webhook_endpoint_tenant_idx', properties: ['tenant'] }],
});

/**
 * The webhook outbox: one row per event per subscribed endpoint, written in the transaction of the
 * event. A room log event is referenced by (roomId, seq); other events carry their `data`. No
 * foreign key to the room: a row outlives its room. `leaseUntil`: claimed by a worker until then.
 */
export const WebhookDelivery = defineEntity({
  name: 'WebhookDelivery',
  tableName: 'webhook_delivery',
  properties: {
    id: p.bigint('number').primary().autoincrement(),
    endpoint: () => p.manyToOne(WebhookEndpoint).deleteRule('cascade'),
    tenant: p.string().length(64),
    roomId: p.uuid(),
    seq: p.bigint('number').nullable(),
    eventId: p.string().length(100),
    eventType: p.string().length(32),
    data: p.json<Record<string, unknown>>().nullable(),
    status: p.string().length(16).default('pending'),
    attempts: p.integer().default(0),
    nextAttemptAt: p.datetime(),
    leaseUntil: p.datetime().nullable(),
    lastError: p.string().length(500).nullable(),
    lastStatusCode: p.integer().nullable(),
    createdAt: p.datetime().onCreate(() => new Date()),
    deliveredAt: p.datetime().nullable(),
  },
  indexes: [
    /** The worker's scan of due rows. */
    { name: 'webhook_delivery_due_idx', properties: ['status', 'nextAttemptAt'] },
    /** Order per room per endpoint (an earlier pending row holds back the later ones). */
    { name: 'webhook_delivery_endpoint_room_idx', properties: ['endpoint', 'roomId', 'id'] },
    /** `webhook.deliveries`: an endpoint's newest rows. */
    { name: 'webhook_delivery_endpoint_idx', properties: ['endpoint', 'id'] },
    /** Pruning of finished rows. */
    { name: 'webhook_delivery_created_at_idx', properties: ['createdAt'] },
  ],
  checks: [{ name: 'webhook_delivery_status_check', expression: `"status" in ('pending', 'delivered', 'failed')` }],
});
