import type { Actor } from '../domain/actor.js';
import { type Deps, em as fork, sql } from './deps.js';

/**
 * Users are owned by the embedding product; this keeps a row per (tenant, id) up to date from the
 * token's claims, at most once a minute per identity and process.
 */
export class UserService {
  private readonly recent = new Map<string, number>();

  constructor(private readonly deps: Deps) {}

  async touch(actor: Actor): Promise<void> {
    const key = `${actor.tenant}\u0000${actor.id}\u0000${actor.name}\u0000${actor.roles.join(',')}`;
    const now = Date.now();
    const seen = this.recent.get(key);
    if (seen && now - seen < 60_000) return;
    // MikroORM inlines an array parameter as a comma list, hence `array[?]::text[]` (also for []).
    await sql(
      fork(this.deps),
      `insert into chat_user (tenant, id, name, roles, created_at, last_seen_at) values (?, ?, ?, array[?]::text[], now(), now())
       on conflict (tenant, id) do update set name = excluded.name, roles = excluded.roles, last_seen_at = now()`,
      [actor.tenant, actor.id, actor.name, actor.roles],
    );
    if (this.recent.size > 10_000) this.recent.clear();
    this.recent.set(key, now);
  }
}
