import { keyOf } from '../../domain/ids.js';
import { randomUUID } from 'node:crypto';
import type { Actor } from '../../domain/actor.js';
import { AppError, badRequest, forbidden, notFound } from '../../domain/errors.js';
import { can, ROLE_RANK } from '../../domain/permissions.js';
import type { RoomAccess } from '../../domain/rooms.js';
import { findMeeting, insertMeeting, keepDeletedMeetings, openMeetingsOfRoom } from '../../store/meetings.js';
import { otherMemberIds } from '../../store/members.js';
import type { Store } from '../../store/store.js';
import type { Tx } from '../../store/tx.js';
import { type AccessService, isMuted } from '../access.js';
import type { Logger } from '../../logger.js';
import type { RateLimits } from '../limits.js';
import type { JoinTokenDto, MeetingDto } from '../../domain/meetings.js';
import { MEETING_TTL_DEFAULT_MINUTES, MEETING_TTL_MAX_MINUTES } from './dto.js';
import type { ProviderCalls } from './provider-calls.js';
import type { MeetingReader } from './read.js';
import { markEnded } from './status.js';

/**
 * How long past its meeting's expiry a deleted room's meeting is kept for the webhooks: no join token
 * outlives the meeting's expiry, but LiveKit accepts a token up to a minute past its `exp`, the
 * provider's clock may be ahead of ours, and its webhook arrives after the join (and is retried).
 */
const DELETED_MEETING_MARGIN_MS = 15 * 60_000;

/** A meeting not ended: whose provider room a room's deletion ends (`openOf`, then `endProviderRooms`). */
export interface OpenMeeting {
  id: string;
  provider: string;
}

const isAgent = (actor: Actor, access: RoomAccess) => access.room.kind === 'support' && actor.roles.includes('support');

/**
 * What members do with a meeting: create it (with invites), get a join token, end it; and what the
 * room's own changes do to its meetings (a deletion ends them; a ban or removal takes the user out
 * through the removal queue, src/services/meetings/removals.ts).
 */
export class MeetingLifecycle {
  constructor(
    private readonly limits: RateLimits,
    private readonly log: Logger,
    /** VIDEO_TOKEN_TTL_SECONDS: the longest a join token lives. */
    private readonly tokenTtlSeconds: number,
    private readonly store: Store,
    private readonly access: AccessService,
    private readonly video: ProviderCalls,
    private readonly reader: MeetingReader,
  ) {}

  /**
   * `video.create`: members who may post in the room (not muted; admins in broadcast rooms; support
   * agents in support rooms) create a meeting. The provider room comes first; the meeting row and a
   * `meeting.invite` for every other member are written in one transaction afterwards.
   */
  async create(actor: Actor, input: { roomId: string; title?: string | null; ttlMinutes?: number | null }): Promise<MeetingDto> {
    const provider = this.video.require();
    const mayCreate = (access: RoomAccess) => {
      if (!access.member && !isAgent(actor, access)) throw notFound('room');
    };
    // Checked before the provider is called, and again in the transaction that writes the meeting.
    mayCreate(await this.access.requirePermission(actor, input.roomId, 'send'));
    await this.limits.consume('roomCreate', keyOf(actor.tenant, actor.id, 'meeting'));
    const ttl = input.ttlMinutes ?? MEETING_TTL_DEFAULT_MINUTES;
    if (ttl < 1 || ttl > MEETING_TTL_MAX_MINUTES) throw badRequest(`ttlMinutes must be between 1 and ${MEETING_TTL_MAX_MINUTES}`);
    const id = randomUUID();
    const expiresAt = new Date(Date.now() + ttl * 60_000);
    const title = input.title?.trim() || null;
    const room = await this.video.call(() => provider.createRoom({ name: id, expiresAt }));
    try {
      // Run again on a deadlock: every effect of the callback is in the transaction or after commit
      // (the provider room is created once, before it).
      await this.store.transact(async (tx) => {
        // Held to under the room's lock, taken before the meeting and its invites are written (they
        // append no room event): a member removed, banned or muted meanwhile creates nothing.
        await this.access.requirePermissionInTx(tx, actor, input.roomId, 'send', mayCreate);
        await tx.lockRoom(input.roomId);
        await insertMeeting(tx, {
          id,
          tenant: actor.tenant,
          roomId: input.roomId,
          createdBy: actor.id,
          title,
          provider: provider.name,
          providerRoomId: room.providerRoomId,
          url: room.url,
          expiresAt,
        });
        await tx.appendInboxMany(actor.tenant, await otherMemberIds(tx.db, input.roomId, actor.id), {
          type: 'meeting.invite',
          roomId: input.roomId,
          meetingId: id,
          title,
          url: room.url,
          from: actor.id,
        });
      }, { retry: true });
    } catch (err) {
      // No meeting without its row: give the provider room back (best effort).
      await provider.endRoom(id).catch((e: unknown) => this.log.warn({ err: e, meetingId: id }, 'could not end an orphaned provider room'));
      throw err;
    }
    return this.reader.load(id, actor.tenant);
  }

  /**
   * `video.joinToken`: a short-lived provider token for a member (identity = user id, name from the
   * access token; owner/admin/moderator get the provider's admin grant). Ended or expired -> error.
   * Who may not post in the room may not speak in its calls: a member muted in the room (until the
   * mute ends) and a broadcast room's readers (its plain members and moderators: only admins and the
   * owner post there) join as listeners: no publishing, and no admin grant either (with it they
   * could give the publishing back to themselves). The meeting is read again after minting: a token
   * minted while its room was deleted (or the meeting ended) is not handed out.
   */
  async joinToken(actor: Actor, meetingId: string): Promise<JoinTokenDto> {
    const provider = this.video.require();
    const { row, access } = await this.reader.readable(actor, meetingId);
    if (row.status === 'ended') throw new AppError('PRECONDITION_FAILED', 'this meeting has ended');
    // Whole seconds a token minted now may live without outliving the meeting: the providers stamp
    // `exp` as their whole-second now plus the ttl, so counting from the next whole second keeps it at
    // or before the expiry. Read again just before minting (the budget's check takes a moment).
    const secondsLeft = () => Math.floor(row.expires_at.getTime() / 1000) - Math.ceil(Date.now() / 1000);
    const expired = () => new AppError('PRECONDITION_FAILED', 'this meeting has expired');
    if (secondsLeft() <= 0) throw expired();
    if (row.provider !== provider.name) {
      throw new AppError('PRECONDITION_FAILED', `this meeting was created on ${row.provider}, but the server now uses ${provider.name}`);
    }
    const listener = isMuted(access) || !can(access.role, 'send', access.room.kind);
    const admin = !listener && ROLE_RANK[access.role] >= ROLE_RANK.moderator;
    await this.reader.spendProviderCall(actor);
    const left = secondsLeft();
    if (left <= 0) throw expired();
    const token = await this.video.call(() =>
      provider.mintJoinToken({
        room: row.id,
        roomUrl: row.url,
        userId: actor.id,
        name: actor.name,
        admin,
        canPublish: !listener,
        ttlSeconds: Math.min(this.tokenTtlSeconds, left),
      }),
    );
    // The room may have been deleted (or the meeting ended) while the token was minted: it is not
    // handed out then. A deletion that commits after this read is left to the join's webhook
    // (src/services/meetings/webhooks.ts ends the provider room of a deleted room's meeting again).
    const after = await findMeeting(this.store.db(), meetingId, actor.tenant);
    if (!after) throw notFound('meeting');
    if (after.status === 'ended') throw new AppError('PRECONDITION_FAILED', 'this meeting has ended');
    return { provider: provider.name, url: token.url, token: token.token, expiresAt: token.expiresAt };
  }

  /**
   * `video.end`: the creator or a moderator+ ends the meeting here and on the provider. The right is
   * checked in the transaction that marks it ended and held to until the room's lock
   * (`requireInTx`), and the provider is asked only after that commit: a caller demoted or removed by
   * a change committed before is refused and ends nothing, not even the provider room. Writes the
   * `meeting.ended` system message once. Ending an ended meeting returns it unchanged, and asks the
   * provider to end its room again (a request that failed after the commit is repeated so; a room
   * already gone is no error). A meeting past its expiry reads as ended already (docs/VIDEO.md): it
   * is handled as an ended one (returned as it reads, its provider room ended again), since LiveKit
   * keeps its call running while people stay in it.
   */
  async end(actor: Actor, meetingId: string): Promise<MeetingDto> {
    const provider = this.video.require();
    const { row, access } = await this.reader.readable(actor, meetingId);
    const mayEnd = (a: RoomAccess) => {
      if (row.created_by !== actor.id && ROLE_RANK[a.role] < ROLE_RANK.moderator) {
        throw forbidden('only the creator of the meeting or a moderator may end it');
      }
    };
    mayEnd(access);
    // Past its expiry it reads as ended (`meetingFromRow`): nothing to write, the provider is asked again.
    const endedBefore = row.status === 'ended' || row.expires_at.getTime() <= Date.now();
    if (!endedBefore) {
      await this.store.transact(async (tx) => {
        // Checked again once the system message takes the room's lock, if the room's access changed since.
        await this.access.requireInTx(tx, actor, row.room_id, 'read', {
          rule: mayEnd,
          refused: (err) => (err.code === 'NOT_FOUND' ? notFound('meeting') : err),
        });
        await markEnded(tx, row.id, new Date(), actor);
      });
    }
    if (row.provider === provider.name) {
      // Asking again for a meeting ended before spends the caller's budget, like the other provider calls on request.
      if (endedBefore) await this.reader.spendProviderCall(actor);
      try {
        await this.video.call(() => provider.endRoom(row.id));
      } catch (err) {
        if (err instanceof AppError && err.code === 'SERVICE_UNAVAILABLE') {
          throw new AppError('SERVICE_UNAVAILABLE', `the meeting is ended, but ${err.message}; video.end again asks the provider again`);
        }
        throw err;
      }
    }
    return this.reader.load(meetingId, actor.tenant);
  }

  /**
   * In a room's deletion, under the room's lock, before its rows go (a `video.create` committed before
   * is seen; one after it finds no room and gives its provider room back): returns the meetings not
   * ended yet, whose provider rooms `endProviderRooms` ends after commit. It also keeps every meeting
   * of the room whose join tokens may still be valid, ended or not, until its expiry plus a margin
   * (`deleted_meeting`): such a token lets its holder into the provider room after the deletion, and
   * LiveKit creates the room anew on that join; the provider's webhook then ends it again
   * (src/services/meetings/webhooks.ts).
   */
  async openOf(tx: Tx, roomId: string): Promise<OpenMeeting[]> {
    await keepDeletedMeetings(tx, roomId, DELETED_MEETING_MARGIN_MS);
    return openMeetingsOfRoom(tx.db, roomId);
  }

  /**
   * Ends the provider rooms of meetings whose rows are gone with their room (after the deletion's
   * commit, never inside a transaction): participants are disconnected and join tokens already
   * minted stop working. Best effort, one meeting after the other: a failure is logged, never thrown
   * (the room is deleted either way; the provider room then ends at its own expiry).
   */
  async endProviderRooms(meetings: readonly OpenMeeting[]): Promise<void> {
    if (meetings.length === 0) return;
    const provider = this.video.provider;
    for (const m of meetings) {
      if (provider === null || m.provider !== provider.name) {
        this.log.warn({ meetingId: m.id, provider: m.provider }, 'the meeting of a deleted room runs on a provider not configured here: not ended');
        continue;
      }
      await provider.endRoom(m.id).catch((err: unknown) => this.log.warn({ err, meetingId: m.id }, 'could not end the provider room of a deleted room'));
    }
  }
}
