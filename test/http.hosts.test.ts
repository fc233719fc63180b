/**
 * Host names (src/http/hosts.ts, ALLOWED_HOSTS): against DNS rebinding, a server with a list answers
 * only requests and WebSocket upgrades whose `Host` (with TRUST_PROXY, X-Forwarded-Host) is listed,
 * an IP address or `localhost`; every other host gets 403 before anything runs, is counted and
 * logged once. Without a list every host is served, as before.
 */
import { request } from 'node:http';
import { Writable } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { configFailure, createLogger, getJson, loadConfig, rawClient, tokenFor, within, fileServer, type TestServer } from './fixture.js';

/** Log lines of the server with the list (debug level). */
const logLines: string[] = [];
const capture = new Writable({
  write(chunk: Buffer, _enc, cb) {
    logLines.push(chunk.toString('utf8'));
    cb();
  },
});

/** ALLOWED_HOSTS as an operator might write it: case, a trailing dot, an IDN, a wildcard. */
const srv = fileServer('hosts', { allowedHosts: loadConfig({ ALLOWED_HOSTS: 'Chat.Example.com., *.tenants.example, bücher.example' }).allowedHosts }, {
  log: createLogger('debug', false, capture),
});
/** No list: every host. */
let open: TestServer;
/** The list, behind a proxy it trusts: the browser's host is X-Forwarded-Host. */
let proxied: TestServer;

beforeAll(async () => {
  open = await srv.env.startServer();
  proxied = await srv.env.startServer({ allowedHosts: ['chat.example.com', 'chat-internal'], trustProxy: 1 });
});

/** A request of `path` with these headers (`host` among them: fetch cannot set it); its status and body. */
function get(base: string, path: string, headers: Record<string, string>, post?: unknown): Promise<{ status: number; body: string }> {
  const url = new URL(path, base);
  return within(
    new Promise((resolve, reject) => {
      const method = post === undefined ? 'GET' : 'POST';
      const all = post === undefined ? headers : { ...headers, 'content-type': 'application/json' };
      const req = request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers: all }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end(post === undefined ? undefined : JSON.stringify(post));
    }),
    5000,
    `${post === undefined ? 'GET' : 'POST'} ${path} with ${JSON.stringify(headers)}`,
  );
}

/** Whether a raw WebSocket with these handshake headers opens (true) or is refused (its HTTP status). */
async function upgrade(base: string, headers: Record<string, string>): Promise<true | number> {
  using c = rawClient(base, { headers });
  return await within(Promise.race([c.opened.then(() => true as const), c.refused]), 5000, `upgrade with ${JSON.stringify(headers)}`);
}

const me = (token: string) => ({ authorization: `Bearer ${token}` });

async function refusedTotal(base: string): Promise<number> {
  const m = /^chat_host_refused_total (\d+)$/m.exec((await getJson<string>(`${base}/metrics`)).body);
  if (!m) throw new Error('chat_host_refused_total missing from /metrics');
  return Number(m[1]);
}

describe('ALLOWED_HOSTS parsing', () => {
  const hosts = (value: string | undefined) => loadConfig({ ALLOWED_HOSTS: value }).allowedHosts;
  const failure = (value: string): string => configFailure({ ALLOWED_HOSTS: value });

  it('unset or empty: no list (every host)', () => {
    expect(hosts(undefined)).toEqual([]);
    expect(hosts(' , ')).toEqual([]);
  });

  it('names are normalised as Host headers carry them: case, trailing dot, IDN; duplicates dropped', () => {
    expect(hosts('Chat.Example.COM, chat.example.com., *.Tenants.Example, Bücher.example')).toEqual(['chat.example.com', '*.tenants.example', 'xn--bcher-kva.example']);
  });

  it('a scheme, path, port, IP address, bare wildcard or bad name is refused; every bad entry is named in one error', () => {
    expect(failure('https://chat.example.com')).toContain('"https://chat.example.com" is not a host name: list names only');
    expect(failure('chat.example.com/x')).toContain('no scheme, no path');
    expect(failure('chat.example.com:443')).toContain('"chat.example.com:443": list the host name without a port');
    expect(failure('10.0.0.5')).toContain('"10.0.0.5": IP addresses are always allowed');
    expect(failure('[::1]')).toContain('"[::1]": IP addresses are always allowed');
    for (const bad of ['*', '*.com.', 'a..b', '-x.example', 'under score.example']) expect(failure(bad), bad).toContain(`"${bad}" is not a host name`);
    const message = failure('ok.example,*,x:1');
    expect(message).toContain('"*" is not a host name');
    expect(message).toContain('"x:1": list the host name without a port');
  });
});

describe('with ALLOWED_HOSTS set', () => {
  it('listed names (any port), names under a wildcard, IP addresses and localhost are served', async () => {
    const token = tokenFor('host-user');
    for (const host of ['chat.example.com', 'CHAT.example.com:8443', 'chat.example.com.', 'a.tenants.example', 'x.y.tenants.example:80', 'xn--bcher-kva.example', '127.0.0.1:9', '[::1]:9', 'localhost:3000']) {
      const res = await get(srv.url, '/trpc/auth.me', { host, ...me(token) });
      expect(res.status, host).toBe(200);
      expect(JSON.parse(res.body).result.data.json).toMatchObject({ id: 'host-user' });
      expect(await upgrade(srv.url, { host }), host).toBe(true);
    }
    // The probes answer on an address, as Kubernetes and Docker ask them.
    expect((await get(srv.url, '/healthz', { host: '10.1.2.3:3000' })).status).toBe(200);
  });

  it("another host (a rebinding page's domain) is refused with 403 on every path and on the upgrade, and nothing runs", async () => {
    const before = await refusedTotal(srv.url);
    const token = tokenFor('host-victim');
    // A wildcard covers names under the domain, not the domain itself; a suffix match is not a label match.
    const evil = ['evil.example', 'tenants.example', 'eviltenants.example', 'chat.example.com.evil.example'];
    for (const host of evil) {
      for (const path of ['/trpc/auth.me', '/trpc/room.create', '/', '/metrics', '/healthz', '/admin/stats']) {
        const res = await get(srv.url, path, { host, ...me(token) });
        expect(res.status, `${host} ${path}`).toBe(403);
        expect(JSON.parse(res.body), `${host} ${path}`).toEqual({
          error: `host ${JSON.stringify(host)} is not served here (the server's ALLOWED_HOSTS lists the host names it answers to)`,
        });
      }
      expect(await upgrade(srv.url, { host }), host).toBe(403);
      const create = await get(srv.url, '/trpc/room.create', { host, ...me(token) }, { json: { kind: 'group', name: `via ${host}` } });
      expect(create.status, host).toBe(403);
    }
    // The mutations never ran: the victim has no room. The same call on a listed name does run.
    const rooms = async () => JSON.parse((await get(srv.url, '/trpc/room.list', { host: 'chat.example.com', ...me(token) })).body).result.data.json;
    expect(await rooms()).toEqual([]);
    expect((await get(srv.url, '/trpc/room.create', { host: 'chat.example.com', ...me(token) }, { json: { kind: 'group', name: 'listed' } })).status).toBe(200);
    expect((await rooms()).map((r: { name: string }) => r.name)).toEqual(['listed']);
    // Counted each time (6 paths, one upgrade and one POST per host), logged at warn once per host.
    expect(await refusedTotal(srv.url)).toBe(before + evil.length * 8);
    const warns = logLines.filter((l) => l.includes('"audit":"host_refused"') && l.includes('"level":40'));
    expect(warns.filter((l) => l.includes('"host":"evil.example"'))).toHaveLength(1);
    expect(warns[0]).toMatch(/"transport":"http"/);
    expect(logLines.some((l) => l.includes('"audit":"host_refused"') && l.includes('"transport":"ws"'))).toBe(true);
  });

  it('behind a trusted proxy, Host and every X-Forwarded-Host entry must be allowed: a forged forwarded name never stands for the real one', async () => {
    const token = tokenFor('host-proxied');
    // A proxy that sends its upstream name as Host and the browser's in X-Forwarded-Host (both listed).
    const ok = await get(proxied.url, '/trpc/auth.me', { host: 'chat-internal:3000', 'x-forwarded-host': 'chat.example.com', ...me(token) });
    expect(ok.status).toBe(200);
    expect(await upgrade(proxied.url, { host: 'chat-internal', 'x-forwarded-host': 'chat.example.com' })).toBe(true);
    for (const headers of [
      // The proxy set (or appended) the rebinding domain.
      { host: 'chat.example.com', 'x-forwarded-host': 'evil.example' },
      { host: 'chat.example.com', 'x-forwarded-host': 'evil.example, chat.example.com' },
      { host: 'chat.example.com', 'x-forwarded-host': 'chat.example.com, evil.example' },
      // A rebinding page added a listed name itself, and the proxy passed both headers through.
      { host: 'evil.example', 'x-forwarded-host': 'chat.example.com' },
    ]) {
      expect((await get(proxied.url, '/trpc/auth.me', { ...headers, ...me(token) })).status, JSON.stringify(headers)).toBe(403);
      expect(await upgrade(proxied.url, headers), JSON.stringify(headers)).toBe(403);
    }
    // Without TRUST_PROXY the header is not read at all: only Host counts.
    expect((await get(srv.url, '/trpc/auth.me', { host: 'chat.example.com', 'x-forwarded-host': 'evil.example', ...me(token) })).status).toBe(200);
    expect((await get(srv.url, '/trpc/auth.me', { host: 'evil.example', 'x-forwarded-host': 'chat.example.com', ...me(token) })).status).toBe(403);
  });
});

describe('without ALLOWED_HOSTS', () => {
  it('every host is served, as before', async () => {
    const res = await get(open.url, '/trpc/auth.me', { host: 'evil.example', ...me(tokenFor('host-open')) });
    expect(res.status).toBe(200);
    expect(await upgrade(open.url, { host: 'anything.example' })).toBe(true);
    expect(await refusedTotal(open.url)).toBe(0);
  });
});
