import type { Db } from './database.js';
import { now } from './tx.js';

/** Creates or refreshes a user's row from their token's claims (name, roles, e-mail, last seen); a token without e-mail keeps the last known one. */
export async function upsertUser(db: Db, user: { tenant: string; id: string; name: string; roles: string[]; email?: string | undefined }): Promise<void> {
  await db
    .insertInto('chat_user')
    .values({ tenant: user.tenant, id: user.id, name: user.name, roles: user.roles, email: user.email ?? null, created_at: now(), last_seen_at: now() })
    .onConflict((oc) =>
      oc.columns(['tenant', 'id']).doUpdateSet((eb) => ({
        name: eb.ref('excluded.name'),
        roles: eb.ref('excluded.roles'),
        email: eb.fn.coalesce('excluded.email', 'chat_user.email'),
        last_seen_at: now(),
      })),
    )
    .execute();
}
