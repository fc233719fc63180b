/**
 * Browser origins (src/http/origins.ts): CORS for the origins in CORS_ORIGINS, the server's own
 * origin always allowed, any other `Origin` refused with 403 over HTTP and before the WebSocket
 * upgrade, and requests without `Origin` (Node, the CLI, servers) served as before.
 */
import { Writable } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  configFailure,
  createLogger,
  getJson,
  loadConfig,
  rawClient,
  tokenFor,
  uuid,
  within,
  wsClient,
  fileServer,
  type TestServer,
  type TrpcHttpResult,
} from './fixture.js';

const APP = 'https://app.example.com';
const VITE = 'http://localhost:5173';
const EVIL = 'https://evil.example';

/** Log lines of the servers that log (debug level). */
const logLines: string[] = [];
const capture = new Writable({
  write(chunk: Buffer, _enc, cb) {
    logLines.push(chunk.toString('utf8'));
    cb();
  },
});

/** A server with CORS_ORIGINS set (written as an operator might: case and default port normalised by the config). */
/** A hybrid app's web view (Capacitor on iOS): an origin with a scheme of its own. */
const HYBRID = 'capacitor://localhost';
const srv = fileServer('origins', { corsOrigins: loadConfig({ CORS_ORIGINS: `HTTPS://App.Example.com:443, ${VITE}, Capacitor://LocalHost` }).corsOrigins }, {
  log: createLogger('debug', false, capture),
});
/** A server with CORS_ORIGINS unset: same origin only. */
let plain: TestServer;
/** The same, behind a proxy it trusts (TRUST_PROXY). */
let proxied: TestServer;

beforeAll(async () => {
  plain = await srv.env.startServer({}, { log: createLogger('debug', false, capture) });
  proxied = await srv.env.startServer({ trustProxy: 1 });
});

const auth = (user: string) => ({ authorization: `Bearer ${tokenFor(user)}` });

/** Every `access-control-*` header of an answer, by name. */
function corsHeaders(headers: Headers): Record<string, string> {
  return Object.fromEntries([...headers].filter(([k]) => k.startsWith('access-control-')));
}

/** The entries of a `Vary` header, lower-cased. */
const vary = (headers: Headers) => (headers.get('vary') ?? '').split(',').map((v) => v.trim().toLowerCase()).filter(Boolean);

/** A preflight of `POST /trpc/room.create` from `origin`. */
const preflight = (base: string, origin: string, requestHeaders = 'authorization, content-type') =>
  getJson(`${base}/trpc/room.create`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': requestHeaders },
  });

/** `room.create` over HTTP as `user`, with `headers` (e.g. an Origin). */
const createRoom = (base: string, user: string, name: string, headers: Record<string, string> = {}) =>
  getJson<TrpcHttpResult<{ id: string; name: string }>>(`${base}/trpc/room.create`, {
    method: 'POST',
    headers: { ...auth(user), 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ json: { kind: 'group', name } }),
  });

/** The names of the rooms `user` is in (asked without an Origin). */
async function roomNames(base: string, user: string): Promise<string[]> {
  const res = await getJson<TrpcHttpResult<{ name: string }[]>>(`${base}/trpc/room.list`, { headers: auth(user) });
  expect(res.status).toBe(200);
  return res.body.result.data.json.map((r) => r.name);
}

/** The value of chat_origin_refused_total on a server. */
async function refusedTotal(base: string): Promise<number> {
  const text = (await getJson<string>(`${base}/metrics`)).body;
  const m = /^chat_origin_refused_total (\d+)$/m.exec(text);
  if (!m) throw new Error('chat_origin_refused_total missing from /metrics');
  return Number(m[1]);
}

/** Whether a raw WebSocket to the server opens (true) or is refused (its HTTP status). */
async function upgrade(base: string, origin?: string): Promise<true | number> {
  using c = rawClient(base, origin ? { origin } : {});
  return await within(
    Promise.race([c.opened.then(() => true as const), c.refused]),
    5000,
    `upgrade with Origin ${origin ?? '(none)'}`,
  );
}

describe('CORS_ORIGINS parsing', () => {
  const origins = (value: string | undefined) => loadConfig({ CORS_ORIGINS: value }).corsOrigins;
  const failure = (value: string): string => configFailure({ CORS_ORIGINS: value });

  it('unset or empty: no listed origin (same origin only)', () => {
    expect(origins(undefined)).toEqual([]);
    expect(origins('')).toEqual([]);
    expect(origins(' , ')).toEqual([]);
  });

  it('entries are normalised as browsers send them: case, default ports, IDN, IPv6; duplicates dropped', () => {
    expect(origins('HTTPS://App.Example.COM:443,http://localhost:5173, https://app.example.com ,http://127.0.0.1:80')).toEqual([
      'https://app.example.com',
      'http://localhost:5173',
      'http://127.0.0.1',
    ]);
    expect(origins('https://Bücher.example:8443,http://[::1]:5173')).toEqual(['https://xn--bcher-kva.example:8443', 'http://[::1]:5173']);
  });

  it("an app's own scheme and host (hybrid web views, browser extensions) is an origin, lower-cased; the web's schemes and typos of http are not", () => {
    expect(origins('capacitor://localhost, Ionic://LocalHost, chrome-extension://abcdefghijklmnopabcdefghijklmnop, tauri://localhost, app://.')).toEqual([
      'capacitor://localhost',
      'ionic://localhost',
      'chrome-extension://abcdefghijklmnopabcdefghijklmnop',
      'tauri://localhost',
      'app://.',
    ]);
    expect(failure('wss://chat.example.com')).toContain('"wss://chat.example.com" is a WebSocket URL: list the origin of the page that opens it');
    for (const bad of ['htps://app.example.com', 'httpx://app.example.com', 'hxxps://app.example.com', 'file://host', 'capacitor://', 'capacitor://localhost/index.html', 'capacitor://user@localhost']) {
      expect(failure(bad), bad).toContain(`"${bad}" is not an origin`);
    }
  });

  it('a wildcard is refused, alone or in a host', () => {
    expect(failure('*')).toMatch(/CORS_ORIGINS: "\*": wildcards are refused; list the exact origin of each frontend/);
    expect(failure('https://*.example.com')).toMatch(/"https:\/\/\*\.example\.com": wildcards are refused/);
  });

  it('a path, query or fragment is refused, naming the origin meant', () => {
    expect(failure('https://app.example.com/')).toMatch(/"https:\/\/app\.example\.com\/" has a path: an origin is scheme:\/\/host\[:port\] only \(here https:\/\/app\.example\.com\)/);
    expect(failure('https://app.example.com/chat')).toMatch(/has a path/);
    expect(failure('https://app.example.com?x=1')).toMatch(/has a path/);
    expect(failure('https://app.example.com#top')).toMatch(/has a path/);
  });

  it('what is not an http(s) origin is refused; every bad entry is named in one error', () => {
    for (const bad of ['app.example.com', 'ftp://files.example', 'null', 'https://user:pw@app.example.com', 'https://app.example.com:99999', 'http:/x.example']) {
      expect(failure(bad), bad).toContain(`"${bad}" is not an origin: expected http(s)://host[:port]`);
    }
    const message = failure('https://ok.example,*,app.example.com');
    expect(message).toContain('"*": wildcards are refused');
    expect(message).toContain('"app.example.com" is not an origin');
  });
});

describe('HTTP with CORS_ORIGINS set', () => {
  it('a preflight from a listed origin is 204 with exactly the CORS headers', async () => {
    for (const origin of [APP, VITE]) {
      const res = await preflight(srv.url, origin);
      expect(res.status, origin).toBe(204);
      expect(corsHeaders(res.headers), origin).toEqual({
        'access-control-allow-origin': origin,
        'access-control-allow-methods': 'GET, POST, OPTIONS',
        'access-control-allow-headers': 'authorization, content-type, trpc-accept',
        'access-control-max-age': '600',
      });
      expect(vary(res.headers)).toEqual(['origin']);
      expect(res.body).toBe('');
    }
    // The batch URLs of httpBatchLink and /admin/stats are preflighted the same way.
    const batch = await getJson(`${srv.url}/trpc/auth.me,room.list?batch=1`, {
      method: 'OPTIONS',
      headers: { origin: APP, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization, trpc-accept' },
    });
    expect(batch.status).toBe(204);
    expect(batch.headers.get('access-control-allow-origin')).toBe(APP);
    const admin = await getJson(`${srv.url}/admin/stats`, { method: 'OPTIONS', headers: { origin: VITE, 'access-control-request-method': 'GET' } });
    expect(admin.status).toBe(204);
    expect(admin.headers.get('access-control-allow-origin')).toBe(VITE);
  });

  it('a preflight asking for a header outside the list does not get it allowed', async () => {
    const res = await preflight(srv.url, APP, 'authorization, x-custom');
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-headers')).toBe('authorization, content-type, trpc-accept');
  });

  it('a preflight from an unlisted origin is 403 with no CORS headers', async () => {
    for (const origin of [EVIL, 'https://app.example.com:8443', 'http://app.example.com', 'null']) {
      const res = await preflight(srv.url, origin);
      expect(res.status, origin).toBe(403);
      expect(corsHeaders(res.headers), origin).toEqual({});
      expect(res.body, origin).toEqual({ error: `origin "${origin}" is not allowed (the server's CORS_ORIGINS lists the browser origins it accepts)` });
    }
  });

  it('POST and GET from a listed origin run and carry Access-Control-Allow-Origin and Vary: Origin', async () => {
    const name = `listed ${uuid()}`;
    const created = await createRoom(srv.url, 'ann', name, { origin: APP });
    expect(created.status).toBe(200);
    expect(created.body.result.data.json.name).toBe(name);
    expect(corsHeaders(created.headers)).toEqual({ 'access-control-allow-origin': APP });
    // tRPC's own Vary entries stay, with Origin added.
    expect(vary(created.headers)).toEqual(['trpc-accept', 'accept', 'origin']);

    const me = await getJson<TrpcHttpResult<{ id: string }>>(`${srv.url}/trpc/auth.me`, { headers: { ...auth('ann'), origin: VITE } });
    expect(me.status).toBe(200);
    expect(me.body.result.data.json.id).toBe('ann');
    expect(corsHeaders(me.headers)).toEqual({ 'access-control-allow-origin': VITE });
    expect(vary(me.headers)).toContain('origin');

    // Errors are readable by the page too (here UNAUTHORIZED without a token).
    const anonymous = await getJson(`${srv.url}/trpc/room.list`, { headers: { origin: APP } });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('access-control-allow-origin')).toBe(APP);
  });

  it("a listed app origin (capacitor://localhost) is served like a web one; another app's origin is refused", async () => {
    const res = await preflight(srv.url, HYBRID);
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe(HYBRID);
    const name = `hybrid ${uuid()}`;
    const created = await createRoom(srv.url, 'hyb', name, { origin: HYBRID });
    expect(created.status).toBe(200);
    expect(corsHeaders(created.headers)).toEqual({ 'access-control-allow-origin': HYBRID });
    for (const other of ['ionic://localhost', 'capacitor://evil.example', 'capacitor://localhost:8100']) {
      const refused = await createRoom(srv.url, 'hyb', `refused ${uuid()}`, { origin: other });
      expect(refused.status, other).toBe(403);
      expect(corsHeaders(refused.headers), other).toEqual({});
    }
    expect(await roomNames(srv.url, 'hyb')).toEqual([name]);
  });

  it('POST and GET from an unlisted origin are refused with 403 and never run', async () => {
    const name = `refused ${uuid()}`;
    const before = await refusedTotal(srv.url);
    const created = await createRoom(srv.url, 'bea', name, { origin: EVIL });
    expect(created.status).toBe(403);
    expect(created.body).toEqual({ error: `origin "${EVIL}" is not allowed (the server's CORS_ORIGINS lists the browser origins it accepts)` });
    expect(corsHeaders(created.headers)).toEqual({});
    expect(await roomNames(srv.url, 'bea')).not.toContain(name);

    const me = await getJson(`${srv.url}/trpc/auth.me`, { headers: { ...auth('bea'), origin: EVIL } });
    expect(me.status).toBe(403);
    expect(corsHeaders(me.headers)).toEqual({});
    const admin = await getJson(`${srv.url}/admin/stats`, { headers: { authorization: `Bearer ${tokenFor('root', { roles: ['operator'] })}`, origin: EVIL } });
    expect(admin.status).toBe(403);
    expect(await refusedTotal(srv.url)).toBe(before + 3);
  });

  it('without Origin (Node, the CLI, servers) requests run as before, with no CORS headers', async () => {
    const name = `no origin ${uuid()}`;
    const created = await createRoom(srv.url, 'cal', name);
    expect(created.status).toBe(200);
    expect(corsHeaders(created.headers)).toEqual({});
    expect(await roomNames(srv.url, 'cal')).toContain(name);
  });

  it("the server's own origin stays allowed, without CORS headers", async () => {
    const created = await createRoom(srv.url, 'dee', `own ${uuid()}`, { origin: srv.url });
    expect(created.status).toBe(200);
    expect(corsHeaders(created.headers)).toEqual({});
  });

  it('health, readiness, metrics and webhooks do not look at Origin and send no CORS headers', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      for (const headers of [{}, { origin: EVIL }, { origin: APP }]) {
        const res = await getJson(`${srv.url}${path}`, { headers });
        expect(res.status, path).toBe(200);
        expect(corsHeaders(res.headers), path).toEqual({});
      }
    }
    // No video provider here: the webhook answers as it does without an Origin.
    const hook = await getJson(`${srv.url}/webhooks/video/daily`, { method: 'POST', headers: { origin: EVIL }, body: '{}' });
    const plainHook = await getJson(`${srv.url}/webhooks/video/daily`, { method: 'POST', body: '{}' });
    expect(hook.status).toBe(plainHook.status);
    expect(hook.status).not.toBe(403);
  });
});

describe('WebSocket with CORS_ORIGINS set', () => {
  it('an upgrade from a listed origin opens, and a tRPC call works on it', async () => {
    await using c = wsClient({ url: srv.url, userId: 'eve', origin: APP });
    const me = await within(c.trpc.auth.me.query(), 5000, 'auth.me over the socket');
    expect(me.id).toBe('eve');
    expect(c.opens).toBe(1);
  });

  it('an upgrade from an unlisted origin is refused with 403 before the upgrade, and counted', async () => {
    const before = await refusedTotal(srv.url);
    expect(await upgrade(srv.url, EVIL)).toBe(403);
    expect(await upgrade(srv.url, 'null')).toBe(403);
    expect(await upgrade(srv.url, 'ionic://localhost')).toBe(403);
    expect(await refusedTotal(srv.url)).toBe(before + 3);
    // A listed app origin opens.
    expect(await upgrade(srv.url, HYBRID)).toBe(true);
  });

  it("an upgrade without Origin, or from the server's own origin, opens", async () => {
    expect(await upgrade(srv.url)).toBe(true);
    expect(await upgrade(srv.url, srv.url)).toBe(true);
  });

  it('a refused origin is logged at warn once, repeats at debug', async () => {
    const origin = `https://once-${uuid()}.example`;
    expect(await upgrade(srv.url, origin)).toBe(403);
    expect((await createRoom(srv.url, 'fay', 'x', { origin })).status).toBe(403);
    const lines = logLines.map((l) => JSON.parse(l) as { level: number; audit?: string; origin?: string; transport?: string }).filter((l) => l.origin === origin);
    expect(lines.map((l) => [l.level, l.audit, l.transport])).toEqual([
      [40, 'origin_refused', 'ws'],
      [20, 'origin_refused', 'http'],
    ]);
  });
});

describe('CORS_ORIGINS unset: same origin only', () => {
  it('the page of the server itself (Origin = its own URL) is served over HTTP, with no CORS headers', async () => {
    const name = `same ${uuid()}`;
    const created = await createRoom(plain.url, 'gus', name, { origin: plain.url });
    expect(created.status).toBe(200);
    expect(corsHeaders(created.headers)).toEqual({});
    expect(vary(created.headers)).not.toContain('origin');
    expect(await roomNames(plain.url, 'gus')).toContain(name);
  });

  it('any other origin is refused over HTTP, preflights included, with no CORS headers', async () => {
    const port = new URL(plain.url).port;
    for (const origin of [EVIL, APP, `http://localhost:${port}`, `https://127.0.0.1:${port}`]) {
      const created = await createRoom(plain.url, 'hal', 'x', { origin });
      expect(created.status, origin).toBe(403);
      expect(corsHeaders(created.headers), origin).toEqual({});
      const pre = await preflight(plain.url, origin);
      expect(pre.status, origin).toBe(403);
      expect(corsHeaders(pre.headers), origin).toEqual({});
    }
    expect(await roomNames(plain.url, 'hal')).toEqual([]);
    // The own host with another scheme is what a TLS proxy without TRUST_PROXY looks like: the log says so.
    const warned = logLines.map((l) => JSON.parse(l) as { level: number; origin?: string; hint?: string }).find((l) => l.origin === `https://127.0.0.1:${port}`);
    expect(warned?.level).toBe(40);
    expect(warned?.hint).toBe(`this server sees itself as http://127.0.0.1:${port}: behind a TLS proxy set TRUST_PROXY=1 (the proxy sends X-Forwarded-Proto), or list https://127.0.0.1:${port} in CORS_ORIGINS`);
  });

  it('WebSocket: its own origin and no Origin open, any other origin gets 403', async () => {
    await using c = wsClient({ url: plain.url, userId: 'ida', origin: plain.url });
    expect((await within(c.trpc.auth.me.query(), 5000, 'auth.me over the socket')).id).toBe('ida');
    expect(await upgrade(plain.url)).toBe(true);
    expect(await upgrade(plain.url, EVIL)).toBe(403);
    expect(await upgrade(plain.url, APP)).toBe(403);
  });

  it('behind a TLS proxy the own origin comes from X-Forwarded-Proto/-Host only with TRUST_PROXY', async () => {
    const forwarded = { origin: 'https://chat.example.com', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'chat.example.com' };
    const trusted = await createRoom(proxied.url, 'jo', 'via proxy', forwarded);
    expect(trusted.status).toBe(200);
    expect(corsHeaders(trusted.headers)).toEqual({});
    // Another host through the same proxy is still foreign.
    expect((await createRoom(proxied.url, 'jo', 'x', { ...forwarded, origin: 'https://other.example.com' })).status).toBe(403);
    // Without TRUST_PROXY the forwarded headers are ignored: the server is http://127.0.0.1:port.
    expect((await createRoom(plain.url, 'jo', 'x', forwarded)).status).toBe(403);
  });
});
