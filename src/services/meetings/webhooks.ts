import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Actor } from '../../domain/actor.js';
import { AppError, badRequest } from '../../domain/errors.js';
import { clip } from '../../domain/text.js';
import type { Logger } from '../../logger.js';
import type { Counters } from '../../metrics.js';
import {
  findDeletedMeeting,
  forgetOldWebhookEvents,
  lockProviderMeeting,
  type MeetingRow,
  nonMemberIdsLongerThan,
  type ParticipantSeen,
  recordWebhookEvent,
  upsertParticipant,
} from '../../store/meetings.js';
import { isMember, memberIdsLongerThan } from '../../store/members.js';
import type { Store } from '../../store/store.js';
import type { Tx } from '../../store/tx.js';
import { rolesOf } from '../../store/users.js';
import type { VideoProvider, VideoWebhookEvent } from '../../video/provider.js';
import type { WebhookOutcome } from './dto.js';
import type { MeetingReader } from './read.js';
import type { VideoRemovals } from './removals.js';
import { markEnded, markLive } from './status.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Keys longer than a column are replaced by their hash (stable, so de-duplication still works). */
const fit = (v: string, max: number) => (v.length <= max ? v : `sha256:${createHash('sha256').update(v).digest('hex')}`.slice(0, max));

/** How often (at most, per process) webhook ids older than a week are deleted. */
const CLEANUP_EVERY_MS = 3_600_000;

/** A meeting as the provider calls after a webhook's commit name it in their logs. */
type MeetingRef = Pick<MeetingRow, 'id' | 'tenant' | 'room_id'>;

/** A join the room's access rules refuse: the connection is taken out after the webhook's commit. */
interface Ejection {
  meeting: MeetingRef;
  /** Our user id (the provider identity itself when it maps to nobody we know). */
  userId: string;
  identity: string;
  /** The connection's participant row, as written (its leave is written once the removal succeeded). */
  seen: ParticipantSeen;
  /** Why the access check refused (the error's message). */
  reason: string;
}

/** What applying a webhook did, and what is left to ask the provider after its commit. */
interface Applied {
  outcome: WebhookOutcome;
  /** A refused join: taken out of the call. */
  ejection?: Ejection;
  /** An ended meeting someone joined: its provider room is ended again. */
  ended?: MeetingRef;
  /** A deleted room's meeting whose provider room started or was joined again: ended again. */
  deleted?: MeetingRef;
}

/**
 * The provider's webhooks (`POST /webhooks/video/<provider>`, src/http/video-webhooks.ts): they move
 * meetings' status and record their participants, and take out of the call whoever joins it without
 * being allowed in it now (a user banned or removed since their join token was minted).
 */
export class MeetingWebhooks {
  private lastCleanup = 0;

  constructor(
    private readonly store: Store,
    /** Null when video is not configured (every webhook is then NOT_FOUND). */
    private readonly provider: VideoProvider | null,
    private readonly log: Logger,
    private readonly reader: MeetingReader,
    private readonly counters: Counters,
    /** Where a removal the provider failed goes to be retried. */
    private readonly removals: VideoRemovals,
  ) {}

  /**
   * A provider webhook: verified (WebhookAuthError -> 401), de-duplicated by event id in the same
   * transaction that applies it, and applied so that out-of-order deliveries converge: status only
   * moves forward (scheduled -> live -> ended) and participant rows merge joins and leaves.
   */
  /** Whether webhooks of this provider are taken here (checked before a body is read). */
  accepts(providerName: string): boolean {
    return this.provider !== null && this.provider.name === providerName;
  }

  async handle(providerName: string, rawBody: string, headers: IncomingHttpHeaders): Promise<WebhookOutcome> {
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
    const { outcome, ejection, ended, deleted } = await this.store.transact((tx) => this.apply(tx, provider, event));
    // After the commit (no provider call holds the meeting's lock), before the answer.
    if (ejection) await this.eject(provider, ejection);
    if (ended) await this.endAgain(provider, ended, 'could not end the provider room of an ended meeting someone joined');
    if (deleted) await this.endAgain(provider, deleted, 'could not end the provider room of a deleted room\'s meeting someone joined: the next join asks again');
    return outcome;
  }

  private async apply(tx: Tx, provider: VideoProvider, event: VideoWebhookEvent): Promise<Applied> {
    if (!(await recordWebhookEvent(tx, provider.name, fit(event.id, 200)))) return { outcome: 'duplicate' };
    if (event.kind === 'other' || !UUID_RE.test(event.room)) return { outcome: 'ignored' };
    const m = await lockProviderMeeting(tx, event.room, provider.name);
    if (!m) return this.ofDeletedRoom(tx, provider, event);
    const at = event.at ?? new Date();
    const creator: Actor = { id: m.created_by, name: m.created_by, tenant: m.tenant, roles: [] };
    switch (event.kind) {
      case 'room.started':
        await markLive(tx, m, at, creator);
        break;
      case 'room.finished':
        await markEnded(tx, m.id, at, creator);
        break;
      case 'participant.joined':
      case 'participant.left': {
        const p = event.participant;
        const userId = await this.userOf(tx, m, p.userId);
        const joinedAt = p.joinedAt ?? at;
        const seen: ParticipantSeen = {
          meetingId: m.id,
          sessionId: fit(p.sessionId || `${p.userId}@${joinedAt.getTime()}`, 128),
          userId: fit(userId, 128),
          name: typeof p.name === 'string' ? clip(p.name, 200) : null,
          joinedAt,
          leftAt: event.kind === 'participant.left' ? at : null,
        };
        // The connection is recorded either way (it happened); a refused one is closed once the
        // provider has taken it out (`eject`).
        await upsertParticipant(tx, seen);
        if (event.kind === 'participant.left') break;
        // A join to an ended meeting: its provider room lives again (LiveKit creates a room on the join
        // of a token minted before its end), so it is ended again, with everyone in it.
        if (m.status === 'ended') return { outcome: 'processed', ended: m };
        const refused = p.service || !p.userId ? null : await this.refusal(tx, m, userId);
        if (refused !== null) return { outcome: 'processed', ejection: { meeting: m, userId, identity: p.userId, seen, reason: refused } };
        // The first participant makes a scheduled meeting live (even if room_started is late); a
        // refused one does not.
        await markLive(tx, m, joinedAt, creator);
        break;
      }
    }
    return { outcome: 'processed' };
  }

  /**
   * A webhook for a meeting that is not (or no longer) ours: a meeting of a deleted room whose join
   * tokens may still be valid (kept in `deleted_meeting` by the deletion) whose provider room starts
   * or is joined again is ended again after the commit. A token minted before the deletion lets its
   * holder in until it expires, and LiveKit creates a room anew on such a join. Nothing is recorded
   * (the meeting is gone); anything else is ignored.
   */
  private async ofDeletedRoom(tx: Tx, provider: VideoProvider, event: VideoWebhookEvent): Promise<Applied> {
    if (event.kind !== 'room.started' && event.kind !== 'participant.joined') return { outcome: 'ignored' };
    const gone = await findDeletedMeeting(tx.db, event.room, provider.name);
    if (!gone) return { outcome: 'ignored' };
    return { outcome: 'processed', deleted: { id: event.room, tenant: gone.tenant, room_id: gone.room_id } };
  }

  /**
   * Why the user may not be in the meeting's calls now, by the rule `video.joinToken` mints tokens by
   * (`MeetingReader.meetingAccess`, read in this transaction), or null when they may: a member, or a
   * support agent in a support room (recognized by the roles of the last token the server saw of
   * them). Banned, removed, or never one of the room's people: refused.
   */
  private async refusal(tx: Tx, m: Pick<MeetingRow, 'tenant' | 'room_id'>, userId: string): Promise<string | null> {
    const roles = await rolesOf(tx.db, m.tenant, userId);
    const access = await this.reader.meetingAccess({ id: userId, name: userId, tenant: m.tenant, roles }, m.room_id, tx.em);
    return access instanceof AppError ? access.message : null;
  }

  /**
   * Takes a refused connection out of the call (`VideoProvider.removeParticipant`: LiveKit
   * RemoveParticipant, Daily eject with ban) and writes its leave. A failure is logged and never
   * thrown (the webhook gets its answer either way): the user goes to the removal queue, which
   * retries until the provider answers (src/services/meetings/removals.ts); the connection's row stays
   * open until the provider reports the leave.
   */
  private async eject(provider: VideoProvider, e: Ejection): Promise<void> {
    const about = { meetingId: e.meeting.id, roomId: e.meeting.room_id, tenant: e.meeting.tenant, userId: e.userId, identity: e.identity, sessionId: e.seen.sessionId };
    try {
      await provider.removeParticipant(e.meeting.id, e.userId);
    } catch (err) {
      this.log.warn({ err, ...about }, 'could not remove a user who joined a meeting they may no longer be in: queued to retry');
      await this.retryLater(e, about);
      return;
    }
    this.counters.videoEjections++;
    this.log.warn({ ...about, reason: e.reason }, 'removed a user who joined a meeting they may no longer be in (banned or removed from its room)');
    try {
      await this.store.transact((tx) => upsertParticipant(tx, { ...e.seen, leftAt: new Date() }));
    } catch (err) {
      this.log.warn({ err, ...about }, 'could not record the leave of a user removed from a meeting');
    }
  }

  /**
   * Ends the provider room of an ended meeting, or of a deleted room's meeting, someone joined
   * (`endRoom`: a room already gone is no error). A failure is logged (`failure`) and never thrown
   * (the webhook gets its answer either way): `video.end` of an ended meeting asks the provider again,
   * and so does every later join or start webhook of the provider room.
   */
  private async endAgain(provider: VideoProvider, m: MeetingRef, failure: string): Promise<void> {
    const about = { meetingId: m.id, roomId: m.room_id, tenant: m.tenant };
    try {
      await provider.endRoom(m.id);
    } catch (err) {
      this.log.warn({ err, ...about }, failure);
    }
  }

  /** Queues a failed ejection for the removal queue (ids longer than a user id are no user of ours: left to the meeting's end). */
  private async retryLater(e: Ejection, about: Record<string, unknown>): Promise<void> {
    if (e.userId.length > 128) return;
    try {
      const { room_id: roomId, tenant } = e.meeting;
      if (await this.store.transact((tx) => this.removals.queue(tx, { roomId, tenant, userId: e.userId, reason: 'refused' }))) this.removals.wake();
    } catch (err) {
      this.log.warn({ err, ...about }, 'could not queue the removal of a user who joined a meeting they may no longer be in');
    }
  }

  /**
   * Maps a provider identity back to our user id (identities are user ids, or hashes of long ones):
   * a member of the room first, else someone banned from it, seen in the meeting before, or (support
   * rooms) a support agent; an identity that maps to nobody stays as it is.
   */
  private async userOf(tx: Tx, m: Pick<MeetingRow, 'id' | 'room_id'>, identity: string): Promise<string> {
    const identityOf = this.provider?.identityOf?.bind(this.provider);
    if (!identityOf) return identity;
    if (await isMember(tx.db, m.room_id, identity)) return identity;
    const members = await memberIdsLongerThan(tx.db, m.room_id, identity.length);
    const member = members.find((userId) => identityOf(userId) === identity);
    if (member !== undefined) return member;
    const others = await nonMemberIdsLongerThan(tx.db, m, identity.length);
    return others.find((userId) => identityOf(userId) === identity) ?? identity;
  }

  /** Forgets processed webhook ids after a week (at most once an hour per process). */
  private cleanupWebhookEvents(): void {
    const now = Date.now();
    if (now - this.lastCleanup < CLEANUP_EVERY_MS) return;
    this.lastCleanup = now;
    void forgetOldWebhookEvents(this.store.db()).catch((err: unknown) => this.log.warn({ err }, 'video webhook id cleanup failed'));
  }
}
