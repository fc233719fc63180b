/**
 * The chat's procedures are called by the transport's own middleware chain (src/transport/call.ts,
 * about a seventh of tRPC's CPU per call), not through tRPC's `callTRPCProcedure`: a procedure
 * made lazy or given `experimental_caller` would silently fall back to the slower path.
 */
import { describe, expect, it } from 'vitest';
import { appRouter, chainOf } from './fixture/src.js';

describe('router calls', () => {
  it('every procedure of the router runs its chain in the transport', () => {
    const procedures = Object.entries(appRouter._def.procedures as unknown as Record<string, { _def: { type: string } }>);
    expect(procedures.length).toBeGreaterThan(50);
    const slow = procedures.filter(([path, p]) => chainOf(appRouter, path, p._def.type) === null).map(([path]) => path);
    expect(slow).toEqual([]);
  });
});
