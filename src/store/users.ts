import type { Db } from './database.js';

// A user's row is created and refreshed from their token's claims by `upsertUsers`
// (src/store/hot/connect.ts: one prepared statement for the users connecting at once).

/** The roles of the last token the server saw of a user (none known: `[]`). */
export async function rolesOf(db: Db, tenant: string, userId: string): Promise<string[]> {
  const row = await db.selectFrom('chat_user').select('roles').where('tenant', '=', tenant).where('id', '=', userId).executeTakeFirst();
  return row?.roles ?? [];
}
