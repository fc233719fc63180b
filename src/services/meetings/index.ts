import type { Store } from '../../store/store.js';
import type { VideoProvider } from '../../video/provider.js';
import type { VideoProviderName } from '../../domain/meetings.js';
import type { AccessService } from '../access.js';
import type { Logger } from '../../logger.js';
import type { Counters } from '../../metrics.js';
import type { RateLimits } from '../limits.js';
import { MeetingExpiry } from './expiry.js';
import { MeetingLifecycle } from './lifecycle.js';
import { ProviderCalls } from './provider-calls.js';
import { MeetingReader } from './read.js';
import { MeetingWebhooks } from './webhooks.js';
import { type RemovalConfig, VideoRemovalWorker } from './removals.js';

export * from './dto.js';
export type { ExpiryOutcome, MeetingExpiry } from './expiry.js';
export type { MeetingLifecycle } from './lifecycle.js';
export type { MeetingReader } from './read.js';
export type { MeetingWebhooks } from './webhooks.js';
export type { RemovalOutcome, VideoRemovals, VideoRemovalWorker } from './removals.js';

/**
 * Video meetings on an external provider (LiveKit or Daily; media never touches us), by capability:
 * `lifecycle` creates them with invites, mints join tokens and ends them; `read` answers `video.get`
 * and `video.list`; `webhooks` applies the provider's deliveries to status and participants (and takes
 * out of a call whoever joins it without being allowed in it now); `expiry` ends them at their expiry.
 */
export interface MeetingServices {
  lifecycle: MeetingLifecycle;
  read: MeetingReader;
  webhooks: MeetingWebhooks;
  /** This node's sender of queued removals from calls (bans, removals, refused joins); its loop also runs `expiry`. */
  removals: VideoRemovalWorker;
  /** Ends meetings at their expiry, on the provider too. */
  expiry: MeetingExpiry;
  /** The configured provider (null: video is not configured). */
  provider: VideoProvider | null;
  /** `video.config`: which provider meetings run on, or why there are none. */
  config(): { provider: VideoProviderName | null; unavailableReason: string | null };
}

export function createMeetingServices(
  parts: { log: Logger; limits: RateLimits; tokenTtlSeconds: number; counters: Counters; removals: RemovalConfig },
  store: Store,
  access: AccessService,
  provider: VideoProvider | null,
): MeetingServices {
  const video = new ProviderCalls(provider, parts.log);
  const read = new MeetingReader(store, access, video, parts.limits);
  const expiry = new MeetingExpiry(store, provider, parts.log);
  const removals = new VideoRemovalWorker(store, provider, read, parts.removals, parts.log, parts.counters, expiry);
  return {
    lifecycle: new MeetingLifecycle(parts.limits, parts.log, parts.tokenTtlSeconds, store, access, video, read),
    read,
    webhooks: new MeetingWebhooks(store, provider, parts.log, read, parts.counters, removals),
    removals,
    expiry,
    provider,
    config: () => video.config(),
  };
}
