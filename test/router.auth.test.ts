import { decodeJwt } from 'jose';
import { describe, expect, it } from 'vitest';
import {
  actor,
  callerFor,
  contextFactory,
  createCaller,
  expectTRPCError,
  fileServer,
  signHs256,
  TEST_AUTH,
  TEST_SECRET,
  tokenFor,
  TokenVerifier,
} from './fixture.js';

const t = fileServer('rauth');

/** A caller whose context is built from a token exactly as the HTTP adapter does (Bearer header). */
async function callerWithToken(token: string) {
  const ctx = await contextFactory(t.app.services)({ req: { headers: { authorization: `Bearer ${token}` } } as never });
  return createCaller(ctx);
}

/** The same, through WebSocket connectionParams. */
async function callerWithWsToken(token: string) {
  const ctx = await contextFactory(t.app.services)({ info: { connectionParams: { token } } });
  return createCaller(ctx);
}

describe('auth.devLogin', () => {
  it('mints a token that works for auth.me (HTTP bearer and WebSocket connectionParams)', async () => {
    const anon = callerFor(t.app, null);
    const before = Date.now();
    const res = await anon.auth.devLogin({ username: 'alice' });
    expect(res.user).toEqual({ id: 'alice', name: 'alice', tenant: 'default', roles: [] });
    expect(typeof res.token).toBe('string');
    expect(res.token.split('.')).toHaveLength(3);
    expect(res.expiresAt).toBeInstanceOf(Date);
    const ttlMs = t.app.services.deps.config.accessTokenTtlSeconds * 1000;
    expect(res.expiresAt.getTime()).toBeGreaterThanOrEqual(before + ttlMs - 1000);
    expect(res.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + ttlMs + 1000);

    const claims = await new TokenVerifier(TEST_AUTH).verify(res.token);
    expect(claims).toMatchObject({ id: 'alice', name: 'alice', tenant: 'default', roles: [] });

    for (const caller of [await callerWithToken(res.token), await callerWithWsToken(res.token)]) {
      const me = await caller.auth.me();
      expect(me).toMatchObject({ id: 'alice', name: 'alice', tenant: 'default', roles: [] });
      expect(me.expiresAt).toBeInstanceOf(Date);
      expect(Math.abs(me.expiresAt!.getTime() - res.expiresAt.getTime())).toBeLessThan(2000);
    }
  });

  it('grants no roles and no other tenant unless AUTH_DEV_LOGIN_ROLES=1', async () => {
    const anon = callerFor(t.app, null);
    await expectTRPCError(anon.auth.devLogin({ username: 'mallory', roles: ['admin'] }), 'FORBIDDEN', /AUTH_DEV_LOGIN_ROLES=1/);
    await expectTRPCError(anon.auth.devLogin({ username: 'mallory', tenant: 'acme' }), 'FORBIDDEN', /no tenant but `default`/);
    expect((await anon.auth.devLogin({ username: 'mallory', tenant: 'default', roles: [] })).user).toMatchObject({ tenant: 'default', roles: [] });
  });

  it('with AUTH_DEV_LOGIN_ROLES=1: carries name, tenant and roles into the token and upserts the user row', async () => {
    await using srv = await t.env.startServer({ devLoginRoles: true });
    const res = await callerFor(srv.app, null).auth.devLogin({ username: 'dora.d-1', name: 'Dora Dev', tenant: 'acme', roles: ['support'] });
    expect(res.user).toEqual({ id: 'dora.d-1', name: 'Dora Dev', tenant: 'acme', roles: ['support'] });
    const me = await (await callerWithToken(res.token)).auth.me();
    expect(me).toMatchObject({ id: 'dora.d-1', name: 'Dora Dev', tenant: 'acme', roles: ['support'] });

    // The user row was written: a room member list in tenant acme shows the display name.
    const owner = callerFor(t.app, actor('owner1', 'acme'));
    const room = await owner.room.create({ kind: 'group', name: 'names', memberIds: ['dora.d-1'] });
    const members = await owner.room.members({ roomId: room.id });
    expect(members.find((m) => m.userId === 'dora.d-1')?.name).toBe('Dora Dev');
  });

  it('rejects a bad username with BAD_REQUEST naming the field', async () => {
    const anon = callerFor(t.app, null);
    for (const username of ['', 'has space', 'slash/inside', 'x'.repeat(65), 'ümlaut']) {
      await expectTRPCError(anon.auth.devLogin({ username }), 'BAD_REQUEST', /username/);
    }
    await expectTRPCError(anon.auth.devLogin({ username: 'ok', tenant: 'bad tenant' }), 'BAD_REQUEST', /tenant/);
    await expectTRPCError(anon.auth.devLogin({ username: 'ok', roles: ['root' as never] }), 'BAD_REQUEST', /roles/);
    // The longest allowed username still works.
    const res = await anon.auth.devLogin({ username: 'x'.repeat(64) });
    expect(res.user.id).toBe('x'.repeat(64));
  });

  it('carries iss and aud when the server checks them, so its tokens pass the same checks', async () => {
    const auth = { issuer: 'https://chat.example.com', audience: ['chat-api', 'chat-admin'] };
    await using other = await t.env.startServer({ auth, devLoginRoles: true, redisPrefix: `${t.env.redisPrefix}issaud:` });
    const res = await callerFor(other.app, null).auth.devLogin({ username: 'ivy', roles: ['admin'] });
    const claims = decodeJwt(res.token);
    expect(claims).toMatchObject({ iss: 'https://chat.example.com', aud: 'chat-api', sub: 'ivy', roles: ['admin'] });
    expect(claims.exp! - claims.iat!).toBe(other.config.accessTokenTtlSeconds);
    const ctx = await contextFactory(other.app.services)({ info: { connectionParams: { token: res.token } } });
    expect(await createCaller(ctx).auth.me()).toMatchObject({ id: 'ivy', roles: ['admin'] });
    // A token without them is refused there; with them it works.
    const plain = await contextFactory(other.app.services)({ info: { connectionParams: { token: tokenFor('ivy') } } });
    await expectTRPCError(createCaller(plain).auth.me(), 'UNAUTHORIZED', 'access token has no issuer (iss)');
    const minted = tokenFor('ivy', { issuer: auth.issuer, audience: 'chat-admin' });
    const ok = await contextFactory(other.app.services)({ req: { headers: { authorization: `Bearer ${minted}` } } as never });
    expect((await createCaller(ok).auth.me()).id).toBe('ivy');
  });

  it('is FORBIDDEN when config.devLogin is false', async () => {
    await using other = await t.env.startServer({ devLogin: false, redisPrefix: `${t.env.redisPrefix}nodev:` });
    expect(other.app.services.deps.config.devLogin).toBe(false);
    await expectTRPCError(callerFor(other.app, null).auth.devLogin({ username: 'alice' }), 'FORBIDDEN', /dev login is disabled/);
    // Authenticated callers are refused too: the switch is not about who calls.
    await expectTRPCError(callerFor(other.app, actor('alice')).auth.devLogin({ username: 'mallory' }), 'FORBIDDEN');
    // Tokens minted elsewhere still work on that server.
    const ctx = await contextFactory(other.app.services)({ info: { connectionParams: { token: tokenFor('carol') } } });
    expect((await createCaller(ctx).auth.me()).id).toBe('carol');
  });
});

describe('auth.me', () => {
  it('returns the actor', async () => {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const me = await callerFor(t.app, { ...actor('bob', 'tenant-b', ['admin']), exp }).auth.me();
    expect(me).toEqual({ id: 'bob', name: 'bob', tenant: 'tenant-b', roles: ['admin'], expiresAt: new Date(exp * 1000) });
    // An actor without exp has no expiry.
    expect((await callerFor(t.app, actor('bob')).auth.me()).expiresAt).toBeNull();
  });

  it('is UNAUTHORIZED without an actor', async () => {
    await expectTRPCError(callerFor(t.app, null).auth.me(), 'UNAUTHORIZED', /missing access token/);
    // Same through the context factory with no token at all.
    const ctx = await contextFactory(t.app.services)({ req: { headers: {} } as never });
    await expectTRPCError(createCaller(ctx).auth.me(), 'UNAUTHORIZED', /missing access token/);
  });

  it('is UNAUTHORIZED for an expired actor (exp in the past)', async () => {
    const exp = Math.floor(Date.now() / 1000) - 5;
    await expectTRPCError(callerFor(t.app, { ...actor('bob'), exp }).auth.me(), 'UNAUTHORIZED', /expired/);
    // Other authed procedures are refused the same way.
    await expectTRPCError(callerFor(t.app, { ...actor('bob'), exp }).room.list(), 'UNAUTHORIZED', /expired/);
  });

  it('is UNAUTHORIZED for an expired, forged or malformed token', async () => {
    const expired = await callerWithToken(tokenFor('bob', { ttlSeconds: -10 }));
    await expectTRPCError(expired.auth.me(), 'UNAUTHORIZED', /access token expired/);
    const forged = await callerWithWsToken(tokenFor('bob', { secret: 'another-secret-0123456789abcdef' }));
    await expectTRPCError(forged.auth.me(), 'UNAUTHORIZED', /invalid access token/);
    const garbage = await callerWithToken('not-a-jwt');
    await expectTRPCError(garbage.auth.me(), 'UNAUTHORIZED', /invalid access token/);
  });

  it('is UNAUTHORIZED for an HS256 token without exp, or one that lives longer than the maximum', async () => {
    const now = Math.floor(Date.now() / 1000);
    const noExp = await callerWithToken(signHs256({ sub: 'bob', name: 'bob', iat: now }, TEST_SECRET));
    await expectTRPCError(noExp.auth.me(), 'UNAUTHORIZED', 'access token has no expiry (exp)');
    const max = t.config.auth.maxTokenTtlSeconds;
    const long = await callerWithWsToken(tokenFor('bob', { ttlSeconds: max + 60 }));
    await expectTRPCError(long.auth.me(), 'UNAUTHORIZED', `access token lifetime exceeds the maximum of ${max} s`);
    // Exactly the maximum is fine.
    expect((await (await callerWithToken(tokenFor('bob', { ttlSeconds: max }))).auth.me()).id).toBe('bob');
  });
});
