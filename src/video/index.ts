import type { VideoConfig } from '../config.js';
import { DailyProvider } from './daily.js';
import { LiveKitProvider } from './livekit.js';
import type { VideoProvider } from './provider.js';

export * from './provider.js';

/** The configured provider, or null when video is not configured. */
export function createVideoProvider(config: VideoConfig): VideoProvider | null {
  if (config.provider === 'livekit' && config.livekit) return new LiveKitProvider(config.livekit);
  if (config.provider === 'daily' && config.daily) return new DailyProvider(config.daily);
  return null;
}
