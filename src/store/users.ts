import type { Db } from './database.js';

// A user's row is created and refreshed from their token's claims by `upsertUsers`
// (src/store/hot/connect.ts: one prepared statement for the users connecting at once).

/** The roles of the last token the server saw of a user (none known: `[]`). */
export async function rolesOf(db: Db, tenant: string, userId: string): Promise<string[]> {
  const row = await db.selectFrom('chat_user').select('roles').where('tenant', '=', tenant).where('id', '=', userId).executeTakeFirst();
  return row?.roles ?? [];
}

/** Tenants that have users, at most `limit` (those the server has seen tokens of: each user's row comes from one). */
export async function tenantsWithUsers(db: Db, limit: number): Promise<string[]> {
  const rows = await db.selectFrom('chat_user').select('tenant').distinct().limit(limit).execute();
  return rows.map((r) => r.tenant);
}
