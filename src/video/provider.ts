import type { VideoProviderName } from '../domain/meetings.js';
import type { IncomingHttpHeaders } from 'node:http';

/**
 * What the server needs from an API-first video platform. Media never touches our servers: we
 * create and end provider rooms, mint short-lived join tokens and learn what happens in a room from
 * verified webhooks. One implementation per provider (livekit.ts, daily.ts).
 *
 * Our meeting id is the provider's room name, so creating a room twice for one meeting is harmless.
 */
export interface VideoProvider {
  readonly name: VideoProviderName;

  /** Creates the provider room `name` (idempotent: an existing room of that name is returned). */
  createRoom(input: { name: string; expiresAt: Date }): Promise<ProviderRoom>;

  /** Ends the room and disconnects everyone; a room that no longer exists is not an error. */
  endRoom(name: string): Promise<void>;

  /**
   * Mints a join token for one user; `admin` gives the provider's admin/owner grant, `canPublish`
   * false makes them a listener.
   */
  mintJoinToken(input: JoinTokenRequest): Promise<JoinToken>;

  /**
   * The provider identity of one of our users when it is not the user id itself (Daily caps
   * `user_id` at 36 characters); webhooks carrying such an identity are mapped back to room members.
   */
  identityOf?(userId: string): string;

  /** Who is in the room right now, according to the provider. */
  listParticipants(name: string): Promise<ProviderParticipant[]>;

  /**
   * Disconnects one of our users from the room (by their provider identity: `identityOf(userId)`
   * where the provider has one) and, as far as the provider allows, keeps the join tokens already
   * minted for them from letting them back in (LiveKit: the server's token revocation on removal;
   * Daily: the eject's `ban`). A user who is not in the room, or a room that no longer exists, is not
   * an error.
   */
  removeParticipant(roomName: string, userId: string): Promise<void>;

  /**
   * Verifies a webhook against its raw body and headers and returns the normalized event. Throws
   * WebhookAuthError for unsigned, wrongly signed and stale requests.
   */
  verifyWebhook(rawBody: string, headers: IncomingHttpHeaders): Promise<VideoWebhookEvent | null>;
}


export interface ProviderRoom {
  /** The provider's own id of the room (LiveKit room sid, Daily room id), when it has one. */
  providerRoomId: string | null;
  /** Where clients connect: the LiveKit server URL, or the Daily room URL. */
  url: string;
}

export interface JoinTokenRequest {
  room: string;
  /** The meeting's join URL (the Daily room URL). */
  roomUrl: string;
  /** Our user id (the provider identity). */
  userId: string;
  /** Display name from the access token. */
  name: string;
  admin: boolean;
  /**
   * False: a listener, who subscribes to the others and publishes nothing (no audio, video, screen
   * or data): a member muted in the room.
   */
  canPublish: boolean;
  ttlSeconds: number;
}

export interface JoinToken {
  token: string;
  url: string;
  expiresAt: Date;
}

export interface ProviderParticipant {
  userId: string;
  name: string | null;
  /** The provider's id of this connection (LiveKit participant sid, Daily session id). */
  sessionId: string;
  joinedAt: Date | null;
  /**
   * A connection the provider made for a service, never with one of our join tokens (LiveKit's
   * egress, ingress, SIP and agent participants): not checked against the room's access rules.
   */
  service?: boolean;
}

/** A provider webhook in our terms. `id` de-duplicates deliveries. */
export type VideoWebhookEvent = {
  id: string;
  /** Provider room name (= our meeting id). */
  room: string;
  /** When the provider says the event happened (null: unknown, use the time of receipt). */
  at: Date | null;
} & (
  | { kind: 'room.started' }
  | { kind: 'room.finished' }
  | { kind: 'participant.joined' | 'participant.left'; participant: ProviderParticipant }
  | { kind: 'other'; type: string }
);

/** Unsigned, wrongly signed or stale webhook: answered with 401. */
export class WebhookAuthError extends Error {
  override name = 'WebhookAuthError';
}

/** The provider answered with an error (or could not be reached). */
export class VideoProviderError extends Error {
  override name = 'VideoProviderError';
  constructor(
    message: string,
    /** HTTP status of the provider's answer (0: not reached). */
    readonly status: number,
    /** The provider's error code (`not_found`, `invalid-request-error`, ...). */
    readonly code: string | null,
  ) {
    super(message);
  }
}

/** Webhook requests older than this (by their signed timestamp) are refused as stale. */
export const WEBHOOK_MAX_AGE_SECONDS = 5 * 60;

/** Converts a LiveKit URL to the WebSocket form clients connect to (http -> ws, https -> wss). */
export function toWsUrl(url: string): string {
  return url.replace(/^http(s?):\/\//i, (_, s: string) => `ws${s}://`).replace(/\/+$/, '');
}

/** Converts a LiveKit URL to the HTTP form of its API (ws -> http, wss -> https). */
export function toHttpUrl(url: string): string {
  return url.replace(/^ws(s?):\/\//i, (_, s: string) => `http${s}://`).replace(/\/+$/, '');
}
