/**
 * Time-limited TURN credentials (RTC_TURN_URLS, RTC_TURN_SECRET, RTC_TURN_TTL_SECONDS: the "TURN
 * REST API" of coturn's `use-auth-secret`): the configuration and its errors; the credential
 * against vectors computed with openssl; `signal.config` minting one per call for the caller, in
 * process and over a real client; and a real coturn (test/fixture/turn.ts) that grants a TURN
 * allocation for what `signal.config` minted and refuses a tampered, expired or foreign one.
 */
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  actor,
  callerFor,
  clientFor,
  ConfigError,
  dispose,
  loadConfig,
  mintTurnCredential,
  testEnv,
  turnUserKey,
  type RtcTurnConfig,
  type TestEnv,
  type TestServer,
} from './fixture.js';
import { startTurnServer, turnAllocate, TURNUTILS_UCLIENT, type TurnServer } from './fixture/turn.js';

const URLS = 'turn:turn.example.com:3478?transport=udp, turns:turn.example.com:5349';
const SECRET = 'k3y-for-turn-vectors-0001';

describe('RTC_TURN_URLS, RTC_TURN_SECRET, RTC_TURN_TTL_SECONDS', () => {
  it('are off by default (empty counts as unset); set, they hold the URLs, the secret and a TTL of a day unless told', () => {
    expect(loadConfig({}).rtc.turn).toBeUndefined();
    expect(loadConfig({ RTC_TURN_URLS: '', RTC_TURN_SECRET: ' ', RTC_TURN_TTL_SECONDS: '' }).rtc.turn).toBeUndefined();
    expect(loadConfig({ RTC_TURN_URLS: URLS, RTC_TURN_SECRET: SECRET }).rtc).toEqual({
      iceServers: [],
      turn: { urls: ['turn:turn.example.com:3478?transport=udp', 'turns:turn.example.com:5349'], secret: SECRET, ttlSeconds: 86_400 },
    });
    // Alongside the static servers of RTC_ICE_SERVERS, which stay as they are.
    const rtc = loadConfig({
      RTC_ICE_SERVERS: '[{"urls":"stun:stun.example.com:3478"}]',
      RTC_TURN_URLS: 'turn:turn.example.com',
      RTC_TURN_SECRET: ` ${SECRET}\n`,
      RTC_TURN_TTL_SECONDS: '3600',
    }).rtc;
    expect(rtc).toEqual({ iceServers: [{ urls: ['stun:stun.example.com:3478'] }], turn: { urls: ['turn:turn.example.com'], secret: SECRET, ttlSeconds: 3600 } });
    expect(loadConfig({ RTC_TURN_URLS: URLS, RTC_TURN_SECRET: SECRET, RTC_TURN_TTL_SECONDS: '60' }).rtc.turn?.ttlSeconds).toBe(60);
    expect(loadConfig({ RTC_TURN_URLS: URLS, RTC_TURN_SECRET: SECRET, RTC_TURN_TTL_SECONDS: '604800' }).rtc.turn?.ttlSeconds).toBe(604_800);
    expect(loadConfig({ RTC_TURN_URLS: URLS, RTC_TURN_SECRET: 'x'.repeat(16) }).rtc.turn?.secret).toBe('x'.repeat(16));
  });

  it('refuse a half or wrong configuration with a ConfigError that names the variable', () => {
    const bad = (env: Record<string, string>, message: RegExp) => {
      expect(() => loadConfig(env)).toThrow(ConfigError);
      expect(() => loadConfig(env)).toThrow(message);
    };
    bad({ RTC_TURN_URLS: URLS }, /^RTC_TURN_URLS needs RTC_TURN_SECRET/);
    bad({ RTC_TURN_SECRET: SECRET }, /^RTC_TURN_SECRET is set but RTC_TURN_URLS is not/);
    bad({ RTC_TURN_TTL_SECONDS: '3600' }, /^RTC_TURN_TTL_SECONDS is set but RTC_TURN_URLS is not/);
    bad({ RTC_TURN_URLS: URLS, RTC_TURN_SECRET: 'x'.repeat(15) }, /^RTC_TURN_SECRET is too short: at least 16 characters/);
    bad({ RTC_TURN_URLS: URLS, RTC_TURN_SECRET: 'sixteen chars ok but spaced' }, /^RTC_TURN_SECRET must be printable ASCII without spaces/);
    bad({ RTC_TURN_URLS: URLS, RTC_TURN_SECRET: `${'x'.repeat(16)}é` }, /^RTC_TURN_SECRET must be printable ASCII/);
    bad({ RTC_TURN_URLS: 'stun:stun.example.com:3478', RTC_TURN_SECRET: SECRET }, /^invalid RTC_TURN_URLS .*0: each url must be a turn: or turns: URL/);
    bad({ RTC_TURN_URLS: 'turn:a.example.com, https://b.example.com', RTC_TURN_SECRET: SECRET }, /^invalid RTC_TURN_URLS .*1: each url must be a turn: or turns: URL/);
    bad({ RTC_TURN_URLS: 'turn:a.example.com turn:b.example.com', RTC_TURN_SECRET: SECRET }, /^invalid RTC_TURN_URLS/);
    bad({ RTC_TURN_URLS: ' , ,', RTC_TURN_SECRET: SECRET }, /^invalid RTC_TURN_URLS .*no URL/);
    bad({ RTC_TURN_URLS: Array.from({ length: 11 }, (_, i) => `turn:t${i}.example.com`).join(','), RTC_TURN_SECRET: SECRET }, /at most 10 URLs/);
    for (const ttl of ['59', '604801', '1.5', '-60', '1e4', 'a day']) {
      bad({ RTC_TURN_URLS: URLS, RTC_TURN_SECRET: SECRET, RTC_TURN_TTL_SECONDS: ttl }, /^RTC_TURN_TTL_SECONDS must be a whole number of seconds from 60 \(a minute\) to 604800 \(7 days\)/);
    }
  });
});

const TURN: RtcTurnConfig = { urls: ['turn:turn.example.com:3478'], secret: SECRET, ttlSeconds: 3600 };

/** HMAC-SHA1(secret, username), base64: the TURN REST API password, recomputed here to check a minted one. */
const restPassword = (secret: string, username: string) => createHmac('sha1', secret).update(username).digest('base64');

describe('a minted TURN credential', () => {
  it('matches vectors computed with openssl', () => {
    // user key: printf '%s' 'turn-user:["acme","alice"]' | openssl dgst -sha256 -hmac "$SECRET" -binary | head -c 16 | base64 | tr '+/' '-_' | tr -d '='
    // credential: printf '%s' "$USERNAME" | openssl dgst -sha1 -hmac "$SECRET" -binary | base64
    expect(turnUserKey(SECRET, 'acme', 'alice')).toBe('ipOe3JReqFtbdsBkgNfddQ');
    expect(turnUserKey(SECRET, 'other', 'alice')).toBe('9FhvkL_fPT1Y_CfTA_RfEA');
    expect(mintTurnCredential(TURN, { tenant: 'acme', id: 'alice' }, 1_700_000_000_000)).toEqual({
      server: { urls: ['turn:turn.example.com:3478'], username: '1700003600:ipOe3JReqFtbdsBkgNfddQ', credential: 'zsHQi86iL43U1KhuD2zgLvbrMv8=' },
      expiresAt: new Date(1_700_003_600_000),
    });
  });

  it('expires TTL seconds after it is minted: the unix expiry before the first ":", the moment in expiresAt', () => {
    const now = Date.UTC(2030, 0, 1, 12, 0, 0, 999);
    const a = mintTurnCredential({ ...TURN, ttlSeconds: 60 }, { tenant: 't', id: 'u' }, now);
    expect(a.server.username!.split(':')[0]).toBe(String(Math.floor(now / 1000) + 60));
    expect(a.expiresAt).toEqual(new Date(Math.floor(now / 1000) * 1000 + 60_000));
    const later = mintTurnCredential({ ...TURN, ttlSeconds: 60 }, { tenant: 't', id: 'u' }, now + 5000);
    expect(later.server.username).not.toBe(a.server.username);
    expect(later.server.credential).toBe(restPassword(SECRET, later.server.username!));
  });

  it('names the user by a key that is tenant-scoped, stable, has no ":" and says nothing of the tenant or the user id', () => {
    const users = [
      ['acme', 'alice'],
      ['globex', 'alice'],
      ['a:b', 'c'],
      ['a', 'b:c'],
      ['acme', '1700000000:x'],
      ['acme', 'ünïcødé user'],
    ] as const;
    const keys = users.map(([tenant, id]) => turnUserKey(SECRET, tenant, id));
    expect(new Set(keys).size).toBe(users.length);
    users.forEach(([tenant, id], i) => {
      const { username, credential } = mintTurnCredential(TURN, { tenant, id }, Date.now()).server;
      // coturn takes the digits before the first ':' as the expiry and the rest as the user.
      expect(username).toMatch(/^\d{10}:[A-Za-z0-9_-]{22}$/);
      expect(username!.slice(11)).toBe(keys[i]);
      expect(credential).toBe(restPassword(SECRET, username!));
    });
    expect(keys[0]).not.toMatch(/acme|alice/i);
    expect(turnUserKey(SECRET, 'acme', 'alice')).toBe(keys[0]);
    // Another secret, another key: nothing links the users of two deployments.
    expect(turnUserKey(`${SECRET}-2`, 'acme', 'alice')).not.toBe(keys[0]);
  });
});

describe('signal.config with RTC_TURN_URLS', () => {
  let env: TestEnv;
  let plain: TestServer;
  let withTurn: TestServer;
  const stun = { urls: ['stun:stun.example.com:3478'] };
  beforeAll(async () => {
    env = await testEnv('rtc-turn');
    plain = await env.startServer();
    withTurn = await env.startServer({ rtc: { iceServers: [stun], turn: TURN } });
  });
  afterAll(() => dispose(env));

  it('adds a TURN server with a credential minted for the caller, and when it expires', async () => {
    const before = Math.floor(Date.now() / 1000);
    const answer = await callerFor(withTurn.app, actor('turn-a', 'acme')).signal.config();
    const after = Math.floor(Date.now() / 1000);
    expect(answer.iceServers).toHaveLength(2);
    expect(answer.iceServers[0]).toEqual(stun);
    const minted = answer.iceServers[1]!;
    expect(minted.urls).toEqual(TURN.urls);
    const [expiry, key] = minted.username!.split(':');
    expect(Number(expiry)).toBeGreaterThanOrEqual(before + 3600);
    expect(Number(expiry)).toBeLessThanOrEqual(after + 3600);
    expect(key).toBe(turnUserKey(SECRET, 'acme', 'turn-a'));
    expect(minted.credential).toBe(restPassword(SECRET, minted.username!));
    expect(answer.expiresAt).toEqual(new Date(Number(expiry) * 1000));

    // Per caller: the same user id in another tenant gets another user.
    const other = await callerFor(withTurn.app, actor('turn-a', 'globex')).signal.config();
    expect(other.iceServers[1]!.username!.split(':')[1]).toBe(turnUserKey(SECRET, 'globex', 'turn-a'));
    expect(other.iceServers[1]!.username).not.toBe(minted.username);
  });

  it('answers as before without it: the static servers, no expiresAt', async () => {
    const answer = await callerFor(plain.app, actor('turn-b')).signal.config();
    expect(answer).toEqual({ iceServers: [] });
    expect('expiresAt' in answer).toBe(false);
  });

  it('reaches a real client over HTTP and over the WebSocket, expiresAt as a Date', async () => {
    for (const ws of [false, true]) {
      await using c = clientFor(withTurn.url, 'turn-c', { tenant: 'acme', ws });
      const answer = await c.trpc.signal.config.query();
      expect(answer.expiresAt).toBeInstanceOf(Date);
      const minted = answer.iceServers[1]!;
      expect(minted.username).toBe(`${answer.expiresAt!.getTime() / 1000}:${turnUserKey(SECRET, 'acme', 'turn-c')}`);
      expect(minted.credential).toBe(restPassword(SECRET, minted.username!));
    }
  });
});

describe('coturn (use-auth-secret) and the credentials signal.config mints', () => {
  const CURRENT = 'current-turn-secret-0123456789';
  /** A secret being rotated out: the TURN server still accepts it, this server no longer mints with it. */
  const PREVIOUS = 'previous-turn-secret-9876543210';
  let env: TestEnv;
  let turn: TurnServer;
  let server: TestServer;
  let turnConfig: RtcTurnConfig;
  beforeAll(async () => {
    turn = await startTurnServer({ secrets: [CURRENT, PREVIOUS] });
    env = await testEnv('rtc-coturn');
    turnConfig = { urls: [`turn:127.0.0.1:${turn.port}?transport=udp`], secret: CURRENT, ttlSeconds: 600 };
    server = await env.startServer({ rtc: { iceServers: [], turn: turnConfig } });
  });
  afterAll(() => dispose(env, turn));

  /** What `signal.config` hands `who`: the minted TURN server. */
  async function minted(id: string, tenant = 'acme') {
    const answer = await callerFor(server.app, actor(id, tenant)).signal.config();
    const s = answer.iceServers[0]!;
    return { username: s.username!, credential: s.credential! };
  }

  it('grants a TURN allocation for the minted credential', async () => {
    const { username, credential } = await minted('coturn-alice');
    const result = await turnAllocate(turn.port, username, credential);
    expect(result, turn.log()).toMatchObject({ ok: true, integrityHolds: true });
    expect(result.ok && result.relayed).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('refuses it tampered: another password, another user, a later expiry', async () => {
    const { username, credential } = await minted('coturn-bob');
    const [expiry, key] = username.split(':');
    const flipped = `${credential[0] === 'A' ? 'B' : 'A'}${credential.slice(1)}`;
    const refused = { ok: false, code: 401 };
    expect(await turnAllocate(turn.port, username, flipped)).toMatchObject(refused);
    expect(await turnAllocate(turn.port, `${expiry}:${turnUserKey(CURRENT, 'acme', 'coturn-carol')}`, credential)).toMatchObject(refused);
    expect(await turnAllocate(turn.port, `${Number(expiry) + 86_400}:${key}`, credential)).toMatchObject(refused);
    // A plain static username/password is no way in either.
    expect(await turnAllocate(turn.port, 'chat', 'static-password')).toMatchObject(refused);
  });

  it('refuses it expired, and one minted with a secret the TURN server does not have', async () => {
    const who = { tenant: 'acme', id: 'coturn-dave' };
    const expired = mintTurnCredential(turnConfig, who, Date.now() - (turnConfig.ttlSeconds + 5) * 1000).server;
    expect(await turnAllocate(turn.port, expired.username!, expired.credential!)).toMatchObject({ ok: false, code: 401 });
    const foreign = mintTurnCredential({ ...turnConfig, secret: 'some-other-secret-0123456789' }, who, Date.now()).server;
    expect(await turnAllocate(turn.port, foreign.username!, foreign.credential!)).toMatchObject({ ok: false, code: 401 });
    // The same user, now: accepted.
    const fresh = mintTurnCredential(turnConfig, who, Date.now()).server;
    expect(await turnAllocate(turn.port, fresh.username!, fresh.credential!)).toMatchObject({ ok: true });
  });

  it('accepts a credential of the previous secret while the TURN server still lists it (rotation)', async () => {
    const old = mintTurnCredential({ ...turnConfig, secret: PREVIOUS }, { tenant: 'acme', id: 'coturn-erin' }, Date.now()).server;
    expect(await turnAllocate(turn.port, old.username!, old.credential!)).toMatchObject({ ok: true });
  });

  it("relays media between two allocations of coturn's own client with the minted credential", async () => {
    const { username, credential } = await minted('coturn-frank');
    const run = promisify(execFile);
    // -y: two relayed endpoints send to each other; exit 0 only when the allocations and the relay worked.
    const uclient = (password: string) =>
      run(TURNUTILS_UCLIENT, ['-p', String(turn.port), '-u', username, '-w', password, '-y', '-c', '-n', '1', '127.0.0.1'], { timeout: 30_000 });
    const { stdout } = await uclient(credential);
    expect(stdout).toMatch(/tot_recv_msgs=[1-9]/);
    await expect(uclient(`x${credential}`)).rejects.toMatchObject({ stdout: expect.stringMatching(/Cannot complete Allocation/) });
  });
});
