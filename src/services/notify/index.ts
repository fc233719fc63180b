import type { NotifyConfig } from '../../config.js';
import type { DurableRoomEvent, EphemeralRoomEvent } from '../../domain/events.js';
import type { Logger } from '../../logger.js';
import { enqueue, type QueuedMessage, type QueueSettings, recipientsOf } from '../../store/notify.js';
import type { Store } from '../../store/store.js';

export { Mailer } from './digest.js';
export { DeviceService } from './devices.js';
export { PreferenceService } from './preferences.js';
export { NotifyWorker } from './worker.js';

/** The queue's settings for a config: null when neither web push nor e-mail is configured. */
export function queueSettings(config: NotifyConfig): QueueSettings | null {
  if (!config.vapid && !config.smtp) return null;
  return { push: config.vapid !== null, digest: config.smtp !== null, coalesceMs: config.coalesceMs, digestDelayMs: config.digestDelayMs };
}

/** Messages queued per statement. */
const BATCH = 256;

/**
 * Queues notifications for new messages after their commit, off the send path: `observe` (called by
 * the publisher for every room event this node publishes) keeps a message in an array; one batch
 * at a time finds who is to be told (the other member of a direct room, the thread's writers, members
 * who set the room to `all`: one query) and queues them (one statement). Mentions, meeting invites
 * and `inbox.notify` are queued in their own transaction instead (src/store/tx.ts).
 */
export class MessageNotifier {
  private pending: QueuedMessage[] = [];
  private running: Promise<void> | null = null;

  constructor(
    private readonly store: Store,
    private readonly settings: QueueSettings,
    private readonly log: Logger,
    private readonly wake: () => void,
  ) {}

  observe(e: DurableRoomEvent | EphemeralRoomEvent): void {
    if (e.type !== 'message.new' || e.message.kind === 'system') return;
    const m = e.message;
    this.pending.push({ roomId: e.roomId, messageId: m.id, seq: e.seq, senderId: m.senderId, replyToId: m.replyToId, mentions: m.mentions ?? [], at: m.createdAt });
    this.running ??= this.drain();
  }

  private async drain(): Promise<void> {
    await Promise.resolve();
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, BATCH);
        try {
          const db = this.store.db();
          const who = await recipientsOf(db, batch);
          const items = who.map((r) => {
            const m = batch[r.i]!;
            return {
              tenant: r.tenant,
              userId: r.user_id,
              roomId: m.roomId,
              kind: r.reason,
              messageId: m.messageId,
              messageSeq: m.seq,
              fromUser: m.senderId,
              title: null,
              url: null,
              at: m.at,
            };
          });
          if (items.length > 0 && (await enqueue(db, items, this.settings)) > 0) this.wake();
        } catch (err) {
          this.log.warn({ err, messages: batch.length }, 'cannot queue notifications for new messages');
        }
      }
    } finally {
      this.running = null;
    }
  }

  /** Waits for the batch in flight (shutdown). */
  async close(): Promise<void> {
    while (this.running !== null) await this.running;
  }
}
