/**
 * What a node remembers of revocations (SessionService): bounded by their life. A revocation is kept
 * here as long as Redis keeps it (30 days); older ones are forgotten, so a node that runs for months
 * does not keep one entry per revocation ever made.
 */
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.js';
import { newCounters } from '../src/metrics.js';
import { MemoryBus } from '../src/realtime/memory-bus.js';
import { SessionService } from '../src/services/sessions.js';

const DAY = 24 * 3600 * 1000;

describe('revocations remembered by a node', () => {
  it('are forgotten once older than their 30 days; recent ones and their effect stay', () => {
    const sessions = new SessionService(new MemoryBus(), createLogger('silent'), newCounters(), { redisPrefix: 't:', subscriptionsPerConnection: 10 }, null);
    const remember = (sessions as unknown as { remember(key: string, at: number): void }).remember.bind(sessions);
    const known = () => (sessions as unknown as { revokedLocal: Map<string, number> }).revokedLocal;
    const now = Date.now();
    for (let i = 0; i < 1500; i++) remember(`default\u0000old-${i}`, now - 31 * DAY);
    remember('default\u0000recent', now - DAY);
    for (let i = 0; i < 499; i++) remember(`default\u0000new-${i}`, now);
    // The 2,000th revocation checked the map: the 1,500 past their life are gone.
    expect(known().size).toBe(500);
    expect(known().has('default\u0000old-0')).toBe(false);
    const actor = (id: string, iatMs: number) => ({ id, name: id, tenant: 'default', roles: [], iat: Math.floor(iatMs / 1000) });
    expect(sessions.revokedHere(actor('recent', now - 2 * DAY))).toBe(true);
    expect(sessions.revokedHere(actor('recent', now))).toBe(false);
    expect(sessions.revokedHere(actor('new-3', now - 1000))).toBe(true);
  });
});
