import { defineEntity, p } from '@mikro-orm/core';

/**
 * The durable audit trail of a tenant (listed in `entities`, src/store/entities.ts): one row per
 * administrative action, written in the transaction of the action (`Tx.audit`, src/store/tx.ts), so
 * an action that rolls back leaves no row and one that commits always has its row. `data` holds
 * the action's details (a role, a mute's end, a webhook's url); never message bodies or secrets.
 */
export const AuditEvent = defineEntity({
  name: 'AuditEvent',
  tableName: 'audit_event',
  properties: {
    id: p.uuid().primary(),
    tenant: p.string().length(64),
    at: p.datetime().onCreate(() => new Date()),
    actorId: p.string().length(128),
    action: p.string().length(64),
    roomId: p.uuid().nullable(),
    /** Who or what the action was done to (a user id, a webhook id). */
    targetId: p.string().length(128).nullable(),
    data: p.json<Record<string, unknown>>().default('{}'),
  },
  indexes: [
    /** `admin.audit`: newest first per tenant, keyset (at, id). */
    { name: 'audit_event_tenant_at_idx', properties: ['tenant', 'at', 'id'] },
  ],
});
