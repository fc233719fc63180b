import type { Actor } from '../../domain/actor.js';
import type { Logger } from '../../logger.js';
import { forgetDeletedMeetings, lockProviderMeeting, markMeetingEnded, meetingsByExpiry } from '../../store/meetings.js';
import type { Store } from '../../store/store.js';
import type { VideoProvider } from '../../video/provider.js';
import { markEnded } from './status.js';

/** Expired meetings ended per sweep (their provider rooms are asked concurrently). */
const BATCH = 20;
/** How often (at most, per process) a sweep forgets the deleted rooms' meetings kept past their time. */
const FORGET_EVERY_MS = 3_600_000;

/** What became of an expired meeting a sweep ended: for tests and logs. */
export interface ExpiryOutcome {
  meetingId: string;
  /** `ended`: marked ended and its provider room ended; `failed`: marked ended, the provider call failed. */
  outcome: 'ended' | 'failed';
  error?: string;
}

/**
 * Ends meetings at their expiry, on the provider too. A meeting past its expiry reads as ended, so no
 * call may run on past it: Daily ejects everyone at the room's `exp` by itself, but LiveKit has no
 * maximum duration for a room (it closes one only once it is empty), so a call whose people stay
 * would run on. Run on every node by the video removal worker's loop (`VideoRemovalWorker`), which
 * wakes at the next expiry. Each expired meeting is marked ended once (the first node to lock it),
 * at its expiry, then its provider room is ended after that commit (`endRoom`: everyone in it is
 * disconnected). A provider failure is logged; `video.end` of the meeting asks the provider again.
 * Its sweeps also forget the deleted rooms' meetings kept for the webhooks once their tokens have expired
 * (a sweep returns once that is done too: the worker's stop, waiting for its round, waits for it).
 */
export class MeetingExpiry {
  private readonly listeners = new Set<(o: ExpiryOutcome) => void>();
  private lastForget = 0;

  constructor(
    private readonly store: Store,
    /** Null when video is not configured: the sweep has nothing to do. */
    private readonly provider: VideoProvider | null,
    private readonly log: Logger,
  ) {}

  /** Calls `listener` with every outcome of this node's sweeps; returns the unsubscribe. */
  onOutcome(listener: (o: ExpiryOutcome) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Ends the expired meetings of this node's provider (at most a batch) and returns the milliseconds
   * until the next one expires by the database's clock: 0 when a full batch was ended (more may be
   * due), null when none is left to wait for. Meetings on another provider are left to its nodes.
   */
  async sweep(): Promise<number | null> {
    const provider = this.provider;
    if (provider === null) return null;
    // Alongside the ending, and part of the sweep: the worker's stop waits for the round in flight,
    // so no forget is left running against the database at shutdown.
    let forgetting: Promise<void> | null = null;
    if (Date.now() - this.lastForget >= FORGET_EVERY_MS) {
      this.lastForget = Date.now();
      forgetting = this.forgetDeletedMeetings().then(
        () => undefined,
        (err: unknown) => this.log.warn({ err }, 'could not forget the deleted rooms\' meetings kept past their time'),
      );
    }
    try {
      const rows = await meetingsByExpiry(this.store.db(), provider.name, BATCH);
      const due = rows.filter((r) => r.dueInMs <= 0);
      const ended = await Promise.all(due.map((r) => this.end(provider, r.id)));
      const next = rows.find((r) => r.dueInMs > 0);
      if (next) return next.dueInMs;
      return rows.length === BATCH && ended.some(Boolean) ? 0 : null;
    } finally {
      await forgetting;
    }
  }

  /**
   * Forgets the meetings of deleted rooms kept for the webhooks (`deleted_meeting`) past their time:
   * every join token of theirs has expired. A sweep runs it at most once an hour per process; the
   * webhooks read only the rows still in their time, so a row left over a while longer changes nothing.
   * Returns how many were forgotten.
   */
  forgetDeletedMeetings(): Promise<number> {
    return forgetDeletedMeetings(this.store.db());
  }

  /** Marks one expired meeting ended and ends its provider room; false when it was not marked (ended meanwhile, or a failure). */
  private async end(provider: VideoProvider, meetingId: string): Promise<boolean> {
    let moved: boolean;
    try {
      moved = await this.store.transact(async (tx) => {
        // Locked like a webhook locks it: of concurrent sweeps (and a webhook ending it), one ends it.
        const m = await lockProviderMeeting(tx, meetingId, provider.name);
        if (!m || m.status === 'ended') return false;
        const creator: Actor = { id: m.created_by, name: m.created_by, tenant: m.tenant, roles: [] };
        // Ended at its expiry, as it read since. A meeting that went live wrote `Meeting ... started`,
        // so it gets its `ended` message too; one nobody was seen in ends without one.
        if (m.status === 'live') await markEnded(tx, m.id, m.expires_at, creator);
        else await markMeetingEnded(tx, m.id, m.expires_at, creator.id);
        return true;
      });
    } catch (err) {
      this.log.warn({ err, meetingId }, 'could not end an expired meeting: retried at the next sweep');
      return false;
    }
    if (!moved) return false;
    const emit = (o: ExpiryOutcome) => {
      for (const l of this.listeners) l(o);
    };
    try {
      await provider.endRoom(meetingId);
    } catch (err) {
      this.log.warn({ err, meetingId }, 'could not end the provider room of an expired meeting: video.end asks the provider again');
      emit({ meetingId, outcome: 'failed', error: err instanceof Error ? err.message : String(err) });
      return true;
    }
    emit({ meetingId, outcome: 'ended' });
    return true;
  }
}
