/**
 * Sign-in with the product's identity provider: access tokens signed with RS256, ES256, PS256 and
 * EdDSA keys of a JWKS served by a local HTTP endpoint, checked for algorithm, issuer, audience,
 * expiry and lifetime; Keycloak- and Auth0-shaped claims mapped to the actor; a key rotation
 * without a restart; the cooldown that shields the provider from random key ids; and the
 * provider's outage (SERVICE_UNAVAILABLE, the server stays up and recovers by itself).
 * Servers take their auth settings from environment variables through loadConfig, as deployed.
 */
import { exportSPKI, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  dispose,
  errInfo,
  freePort,
  getJson,
  jwksServer,
  loadConfig,
  providerKey,
  rawClient,
  Scope,
  signHs256,
  signWith,
  TEST_SECRET,
  testEnv,
  tokenFor,
  waitFor,
  within,
  wsClient,
  type Frame,
  type JwksServer,
  type ProviderKey,
  type TestEnv,
  type TestServer,
  type TrpcHttpError,
  type TrpcHttpResult,
  TokenVerifier,
  AuthError,
} from './fixture.js';

const ISSUER = 'https://id.example.com/realms/chat';
const UNAVAILABLE = "cannot verify the access token now: the identity provider's keys could not be loaded (retry later)";
const nowS = () => Math.floor(Date.now() / 1000);

/** The auth section of a config read from these variables, as a deployment sets them. */
const authFromEnv = (vars: Record<string, string>) => loadConfig(vars).auth;

interface Me {
  id: string;
  name: string;
  tenant: string;
  roles: string[];
}

/** An HTTP answer without its headers. */
const statusAndBody = ({ status, body }: { status: number; body: unknown }) => ({ status, body });

/** auth.me over HTTP with a bearer token: the actor, or the error's status, code and message. */
async function httpMe(srv: TestServer, token: string): Promise<{ status: number; me?: Me; code?: string; message?: string }> {
  const r = await getJson<Partial<TrpcHttpResult<Me>> & Partial<TrpcHttpError>>(`${srv.url}/trpc/auth.me`, {
    headers: { authorization: `Bearer ${token}` },
  });
  const { result, error } = r.body;
  if (result) return { status: r.status, me: result.data.json };
  return { status: r.status, code: error?.json.data.code, message: error?.json.message };
}

/** auth.me through the tRPC WebSocket client (the token in connectionParams). */
async function wsMe(srv: TestServer, token: string): Promise<{ me?: Me; code?: string | undefined; message?: string }> {
  await using c = wsClient({ url: srv.url, token });
  return await c.trpc.auth.me.query().then(
    (me) => ({ me }),
    (err: unknown) => {
      const { code, message } = errInfo(err);
      return { code, message };
    },
  );
}

/** A valid payload of the provider for `sub` (issuer, audience, 10 minutes), with `extra` (undefined removes a claim). */
function claims(sub: string, extra: Record<string, unknown> = {}): JWTPayload {
  const now = nowS();
  return { iss: ISSUER, aud: 'chat-api', sub, name: `User ${sub}`, iat: now, exp: now + 600, ...extra };
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

let env: TestEnv;
/** What the file opened besides the env (the JWKS endpoints). */
const open = new Scope();
let jwks: JwksServer;
let rsa: ProviderKey;
let ec: ProviderKey;
let ed: ProviderKey;
let ps: ProviderKey;
/** A: JWKS plus the shared secret, issuer and audiences checked, default claims, the shortest cooldown (1 s). */
let A: TestServer;
const A_COOLDOWN_S = 1;

/**
 * Waits until A's cooldown has passed since its last fetch of the key set: since `quietSince`, a
 * moment after that fetch (no fetch made since), the next unknown key id fetches again.
 */
const pastCooldown = (quietSince: number) => waitFor(() => Date.now() - quietSince > A_COOLDOWN_S * 1000, "A's cooldown to pass", { timeoutMs: 5000 });

beforeAll(async () => {
  env = await testEnv('auth_jwks');
  [rsa, ec, ed, ps] = await Promise.all([providerKey('RS256'), providerKey('ES256'), providerKey('EdDSA'), providerKey('PS256')]);
  jwks = open.use(await jwksServer([rsa.jwk, ec.jwk, ed.jwk, ps.jwk]));
  A = await env.startServer({
    auth: authFromEnv({
      JWT_SECRET: TEST_SECRET,
      AUTH_JWKS_URL: jwks.url,
      AUTH_JWKS_COOLDOWN_SECONDS: String(A_COOLDOWN_S),
      AUTH_ISSUER: ISSUER,
      AUTH_AUDIENCE: 'chat-api, chat-admin',
    }),
  });
});

afterAll(() => dispose(open, env));

describe('tokens signed with the identity provider keys', () => {
  it('RS256, ES256, PS256 and EdDSA tokens work for auth.me over HTTP and over the WebSocket', async () => {
    for (const key of [rsa, ec, ps, ed]) {
      const sub = `user-${key.alg.toLowerCase()}`;
      const token = await signWith(key, claims(sub, { tenant: 'acme', roles: ['support'] }));
      const expected = { id: sub, name: `User ${sub}`, tenant: 'acme', roles: ['support'] };
      expect(await httpMe(A, token), key.alg).toMatchObject({ status: 200, me: expected });
      expect(await wsMe(A, token), key.alg).toMatchObject({ me: expected });
    }
    // A second audience of the list works too, as does an `aud` array holding one of them.
    expect((await httpMe(A, await signWith(ec, claims('aud-2', { aud: 'chat-admin' })))).me?.id).toBe('aud-2');
    expect((await httpMe(A, await signWith(ec, claims('aud-3', { aud: ['userinfo', 'chat-api'] })))).me?.id).toBe('aud-3');
  });

  it('HS256 tokens of the shared secret are still accepted next to the JWKS, under the same issuer and audience checks', async () => {
    expect((await httpMe(A, tokenFor('hs-user', { issuer: ISSUER, audience: 'chat-api' }))).me?.id).toBe('hs-user');
    expect(await httpMe(A, tokenFor('hs-user', { issuer: ISSUER, audience: 'elsewhere' }))).toMatchObject({
      status: 401,
      message: 'access token is not meant for this service (aud)',
    });
  });

  it('refuses wrong or missing iss/aud, no exp, too long a lifetime, expired, not yet valid, unknown keys, algorithm confusion and alg none: UNAUTHORIZED with the reason, over HTTP and WebSocket', async () => {
    const now = nowS();
    const stranger = await providerKey('RS256');
    const pem = await exportSPKI(rsa.publicKey);
    const unsigned = (payload: JWTPayload) => `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`;
    const cases: [string, string, string][] = [
      ['wrong audience', await signWith(rsa, claims('x', { aud: 'another-service' })), 'access token is not meant for this service (aud)'],
      ['no audience', await signWith(rsa, claims('x', { aud: undefined })), 'access token has no audience (aud)'],
      ['wrong issuer', await signWith(ec, claims('x', { iss: 'https://evil.example.com/' })), 'access token is from another issuer (iss)'],
      ['no issuer', await signWith(ec, claims('x', { iss: undefined })), 'access token has no issuer (iss)'],
      ['no exp', await signWith(ed, claims('x', { exp: undefined })), 'access token has no expiry (exp)'],
      ['exp - iat over the maximum', await signWith(rsa, claims('x', { exp: now + 86_400 + 60 })), 'access token lifetime exceeds the maximum of 86400 s'],
      ['no iat, exp too far ahead', await signWith(rsa, claims('x', { iat: undefined, exp: now + 2 * 86_400 })), 'access token lifetime exceeds the maximum of 86400 s'],
      ['expired', await signWith(ec, claims('x', { iat: now - 1200, exp: now - 600 })), 'access token expired'],
      ['not valid yet', await signWith(ec, claims('x', { nbf: now + 600, exp: now + 1200 })), 'access token is not valid yet (nbf)'],
      ['issued in the future', await signWith(ed, claims('x', { iat: now + 600, exp: now + 1200 })), 'access token is issued in the future (iat)'],
      ['signed by an unknown key', await signWith(stranger, claims('x')), 'access token is signed by an unknown key (kid)'],
      ['another key under a known kid', await signWith(stranger, claims('x'), { kid: rsa.kid }), 'invalid access token'],
      ['HS256 with the public key (PEM) as secret', signHs256(claims('x'), pem, { alg: 'HS256', kid: rsa.kid }), 'invalid access token'],
      ['HS256 with the public JWK as secret', signHs256(claims('x'), JSON.stringify(rsa.jwk), { alg: 'HS256' }), 'invalid access token'],
      ['alg none', unsigned(claims('x')), 'access token algorithm none is not accepted by this server'],
      ['alg HS512', signHs256(claims('x'), TEST_SECRET, { alg: 'HS512' }), 'access token algorithm HS512 is not accepted by this server'],
      ['an RS256 header on an HMAC signature', signHs256(claims('x'), pem, { alg: 'RS256', kid: rsa.kid }), 'invalid access token'],
    ];
    for (const [name, token, message] of cases) {
      expect(await httpMe(A, token), name).toEqual({ status: 401, code: 'UNAUTHORIZED', message });
      expect(await wsMe(A, token), name).toEqual({ code: 'UNAUTHORIZED', message });
    }
  });

  it('a key rotation needs no restart: a token of a new key fetches the set exactly once more', async () => {
    // The cache holds the current set: a token of a served key fetches nothing.
    expect((await httpMe(A, await signWith(rsa, claims('before-rotation')))).status).toBe(200);
    const before = jwks.fetches;
    const quietSince = Date.now();
    expect((await httpMe(A, await signWith(ec, claims('cached')))).status).toBe(200);
    expect(jwks.fetches).toBe(before);

    await pastCooldown(quietSince);
    const next = await providerKey('RS256');
    jwks.keys = [next.jwk, ec.jwk, ed.jwk, ps.jwk];
    const token = await signWith(next, claims('after-rotation'));
    expect(await httpMe(A, token)).toMatchObject({ status: 200, me: { id: 'after-rotation' } });
    expect(jwks.fetches).toBe(before + 1);
    // The new set is cached now: the same key over the WebSocket, and the other keys, fetch nothing.
    expect((await wsMe(A, token)).me?.id).toBe('after-rotation');
    expect((await httpMe(A, await signWith(ed, claims('still-there')))).status).toBe(200);
    expect(jwks.fetches).toBe(before + 1);
    // The retired key is gone from the set: its tokens are refused.
    expect((await httpMe(A, await signWith(rsa, claims('retired')))).message).toBe('access token is signed by an unknown key (kid)');
    jwks.keys = [rsa.jwk, ec.jwk, ed.jwk, ps.jwk, next.jwk];
    // The tests below sign with the first key again: once past the cooldown, its next token fetches it back.
    const fetched = Date.now();
    await pastCooldown(fetched);
    expect((await httpMe(A, await signWith(rsa, claims('restored')))).status).toBe(200);
  });

  it('roles: an array or a space-separated string; up to 64 with the provider extras; more, or malformed, refused. No tenant claim: tenant `default`', async () => {
    const extras = Array.from({ length: 60 }, (_, i) => `provider-role-${i}`);
    const many = await httpMe(A, await signWith(rsa, claims('many', { roles: ['offline_access', 'uma_authorization', 'admin', ...extras] })));
    expect(many.me?.roles).toHaveLength(63);
    expect(many.me?.roles).toContain('admin');
    expect(many.me?.tenant).toBe('default');
    expect((await httpMe(A, await signWith(rsa, claims('spaced', { roles: 'admin  support' })))).me?.roles).toEqual(['admin', 'support']);
    const refused: [unknown, string][] = [
      [[...extras, 'a', 'b', 'c', 'd', 'e'], 'access token has more than 64 roles (roles)'],
      [[42], 'access token claim roles must be a list of role names'],
      [{ admin: true }, 'access token claim roles must be a list of role names'],
      [['x'.repeat(129)], 'access token has an invalid role name (roles)'],
    ];
    for (const [roles, message] of refused) expect(await httpMe(A, await signWith(rsa, claims('bad-roles', { roles })))).toMatchObject({ status: 401, message });
    expect(await httpMe(A, await signWith(rsa, claims('x', { sub: undefined })))).toMatchObject({ status: 401, message: 'access token has no subject (sub)' });
    expect(await httpMe(A, await signWith(rsa, claims('x'.repeat(129))))).toMatchObject({
      status: 401,
      message: 'access token subject (sub) must be a user id of at most 128 characters without whitespace or control characters',
    });
  });

  it('auth.refresh swaps in a token of another provider key on the live socket; another user is FORBIDDEN', async () => {
    await using c = wsClient({ url: A.url, token: await signWith(rsa, claims('refresher', { exp: nowS() + 60 })) });
    expect((await c.trpc.auth.me.query()).id).toBe('refresher');
    const exp = nowS() + 900;
    const res = await c.trpc.auth.refresh.mutate({ token: await signWith(ed, claims('refresher', { exp })) });
    expect(res).toEqual({ connection: true, expiresAt: new Date(exp * 1000) });
    expect((await c.trpc.auth.me.query()).expiresAt).toEqual(new Date(exp * 1000));
    const other = await c.trpc.auth.refresh.mutate({ token: await signWith(ed, claims('someone-else')) }).catch((err: unknown) => errInfo(err));
    expect(other).toMatchObject({ code: 'FORBIDDEN' });
    const wrongAud = await c.trpc.auth.refresh.mutate({ token: await signWith(ed, claims('refresher', { aud: 'x' })) }).catch((err: unknown) => errInfo(err));
    expect(wrongAud).toMatchObject({ code: 'UNAUTHORIZED', message: 'access token is not meant for this service (aud)' });
  });
});

describe('Keycloak-shaped tokens (realm roles, preferred_username, a tenant attribute)', () => {
  const KC_ISSUER = 'https://keycloak.example.com/realms/acme';
  let kc: JwksServer;
  let kcKey: ProviderKey;
  /** JWKS only (no shared secret), as in production; AUTH_TENANT_CLAIM set, so a tenant is required; a long cooldown. */
  let K: TestServer;

  beforeAll(async () => {
    kcKey = await providerKey('RS256');
    kc = open.use(await jwksServer([kcKey.jwk]));
    const auth = authFromEnv({
      NODE_ENV: 'production',
      AUTH_JWKS_URL: kc.url,
      AUTH_JWKS_COOLDOWN_SECONDS: '3600',
      AUTH_ISSUER: KC_ISSUER,
      AUTH_AUDIENCE: 'chat',
      AUTH_TENANT_CLAIM: 'tenant',
      AUTH_ROLES_CLAIM: 'realm_access.roles',
    });
    expect(auth.jwtSecret).toBeNull();
    K = await env.startServer({ auth, devLogin: false });
  });

  /** An access token as Keycloak issues it, with an audience mapper for `chat` and a `tenant` user attribute mapper. */
  function keycloakClaims(extra: Record<string, unknown> = {}): JWTPayload {
    const now = nowS();
    return {
      exp: now + 300,
      iat: now,
      jti: 'onrtac:5f6c1c4e',
      iss: KC_ISSUER,
      aud: ['chat', 'account'],
      sub: '0b6f7f1e-3c1a-4f4e-9a53-2f0d6c5e1a77',
      typ: 'Bearer',
      azp: 'chat-web',
      sid: '7a2e1c3d',
      scope: 'openid profile email',
      realm_access: { roles: ['offline_access', 'default-roles-acme', 'uma_authorization', 'admin'] },
      resource_access: { account: { roles: ['manage-account', 'view-profile'] } },
      email_verified: true,
      preferred_username: 'kim',
      email: 'kim@acme.example',
      tenant: 'acme',
      ...extra,
    };
  }

  it('maps sub, preferred_username (or name), the tenant attribute and realm_access.roles to the actor', async () => {
    const token = await signWith(kcKey, keycloakClaims());
    const expected = { id: '0b6f7f1e-3c1a-4f4e-9a53-2f0d6c5e1a77', name: 'kim', tenant: 'acme', roles: ['offline_access', 'default-roles-acme', 'uma_authorization', 'admin'] };
    expect(await httpMe(K, token)).toMatchObject({ status: 200, me: expected });
    expect(await wsMe(K, token)).toMatchObject({ me: expected });
    expect((await httpMe(K, await signWith(kcKey, keycloakClaims({ name: 'Kim Keller' })))).me?.name).toBe('Kim Keller');
    // The realm role operator opens /admin/stats (verified by the same verifier); the tenant's admin
    // and a plain user get 403.
    const operator = await signWith(kcKey, keycloakClaims({ realm_access: { roles: ['offline_access', 'operator'] } }));
    const stats = await getJson(`${K.url}/admin/stats`, { headers: { authorization: `Bearer ${operator}` } });
    expect(stats.status).toBe(200);
    expect((await getJson(`${K.url}/admin/stats`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(403);
    const plain = await signWith(kcKey, keycloakClaims({ realm_access: { roles: ['offline_access'] } }));
    expect((await getJson(`${K.url}/admin/stats`, { headers: { authorization: `Bearer ${plain}` } })).status).toBe(403);
    expect(statusAndBody(await getJson(`${K.url}/admin/stats`, { headers: { authorization: `Bearer ${await signWith(kcKey, keycloakClaims({ aud: 'account' }))}` } }))).toEqual({
      status: 401,
      body: { error: 'admin token required (Authorization: Bearer): access token is not meant for this service (aud)' },
    });
  });

  it('never guesses a tenant: without the tenant claim the token is refused', async () => {
    const token = await signWith(kcKey, keycloakClaims({ tenant: undefined }));
    expect(await httpMe(K, token)).toMatchObject({ status: 401, code: 'UNAUTHORIZED', message: 'access token has no tenant (tenant)' });
    expect(await wsMe(K, token)).toEqual({ code: 'UNAUTHORIZED', message: 'access token has no tenant (tenant)' });
    expect((await httpMe(K, await signWith(kcKey, keycloakClaims({ tenant: '' })))).message).toBe(
      'access token tenant (tenant) must be 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)',
    );
  });

  it('without a shared secret, HS256 is refused outright (also HS256 made with the public key)', async () => {
    const pem = await exportSPKI(kcKey.publicKey);
    for (const token of [signHs256(keycloakClaims(), pem, { alg: 'HS256', kid: kcKey.kid }), tokenFor('kim', { issuer: KC_ISSUER, audience: 'chat' })]) {
      expect(await httpMe(K, token)).toMatchObject({ status: 401, message: 'access token algorithm HS256 is not accepted by this server' });
    }
  });

  it('within the cooldown, tokens with unknown key ids do not reach the provider', async () => {
    expect((await httpMe(K, await signWith(kcKey, keycloakClaims()))).status).toBe(200);
    const before = kc.fetches;
    for (let i = 0; i < 5; i++) {
      const token = await signWith(kcKey, keycloakClaims(), { kid: `random-${i}` });
      expect((await httpMe(K, token)).message).toBe('access token is signed by an unknown key (kid)');
    }
    expect(kc.fetches).toBe(before);
  });
});

describe('Auth0-shaped tokens (namespaced custom claims)', () => {
  const AUTH0_ISSUER = 'https://chat-test.eu.auth0.com/';
  const NS = 'https://chat.example.com';
  let a0Key: ProviderKey;
  let Z: TestServer;

  beforeAll(async () => {
    a0Key = await providerKey('RS256');
    const a0 = open.use(await jwksServer([a0Key.jwk]));
    Z = await env.startServer({
      auth: authFromEnv({
        JWT_SECRET: TEST_SECRET,
        AUTH_JWKS_URL: a0.url,
        AUTH_ISSUER: AUTH0_ISSUER,
        AUTH_AUDIENCE: `${NS}/api`,
        AUTH_TENANT_CLAIM: `${NS}/tenant`,
        AUTH_NAME_CLAIM: `${NS}/name`,
        AUTH_ROLES_CLAIM: `${NS}/roles`,
      }),
    });
  });

  /** An Auth0 access token for an API, with claims added by a post-login Action. */
  function auth0Claims(extra: Record<string, unknown> = {}): JWTPayload {
    const now = nowS();
    return {
      iss: AUTH0_ISSUER,
      sub: 'auth0|65f0c0ffee1234',
      aud: [`${NS}/api`, `${AUTH0_ISSUER}userinfo`],
      iat: now,
      exp: now + 86_400,
      scope: 'openid profile email',
      azp: 'Zq3xY9',
      permissions: ['read:messages'],
      [`${NS}/roles`]: ['support', 'admin'],
      [`${NS}/tenant`]: 'globex',
      [`${NS}/name`]: 'Ada Lovelace',
      ...extra,
    };
  }

  it('maps the namespaced URL claims (dots and all) to the actor; the name falls back to the subject', async () => {
    const token = await signWith(a0Key, auth0Claims());
    const expected = { id: 'auth0|65f0c0ffee1234', name: 'Ada Lovelace', tenant: 'globex', roles: ['support', 'admin'] };
    expect(await httpMe(Z, token)).toMatchObject({ status: 200, me: expected });
    expect(await wsMe(Z, token)).toMatchObject({ me: expected });
    const bare = await httpMe(Z, await signWith(a0Key, auth0Claims({ [`${NS}/name`]: undefined, [`${NS}/roles`]: undefined })));
    expect(bare.me).toMatchObject({ id: 'auth0|65f0c0ffee1234', name: 'auth0|65f0c0ffee1234', roles: [] });
    expect((await httpMe(Z, await signWith(a0Key, auth0Claims({ [`${NS}/tenant`]: undefined })))).message).toBe(
      `access token has no tenant (${NS}/tenant)`,
    );
  });
});

describe('the identity provider is down', () => {
  it('unreachable: SERVICE_UNAVAILABLE (HTTP 503, and on the WebSocket before it closes); the server stays up and HS256 still works', async () => {
    const port = await freePort();
    const key = await providerKey('ES256');
    const D = await env.startServer({
      auth: authFromEnv({ JWT_SECRET: TEST_SECRET, AUTH_JWKS_URL: `http://127.0.0.1:${port}/jwks.json`, AUTH_JWKS_TIMEOUT_MS: '2000' }),
    });
    const token = await signWith(key, claims('outage-user', { iss: undefined, aud: undefined }));
    expect(await httpMe(D, token)).toEqual({ status: 503, code: 'SERVICE_UNAVAILABLE', message: UNAVAILABLE });
    const stats = await getJson(`${D.url}/admin/stats`, { headers: { authorization: `Bearer ${token}` } });
    expect(statusAndBody(stats)).toEqual({ status: 503, body: { error: UNAVAILABLE } });

    // A WebSocket: the connection is refused with SERVICE_UNAVAILABLE (tRPC's error frame without
    // an id), then closed, so that its client reconnects (with backoff) and authenticates again.
    using raw = rawClient(D.url, { token });
    const refused = await raw.waitFrame((f: Frame) => f.id === null && f.error !== undefined, 'the connection error');
    expect(refused.error).toMatchObject({ message: UNAVAILABLE, data: { code: 'SERVICE_UNAVAILABLE' } });
    expect(await within(raw.closed, 5000, 'the socket to close')).toEqual({ code: 1005, reason: '' });

    expect((await getJson(`${D.url}/healthz`)).status).toBe(200);
    expect((await httpMe(D, tokenFor('hs-during-outage'))).me?.id).toBe('hs-during-outage');
    // Counted apart from refused tokens (chat_auth_unavailable_total): the HTTP call, /admin/stats, the socket.
    expect(D.app.services.deps.counters.authUnavailable).toBe(3);
  });

  it('past AUTH_JWKS_CACHE_SECONDS, a failed refetch leaves the keys already fetched working (for up to a day), without asking again within the cooldown; a key id they lack is SERVICE_UNAVAILABLE', async () => {
    const key = await providerKey('ES256');
    const idp = open.use(await jwksServer([key.jwk]));
    const v = new TokenVerifier(authFromEnv({ JWT_SECRET: TEST_SECRET, AUTH_JWKS_URL: idp.url, AUTH_JWKS_CACHE_SECONDS: '1' }));
    const verdict = (token: string) =>
      v.verify(token).then(
        (a) => a.id,
        (err: unknown) => (err instanceof AuthError ? { error: err.message, unavailable: err.unavailable } : Promise.reject(err)),
      );
    const token = await signWith(key, claims('stale-keys', { iss: undefined, aud: undefined }));
    expect(await verdict(token)).toBe('stale-keys');
    idp.mode = { kind: 'status', status: 503 };
    const realNow = Date.now.bind(Date);
    let ahead = 2000;
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + ahead);
    try {
      const asked = idp.fetches;
      expect(await verdict(token)).toBe('stale-keys');
      // Within the cooldown (30 s) after the failed fetch the provider is not asked again: a key id
      // the held keys lack cannot be told from a new one.
      expect(await verdict(await signWith(key, claims('x', { iss: undefined, aud: undefined }), { kid: 'made-up' }))).toEqual({ error: UNAVAILABLE, unavailable: true });
      expect(await verdict(token)).toBe('stale-keys');
      expect(idp.fetches).toBe(asked + 1);
      ahead = 25 * 3600_000;
      expect(await verdict(token)).toEqual({ error: UNAVAILABLE, unavailable: true });
      // Back up: the first token after the cooldown fetches the set again.
      ahead = 40_000;
      idp.mode = { kind: 'keys' };
      expect(await verdict(token)).toBe('stale-keys');
      expect(idp.fetches).toBe(asked + 3);
    } finally {
      clock.mockRestore();
    }
  });

  it('answering 503, then not answering (fetch timeout): SERVICE_UNAVAILABLE; back up, tokens work without a restart and the client gets in by itself', async () => {
    const key = await providerKey('EdDSA');
    const idp = open.use(await jwksServer([key.jwk]));
    idp.mode = { kind: 'status', status: 503 };
    const E = await env.startServer({
      auth: authFromEnv({ JWT_SECRET: TEST_SECRET, AUTH_JWKS_URL: idp.url, AUTH_JWKS_TIMEOUT_MS: '300' }),
    });
    const token = await signWith(key, claims('comeback', { iss: undefined, aud: undefined }));
    expect(await httpMe(E, token)).toMatchObject({ status: 503, message: UNAVAILABLE });
    // A failed fetch starts no cooldown: the next token asks again.
    const asked = idp.fetches;
    idp.mode = { kind: 'hang' };
    expect(await httpMe(E, token)).toMatchObject({ status: 503, message: UNAVAILABLE });
    expect(idp.fetches).toBe(asked + 1);

    // A WebSocket client that connects during the outage gets in once the provider is back.
    idp.mode = { kind: 'status', status: 503 };
    await using c = wsClient({ url: E.url, token, retryDelayMs: () => 20 });
    expect(errInfo(await c.trpc.auth.me.query().catch((err: unknown) => err)).code ?? 'closed').toMatch(/SERVICE_UNAVAILABLE|closed/);
    idp.mode = { kind: 'keys' };
    const me = await waitFor(() => c.trpc.auth.me.query().then((m) => m.id, () => null), 'auth.me after the provider is back', { timeoutMs: 10_000, everyMs: 50 });
    expect(me).toBe('comeback');
    expect(c.opens).toBeGreaterThan(1);
    expect(await httpMe(E, token)).toMatchObject({ status: 200, me: { id: 'comeback' } });
  });
});
