/**
 * Puts `key` last in an insertion-ordered map (its latest use) and drops the first entries past
 * `max`: a bounded cache whose least recently used entry goes first.
 */
export function setNewest<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value as K);
}
