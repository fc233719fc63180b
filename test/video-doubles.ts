/**
 * Local HTTP doubles of the video providers, following their published wire contracts, plus
 * webhook senders signed the way each provider signs. Started inside the tests on 127.0.0.1:0.
 *
 * - LiveKit: Twirp JSON at `/twirp/livekit.RoomService/{CreateRoom,DeleteRoom,ListParticipants,
 *   RemoveParticipant}`, `Authorization: Bearer <JWT>` verified with the SDK's TokenVerifier (issuer =
 *   API key) and the grants each method needs; errors as Twirp JSON `{ code, msg }`. Webhooks: JSON
 *   WebhookEvent bodies with a JWT in `Authorization` whose `sha256` claim is the body's base64 SHA-256.
 * - Daily: REST `POST /rooms`, `GET|DELETE /rooms/:name`, `GET /rooms/:name/presence`,
 *   `POST /rooms/:name/eject`, `POST /meeting-tokens`, `Authorization: Bearer <API key>`; errors
 *   `{ error, info }`. Webhooks: `X-Webhook-Signature` = base64 HMAC-SHA256 (base64-decoded secret)
 *   of `${timestamp}.${body}`.
 *
 * `join(token)` stands for a client connecting with a join token: the double checks the token the
 * way the provider does and lists the participant in its room until it is removed (on LiveKit with
 * what its token lets it publish).
 */
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RemovalOutcome } from '../src/services/meetings/index.js';
import { signHs256 } from './fixture/clients.js';
import type { Config, TestEnv, TestServer } from './fixture.js';
import { AccessToken, ParticipantInfo, Room, TokenVerifier, WebhookEvent, type ClaimGrants } from 'livekit-server-sdk';

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return `http://127.0.0.1:${port}`;
}

/** `close` and `[Symbol.asyncDispose]` of a double: the server stops once, however often it is asked. */
function closer(server: Server) {
  let closing: Promise<void> | null = null;
  const close = () =>
    (closing ??= new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }));
  return { close, [Symbol.asyncDispose]: close };
}

// ---------------------------------------------------------------------------------------------
// LiveKit

/**
 * The removal queue's settings of the video tests: retries come quickly, and the poll is far off, so
 * what drives the queue is the wake-up after a commit and the retries' own timers.
 */
export const TEST_REMOVALS = { retryBaseMs: 20, maxAttempts: 4, pollMs: 600_000 } as const;

/** A test server's video settings: `video` over no provider, join tokens valid 300 s, the removal queue of TEST_REMOVALS. */
export function videoConfig(video: Partial<Config['video']>): Partial<Config> {
  return { video: { provider: null, livekit: null, daily: null, tokenTtlSeconds: 300, removals: TEST_REMOVALS, ...video } };
}

/**
 * The doubles of both providers and a server of `env` on each (`videoConfig`), each with a Redis
 * prefix of its own (`<label>-lk`, `<label>-daily`); Daily's webhooks are signed with `dailySecret`.
 * The servers start one after the other: the first applies the migrations.
 */
export async function startVideoServers(env: TestEnv, label: string, dailySecret: string) {
  const [lk, daily] = await Promise.all([startLiveKitDouble(), startDailyDouble()]);
  try {
    const lkSrv = await env.startServer({
      redisPrefix: env.prefix(`${label}-lk`),
      ...videoConfig({ provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret } }),
    });
    const dailySrv = await env.startServer({
      redisPrefix: env.prefix(`${label}-daily`),
      ...videoConfig({ provider: 'daily', daily: { apiKey: daily.apiKey, apiUrl: daily.url, webhookSecret: dailySecret } }),
    });
    return { lk, daily, lkSrv, dailySrv };
  } catch (err) {
    await Promise.all([lk.close(), daily.close()]);
    throw err;
  }
}

/**
 * The removal queue's outcomes for `userId` in `roomId` on `s` (src/services/meetings/removals.ts), up
 * to the first that is `until` (by default the first of any kind). Call it before the ban or removal:
 * it listens from then on.
 */
export function removalOutcomes(s: TestServer, roomId: string, userId: string, until?: RemovalOutcome['outcome']): Promise<RemovalOutcome[]> {
  const seen: RemovalOutcome[] = [];
  return new Promise((resolve) => {
    const off = s.app.services.meetings.removals.onOutcome((o) => {
      if (o.roomId !== roomId || o.userId !== userId) return;
      seen.push(o);
      if (until !== undefined && o.outcome !== until) return;
      off();
      resolve(seen);
    });
  });
}

/** The removal queue's next outcome for `userId` in `roomId` on `s` (see `removalOutcomes`). */
export const nextRemoval = (s: TestServer, roomId: string, userId: string): Promise<RemovalOutcome> =>
  removalOutcomes(s, roomId, userId).then((seen) => seen[0]!);

export interface LkParticipant {
  sid: string;
  identity: string;
  name: string;
  joinedAt: number;
  /** What the join token let it publish (`canPublish`; LiveKit's default is true): false, a listener. */
  canPublish?: boolean;
}

export interface LkRoom {
  sid: string;
  name: string;
  emptyTimeout: number;
  departureTimeout: number;
  creationTime: number;
  participants: LkParticipant[];
}

export interface LkRequest {
  method: string;
  body: Record<string, unknown>;
  grants: ClaimGrants;
}

export interface LiveKitDouble extends AsyncDisposable {
  url: string;
  apiKey: string;
  apiSecret: string;
  rooms: Map<string, LkRoom>;
  requests: LkRequest[];
  /** Requests refused (bad or missing token, missing grant). */
  refused: { method: string; status: number; code: string }[];
  /**
   * A client connecting with a join token: verified like LiveKit does (signature, expiry, `roomJoin`),
   * then listed as a participant of that room. A room that does not exist (never created, or deleted)
   * is created by the join, as LiveKit's `room.auto_create` (on by default) does, unless the double was
   * started with `autoCreate: false`. Throws when LiveKit would refuse.
   */
  join(token: string): Promise<LkParticipant>;
  /**
   * When set, a RemoveParticipant request (authorized, recorded in `requests`) waits for it before it
   * is carried out; `'fail'` answers it with 503 `unavailable` instead (a provider outage).
   */
  beforeRemove: ((identity: string, room: string) => Promise<'fail' | undefined> | 'fail' | undefined) | null;
  /** As `beforeRemove`, for DeleteRoom: `'fail'` answers it with 503 `unavailable` and leaves the room. */
  beforeDelete: ((room: string) => Promise<'fail' | undefined> | 'fail' | undefined) | null;
  close(): Promise<void>;
}

const twirpError = (res: ServerResponse, status: number, code: string, msg: string) => send(res, status, { code, msg });

export async function startLiveKitDouble(opts: { apiKey?: string; apiSecret?: string; autoCreate?: boolean } = {}): Promise<LiveKitDouble> {
  const apiKey = opts.apiKey ?? `APIkey${randomBytes(4).toString('hex')}`;
  const apiSecret = opts.apiSecret ?? randomBytes(24).toString('base64url');
  const verifier = new TokenVerifier(apiKey, apiSecret);
  const rooms = new Map<string, LkRoom>();
  const requests: LkRequest[] = [];
  const refused: LiveKitDouble['refused'] = [];

  const roomJson = (r: LkRoom) => ({
    sid: r.sid,
    name: r.name,
    emptyTimeout: r.emptyTimeout,
    departureTimeout: r.departureTimeout,
    creationTime: String(r.creationTime),
    numParticipants: r.participants.length,
  });

  const server = createServer((req, res) => {
    void (async () => {
      const m = /^\/twirp\/livekit\.RoomService\/(\w+)$/.exec(req.url ?? '');
      if (req.method !== 'POST' || !m) return twirpError(res, 404, 'bad_route', `no handler for path "${req.url}"`);
      const method = m[1]!;
      const raw = await readBody(req);
      const auth = /^Bearer\s+(.+)$/.exec(req.headers.authorization ?? '');
      const deny = (status: number, code: string, msg: string) => {
        refused.push({ method, status, code });
        twirpError(res, status, code, msg);
      };
      if (!auth) return deny(401, 'unauthenticated', 'authorization header missing');
      let grants: ClaimGrants;
      try {
        grants = await verifier.verify(auth[1]!);
      } catch {
        return deny(401, 'unauthenticated', 'invalid token');
      }
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(raw || '{}') as Record<string, unknown>;
      } catch {
        return twirpError(res, 400, 'malformed', 'the json request could not be decoded');
      }
      const name = typeof body.name === 'string' ? body.name : typeof body.room === 'string' ? body.room : '';
      switch (method) {
        case 'CreateRoom': {
          if (!grants.video?.roomCreate) return deny(403, 'permission_denied', 'permissions denied');
          requests.push({ method, body, grants });
          if (!name) return twirpError(res, 400, 'invalid_argument', 'name is required');
          let room = rooms.get(name);
          if (!room) {
            room = {
              sid: `RM_${randomBytes(6).toString('hex')}`,
              name,
              emptyTimeout: Number(body.emptyTimeout ?? 300),
              departureTimeout: Number(body.departureTimeout ?? 20),
              creationTime: Math.floor(Date.now() / 1000),
              participants: [],
            };
            rooms.set(name, room);
          }
          return send(res, 200, roomJson(room));
        }
        case 'DeleteRoom': {
          if (!grants.video?.roomCreate) return deny(403, 'permission_denied', 'permissions denied');
          requests.push({ method, body, grants });
          if ((await double.beforeDelete?.(name)) === 'fail') return twirpError(res, 503, 'unavailable', 'service unavailable');
          if (!rooms.delete(name)) return twirpError(res, 404, 'not_found', 'requested room does not exist');
          return send(res, 200, {});
        }
        case 'ListParticipants': {
          if (!grants.video?.roomAdmin || grants.video.room !== name) return deny(403, 'permission_denied', 'permissions denied');
          requests.push({ method, body, grants });
          const room = rooms.get(name);
          if (!room) return twirpError(res, 404, 'not_found', 'requested room does not exist');
          return send(res, 200, {
            participants: room.participants.map((p) => ({
              sid: p.sid,
              identity: p.identity,
              name: p.name,
              state: 'ACTIVE',
              joinedAt: String(Math.floor(p.joinedAt / 1000)),
              joinedAtMs: String(p.joinedAt),
            })),
          });
        }
        case 'RemoveParticipant': {
          if (!grants.video?.roomAdmin || grants.video.room !== name) return deny(403, 'permission_denied', 'permissions denied');
          requests.push({ method, body, grants });
          const identity = typeof body.identity === 'string' ? body.identity : '';
          if ((await double.beforeRemove?.(identity, name)) === 'fail') return twirpError(res, 503, 'unavailable', 'service unavailable');
          const room = rooms.get(name);
          if (!room) return twirpError(res, 404, 'not_found', 'requested room does not exist');
          const before = room.participants.length;
          room.participants = room.participants.filter((p) => p.identity !== identity);
          if (room.participants.length === before) return twirpError(res, 404, 'not_found', 'participant does not exist');
          return send(res, 200, {});
        }
        default:
          return twirpError(res, 404, 'bad_route', `unknown method ${method}`);
      }
    })().catch((err: unknown) => twirpError(res, 500, 'internal', String(err)));
  });
  const url = await listen(server);
  const join = async (token: string): Promise<LkParticipant> => {
    const claims = await verifier.verify(token);
    const name = claims.video?.room ?? '';
    if (claims.video?.roomJoin && name && !rooms.has(name) && (opts.autoCreate ?? true)) {
      // LiveKit's `room.auto_create`: the first join creates the room (with LiveKit's default timeouts).
      rooms.set(name, { sid: `RM_${randomBytes(6).toString('hex')}`, name, emptyTimeout: 300, departureTimeout: 20, creationTime: Math.floor(Date.now() / 1000), participants: [] });
    }
    const room = rooms.get(name);
    if (!claims.video?.roomJoin || !room || !claims.sub) throw new Error(`LiveKit refuses the join to ${name}`);
    // One connection per identity: a second join replaces the first (LiveKit's duplicate identity).
    room.participants = room.participants.filter((p) => p.identity !== claims.sub);
    const p: LkParticipant = {
      sid: `PA_${randomBytes(6).toString('hex')}`,
      identity: claims.sub,
      name: claims.name ?? claims.sub,
      joinedAt: Date.now(),
      canPublish: claims.video.canPublish ?? true,
    };
    room.participants.push(p);
    return p;
  };
  const double: LiveKitDouble = { url, apiKey, apiSecret, rooms, requests, refused, join, beforeRemove: null, beforeDelete: null, ...closer(server) };
  return double;
}

/** A LiveKit webhook body, serialized by the SDK's own WebhookEvent (the wire JSON). */
export function livekitEvent(input: {
  event: 'room_started' | 'room_finished' | 'participant_joined' | 'participant_left';
  room: string;
  id?: string;
  createdAt?: Date;
  /** `kind`: LiveKit's ParticipantInfo.Kind (0 standard, 1 ingress, 2 egress, 3 SIP, 4 agent; default 0). */
  participant?: { sid: string; identity: string; name?: string; joinedAt?: Date; kind?: number };
}): string {
  const created = input.createdAt ?? new Date();
  const ev = new WebhookEvent({
    event: input.event,
    id: input.id ?? `EV_${randomBytes(6).toString('hex')}`,
    createdAt: BigInt(Math.floor(created.getTime() / 1000)),
    room: new Room({ sid: `RM_${createHash('sha1').update(input.room).digest('hex').slice(0, 12)}`, name: input.room }),
    ...(input.participant
      ? {
          participant: new ParticipantInfo({
            sid: input.participant.sid,
            identity: input.participant.identity,
            name: input.participant.name ?? input.participant.identity,
            joinedAt: BigInt(Math.floor((input.participant.joinedAt ?? created).getTime() / 1000)),
            joinedAtMs: BigInt((input.participant.joinedAt ?? created).getTime()),
            kind: input.participant.kind ?? 0,
          }),
        }
      : {}),
  });
  // The SDK's WebhookEvent declares `event` as a class field, which overrides the constructor's value.
  ev.event = input.event;
  return ev.toJsonString();
}

const sha256b64 = (body: string) => createHash('sha256').update(body, 'utf8').digest('base64');

/** Signs a webhook body the way LiveKit does: a JWT (issuer = API key) with the body's sha256. */
export async function signLiveKit(body: string, apiKey: string, apiSecret: string): Promise<string> {
  const at = new AccessToken(apiKey, apiSecret, { ttl: '5m' });
  at.sha256 = sha256b64(body);
  return at.toJwt();
}

/** A LiveKit-shaped webhook token with chosen times (stale requests). Times in seconds. */
export function signLiveKitAt(body: string, apiKey: string, apiSecret: string, times: { nbf: number; exp: number }): string {
  const iat = Math.floor(Date.now() / 1000);
  return signHs256({ sha256: sha256b64(body), video: {}, iss: apiKey, nbf: times.nbf, exp: times.exp, iat }, apiSecret);
}

// ---------------------------------------------------------------------------------------------
// Daily

export interface DailyRoomState {
  id: string;
  name: string;
  privacy: string;
  url: string;
  created_at: string;
  config: Record<string, unknown>;
  presence: { id: string; userId: string; userName: string; joinTime: string; duration: number }[];
  /** user_ids ejected with `ban: true`: refused while the meeting lasts. */
  banned: Set<string>;
}

export interface DailyRequest {
  method: string;
  path: string;
  body: Record<string, unknown>;
}

/** The properties a Daily meeting token was asked for (`exp`: seconds since the epoch). */
export type DailyTokenProperties = { exp: number } & Record<string, unknown>;

export interface DailyDouble extends AsyncDisposable {
  url: string;
  apiKey: string;
  domain: string;
  rooms: Map<string, DailyRoomState>;
  requests: DailyRequest[];
  /** Tokens minted, with the properties asked for. */
  tokens: { token: string; properties: DailyTokenProperties }[];
  refused: { method: string; path: string; status: number }[];
  /**
   * A client joining with a meeting token minted here: refused (throws) when the token is unknown or
   * expired, its room does not exist, or its user_id was ejected with `ban: true`; otherwise listed
   * in the room's presence.
   */
  join(token: string): DailyRoomState['presence'][number];
  /** When set, a `POST /meeting-tokens` request (authorized, recorded in `requests`) waits for it before the token is minted. */
  beforeToken: ((properties: Record<string, unknown>) => Promise<void> | void) | null;
  close(): Promise<void>;
}

const dailyError = (res: ServerResponse, status: number, error: string, info: string) => send(res, status, { error, info });

export async function startDailyDouble(opts: { apiKey?: string } = {}): Promise<DailyDouble> {
  const apiKey = opts.apiKey ?? randomBytes(16).toString('hex');
  const domain = `chat-test-${randomBytes(3).toString('hex')}`;
  const rooms = new Map<string, DailyRoomState>();
  const requests: DailyRequest[] = [];
  const tokens: DailyDouble['tokens'] = [];
  const refused: DailyDouble['refused'] = [];
  const roomJson = (r: DailyRoomState) => ({
    id: r.id,
    name: r.name,
    api_created: true,
    privacy: r.privacy,
    url: r.url,
    created_at: r.created_at,
    config: r.config,
  });

  const server = createServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '/').split('?')[0]!;
      const method = req.method ?? 'GET';
      const raw = await readBody(req);
      if (req.headers.authorization !== `Bearer ${apiKey}`) {
        refused.push({ method, path, status: 401 });
        return dailyError(res, 401, 'authentication-error', 'Invalid authorization header');
      }
      let body: Record<string, unknown> = {};
      if (raw) {
        try {
          body = JSON.parse(raw) as Record<string, unknown>;
        } catch {
          return dailyError(res, 400, 'invalid-request-error', 'request body is not valid JSON');
        }
      }
      requests.push({ method, path, body });
      if (method === 'POST' && path === '/rooms') {
        const name = typeof body.name === 'string' ? body.name : randomBytes(10).toString('base64url');
        if (!/^[A-Za-z0-9_-]{1,128}$/.test(name)) return dailyError(res, 400, 'invalid-request-error', 'name may only contain letters, numbers, - and _');
        if (rooms.has(name)) return dailyError(res, 400, 'invalid-request-error', `a room named ${name} already exists`);
        const room: DailyRoomState = {
          id: randomUUID(),
          name,
          privacy: (body.privacy as string | undefined) ?? 'public',
          url: `https://${domain}.daily.co/${name}`,
          created_at: new Date().toISOString(),
          config: (body.properties as Record<string, unknown> | undefined) ?? {},
          presence: [],
          banned: new Set(),
        };
        rooms.set(name, room);
        return send(res, 200, roomJson(room));
      }
      const presencePath = /^\/rooms\/([^/]+)\/presence$/.exec(path);
      if (presencePath && method === 'GET') {
        const room = rooms.get(decodeURIComponent(presencePath[1]!));
        if (!room) return dailyError(res, 404, 'not-found', `room ${presencePath[1]} not found`);
        return send(res, 200, { total_count: room.presence.length, data: room.presence.map((p) => ({ room: room.name, ...p })) });
      }
      const ejectPath = /^\/rooms\/([^/]+)\/eject$/.exec(path);
      if (ejectPath && method === 'POST') {
        const room = rooms.get(decodeURIComponent(ejectPath[1]!));
        if (!room) return dailyError(res, 404, 'not-found', `room ${ejectPath[1]} not found`);
        const unknown = Object.keys(body).filter((k) => !['ids', 'user_ids', 'ban'].includes(k));
        if (unknown.length) return dailyError(res, 400, 'invalid-request-error', `unknown properties: ${unknown.join(', ')}`);
        const strings = (v: unknown) => (Array.isArray(v) && v.length <= 100 && v.every((x) => typeof x === 'string') ? (v as string[]) : null);
        const ids = body.ids === undefined ? [] : strings(body.ids);
        const userIds = body.user_ids === undefined ? [] : strings(body.user_ids);
        if (!ids || !userIds) return dailyError(res, 400, 'invalid-request-error', 'ids and user_ids are lists of at most 100 strings');
        if (body.ban !== undefined && typeof body.ban !== 'boolean') return dailyError(res, 400, 'invalid-request-error', 'ban must be a boolean');
        // Participants not found are no error: ejectedIds says who was ejected.
        const ejected = room.presence.filter((p) => ids.includes(p.id) || userIds.includes(p.userId));
        room.presence = room.presence.filter((p) => !ejected.includes(p));
        if (body.ban === true) for (const u of userIds) room.banned.add(u);
        return send(res, 200, { ejectedIds: ejected.map((p) => p.id) });
      }
      const roomPath = /^\/rooms\/([^/]+)$/.exec(path);
      if (roomPath) {
        const name = decodeURIComponent(roomPath[1]!);
        const room = rooms.get(name);
        if (!room) return dailyError(res, 404, 'not-found', `room ${name} not found`);
        if (method === 'GET') return send(res, 200, roomJson(room));
        if (method === 'DELETE') {
          rooms.delete(name);
          return send(res, 200, { deleted: true, name });
        }
      }
      if (method === 'POST' && path === '/meeting-tokens') {
        const p = body.properties as DailyTokenProperties | undefined;
        if (!p || typeof p !== 'object') return dailyError(res, 400, 'invalid-request-error', 'properties is required');
        if (typeof p.user_id === 'string' && p.user_id.length > 36) {
          return dailyError(res, 400, 'invalid-request-error', 'user_id must be 36 characters or fewer');
        }
        await double.beforeToken?.(p);
        const token = `dt.${randomBytes(18).toString('base64url')}`;
        tokens.push({ token, properties: p });
        return send(res, 200, { token });
      }
      return dailyError(res, 404, 'not-found', `no route for ${method} ${path}`);
    })().catch((err: unknown) => dailyError(res, 500, 'server-error', String(err)));
  });
  const url = await listen(server);
  const join = (token: string): DailyRoomState['presence'][number] => {
    const minted = tokens.find((t) => t.token === token);
    if (!minted || minted.properties.exp * 1000 <= Date.now()) throw new Error('Daily refuses the join: unknown or expired meeting token');
    const room = rooms.get(String(minted.properties.room_name));
    const userId = String(minted.properties.user_id ?? '');
    if (!room) throw new Error('Daily refuses the join: no such room');
    if (room.banned.has(userId)) throw new Error(`Daily refuses the join: ${userId} was ejected from this meeting`);
    const p = { id: randomUUID(), userId, userName: String(minted.properties.user_name ?? ''), joinTime: new Date().toISOString(), duration: 0 };
    room.presence.push(p);
    return p;
  };
  const double: DailyDouble = { url, apiKey, domain, rooms, requests, tokens, refused, join, beforeToken: null, ...closer(server) };
  return double;
}

/** A Daily webhook body (`version`, `type`, `id`, `payload`, `event_ts`). */
export function dailyEvent(type: string, payload: Record<string, unknown>, id: string = randomUUID(), eventTs = Date.now() / 1000): string {
  return JSON.stringify({ version: '1.0.0', type, id, payload, event_ts: eventTs });
}

/** Headers signing a Daily webhook body with the base64 `hmac` secret. */
export function signDaily(body: string, secretB64: string, timestamp = String(Math.floor(Date.now() / 1000))): Record<string, string> {
  const signature = createHmac('sha256', Buffer.from(secretB64, 'base64')).update(`${timestamp}.${body}`).digest('base64');
  return { 'x-webhook-signature': signature, 'x-webhook-timestamp': timestamp };
}

/** POSTs a webhook to the server; returns status and parsed body. */
export async function postWebhook(
  url: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { text };
  }
  return { status: res.status, body: json };
}
