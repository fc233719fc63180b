import { z } from 'zod';

/** A configuration the server refuses to start with; the message names the variable. */
export class ConfigError extends Error {}

/** A boolean variable: 1/0, true/false, on/off, yes/no. */
export const bool = z
  .enum(['1', '0', 'true', 'false', 'on', 'off', 'yes', 'no'])
  .transform((v) => ['1', 'true', 'on', 'yes'].includes(v));

/** An empty variable (`FOO=` or compose's `${FOO:-}`) counts as unset. */
export const unsetIfEmpty = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (v === '' ? undefined : v), schema);
