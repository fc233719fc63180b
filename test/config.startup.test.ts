/**
 * Configuration read at start: an empty number variable counts as unset (never as 0), and values the
 * server would only fail on later (MESSAGE_KEYS, a multi-host DATABASE_URL) are refused by
 * `loadConfig` with one line naming the variable, not a stack trace from the start-up. So are limits
 * that contradict each other (a soft limit at or over its hard one), a REDIS_URL whose scheme ioredis
 * would misread, a database or Redis URL whose password does not read as written (never echoed), and a
 * NODE_ENV that is none of production, development and test.
 */
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, makeConfig, parseMultiHostUrl, PROJECT_ROOT, testEnv, uuid } from './fixture.js';

/** Runs `src/main.ts` with only `env` (plus PATH/HOME); resolves with its exit code and output once it exits. */
function runMain(env: Record<string, string>, timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/main.ts'],
      { cwd: PROJECT_ROOT, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env }, timeout: timeoutMs },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
    );
  });
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('configuration read at start', () => {
  it('an empty number variable (PORT=, DB_STATEMENT_TIMEOUT_MS=, ...) counts as unset, never as 0', () => {
    const defaults = makeConfig();
    // The project's own rule (src/config/env.ts `unsetIfEmpty`): "An empty variable (`FOO=` or
    // compose's `${FOO:-}`) counts as unset". Either the default or a ConfigError is acceptable; 0 is not.
    const cases: [string, (c: ReturnType<typeof loadConfig>) => number, number][] = [
      ['PORT', (c) => c.port, defaults.port],
      ['DB_STATEMENT_TIMEOUT_MS', (c) => c.dbStatementTimeoutMs, defaults.dbStatementTimeoutMs],
      ['PRESENCE_ROOM_MAX_MEMBERS', (c) => c.presenceRoomMaxMembers, defaults.presenceRoomMaxMembers],
      ['PUSH_TTL_SECONDS', (c) => c.notify.pushTtlSeconds, defaults.notify.pushTtlSeconds],
      ['NOTIFY_COALESCE_MS', (c) => c.notify.coalesceMs, defaults.notify.coalesceMs],
      ['RATE_SEND_BURST', (c) => c.limits.sendBurst, defaults.limits.sendBurst],
    ];
    const taken: Record<string, number | 'refused'> = {};
    for (const [name, read] of cases) {
      try {
        taken[name] = read(loadConfig({ [name]: '' }));
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        taken[name] = 'refused';
      }
    }
    expect(taken).toEqual(Object.fromEntries(cases.map(([name, , def]) => [name, expect.toBeOneOf([def, 'refused'])])));
  });

  it('a malformed MESSAGE_KEYS is refused by loadConfig with one line, not a stack trace from createApp', async () => {
    // loadConfig accepts it ...
    let configError: string | null = null;
    try {
      loadConfig({ MESSAGE_KEYS: 'not-a-key' });
    } catch (err) {
      configError = err instanceof ConfigError ? err.message : String(err);
    }
    // ... and the process dies later with an uncaught Error and its stack.
    const dataDir = mkdtempSync(join(tmpdir(), 'config-startup-'));
    dirs.push(dataDir);
    const run = await runMain({ DATA_DIR: dataDir, PORT: '0', MESSAGE_KEYS: 'not-a-key', LOG_LEVEL: 'warn' });
    expect({ configError, code: run.code, stackInStderr: /\n\s+at /.test(run.stderr) }).toEqual({
      configError: expect.stringMatching(/MESSAGE_KEYS/),
      code: 1,
      stackInStderr: false,
    });
  });

  it('MESSAGE_KEYS naming a key id twice, or one key under two ids, is refused: a rotation that reused the id kept sealing with the old key', () => {
    const oldKey = randomBytes(32).toString('base64');
    const newKey = randomBytes(32).toString('base64');
    // New key first and old kept, as a rotation goes, but the new key given the old id.
    expect(() => loadConfig({ MESSAGE_KEYS: `k1:${newKey},k1:${oldKey}` })).toThrow(new ConfigError('MESSAGE_KEYS key id "k1" is listed twice: a new key needs a new id'));
    expect(() => loadConfig({ MESSAGE_KEYS: `k2:${oldKey},k1:${oldKey}` })).toThrow(/MESSAGE_KEYS keys "k2" and "k1" are the same key/);
    expect(loadConfig({ MESSAGE_KEYS: `k2:${newKey},k1:${oldKey}` }).messageKeys).toBe(`k2:${newKey},k1:${oldKey}`);
  });

  it('a malformed multi-host DATABASE_URL is refused by loadConfig with one line, not a stack trace from openDatabase', async () => {
    const url = 'postgresql://u@db-a:5432,db-b:99999/chat';
    let configError: string | null = null;
    try {
      loadConfig({ DATABASE_URL: url });
    } catch (err) {
      configError = err instanceof ConfigError ? err.message : String(err);
    }
    const run = await runMain({ DATABASE_URL: url, PORT: '0', LOG_LEVEL: 'warn' });
    expect({ configError, code: run.code, stackInStderr: /\n\s+at /.test(run.stderr) }).toEqual({
      configError: expect.stringMatching(/DATABASE_URL/),
      code: 1,
      stackInStderr: false,
    });
  });

  it('limits that contradict each other are refused, one line per pair naming both variables and their values', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ WS_BUFFER_SOFT_BYTES: '16777216' }, /^WS_BUFFER_SOFT_BYTES \(16777216\) must be below WS_BUFFER_HARD_BYTES \(8388608, the default\)/],
      [{ WS_BUFFER_SOFT_BYTES: '65536', WS_BUFFER_HARD_BYTES: '65536' }, /^WS_BUFFER_SOFT_BYTES \(65536\) must be below WS_BUFFER_HARD_BYTES \(65536\)/],
      [{ TYPING_THROTTLE_MS: '10000' }, /^TYPING_THROTTLE_MS \(10000\) must be below TYPING_TTL_MS \(10000, the default\)/],
      [{ TYPING_TTL_MS: '2000' }, /^TYPING_THROTTLE_MS \(3000, the default\) must be below TYPING_TTL_MS \(2000\)/],
      [{ FILE_UPLOAD_TTL_SECONDS: '3600', FILE_UNATTACHED_TTL_SECONDS: '600' }, /^FILE_UPLOAD_TTL_SECONDS \(3600\) must be below FILE_UNATTACHED_TTL_SECONDS \(600\)/],
    ];
    const lines = cases.map(([env]) => refusal(env)?.split('\n'));
    const expected: unknown[] = cases.map(([, line]): unknown[] => ['invalid configuration:', expect.stringMatching(new RegExp(`^ {2}${line.source.slice(1)}`))]);
    expect(lines).toEqual(expected);
    // Two contradictions at once: both reported, so that one restart is enough to fix them.
    expect(refusal({ WS_BUFFER_SOFT_BYTES: '16777216', TYPING_THROTTLE_MS: '60000' })?.split('\n')).toEqual([
      'invalid configuration:',
      expect.stringMatching(/^ {2}WS_BUFFER_SOFT_BYTES \(16777216\)/),
      expect.stringMatching(/^ {2}TYPING_THROTTLE_MS \(60000\)/),
    ]);
    // Ordered pairs are accepted, the defaults included.
    const ordered: Record<string, string>[] = [{}, { WS_BUFFER_SOFT_BYTES: '8192', WS_BUFFER_HARD_BYTES: '65536' }, { TYPING_THROTTLE_MS: '0', TYPING_TTL_MS: '100' }, { FILE_UNATTACHED_TTL_SECONDS: '901' }];
    for (const env of ordered) {
      expect(refusal(env)).toBeNull();
    }
  });

  it('contradictory limits stop the start with that one line, not a stack trace or a server that runs', async () => {
    // A database nobody listens on: without the check the start fails there, with a stack.
    const run = await runMain({ DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/none', PORT: '0', WS_BUFFER_SOFT_BYTES: '16777216', LOG_LEVEL: 'warn' });
    expect({ code: run.code, stderr: run.stderr.trim().split('\n') }).toEqual({
      code: 1,
      stderr: ['invalid configuration:', expect.stringMatching(/^ {2}WS_BUFFER_SOFT_BYTES \(16777216\) must be below WS_BUFFER_HARD_BYTES \(8388608, the default\)/)],
    });
  });

  it('a SHUTDOWN_TIMEOUT_MS under 1000 ms is refused with one line naming it: the drain splits it between the sockets, the HTTP requests and the services\u2019 close', () => {
    for (const value of ['1', '500', '999']) {
      expect(refusal({ SHUTDOWN_TIMEOUT_MS: value })?.split('\n'), value).toEqual(['invalid configuration:', expect.stringMatching(/^ {2}SHUTDOWN_TIMEOUT_MS: .*at least 1000/)]);
    }
    expect([loadConfig({ SHUTDOWN_TIMEOUT_MS: '1000' }).shutdownTimeoutMs, loadConfig({}).shutdownTimeoutMs]).toEqual([1000, 10_000]);
  });

  it('a NODE_ENV other than production, development or test is refused (a typo would run without the production checks)', () => {
    const prod = { JWT_SECRET: 'x'.repeat(40), AUTH_ISSUER: 'https://id.example.com/', AUTH_AUDIENCE: 'chat' };
    for (const typo of ['prodution', 'Production', 'prod', 'staging']) {
      expect(refusal({ ...prod, NODE_ENV: typo }), typo).toMatch(new RegExp(`^invalid configuration:\\n {2}NODE_ENV: .*production, development or test.*"${typo}"`));
    }
    expect(loadConfig({ ...prod, NODE_ENV: 'production' }).env).toBe('production');
    for (const env of ['development', 'test']) expect(loadConfig({ NODE_ENV: env }).env).toBe(env);
    // Unset or empty: development, as before.
    expect([loadConfig({}).env, loadConfig({ NODE_ENV: '' }).env]).toEqual(['development', 'development']);
  });

  it('a REDIS_URL ioredis would misread is refused; redis://, rediss://, a unix socket and a bare host:port are kept', () => {
    // http:// and redis-sentinel:// with a path: ioredis takes the path for a unix socket; valkey://,
    // tcp:// and REDISS:// connect without TLS (ioredis turns it on for a lower-case rediss:// only).
    for (const url of ['http://u:hunter22@127.0.0.1:6379/', 'redis-sentinel://127.0.0.1:26379/mymaster', 'valkey://127.0.0.1:6379', 'valkeys://127.0.0.1:6380', 'tcp://127.0.0.1:6379', 'REDISS://127.0.0.1:6380', 'redis:/127.0.0.1:6379']) {
      const message = refusal({ REDIS_URL: url });
      expect(message, url).toMatch(/^invalid configuration:\n {2}REDIS_URL: .*redis:\/\/ or rediss:\/\//);
      // The line names the scheme, never the rest of the URL (a password).
      expect(message).not.toContain('hunter22');
    }
    for (const url of ['redis://127.0.0.1:6379', 'rediss://user:pass@redis.example.com:6380/2', 'redis://:pass@redis:6379/0', 'unix:///var/run/redis/redis.sock', '/var/run/redis/redis.sock', '127.0.0.1:6379', 'redis:6379', 'localhost']) {
      expect(loadConfig({ REDIS_URL: url }).redisUrl, url).toBe(url);
    }
    expect(loadConfig({ REDIS_URL: '' }).redisUrl).toBeUndefined();
  });
});

describe('database and Redis URLs whose password does not read as written (docs/OPERATIONS.md "Configuration checked at start")', () => {
  it('a database or Redis URL whose password holds a "/" (as base64 passwords do) stops the start with one line naming the variable, never the password and a stack trace', async () => {
    // A database and prefix of the test's own: a start that got past its configuration would use them.
    await using env = await testEnv('config-urls');
    // `openssl rand -base64` passwords hold "/" and "+"; written into the URL without
    // percent-encoding, the URL no longer parses as the operator meant it.
    const password = `Kx9/${uuid().slice(0, 8)}+Q==`;
    const base = { PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'warn', REDIS_PREFIX: env.prefix('ops-url') };
    const cases: Record<string, Record<string, string>> = {
      DATABASE_URL: { ...base, DATABASE_URL: `postgresql://postgres:${password}@127.0.0.1:5432/chat` },
      REDIS_URL: { ...base, DATABASE_URL: env.databaseUrl, REDIS_URL: `redis://:${password}@127.0.0.1:6379` },
      DATABASE_REPLICA_URLS: { ...base, DATABASE_URL: env.databaseUrl, REDIS_URL: env.redisUrl, DATABASE_REPLICA_URLS: `postgresql://postgres:${password}@127.0.0.1:5432/chat` },
    };
    const runs = await Promise.all(Object.entries(cases).map(async ([variable, vars]) => [variable, await runMain(vars)] as const));
    const seen = Object.fromEntries(
      runs.map(([variable, run]) => [
        variable,
        {
          code: run.code,
          passwordInOutput: (run.stdout + run.stderr).includes(password),
          stackInStderr: /\n\s+at /.test(run.stderr),
          namesTheVariable: run.stderr.includes(variable),
        },
      ]),
    );
    for (const [variable, run] of runs) console.log(`[config ${variable}] exit ${run.code}\n${run.stderr.split('\n').filter((l) => !/^\s+at /.test(l)).join('\n')}`);
    const refused = { code: 1, passwordInOutput: false, stackInStderr: false, namesTheVariable: true };
    expect(seen).toEqual({ DATABASE_URL: refused, REDIS_URL: refused, DATABASE_REPLICA_URLS: refused });
  }, 120_000);

  it('loadConfig refuses a / ? # or bad % escape in the password, a port that is not a number and a Redis database that is not one, naming the variable and the rule, never the password', () => {
    const secret = `S3cr${uuid().slice(0, 6)}`;
    const badPasswords = [`${secret}/x+Q==`, `12/${secret}`, `${secret}?x`, `9?${secret}`, `${secret}#x`, `${secret}%zz`, `${secret}%`];
    const rule = 'percent-encode / # ? % @ in the user and password';
    const messages: Record<string, string | null> = {};
    for (const pw of badPasswords) {
      messages[`DATABASE_URL ${pw}`] = refusal({ DATABASE_URL: `postgresql://chat:${pw}@db.example.com:5432/chat` });
      messages[`DATABASE_URL (several hosts) ${pw}`] = refusal({ DATABASE_URL: `postgresql://chat:${pw}@db-a:5432,db-b:5432/chat` });
      messages[`DATABASE_REPLICA_URLS ${pw}`] = refusal({ DATABASE_REPLICA_URLS: `postgresql://chat@r1:5432/chat,postgresql://chat:${pw}@r2:5432/chat` });
      messages[`REDIS_URL ${pw}`] = refusal({ REDIS_URL: `redis://:${pw}@redis.example.com:6379/0` });
      messages[`REDIS_URL (TLS, user) ${pw}`] = refusal({ REDIS_URL: `rediss://chat:${pw}@redis.example.com:6380` });
    }
    const seen = Object.fromEntries(
      Object.entries(messages).map(([key, message]) => [
        key,
        { namesTheVariable: message?.startsWith(`invalid configuration:\n  ${key.split(' ')[0]}: `) ?? false, givesTheRule: message?.includes(rule) ?? false, echoesThePassword: message?.includes(secret) ?? false },
      ]),
    );
    expect(seen).toEqual(Object.fromEntries(Object.keys(seen).map((key) => [key, { namesTheVariable: true, givesTheRule: true, echoesThePassword: false }])));
    // The replica is named by its place in the list.
    expect(messages[`DATABASE_REPLICA_URLS ${badPasswords[0]}`]).toContain('replica 2 of 2');
    // A port that is not a number, and a Redis database that is not one (ioredis would SELECT NaN).
    expect(refusal({ DATABASE_URL: `postgresql://chat:${secret}@db.example.com:54x/chat` })).toMatch(/^invalid configuration:\n {2}DATABASE_URL: .*port/);
    expect(refusal({ REDIS_URL: `redis://:${secret}@redis.example.com:63x79` })).toMatch(/^invalid configuration:\n {2}REDIS_URL: .*port/);
    expect(refusal({ REDIS_URL: `redis://:${secret}@redis.example.com:6379/cache` })).toMatch(/^invalid configuration:\n {2}REDIS_URL: .*database by number/);
  });

  it('URLs that read as written are kept: percent-encoded passwords, an @ in a password, no host (a socket directory), Redis databases', () => {
    const password = 'Kx9/ab+Q==?#%@';
    const encoded = encodeURIComponent(password);
    const kept = [
      `postgresql://chat:${encoded}@db.example.com:5432/chat`,
      'postgresql://chat:p@ss@db.example.com:5432/chat',
      'postgresql://chat:secret@/chat?host=/var/run/postgresql',
      'postgresql:///chat?host=/tmp',
      `postgres://chat:${encoded}@[::1]:5432/chat?sslmode=require`,
    ];
    for (const url of kept) expect(loadConfig({ DATABASE_URL: url }).databaseUrl, url).toBe(url);
    expect(loadConfig({ DATABASE_REPLICA_URLS: kept.slice(0, 2).join(',') }).databaseReplicaUrls).toEqual(kept.slice(0, 2));
    // Several hosts: the user and password end at the last @, as pg reads them.
    const multi = `postgresql://chat:p@ss@db-a:5432,db-b:5433/chat`;
    expect(loadConfig({ DATABASE_URL: multi }).databaseUrl).toBe(multi);
    expect(parseMultiHostUrl(multi)).toMatchObject({ hosts: [{ host: 'db-a', port: 5432 }, { host: 'db-b', port: 5433 }], firstUrl: 'postgresql://chat:p@ss@db-a:5432/chat' });
    for (const url of [`redis://:${encoded}@redis.example.com:6379/2`, 'redis://:p@ss@redis.example.com:6379', `rediss://chat:${encoded}@redis.example.com:6380/`, 'redis://redis.example.com:6379/0?family=6']) {
      expect(loadConfig({ REDIS_URL: url }).redisUrl, url).toBe(url);
    }
  });

  it('a REDIS_CLUSTER_NODES or REDIS_SENTINELS entry holding credentials is refused by its place in the list, never echoed', () => {
    const secret = `S3cr${uuid().slice(0, 6)}`;
    const cluster = refusal({ REDIS_CLUSTER_NODES: `r1:7000,chat:${secret}@r2:7001` });
    const sentinels = refusal({ REDIS_SENTINELS: `s1:26379,:${secret}@s2:26379`, REDIS_SENTINEL_NAME: 'main' });
    expect({ cluster, sentinels }).toEqual({
      cluster: expect.stringMatching(/^invalid configuration:\n {2}REDIS_CLUSTER_NODES: REDIS_CLUSTER_NODES entry 2: "\.\.\.@r2:7001" is not host:port \(credentials go in REDIS_USERNAME and REDIS_PASSWORD\)$/),
      sentinels: expect.stringMatching(/^invalid configuration:\n {2}REDIS_SENTINELS: REDIS_SENTINELS entry 2: "\.\.\.@s2:26379" is not host:port/),
    });
    expect([cluster, sentinels].filter((m) => m?.includes(secret))).toEqual([]);
  });
});

/** loadConfig's ConfigError message for `env`, or null when it is accepted. */
function refusal(env: Record<string, string>): string | null {
  try {
    loadConfig(env);
    return null;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.message;
  }
}

describe('empty variables and the documented configuration', () => {
  /** Every variable the environment schema reads (src/config.ts and src/config/*.ts). */
  function schemaVariables(): string[] {
    const files = [join(PROJECT_ROOT, 'src/config.ts'), ...readdirSync(join(PROJECT_ROOT, 'src/config')).map((f) => join(PROJECT_ROOT, 'src/config', f))];
    const names = new Set<string>();
    for (const file of files) for (const m of readFileSync(file, 'utf8').matchAll(/^ {2}([A-Z][A-Z0-9_]{2,}): /gm)) names.add(m[1]!);
    return [...names].sort();
  }

  it('an empty boolean variable (FOO= in an env file, or set empty by compose) counts as unset, as an empty number does', () => {
    const booleans = ['AUTH_DEV_LOGIN', 'AUTH_DEV_LOGIN_ROLES', 'DB_PREPARED_STATEMENTS', 'DB_SEND_PIPELINE', 'ACTIVITY_FEED', 'LOG_PRETTY',
      'WEBHOOK_ALLOW_PRIVATE_URLS', 'S3_FORCE_PATH_STYLE', 'PUSH_ALLOW_PRIVATE_URLS', 'REDIS_TLS', 'REDIS_SOLO'];
    const defaults = loadConfig({});
    for (const name of booleans) {
      expect(refusal({ [name]: '' }), `${name}= refused`).toBeNull();
      expect(loadConfig({ [name]: '' }), name).toEqual(defaults);
    }
  });

  it('every variable the server reads is named in README.md, docs/OPERATIONS.md or docs/SECURITY.md', () => {
    const docs = ['README.md', 'docs/OPERATIONS.md', 'docs/SECURITY.md'].map((f) => readFileSync(join(PROJECT_ROOT, f), 'utf8')).join('\n');
    // `RATE_*`-style rows name a family of variables.
    const families = [...docs.matchAll(/`([A-Z][A-Z0-9_]*_)\*`/g)].map((m) => m[1]!);
    const variables = schemaVariables();
    expect(variables.length).toBeGreaterThan(100);
    // Named as `NAME` or in an example, `NAME=value`.
    const missing = variables.filter((v) => !new RegExp(`\`${v}[\`=]`).test(docs) && !families.some((f) => v.startsWith(f)));
    expect(missing, 'variables read but documented nowhere').toEqual([]);
  });
});
