/** The bounds of the unread counts, apart from src/store/receipts.ts so that other stores (notify) can use them without a cycle. */

/**
 * Unread counts stop at this many: a count of it says "this many or more" (the client's
 * `unreadLabel` shows "1000+").
 * Counting every unread message cost a room list, `receipt.unread` and each `unread.changed` a
 * read of all of them, per room: a member who never read a busy room made each of those calls read
 * its whole history (`npm run bench:statement`, docs/BENCHMARKS.md).
 */
export const UNREAD_CAP = 1000;

/**
 * The counts look at the room's newest this many sequence numbers (messages and the room's other
 * events) after the read position: a range of the `message_room_seq_unique` index, whatever plan
 * PostgreSQL picks. A mention older than that is not counted (it is in the inbox), and a member with
 * more unread messages than the cap almost always has the cap's worth among them.
 */
export const UNREAD_WINDOW = 5 * UNREAD_CAP;
