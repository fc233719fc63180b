import type { Config } from '../config.js';
import type { Orm } from '../store/database.js';
import type { EventBus } from '../realtime/bus.js';
import type { Logger } from '../logger.js';
import type { Counters, Observers } from '../metrics.js';
import type { RateLimits } from './limits.js';

/** The concrete parts wired by createApp, before the services build their own shared parts. */
export interface BaseDeps {
  config: Config;
  orm: Orm;
  bus: EventBus;
  log: Logger;
  /** Plain counters read by the metrics registry. */
  counters: Counters;
  /** Where procedure durations and fan-outs are reported (the metrics). */
  observers: Observers;
}

/** What every service gets: the base parts and the rate limits (always present: no limiter, no service). */
export interface Deps extends BaseDeps {
  limits: RateLimits;
}
