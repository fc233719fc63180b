import type { VideoConfig } from '../config.js';
import { DailyProvider } from './daily.js';
import type { VideoProvider } from './provider.js';

export * from './provider.js';

/**
 * The configured provider, or null when video is not configured. LiveKit's SDK is loaded only when
 * LiveKit is configured (it is about 7 MB of heap a node without video would carry for nothing).
 */
export async function createVideoProvider(config: VideoConfig): Promise<VideoProvider | null> {
  if (config.provider === 'livekit' && config.livekit) {
    const { LiveKitProvider } = await import('./livekit.js');
    return new LiveKitProvider(config.livekit);
  }
  if (config.provider === 'daily' && config.daily) return new DailyProvider(config.daily);
  return null;
}
