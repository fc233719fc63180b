/**
 * Redis topology settings (src/config/redis.ts): exactly one of REDIS_URL, REDIS_CLUSTER_NODES and
 * REDIS_SENTINELS (+ REDIS_SENTINEL_NAME); conflicting settings are refused with a message that
 * names them.
 */
import { describe, expect, it } from 'vitest';
import { describeTopology, redisTopologyOf } from '../src/realtime/redis-topology.js';
import { keySlot } from '../src/realtime/redis-slot.js';
import { ConfigError, loadConfig } from './fixture.js';

const load = (env: Record<string, string>) => loadConfig(env);

describe('Redis topology settings', () => {
  it('REDIS_URL alone: one server; nothing: no Redis', () => {
    expect(redisTopologyOf(load({ REDIS_URL: 'redis://127.0.0.1:6379' }))).toEqual({ kind: 'single', url: 'redis://127.0.0.1:6379' });
    expect(redisTopologyOf(load({}))).toBeNull();
  });

  it('REDIS_SOLO: on unless turned off; anything else is refused', () => {
    expect(load({ REDIS_URL: 'redis://127.0.0.1:6379' }).redisSolo).toBe(true);
    expect(load({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_SOLO: '0' }).redisSolo).toBe(false);
    expect(load({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_SOLO: 'off' }).redisSolo).toBe(false);
    expect(load({ REDIS_URL: 'redis://127.0.0.1:6379', REDIS_SOLO: '' }).redisSolo).toBe(true);
    expect(() => load({ REDIS_SOLO: 'maybe' })).toThrow(ConfigError);
  });

  it('REDIS_CLUSTER_NODES with REDIS_PASSWORD and REDIS_TLS: a Cluster', () => {
    const c = load({ REDIS_CLUSTER_NODES: 'r1:7000, r2:7001,[::1]:7002', REDIS_PASSWORD: 'pw', REDIS_TLS: '1' });
    expect(c.redisTopology).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'r1', port: 7000 },
        { host: 'r2', port: 7001 },
        { host: '::1', port: 7002 },
      ],
      username: undefined,
      password: 'pw',
      tls: true,
    });
    expect(describeTopology(redisTopologyOf(c)!)).toBe('cluster r1:7000,r2:7001,::1:7002');
  });

  it('REDIS_SENTINELS with REDIS_SENTINEL_NAME: Sentinel', () => {
    const c = load({ REDIS_SENTINELS: 's1:26379,s2:26379,s3:26379', REDIS_SENTINEL_NAME: 'chat', REDIS_SENTINEL_PASSWORD: 'spw' });
    expect(c.redisTopology).toMatchObject({ kind: 'sentinel', name: 'chat', sentinelPassword: 'spw', tls: false });
    expect(c.redisUrl).toBeUndefined();
  });

  it('refuses conflicting or incomplete settings, naming them', () => {
    const refused = (env: Record<string, string>, message: RegExp) => expect(() => load(env)).toThrow(message);
    refused({ REDIS_URL: 'redis://x:6379', REDIS_CLUSTER_NODES: 'r1:7000' }, /REDIS_URL and REDIS_CLUSTER_NODES are set: choose one/);
    refused({ REDIS_CLUSTER_NODES: 'r1:7000', REDIS_SENTINELS: 's1:26379', REDIS_SENTINEL_NAME: 'm' }, /REDIS_CLUSTER_NODES and REDIS_SENTINELS/);
    refused({ REDIS_SENTINELS: 's1:26379' }, /REDIS_SENTINELS needs REDIS_SENTINEL_NAME/);
    refused({ REDIS_SENTINEL_NAME: 'm' }, /REDIS_SENTINEL_NAME is set without REDIS_SENTINELS/);
    refused({ REDIS_URL: 'redis://x:6379', REDIS_PASSWORD: 'pw' }, /put the credentials and TLS in the URL/);
    refused({ REDIS_TLS: '1' }, /without a Redis/);
    refused({ REDIS_CLUSTER_NODES: 'r1' }, /"r1" is not host:port/);
    refused({ REDIS_CLUSTER_NODES: 'r1:7000', REDIS_PREFIX: 'a{b}:' }, /REDIS_PREFIX must not contain/);
    expect(() => load({ REDIS_SENTINELS: 's1:26379' })).toThrow(ConfigError);
    // A config built in code with both is refused where the connections are made.
    expect(() => redisTopologyOf({ redisUrl: 'redis://x', redisTopology: load({ REDIS_CLUSTER_NODES: 'r1:7000' }).redisTopology })).toThrow(/choose one/);
  });

  it('slots as Redis computes them (CLUSTER KEYSLOT), hash tags included', () => {
    // Reference values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
    expect(keySlot('123456789')).toBe(12739);
    expect(keySlot('foo')).toBe(12182);
    expect(keySlot('chat:{room:x}')).toBe(keySlot('room:x'));
    expect(keySlot('chat:{presence}:conn:t:u')).toBe(keySlot('chat:{presence}:all'));
  });
});
