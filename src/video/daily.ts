import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import {
  VideoProviderError,
  WEBHOOK_MAX_AGE_SECONDS,
  WebhookAuthError,
  type JoinToken,
  type JoinTokenRequest,
  type ProviderParticipant,
  type ProviderRoom,
  type VideoProvider,
  type VideoWebhookEvent,
} from './provider.js';

export interface DailyOptions {
  apiKey: string;
  /** DAILY_API_URL, e.g. https://api.daily.co/v1 (no trailing slash). */
  apiUrl: string;
  /** The webhook's base64 `hmac` secret; null: every Daily webhook is refused. */
  webhookSecret: string | null;
  requestTimeoutMs?: number;
}

/** Daily caps `user_id` at 36 characters: longer ids are replaced by a stable hash (see identityOf). */
const DAILY_USER_ID_MAX = 36;

/** The body Daily posts, unsigned, when a webhook is created, to check the endpoint answers 200. */
function isVerificationProbe(rawBody: string): boolean {
  try {
    const v = JSON.parse(rawBody) as unknown;
    return !!v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && (v as { test?: unknown }).test === 'test';
  } catch {
    return false;
  }
}

function fromEpoch(v: unknown): Date | null {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(n) || n <= 0) return null;
  // Seconds (possibly fractional) or milliseconds.
  return new Date(n > 1e12 ? n : n * 1000);
}

function header(headers: IncomingHttpHeaders, name: string): string | null {
  const v = headers[name];
  return (Array.isArray(v) ? v[0] : v)?.trim() || null;
}

/** Daily (REST): rooms, meeting tokens and HMAC-signed webhooks. */
export class DailyProvider implements VideoProvider {
  readonly name = 'daily' as const;

  constructor(private readonly opts: DailyOptions) {}

  /** The Daily `user_id` of one of our users. */
  identityOf(userId: string): string {
    if (userId.length <= DAILY_USER_ID_MAX) return userId;
    return `h.${createHash('sha256').update(userId, 'utf8').digest('base64url').slice(0, DAILY_USER_ID_MAX - 2)}`;
  }

  async createRoom(input: { name: string; expiresAt: Date }): Promise<ProviderRoom> {
    const body = {
      name: input.name,
      privacy: 'private',
      properties: { exp: Math.ceil(input.expiresAt.getTime() / 1000), eject_at_room_exp: true },
    };
    let room: { id?: string; url?: string };
    try {
      room = await this.request('POST', '/rooms', body);
    } catch (err) {
      // Creating the same meeting twice: the room exists already, take it.
      if (err instanceof VideoProviderError && err.status === 400 && /already exists/i.test(err.message)) {
        room = await this.request('GET', `/rooms/${encodeURIComponent(input.name)}`);
      } else throw err;
    }
    if (!room.url) throw new VideoProviderError('Daily answered POST /rooms without a room url', 502, null);
    return { providerRoomId: room.id ?? null, url: room.url };
  }

  async endRoom(name: string): Promise<void> {
    try {
      await this.request('DELETE', `/rooms/${encodeURIComponent(name)}`);
    } catch (err) {
      if (err instanceof VideoProviderError && err.status === 404) return;
      throw err;
    }
  }

  async mintJoinToken(input: JoinTokenRequest): Promise<JoinToken> {
    const exp = Math.floor(Date.now() / 1000) + input.ttlSeconds;
    const res = await this.request<{ token?: string }>('POST', '/meeting-tokens', {
      properties: {
        room_name: input.room,
        user_id: this.identityOf(input.userId),
        user_name: input.name,
        is_owner: input.admin,
        exp,
        // A listener sends no media of any kind (Daily's token permissions; owners are not held to them).
        ...(input.canPublish ? {} : { permissions: { canSend: false } }),
      },
    });
    if (!res.token) throw new VideoProviderError('Daily answered POST /meeting-tokens without a token', 502, null);
    return { token: res.token, url: input.roomUrl, expiresAt: new Date(exp * 1000) };
  }

  async listParticipants(name: string): Promise<ProviderParticipant[]> {
    try {
      const res = await this.request<{ data?: { id: string; userId?: string | null; userName?: string | null; joinTime?: string }[] }>(
        'GET',
        `/rooms/${encodeURIComponent(name)}/presence`,
      );
      return (res.data ?? []).map((p) => ({
        userId: p.userId ?? p.id,
        name: p.userName ?? null,
        sessionId: p.id,
        joinedAt: p.joinTime ? new Date(p.joinTime) : null,
      }));
    } catch (err) {
      if (err instanceof VideoProviderError && err.status === 404) return [];
      throw err;
    }
  }

  /**
   * `POST /rooms/:name/eject` by `user_ids` (the identity our tokens carry) with `ban: true`: every
   * session of that user is ejected, and while the meeting session lasts Daily refuses that user_id,
   * so a meeting token minted before cannot rejoin it. Daily counts a user who is not in the meeting
   * as success; a room that no longer exists (404) is no error either.
   */
  async removeParticipant(roomName: string, userId: string): Promise<void> {
    try {
      await this.request('POST', `/rooms/${encodeURIComponent(roomName)}/eject`, { user_ids: [this.identityOf(userId)], ban: true });
    } catch (err) {
      if (err instanceof VideoProviderError && err.status === 404) return;
      throw err;
    }
  }

  /**
   * Daily signs webhooks with `X-Webhook-Signature` = base64(HMAC-SHA256(base64-decoded secret,
   * `${X-Webhook-Timestamp}.${raw body}`)). The timestamp (seconds or milliseconds) must be within
   * WEBHOOK_MAX_AGE_SECONDS of now. The unsigned `{"test":"test"}` probe Daily sends while a webhook
   * is being created is acknowledged without effect (null).
   */
  async verifyWebhook(rawBody: string, headers: IncomingHttpHeaders): Promise<VideoWebhookEvent | null> {
    const signature = header(headers, 'x-webhook-signature');
    const timestamp = header(headers, 'x-webhook-timestamp');
    if (!signature && !timestamp && isVerificationProbe(rawBody)) return null;
    if (!signature || !timestamp) throw new WebhookAuthError('missing X-Webhook-Signature / X-Webhook-Timestamp (Daily webhooks are signed)');
    if (!this.opts.webhookSecret) throw new WebhookAuthError('DAILY_WEBHOOK_SECRET is not configured: Daily webhooks cannot be verified');
    if (!/^\d{1,16}$/.test(timestamp)) throw new WebhookAuthError('X-Webhook-Timestamp is not a Unix time');
    const ts = Number(timestamp);
    const seconds = ts > 1e12 ? ts / 1000 : ts;
    if (Math.abs(Date.now() / 1000 - seconds) > WEBHOOK_MAX_AGE_SECONDS) throw new WebhookAuthError('webhook timestamp is too old (stale request)');
    const expected = createHmac('sha256', Buffer.from(this.opts.webhookSecret, 'base64')).update(`${timestamp}.${rawBody}`, 'utf8').digest();
    const given = Buffer.from(signature, 'base64');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw new WebhookAuthError('webhook signature is invalid');

    let ev: { id?: unknown; type?: unknown; event_ts?: unknown; payload?: Record<string, unknown> };
    try {
      ev = JSON.parse(rawBody) as typeof ev;
    } catch {
      throw new SyntaxError('webhook body is not JSON');
    }
    if (!ev || typeof ev !== 'object') throw new SyntaxError('webhook body is not a Daily webhook event');
    const p = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
    const id = typeof ev.id === 'string' && ev.id ? ev.id : `sha256:${createHash('sha256').update(rawBody).digest('hex')}`;
    const room = typeof p.room === 'string' ? p.room : '';
    const type = typeof ev.type === 'string' ? ev.type : 'unknown';
    const sent = fromEpoch(ev.event_ts);
    const participant = (): ProviderParticipant => ({
      userId: String(p.user_id ?? p.session_id ?? ''),
      name: typeof p.user_name === 'string' ? p.user_name : null,
      sessionId: String(p.session_id ?? p.user_id ?? ''),
      joinedAt: fromEpoch(p.joined_at),
    });
    switch (type) {
      case 'meeting.started':
        return { id, room, at: fromEpoch(p.start_ts) ?? sent, kind: 'room.started' };
      case 'meeting.ended':
        return { id, room, at: fromEpoch(p.end_ts) ?? sent, kind: 'room.finished' };
      case 'participant.joined':
        return { id, room, at: fromEpoch(p.joined_at) ?? sent, kind: 'participant.joined', participant: participant() };
      case 'participant.left': {
        const joined = fromEpoch(p.joined_at);
        const duration = typeof p.duration === 'number' ? p.duration : null;
        const left = joined && duration !== null ? new Date(joined.getTime() + duration * 1000) : sent;
        return { id, room, at: left, kind: 'participant.left', participant: participant() };
      }
      default:
        return { id, room, at: sent, kind: 'other', type };
    }
  }

  private async request<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.opts.apiUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.opts.apiKey}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.opts.requestTimeoutMs ?? 10_000),
      });
    } catch (err) {
      throw new VideoProviderError(`Daily ${method} ${path} failed: ${(err as Error)?.message ?? String(err)}`, 0, null);
    }
    const text = await res.text();
    let json: Record<string, unknown> = {};
    try {
      json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
    } catch {
      // Not JSON: keep the status.
    }
    if (!res.ok) {
      const code = typeof json.error === 'string' ? json.error : null;
      const info = typeof json.info === 'string' ? json.info : res.statusText;
      throw new VideoProviderError(`Daily ${method} ${path.split('/').slice(0, 2).join('/')} failed (${res.status}${code ? ` ${code}` : ''}): ${info}`, res.status, code);
    }
    return json as T;
  }
}
