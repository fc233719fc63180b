import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { AccessToken, RoomServiceClient, ServerError, TokenVerifier, WebhookEvent, type VideoGrant } from 'livekit-server-sdk';
import {
  toHttpUrl,
  toWsUrl,
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

export interface LiveKitOptions {
  /** LIVEKIT_URL: wss://<project>.livekit.cloud, ws://127.0.0.1:7880, or http(s) forms of those. */
  url: string;
  apiKey: string;
  apiSecret: string;
  /** Seconds a room stays open after the last participant left (reconnect grace). */
  departureTimeoutSeconds?: number;
}

/** Seconds since the epoch (LiveKit's int64 fields) to a Date; 0/absent -> null. */
function fromSeconds(v: bigint | number | undefined | null): Date | null {
  const n = Number(v ?? 0);
  return n > 0 ? new Date(n * 1000) : null;
}

/** `ParticipantInfo.Kind.STANDARD`: a client connecting with a join token (the others: egress, ingress, SIP, agents). */
const STANDARD_KIND = 0;

/** The claims part of a JWT (already verified or just minted by us). */
function jwtClaims(token: string): Record<string, unknown> {
  const part = token.split('.')[1] ?? '';
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/**
 * LiveKit: access tokens and webhook verification with `livekit-server-sdk`, rooms through its
 * Twirp RoomService (`/twirp/livekit.RoomService/CreateRoom|DeleteRoom|ListParticipants|RemoveParticipant`).
 */
export class LiveKitProvider implements VideoProvider {
  readonly name = 'livekit' as const;
  private readonly rooms: RoomServiceClient;
  private readonly verifier: TokenVerifier;
  /** Where clients connect (ws/wss). */
  readonly clientUrl: string;

  constructor(private readonly opts: LiveKitOptions) {
    this.rooms = new RoomServiceClient(toHttpUrl(opts.url), opts.apiKey, opts.apiSecret, { requestTimeout: 10 });
    this.verifier = new TokenVerifier(opts.apiKey, opts.apiSecret);
    this.clientUrl = toWsUrl(opts.url);
  }

  async createRoom(input: { name: string; expiresAt: Date }): Promise<ProviderRoom> {
    // Until the meeting expires the room waits for its first participant; afterwards LiveKit
    // closes it (room_finished ends the meeting).
    const emptyTimeout = Math.max(60, Math.ceil((input.expiresAt.getTime() - Date.now()) / 1000));
    const room = await this.call('CreateRoom', () =>
      this.rooms.createRoom({ name: input.name, emptyTimeout, departureTimeout: this.opts.departureTimeoutSeconds ?? 300 }),
    );
    return { providerRoomId: room.sid || null, url: this.clientUrl };
  }

  async endRoom(name: string): Promise<void> {
    try {
      await this.call('DeleteRoom', () => this.rooms.deleteRoom(name));
    } catch (err) {
      if (err instanceof VideoProviderError && (err.status === 404 || err.code === 'not_found')) return;
      throw err;
    }
  }

  async mintJoinToken(input: JoinTokenRequest): Promise<JoinToken> {
    const at = new AccessToken(this.opts.apiKey, this.opts.apiSecret, {
      identity: input.userId,
      name: input.name,
      ttl: input.ttlSeconds,
    });
    const grant: VideoGrant = {
      roomJoin: true,
      room: input.room,
      canSubscribe: true,
      canPublish: input.canPublish,
      canPublishData: input.canPublish,
    };
    if (input.admin) grant.roomAdmin = true;
    at.addGrant(grant);
    const token = await at.toJwt();
    const exp = Number(jwtClaims(token).exp);
    return { token, url: this.clientUrl, expiresAt: new Date(exp * 1000) };
  }

  async listParticipants(name: string): Promise<ProviderParticipant[]> {
    try {
      const list = await this.call('ListParticipants', () => this.rooms.listParticipants(name));
      return list.map((p) => ({
        userId: p.identity,
        name: p.name || null,
        sessionId: p.sid,
        joinedAt: Number(p.joinedAtMs ?? 0) > 0 ? new Date(Number(p.joinedAtMs)) : fromSeconds(p.joinedAt),
      }));
    } catch (err) {
      if (err instanceof VideoProviderError && (err.status === 404 || err.code === 'not_found')) return [];
      throw err;
    }
  }

  /**
   * RemoveParticipant (needs `roomAdmin` on the room; the SDK signs it so): the connection of that
   * identity is closed. Without a `revokeTokenTs` LiveKit takes its own now (plus its one-minute
   * leeway) as the revocation time: servers that implement token revocation (LiveKit Cloud) then
   * refuse the identity's tokens for this room issued before it; others let an unexpired token
   * rejoin (docs/VIDEO.md). Not in the room, or no such room: LiveKit answers `not_found`, which is
   * no error here.
   */
  async removeParticipant(roomName: string, userId: string): Promise<void> {
    try {
      await this.call('RemoveParticipant', () => this.rooms.removeParticipant(roomName, userId));
    } catch (err) {
      if (err instanceof VideoProviderError && (err.status === 404 || err.code === 'not_found')) return;
      throw err;
    }
  }

  /**
   * LiveKit signs each webhook with a JWT (issuer = our API key) in the `Authorization` header whose
   * `sha256` claim is the base64 SHA-256 of the raw body. The token must be valid now and issued
   * within WEBHOOK_MAX_AGE_SECONDS (LiveKit issues it at delivery, valid for five minutes).
   */
  async verifyWebhook(rawBody: string, headers: IncomingHttpHeaders): Promise<VideoWebhookEvent | null> {
    const header = headers.authorization?.trim();
    if (!header) throw new WebhookAuthError('missing Authorization header (LiveKit webhooks are signed)');
    const token = header.replace(/^Bearer\s+/i, '');
    let claims: Record<string, unknown>;
    try {
      claims = (await this.verifier.verify(token)) as Record<string, unknown>;
    } catch (err) {
      const expired = (err as { code?: string }).code === 'ERR_JWT_EXPIRED';
      throw new WebhookAuthError(expired ? 'webhook token expired (stale request)' : 'webhook signature is invalid');
    }
    const issued = typeof claims.nbf === 'number' ? claims.nbf : typeof claims.iat === 'number' ? claims.iat : null;
    if (issued === null || Date.now() / 1000 - issued > WEBHOOK_MAX_AGE_SECONDS) {
      throw new WebhookAuthError('webhook token is too old (stale request)');
    }
    const digest = createHash('sha256').update(rawBody, 'utf8').digest();
    const claimed = Buffer.from(typeof claims.sha256 === 'string' ? claims.sha256 : '', 'base64');
    if (claimed.length !== digest.length || !timingSafeEqual(claimed, digest)) {
      throw new WebhookAuthError('webhook body does not match its signature');
    }
    let ev: WebhookEvent;
    try {
      ev = WebhookEvent.fromJson(JSON.parse(rawBody), { ignoreUnknownFields: true });
    } catch {
      throw new SyntaxError('webhook body is not a LiveKit webhook event');
    }
    const id = ev.id || `sha256:${digest.toString('hex')}`;
    const room = ev.room?.name ?? '';
    const at = fromSeconds(ev.createdAt);
    switch (ev.event) {
      case 'room_started':
        return { id, room, at, kind: 'room.started' };
      case 'room_finished':
        return { id, room, at, kind: 'room.finished' };
      case 'participant_joined':
      case 'participant_left':
      case 'participant_connection_aborted': {
        const p = ev.participant;
        if (!p) return { id, room, at, kind: 'other', type: ev.event };
        const participant: ProviderParticipant = {
          userId: p.identity,
          name: p.name || null,
          sessionId: p.sid,
          joinedAt: Number(p.joinedAtMs ?? 0) > 0 ? new Date(Number(p.joinedAtMs)) : fromSeconds(p.joinedAt),
          // Join tokens minted here carry no kind: their participants are STANDARD.
          ...(Number(p.kind ?? STANDARD_KIND) !== STANDARD_KIND ? { service: true } : {}),
        };
        return { id, room, at, kind: ev.event === 'participant_joined' ? 'participant.joined' : 'participant.left', participant };
      }
      default:
        return { id, room, at, kind: 'other', type: ev.event || 'unknown' };
    }
  }

  /** Runs one RoomService call, turning SDK and transport errors into VideoProviderError. */
  private async call<T>(method: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof ServerError) {
        throw new VideoProviderError(`LiveKit ${method} failed (${err.status}${err.code ? ` ${err.code}` : ''}): ${err.message}`, err.status, err.code ?? null);
      }
      throw new VideoProviderError(`LiveKit ${method} failed: ${(err as Error)?.message ?? String(err)}`, 0, null);
    }
  }
}
