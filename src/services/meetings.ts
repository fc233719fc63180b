import { createHash, randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { VideoProviderError, type VideoProvider, type VideoProviderName, type VideoWebhookEvent } from '../video/provider.js';
import type { Actor } from '../domain/actor.js';
import { type Deps, type Em, em as fork, sql } from './deps.js';
import { AppError, badRequest, forbidden, notFound } from '../domain/errors.js';
import { ROLE_RANK } from '../domain/permissions.js';
import type { RoomAccess } from '../domain/rooms.js';
import type { AccessService } from './access.js';
import { systemMessage } from './system-message.js';
import type { Store } from '../store/store.js';
import type { Tx } from '../store/tx.js';

export type MeetingStatus = 'scheduled' | 'live' | 'ended';

export interface MeetingParticipantDto {
  userId: string;
  joinedAt: Date;
  leftAt: Date | null;
}

export interface MeetingDto {
  id: string;
  roomId: string;
  provider: VideoProviderName;
  status: MeetingStatus;
  title: string | null;
  /** Where clients connect: the LiveKit server URL or the Daily room URL. */
  url: string;
  createdBy: string;
  createdAt: Date;
  startedAt: Date | null;
  endedAt: Date | null;
  expiresAt: Date;
  /** Every provider connection seen by webhooks, oldest first (a rejoin is a new entry). */
  participants: MeetingParticipantDto[];
}

export interface OnlineParticipant {
  userId: string;
  name: string | null;
  joinedAt: Date | null;
}

export interface JoinTokenDto {
  provider: VideoProviderName;
  url: string;
  token: string;
  expiresAt: Date;
}

/** What a webhook delivery did. */
export type WebhookOutcome = 'processed' | 'duplicate' | 'ignored' | 'probe';

export const MEETING_TTL_DEFAULT_MINUTES = 60;
export const MEETING_TTL_MAX_MINUTES = 24 * 60;

const NOT_CONFIGURED =
  'video is not configured on this server: set VIDEO_PROVIDER=livekit with LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET, ' +
  'or VIDEO_PROVIDER=daily with DAILY_API_KEY (see docs/VIDEO.md)';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const MEETING_COLUMNS = `mt.id, mt.tenant, mt.room_id, mt.created_by, mt.title, mt.provider, mt.url, mt.status, mt.created_at,
  mt.started_at, mt.ended_at, mt.expires_at`;

const date = (v: unknown): Date | null => (v ? new Date(v as string) : null);

/** Keys longer than a column are replaced by their hash (stable, so de-duplication still works). */
const fit = (v: string, max: number) => (v.length <= max ? v : `sha256:${createHash('sha256').update(v).digest('hex')}`.slice(0, max));

function meetingFromRow(r: Record<string, any>, participants: MeetingParticipantDto[]): MeetingDto {
  const expiresAt = new Date(r.expires_at);
  // A meeting past its expiry is over even if the provider never told us (no webhook configured).
  const expired = r.status !== 'ended' && expiresAt.getTime() <= Date.now();
  return {
    id: r.id,
    roomId: r.room_id,
    provider: r.provider,
    status: expired ? 'ended' : r.status,
    title: r.title ?? null,
    url: r.url,
    createdBy: r.created_by,
    createdAt: new Date(r.created_at),
    startedAt: date(r.started_at),
    endedAt: date(r.ended_at) ?? (expired ? expiresAt : null),
    expiresAt,
    participants,
  };
}

const displayTitle = (title: string | null) => (title ? `Meeting "${title}"` : 'Meeting');

/**
 * Video meetings on an external provider (LiveKit or Daily): creation with invites, join tokens,
 * ending, and the provider's webhooks that move status and participants. Media never touches us.
 */
export class MeetingService {
  private lastCleanup = 0;

  constructor(
    private readonly deps: Deps,
    private readonly store: Store,
    private readonly access: AccessService,
    readonly provider: VideoProvider | null,
  ) {}

  private requireProvider(): VideoProvider {
    if (!this.provider) throw new AppError('PRECONDITION_FAILED', NOT_CONFIGURED);
    return this.provider;
  }

  /**
   * `video.create`: members who may post in the room (not muted; admins in broadcast rooms; support
   * agents in support rooms) create a meeting. The provider room comes first; the meeting row and a
   * `meeting.invite` for every other member are written in one transaction afterwards.
   */
  async create(actor: Actor, input: { roomId: string; title?: string | null; ttlMinutes?: number | null }): Promise<MeetingDto> {
    const provider = this.requireProvider();
    const access = await this.access.requirePermission(actor, input.roomId, 'send');
    if (!access.member && !this.isAgent(actor, access)) throw notFound('room');
    await this.deps.limits.consume('roomCreate', `${actor.tenant}:${actor.id}:meeting`);
    const ttl = input.ttlMinutes ?? MEETING_TTL_DEFAULT_MINUTES;
    if (ttl < 1 || ttl > MEETING_TTL_MAX_MINUTES) throw badRequest(`ttlMinutes must be between 1 and ${MEETING_TTL_MAX_MINUTES}`);
    const id = randomUUID();
    const expiresAt = new Date(Date.now() + ttl * 60_000);
    const title = input.title?.trim() || null;
    const room = await this.providerCall(() => provider.createRoom({ name: id, expiresAt }));
    try {
      await this.store.transact(async (tx) => {
        await sql(
          tx.em,
          `insert into meeting (id, tenant, room_id, created_by, title, provider, provider_room_id, url, status, created_at, expires_at)
           values (?, ?, ?, ?, ?, ?, ?, ?, 'scheduled', now(), ?)`,
          [id, actor.tenant, input.roomId, actor.id, title, provider.name, room.providerRoomId, room.url, expiresAt],
        );
        const members = await sql<{ user_id: string }>(tx.em, 'select user_id from membership where room_id = ? and user_id <> ?', [
          input.roomId,
          actor.id,
        ]);
        await tx.appendInboxMany(
          actor.tenant,
          members.map((m) => m.user_id),
          { type: 'meeting.invite', roomId: input.roomId, meetingId: id, title, url: room.url, from: actor.id },
        );
      });
    } catch (err) {
      // No meeting without its row: give the provider room back (best effort).
      await provider.endRoom(id).catch((e: unknown) => this.deps.log.warn({ err: e, meetingId: id }, 'could not end an orphaned provider room'));
      throw err;
    }
    return this.load(fork(this.deps), id, actor.tenant);
  }

  /**
   * `video.joinToken`: a short-lived provider token for a member (identity = user id, name from the
   * access token; owner/admin/moderator get the provider's admin grant). Ended or expired -> error.
   */
  async joinToken(actor: Actor, meetingId: string): Promise<JoinTokenDto> {
    const provider = this.requireProvider();
    const { row, access } = await this.readable(actor, meetingId);
    if (row.status === 'ended') throw new AppError('PRECONDITION_FAILED', 'this meeting has ended');
    const expiresAt = new Date(row.expires_at);
    const left = Math.floor((expiresAt.getTime() - Date.now()) / 1000);
    if (left <= 0) throw new AppError('PRECONDITION_FAILED', 'this meeting has expired');
    if (row.provider !== provider.name) {
      throw new AppError('PRECONDITION_FAILED', `this meeting was created on ${row.provider}, but the server now uses ${provider.name}`);
    }
    const admin = ROLE_RANK[access.role] >= ROLE_RANK.moderator;
    const token = await this.providerCall(() =>
      provider.mintJoinToken({
        room: row.id,
        roomUrl: row.url,
        userId: actor.id,
        name: actor.name,
        admin,
        ttlSeconds: Math.min(this.deps.config.video.tokenTtlSeconds, left),
      }),
    );
    return { provider: provider.name, url: token.url, token: token.token, expiresAt: token.expiresAt };
  }

  /** `video.get`: the meeting with its participants; `live` also asks the provider who is in now. */
  async get(actor: Actor, meetingId: string, live = false): Promise<MeetingDto & { online: OnlineParticipant[] | null }> {
    const provider = this.requireProvider();
    const { row } = await this.readable(actor, meetingId);
    const em = fork(this.deps);
    const meeting = meetingFromRow(row, (await this.participants(em, [row.id])).get(row.id) ?? []);
    let online: OnlineParticipant[] | null = null;
    if (live) {
      online =
        meeting.status === 'ended'
          ? []
          : (await this.providerCall(() => provider.listParticipants(meeting.id))).map((p) => ({
              userId: p.userId,
              name: p.name,
              joinedAt: p.joinedAt,
            }));
    }
    return { ...meeting, online };
  }

  /** `video.list`: the room's meetings, newest first (at most `limit`). */
  async list(actor: Actor, roomId: string, limit = 50): Promise<MeetingDto[]> {
    this.requireProvider();
    await this.access.requireAccess(actor, roomId, 'read');
    const em = fork(this.deps);
    const rows = await sql(em, `select ${MEETING_COLUMNS} from meeting mt where mt.room_id = ? order by mt.created_at desc, mt.id limit ?`, [
      roomId,
      limit,
    ]);
    const parts = await this.participants(
      em,
      rows.map((r) => r.id),
    );
    return rows.map((r) => meetingFromRow(r, parts.get(r.id) ?? []));
  }

  /**
   * `video.end`: the creator or a moderator+ ends the meeting on the provider and here (idempotent:
   * ending an ended meeting returns it). Writes the `meeting.ended` system message once.
   */
  async end(actor: Actor, meetingId: string): Promise<MeetingDto> {
    const provider = this.requireProvider();
    const { row, access } = await this.readable(actor, meetingId);
    if (row.created_by !== actor.id && ROLE_RANK[access.role] < ROLE_RANK.moderator) {
      throw forbidden('only the creator of the meeting or a moderator may end it');
    }
    if (row.status !== 'ended') {
      if (row.provider === provider.name) await this.providerCall(() => provider.endRoom(row.id));
      await this.store.transact(async (tx) => {
        await this.markEnded(tx, row.id, new Date(), actor);
      });
    }
    return this.load(fork(this.deps), meetingId, actor.tenant);
  }

  /**
   * A provider webhook: verified (WebhookAuthError -> 401), de-duplicated by event id in the same
   * transaction that applies it, and applied so that out-of-order deliveries converge: status only
   * moves forward (scheduled -> live -> ended) and participant rows merge joins and leaves.
   */
  async handleWebhook(providerName: string, rawBody: string, headers: IncomingHttpHeaders): Promise<WebhookOutcome> {
    const provider = this.provider;
    if (!provider || provider.name !== providerName) {
      throw new AppError('NOT_FOUND', `${providerName} is not the video provider of this server`);
    }
    let ev: VideoWebhookEvent | null;
    try {
      ev = await provider.verifyWebhook(rawBody, headers);
    } catch (err) {
      if (err instanceof SyntaxError) throw badRequest(err.message);
      throw err;
    }
    if (!ev) return 'probe';
    const event = ev;
    this.cleanupWebhookEvents();
    return this.store.transact(async (tx): Promise<WebhookOutcome> => {
      const fresh = await sql(
        tx.em,
        'insert into video_webhook_event (provider, event_id, received_at) values (?, ?, now()) on conflict do nothing returning event_id',
        [provider.name, fit(event.id, 200)],
      );
      if (fresh.length === 0) return 'duplicate';
      if (event.kind === 'other' || !UUID_RE.test(event.room)) return 'ignored';
      const rows = await sql(tx.em, `select ${MEETING_COLUMNS} from meeting mt where mt.id = ? and mt.provider = ? for update`, [
        event.room,
        provider.name,
      ]);
      const m = rows[0];
      if (!m) return 'ignored';
      const at = event.at ?? new Date();
      const creator: Actor = { id: m.created_by, name: m.created_by, tenant: m.tenant, roles: [] };
      switch (event.kind) {
        case 'room.started':
          await this.markLive(tx, m, at, creator);
          break;
        case 'room.finished':
          await this.markEnded(tx, m.id, at, creator);
          break;
        case 'participant.joined':
        case 'participant.left': {
          const p = event.participant;
          const userId = await this.userOf(tx.em, m.room_id, p.userId);
          const joinedAt = p.joinedAt ?? at;
          const leftAt = event.kind === 'participant.left' ? at : null;
          await sql(
            tx.em,
            `insert into meeting_participant (meeting_id, session_id, user_id, name, joined_at, left_at) values (?, ?, ?, ?, ?, ?)
             on conflict (meeting_id, session_id) do update set
               joined_at = least(meeting_participant.joined_at, excluded.joined_at),
               left_at = case when excluded.left_at is null then meeting_participant.left_at
                              else greatest(coalesce(meeting_participant.left_at, excluded.left_at), excluded.left_at) end,
               name = coalesce(excluded.name, meeting_participant.name)`,
            [m.id, fit(p.sessionId || `${p.userId}@${joinedAt.getTime()}`, 128), fit(userId, 128), p.name?.slice(0, 200) ?? null, joinedAt, leftAt],
          );
          // The first participant makes a scheduled meeting live (even if room_started is late).
          if (event.kind === 'participant.joined') await this.markLive(tx, m, joinedAt, creator);
          break;
        }
      }
      return 'processed';
    });
  }

  /** scheduled -> live (only from scheduled: an ended meeting is never reopened). */
  private async markLive(tx: Tx, m: Record<string, any>, at: Date, by: Actor): Promise<void> {
    const rows = await sql(tx.em, `update meeting set status = 'live', started_at = ? where id = ? and status = 'scheduled' returning title`, [at, m.id]);
    if (rows.length) await systemMessage(tx, by, m.room_id, `${displayTitle(rows[0]!.title ?? null)} started`);
  }

  /** -> ended, once; writes the `meeting.ended` system message. */
  private async markEnded(tx: Tx, meetingId: string, at: Date, by: Actor): Promise<void> {
    const rows = await sql(
      tx.em,
      `update meeting set status = 'ended', ended_at = ?, ended_by = ? where id = ? and status <> 'ended' returning room_id, title`,
      [at, by.id, meetingId],
    );
    if (rows.length) await systemMessage(tx, by, rows[0]!.room_id, `${displayTitle(rows[0]!.title ?? null)} ended`);
  }

  /** Maps a provider identity back to our user id (identities are user ids, or hashes of long ones). */
  private async userOf(em: Em, roomId: string, identity: string): Promise<string> {
    const identityOf = this.provider?.identityOf?.bind(this.provider);
    if (!identityOf) return identity;
    const direct = await sql(em, 'select 1 from membership where room_id = ? and user_id = ?', [roomId, identity]);
    if (direct.length) return identity;
    const members = await sql<{ user_id: string }>(em, 'select user_id from membership where room_id = ? and length(user_id) > ?', [
      roomId,
      identity.length,
    ]);
    return members.find((mb) => identityOf(mb.user_id) === identity)?.user_id ?? identity;
  }

  /** The meeting and the caller's access to its room; a non-member learns nothing (NOT_FOUND). */
  private async readable(actor: Actor, meetingId: string): Promise<{ row: Record<string, any>; access: RoomAccess }> {
    const em = fork(this.deps);
    const row = (await sql(em, `select ${MEETING_COLUMNS} from meeting mt where mt.id = ? and mt.tenant = ?`, [meetingId, actor.tenant]))[0];
    if (!row) throw notFound('meeting');
    try {
      const access = await this.access.requireAccess(actor, row.room_id, 'read', em);
      return { row, access };
    } catch (err) {
      if (err instanceof AppError && err.code === 'NOT_FOUND') throw notFound('meeting');
      throw err;
    }
  }

  private isAgent(actor: Actor, access: RoomAccess): boolean {
    return access.room.kind === 'support' && actor.roles.includes('support');
  }

  private async load(em: Em, meetingId: string, tenant: string): Promise<MeetingDto> {
    const row = (await sql(em, `select ${MEETING_COLUMNS} from meeting mt where mt.id = ? and mt.tenant = ?`, [meetingId, tenant]))[0];
    if (!row) throw notFound('meeting');
    return meetingFromRow(row, (await this.participants(em, [meetingId])).get(meetingId) ?? []);
  }

  private async participants(em: Em, meetingIds: string[]): Promise<Map<string, MeetingParticipantDto[]>> {
    const out = new Map<string, MeetingParticipantDto[]>();
    if (meetingIds.length === 0) return out;
    const rows = await sql(
      em,
      `select meeting_id, user_id, joined_at, left_at from meeting_participant
        where meeting_id = any(array[?]::uuid[]) order by joined_at, session_id`,
      [meetingIds],
    );
    for (const r of rows) {
      const list = out.get(r.meeting_id) ?? [];
      list.push({ userId: r.user_id, joinedAt: new Date(r.joined_at), leftAt: date(r.left_at) });
      out.set(r.meeting_id, list);
    }
    return out;
  }

  /** Runs a provider call; its failures become SERVICE_UNAVAILABLE (logged without secrets). */
  private async providerCall<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof VideoProviderError) {
        this.deps.log.warn({ provider: this.provider?.name, status: err.status, code: err.code, reason: err.message }, 'video provider call failed');
        throw new AppError('SERVICE_UNAVAILABLE', `the video provider failed: ${err.message}`);
      }
      throw err;
    }
  }

  /** Forgets processed webhook ids after a week (at most once an hour per process). */
  private cleanupWebhookEvents(): void {
    const now = Date.now();
    if (now - this.lastCleanup < 3_600_000) return;
    this.lastCleanup = now;
    void sql(fork(this.deps), `delete from video_webhook_event where received_at < now() - interval '7 days'`).catch((err: unknown) =>
      this.deps.log.warn({ err }, 'video webhook id cleanup failed'),
    );
  }
}

