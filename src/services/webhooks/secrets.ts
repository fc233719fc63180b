import type { Keyring } from '../keyring.js';

const SEALED = 'sealed:';

/** The endpoint a secret belongs to: its sealed form opens for this endpoint only. */
export interface SecretOwner {
  tenant: string;
  id: string;
}

/** What a sealed secret is bound to (AES-GCM associated data): its tenant and endpoint. */
const boundTo = (owner: SecretOwner) => `webhook:${owner.tenant}:${owner.id}`;

/**
 * Webhook secrets at rest. With MESSAGE_KEYS configured a secret is stored sealed with the first key
 * (`sealed:<kid>:v2.<iv.tag.ciphertext>`, AES-256-GCM, src/services/keyring.ts) and bound to its
 * tenant and endpoint, so reading the database is not enough to forge a signature, and a sealed
 * secret copied onto another endpoint's row does not open there; without keys it is stored as
 * given. Secrets stored before keys were configured (or sealed before the binding) stay readable,
 * and are sealed anew at their next rotation or by the re-encryption job.
 */
export class SecretBox {
  constructor(private readonly keyring: Keyring) {}

  seal(secret: string, owner: SecretOwner): string {
    if (!this.keyring.enabled) return secret;
    const { keyId, text } = this.keyring.encrypt(secret, boundTo(owner));
    return `${SEALED}${keyId}:${text}`;
  }

  /** The id of the key a stored secret is sealed with (null: stored plain). */
  keyIdOf(stored: string): string | null {
    if (!stored.startsWith(SEALED)) return null;
    const rest = stored.slice(SEALED.length);
    return rest.slice(0, rest.indexOf(':'));
  }

  /** True when a stored secret is sealed as `seal` seals now: with the active key and bound (or keys are off and it is plain). */
  current(stored: string): boolean {
    const keyId = this.keyIdOf(stored);
    if (keyId === null) return this.keyring.activeId === null;
    return this.keyring.isCurrent(keyId, stored.slice(SEALED.length + keyId.length + 1));
  }

  /** The secret as given; throws when its key is no longer configured or it was sealed for another endpoint. */
  open(stored: string, owner: SecretOwner): string {
    if (!stored.startsWith(SEALED)) return stored;
    const rest = stored.slice(SEALED.length);
    const i = rest.indexOf(':');
    return this.keyring.decrypt(rest.slice(0, i), rest.slice(i + 1), boundTo(owner));
  }
}
