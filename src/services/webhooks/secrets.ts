import type { Keyring } from '../keyring.js';

const SEALED = 'sealed:';

/**
 * Webhook secrets at rest. With MESSAGE_KEYS configured a secret is stored sealed with the first key
 * (`sealed:<kid>:<iv.tag.ciphertext>`, AES-256-GCM, src/services/keyring.ts), so reading the database
 * is not enough to forge a signature; without keys it is stored as given. Secrets stored before keys
 * were configured stay readable (and are sealed at their next rotation).
 */
export class SecretBox {
  constructor(private readonly keyring: Keyring) {}

  seal(secret: string): string {
    if (!this.keyring.enabled) return secret;
    const { keyId, text } = this.keyring.encrypt(secret);
    return `${SEALED}${keyId}:${text}`;
  }

  /** The id of the key a stored secret is sealed with (null: stored plain). */
  keyIdOf(stored: string): string | null {
    if (!stored.startsWith(SEALED)) return null;
    const rest = stored.slice(SEALED.length);
    return rest.slice(0, rest.indexOf(':'));
  }

  /** True when a stored secret is sealed with the active key (or keys are off and it is plain). */
  current(stored: string): boolean {
    return this.keyIdOf(stored) === this.keyring.activeId;
  }

  /** The secret as given; throws when its key is no longer configured. */
  open(stored: string): string {
    if (!stored.startsWith(SEALED)) return stored;
    const rest = stored.slice(SEALED.length);
    const i = rest.indexOf(':');
    return this.keyring.decrypt(rest.slice(0, i), rest.slice(i + 1));
  }
}
