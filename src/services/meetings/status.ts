import type { Actor } from '../../domain/actor.js';
import { markMeetingEnded, markMeetingLive } from '../../store/meetings.js';
import type { Tx } from '../../store/tx.js';
import { systemMessage } from '../system-message.js';

/**
 * Status moves only forward (scheduled -> live -> ended); each move that happens writes its system
 * message in the same transaction, so a repeated or late move writes nothing.
 */

const displayTitle = (title: string | null) => (title ? `Meeting "${title}"` : 'Meeting');

/** scheduled -> live (only from scheduled: an ended meeting is never reopened). */
export async function markLive(tx: Tx, meeting: { id: string; room_id: string }, at: Date, by: Actor): Promise<void> {
  const moved = await markMeetingLive(tx, meeting.id, at);
  if (moved) await systemMessage(tx, by, meeting.room_id, `${displayTitle(moved.title ?? null)} started`);
}

/** -> ended, once; writes the `meeting.ended` system message. */
export async function markEnded(tx: Tx, meetingId: string, at: Date, by: Actor): Promise<void> {
  const moved = await markMeetingEnded(tx, meetingId, at, by.id);
  if (moved) await systemMessage(tx, by, moved.room_id, `${displayTitle(moved.title ?? null)} ended`);
}
