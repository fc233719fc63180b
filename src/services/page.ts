import { badRequest } from '../domain/errors.js';

/**
 * A page's limit: `limit`, or `fallback` when not given; BAD_REQUEST outside 1..`max` (the routers'
 * `PageLimit` refuses the same first; services called directly keep the rule too).
 */
export function pageLimit(limit: number | null | undefined, fallback: number, max: number): number {
  const n = limit ?? fallback;
  if (!Number.isInteger(n) || n < 1 || n > max) throw badRequest(`limit must be between 1 and ${max}`);
  return n;
}
