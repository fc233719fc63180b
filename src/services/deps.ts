import type { Config } from '../config.js';
import type { Orm, Replica } from '../store/database.js';
import type { StatementPipe } from '../store/hot/pipe.js';
import type { EventBus } from '../realtime/bus.js';
import type { Logger } from '../logger.js';
import type { Counters, Observers } from '../metrics.js';
import type { RateLimits } from './limits.js';

/**
 * The concrete parts createApp wires and hands to createServices (src/services/index.ts), which
 * gives each service only the parts it uses. The tRPC layer reads config, log, counters and
 * observers through `services.deps`.
 */
export interface BaseDeps {
  config: Config;
  orm: Orm;
  /** PostgreSQL read replicas (empty: every read on the primary); used through the ReadRouting only. */
  replicas?: Replica[];
  /** The pipelined connection of the grouped sends (src/store/hot/pipe.ts); none: they go through the pool. */
  sendPipe?: StatementPipe | null;
  bus: EventBus;
  log: Logger;
  /** Plain counters read by the metrics registry. */
  counters: Counters;
  /** Where procedure durations and fan-outs are reported (the metrics). */
  observers: Observers;
}

/** The base parts plus the rate limits (always present: no limiter, no service). */
export interface Deps extends BaseDeps {
  limits: RateLimits;
}
