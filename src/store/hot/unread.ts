/**
 * The one definition of "unread": messages after my last read seq, not sent by me, not deleted, not
 * `system`; used by `room.list` and `receipt.unread` as a correlated subquery per membership row
 * (it stays on the `message_room_seq_unique` index). The fragments expect `mb` (my membership row)
 * in scope.
 */
export const UNREAD_SQL = `(select count(*) from message u where u.room_id = mb.room_id and u.seq > mb.last_read_seq
   and u.sender_id <> mb.user_id and u.deleted_at is null and u.kind <> 'system')`;

/** Unread messages that mention me. */
export const UNREAD_MENTIONS_SQL = `(select count(*) from message u where u.room_id = mb.room_id and u.seq > mb.last_read_seq
   and u.sender_id <> mb.user_id and u.deleted_at is null and jsonb_exists(u.mentions, mb.user_id))`;
