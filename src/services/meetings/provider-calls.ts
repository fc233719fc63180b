import { AppError } from '../../domain/errors.js';
import type { Logger } from '../../logger.js';
import { type VideoProvider, VideoProviderError } from '../../video/provider.js';

const NOT_CONFIGURED =
  'video is not configured on this server: set VIDEO_PROVIDER=livekit with LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET, ' +
  'or VIDEO_PROVIDER=daily with DAILY_API_KEY (see docs/VIDEO.md)';

/** The configured video provider as the meeting procedures use it: required, its failures classified. */
export class ProviderCalls {
  constructor(
    /** Null when video is not configured. */
    readonly provider: VideoProvider | null,
    private readonly log: Logger,
  ) {}

  /** `video.config`: the configured provider, or null with what to set (no error: a page asks before it shows its button). */
  config(): { provider: VideoProvider['name'] | null; unavailableReason: string | null } {
    return this.provider ? { provider: this.provider.name, unavailableReason: null } : { provider: null, unavailableReason: NOT_CONFIGURED };
  }

  /** The provider, or PRECONDITION_FAILED saying how to configure one. */
  require(): VideoProvider {
    if (!this.provider) throw new AppError('PRECONDITION_FAILED', NOT_CONFIGURED);
    return this.provider;
  }

  /** Runs a provider call; its failures become SERVICE_UNAVAILABLE (logged without secrets). */
  async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof VideoProviderError) {
        this.log.warn({ provider: this.provider?.name, status: err.status, code: err.code, reason: err.message }, 'video provider call failed');
        throw new AppError('SERVICE_UNAVAILABLE', `the video provider failed: ${err.message}`);
      }
      throw err;
    }
  }
}
