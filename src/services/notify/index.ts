import type { NotifyConfig } from '../../config.js';
import type { QueueSettings } from '../../store/notify.js';

export { Mailer } from './digest.js';
export { DeviceService } from './devices.js';
export { PreferenceService } from './preferences.js';
export { NotifyWorker } from './worker.js';

/**
 * The queue's settings for a config: null when neither web push nor e-mail is configured. What is
 * queued is written in the transaction (or the grouped send's statement) of what it is about
 * (src/store/tx.ts, src/store/hot/append-messages.ts), so a crash loses nothing; the worker decides
 * when each row is due whether the user is still to be told (src/services/notify/policy.ts).
 */
export function queueSettings(config: NotifyConfig): QueueSettings | null {
  if (!config.vapid && !config.smtp) return null;
  return { push: config.vapid !== null, digest: config.smtp !== null, coalesceMs: config.coalesceMs, digestDelayMs: config.digestDelayMs };
}
