/**
 * Token verification settings (src/config.ts): defaults, the JWT_SECRET rules, what production
 * requires, the lifetime bounds; and the verifier's claim lookup and clock tolerance on their own
 * (no server, no database).
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, DEV_JWT_SECRET, loadConfig, readClaim, signHs256, TEST_AUTH, TEST_SECRET, TokenVerifier } from './fixture.js';

const SECRET = 'a-random-production-secret-0123456789';
const PROD = { NODE_ENV: 'production', JWT_SECRET: SECRET, AUTH_ISSUER: 'https://id.example.com/', AUTH_AUDIENCE: 'chat' };

describe('auth settings', () => {
  it('defaults: the development secret (outside production), no JWKS, no issuer or audience, the default claims', () => {
    const c = loadConfig({});
    expect(c.auth).toEqual({
      jwtSecret: DEV_JWT_SECRET,
      jwtSecretIsDev: true,
      jwks: null,
      issuer: null,
      issuerTemplate: null,
      audience: [],
      claims: { subject: 'sub', tenant: 'tenant', tenantRequired: false, name: 'name', roles: 'roles', email: 'email' },
      maxTokenTtlSeconds: 86_400,
      clockToleranceSeconds: 5,
    });
    expect(c.devLogin).toBe(true);
    expect(c.accessTokenTtlSeconds).toBe(43_200);
  });

  it('reads every variable; an audience list is split on commas; empty variables count as unset', () => {
    const auth = loadConfig({
      JWT_SECRET: SECRET,
      AUTH_JWKS_URL: 'https://keycloak.example.com/realms/acme/protocol/openid-connect/certs',
      AUTH_JWKS_COOLDOWN_SECONDS: '1',
      AUTH_JWKS_CACHE_SECONDS: '300',
      AUTH_JWKS_TIMEOUT_MS: '2500',
      AUTH_ISSUER: 'https://keycloak.example.com/realms/acme',
      AUTH_AUDIENCE: ' chat , chat-admin,, ',
      AUTH_SUBJECT_CLAIM: 'sub',
      AUTH_TENANT_CLAIM: 'org.id',
      AUTH_NAME_CLAIM: 'preferred_username',
      AUTH_ROLES_CLAIM: 'realm_access.roles',
      AUTH_MAX_TOKEN_TTL_SECONDS: '3600',
      AUTH_CLOCK_TOLERANCE_SECONDS: '30',
      ACCESS_TOKEN_TTL_SECONDS: '900',
    }).auth;
    expect(auth).toEqual({
      jwtSecret: SECRET,
      jwtSecretIsDev: false,
      jwks: { url: 'https://keycloak.example.com/realms/acme/protocol/openid-connect/certs', perTenant: false, cooldownSeconds: 1, cacheSeconds: 300, timeoutMs: 2500 },
      issuer: 'https://keycloak.example.com/realms/acme',
      issuerTemplate: null,
      audience: ['chat', 'chat-admin'],
      claims: { subject: 'sub', tenant: 'org.id', tenantRequired: true, name: 'preferred_username', roles: 'realm_access.roles', email: 'email' },
      maxTokenTtlSeconds: 3600,
      clockToleranceSeconds: 30,
    });
    const empty = loadConfig({ AUTH_JWKS_URL: '', AUTH_ISSUER: '', AUTH_AUDIENCE: '', AUTH_TENANT_CLAIM: '', AUTH_ROLES_CLAIM: '' }).auth;
    expect(empty).toMatchObject({ jwks: null, issuer: null, audience: [], claims: { tenant: 'tenant', tenantRequired: false, roles: 'roles' } });
    expect(loadConfig({ AUTH_JWKS_URL: 'http://127.0.0.1:8080/certs' }).auth.jwks).toEqual({ url: 'http://127.0.0.1:8080/certs', perTenant: false, cooldownSeconds: 30, cacheSeconds: 600, timeoutMs: 5000 });
  });

  it('refuses a JWKS URL that is not http(s), a claim name with spaces, and out-of-range numbers', () => {
    for (const url of ['ftp://id.example.com/certs', 'not a url', 'file:///etc/keys.json']) {
      expect(() => loadConfig({ AUTH_JWKS_URL: url })).toThrow(/AUTH_JWKS_URL must be the http\(s\) URL of a JSON Web Key Set/);
    }
    expect(() => loadConfig({ AUTH_ROLES_CLAIM: 'realm roles' })).toThrow(/AUTH_ROLES_CLAIM: a claim name has no spaces/);
    expect(() => loadConfig({ AUTH_JWKS_COOLDOWN_SECONDS: '-1' })).toThrow(/AUTH_JWKS_COOLDOWN_SECONDS/);
    // 0 would lift the bound on refetches for unknown key ids (test/auth.review.test.ts).
    expect(() => loadConfig({ AUTH_JWKS_COOLDOWN_SECONDS: '0' })).toThrow(/AUTH_JWKS_COOLDOWN_SECONDS: must be at least 1/);
    expect(() => loadConfig({ AUTH_CLOCK_TOLERANCE_SECONDS: '3600' })).toThrow(/AUTH_CLOCK_TOLERANCE_SECONDS/);
    expect(() => loadConfig({ AUTH_MAX_TOKEN_TTL_SECONDS: '0' })).toThrow(/AUTH_MAX_TOKEN_TTL_SECONDS/);
  });

  it('JWT_SECRET has at least 32 bytes (UTF-8), in every environment', () => {
    for (const secret of ['', 'x'.repeat(31), 'sixteen-chars-ok', 'é'.repeat(15)]) {
      expect(() => loadConfig({ JWT_SECRET: secret }), JSON.stringify(secret)).toThrow(ConfigError);
      expect(() => loadConfig({ JWT_SECRET: secret }), JSON.stringify(secret)).toThrow(/JWT_SECRET must be at least 32 bytes/);
    }
    expect(loadConfig({ JWT_SECRET: 'x'.repeat(32) }).auth.jwtSecret).toBe('x'.repeat(32));
    expect(loadConfig({ JWT_SECRET: 'é'.repeat(16) }).auth.jwtSecret).toBe('é'.repeat(16));
    expect(Buffer.byteLength(TEST_SECRET)).toBeGreaterThanOrEqual(32);
  });

  it('production: a secret or a JWKS, issuer and audience, and no secret published with the project', () => {
    expect(() => loadConfig({ ...PROD, JWT_SECRET: undefined })).toThrow(/JWT_SECRET or AUTH_JWKS_URL .* must be set when NODE_ENV=production/);
    expect(() => loadConfig({ ...PROD, AUTH_ISSUER: undefined, AUTH_AUDIENCE: undefined })).toThrow(/AUTH_ISSUER and AUTH_AUDIENCE must be set when NODE_ENV=production/);
    expect(() => loadConfig({ ...PROD, AUTH_AUDIENCE: ' , ' })).toThrow(/^AUTH_AUDIENCE must be set when NODE_ENV=production$/);
    expect(() => loadConfig({ ...PROD, AUTH_ISSUER: '' })).toThrow(/^AUTH_ISSUER must be set when NODE_ENV=production$/);
    for (const known of [DEV_JWT_SECRET, 'change-me-to-a-long-random-secret']) {
      expect(() => loadConfig({ ...PROD, JWT_SECRET: known })).toThrow(/JWT_SECRET is a value published with this project/);
      // Outside production they are accepted (the development default is what runs without JWT_SECRET).
      expect(loadConfig({ JWT_SECRET: known }).auth.jwtSecret).toBe(known);
    }
    const prod = loadConfig(PROD);
    expect(prod.auth).toMatchObject({ jwtSecret: SECRET, jwtSecretIsDev: false, issuer: 'https://id.example.com/', audience: ['chat'] });
    expect(prod.devLogin).toBe(false);
  });

  it('production with a JWKS: JWT_SECRET becomes optional (JWKS tokens only), and then dev login cannot be switched on', () => {
    const jwksOnly = { ...PROD, JWT_SECRET: undefined, AUTH_JWKS_URL: 'https://chat-test.eu.auth0.com/.well-known/jwks.json' };
    const c = loadConfig(jwksOnly);
    expect(c.auth).toMatchObject({ jwtSecret: null, jwtSecretIsDev: false });
    expect(c.devLogin).toBe(false);
    expect(() => loadConfig({ ...jwksOnly, AUTH_DEV_LOGIN: 'on' })).toThrow(/AUTH_DEV_LOGIN needs JWT_SECRET/);
    expect(loadConfig({ ...jwksOnly, JWT_SECRET: SECRET, AUTH_DEV_LOGIN: 'on' }).devLogin).toBe(true);
  });

  it('dev login is on by default only for the local demo (loopback, not production); roles and tenants only with AUTH_DEV_LOGIN_ROLES=1', () => {
    for (const HOST of ['127.0.0.1', 'localhost', '::1', '127.0.0.2']) {
      expect(loadConfig({ HOST }), HOST).toMatchObject({ devLogin: true, devLoginRoles: false });
    }
    for (const HOST of ['0.0.0.0', '::', '10.0.0.5', 'chat.internal']) {
      expect(loadConfig({ HOST }).devLogin, HOST).toBe(false);
      expect(loadConfig({ HOST, AUTH_DEV_LOGIN: '1' }).devLogin, HOST).toBe(true);
    }
    expect(loadConfig({ AUTH_DEV_LOGIN_ROLES: '1' })).toMatchObject({ devLogin: true, devLoginRoles: true });
    // Roles without dev login mean nothing.
    expect(loadConfig({ AUTH_DEV_LOGIN: '0', AUTH_DEV_LOGIN_ROLES: '1' })).toMatchObject({ devLogin: false, devLoginRoles: false });
  });

  it('ACCESS_TOKEN_TTL_SECONDS is at most AUTH_MAX_TOKEN_TTL_SECONDS', () => {
    expect(() => loadConfig({ AUTH_MAX_TOKEN_TTL_SECONDS: '3600' })).toThrow(
      /ACCESS_TOKEN_TTL_SECONDS \(43200\) must not exceed AUTH_MAX_TOKEN_TTL_SECONDS \(3600\)/,
    );
    expect(() => loadConfig({ ACCESS_TOKEN_TTL_SECONDS: '86401' })).toThrow(ConfigError);
    expect(loadConfig({ ACCESS_TOKEN_TTL_SECONDS: '86400' }).accessTokenTtlSeconds).toBe(86_400);
    expect(loadConfig({ AUTH_MAX_TOKEN_TTL_SECONDS: '3600', ACCESS_TOKEN_TTL_SECONDS: '3600' }).auth.maxTokenTtlSeconds).toBe(3600);
  });
});

describe('claim lookup', () => {
  const payload = {
    sub: 'u1',
    'https://chat.example.com/roles': ['admin'],
    'https://chat.example.com/claims': { tenant: 'globex' },
    realm_access: { roles: ['support'] },
    'a.b': { c: 'literal-then-path' },
    a: { b: { c: 'path-only' } },
    list: [{ x: 1 }],
  };

  it('takes the whole name as a key first, then walks the dotted path (longest key first at each step)', () => {
    expect(readClaim(payload, 'sub')).toBe('u1');
    expect(readClaim(payload, 'https://chat.example.com/roles')).toEqual(['admin']);
    expect(readClaim(payload, 'realm_access.roles')).toEqual(['support']);
    expect(readClaim(payload, 'https://chat.example.com/claims.tenant')).toBe('globex');
    expect(readClaim(payload, 'a.b.c')).toBe('literal-then-path');
    expect(readClaim(payload, 'realm_access.missing')).toBeUndefined();
    expect(readClaim(payload, 'sub.length')).toBeUndefined();
    expect(readClaim(payload, 'list.0.x')).toBeUndefined();
  });

  it('reads own keys only', () => {
    for (const name of ['__proto__', 'constructor', 'toString', 'realm_access.constructor', 'realm_access.__proto__']) {
      expect(readClaim(payload, name), name).toBeUndefined();
    }
  });
});

describe('the verifier on its own (HS256)', () => {
  const verifier = new TokenVerifier({ ...TEST_AUTH, clockToleranceSeconds: 5 });
  const now = () => Math.floor(Date.now() / 1000);
  const token = (extra: Record<string, unknown>) => signHs256({ sub: 'v', iat: now(), exp: now() + 600, ...extra }, TEST_SECRET);

  it('allows the clock tolerance for nbf and iat, not more', async () => {
    await expect(verifier.verify(token({ nbf: now() + 3 }))).resolves.toMatchObject({ id: 'v', tenant: 'default', roles: [], name: 'v' });
    await expect(verifier.verify(token({ nbf: now() + 30 }))).rejects.toThrow('access token is not valid yet (nbf)');
    await expect(verifier.verify(token({ iat: now() + 3 }))).resolves.toMatchObject({ id: 'v' });
    await expect(verifier.verify(token({ iat: now() + 30, exp: now() + 600 }))).rejects.toThrow('access token is issued in the future (iat)');
  });

  it('keeps exp and iat on the actor (expiry of open sockets, revocation), and refuses tokens that are too long', async () => {
    const exp = now() + 600;
    await expect(verifier.verify(token({ exp, iat: exp - 600 }))).resolves.toEqual({ id: 'v', name: 'v', tenant: 'default', roles: [], exp, iat: exp - 600 });
    await expect(verifier.verify(`${token({})}${'x'.repeat(8192)}`)).rejects.toThrow('invalid access token');
    await expect(verifier.verify('')).rejects.toMatchObject({ code: 'UNAUTHORIZED', message: 'invalid access token' });
  });

  it('cuts a long display name, skips one with control characters, and falls back to preferred_username, then the subject', async () => {
    expect((await verifier.verify(token({ name: 'n'.repeat(300) }))).name).toBe('n'.repeat(200));
    expect((await verifier.verify(token({ name: 'evil\nname', preferred_username: 'pat' }))).name).toBe('pat');
    expect((await verifier.verify(token({ name: 42 }))).name).toBe('v');
    await expect(verifier.verify(token({ sub: 'bad\u0000id' }))).rejects.toThrow(
      'access token subject (sub) must be a user id of at most 128 characters without whitespace or control characters',
    );
    await expect(verifier.verify(token({ sub: 'two words' }))).rejects.toThrow(/must be a user id/);
    // Half a surrogate pair passes the pattern but breaks every key built from the id (encodeURIComponent throws).
    await expect(verifier.verify(token({ sub: 'half\uD800' }))).rejects.toThrow(/must be a user id/);
    expect((await verifier.verify(token({ name: 'half\uDC00', preferred_username: 'pat' }))).name).toBe('pat');
    await expect(verifier.verify(token({ tenant: 'x'.repeat(65) }))).rejects.toThrow(
      'access token tenant (tenant) must be 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)',
    );
  });

  it('checks the signature itself (node:crypto) for a plain header and through jose otherwise, with the same verdicts', async () => {
    const strict = new TokenVerifier({ ...TEST_AUTH, issuer: 'https://id.example.com/', audience: ['chat'] });
    const claims = (extra: Record<string, unknown>) => ({ sub: 'v', iss: 'https://id.example.com/', aud: 'chat', iat: now(), exp: now() + 600, ...extra });
    const cases: [string, Record<string, unknown>][] = [
      ['valid', {}],
      ['wrong issuer', { iss: 'https://evil.example.com/' }],
      ['no issuer', { iss: undefined }],
      ['wrong audience', { aud: 'other' }],
      ['audience list with ours', { aud: ['other', 'chat'] }],
      ['expired', { iat: now() - 900, exp: now() - 300 }],
      ['no expiry', { exp: undefined }],
      ['not valid yet', { nbf: now() + 300 }],
      ['exp not a number', { exp: 'soon' }],
    ];
    const verdict = (p: Promise<unknown>) => p.then((a) => ({ ok: a }), (e: Error) => ({ error: e.message }));
    for (const [name, extra] of cases) {
      // `ext` is no member the quick check knows: that token goes through jose's jwtVerify.
      const plain = await verdict(strict.verify(signHs256(claims(extra), TEST_SECRET)));
      const viaJose = await verdict(strict.verify(signHs256(claims(extra), TEST_SECRET, { alg: 'HS256', typ: 'JWT', ext: 1 })));
      expect(plain, name).toEqual(viaJose);
      expect('ok' in plain, name).toBe(name.startsWith('valid') || name.startsWith('audience list'));
    }
    // A kid is a plain header member too.
    await expect(strict.verify(signHs256(claims({}), TEST_SECRET, { alg: 'HS256', kid: 'k1' }))).resolves.toMatchObject({ id: 'v' });

    const good = signHs256(claims({}), TEST_SECRET);
    const [h, p, sig] = good.split('.') as [string, string, string];
    const forged = Buffer.from(JSON.stringify(claims({ sub: 'admin' }))).toString('base64url');
    const flip = (c: string) => (c === 'A' ? 'B' : 'A');
    for (const bad of [
      `${h}.${forged}.${sig}`, // another payload under the same signature
      `${h}.${p}.${sig.slice(0, -1)}${flip(sig.at(-1)!)}`, // one character of the signature changed
      `${h}.${p}.${sig}=`, // padded
      `${h}.${p}.`, // no signature
      `${h}.${p}.${sig}.x`, // a fourth part
      signHs256(claims({}), `${TEST_SECRET}-other`), // another secret
    ]) {
      await expect(strict.verify(bad), bad).rejects.toThrow('invalid access token');
    }
    // A critical header extension jose does not know is refused (it never reaches the quick check).
    await expect(strict.verify(signHs256(claims({}), TEST_SECRET, { alg: 'HS256', crit: ['x-custom'], 'x-custom': 1 }))).rejects.toThrow('invalid access token');
  });

  it('restricts tenant ids to a safe alphabet: a separator in a tenant cannot make two tenants share a key', async () => {
    for (const tenant of ['a:b', 'a/b', 'a b', '-lead', '.', 'ünïcode', 'a%3Ab']) {
      await expect(verifier.verify(token({ tenant })), tenant).rejects.toThrow(/must be 1-64 of A-Z a-z 0-9/);
    }
    for (const tenant of ['a', 'acme-prod', 'org_1.eu', '0']) await expect(verifier.verify(token({ tenant }))).resolves.toMatchObject({ tenant });
    // Identity providers' subjects keep working, separators included.
    for (const sub of ['auth0|5f1c2d', 'google-oauth2|1234', 'pat@example.com', 'b:c']) await expect(verifier.verify(token({ sub }))).resolves.toMatchObject({ id: sub });
  });
});
