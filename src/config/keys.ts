import { ConfigError } from './env.js';

/**
 * MESSAGE_KEYS: `kid:base64key` pairs separated by commas (32-byte keys); the first key encrypts,
 * every key decrypts. Read at start (a malformed list is refused with the variable named) and by the
 * keyring (src/services/keyring.ts). Empty: no keys.
 */
export function parseMessageKeys(spec: string | undefined): { keys: Map<string, Buffer>; activeId: string | null } {
  const keys = new Map<string, Buffer>();
  let first: string | null = null;
  for (const part of (spec ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const idx = part.indexOf(':');
    if (idx <= 0) throw new ConfigError('MESSAGE_KEYS entries must look like kid:base64key');
    const kid = part.slice(0, idx);
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(kid)) throw new ConfigError(`MESSAGE_KEYS key id "${kid}" must be 1-32 of A-Z a-z 0-9 _ -`);
    const key = Buffer.from(part.slice(idx + 1), 'base64');
    if (key.length !== 32) throw new ConfigError(`MESSAGE_KEYS key "${kid}" must be 32 bytes (base64)`);
    // A rotation that gave the new key the old id would keep sealing with the old key (the later
    // entry replaced the first), and keys:reencrypt would count every row as current.
    if (keys.has(kid)) throw new ConfigError(`MESSAGE_KEYS key id "${kid}" is listed twice: a new key needs a new id`);
    for (const [other, bytes] of keys) {
      if (bytes.equals(key)) throw new ConfigError(`MESSAGE_KEYS keys "${other}" and "${kid}" are the same key: a new key needs new bytes`);
    }
    keys.set(kid, key);
    first ??= kid;
  }
  return { keys, activeId: first };
}
