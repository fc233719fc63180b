/**
 * The Redis Cluster slot of a key or shard channel: CRC16 (XMODEM) of the key, or of its hash
 * tag (the part between the first `{` and the next `}`, when not empty), modulo 16384.
 */
const TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const b of bytes) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ b) & 0xff]!;
  return crc;
}

/** Slots of a Redis Cluster. */
export const SLOTS = 16384;

export function keySlot(key: string): number {
  let part = key;
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) part = key.slice(open + 1, close);
  }
  return crc16(Buffer.from(part, 'utf8')) % SLOTS;
}
