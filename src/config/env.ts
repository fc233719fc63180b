import { z } from 'zod';

/** A configuration the server refuses to start with; the message names the variable. */
export class ConfigError extends Error {}

/** A boolean variable: 1/0, true/false, on/off, yes/no. */
export const bool = z
  .enum(['1', '0', 'true', 'false', 'on', 'off', 'yes', 'no'])
  .transform((v) => ['1', 'true', 'on', 'yes'].includes(v));

/** An empty variable (`FOO=` or compose's `${FOO:-}`) counts as unset. */
export const unsetIfEmpty = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === '' ? undefined : v), schema);

/** An optional boolean variable; empty counts as unset (its default), as for the number variables. */
export const optionalBool = unsetIfEmpty(bool.optional());

/** The advice for a user or password that does not read as written. */
export const URL_CREDENTIALS_RULE = 'percent-encode / # ? % @ in the user and password (encodeURIComponent)';

/**
 * What keeps the user, password, hosts or ports of a `scheme://user:password@host:port/...` URL
 * from reading as written, or null (also for a string without `scheme://`). The drivers end the
 * host part at the first `/`, `?` or `#`: one of those in a password (as base64 passwords hold)
 * leaves the `@` behind it in the path, where pg and ioredis read a host, a database or a port out
 * of the password, then fail with the URL, password included, in their error. The answer never
 * quotes the URL.
 */
export function urlCredentialsProblem(url: string): string | null {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)(.*)$/s.exec(url);
  if (!m) return null;
  const [, authority = '', rest = ''] = m;
  if (rest.includes('@')) return `an @ after the host (a / ? or # in the user or password ends the host there); ${URL_CREDENTIALS_RULE}`;
  // The last @ ends the user and password (as both drivers read it): an @ inside them is kept.
  const at = authority.lastIndexOf('@');
  for (const part of at < 0 ? [] : authority.slice(0, at).split(':')) {
    try {
      decodeURIComponent(part);
    } catch {
      return `a % in the user or password that is not a %XX escape; ${URL_CREDENTIALS_RULE}`;
    }
  }
  for (const hostPort of authority.slice(at + 1).split(',')) {
    const port = /^(?:\[[^\]]*\]|[^:]*)(?::(.*))?$/s.exec(hostPort)?.[1] ?? '';
    if (!/^\d{0,5}$/.test(port) || Number(port) > 65535) return 'a port that is not a number up to 65535';
  }
  return null;
}
