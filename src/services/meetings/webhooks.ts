import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Actor } from '../../domain/actor.js';
import { AppError, badRequest } from '../../domain/errors.js';
import { clip } from '../../domain/text.js';
import type { Logger } from '../../logger.js';
import { forgetOldWebhookEvents, lockProviderMeeting, recordWebhookEvent, upsertParticipant } from '../../store/meetings.js';
import { isMember, memberIdsLongerThan } from '../../store/members.js';
import type { Store } from '../../store/store.js';
import type { Tx } from '../../store/tx.js';
import type { VideoProvider, VideoWebhookEvent } from '../../video/provider.js';
import type { WebhookOutcome } from './dto.js';
import { markEnded, markLive } from './status.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Keys longer than a column are replaced by their hash (stable, so de-duplication still works). */
const fit = (v: string, max: number) => (v.length <= max ? v : `sha256:${createHash('sha256').update(v).digest('hex')}`.slice(0, max));

/** How often (at most, per process) webhook ids older than a week are deleted. */
const CLEANUP_EVERY_MS = 3_600_000;

/**
 * The provider's webhooks (`POST /webhooks/video/<provider>`, src/http/video-webhooks.ts): they move
 * meetings' status and record their participants.
 */
export class MeetingWebhooks {
  private lastCleanup = 0;

  constructor(
    private readonly store: Store,
    /** Null when video is not configured (every webhook is then NOT_FOUND). */
    private readonly provider: VideoProvider | null,
    private readonly log: Logger,
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
    return this.store.transact((tx) => this.apply(tx, provider, event));
  }

  private async apply(tx: Tx, provider: VideoProvider, event: VideoWebhookEvent): Promise<WebhookOutcome> {
    if (!(await recordWebhookEvent(tx, provider.name, fit(event.id, 200)))) return 'duplicate';
    if (event.kind === 'other' || !UUID_RE.test(event.room)) return 'ignored';
    const m = await lockProviderMeeting(tx, event.room, provider.name);
    if (!m) return 'ignored';
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
        const userId = await this.userOf(tx, m.room_id, p.userId);
        const joinedAt = p.joinedAt ?? at;
        await upsertParticipant(tx, {
          meetingId: m.id,
          sessionId: fit(p.sessionId || `${p.userId}@${joinedAt.getTime()}`, 128),
          userId: fit(userId, 128),
          name: typeof p.name === 'string' ? clip(p.name, 200) : null,
          joinedAt,
          leftAt: event.kind === 'participant.left' ? at : null,
        });
        // The first participant makes a scheduled meeting live (even if room_started is late).
        if (event.kind === 'participant.joined') await markLive(tx, m, joinedAt, creator);
        break;
      }
    }
    return 'processed';
  }

  /** Maps a provider identity back to our user id (identities are user ids, or hashes of long ones). */
  private async userOf(tx: Tx, roomId: string, identity: string): Promise<string> {
    const identityOf = this.provider?.identityOf?.bind(this.provider);
    if (!identityOf) return identity;
    if (await isMember(tx.db, roomId, identity)) return identity;
    const members = await memberIdsLongerThan(tx.db, roomId, identity.length);
    return members.find((userId) => identityOf(userId) === identity) ?? identity;
  }

  /** Forgets processed webhook ids after a week (at most once an hour per process). */
  private cleanupWebhookEvents(): void {
    const now = Date.now();
    if (now - this.lastCleanup < CLEANUP_EVERY_MS) return;
    this.lastCleanup = now;
    void forgetOldWebhookEvents(this.store.db()).catch((err: unknown) => this.log.warn({ err }, 'video webhook id cleanup failed'));
  }
}
