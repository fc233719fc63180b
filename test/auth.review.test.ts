/**
 * Access tokens at the edges of the clock tolerance (AUTH_CLOCK_TOLERANCE_SECONDS), against real
 * servers (PostgreSQL, Redis): `auth.refresh` with a token past its `exp` but within the tolerance
 * is refused, as the connection would close for it at once; a revocation closes the sockets of tokens
 * whose `iat` is ahead of the server's clock (an identity provider whose clock runs fast) while a
 * token issued after the revocation keeps working; and AUTH_JWKS_COOLDOWN_SECONDS has no 0.
 */
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  actor,
  callerFor,
  closeOf,
  CloseCode,
  configFailure,
  dispose,
  errInfo,
  expectTRPCError,
  getJson,
  loadConfig,
  rawClient,
  Scope,
  sessionsOf,
  testEnv,
  tokenFor,
  waitFor,
  wsClient,
  type TestEnv,
  type TestServer,
  type TrpcHttpError,
} from './fixture.js';

/** A wide tolerance: tokens a few seconds past exp or ahead in iat pass the verifier however slow the machine. */
const TOLERANCE_S = 60;

let env: TestEnv;
/** Two nodes sharing Redis (revocations reach the other one through the bus). */
let N1: TestServer;
let N2: TestServer;
const open = new Scope();

beforeAll(async () => {
  env = await testEnv('auth_review');
  [N1, N2] = await Promise.all([env.startServer({ auth: { clockToleranceSeconds: TOLERANCE_S } }), env.startServer({ auth: { clockToleranceSeconds: TOLERANCE_S } })]);
});

afterAll(() => dispose(env, open));

const nowS = () => Math.floor(Date.now() / 1000);
const expOf = (token: string) => decodeJwt(token).exp!;

async function rejection(p: Promise<unknown>): Promise<ReturnType<typeof errInfo>> {
  return errInfo(await p.then(() => new Error('unexpectedly succeeded'), (e: unknown) => e));
}

async function httpMe(srv: TestServer, token: string): Promise<{ status: number; message: string | undefined }> {
  const { status, body } = await getJson<Partial<TrpcHttpError>>(`${srv.url}/trpc/auth.me`, { headers: { authorization: `Bearer ${token}` } });
  return { status, message: body?.error?.json?.message };
}

describe('auth.refresh with a token past its exp, within the clock tolerance', () => {
  it('is refused (UNAUTHORIZED access token expired), as a connection with it is closed at once (4001); the live connection keeps its token and stays open', async () => {
    const iat = nowS() - 120;
    // exp 20 s ago: within the 60 s tolerance, so the verifier itself accepts it.
    const late = tokenFor('late-user', { issuedAt: iat, ttlSeconds: 100 });
    expect(expOf(late) * 1000).toBeLessThan(Date.now());

    // The rule a connection follows: a first token past its exp is closed with 4001 at once.
    const first = open.use(rawClient(N1.url, { token: late }));
    expect(await closeOf(first, 5000, 'the connection with an expired token to close')).toEqual({ code: CloseCode.TokenExpired, reason: 'access token expired' });

    // The same token offered to a live connection (the real wsLink client).
    const good = tokenFor('late-user', { ttlSeconds: 600 });
    const c = open.use(wsClient({ url: N1.url, token: good }));
    expect((await c.trpc.auth.me.query()).id).toBe('late-user');
    expect(await rejection(c.trpc.auth.refresh.mutate({ token: late }))).toMatchObject({ code: 'UNAUTHORIZED', message: 'access token expired' });
    // The connection goes on with its own token, never closed.
    expect((await c.trpc.auth.me.query()).expiresAt).toEqual(new Date(expOf(good) * 1000));
    expect(sessionsOf(N1.app, 'late-user').map((s) => s.actor.exp)).toEqual([expOf(good)]);
    expect(c.opens).toBe(1);
    expect(c.closes).toBe(0);

    // Over HTTP (no connection to swap it into) the answer is the same.
    await expectTRPCError(callerFor(N1.app, actor('late-user')).auth.refresh({ token: late }), 'UNAUTHORIZED', /^access token expired$/);
  });
});

describe('revocation of a token whose iat is ahead of the server clock (within the tolerance)', () => {
  it('closes its open socket on both nodes (4003): the token was in use before the revocation; a token issued after the revocation works', async () => {
    // The identity provider's clock runs 30 s fast: iat is 30 s ahead of the servers'.
    const ahead = tokenFor('fast-iat', { issuedAt: nowS() + 30, ttlSeconds: 600 });
    const [c1, c2] = [open.use(rawClient(N1.url, { token: ahead })), open.use(rawClient(N2.url, { token: ahead }))];
    for (const [c, n] of [
      [c1, N1],
      [c2, N2],
    ] as const) {
      c.send({ id: 1, method: 'query', params: { path: 'auth.me', input: {} } });
      expect((await c.waitFrame((f) => f.id === 1, 'auth.me on the fast token')).result?.data).toMatchObject({ id: 'fast-iat' });
      expect(sessionsOf(n.app, 'fast-iat')).toHaveLength(1);
    }
    const { revokedAt } = await callerFor(N1.app, actor('root', 'default', ['admin'])).auth.revoke({ userId: 'fast-iat' });
    expect(revokedAt.getTime()).toBeLessThan(decodeJwt(ahead).iat! * 1000);
    for (const c of [c1, c2]) expect(await closeOf(c, 5000, 'the socket of the revoked token to close')).toEqual({ code: CloseCode.Revoked, reason: 'sessions revoked' });
    await waitFor(() => sessionsOf(N2.app, 'fast-iat').length === 0, 'the revoked session to be gone');

    // A login after the revocation, from the same fast clock: accepted on both nodes, and it stays.
    const after = tokenFor('fast-iat', { issuedAt: nowS() + 30, ttlSeconds: 600 });
    for (const n of [N1, N2]) expect(await httpMe(n, after)).toMatchObject({ status: 200 });
    const back = open.use(wsClient({ url: N2.url, token: after }));
    expect((await back.trpc.auth.me.query()).id).toBe('fast-iat');
    expect(back.closes).toBe(0);
  });
});

describe('AUTH_JWKS_COOLDOWN_SECONDS', () => {
  it('is at least 1: 0 (a refetch of the key set for every made-up key id) is refused at start, naming the variable', () => {
    const jwks = { AUTH_JWKS_URL: 'https://id.example.com/certs' };
    expect(configFailure({ ...jwks, AUTH_JWKS_COOLDOWN_SECONDS: '0' })).toMatch(/AUTH_JWKS_COOLDOWN_SECONDS: .*at least 1/);
    expect(configFailure({ AUTH_JWKS_COOLDOWN_SECONDS: '0' })).toMatch(/AUTH_JWKS_COOLDOWN_SECONDS/);
    expect(loadConfig({ ...jwks, AUTH_JWKS_COOLDOWN_SECONDS: '1' }).auth.jwks?.cooldownSeconds).toBe(1);
    expect(loadConfig({ ...jwks, AUTH_JWKS_COOLDOWN_SECONDS: '' }).auth.jwks?.cooldownSeconds).toBe(30);
  });
});
