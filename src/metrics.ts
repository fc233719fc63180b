import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Pool } from 'pg';

/**
 * Counters the services bump on their paths (plain numbers: no registry lookups on the hot path).
 * The Prometheus registry reads them when scraped.
 */
export interface Counters {
  messagesSent: number;
  busPublished: number;
  busErrors: number;
  rateLimited: number;
  authFailures: number;
  /** Tokens that could not be checked: the identity provider's keys (JWKS) could not be loaded. */
  authUnavailable: number;
  /** HTTP API requests and WebSocket upgrades refused for a browser Origin that is not allowed. */
  originRefused: number;
  /** HTTP requests and WebSocket upgrades refused for a `Host` not in ALLOWED_HOSTS. */
  hostRefused: number;
  /** Fan-out frames written with ws's `sendFrame` (the fast path, src/transport/frames.ts). */
  wsDirectWrites: number;
  /** Fan-out frames written with `ws.send` because the fast path's ws internals were not there. */
  wsFallbackWrites: number;
  /** Webhook deliveries answered with a 2xx. */
  webhooksDelivered: number;
  /** Webhook delivery attempts that failed (retried or given up). */
  webhooksFailed: number;
  /** Web pushes accepted by a push service. */
  pushesSent: number;
  /** Push attempts that failed (retried or given up; a device gone is not counted). */
  pushesFailed: number;
  /** E-mail digests handed to the SMTP server. */
  digestsSent: number;
  /** Webhook and push outcomes not written: the worker's lease had run out and another node had claimed the row. */
  claimsLost: number;
  /** Transactions run again after a deadlock or serialization failure (`transact(fn, { retry: true })`). */
  txRetries: number;
  /** Reads served by a PostgreSQL read replica (src/services/read-routing.ts). */
  replicaReads: number;
  /** Reads of the replica paths that went to the primary: no replica had what the caller has seen, or it failed. */
  replicaFallbacks: number;
  /** Rooms whose activity the room list feed sent nobody without a query: no inbox of their tenant was open on any node. */
  activityRoomsSkipped: number;
  /** Video call connections taken out on their join webhook: the user may no longer be in the room's calls (banned, removed). */
  videoEjections: number;
  /** Banned or removed users the provider took out of every meeting of their room (src/services/meetings/removals.ts). */
  videoRemovals: number;
  /** Attempts to take a banned or removed user out of a room's calls that failed (retried or given up). */
  videoRemovalsFailed: number;
}

export function newCounters(): Counters {
  return { messagesSent: 0, busPublished: 0, busErrors: 0, rateLimited: 0, authFailures: 0, authUnavailable: 0, originRefused: 0, hostRefused: 0, wsDirectWrites: 0, wsFallbackWrites: 0, webhooksDelivered: 0, webhooksFailed: 0, pushesSent: 0, pushesFailed: 0, digestsSent: 0, claimsLost: 0, txRetries: 0, replicaReads: 0, replicaFallbacks: 0, activityRoomsSkipped: 0, videoEjections: 0, videoRemovals: 0, videoRemovalsFailed: 0 };
}

/** What the services report as it happens; handed to them when they are built (BaseDeps). */
export interface Observers {
  /** A query or mutation finished (`code`: OK or the error code). */
  procedure(path: string, type: string, code: string, seconds: number): void;
  /** A room event was fanned out to this node's subscribers (once per event per node). */
  fanout(event: { type: string }, subscribers: number): void;
  /** A group of plain sends was written (one statement, src/services/send-batcher.ts): its size and how long the write took. */
  sendGroup(items: number, seconds: number): void;
}

/**
 * The part of the metrics the services feed, built before them: plain counters (no registry
 * lookups on the hot paths) and the latency histograms. `Metrics` adds what is read at scrape time.
 */
export class Telemetry implements Observers {
  readonly registry = new Registry();
  readonly counters: Counters = newCounters();
  readonly procedureDuration: Histogram<'path' | 'type' | 'code'>;
  readonly deliveryLag: Histogram;
  readonly sendGroupSize: Histogram;
  readonly sendGroupDuration: Histogram;

  constructor() {
    this.procedureDuration = new Histogram({
      name: 'chat_procedure_duration_seconds',
      help: 'Duration of tRPC queries and mutations by procedure and result code',
      labelNames: ['path', 'type', 'code'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [this.registry],
    });
    this.deliveryLag = new Histogram({
      name: 'chat_delivery_lag_seconds',
      help: 'Time from a message commit to its fan-out on this node (once per message per node)',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [this.registry],
    });
    // Group commit at work: sends per written group (1 under light load, larger the busier) and the
    // time of each group's write, queued behind another on the statement pipe included.
    this.sendGroupSize = new Histogram({
      name: 'chat_send_group_size',
      help: 'Plain sends written together in one statement (group commit), once per group',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
      registers: [this.registry],
    });
    this.sendGroupDuration = new Histogram({
      name: 'chat_send_group_seconds',
      help: 'Time to write one group of plain sends, from its start to its answer (retries included)',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [this.registry],
    });
  }

  procedure(path: string, type: string, code: string, seconds: number): void {
    this.procedureDuration.observe({ path, type, code }, seconds);
  }

  sendGroup(items: number, seconds: number): void {
    this.sendGroupSize.observe(items);
    this.sendGroupDuration.observe(seconds);
  }

  fanout(event: { type: string }, _subscribers: number): void {
    const e = event as { type: string; message?: { createdAt: Date } };
    if (e.type === 'message.new' && e.message) {
      this.deliveryLag.observe(Math.max(0, Date.now() - e.message.createdAt.getTime()) / 1000);
    }
  }
}

/** What the registry reads when scraped, from parts built after the services. */
export interface MetricsSources {
  connections: () => number;
  hubs: () => {
    rooms: number;
    subscribers: number;
    received: number;
    delivered: number;
    duplicates: number;
    gapFills: number;
    filled: number;
    gapWaits: number;
    replayQueueOverflows: number;
    replayDrainTimeouts: number;
    staleDropped: number;
  };
  inboxSubscribers: () => number;
  /** True while this node is the only one on its bus (src/realtime/redis-bus.ts). */
  busAlone: () => boolean;
  pool: () => Promise<Pool | null>;
  /** The read replicas as the read routing's last check saw them (none: no gauges). */
  replicas?: () => { name: string; status: string; lagMs: number | null }[];
}

/**
 * Prometheus metrics of one process: the telemetry the services fed plus gauges and counters read
 * from `sources` at scrape time. Labels are bounded: procedure paths, never room or user ids.
 */
export class Metrics {
  readonly registry: Registry;

  constructor(telemetry: Telemetry, sources: MetricsSources) {
    this.registry = telemetry.registry;
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'chat_process_', eventLoopMonitoringPrecision: 20 });
    const gauge = (name: string, help: string, read: () => number | Promise<number>) =>
      new Gauge({
        name,
        help,
        registers: [r],
        async collect() {
          this.set(await read());
        },
      });
    const counter = (name: string, help: string, read: () => number) => {
      let last = 0;
      return new Counter({
        name,
        help,
        registers: [r],
        collect() {
          const now = read();
          if (now > last) this.inc(now - last);
          last = now;
        },
      });
    };
    const c = telemetry.counters;
    gauge('chat_connections_open', 'Open WebSocket connections', sources.connections);
    gauge('chat_room_hubs', 'Rooms with live subscribers on this node', () => sources.hubs().rooms);
    gauge('chat_subscriptions', 'Live room subscriptions on this node', () => sources.hubs().subscribers);
    gauge('chat_inbox_subscriptions', 'Live inbox subscriptions on this node', sources.inboxSubscribers);
    counter('chat_messages_sent_total', 'Messages committed by this node', () => c.messagesSent);
    counter('chat_events_delivered_total', 'Room events pushed to local subscribers', () => sources.hubs().delivered);
    counter('chat_bus_published_total', 'Events published on the bus', () => c.busPublished);
    gauge('chat_bus_alone', 'This node is the only one on its bus (1): its publishes stay in the process', () => (sources.busAlone() ? 1 : 0));
    counter('chat_bus_errors_total', 'Bus errors: failed publishes and lost connections (repaired by gap fills)', () => c.busErrors);
    counter('chat_bus_received_total', 'Room events received from the bus by hubs', () => sources.hubs().received);
    counter('chat_bus_duplicates_total', 'Room events dropped as already delivered', () => sources.hubs().duplicates);
    counter('chat_gap_fills_total', 'Gaps in room sequences filled from PostgreSQL', () => sources.hubs().gapFills);
    counter('chat_gap_filled_events_total', 'Events delivered from PostgreSQL by gap fills', () => sources.hubs().filled);
    counter('chat_gap_waits_total', 'Gaps in room sequences closed by the bus within GAP_WAIT_MS (events out of order across nodes): no query', () => sources.hubs().gapWaits);
    counter(
      'chat_replay_queue_overflows_total',
      'Room subscriptions closed as slow consumers while replaying: more live events came meanwhile than WS_REPLAY_QUEUE_EVENTS/BYTES',
      () => sources.hubs().replayQueueOverflows,
    );
    counter(
      'chat_replay_drain_timeouts_total',
      'Room subscriptions closed as slow consumers while replaying: the socket stayed over WS_BUFFER_SOFT_BYTES for WS_REPLAY_DRAIN_MS',
      () => sources.hubs().replayDrainTimeouts,
    );
    counter(
      'chat_stale_events_dropped_total',
      'Live room events dropped by a hub as older than one delivered before (a presence read by one node arriving after a newer one of another)',
      () => sources.hubs().staleDropped,
    );
    counter('chat_webhooks_delivered_total', 'Webhook deliveries answered with a 2xx', () => c.webhooksDelivered);
    counter('chat_webhooks_failed_total', 'Webhook delivery attempts that failed (retried or given up)', () => c.webhooksFailed);
    counter('chat_pushes_sent_total', 'Web pushes accepted by a push service', () => c.pushesSent);
    counter('chat_pushes_failed_total', 'Web push attempts that failed (retried or given up)', () => c.pushesFailed);
    counter('chat_digests_sent_total', 'E-mail digests handed to the SMTP server', () => c.digestsSent);
    counter('chat_claims_lost_total', 'Webhook, push and digest outcomes not written: the lease had run out and another node had claimed the row', () => c.claimsLost);
    counter('chat_tx_retries_total', 'Transactions run again after a deadlock or a serialization failure (at most 3 attempts each)', () => c.txRetries);
    counter(
      'chat_activity_rooms_skipped_total',
      'Rooms whose room list activity needed no query: no inbox of their tenant was open on any node',
      () => c.activityRoomsSkipped,
    );
    counter(
      'chat_video_ejections_total',
      'Video call connections removed on their join webhook: the user may no longer be in the room (banned or removed after their join token was minted)',
      () => c.videoEjections,
    );
    counter('chat_video_removals_total', 'Banned or removed users taken out of every video call of their room by the provider', () => c.videoRemovals);
    counter(
      'chat_video_removals_failed_total',
      'Attempts to take a banned or removed user out of their room\'s video calls that failed (retried with backoff, or given up)',
      () => c.videoRemovalsFailed,
    );
    counter('chat_rate_limited_total', 'Calls refused by a rate limit', () => c.rateLimited);
    counter('chat_auth_failures_total', 'Calls refused for a missing or invalid token', () => c.authFailures);
    counter('chat_auth_unavailable_total', 'Tokens not verified because the identity provider keys could not be loaded', () => c.authUnavailable);
    counter('chat_origin_refused_total', 'HTTP API requests and WebSocket upgrades refused for their browser Origin', () => c.originRefused);
    counter('chat_host_refused_total', 'HTTP requests and WebSocket upgrades refused for a Host not in ALLOWED_HOSTS', () => c.hostRefused);
    counter('chat_ws_direct_writes_total', 'Fan-out frames written to sockets with ws sendFrame (the fast path)', () => c.wsDirectWrites);
    counter(
      'chat_ws_fallback_writes_total',
      'Fan-out frames written with ws.send because ws internals of the fast path were missing (should stay 0)',
      () => c.wsFallbackWrites,
    );
    const poolGauge = (name: string, help: string, read: (p: Pool) => number) =>
      gauge(name, help, async () => {
        const p = await sources.pool().catch(() => null);
        return p ? read(p) : 0;
      });
    poolGauge('chat_db_pool_total', 'PostgreSQL connections in the pool', (p) => p.totalCount);
    poolGauge('chat_db_pool_idle', 'Idle PostgreSQL connections in the pool', (p) => p.idleCount);
    poolGauge('chat_db_pool_waiting', 'Queries waiting for a PostgreSQL connection', (p) => p.waitingCount);
    counter('chat_db_replica_reads_total', 'Reads served by a PostgreSQL read replica', () => c.replicaReads);
    counter(
      'chat_db_replica_fallbacks_total',
      'Replica-capable reads served by the primary: no replica had what the caller has seen, or it failed',
      () => c.replicaFallbacks,
    );
    const replicas = sources.replicas;
    if (replicas) {
      new Gauge({
        name: 'chat_db_replica_up',
        help: 'Read replica in use (1), or skipped as down or lagging (0)',
        labelNames: ['replica'],
        registers: [r],
        collect() {
          for (const x of replicas()) this.set({ replica: x.name }, x.status === 'up' ? 1 : 0);
        },
      });
      new Gauge({
        name: 'chat_db_replica_lag_seconds',
        help: 'How far a read replica was behind the primary at its last check (-1: unknown)',
        labelNames: ['replica'],
        registers: [r],
        collect() {
          for (const x of replicas()) this.set({ replica: x.name }, x.lagMs === null ? -1 : x.lagMs / 1000);
        },
      });
    }
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
