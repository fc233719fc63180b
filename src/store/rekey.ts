import type { Db } from './database.js';
import type { Tx } from './tx.js';

/**
 * The queries of the re-encryption job (src/services/rekey.ts): keyset pages, in primary key order,
 * over the rows that hold a body or secret sealed with MESSAGE_KEYS. A page is locked for update in
 * the transaction that rewrites it, so an edit or delete of the same message waits for it (and the
 * job never writes over a newer body).
 */

/** A sealed body and what it is bound to (`message:<roomId>:<messageId>`). */
export interface SealedBody {
  id: string;
  /** The message the body belongs to (itself for a message, the edited one for an edit). */
  message_id: string;
  room_id: string;
  body: string;
  key_id: string;
}

/** Messages after `afterId` whose body is sealed, locked (step 1 of the lock order in tx.ts). */
export async function lockSealedMessages(tx: Tx, afterId: string | null, limit: number): Promise<SealedBody[]> {
  tx.lockForUpdate('message');
  let q = tx.db
    .selectFrom('message')
    .select(['id', 'id as message_id', 'room_id', 'body', 'key_id'])
    .where('key_id', 'is not', null)
    .where('body', 'is not', null);
  if (afterId) q = q.where('id', '>', afterId);
  const rows = await q.orderBy('id').limit(limit).forUpdate().execute();
  return rows as SealedBody[];
}

/** Earlier versions of messages after `afterId` whose body is sealed, locked with their message. */
export async function lockSealedEdits(tx: Tx, afterId: string | null, limit: number): Promise<SealedBody[]> {
  tx.lockForUpdate('message');
  let q = tx.db
    .selectFrom('message_edit as e')
    .innerJoin('message as m', 'm.id', 'e.message_id')
    .select(['e.id', 'e.message_id', 'm.room_id', 'e.body', 'e.key_id'])
    .where('e.key_id', 'is not', null)
    .where('e.body', 'is not', null);
  if (afterId) q = q.where('e.id', '>', afterId);
  const rows = await q.orderBy('e.id').limit(limit).forUpdate().execute();
  return rows as SealedBody[];
}

/** Replaces a message's sealed body; its edit time stays (the text did not change). */
export async function resealMessage(tx: Tx, id: string, body: string, keyId: string): Promise<void> {
  await tx.db.updateTable('message').set({ body, key_id: keyId }).where('id', '=', id).execute();
}

export async function resealEdit(tx: Tx, id: string, body: string, keyId: string): Promise<void> {
  await tx.db.updateTable('message_edit').set({ body, key_id: keyId }).where('id', '=', id).execute();
}

/** Webhook endpoints after `afterId` (their secret is sealed or plain), locked. */
export function lockWebhookSecrets(tx: Tx, afterId: string | null, limit: number): Promise<{ id: string; tenant: string; secret: string }[]> {
  let q = tx.db.selectFrom('webhook_endpoint').select(['id', 'tenant', 'secret']);
  if (afterId) q = q.where('id', '>', afterId);
  return q.orderBy('id').limit(limit).forUpdate().execute();
}

export async function setWebhookSecret(tx: Tx, id: string, secret: string): Promise<void> {
  await tx.db.updateTable('webhook_endpoint').set({ secret }).where('id', '=', id).execute();
}

/** How many sealed rows each key id still holds (message bodies and earlier versions). */
export async function sealedRowsByKey(db: Db): Promise<Record<string, number>> {
  const [messages, edits] = await Promise.all([
    db
      .selectFrom('message')
      .select((eb) => ['key_id', eb.fn.countAll<number>().as('n')])
      .where('key_id', 'is not', null)
      .groupBy('key_id')
      .execute(),
    db
      .selectFrom('message_edit')
      .select((eb) => ['key_id', eb.fn.countAll<number>().as('n')])
      .where('key_id', 'is not', null)
      .groupBy('key_id')
      .execute(),
  ]);
  const out: Record<string, number> = {};
  for (const r of [...messages, ...edits]) out[r.key_id!] = (out[r.key_id!] ?? 0) + Number(r.n);
  return out;
}

/** Every webhook secret as stored (sealed or plain): the service reads their key ids. */
export async function webhookSecrets(db: Db): Promise<string[]> {
  return (await db.selectFrom('webhook_endpoint').select('secret').execute()).map((r) => r.secret);
}
