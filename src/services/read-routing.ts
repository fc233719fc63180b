import type { Logger } from '../logger.js';
import type { Counters } from '../metrics.js';
import type { Db, Replica } from '../store/database.js';
import { roomLastSeq } from '../store/room-events.js';
import { primaryLsn, replayState } from '../store/replication.js';
import type { Store } from '../store/store.js';
import { withTimeout } from '../util/async.js';

/** How a replica stands at the last check: `up` (used), `lagging` (further behind than the bound), `down`. */
export type ReplicaStatus = 'up' | 'lagging' | 'down';

export interface ReplicaHealth {
  name: string;
  status: ReplicaStatus;
  /** How far behind the primary it was at the last check (null: unknown, e.g. down). */
  lagMs: number | null;
}

interface ReplicaState {
  replica: Replica;
  status: ReplicaStatus;
  lagMs: number | null;
}

/** A primary WAL position and when it was read. */
interface Sample {
  lsn: bigint;
  at: number;
}

/** A check of one server gives up after this long (the replica counts as down). */
const CHECK_TIMEOUT_MS = 1500;
/** A position the primary may not have reached: reads after a write whose position is unknown go to the primary. */
const UNKNOWN_POSITION = (1n << 64n) - 1n;

/**
 * The one place that decides where a read goes: the primary or a streaming replica. Without
 * replicas every read goes to the primary, as before. With them, the named read paths (history,
 * threads, search, room lists, replays) ask here, and the rule is "never older than what the
 * caller has seen":
 *
 * - A read of one room names the room's position the caller may have seen: the room's last seq as
 *   the access check read it on the primary (every durable change of a room takes the room's next
 *   seq, so this covers the caller's own sends, edits and reactions, and every event any node has
 *   delivered), or the upper end of a replay. A replica serves it only if its copy of the room is at
 *   that seq or later; otherwise the primary does.
 * - A read across rooms (room list, search of every room) is served by a replica only if it has
 *   replayed the caller's last write through this node (its WAL position, taken after the write
 *   committed: `wrote`).
 * - A replica that is down, or further behind than `maxLagMs`, is skipped; a replica that fails a
 *   read is skipped until the next check and the read is done again on the primary.
 *
 * Writes and access checks never come here: they always run on the primary.
 */
export class ReadRouting {
  private readonly states: ReplicaState[];
  private readonly samples: Sample[] = [];
  /** Per caller, the primary's WAL position after their last write through this node. */
  private readonly fences = new Map<string, Sample>();
  private timer: NodeJS.Timeout | null = null;
  private readonly checkMs: number;
  /** How many primary positions are kept to date a replica's replay position: a little more than the lag bound's worth. */
  private readonly maxSamples: number;
  private checking: Promise<void> | null = null;
  private next = 0;
  private lsnNow: Promise<bigint> | null = null;
  private lsnNext: Promise<bigint> | null = null;

  constructor(
    private readonly store: Store,
    replicas: Replica[],
    private readonly opts: { maxLagMs: number; checkMs?: number },
    private readonly counters: Counters,
    private readonly log: Logger,
  ) {
    this.states = replicas.map((replica) => ({ replica, status: 'down', lagMs: null }));
    this.checkMs = opts.checkMs ?? Math.max(100, Math.min(1000, Math.floor(opts.maxLagMs / 4)));
    this.maxSamples = Math.ceil(opts.maxLagMs / this.checkMs) + 8;
  }

  /** Whether any replica is configured. */
  get enabled(): boolean {
    return this.states.length > 0;
  }

  /** Starts the periodic checks (and runs the first one). */
  async start(): Promise<void> {
    if (!this.enabled) return;
    await this.check();
    this.timer = setInterval(() => void this.check(), this.checkMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** The replicas as the last check saw them (what /readyz and the metrics show). */
  health(): ReplicaHealth[] {
    return this.states.map((s) => ({ name: s.replica.name, status: s.status, lagMs: s.lagMs }));
  }

  /**
   * Checks every replica: up, and how far behind. A replica's lag is the age of the newest primary
   * position it has replayed (0 when it has the latest one).
   */
  check(): Promise<void> {
    this.checking ??= this.runCheck().finally(() => {
      this.checking = null;
    });
    return this.checking;
  }

  private async runCheck(): Promise<void> {
    try {
      const lsn = await withTimeout(primaryLsn(this.store.db()), CHECK_TIMEOUT_MS, 'primary WAL position');
      this.samples.push({ lsn, at: Date.now() });
      if (this.samples.length > this.maxSamples) this.samples.shift();
    } catch {
      // The primary is out of reach: the replicas are dated against the positions seen before.
    }
    await Promise.all(this.states.map((s) => this.checkReplica(s)));
    const horizon = Date.now() - 2 * this.opts.maxLagMs - 60_000;
    for (const [key, fence] of this.fences) if (fence.at < horizon) this.fences.delete(key);
  }

  private async checkReplica(s: ReplicaState): Promise<void> {
    const before = s.status;
    try {
      const r = await withTimeout(replayState(s.replica.db()), CHECK_TIMEOUT_MS, `${s.replica.name} replay position`);
      if (!r.standby || r.lsn === null) throw new Error('not a standby (promoted, or not replicating)');
      const replayed = this.samples.findLast((p) => p.lsn <= r.lsn!);
      s.lagMs = replayed ? Math.max(0, Date.now() - replayed.at) : null;
      s.status = s.lagMs !== null && s.lagMs <= this.opts.maxLagMs ? 'up' : 'lagging';
    } catch (err) {
      s.status = 'down';
      s.lagMs = null;
      if (before !== 'down') this.log.warn({ err, replica: s.replica.name }, 'read replica unreachable: its reads go to the primary');
      return;
    }
    if (before !== s.status) this.log.info({ replica: s.replica.name, status: s.status, lagMs: s.lagMs }, 'read replica status changed');
  }

  /** A replica in use, taking turns; null when none is. */
  private pick(): ReplicaState | null {
    for (let i = 0; i < this.states.length; i++) {
      const s = this.states[(this.next + i) % this.states.length]!;
      if (s.status === 'up') {
        this.next = (this.next + i + 1) % this.states.length;
        return s;
      }
    }
    return null;
  }

  /**
   * A read of one room that must include the room's seq `atLeast` (the room's position the caller
   * may have seen): on a replica that has it, else on the primary.
   */
  room<T>(roomId: string, atLeast: number, read: (db: Db) => Promise<T>): Promise<T> {
    return this.route(read, async (db) => (await roomLastSeq(db, roomId)) >= atLeast);
  }

  /**
   * A read across rooms for the caller `userKey`: on a replica that has replayed the caller's last
   * write through this node, else on the primary.
   */
  user<T>(userKey: string, read: (db: Db) => Promise<T>): Promise<T> {
    const fence = this.fences.get(userKey);
    return this.route(read, fence ? async (db) => ((await replayState(db)).lsn ?? 0n) >= fence.lsn : null);
  }

  private async route<T>(read: (db: Db) => Promise<T>, hasIt: ((db: Db) => Promise<boolean>) | null): Promise<T> {
    const s = this.enabled ? this.pick() : null;
    if (!s) return read(this.store.db());
    let fresh = false;
    try {
      const db = s.replica.db();
      fresh = hasIt ? await hasIt(db) : true;
      if (fresh) {
        const out = await read(db);
        this.counters.replicaReads++;
        return out;
      }
    } catch (err) {
      // Down since the last check, or a query cancelled by the replay: skip it until the next check.
      s.status = 'down';
      s.lagMs = null;
      this.log.warn({ err, replica: s.replica.name }, 'read replica failed a read: reading the primary');
    }
    this.counters.replicaFallbacks++;
    return read(this.store.db());
  }

  /**
   * Called after a write of `userKey` committed: their next reads across rooms (on this node) wait
   * for no replica that has not replayed it. Resolves once the position is known.
   */
  async wrote(userKey: string): Promise<void> {
    if (!this.enabled) return;
    let lsn: bigint;
    try {
      lsn = await this.positionAfterNow();
    } catch {
      lsn = UNKNOWN_POSITION;
    }
    const prev = this.fences.get(userKey);
    this.fences.set(userKey, { lsn: prev && prev.lsn > lsn ? prev.lsn : lsn, at: Date.now() });
  }

  /**
   * The primary's WAL position read by a query that started after this call: concurrent writers
   * share one query, but never one that began before their commit.
   */
  private positionAfterNow(): Promise<bigint> {
    if (!this.lsnNow) {
      this.lsnNow = primaryLsn(this.store.db()).finally(() => {
        this.lsnNow = null;
      });
      return this.lsnNow;
    }
    this.lsnNext ??= this.lsnNow
      .catch(() => 0n)
      .then(() => {
        this.lsnNext = null;
        return this.positionAfterNow();
      });
    return this.lsnNext;
  }
}
