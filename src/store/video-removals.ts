import { type ExpressionBuilder, sql } from 'kysely';
import { clip } from '../domain/text.js';
import type { Db, Tables } from './database.js';
import { now, type Tx } from './tx.js';

/**
 * The queue of users to take out of a room's video calls (`video_removal`, src/store/entities.ts):
 * written in the transaction of a ban or removal, sent by `VideoRemovalWorker`
 * (src/services/meetings/removals.ts) on any node.
 */
export type RemovalReason = 'banned' | 'removed' | 'refused';

export interface ClaimedRemoval {
  id: number;
  room_id: string;
  tenant: string;
  user_id: string;
  reason: RemovalReason;
  /** This claim's attempt (1 for the first). */
  attempts: number;
  /**
   * Identifies the claim: set by it (to the millisecond, so that it compares equal to this JavaScript
   * Date), cleared by a new ban or removal of the same user (`queueRemoval`).
   */
  lease_until: Date;
}

/**
 * Queues the user's removal from the room's calls, due at once. A row already there (an earlier
 * ban or removal not done yet, or being sent) starts over: its attempts and lease are reset, so a
 * worker still busy with the old claim cannot delete it (`finishRemoval`) and it is sent again.
 */
export async function queueRemoval(tx: Tx, r: { roomId: string; tenant: string; userId: string; reason: RemovalReason }): Promise<void> {
  await tx.db
    .insertInto('video_removal')
    .values({ room_id: r.roomId, tenant: r.tenant, user_id: r.userId, reason: r.reason, attempts: 0, next_attempt_at: now(), created_at: now() })
    .onConflict((oc) =>
      oc.columns(['room_id', 'user_id']).doUpdateSet({ reason: r.reason, attempts: 0, next_attempt_at: now(), lease_until: null, last_error: null, created_at: now() }),
    )
    .execute();
}

/**
 * The rows a node whose video provider is `provider` may send: those of a room with a meeting whose
 * call may still run (not ended, not past its expiry) on that provider, or with no such meeting at all
 * (nothing left to do: any node finishes them). A room's calls on another provider (a provider switch
 * while meetings of the old one still run) are left to the nodes configured with it, not finished as
 * if done.
 */
const sendableBy = (provider: string) => (w: ExpressionBuilder<Tables & { r: Tables['video_removal'] }, 'r'>) => {
  const open = () =>
    w
      .selectFrom('meeting as m')
      .select('m.id')
      .whereRef('m.room_id', '=', 'r.room_id')
      .where('m.status', '<>', 'ended')
      .where('m.expires_at', '>', now());
  return w.or([w.exists(open().where('m.provider', '=', provider)), w.not(w.exists(open()))]);
};

/**
 * Claims up to `limit` due rows for `leaseMs` (attempts + 1), oldest due first, of those a node of
 * `provider` may send (`sendableBy`). FOR UPDATE SKIP LOCKED leaves rows another node is claiming;
 * the lease keeps a claimed row from being taken again until it runs out (a node that died: the row
 * is sent elsewhere).
 */
export async function claimDueRemovals(db: Db, provider: string, limit: number, leaseMs: number): Promise<ClaimedRemoval[]> {
  const rows = await db
    .updateTable('video_removal')
    .set((eb) => ({ attempts: eb('attempts', '+', 1), lease_until: sql<Date>`date_trunc('milliseconds', clock_timestamp() + ${leaseMs} * interval '1 millisecond')` }))
    .where('id', 'in', (eb) =>
      eb
        .selectFrom('video_removal as r')
        .select('r.id')
        .where(sendableBy(provider))
        .where('r.next_attempt_at', '<=', now())
        .where((w) => w.or([w('r.lease_until', 'is', null), w('r.lease_until', '<', now())]))
        .orderBy('r.next_attempt_at')
        .limit(limit)
        .forUpdate()
        .skipLocked(),
    )
    .returning(['id', 'room_id', 'tenant', 'user_id', 'reason', 'attempts', 'lease_until'])
    .execute();
  return rows as ClaimedRemoval[];
}

/**
 * How long until a row becomes claimable by a node of `provider` (`claimDueRemovals`), by the
 * database's clock: the earliest of each row's retry time and, for a claimed row, its lease's end;
 * null when there is none. A worker that found nothing due schedules its next round from this, so a
 * retry runs on time whatever the node's clock or its timers say (a timer may fire a little early, a
 * node's clock may be behind the database's: a round that comes too early must not wait for the
 * next poll). The queue holds only removals not yet made, so the scan stays small.
 */
export async function nextRemovalDueInMs(db: Db, provider: string): Promise<number | null> {
  const row = await db
    .selectFrom('video_removal as r')
    .where(sendableBy(provider))
    .select(sql<string | null>`ceil(extract(epoch from min(greatest(next_attempt_at, lease_until)) - clock_timestamp()) * 1000)`.as('ms'))
    .executeTakeFirst();
  return row?.ms == null ? null : Number(row.ms);
}

/** Done (or nothing left to do): the row goes. False when the claim no longer holds (re-queued meanwhile). */
export async function finishRemoval(db: Db, claim: Pick<ClaimedRemoval, 'id' | 'lease_until'>): Promise<boolean> {
  const res = await db.deleteFrom('video_removal').where('id', '=', claim.id).where('lease_until', '=', claim.lease_until).executeTakeFirst();
  return Number(res.numDeletedRows) > 0;
}

/** A failed attempt: due again after `retryInMs`. False when the claim no longer holds (nothing written). */
export async function retryRemoval(db: Db, claim: Pick<ClaimedRemoval, 'id' | 'lease_until'>, retryInMs: number, error: string): Promise<boolean> {
  const res = await db
    .updateTable('video_removal')
    .where('id', '=', claim.id)
    .where('lease_until', '=', claim.lease_until)
    .set({ next_attempt_at: sql<Date>`now() + ${retryInMs} * interval '1 millisecond'`, lease_until: null, last_error: clip(error, 500) })
    .executeTakeFirst();
  return Number(res.numUpdatedRows) > 0;
}
