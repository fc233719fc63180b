import type { MeetingRow, ParticipantRow } from '../../store/meetings.js';
import type { MeetingDto, MeetingParticipantDto, MeetingStatus, VideoProviderName } from '../../domain/meetings.js';

/** What a webhook delivery did. */
export type WebhookOutcome = 'processed' | 'duplicate' | 'ignored' | 'probe';

export const MEETING_TTL_DEFAULT_MINUTES = 60;
export const MEETING_TTL_MAX_MINUTES = 24 * 60;

/** The public shape of a meeting row; a meeting past its expiry reads as ended. */
export function meetingFromRow(r: MeetingRow, participants: MeetingParticipantDto[]): MeetingDto {
  const expiresAt = r.expires_at;
  // A meeting past its expiry is over even if the provider never told us (no webhook configured).
  const expired = r.status !== 'ended' && expiresAt.getTime() <= Date.now();
  return {
    id: r.id,
    roomId: r.room_id,
    provider: r.provider as VideoProviderName,
    status: expired ? 'ended' : (r.status as MeetingStatus),
    title: r.title ?? null,
    url: r.url,
    createdBy: r.created_by,
    createdAt: r.created_at,
    startedAt: r.started_at ?? null,
    endedAt: r.ended_at ?? (expired ? expiresAt : null),
    expiresAt,
    participants,
  };
}

/** Participant rows (in their order) grouped by meeting. */
export function participantsByMeeting(rows: ParticipantRow[]): Map<string, MeetingParticipantDto[]> {
  const out = new Map<string, MeetingParticipantDto[]>();
  for (const r of rows) {
    const list = out.get(r.meeting_id) ?? [];
    list.push({ userId: r.user_id, joinedAt: r.joined_at, leftAt: r.left_at ?? null });
    out.set(r.meeting_id, list);
  }
  return out;
}
