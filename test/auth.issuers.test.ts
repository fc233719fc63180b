/**
 * An issuer per tenant (AUTH_ISSUER with `{tenant}`): a Keycloak realm per tenant, each with its own
 * key set (AUTH_JWKS_URL with `{tenant}`), and a directory per tenant signed with one key set (Entra
 * ID's `https://login.microsoftonline.com/{tenant}/v2.0`). The tenant is the one the token's issuer
 * names; a tenant claim must repeat it; keys of one tenant never pass for another; a tenant the
 * provider does not know costs it one request per cooldown, and made-up tenants never lock real ones out. Key sets are served over HTTP on
 * 127.0.0.1 as a provider serves them.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt, type JWK, type JWTPayload } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AuthError,
  configFailure,
  dispose,
  getJson,
  jwksServer,
  loadConfig,
  NEW_TENANTS_PER_10S,
  NEW_TENANTS_PER_SOURCE_PER_10S,
  providerKey,
  Scope,
  signHs256,
  signWith,
  TEST_SECRET,
  testEnv,
  TokenSigner,
  TokenVerifier,
  waitFor,
  wsClient,
  type JwksServer,
  type ProviderKey,
  type TestEnv,
  type TestServer,
  type TrpcHttpResult,
} from './fixture.js';

const UNAVAILABLE = "cannot verify the access token now: the identity provider's keys could not be loaded (retry later)";
const nowS = () => Math.floor(Date.now() / 1000);

/** A Keycloak stand-in: `/realms/<realm>/certs` for the realms it has, 404 for the others; fetches counted per realm. */
interface RealmServer extends AsyncDisposable {
  readonly base: string;
  readonly fetches: Map<string, number>;
}
async function realmServer(realms: Record<string, JWK[]>): Promise<RealmServer> {
  const fetches = new Map<string, number>();
  const server = createServer((req, res) => {
    const realm = /^\/realms\/([^/]+)\/certs$/.exec(req.url ?? '')?.[1];
    if (realm !== undefined) fetches.set(realm, (fetches.get(realm) ?? 0) + 1);
    const keys = realm !== undefined ? realms[realm] : undefined;
    if (!keys) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Realm does not exist');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    fetches,
    [Symbol.asyncDispose]: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

const open = new Scope();
let realms: RealmServer;
let acme: ProviderKey;
let globex: ProviderKey;
/** AUTH_* of a deployment with a realm per tenant. */
let realmEnv: Record<string, string>;
const issuerOf = (tenant: string) => `${realms.base}/realms/${tenant}`;
const claims = (iss: string, sub: string, extra: Record<string, unknown> = {}): JWTPayload => ({ iss, aud: 'chat', sub, iat: nowS(), exp: nowS() + 600, ...extra });

/** The actor of a token, or the AuthError's message (and whether the provider was unavailable). */
async function verdict(v: TokenVerifier, token: string, source?: string): Promise<{ tenant: string; id: string } | { error: string; unavailable: boolean }> {
  try {
    const a = await v.verify(token, source);
    return { tenant: a.tenant, id: a.id };
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    return { error: err.message, unavailable: err.unavailable };
  }
}

beforeAll(async () => {
  [acme, globex] = await Promise.all([providerKey('RS256'), providerKey('ES256')]);
  realms = open.use(await realmServer({ acme: [acme.jwk], globex: [globex.jwk] }));
  realmEnv = {
    JWT_SECRET: TEST_SECRET,
    AUTH_ISSUER: `${realms.base}/realms/{tenant}`,
    AUTH_JWKS_URL: `${realms.base}/realms/{tenant}/certs`,
    AUTH_AUDIENCE: 'chat',
    AUTH_JWKS_COOLDOWN_SECONDS: '30',
  };
});
afterAll(() => open.close());

describe('AUTH_ISSUER and AUTH_JWKS_URL with {tenant}', () => {
  it('read as a template; the key set URL may name the tenant in its path only, and only with an issuer that names it', () => {
    const auth = loadConfig({ AUTH_ISSUER: 'https://id.example.com/realms/{tenant}', AUTH_JWKS_URL: 'https://id.example.com/realms/{tenant}/protocol/openid-connect/certs' }).auth;
    expect(auth.issuerTemplate).toEqual({ prefix: 'https://id.example.com/realms/', suffix: '' });
    expect(auth.jwks).toMatchObject({ url: 'https://id.example.com/realms/{tenant}/protocol/openid-connect/certs', perTenant: true });
    expect(loadConfig({ AUTH_ISSUER: 'https://login.example.com/{tenant}/v2.0', AUTH_JWKS_URL: 'https://login.example.com/common/keys' }).auth).toMatchObject({
      issuerTemplate: { prefix: 'https://login.example.com/', suffix: '/v2.0' },
      jwks: { perTenant: false },
    });
    expect(configFailure({ AUTH_ISSUER: 'https://id.example.com/{tenant}/{tenant}' })).toContain('AUTH_ISSUER names {tenant} more than once');
    expect(configFailure({ AUTH_ISSUER: 'https://id.example.com/realms/chat', AUTH_JWKS_URL: 'https://id.example.com/realms/{tenant}/certs' })).toContain(
      'AUTH_JWKS_URL names {tenant}: AUTH_ISSUER must name it too',
    );
    // A tenant id may hold dots: in the host, a token could name a key server of its own.
    expect(configFailure({ AUTH_ISSUER: 'https://{tenant}/', AUTH_JWKS_URL: 'https://{tenant}/keys' })).toContain('AUTH_JWKS_URL may name {tenant} in its path only');
    expect(configFailure({ AUTH_ISSUER: 'https://id.example.com/{tenant}', AUTH_JWKS_URL: 'https://{tenant}.keys.example.com/x' })).toContain('in its path only');
    expect(configFailure({ AUTH_ISSUER: 'https://id.example.com/{tenant}', AUTH_JWKS_URL: 'https://keys.example.com:{tenant}/x' })).toContain('AUTH_JWKS_URL must be the http(s) URL');
  });
});

describe('a realm per tenant (a key set per tenant)', () => {
  it("the issuer's tenant is the token's; a tenant claim must repeat it; one tenant's key never passes for another", async () => {
    const v = new TokenVerifier(loadConfig(realmEnv).auth);
    expect(await verdict(v, await signWith(acme, claims(issuerOf('acme'), 'ann')))).toEqual({ tenant: 'acme', id: 'ann' });
    expect(await verdict(v, await signWith(globex, claims(issuerOf('globex'), 'bob', { tenant: 'globex' })))).toEqual({ tenant: 'globex', id: 'bob' });
    // acme's key, globex's issuer: globex's key set does not have it.
    expect(await verdict(v, await signWith(acme, claims(issuerOf('globex'), 'eve')))).toEqual({ error: 'access token is signed by an unknown key (kid)', unavailable: false });
    // The same with globex's key id in the header: the signature does not verify.
    expect(await verdict(v, await signWith(acme, claims(issuerOf('globex'), 'eve'), { kid: globex.kid, alg: 'RS256' }))).toMatchObject({ unavailable: false });
    expect(await verdict(v, await signWith(acme, claims(issuerOf('acme'), 'eve', { tenant: 'globex' })))).toEqual({
      error: 'access token tenant (tenant) is not the tenant of its issuer (iss)',
      unavailable: false,
    });
  });

  it('an issuer outside the template, or naming no valid tenant id, is refused before any key set is fetched', async () => {
    const v = new TokenVerifier(loadConfig(realmEnv).auth);
    const before = [...realms.fetches.values()].reduce((a, b) => a + b, 0);
    for (const iss of ['https://other.example/realms/acme', `${realms.base}/realms/`, `${realms.base}/realms/a%2F..%2Fb`, `${realms.base}/realms/a/b`, `${realms.base}/realm/acme`]) {
      expect(await verdict(v, await signWith(acme, claims(iss, 'eve'))), iss).toEqual({ error: 'access token is from another issuer (iss)', unavailable: false });
    }
    const { iss: _none, ...noIssuer } = claims('x', 'eve');
    expect(await verdict(v, await signWith(acme, noIssuer))).toEqual({ error: 'access token has no issuer (iss)', unavailable: false });
    expect([...realms.fetches.values()].reduce((a, b) => a + b, 0)).toBe(before);
  });

  it('a tenant the provider does not know: SERVICE_UNAVAILABLE, one request per cooldown however many tokens name it', async () => {
    const v = new TokenVerifier(loadConfig(realmEnv).auth);
    for (let i = 0; i < 5; i++) {
      expect(await verdict(v, await signWith(acme, claims(issuerOf('nope'), 'eve')))).toEqual({ error: UNAVAILABLE, unavailable: true });
    }
    expect(realms.fetches.get('nope')).toBe(1);
  });

  it("a failed fetch of a tenant's key set (a made-up key id asked the provider again while it was down) keeps the keys it had: the tenant's tokens still verify", async () => {
    const key = await providerKey('RS256');
    const served: Record<string, JWK[]> = { initech: [key.jwk] };
    await using idp = await realmServer(served);
    const v = new TokenVerifier(
      loadConfig({ ...realmEnv, AUTH_ISSUER: `${idp.base}/realms/{tenant}`, AUTH_JWKS_URL: `${idp.base}/realms/{tenant}/certs`, AUTH_JWKS_COOLDOWN_SECONDS: '1' }).auth,
    );
    const token = await signWith(key, claims(`${idp.base}/realms/initech`, 'ivy'));
    expect(await verdict(v, token)).toEqual({ tenant: 'initech', id: 'ivy' });
    // Past the cooldown (1 s, the least there is) after that fetch, an unknown key id asks again.
    const fetched = Date.now();
    await waitFor(() => Date.now() - fetched > 1000, 'the cooldown to pass');
    // The provider stops answering for the realm; a token with a key id it never had makes the node ask.
    delete served.initech;
    expect(await verdict(v, await signWith(key, claims(`${idp.base}/realms/initech`, 'eve'), { kid: 'made-up' }))).toEqual({ error: UNAVAILABLE, unavailable: true });
    expect(idp.fetches.get('initech')).toBe(2);
    expect(await verdict(v, token)).toEqual({ tenant: 'initech', id: 'ivy' });
  });

  it('tenants not seen since start are fetched within budgets per client address and per node; made-up ones never lock real ones out', async () => {
    // About 1,000 verifications spend the node's budget: its window (10 s in production) must not
    // move before the last one, however slow the machine.
    const v = new TokenVerifier(loadConfig(realmEnv).auth, { budgetWindowSeconds: 3600 });
    const bogus = () => [...realms.fetches.entries()].filter(([r]) => r.startsWith('made-up')).reduce((a, [, n]) => a + n, 0);
    const before = bogus();
    const token = async (tenant: string, key = acme) => signWith(key, claims(issuerOf(tenant), 'eve'));
    // acme is seen once (its key set fetched, a token verified), from a client of its own.
    expect(await verdict(v, await token('acme'), 'client-acme')).toEqual({ tenant: 'acme', id: 'eve' });
    // One client names made-up tenants: its budget of new tenants runs out, with no request past it.
    for (let i = 0; i < NEW_TENANTS_PER_SOURCE_PER_10S; i++) expect(await verdict(v, await token(`made-up-a${i}`), 'client-a')).toMatchObject({ unavailable: true });
    expect(bogus() - before).toBe(NEW_TENANTS_PER_SOURCE_PER_10S);
    expect(await verdict(v, await token('made-up-a-over'), 'client-a')).toEqual({ error: UNAVAILABLE, unavailable: true });
    expect(bogus() - before).toBe(NEW_TENANTS_PER_SOURCE_PER_10S);
    // A tenant seen before and a new real tenant from another client are not held by it.
    expect(await verdict(v, await token('acme'), 'client-a')).toEqual({ tenant: 'acme', id: 'eve' });
    expect(await verdict(v, await token('globex', globex), 'client-b')).toEqual({ tenant: 'globex', id: 'eve' });
    // Clients together: at most NEW_TENANTS_PER_10S new tenants per node, then none until the window moves.
    let fetchedBy = 0;
    for (let c = 0; fetchedBy < NEW_TENANTS_PER_10S; c++) {
      for (let i = 0; i < NEW_TENANTS_PER_SOURCE_PER_10S && fetchedBy < NEW_TENANTS_PER_10S; i++, fetchedBy++) {
        await verdict(v, await token(`made-up-c${c}-${i}`), `crowd-${c}`);
      }
    }
    const fetched = bogus();
    expect(await verdict(v, await token('made-up-last'), 'client-z')).toEqual({ error: UNAVAILABLE, unavailable: true });
    expect(bogus()).toBe(fetched);
    // The tenants seen once still pass: the made-up ones took no place among the kept key sets.
    expect(await verdict(v, await token('acme'), 'client-z')).toEqual({ tenant: 'acme', id: 'eve' });
    expect(await verdict(v, await token('globex', globex), 'client-z')).toEqual({ tenant: 'globex', id: 'eve' });
  });

  it('the addresses of one IPv6 /64 are one client for that budget (an IPv4-mapped address is its IPv4 one)', async () => {
    const v = new TokenVerifier(loadConfig(realmEnv).auth);
    const token = async (tenant: string) => signWith(acme, claims(issuerOf(tenant), 'eve'));
    for (let i = 1; i <= NEW_TENANTS_PER_SOURCE_PER_10S; i++) {
      expect(await verdict(v, await token(`made-up-v6-${i}`), `2001:db8:0:0:${i.toString(16)}::${i}`)).toMatchObject({ unavailable: true });
    }
    const fetched = [...realms.fetches.entries()].filter(([r]) => r.startsWith('made-up-v6')).length;
    expect(fetched).toBe(NEW_TENANTS_PER_SOURCE_PER_10S);
    // The same /64 written otherwise: held, no request.
    expect(await verdict(v, await token('made-up-v6-over'), '2001:0db8:0000:0000:ffff::1')).toEqual({ error: UNAVAILABLE, unavailable: true });
    expect(realms.fetches.get('made-up-v6-over')).toBeUndefined();
    // Another /64 is another client.
    expect(await verdict(v, await token('acme'), '2001:db8:0:1::1')).toEqual({ tenant: 'acme', id: 'eve' });
  });

  it("HS256 tokens (the product's own, auth.devLogin's) name their tenant by their issuer too", async () => {
    const auth = loadConfig(realmEnv).auth;
    const v = new TokenVerifier(auth);
    const now = nowS();
    expect(await verdict(v, signHs256({ iss: issuerOf('acme'), aud: 'chat', sub: 'cid', iat: now, exp: now + 60 }, TEST_SECRET))).toEqual({ tenant: 'acme', id: 'cid' });
    expect(await verdict(v, signHs256({ iss: 'https://other.example/realms/acme', aud: 'chat', sub: 'cid', iat: now, exp: now + 60 }, TEST_SECRET))).toMatchObject({
      error: 'access token is from another issuer (iss)',
    });
    const { token } = await new TokenSigner(TEST_SECRET, auth).sign({ sub: 'dev', name: 'Dev', tenant: 'globex', roles: [] }, 60);
    expect(decodeJwt(token).iss).toBe(issuerOf('globex'));
    expect(await verdict(v, token)).toEqual({ tenant: 'globex', id: 'dev' });
  });
});

describe('a directory per tenant, one key set (Entra ID)', () => {
  let jwks: JwksServer;
  let key: ProviderKey;
  beforeAll(async () => {
    key = await providerKey('RS256');
    jwks = open.use(await jwksServer([key.jwk]));
  });

  it('each token is of the tenant its issuer names; another issuer shape is refused', async () => {
    const v = new TokenVerifier(loadConfig({ AUTH_ISSUER: 'https://login.example.com/{tenant}/v2.0', AUTH_JWKS_URL: jwks.url, AUTH_AUDIENCE: 'chat' }).auth);
    const t1 = '72f988bf-86f1-41af-91ab-2d7cd011db47';
    expect(await verdict(v, await signWith(key, claims(`https://login.example.com/${t1}/v2.0`, 'ann')))).toEqual({ tenant: t1, id: 'ann' });
    expect(await verdict(v, await signWith(key, claims('https://login.example.com/contoso/v2.0', 'bob')))).toEqual({ tenant: 'contoso', id: 'bob' });
    expect(await verdict(v, await signWith(key, claims('https://login.example.com/contoso/v1.0', 'bob')))).toMatchObject({ error: 'access token is from another issuer (iss)' });
    expect(jwks.fetches).toBe(1);
  });
});

describe('through a server', () => {
  let env: TestEnv;
  let srv: TestServer;
  beforeAll(async () => {
    env = await testEnv('auth_issuers');
    srv = await env.startServer({ auth: loadConfig(realmEnv).auth, devLogin: false });
  });
  afterAll(() => dispose(env));

  it("HTTP and WebSocket calls run as the issuer's tenant", async () => {
    const token = await signWith(globex, claims(issuerOf('globex'), 'gus', { name: 'Gus' }));
    const res = await getJson<TrpcHttpResult<{ id: string; tenant: string }>>(`${srv.url}/trpc/auth.me`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(res.body.result.data.json).toMatchObject({ id: 'gus', tenant: 'globex' });
    await using c = wsClient({ url: srv.url, token });
    expect(await c.trpc.auth.me.query()).toMatchObject({ id: 'gus', tenant: 'globex' });
    const foreign = await signWith(acme, claims(issuerOf('globex'), 'gus'));
    const refused = await getJson(`${srv.url}/trpc/auth.me`, { headers: { authorization: `Bearer ${foreign}` } });
    expect(refused.status).toBe(401);
  });

  it('after a restart the tenants with users count as seen: a flood of made-up tenants does not hold them', async () => {
    // gus of globex has a user row (the test before); a node started now reads the tenants at start.
    await using restarted = await env.startServer({ auth: loadConfig(realmEnv).auth, devLogin: false });
    await restarted.app.services.auth.seeding;
    const verifier = restarted.app.services.auth.verifier;
    for (let i = 0; i < NEW_TENANTS_PER_SOURCE_PER_10S; i++) {
      expect(await verdict(verifier, await signWith(acme, claims(issuerOf(`made-up-restart-${i}`), 'eve')), 'flooder')).toMatchObject({ unavailable: true });
    }
    // The flooder's budget is spent: a tenant without users waits, globex (with users) does not.
    expect(await verdict(verifier, await signWith(acme, claims(issuerOf('acme'), 'ann')), 'flooder')).toEqual({ error: UNAVAILABLE, unavailable: true });
    expect(await verdict(verifier, await signWith(globex, claims(issuerOf('globex'), 'gus')), 'flooder')).toEqual({ tenant: 'globex', id: 'gus' });
  });
});
