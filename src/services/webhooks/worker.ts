import { PollingLoop } from '../polling.js';
import type { SecretBox, SecretOwner } from './secrets.js';
import type { WebhookConfig } from '../../config.js';
import type { WebhookPayload } from '../../domain/webhooks.js';
import type { Logger } from '../../logger.js';
import type { Counters } from '../../metrics.js';
import type { Store } from '../../store/store.js';
import { type ClaimedDelivery, claimDue, endpointForDelivery, markDelivered, markFailed, pruneDeliveries } from '../../store/webhooks.js';
import type { RoomEventSource } from '../room-events.js';
import { postWebhook, signedHeaders, type SendResult } from './sender.js';

/** Rows claimed per round (sent concurrently; rows of one room and endpoint are never in one round). */
const BATCH = 20;
/** An endpoint that failed without a success for this long is disabled. */
export const DISABLE_AFTER_MS = 24 * 3600_000;
/** Finished deliveries are kept this long (for `webhook.deliveries`), then pruned. */
export const KEEP_FINISHED_MS = 7 * 24 * 3600_000;
const PRUNE_EVERY_MS = 10 * 60_000;

/** Delay before attempt `attempts + 1`: base * 2^(attempts-1), capped at a day, with ±20% jitter. */
export function retryDelay(baseMs: number, attempts: number, random = Math.random): number {
  const raw = Math.min(baseMs * 2 ** Math.min(attempts - 1, 30), 24 * 3600_000);
  return Math.round(raw * (0.8 + 0.4 * random()));
}

export interface WebhookWorkerOptions {
  /** The node's clock (default Date.now): what a claim's deadline is counted by. */
  now?: () => number;
}

/**
 * Sends the webhook outbox, on every node: polls for due rows every `pollMs`, and is woken after a
 * local commit that wrote outbox rows. A row is claimed with a lease (src/store/webhooks.ts) longer
 * than a request can take, so a node that dies mid-request leaves it to be retried elsewhere once
 * the lease runs out: at least once, never lost. The requests of a claimed batch must have ended
 * `timeoutMs` after the claim (the reads before a request count too), so a node never sends a row
 * whose lease may have passed to another node meanwhile.
 */
export class WebhookWorker {
  private readonly loop: PollingLoop;
  private readonly abort = new AbortController();
  private prunedAt = 0;
  private readonly now: () => number;

  constructor(
    private readonly store: Store,
    private readonly events: RoomEventSource,
    private readonly config: WebhookConfig,
    private readonly log: Logger,
    private readonly counters: Counters,
    private readonly secrets: SecretBox,
    options: WebhookWorkerOptions = {},
  ) {
    this.loop = new PollingLoop(() => this.round(), config.pollMs);
    this.now = options.now ?? Date.now;
  }

  /** The lease of a claimed row: a request's timeout plus room for the bookkeeping. */
  get leaseMs(): number {
    return this.config.timeoutMs + 5000;
  }

  start(): void {
    this.loop.start();
  }

  /** Looks for due rows now (after a commit that wrote some). */
  wake(): void {
    this.loop.wake();
  }

  /** Stops polling, aborts requests in flight (their rows are retried after the lease) and waits for the round. */
  async stop(): Promise<void> {
    const done = this.loop.stop();
    this.abort.abort();
    await done;
  }

  private get stopped(): boolean {
    return this.loop.stopped;
  }

  /** Claims and sends due rows until none is left. */
  private async round(): Promise<void> {
    try {
      if (Date.now() - this.prunedAt > PRUNE_EVERY_MS) {
        this.prunedAt = Date.now();
        // Short batches, each its own statement, until the backlog is gone (bounded per round).
        for (let i = 0; i < 100 && !this.stopped; i++) if ((await pruneDeliveries(this.store.db(), KEEP_FINISHED_MS, 1000)) < 1000) break;
      }
      while (!this.stopped) {
        // Taken before the claim (the lease, from the database's now(), ends no earlier than `leaseMs`
        // after it), as for pushes and digests: the requests of the batch must have ended by `by`.
        const claimedAt = this.now();
        const rows = await claimDue(this.store.db(), BATCH, this.leaseMs);
        if (rows.length === 0) return;
        const by = claimedAt + this.config.timeoutMs;
        // Every delivery of the batch ends before the round goes on or ends (`stop` waits for the
        // round): one that throws (a database error) must not leave the others running untracked.
        const outcomes = await Promise.allSettled(rows.map((r) => this.deliver(r, by)));
        const failed = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
        if (failed) throw failed.reason;
        // Delivered rows may have released later rows of their rooms.
        this.loop.wake();
      }
    } catch (err) {
      if (!this.stopped) this.log.warn({ err }, 'webhook round failed');
    }
  }

  private openSecret(stored: string, owner: SecretOwner): string | null {
    try {
      return this.secrets.open(stored, owner);
    } catch (err) {
      this.log.warn({ err }, 'cannot open a webhook secret');
      return null;
    }
  }

  /**
   * `by`: when the request must have ended (this node's clock), before the claim's lease can run out:
   * the reads before it (the endpoint, the event) count against it too.
   */
  private async deliver(row: ClaimedDelivery, by: number): Promise<void> {
    const db = this.store.db();
    const endpoint = await endpointForDelivery(db, row.endpoint_id);
    if (!endpoint) return; // deleted meanwhile: its rows went with it
    let result: SendResult;
    const data = row.seq === null ? row.data : ((await this.events.load(row.room_id, row.seq - 1, row.seq, 1))[0] ?? null);
    if (data === null) {
      result = { ok: false, statusCode: null, error: 'the event no longer exists (removed by retention or with its room)' };
    } else {
      const payload: WebhookPayload = { type: row.event_type, timestamp: row.created_at.toISOString(), tenant: row.tenant, data };
      const body = JSON.stringify(payload);
      const secret = this.openSecret(endpoint.secret, endpoint);
      if (secret === null) {
        result = {
          ok: false,
          statusCode: null,
          error: "the endpoint's secret cannot be opened: sealed with a key that is not in MESSAGE_KEYS, or for another endpoint: rotate it",
        };
      } else {
        // What is left of the deadline: none, and the row is left to its lease (another claim sends
        // it) rather than sent by a node whose claim may be another's by the time the request ends.
        const left = by - this.now();
        if (left <= 0) {
          this.log.warn(
            { webhook: row.endpoint_id, delivery: row.id, attempt: row.attempts },
            'webhook not sent: its deadline passed before the request (retried after the lease)',
          );
          return;
        }
        result = await postWebhook(endpoint.url, signedHeaders(secret, row.event_id, body, new Date()), body, {
          timeoutMs: Math.min(this.config.timeoutMs, left),
          allowPrivate: this.config.allowPrivateUrls,
          signal: this.abort.signal,
        });
      }
    }
    if (this.stopped && !result.ok) return; // aborted by shutdown: retried after the lease, not counted
    if (result.ok) {
      this.counters.webhooksDelivered++;
      if (!(await markDelivered(db, { id: row.id, attempts: row.attempts, endpointId: row.endpoint_id, statusCode: result.statusCode }))) this.lostClaim(row);
      return;
    }
    this.counters.webhooksFailed++;
    const gone = data === null;
    const retryInMs = gone || row.attempts >= this.config.maxAttempts ? null : retryDelay(this.config.retryBaseMs, row.attempts);
    const disabled = await markFailed(db, {
      id: row.id,
      attempts: row.attempts,
      endpointId: row.endpoint_id,
      error: result.error,
      statusCode: result.statusCode,
      retryInMs,
      disableAfterMs: DISABLE_AFTER_MS,
      // An event removed (with its room, by retention) before its request is no failure of the
      // endpoint: it must not start the clock that disables a healthy endpoint after 24 hours.
      endpointAtFault: !gone,
    });
    if (disabled === null) this.lostClaim(row);
    else if (disabled) this.log.warn({ webhook: row.endpoint_id }, 'webhook disabled: its deliveries failed for 24 hours');
  }

  /** The lease ran out before the outcome was written and another node claimed the row: its outcome stands. */
  private lostClaim(row: ClaimedDelivery): void {
    this.counters.claimsLost++;
    this.log.info({ webhook: row.endpoint_id, delivery: row.id, attempt: row.attempts }, 'webhook outcome not recorded: the lease ran out and another node claimed the row');
  }
}
