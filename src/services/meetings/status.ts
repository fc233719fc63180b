import type { Actor } from '../../domain/actor.js';
import { meetingNotice } from '../../domain/meetings.js';
import { markMeetingEnded, markMeetingLive } from '../../store/meetings.js';
import type { Tx } from '../../store/tx.js';
import { systemMessage } from '../system-message.js';

/**
 * Status moves only forward (scheduled -> live -> ended); each move that happens writes its system
 * message in the same transaction, so a repeated or late move writes nothing.
 */

/** scheduled -> live (only from scheduled: an ended meeting is never reopened). */
export async function markLive(tx: Tx, meeting: { id: string; room_id: string }, at: Date, by: Actor): Promise<void> {
  const moved = await markMeetingLive(tx, meeting.id, at);
  if (!moved) return;
  await systemMessage(tx, by, meeting.room_id, meetingNotice(moved.title ?? null, 'started'));
  // After the system message: taken under the room's lock, so in order with the room's events.
  const data = { meetingId: meeting.id, roomId: meeting.room_id, title: moved.title ?? null, startedAt: at.toISOString() };
  await tx.webhookEvent({ tenant: moved.tenant, roomId: meeting.room_id, type: 'meeting.started', data });
}

/** -> ended, once; writes the `meeting.ended` system message. */
export async function markEnded(tx: Tx, meetingId: string, at: Date, by: Actor): Promise<void> {
  const moved = await markMeetingEnded(tx, meetingId, at, by.id);
  if (!moved) return;
  await systemMessage(tx, by, moved.room_id, meetingNotice(moved.title ?? null, 'ended'));
  const data = { meetingId, roomId: moved.room_id, title: moved.title ?? null, endedAt: at.toISOString(), endedBy: by.id };
  await tx.webhookEvent({ tenant: moved.tenant, roomId: moved.room_id, type: 'meeting.ended', data });
}
