import type { Actor } from '../domain/actor.js';
import type { Store } from '../store/store.js';
import { type UserClaims, upsertUsers } from '../store/hot/connect.js';
import { SendBatcher } from './send-batcher.js';

/**
 * Users are owned by the embedding product; this keeps a row per (tenant, id) up to date from the
 * token's claims, at most once a minute per identity and process.
 */
export class UserService {
  private readonly recent = new Map<string, number>();

  /** Upserts of users connecting at the same time go in one statement (a reconnect wave). */
  private readonly writes: SendBatcher<UserClaims, undefined>;

  constructor(private readonly store: Store) {
    this.writes = new SendBatcher(async (users) => {
      await upsertUsers(this.store.hot, users);
      return users.map(() => undefined);
    });
  }

  async touch(actor: Actor): Promise<void> {
    const key = `${actor.tenant}\u0000${actor.id}\u0000${actor.name}\u0000${actor.roles.join(',')}\u0000${actor.email ?? ''}`;
    const now = Date.now();
    const seen = this.recent.get(key);
    if (seen && now - seen < 60_000) return;
    await this.writes.submit({ tenant: actor.tenant, id: actor.id, name: actor.name, roles: actor.roles, email: actor.email });
    if (this.recent.size > 10_000) this.recent.clear();
    this.recent.set(key, now);
  }
}
