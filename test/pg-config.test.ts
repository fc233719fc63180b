/** The PostgreSQL topology settings: several hosts in DATABASE_URL (src/store/pg-hosts.ts) and the read replicas (src/config.ts). */
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseMultiHostUrl } from './fixture.js';

describe('PostgreSQL topology config', () => {
  it('a URL of one host is used as it is', () => {
    for (const url of ['postgresql://u:p@db:5432/chat?sslmode=require', 'postgresql:///chat?host=/var/run/postgresql', 'postgres://db/chat']) {
      expect(parseMultiHostUrl(url)).toEqual({ hosts: [], firstUrl: url, targetSessionAttrs: 'any' });
    }
  });

  it('a comma list of hosts, as libpq writes it: read-write by default, the first host for the rest', () => {
    expect(parseMultiHostUrl('postgresql://u:p%40ss@db-a:5433,db-b,[::1]:6000/chat?sslmode=disable')).toEqual({
      hosts: [
        { host: 'db-a', port: 5433 },
        { host: 'db-b', port: 5432 },
        { host: '::1', port: 6000 },
      ],
      firstUrl: 'postgresql://u:p%40ss@db-a:5433/chat?sslmode=disable',
      targetSessionAttrs: 'read-write',
    });
    expect(parseMultiHostUrl('postgresql://u@a:1,b:2/chat?target_session_attrs=any').targetSessionAttrs).toBe('any');
    expect(parseMultiHostUrl('postgresql://u@a:1,b:2/chat?target_session_attrs=read-write&application_name=x').firstUrl).toBe(
      'postgresql://u@a:1/chat?application_name=x',
    );
    expect(() => parseMultiHostUrl('postgresql://u@a:1,b:2/chat?target_session_attrs=standby')).toThrow(/not supported/);
    expect(() => parseMultiHostUrl('postgresql://u@a:1,,b/chat')).toThrow(/cannot read the host/);
    expect(() => parseMultiHostUrl('postgresql://u@a:1,b:99999/chat')).toThrow(/bad port/);
  });

  it('read replicas: none by default; a comma list of URLs; a lag bound of 5 s unless set', () => {
    const none = loadConfig({});
    expect(none.databaseReplicaUrls).toEqual([]);
    expect(none.databaseReplicaMaxLagMs).toBe(5000);
    expect(loadConfig({ DATABASE_REPLICA_URLS: '' }).databaseReplicaUrls).toEqual([]);
    const two = loadConfig({ DATABASE_REPLICA_URLS: 'postgresql://u@r1:5432/chat, postgresql://u@r2:5432/chat', DATABASE_REPLICA_MAX_LAG_MS: '250' });
    expect(two.databaseReplicaUrls).toEqual(['postgresql://u@r1:5432/chat', 'postgresql://u@r2:5432/chat']);
    expect(two.databaseReplicaMaxLagMs).toBe(250);
    expect(() => loadConfig({ DATABASE_REPLICA_URLS: 'r1:5432' })).toThrow(ConfigError);
    expect(() => loadConfig({ DATABASE_REPLICA_MAX_LAG_MS: '-1' })).toThrow(ConfigError);
  });
});
