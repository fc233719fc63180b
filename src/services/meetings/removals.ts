import type { Actor } from '../../domain/actor.js';
import { AppError } from '../../domain/errors.js';
import type { Logger } from '../../logger.js';
import type { Counters } from '../../metrics.js';
import { runningMeetingsOfRoom } from '../../store/meetings.js';
import type { Store } from '../../store/store.js';
import type { Tx } from '../../store/tx.js';
import { rolesOf } from '../../store/users.js';
import {
  type ClaimedRemoval,
  claimDueRemovals,
  finishRemoval,
  nextRemovalDueInMs,
  queueRemoval,
  type RemovalReason,
  retryRemoval,
} from '../../store/video-removals.js';
import type { VideoProvider } from '../../video/provider.js';
import { PollingLoop } from '../polling.js';
import { retryDelay } from '../webhooks/worker.js';
import type { MeetingExpiry } from './expiry.js';
import type { MeetingReader } from './read.js';

/** The removal queue's settings (VIDEO_REMOVAL_*, docs/VIDEO.md "Bans and removals"). */
export interface RemovalConfig {
  /** First retry after this long, doubling (jittered), at most five minutes apart. */
  retryBaseMs: number;
  /** Attempts before a row is given up (logged at error level, counted). */
  maxAttempts: number;
  /** Due rows are looked for this often (besides the wake-up after a local commit). */
  pollMs: number;
}

/** Rows claimed per round (sent concurrently). */
const BATCH = 20;
/** A claimed row's lease: longer than a round of provider calls can take (the SDKs' timeouts). */
const LEASE_MS = 60_000;
/** Retries are at most this far apart. */
const MAX_RETRY_MS = 5 * 60_000;
/**
 * The soonest a round follows one that found nothing due: a row the database already calls due but the
 * claim skipped (locked by a ban's transaction, or claimed meanwhile by another node) is looked at again
 * this much later, not in a busy loop.
 */
const MIN_REWAKE_MS = 10;

/** What a ban or removal needs of the queue: queue in its transaction, wake after its commit. */
export type VideoRemovals = Pick<VideoRemovalWorker, 'queue' | 'wake'>;

/** What became of a queued removal: for tests and logs. */
export interface RemovalOutcome {
  roomId: string;
  userId: string;
  reason: RemovalReason;
  /**
   * `removed`: the provider took the user out of every meeting of the room whose call may still run
   * (not ended, not expired); `not_needed`: they may be in the room's calls again (unbanned and added
   * back), or no such meeting is left;
   * `retry`: a provider call failed, the row is due again later; `gave_up`: it failed `maxAttempts` times.
   */
  outcome: 'removed' | 'not_needed' | 'retry' | 'gave_up';
  attempts: number;
  error?: string;
}

/**
 * Takes banned and removed users out of their room's video calls on the provider, on every node.
 * A ban or removal queues the user in its own transaction (`queue`), so it answers without waiting
 * for the provider and the removal is never lost: a failed provider call is retried with backoff, a
 * node that dies mid-call leaves the row to another once its lease runs out. Each attempt first
 * checks the rule join tokens are minted by (`MeetingReader.meetingAccess`): a user who may be in the
 * room's calls again by then (unbanned and added back) is left alone. Its loop also ends meetings at
 * their expiry (`MeetingExpiry`), first in every round and at the next expiry: a removal then finds
 * the expired meetings ended, and asks the provider about none of them.
 */
export class VideoRemovalWorker {
  private readonly loop: PollingLoop;
  private readonly listeners = new Set<(o: RemovalOutcome) => void>();

  constructor(
    private readonly store: Store,
    /** Null when video is not configured: nothing is queued and the worker never starts. */
    private readonly provider: VideoProvider | null,
    private readonly reader: MeetingReader,
    private readonly config: RemovalConfig,
    private readonly log: Logger,
    private readonly counters: Counters,
    private readonly expiry: MeetingExpiry,
  ) {
    this.loop = new PollingLoop(() => this.round(), config.pollMs);
  }

  /**
   * In the transaction of a ban, a removal or a refused join: queues the user's removal from the
   * room's calls when video is configured and the room has a meeting whose call may still run (one
   * created after the commit cannot admit them: `video.joinToken` refuses them; an expired one's call
   * is ended at its expiry). True when a row was written: call `wake` after the commit.
   */
  async queue(tx: Tx, r: { roomId: string; tenant: string; userId: string; reason: RemovalReason }): Promise<boolean> {
    if (this.provider === null) return false;
    if ((await runningMeetingsOfRoom(tx.db, r.roomId)).length === 0) return false;
    await queueRemoval(tx, r);
    return true;
  }

  start(): void {
    if (this.provider !== null) this.loop.start();
  }

  /** Looks for due rows now (after a commit that queued one). */
  wake(): void {
    this.loop.wake();
  }

  /** Stops polling and waits for the round in flight (rows it did not finish are sent after their lease). */
  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** Calls `listener` with every outcome of this node's attempts; returns the unsubscribe. */
  onOutcome(listener: (o: RemovalOutcome) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private async round(): Promise<void> {
    try {
      await this.sweepExpired();
      while (!this.loop.stopped) {
        const rows = await claimDueRemovals(this.store.db(), this.provider!.name, BATCH, LEASE_MS);
        if (rows.length === 0) {
          // Next round when the next row is due (a retry, or a claim of a node that died), by the database's clock.
          const dueInMs = await nextRemovalDueInMs(this.store.db(), this.provider!.name);
          if (dueInMs !== null) this.loop.wakeIn(Math.max(dueInMs, MIN_REWAKE_MS));
          return;
        }
        await Promise.all(rows.map((r) => this.send(r)));
      }
    } catch (err) {
      if (!this.loop.stopped) this.log.warn({ err }, 'video removal round failed');
    }
  }

  /**
   * Ends the meetings past their expiry first (a removal then leaves them alone), and asks for a round
   * at the next expiry. Its failure is logged and keeps no removal from being sent.
   */
  private async sweepExpired(): Promise<void> {
    try {
      const expiryInMs = await this.expiry.sweep();
      if (expiryInMs !== null) this.loop.wakeIn(Math.max(expiryInMs, MIN_REWAKE_MS));
    } catch (err) {
      if (!this.loop.stopped) this.log.warn({ err }, 'video expiry sweep failed');
    }
  }

  private async send(row: ClaimedRemoval): Promise<void> {
    const provider = this.provider!;
    const about = { roomId: row.room_id, tenant: row.tenant, userId: row.user_id, reason: row.reason, attempt: row.attempts };
    const outcome = (o: RemovalOutcome['outcome'], error?: string) => {
      const event: RemovalOutcome = { roomId: row.room_id, userId: row.user_id, reason: row.reason, outcome: o, attempts: row.attempts, ...(error !== undefined ? { error } : {}) };
      for (const l of this.listeners) l(event);
    };
    try {
      // Read together, now: may the user be in the room's calls (the rule tokens are minted by), and its meetings whose calls may still run.
      const { allowed, meetings } = await this.store.transact(async (tx) => {
        const roles = await rolesOf(tx.db, row.tenant, row.user_id);
        const actor: Actor = { id: row.user_id, name: row.user_id, tenant: row.tenant, roles };
        const access = await this.reader.meetingAccess(actor, row.room_id, tx.em);
        return { allowed: !(access instanceof AppError), meetings: await runningMeetingsOfRoom(tx.db, row.room_id) };
      });
      const ours = meetings.filter((m) => {
        if (m.provider === provider.name) return true;
        this.log.warn({ meetingId: m.id, provider: m.provider, ...about }, 'the meeting runs on a provider not configured here: the user was not removed from it');
        return false;
      });
      if (allowed || ours.length === 0) {
        if (await finishRemoval(this.store.db(), row)) outcome('not_needed');
        return;
      }
      const failures = (await Promise.allSettled(ours.map((m) => provider.removeParticipant(m.id, row.user_id)))).flatMap((r, i) =>
        r.status === 'rejected' ? [{ meetingId: ours[i]!.id, err: r.reason as unknown }] : [],
      );
      if (failures.length === 0) {
        this.counters.videoRemovals++;
        if (await finishRemoval(this.store.db(), row)) outcome('removed');
        return;
      }
      this.counters.videoRemovalsFailed++;
      const error = failures.map((f) => `${f.meetingId}: ${f.err instanceof Error ? f.err.message : String(f.err)}`).join('; ');
      if (row.attempts >= this.config.maxAttempts) {
        this.log.error({ ...about, error }, 'gave up removing a banned or removed user from the room\'s video calls: the provider kept failing');
        if (await finishRemoval(this.store.db(), row)) outcome('gave_up', error);
        return;
      }
      this.log.warn({ ...about, error }, 'could not remove a banned or removed user from a meeting: retried later');
      const retryInMs = Math.min(retryDelay(this.config.retryBaseMs, row.attempts), MAX_RETRY_MS);
      if (!(await retryRemoval(this.store.db(), row, retryInMs, error))) return;
      // Sent again when due, not at the next poll: the round's next claim finds nothing due and schedules it.
      outcome('retry', error);
    } catch (err) {
      // The database failed: the row stays claimed and is sent again once its lease runs out.
      this.log.warn({ err, ...about }, 'video removal attempt failed');
    }
  }
}
