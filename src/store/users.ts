import type { Db } from './database.js';
import { now } from './tx.js';

/** Creates or refreshes a user's row from their token's claims (name, roles, last seen). */
export async function upsertUser(db: Db, user: { tenant: string; id: string; name: string; roles: string[] }): Promise<void> {
  await db
    .insertInto('chat_user')
    .values({ tenant: user.tenant, id: user.id, name: user.name, roles: user.roles, created_at: now(), last_seen_at: now() })
    .onConflict((oc) =>
      oc.columns(['tenant', 'id']).doUpdateSet((eb) => ({ name: eb.ref('excluded.name'), roles: eb.ref('excluded.roles'), last_seen_at: now() })),
    )
    .execute();
}
