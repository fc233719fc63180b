import { sql } from 'kysely';
import type { Db } from './database.js';
import { now } from './tx.js';

/**
 * Creates or refreshes a user's row from their token's claims (name, roles, e-mail, last seen); a
 * token without e-mail keeps the last known one. An erased user (`admin.eraseUser`) keeps the name
 * "deleted user" and no roles.
 */
export interface UserClaims {
  tenant: string;
  id: string;
  name: string;
  roles: string[];
  email?: string | undefined;
}

/**
 * Several users in one statement (the latest claims per user win; rows in key order, so two
 * statements of different nodes never wait on each other in a cycle).
 */
export async function upsertUsers(db: Db, users: readonly UserClaims[]): Promise<void> {
  const latest = new Map<string, UserClaims>();
  for (const u of users) latest.set(`${u.tenant}\u0000${u.id}`, u);
  const rows = [...latest.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, u]) => u);
  if (rows.length === 0) return;
  await db
    .insertInto('chat_user')
    .values(rows.map((user) => ({ tenant: user.tenant, id: user.id, name: user.name, roles: user.roles, email: user.email ?? null, created_at: now(), last_seen_at: now() })))
    .onConflict((oc) =>
      oc.columns(['tenant', 'id']).doUpdateSet((eb) => ({
        name: sql<string>`case when ${eb.ref('chat_user.erased_at')} is null then ${eb.ref('excluded.name')} else ${eb.ref('chat_user.name')} end`,
        roles: sql<string[]>`case when ${eb.ref('chat_user.erased_at')} is null then ${eb.ref('excluded.roles')} else ${eb.ref('chat_user.roles')} end`,
        // An erased user's address is gone for good: a later token does not bring it back.
        email: sql<string | null>`case when ${eb.ref('chat_user.erased_at')} is null then coalesce(${eb.ref('excluded.email')}, ${eb.ref('chat_user.email')}) else null end`,
        last_seen_at: now(),
      })),
    )
    .execute();
}

/** The roles of the last token the server saw of a user (none known: `[]`). */
export async function rolesOf(db: Db, tenant: string, userId: string): Promise<string[]> {
  const row = await db.selectFrom('chat_user').select('roles').where('tenant', '=', tenant).where('id', '=', userId).executeTakeFirst();
  return row?.roles ?? [];
}
