import { randomBytes, randomUUID } from 'node:crypto';
import { type Actor, isIntegration } from '../../domain/actor.js';
import type { AuditAction } from '../../domain/audit.js';
import { AppError, forbidden, notFound } from '../../domain/errors.js';
import type { WebhookDeliveryDto, WebhookDto, WebhookEventType } from '../../domain/webhooks.js';
import type { Store } from '../../store/store.js';
import type { Tx } from '../../store/tx.js';
import {
  countEndpoints,
  deleteEndpoint,
  type EndpointRow,
  findEndpoint,
  insertEndpoint,
  listEndpoints,
  recentDeliveries,
  setEndpointSecret,
  updateEndpoint,
} from '../../store/webhooks.js';
import { checkWebhookUrl } from './guard.js';
import type { SecretBox } from './secrets.js';

export { SecretBox } from './secrets.js';
export { WebhookWorker } from './worker.js';

/** Webhooks per tenant. */
export const MAX_WEBHOOKS_PER_TENANT = 50;

/** A Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes. */
export const newSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

const toDto = (r: EndpointRow): WebhookDto => ({
  id: r.id,
  url: r.url,
  events: r.events as WebhookEventType[],
  description: r.description,
  enabled: r.enabled,
  failingSince: r.failing_since,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/**
 * A tenant's outgoing webhooks (`webhook.*`), for the tenant's admins and service tokens. Every
 * call is scoped to the caller's tenant: another tenant's webhook is NOT_FOUND.
 */
export class WebhookService {
  constructor(
    private readonly store: Store,
    private readonly opts: { allowPrivateUrls: boolean },
    private readonly secrets: SecretBox,
  ) {}

  private manager(actor: Actor): string {
    if (!isIntegration(actor)) throw forbidden('only tenant admins and service tokens may manage webhooks');
    return actor.tenant;
  }

  /** The durable audit row of a change (in its transaction; never the secret). */
  private audit(tx: Tx, actor: Actor, action: AuditAction, id: string, data: Record<string, unknown> = {}): Promise<void> {
    return tx.audit({ tenant: actor.tenant, actorId: actor.id, action, targetId: id, data });
  }

  private async mine(tenant: string, id: string): Promise<EndpointRow> {
    const row = await findEndpoint(this.store.db(), tenant, id);
    if (!row) throw notFound('webhook');
    return row;
  }

  async create(actor: Actor, input: { url: string; events: WebhookEventType[]; description?: string | null | undefined }): Promise<{ id: string; secret: string }> {
    const tenant = this.manager(actor);
    await checkWebhookUrl(input.url, this.opts.allowPrivateUrls);
    const secret = newSecret();
    const row = await this.store.transact(async (tx) => {
      // Concurrent creates of the tenant count one after the other (the cap holds under a burst).
      await tx.advisoryLock('webhook-cap', tenant);
      if ((await countEndpoints(tx.db, tenant)) >= MAX_WEBHOOKS_PER_TENANT) {
        throw new AppError('PRECONDITION_FAILED', `a tenant has at most ${MAX_WEBHOOKS_PER_TENANT} webhooks: delete one first`);
      }
      const id = randomUUID();
      const inserted = await insertEndpoint(tx.db, {
        id,
        tenant,
        url: input.url,
        events: [...new Set(input.events)],
        description: input.description ?? null,
        secret: this.secrets.seal(secret, { tenant, id }),
      });
      await this.audit(tx, actor, 'webhook.create', inserted.id, { url: input.url, events: inserted.events });
      return inserted;
    });
    return { id: row.id, secret };
  }

  async list(actor: Actor): Promise<WebhookDto[]> {
    return (await listEndpoints(this.store.db(), this.manager(actor))).map(toDto);
  }

  async update(
    actor: Actor,
    input: { id: string; url?: string | undefined; events?: WebhookEventType[] | undefined; enabled?: boolean | undefined; description?: string | null | undefined },
  ): Promise<WebhookDto> {
    const tenant = this.manager(actor);
    await this.mine(tenant, input.id);
    if (input.url !== undefined) await checkWebhookUrl(input.url, this.opts.allowPrivateUrls);
    const row = await this.store.transact(async (tx) => {
      const updated = await updateEndpoint(tx.db, tenant, input.id, {
        url: input.url,
        events: input.events ? [...new Set(input.events)] : undefined,
        enabled: input.enabled,
        description: input.description,
      });
      if (!updated) throw notFound('webhook');
      const changed = Object.fromEntries(Object.entries({ url: input.url, events: input.events, enabled: input.enabled, description: input.description }).filter(([, v]) => v !== undefined));
      await this.audit(tx, actor, 'webhook.update', input.id, changed);
      return updated;
    });
    return toDto(row);
  }

  async delete(actor: Actor, id: string): Promise<{ ok: true }> {
    const tenant = this.manager(actor);
    await this.store.transact(async (tx) => {
      if (!(await deleteEndpoint(tx.db, tenant, id))) throw notFound('webhook');
      await this.audit(tx, actor, 'webhook.delete', id);
    });
    return { ok: true };
  }

  /** A new secret; deliveries signed from now on use it. */
  async rotateSecret(actor: Actor, id: string): Promise<{ id: string; secret: string }> {
    const secret = newSecret();
    const tenant = this.manager(actor);
    await this.store.transact(async (tx) => {
      if (!(await setEndpointSecret(tx.db, tenant, id, this.secrets.seal(secret, { tenant, id })))) throw notFound('webhook');
      await this.audit(tx, actor, 'webhook.rotate_secret', id);
    });
    return { id, secret };
  }

  /** The webhook's most recent deliveries (one per event), newest first. */
  async deliveries(actor: Actor, id: string, limit: number): Promise<WebhookDeliveryDto[]> {
    const tenant = this.manager(actor);
    await this.mine(tenant, id);
    const rows = await recentDeliveries(this.store.db(), id, limit);
    return rows.map((r) => ({
      eventId: r.event_id,
      eventType: r.event_type,
      roomId: r.room_id,
      status: r.status,
      attempts: r.attempts,
      lastError: r.last_error,
      lastStatusCode: r.last_status_code,
      nextAttemptAt: r.status === 'pending' ? r.next_attempt_at : null,
      createdAt: r.created_at,
      deliveredAt: r.delivered_at,
    }));
  }
}
