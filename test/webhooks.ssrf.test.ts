import { afterEach, describe, expect, it } from 'vitest';
import {
  actor,
  callerFor,
  expectTRPCError,
  fileServer,
  GUARD_LOOKUP_CONCURRENCY,
  type GuardLookup,
  guardLookupsInFlight,
  hookReceiver,
  resolveTarget,
  setGuardLookupForTests,
  UrlRefused,
  uuid,
  waitFor,
} from './fixture.js';

/** The production default: WEBHOOK_ALLOW_PRIVATE_URLS off. */
const t = fileServer('hookssrf', { webhooks: { retryBaseMs: 50, maxAttempts: 2, pollMs: 20, timeoutMs: 2000, allowPrivateUrls: false } });

describe('SSRF guard (private addresses not allowed)', () => {
  const tn = `ssrf-${uuid().slice(0, 8)}`;
  const admin = () => callerFor(t.app, actor('boss', tn, ['admin']));

  it.each([
    ['http://127.0.0.1:8080/hook', '127.0.0.1'],
    ['http://10.0.0.1/hook', '10.0.0.1'],
    ['http://169.254.169.254/latest/meta-data', '169.254.169.254'],
    ['http://[::1]:8080/hook', '::1'],
    ['http://localhost:8080/hook', 'localhost'],
    ['https://192.168.1.10/hook', '192.168.1.10'],
    ['http://100.64.0.1/hook', '100.64.0.1'],
    ['http://[fd00::1]/hook', 'fd00::1'],
    ['http://[::ffff:127.0.0.1]/hook', '::ffff:7f00:1'], // as the URL parser writes it,
    ['http://0.0.0.0/hook', '0.0.0.0'],
    ['http://[::127.0.0.1]/hook', '::7f00:1'], // IPv4-compatible
    ['http://[::ffff:0:127.0.0.1]/hook', '::ffff:0:7f00:1'], // IPv4-translated
    ['http://[64:ff9b::a9fe:a9fe]/hook', '64:ff9b::a9fe:a9fe'], // NAT64 of the metadata address
  ])('refuses %s at create and at update (BAD_REQUEST)', async (url, host) => {
    await expectTRPCError(admin().webhook.create({ url, events: ['*'] }), 'BAD_REQUEST', new RegExp(`webhook url refused: the host ${host.replace(/[.[\]]/g, '\\$&')}.* resolves to .*non-public`));
  });

  it('refuses a change of url to a private address, and keeps the old one', async () => {
    const id = uuid();
    await t.env.sql(`insert into webhook_endpoint (id, tenant, url, events, secret, enabled, created_at, updated_at) values ($1, $2, 'https://hooks.example.com/x', '{*}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', false, now(), now())`, [id, tn]);
    await expectTRPCError(admin().webhook.update({ id, url: 'http://127.0.0.1/x' }), 'BAD_REQUEST', /refused/);
    expect((await admin().webhook.list()).find((w) => w.id === id)?.url).toBe('https://hooks.example.com/x');
  });

  it('checks again at delivery time: an endpoint that now points at a private address gets nothing', async () => {
    await using rx = await hookReceiver();
    const other = `ssrf-d-${uuid().slice(0, 8)}`;
    const id = uuid();
    // As if the name had resolved to a public address when it was registered.
    await t.env.sql(`insert into webhook_endpoint (id, tenant, url, events, secret, enabled, created_at, updated_at) values ($1, $2, $3, '{room.created}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', true, now(), now())`, [id, other, rx.url]);
    await callerFor(t.app, actor('alice', other)).room.create({ kind: 'group', name: 'x' });
    const owner = callerFor(t.app, actor('boss', other, ['admin']));
    const [d] = await waitFor(() => owner.webhook.deliveries({ id }), 'the refused attempts', { until: (ds) => ds[0]?.status === 'failed' });
    expect(d).toMatchObject({ attempts: 2, lastStatusCode: null });
    expect(d!.lastError).toMatch(/^refused: the host 127.0.0.1 resolves to 127.0.0.1/);
    expect(rx.requests.items).toEqual([]);
  });
});

describe('SSRF guard lookups are bounded (a name server that never answers)', () => {
  afterEach(() => setGuardLookupForTests());

  /** A lookup that answers only when the test says so; records the hosts it was asked for. */
  function hangingLookup() {
    const asked: string[] = [];
    const pending: Array<() => void> = [];
    const lookup: GuardLookup = (host) => {
      asked.push(host);
      return new Promise((resolve) => pending.push(() => resolve([{ address: '93.184.216.34', family: 4 }])));
    };
    const answerAll = () => {
      for (const answer of pending.splice(0)) answer();
    };
    return { lookup, asked, answerAll };
  }
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

  it(`answers a hanging lookup with a refusal at the timeout, runs at most ${GUARD_LOOKUP_CONCURRENCY} at once, frees a slot only when the lookup settles`, async () => {
    const dns = hangingLookup();
    setGuardLookupForTests({ lookup: dns.lookup, timeoutMs: 50 });
    const calls = Array.from({ length: 5 }, (_, i) => resolveTarget(`https://hang-${i}.example/hook`, false));
    // Two started; the other three wait for a slot instead of taking more pool threads.
    expect(dns.asked).toEqual(['hang-0.example', 'hang-1.example']);
    expect(guardLookupsInFlight()).toBe(GUARD_LOOKUP_CONCURRENCY);
    const outcomes = await Promise.allSettled(calls);
    outcomes.forEach((o, i) => {
      expect(o.status).toBe('rejected');
      const reason = (o as PromiseRejectedResult).reason as Error;
      expect(reason).toBeInstanceOf(UrlRefused);
      expect(reason.message).toBe(`could not resolve hang-${i}.example within 50 ms`);
    });
    // The callers were answered, but the two lookups still hold their threads: their slots stay
    // taken, the queued three never started, and a new lookup waits (and is answered at its timeout).
    expect(guardLookupsInFlight()).toBe(GUARD_LOOKUP_CONCURRENCY);
    await expect(resolveTarget('https://late.example/hook', false)).rejects.toThrow('could not resolve late.example within 50 ms');
    expect(dns.asked).toHaveLength(2);
    // The stuck lookups return at last: the slots are free, and lookups work again.
    dns.answerAll();
    await turn();
    expect(guardLookupsInFlight()).toBe(0);
    setGuardLookupForTests();
    const local = await resolveTarget('http://localhost:8080/hook', true);
    expect(local.addresses.length).toBeGreaterThan(0);
    expect(guardLookupsInFlight()).toBe(0);
  });

  it('a hanging lookup makes webhook.create BAD_REQUEST with the timeout; address literals need no lookup', async () => {
    const dns = hangingLookup();
    setGuardLookupForTests({ lookup: dns.lookup, timeoutMs: 50 });
    const admin = callerFor(t.app, actor('boss', `ssrf-t-${uuid().slice(0, 8)}`, ['admin']));
    await expectTRPCError(admin.webhook.create({ url: 'https://hang.example/hook', events: ['*'] }), 'BAD_REQUEST', 'webhook url refused: could not resolve hang.example within 50 ms');
    // An IP literal is checked without a lookup, so it never waits behind hanging names.
    await expectTRPCError(admin.webhook.create({ url: 'http://127.0.0.1/hook', events: ['*'] }), 'BAD_REQUEST', /resolves to 127\.0\.0\.1/);
    expect(dns.asked).toEqual(['hang.example']);
    dns.answerAll();
    await turn();
    expect(guardLookupsInFlight()).toBe(0);
  });
});
