import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { parseMessageKeys } from '../config/keys.js';

const TAG_BYTES = 16;

/**
 * Encryption at rest for message bodies (bodies only: `metadata` and cards stay plain JSON, see
 * docs/API.md): AES-256-GCM with a key id per row. MESSAGE_KEYS holds
 * `kid:base64key` pairs separated by commas; the first key encrypts, every key still decrypts (rotation).
 */
export class Keyring {
  private readonly keys: Map<string, Buffer>;
  readonly activeId: string | null;

  constructor(spec: string | undefined) {
    ({ keys: this.keys, activeId: this.activeId } = parseMessageKeys(spec));
  }

  get enabled(): boolean {
    return this.activeId !== null;
  }

  /**
   * Returns the ciphertext in base64url with the id of the key used. Given `boundTo` (e.g. a room
   * and message id), it is authenticated as associated data: `v2.iv.tag.ciphertext`, which decrypts
   * only with the same `boundTo` (a body copied onto another message or room fails); without it,
   * `iv.tag.ciphertext`.
   */
  encrypt(plain: string, boundTo?: string): { keyId: string; text: string } {
    if (!this.activeId) throw new Error('no message key configured');
    const key = this.keys.get(this.activeId)!;
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    if (boundTo !== undefined) cipher.setAAD(Buffer.from(boundTo, 'utf8'));
    const ct = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
    const tag = cipher.getAuthTag();
    const sealed = `${iv.toString('base64url')}.${tag.toString('base64url')}.${ct.toString('base64url')}`;
    return { keyId: this.activeId, text: boundTo !== undefined ? `v2.${sealed}` : sealed };
  }

  /** The key ids configured, the active one first. */
  get keyIds(): string[] {
    return [...this.keys.keys()];
  }

  /** True when a body sealed with `keyId` as `text` is sealed the way `encrypt` seals now (active key, bound). */
  isCurrent(keyId: string, text: string): boolean {
    return keyId === this.activeId && text.startsWith('v2.');
  }

  /** The plain text; a `v2` ciphertext needs the `boundTo` it was sealed with. The tag must be 16 bytes. */
  decrypt(keyId: string, text: string, boundTo?: string): string {
    const key = this.keys.get(keyId);
    if (!key) throw new Error(`message key "${keyId}" is not configured`);
    const bound = text.startsWith('v2.');
    const [iv, tag, ct] = (bound ? text.slice(3) : text).split('.');
    if (!iv || !tag || ct === undefined) throw new Error('malformed encrypted body');
    const tagBytes = Buffer.from(tag, 'base64url');
    // A shortened tag would weaken the authentication: only the full 16 bytes are accepted.
    if (tagBytes.length !== TAG_BYTES) throw new Error('malformed encrypted body (tag length)');
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'), { authTagLength: TAG_BYTES });
    if (bound) {
      if (boundTo === undefined) throw new Error('this ciphertext is bound to a context that was not given');
      decipher.setAAD(Buffer.from(boundTo, 'utf8'));
    }
    decipher.setAuthTag(tagBytes);
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
  }
}
