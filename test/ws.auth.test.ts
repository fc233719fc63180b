import { TRPCClientError } from '@trpc/client';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  countingWebSocket,
  countUpgrades,
  fileServer,
  getJson,
  recordEvents,
  signHs256,
  TEST_SECRET,
  tokenFor,
  uuid,
  within,
  wsClient,
  type AppRouter,
  type TrpcHttpError,
  type TrpcHttpResult,
  type WsTestClient,
} from './fixture.js';

const srv = fileServer('ws_auth');

afterEach(() => {
  vi.useRealTimers();
});

/** Expects a TRPCClientError with code UNAUTHORIZED and the given message. */
function expectUnauthorized(err: unknown, message: string) {
  expect(err).toBeInstanceOf(TRPCClientError);
  const e = err as TRPCClientError<AppRouter>;
  expect(e.data?.code).toBe('UNAUTHORIZED');
  expect(e.message).toBe(message);
}

async function queryError(c: WsTestClient): Promise<unknown> {
  return within(
    c.trpc.auth.me.query().then(
      () => new Error('auth.me unexpectedly succeeded'),
      (err: unknown) => err,
    ),
    5000,
    'auth.me to fail',
  );
}

async function subscriptionError(c: WsTestClient): Promise<unknown> {
  using rec = recordEvents(c, { roomId: uuid() });
  const how = await within(rec.ended, 5000, 'chat.events to fail');
  expect(how).toBe('error');
  expect(rec.events.items).toHaveLength(0);
  return rec.error;
}

const badTokens: { name: string; token: () => string | undefined; message: string }[] = [
  { name: 'a missing token', token: () => undefined, message: 'missing access token' },
  { name: 'an expired token', token: () => tokenFor('alice', { ttlSeconds: -10 }), message: 'access token expired' },
  {
    name: 'an expired token (explicit past exp)',
    token: () => signHs256({ sub: 'alice', name: 'alice', exp: Math.floor(Date.now() / 1000) - 60 }, TEST_SECRET),
    message: 'access token expired',
  },
  {
    name: 'a token signed with another secret',
    token: () => tokenFor('alice', { secret: 'another-secret-0123456789abcdef-xyz' }),
    message: 'invalid access token',
  },
  { name: 'garbage instead of a token', token: () => 'not-a-jwt', message: 'invalid access token' },
  {
    name: 'a token without exp',
    token: () => signHs256({ sub: 'alice', name: 'alice', iat: Math.floor(Date.now() / 1000) }, TEST_SECRET),
    message: 'access token has no expiry (exp)',
  },
];

describe('WebSocket authentication', () => {
  for (const bad of badTokens) {
    it(`${bad.name}: UNAUTHORIZED on queries and chat.events, on one connection (no reconnect loop)`, async () => {
      using upgrades = countUpgrades(srv.app.server);
      const counting = countingWebSocket();
      // retryDelayMs 0: if the server dropped the connection, the client would reconnect at once
      // and the following calls would show it.
      await using c = wsClient({ url: srv.url, token: bad.token(), WebSocket: counting.WebSocket, retryDelayMs: () => 0 });
      for (let i = 0; i < 3; i++) {
        expectUnauthorized(await queryError(c), bad.message);
        expectUnauthorized(await subscriptionError(c), bad.message);
      }
      // Several in parallel on the same socket.
      const errs = await Promise.all([queryError(c), subscriptionError(c), queryError(c), subscriptionError(c)]);
      for (const e of errs) expectUnauthorized(e, bad.message);
      // A round trip after the failures: still the same socket.
      expectUnauthorized(await queryError(c), bad.message);

      expect(upgrades.count).toBe(1);
      expect(counting.count).toBe(1);
      expect(c.opens).toBe(1);
      expect(c.closes).toBe(0);
      expect(c.ws.connectionState.get().state).toBe('pending');
    });
  }

  it('a valid token works over WebSocket on one connection', async () => {
    using upgrades = countUpgrades(srv.app.server);
    await using c = wsClient({ url: srv.url, userId: 'walt' });
    const me = await c.trpc.auth.me.query();
    expect(me.id).toBe('walt');
    expect(me.tenant).toBe('default');
    const room = await c.trpc.room.create.mutate({ kind: 'group', name: 'auth-ok' });
    using rec = recordEvents(c, { roomId: room.id });
    expect(await rec.ready()).toBe(room.lastSeq);
    rec.unsubscribe();
    expect(upgrades.count).toBe(1);
  });

  it('a token that expires while the socket is open is refused on the next call, without reconnecting', async () => {
    using upgrades = countUpgrades(srv.app.server);
    await using c = wsClient({ url: srv.url, token: tokenFor('erin', { ttlSeconds: 60 }), retryDelayMs: () => 0 });
    try {
      expect((await c.trpc.auth.me.query()).id).toBe('erin');
      // Move the clock (Date only; timers stay real) past the token's exp.
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(Date.now() + 120_000);
      expectUnauthorized(await queryError(c), 'access token expired');
      expectUnauthorized(await subscriptionError(c), 'access token expired');
      vi.useRealTimers();
      expect(upgrades.count).toBe(1);
      expect(c.closes).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('HTTP authentication', () => {
  it('Authorization: Bearer works', async () => {
    const res = await getJson<TrpcHttpResult<{ id: string }>>(`${srv.url}/trpc/auth.me`, { headers: { authorization: `Bearer ${tokenFor('hank')}` } });
    expect(res.status).toBe(200);
    expect(res.body.result.data.json.id).toBe('hank');
  });

  it('without Authorization gives 401 UNAUTHORIZED with a clear message', async () => {
    const res = await getJson<TrpcHttpError>(`${srv.url}/trpc/auth.me`);
    expect(res.status).toBe(401);
    expect(res.body.error.json.data.code).toBe('UNAUTHORIZED');
    expect(res.body.error.json.message).toBe('missing access token');
  });

  it('a bad or expired bearer token gives 401 with the reason', async () => {
    const expired = await getJson<TrpcHttpError>(`${srv.url}/trpc/auth.me`, {
      headers: { authorization: `Bearer ${tokenFor('hank', { ttlSeconds: -10 })}` },
    });
    expect(expired.status).toBe(401);
    expect(expired.body.error.json.message).toBe('access token expired');
    const forged = await getJson<TrpcHttpError>(`${srv.url}/trpc/auth.me`, {
      headers: { authorization: `Bearer ${tokenFor('hank', { secret: 'another-secret-0123456789abcdef-xyz' })}` },
    });
    expect(forged.status).toBe(401);
    expect(forged.body.error.json.data.code).toBe('UNAUTHORIZED');
    expect(forged.body.error.json.message).toBe('invalid access token');
  });

  it('a mutation without a token is refused over HTTP with 401', async () => {
    const res = await getJson<TrpcHttpError>(`${srv.url}/trpc/room.create`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ json: { kind: 'group', name: 'nope' } }),
    });
    expect(res.status).toBe(401);
    expect(res.body.error.json.data.code).toBe('UNAUTHORIZED');
  });
});
