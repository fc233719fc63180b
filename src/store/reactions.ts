import { sql } from 'kysely';
import type { Reaction } from '../domain/events.js';
import type { Db } from './database.js';
import { now, type Tx } from './tx.js';

/** Adds a user's reaction; false when it was there already (nothing written). */
export async function addReaction(tx: Tx, messageId: string, userId: string, emoji: string): Promise<boolean> {
  const row = await tx.db
    .insertInto('reaction')
    .values({ message_id: messageId, user_id: userId, emoji, created_at: now() })
    .onConflict((oc) => oc.doNothing())
    .returning('emoji')
    .executeTakeFirst();
  return row !== undefined;
}

/** How many distinct emoji a message has, and how many reactions of `userId` (read under the message's lock). */
export async function reactionCounts(tx: Tx, messageId: string, userId: string): Promise<{ emojis: number; mine: number }> {
  const row = await tx.db
    .selectFrom('reaction')
    .select((eb) => [
      sql<number>`count(distinct ${eb.ref('emoji')})::int`.as('emojis'),
      sql<number>`(count(*) filter (where ${eb.ref('user_id')} = ${userId}))::int`.as('mine'),
    ])
    .where('message_id', '=', messageId)
    .executeTakeFirstOrThrow();
  return { emojis: Number(row.emojis), mine: Number(row.mine) };
}

/** Removes a user's reaction; false when there was none. */
export async function removeReaction(tx: Tx, messageId: string, userId: string, emoji: string): Promise<boolean> {
  const row = await tx.db
    .deleteFrom('reaction')
    .where('message_id', '=', messageId)
    .where('user_id', '=', userId)
    .where('emoji', '=', emoji)
    .returning('emoji')
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * Reaction summaries per message: `[{ emoji, count, me }]` in order of first use (`me` relative to
 * `viewerId`; false for everyone when null, as in broadcast events).
 */
export async function reactionSummaries(db: Db, messageIds: string[], viewerId: string | null): Promise<Map<string, Reaction[]>> {
  const out = new Map<string, Reaction[]>();
  if (messageIds.length === 0) return out;
  const rows = await db
    .selectFrom('reaction')
    .select((eb) => [
      'message_id',
      'emoji',
      eb.fn.countAll<number>().as('n'),
      eb.fn<boolean>('bool_or', [eb('user_id', '=', viewerId ?? '')]).as('me'),
      eb.fn.min('created_at').as('first'),
    ])
    .where('message_id', 'in', messageIds)
    .groupBy(['message_id', 'emoji'])
    .orderBy('message_id')
    .orderBy('first')
    .orderBy('emoji')
    .execute();
  for (const r of rows) {
    let list = out.get(r.message_id);
    if (!list) {
      list = [];
      out.set(r.message_id, list);
    }
    list.push({ emoji: r.emoji, count: r.n, me: r.me });
  }
  return out;
}
