/**
 * Request ids (src/logger.ts, src/app.ts): every HTTP answer carries `X-Request-Id` (the one the
 * proxy or client sent when it is a plain token, else a new UUID), and every log line written while
 * that request is handled carries it as `reqId`, so a client's or a proxy's id finds the server's
 * lines of that request. WebSocket lines name their connection instead.
 */
import { Writable } from 'node:stream';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { contextFreeClient, createLogger, fileServer, getJson, inRequest, requestFields, tokenFor, wsClient } from './fixture.js';

/** Log lines of the server (debug level), parsed. */
const lines: Record<string, unknown>[] = [];
const capture = new Writable({
  write(chunk: Buffer, _enc, cb) {
    for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
    cb();
  },
});
const srv = fileServer('request_id', {}, { log: createLogger('debug', false, capture) });

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const admin = { authorization: `Bearer ${tokenFor('rid-admin', { roles: ['admin'] })}` };

/** `auth.revoke` of `userId` over HTTP with these extra headers; the answer's status and X-Request-Id. */
async function revokeOverHttp(userId: string, headers: Record<string, string> = {}): Promise<{ status: number; id: string | null }> {
  const res = await getJson(`${srv.url}/trpc/auth.revoke`, {
    method: 'POST',
    headers: { ...admin, 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ json: { userId } }),
  });
  return { status: res.status, id: res.headers.get('x-request-id') };
}

const revokedLine = (userId: string) => lines.find((l) => l.audit === 'sessions_revoked' && l.user === userId);

describe('X-Request-Id', () => {
  it("a plain id the caller sent is kept: echoed in the answer and in every log line of the request's work", async () => {
    const given = 'edge-7f3a.2:b/c+d=';
    const res = await revokeOverHttp('rid-victim-1', { 'x-request-id': given });
    expect(res).toEqual({ status: 200, id: given });
    expect(revokedLine('rid-victim-1')).toMatchObject({ reqId: given, level: 40 });
  });

  it("each line of a request carries its own fields and the request's id, never a field of an earlier line", async () => {
    const seen: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        seen.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
        cb();
      },
    });
    const log = createLogger('info', false, sink);
    inRequest('one-request', () => {
      log.warn({ audit: 'sessions_revoked', user: 'victim', reqId: 'forged' }, 'first');
      log.info('second');
    });
    log.info('outside');
    expect(seen.map(({ msg, reqId, audit, user }) => ({ msg, reqId, audit, user }))).toEqual([
      { msg: 'first', reqId: 'forged', audit: 'sessions_revoked', user: 'victim' },
      { msg: 'second', reqId: 'one-request', audit: undefined, user: undefined },
      { msg: 'outside', reqId: undefined, audit: undefined, user: undefined },
    ]);
  });

  it('without one, or with one that is not a plain token of at most 128 characters, a new UUID is the id', async () => {
    const ids: string[] = [];
    for (const [user, headers] of [
      ['rid-victim-2', {}],
      ['rid-victim-3', {}],
      ['rid-victim-4', { 'x-request-id': 'two words' }],
      ['rid-victim-5', { 'x-request-id': 'x'.repeat(129) }],
      ['rid-victim-6', { 'x-request-id': 'inject"\\u0000' }],
    ] as const) {
      const res = await revokeOverHttp(user, headers);
      expect(res.status, user).toBe(200);
      expect(res.id, user).toMatch(UUID);
      expect(revokedLine(user), user).toMatchObject({ reqId: res.id });
      ids.push(res.id!);
    }
    expect(new Set(ids).size).toBe(ids.length);
    // Every path answers with one, refusals and probes included.
    for (const path of ['/healthz', '/metrics', '/nowhere', '/trpc/auth.me']) {
      const res = await getJson(`${srv.url}${path}`, { headers: { 'x-request-id': `probe-${path.length}` } });
      expect(res.headers.get('x-request-id'), path).toBe(`probe-${path.length}`);
    }
  });

  it('the same work over WebSocket logs no request id (its lines name the connection); an HTTP request never lends its id to another', async () => {
    await using c = wsClient({ url: srv.url, token: tokenFor('rid-admin', { roles: ['admin'] }) });
    // An HTTP request in flight beside the WebSocket call: its id stays with its own lines.
    const [http] = await Promise.all([revokeOverHttp('rid-victim-7', { 'x-request-id': 'beside' }), c.trpc.auth.revoke.mutate({ userId: 'rid-victim-8' })]);
    expect(http.id).toBe('beside');
    expect(revokedLine('rid-victim-7')).toMatchObject({ reqId: 'beside' });
    const wsLine = revokedLine('rid-victim-8');
    expect(wsLine).toBeDefined();
    expect(wsLine).not.toHaveProperty('reqId');
    const opened = lines.find((l) => l.audit === 'ws_open' && l.user === 'rid-admin');
    expect(opened).toHaveProperty('conn');
    expect(opened).not.toHaveProperty('reqId');
  });

  it("a database connection opened during a request does not keep its id: the pool's connections run their callbacks outside any request", async () => {
    /** What a connection's own callback (a notice from the server) sees, the connection opened inside a request. */
    const seenBy = async (Client: typeof pg.Client): Promise<unknown> => {
      const c = new Client({ connectionString: srv.config.databaseUrl });
      await inRequest('opened-in-a-request', () => c.connect());
      try {
        const notice = new Promise<unknown>((resolve) => c.once('notice', () => resolve(requestFields() ?? 'none')));
        await c.query(`do $$ begin raise notice 'n'; end $$`);
        return await notice;
      } finally {
        await c.end();
      }
    };
    // A plain client keeps the request that opened it for good: what the pool's client class prevents.
    expect(await seenBy(pg.Client)).toEqual({ reqId: 'opened-in-a-request' });
    expect(await seenBy(contextFreeClient(pg.Client))).toBe('none');
  });
});
