import { createPublicKey, randomUUID } from 'node:crypto';
import type { NotifyConfig } from '../../config.js';
import type { Actor } from '../../domain/actor.js';
import { AppError, badRequest, notFound } from '../../domain/errors.js';
import type { DeviceDto } from '../../domain/notify.js';
import { countDevices, type DeviceRow, deleteDevice, listDevices, upsertDevice } from '../../store/notify.js';
import type { Store } from '../../store/store.js';
import { resolveTarget, UrlRefused } from '../webhooks/guard.js';

/** Push devices per user (browsers and profiles). */
export const MAX_DEVICES_PER_USER = 20;

const toDto = (r: DeviceRow): DeviceDto => ({
  id: r.id,
  kind: 'webpush',
  endpoint: r.endpoint,
  label: r.label,
  createdAt: r.created_at,
  lastPushAt: r.last_push_at,
});

const b64urlBytes = (s: string) => Buffer.from(s, 'base64url');

/**
 * An uncompressed P-256 point (0x04, x, y) that is on the curve. Of the right shape only, a key is
 * stored and every push to it then fails to encrypt; node:crypto refuses a JWK whose point is not on
 * the curve (coordinates beyond the field included).
 */
function isP256Point(key: Buffer): boolean {
  if (key.length !== 65 || key[0] !== 0x04) return false;
  try {
    const jwk = { kty: 'EC', crv: 'P-256', x: key.subarray(1, 33).toString('base64url'), y: key.subarray(33).toString('base64url') };
    createPublicKey({ key: jwk, format: 'jwk' });
    return true;
  } catch {
    return false;
  }
}

/** `device.*`: a user's web push subscriptions. */
export class DeviceService {
  constructor(
    private readonly store: Store,
    private readonly config: NotifyConfig,
  ) {}

  /** The public VAPID key browsers subscribe with (null: web push is not configured). */
  vapidKey(): { publicKey: string | null } {
    return { publicKey: this.config.vapid?.publicKey ?? null };
  }

  async register(
    actor: Actor,
    input: { kind: 'webpush'; endpoint: string; keys: { p256dh: string; auth: string }; label?: string | null | undefined },
  ): Promise<DeviceDto> {
    if (!isP256Point(b64urlBytes(input.keys.p256dh))) {
      throw badRequest('keys.p256dh must be the base64url P-256 public key of the subscription (65 bytes)');
    }
    if (b64urlBytes(input.keys.auth).length !== 16) throw badRequest('keys.auth must be the base64url 16-byte auth secret of the subscription');
    await this.checkEndpoint(input.endpoint);
    const row = await this.store.transact(async (tx) => {
      // Concurrent registrations of the user count one after the other (the cap holds under a burst).
      await tx.advisoryLock('push-device-cap', actor.tenant, actor.id);
      const mine = await listDevices(tx.db, actor.tenant, actor.id);
      // An endpoint the user registered before is the same device again: not a new one at the cap.
      if (!mine.some((d) => d.endpoint === input.endpoint) && (await countDevices(tx.db, actor.tenant, actor.id)) >= MAX_DEVICES_PER_USER) {
        throw new AppError('PRECONDITION_FAILED', `a user has at most ${MAX_DEVICES_PER_USER} push devices: remove one first`);
      }
      return upsertDevice(tx.db, {
        id: randomUUID(),
        tenant: actor.tenant,
        userId: actor.id,
        kind: input.kind,
        endpoint: input.endpoint,
        p256dh: input.keys.p256dh,
        auth: input.keys.auth,
        label: input.label ?? null,
      });
    });
    return toDto(row);
  }

  async list(actor: Actor): Promise<DeviceDto[]> {
    return (await listDevices(this.store.db(), actor.tenant, actor.id)).map(toDto);
  }

  async remove(actor: Actor, id: string): Promise<{ ok: true }> {
    if (!(await deleteDevice(this.store.db(), actor.tenant, actor.id, id))) throw notFound('device');
    return { ok: true };
  }

  /** https and public (the webhooks' SSRF guard), unless PUSH_ALLOW_PRIVATE_URLS. */
  private async checkEndpoint(endpoint: string): Promise<void> {
    if (!this.config.allowPrivateUrls && !endpoint.startsWith('https://')) throw badRequest('endpoint refused: a push endpoint must be an https URL');
    try {
      await resolveTarget(endpoint, this.config.allowPrivateUrls);
    } catch (err) {
      if (err instanceof UrlRefused) throw badRequest(`endpoint refused: ${err.message}`);
      throw err;
    }
  }
}
