/**
 * Configuration read at start: an empty number variable counts as unset (never as 0), and values the
 * server would only fail on later (MESSAGE_KEYS, a multi-host DATABASE_URL) are refused by
 * `loadConfig` with one line naming the variable, not a stack trace from the start-up.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, makeConfig, PROJECT_ROOT } from './fixture.js';

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
});
