import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { createHTTPHandler } from '@trpc/server/adapters/standalone';
import { type WebSocket, WebSocketServer } from 'ws';
import { type Config, fileOrigins, isLoopbackHost } from './config.js';
import { nativePool, openDatabase, type Database } from './store/database.js';
import { createLogger, type Logger } from './logger.js';
import { inRequest } from './util/request-scope.js';
import { requestIdOf } from './http/request-id.js';
import { Metrics, Telemetry } from './metrics.js';
import { AuthError } from './auth/errors.js';
import { isOperator } from './domain/actor.js';
import { CloseCode } from './domain/close-codes.js';
import { addressKey, clientAddress } from './http/client-address.js';
import type { EventBus } from './realtime/bus.js';
import { allUp, createInfrastructure, type Infrastructure } from './realtime/infrastructure.js';
import { createServices, presenceTtl, type Services } from './services/index.js';
import { contextFactory, httpContextFactory } from './trpc/context.js';
import { appRouter } from './trpc/router.js';
import { applyWSSHandler } from './transport/index.js';
import { InputNotPlainJson } from './trpc/transformer.js';
import { HostPolicy } from './http/hosts.js';
import { OriginPolicy } from './http/origins.js';
import { createStaticHandler } from './http/static.js';
import { videoWebhookHandler } from './http/video-webhooks.js';
import { fileHandler } from './http/files.js';
import { EarlyAnswerResponse, readAtMost, refuseSocket } from './http/refusals.js';
import { LocalStorage } from './services/files/index.js';

export interface App {
  server: Server;
  /** http://host:port once listening. */
  url: string;
  services: Services;
  db: Database;
  bus: EventBus;
  /** The bus and the stores chosen for this node (Redis or memory), with every Redis connection. */
  infra: Infrastructure;
  log: Logger;
  /** Starts listening on config.port/host (0 = any free port). */
  listen(): Promise<string>;
  /**
   * Graceful shutdown: stop accepting, tell clients to reconnect (close the sockets left with 1001),
   * let the HTTP requests in flight finish, close bus, ORM and embedded DB.
   */
  close(): Promise<void>;
}

export interface AppOptions {
  log?: Logger;
  /** Folder of the built browser page served at `/` (default: web/dist). */
  webDir?: string;
}

/** Constant-time comparison of two secrets (their SHA-256, so lengths do not leak either). */
function sameSecret(given: string, expected: string): boolean {
  const h = (v: string) => createHash('sha256').update(v).digest();
  return timingSafeEqual(h(given), h(expected));
}

/** Builds the whole server from a config. Used by main.ts and by the tests alike. */
export async function createApp(config: Config, opts: AppOptions = {}): Promise<App> {
  const log = opts.log ?? createLogger(config.logLevel, false);
  if (config.auth.jwtSecretIsDev) {
    log.warn('JWT_SECRET is not set: using the built-in development secret. Never do this in production.');
  }
  if (config.devLogin && !isLoopbackHost(config.host)) {
    log.warn(
      { host: config.host, devLoginRoles: config.devLoginRoles },
      'AUTH_DEV_LOGIN is on and the server listens beyond this machine: anyone who reaches it can sign in as any user' +
        (config.devLoginRoles ? ', with any role and tenant (AUTH_DEV_LOGIN_ROLES=1)' : ''),
    );
  }
  if (config.allowedHosts.length === 0 && !isLoopbackHost(config.host)) {
    log.warn({ host: config.host }, 'ALLOWED_HOSTS is not set and the server listens beyond this machine: it answers to any host name (set the names clients use; docs/SECURITY.md, "Host names")');
  }
  if (config.files.storage === 'local' && config.files.urlSecret === null) {
    log.warn('FILE_STORAGE=local without FILE_URL_SECRET or JWT_SECRET: file uploads are off (set FILE_URL_SECRET, or FILE_STORAGE=s3)');
  }
  const db = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    poolMax: config.dbPoolMax,
    statementTimeoutMs: config.dbStatementTimeoutMs,
    replicaUrls: config.databaseReplicaUrls,
  });
  // What the services report into (counters, procedure timings, fan-outs): built before them.
  const telemetry = new Telemetry();
  const counters = telemetry.counters;
  const onBusError = (err: unknown) => {
    counters.busErrors++;
    log.warn({ err }, 'bus error');
  };
  // Memory or Redis, decided once: the bus and every store the services use.
  const infra = createInfrastructure(config, { log, presenceTtlMs: presenceTtl(config), onBusError });
  const bus = infra.bus;
  // Listen only once every Redis connection is ready, as the bus's subscriptions already require:
  // otherwise the first requests would count rate limits per node (their fallback while Redis is
  // not ready) and could miss presence. Redis down at start: the node waits, retrying, and says so.
  const notReady = infra.redis.filter((l) => l.client.status !== 'ready');
  if (notReady.length > 0) {
    const slow = setTimeout(() => log.warn({ redis: notReady.map((l) => l.role) }, 'waiting for redis before serving'), 2000);
    await Promise.all(notReady.map((l) => l.ready()));
    clearTimeout(slow);
  }
  const services = await createServices({ config, orm: db.orm, replicas: db.replicas, sendPipe: db.sendPipe, bus, log, counters, observers: telemetry }, infra);
  const createContext = contextFactory(services);

  let draining = false;
  const trpcMaxBodyBytes = Math.max(config.wsMaxPayloadBytes, 64 * 1024);
  const trpcHttp = createHTTPHandler({
    router: appRouter,
    createContext: httpContextFactory(createContext),
    basePath: '/trpc/',
    maxBodySize: trpcMaxBodyBytes,
    maxBatchSize: config.limits.maxBatchSize,
    responseMeta: ({ data }) => {
      const headers: Record<string, string> = {};
      const wait = retryAfterOf(data);
      if (wait !== null) headers['retry-after'] = String(Math.max(1, Math.ceil(wait / 1000)));
      // (A body over maxBodySize is answered before it is all read: its connection ends, like every
      // such answer's, src/http/refusals.ts EarlyAnswerResponse.)
      return { headers };
    },
    onError: ({ error, path }) => {
      if (error.code === 'INTERNAL_SERVER_ERROR') log.error({ err: error.cause ?? error, path }, 'internal error');
    },
  });

  const metrics = new Metrics(telemetry, {
    connections: () => wss.clients.size,
    hubs: () => ({ rooms: services.hubs.roomCount, subscribers: services.hubs.subscriberCount, ...services.hubs.stats }),
    inboxSubscribers: () => services.inbox.hubs.subscriberCount,
    busAlone: () => bus.alone,
    pool: () => nativePool(db.orm),
    replicas: () => services.reads.health(),
  });
  const startedAt = new Date();
  await services.start();

  /** Live totals of this node (GET /admin/stats with an admin token). */
  const adminStats = () => ({
    node: { pid: process.pid, startedAt, uptimeSeconds: Math.round(process.uptime()), draining },
    connections: wss.clients.size,
    /** Open sessions by the clientType / clientVersion / deviceId of their connection parameters. */
    clients: services.sessions.clientStats(),
    roomHubs: services.hubs.roomCount,
    roomSubscriptions: services.hubs.subscriberCount,
    inboxSubscriptions: services.inbox.hubs.subscriberCount,
    events: services.hubs.stats,
    counters,
    bus: bus.kind,
    busAlone: bus.alone,
    database: db.embedded ? 'embedded' : 'postgresql',
    replicas: services.reads.health(),
    memory: process.memoryUsage(),
  });

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };

  // The page's CSP allows the file storage's origins (S3, FILE_PUBLIC_URL): uploads and thumbnails.
  const serveStatic = createStaticHandler(opts.webDir, fileOrigins(config.files));
  const videoWebhooks = videoWebhookHandler(services.meetings.webhooks, log);
  // The local storage driver's signed upload and download URLs (S3: the store serves them).
  const storage = services.files.storage;
  const files = storage instanceof LocalStorage ? fileHandler(storage, log, (key) => services.files.uploadOwned(key)) : null;
  // Browser origins allowed on the API, over HTTP and WebSocket (src/http/origins.ts).
  const origins = new OriginPolicy({ allowed: config.corsOrigins, trustProxy: config.trustProxy, log, counters });
  // Host names the server answers to (ALLOWED_HOSTS; against DNS rebinding: src/http/hosts.ts).
  const hosts = new HostPolicy({ allowed: config.allowedHosts, trustProxy: config.trustProxy, log, counters });
  const route = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (hosts.screen(req, res)) return;
    if (origins.screen(req, res, path)) return;
    if (path === '/healthz') return json(res, 200, { status: 'ok' });
    if (path === '/readyz') {
      // Every store the node depends on: PostgreSQL (on a connection of its own, so a busy pool
      // does not fail it: src/store/database.ts) and each Redis connection (in memory: up).
      void (async () => {
        const [database, redis] = await Promise.all([db.ping(1500), infra.health(1500)]);
        const busUp = redis.bus.publisher === 'up' && redis.bus.subscriber === 'up';
        const ok = database && allUp(redis) && !draining;
        // A read replica that is down or behind only costs the primary more reads: degraded, still ready.
        const replicas = services.reads.health();
        const degraded = replicas.some((r) => r.status !== 'up');
        json(res, ok ? 200 : 503, {
          status: ok ? (degraded ? 'degraded' : 'ready') : 'unavailable',
          draining,
          database: database ? 'up' : 'down',
          bus: { kind: bus.kind, status: busUp ? 'up' : 'down' },
          redis,
          ...(replicas.length > 0 ? { replicas } : {}),
        });
      })();
      return;
    }
    if (path === '/metrics') {
      void metrics.render().then(
        (text) => {
          res.writeHead(200, { 'content-type': metrics.contentType });
          res.end(text);
        },
        (err) => json(res, 500, { error: String(err) }),
      );
      return;
    }
    if (path === '/admin/stats') {
      // Node-wide data: for the deployment's operator (ADMIN_TOKEN, or a token with the `operator`
      // role), not for a tenant's admin.
      const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
      const bearer = m?.[1]?.trim() ?? '';
      // A failure to gather them is this request's 500, never the process's end.
      const stats = () => {
        try {
          json(res, 200, adminStats());
        } catch (err) {
          log.error({ err }, 'admin stats failed');
          json(res, 500, { error: 'internal server error' });
        }
      };
      if (config.adminToken !== undefined && sameSecret(bearer, config.adminToken)) return stats();
      void services.auth.authenticate(bearer, clientAddress(req, config.trustProxy)).then(
        (actor) =>
          isOperator(actor)
            ? stats()
            : json(res, 403, { error: 'node-wide statistics are for the operator: a token with the operator role, or ADMIN_TOKEN' }),
        (err: unknown) => {
          if (err instanceof AuthError && err.unavailable) return json(res, 503, { error: err.message });
          const reason = err instanceof AuthError ? err.message : 'invalid access token';
          return json(res, 401, { error: `admin token required (Authorization: Bearer): ${reason}` });
        },
      );
      return;
    }
    if (path === '/trpc' || path.startsWith('/trpc/')) {
      trpcHttp(req, res);
      // Past maxBodySize the body is refused: no more of it is read (tRPC's adapter would read on).
      if (req.method !== 'GET' && req.method !== 'HEAD') readAtMost(req, trpcMaxBodyBytes);
      return;
    }
    if (videoWebhooks(req, res, path)) return;
    if (files?.(req, res, path)) return;
    if (serveStatic(req, res, path)) return;
    json(res, 404, { error: 'not found' });
  };
  // The HTTP requests being answered: a drain lets them finish (within SHUTDOWN_TIMEOUT_MS) before
  // the services and the connections close under them.
  const inflight = new Set<ServerResponse>();
  let httpIdle: (() => void) | null = null;
  const answered = function (this: ServerResponse) {
    inflight.delete(this);
    if (!draining) return;
    // A keep-alive connection whose answer began before the drain may be idle now: it takes no new request.
    server.closeIdleConnections();
    if (inflight.size === 0) httpIdle?.();
  };
  // Every HTTP answer names its request (X-Request-Id: the one given, or a new one), and so does every
  // log line written while it is handled (`reqId`, src/logger.ts). An answer given before the
  // request's body was all read ends its connection, so no body is read past it (EarlyAnswerResponse).
  const server = createServer({ ServerResponse: EarlyAnswerResponse }, (req: IncomingMessage, res: ServerResponse) => {
    inflight.add(res);
    res.once('close', answered);
    // While draining, each answer ends its connection: the client's next request goes to another node.
    if (draining) res.setHeader('connection', 'close');
    const reqId = requestIdOf(req);
    res.setHeader('x-request-id', reqId);
    inRequest(reqId, () => route(req, res));
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: config.wsMaxPayloadBytes });
  // tRPC's WebSocket protocol with a fan-out fast path (src/transport/, a drop-in for tRPC's
  // applyWSSHandler); what is the chat's reaches it through these options.
  const wsHandler = applyWSSHandler({
    wss,
    router: appRouter,
    createContext,
    counters,
    keepAlive: { enabled: true, pingMs: config.wsKeepAliveMs, pongWaitMs: config.wsPongWaitMs },
    // Idle connections hold no upgrade request; inputs that are not plain JSON are answered
    // under their call's id (src/trpc/transformer.ts).
    releaseRequest: true,
    answerDecodeErrorById: (cause) => cause instanceof InputNotPlainJson,
    limits: {
      maxInflight: config.limits.wsMaxInflight,
      maxBatch: config.limits.maxBatchSize,
      // A reconnecting client sends every subscription it holds in one message, with what it had queued.
      maxCalls: 2 * config.limits.maxBatchSize + config.limits.subscriptionsPerConnection,
      hardBytes: config.limits.wsBufferHardBytes,
      onOverflow: (ws, bufferedAmount) => {
        log.warn({ bufferedAmount }, 'closing a slow consumer (replies)');
        ws.close(CloseCode.SlowConsumer, 'too much data queued: reconnect and resume');
      },
    },
    onError: ({ error, path }) => {
      if (error.code === 'INTERNAL_SERVER_ERROR') log.error({ err: error.cause ?? error, path }, 'internal error');
    },
  });
  const ipConnections = new Map<string, number>();
  /** The address each open socket is counted under. */
  const addressOf = new WeakMap<WebSocket, string>();
  // One listener for every socket (ws calls it with the socket as `this`), built outside the upgrade
  // handler: one created in there would keep the upgrade request (and its headers) alive for the
  // whole life of the connection, and a closure per connection costs every idle connection memory.
  const releaseAddress = function (this: WebSocket) {
    const ip = addressOf.get(this);
    if (ip === undefined) return;
    addressOf.delete(this);
    const n = (ipConnections.get(ip) ?? 1) - 1;
    if (n <= 0) ipConnections.delete(ip);
    else ipConnections.set(ip, n);
  };
  const destroyOnError = function (this: Duplex) {
    this.destroy();
  };
  const ignoreError = () => undefined;
  server.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (draining || !(path === '/trpc' || path.startsWith('/trpc/'))) {
      socket.write('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
      socket.destroy();
      return;
    }
    if (hosts.refuseUpgrade(req, socket) || origins.refuseUpgrade(req, socket)) return;
    // The per-address limits count an IPv6 client by its /64 (addressKey).
    const ip = addressKey(clientAddress(req, config.trustProxy));
    // Node takes its own error listener off a socket before it emits 'upgrade', and `ws` adds one
    // only in handleUpgrade: a reset while the rate limit is asked (a Redis round trip) would
    // otherwise be an 'error' without a listener, which ends the process.
    socket.on('error', destroyOnError);
    void (async () => {
      // Connection attempts per address (a reconnect storm or a scan): refused before the upgrade.
      const attempt = await services.limits.allow('connect', ip).catch(() => ({ ok: true as const }));
      socket.off('error', destroyOnError);
      if (socket.destroyed) return;
      if (!attempt.ok) {
        const retry = Math.ceil(attempt.retryAfterMs / 1000);
        socket.write(`HTTP/1.1 429 Too Many Requests\r\nRetry-After: ${retry}\r\nConnection: close\r\n\r\n`);
        socket.destroy();
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        // Concurrent connections per address on this node: closed with a documented code.
        const open = ipConnections.get(ip) ?? 0;
        if (open >= config.limits.connectionsPerIp) {
          counters.rateLimited++;
          // The refused socket is read until its close handshake ends (at most REFUSED_CLOSE_MS: it
          // is counted nowhere); a bad frame meanwhile is an 'error' on it, which needs a listener
          // (the transport's is never attached here).
          ws.on('error', ignoreError);
          refuseSocket(ws, CloseCode.TooManyConnections, 'too many connections from this address');
          return;
        }
        ipConnections.set(ip, open + 1);
        addressOf.set(ws, ip);
        ws.on('close', releaseAddress);
        wss.emit('connection', ws, req);
      });
    })();
  });

  const app: App = {
    server,
    url: '',
    services,
    db,
    bus,
    infra,
    log,
    async listen() {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => {
          server.off('error', reject);
          resolve();
        });
      });
      const addr = server.address() as AddressInfo;
      const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      app.url = `http://${host}:${addr.port}`;
      return app.url;
    },
    async close() {
      if (draining) return;
      draining = true;
      const started = Date.now();
      // The answers not begun yet end their connections too (node keeps a keep-alive connection
      // serving after server.close()).
      for (const res of inflight) if (!res.headersSent) res.setHeader('connection', 'close');
      // Tell every WebSocket client to reconnect (to another node), then stop accepting.
      wsHandler.broadcastReconnectNotification();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      // The sockets get half of SHUTDOWN_TIMEOUT_MS, at most 2 s: to leave, then (those still
      // open) for the close handshake of 1001, then they are terminated (a client that does not
      // read never completes it). Never all of it: with a budget under 2 s that left nothing for
      // the HTTP requests and the services' close (what they still owe) before main.ts's deadline.
      const socketsMs = Math.min(config.shutdownTimeoutMs / 2, 2000);
      const handshakeMs = Math.min(500, socketsMs / 4);
      const deadline = Date.now() + socketsMs;
      const allClosed = async (by: number) => {
        while (wss.clients.size > 0 && Date.now() < by) await new Promise((r) => setTimeout(r, 25));
      };
      await allClosed(deadline - handshakeMs);
      for (const ws of wss.clients) ws.close(CloseCode.GoingAway, 'server shutting down');
      await allClosed(deadline);
      for (const ws of wss.clients) ws.terminate();
      // The HTTP requests in flight finish (a send over HTTP gets its answer, not a cut connection),
      // for as long as SHUTDOWN_TIMEOUT_MS leaves after closing the services, the bus and the database
      // (a quarter of it, at most 3 s, kept for them).
      const httpBy = started + config.shutdownTimeoutMs - Math.min(3000, config.shutdownTimeoutMs / 4);
      if (inflight.size > 0 && Date.now() < httpBy) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, httpBy - Date.now());
          httpIdle = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        httpIdle = null;
      }
      // Only now: ending a hub's subscribers completes their streams, and tRPC tells each client
      // `stopped`, which ends the subscription for good instead of letting it resume elsewhere.
      // Live subscriptions keep being served while clients move; terminated sockets resubscribe.
      await services.close();
      wss.close();
      wsHandler.close();
      server.closeAllConnections();
      await closed;
      await bus.close();
      await db.close();
    },
  };
  return app;
}


/**
 * The longest wait a response's refused calls name (`data.retryAfterMs` of TOO_MANY_REQUESTS and
 * SERVICE_UNAVAILABLE errors, src/trpc/init.ts), for an HTTP `Retry-After` header beside the body's
 * figure: proxies, load balancers and HTTP clients that never read the body honour the header.
 */
function retryAfterOf(data: readonly unknown[]): number | null {
  let wait: number | null = null;
  for (const item of data) {
    const ms = (item as { error?: { data?: { retryAfterMs?: unknown } } }).error?.data?.retryAfterMs;
    if (typeof ms === 'number' && Number.isFinite(ms) && ms >= 0) wait = Math.max(wait ?? 0, ms);
  }
  return wait;
}
