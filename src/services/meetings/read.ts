import type { Actor } from '../../domain/actor.js';
import { AppError, notFound } from '../../domain/errors.js';
import type { RoomAccess } from '../../domain/rooms.js';
import type { Db, Em } from '../../store/database.js';
import { findMeeting, listMeetings, type MeetingRow, participantsOf } from '../../store/meetings.js';
import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import type { MeetingDto, OnlineParticipant } from '../../domain/meetings.js';
import { meetingFromRow, participantsByMeeting } from './dto.js';
import type { ProviderCalls } from './provider-calls.js';
import type { RateLimits } from '../limits.js';
import { keyOf } from '../../domain/ids.js';

/** `video.get` and `video.list`, and the meeting lookups the other meeting procedures start from. */
export class MeetingReader {
  constructor(
    private readonly store: Store,
    private readonly access: AccessService,
    private readonly video: ProviderCalls,
    private readonly limits: RateLimits,
  ) {}

  /** Calls to the video provider on a user's behalf (join tokens, live participant lists) spend their action budget. */
  spendProviderCall(actor: Actor): Promise<void> {
    return this.limits.consume('action', keyOf(actor.tenant, actor.id, 'video'));
  }

  /** `video.get`: the meeting with its participants; `live` also asks the provider who is in now. */
  async get(actor: Actor, meetingId: string, live = false): Promise<MeetingDto & { online: OnlineParticipant[] | null }> {
    const provider = this.video.require();
    const { row } = await this.readable(actor, meetingId);
    const meeting = meetingFromRow(row, await this.participants(this.store.db(), row.id));
    let online: OnlineParticipant[] | null = null;
    if (live) {
      await this.spendProviderCall(actor);
      online =
        meeting.status === 'ended'
          ? []
          : (await this.video.call(() => provider.listParticipants(meeting.id))).map((p) => ({
              userId: p.userId,
              name: p.name,
              joinedAt: p.joinedAt,
            }));
    }
    return { ...meeting, online };
  }

  /** `video.list`: the room's meetings, newest first (at most `limit`). */
  async list(actor: Actor, roomId: string, limit = 50): Promise<MeetingDto[]> {
    // Access first: whoever may not read the room learns nothing, not even whether video is set up.
    await this.access.requireAccess(actor, roomId, 'read');
    this.video.require();
    const db = this.store.db();
    const rows = await listMeetings(db, roomId, limit);
    const parts = participantsByMeeting(
      await participantsOf(
        db,
        rows.map((r) => r.id),
      ),
    );
    return rows.map((r) => meetingFromRow(r, parts.get(r.id) ?? []));
  }

  /**
   * The meeting and the caller's access to its room by `meetingAccess`; a non-member learns nothing
   * (NOT_FOUND).
   */
  async readable(actor: Actor, meetingId: string): Promise<{ row: MeetingRow; access: RoomAccess }> {
    const row = await findMeeting(this.store.db(), meetingId, actor.tenant);
    if (!row) throw notFound('meeting');
    const access = await this.meetingAccess(actor, row.room_id);
    if (access instanceof AppError) throw access.code === 'NOT_FOUND' ? notFound('meeting') : access;
    return { row, access };
  }

  /**
   * Who may see a room's meetings and be in their calls: whoever may read the room now (its members;
   * support agents in support rooms; never a user banned from it). The one rule for both:
   * `video.joinToken` mints tokens by it (through `readable`), and a provider's join webhook is held
   * to it (src/services/meetings/webhooks.ts: a token minted before a ban or removal is refused).
   * In a transaction given its EntityManager. The access, or the error `requireAccess` would throw.
   */
  async meetingAccess(actor: Actor, roomId: string, em?: Em): Promise<RoomAccess | AppError> {
    if (em) return (await this.access.checkAccess([{ actor, roomId, purpose: 'read' }], em))[0]!;
    return this.access.checkGrouped({ actor, roomId, purpose: 'read' });
  }

  /** The meeting as it is now (after a change by its caller, who may read it). */
  async load(meetingId: string, tenant: string): Promise<MeetingDto> {
    const db = this.store.db();
    const row = await findMeeting(db, meetingId, tenant);
    if (!row) throw notFound('meeting');
    return meetingFromRow(row, await this.participants(db, meetingId));
  }

  private async participants(db: Db, meetingId: string) {
    return participantsByMeeting(await participantsOf(db, [meetingId])).get(meetingId) ?? [];
  }
}
