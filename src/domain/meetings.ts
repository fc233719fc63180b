/**
 * Meeting shapes as clients see them (video.* procedures and inbox events). Plain interfaces: the
 * client package's declarations are built from them.
 */

/** The external video platforms a meeting can run on. */
export type VideoProviderName = 'livekit' | 'daily';

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

/**
 * The system message a meeting's start or end writes in its room (src/services/meetings/status.ts):
 * `Meeting "<title>" started`, `Meeting started` without a title. The erasure finds and rewrites an
 * erased user's notices by it (src/store/compliance.ts).
 */
export const meetingNotice = (title: string | null, what: 'started' | 'ended') => (title ? `Meeting "${title}" ${what}` : `Meeting ${what}`);
