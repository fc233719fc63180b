import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { fileServer, presenceRoomsOfUsers, upsertUsers } from './fixture.js';

/**
 * The two statements of users coming online (src/store/hot/connect.ts), each through a named
 * prepared statement and without one (DB_PREPARED_STATEMENTS=0, behind PgBouncer): the same rows.
 */
const srv = fileServer('connect-statements');
const sql = <R = Record<string, unknown>>(text: string, params: unknown[] = []) => srv.env.sql<R>(text, params);

async function room(tenant: string, members: string[]): Promise<string> {
  const id = randomUUID();
  await sql(`insert into room (id, tenant, kind, name, created_by, created_at, updated_at) values ($1, $2, 'group', $3, 'owner', now(), now())`, [id, tenant, `r-${id}`]);
  for (const m of members) await sql(`insert into membership (room_id, user_id, role, joined_at) values ($1, $2, 'member', now())`, [id, m]);
  return id;
}

for (const prepared of [true, false]) {
  const ctx = () => ({ orm: srv.app.db.orm, prepared });
  const tag = `${prepared ? 'prepared' : 'unprepared'}-${randomUUID().slice(0, 8)}`;

  describe(`connect statements (${prepared ? 'named prepared statements' : 'no prepared statements'})`, () => {
    it('presence rooms: only rooms of the tenant with at most maxMembers members, per user; the same user twice counts once', async () => {
      const tenant = `t-${tag}`;
      const small = await room(tenant, ['ann', 'bob']);
      const big = await room(tenant, ['ann', 'bob', 'cy', 'dee']);
      const other = await room(`${tenant}-other`, ['ann']);
      const rooms = await presenceRoomsOfUsers(ctx(), tenant, ['ann', 'bob', 'ann', 'nobody'], 3);
      expect([...rooms.keys()].sort()).toEqual(['ann', 'bob']);
      expect(rooms.get('ann')).toEqual([small]);
      expect(rooms.get('bob')).toEqual([small]);
      // At four members allowed, the big room gets them too; the room of another tenant never does.
      const all = await presenceRoomsOfUsers(ctx(), tenant, ['ann'], 4);
      expect(all.get('ann')!.sort()).toEqual([small, big].sort());
      expect(all.get('ann')).not.toContain(other);
      expect((await presenceRoomsOfUsers(ctx(), tenant, [], 3)).size).toBe(0);
      expect((await presenceRoomsOfUsers(ctx(), tenant, ['ann'], 0)).size).toBe(0);
    });

    it("users: created, then refreshed from the latest claims (roles array, e-mail kept when a token has none); an erased user's row stays erased", async () => {
      const tenant = `t-${tag}`;
      const rowOf = async (id: string) =>
        (await sql<{ name: string; roles: string[]; email: string | null }>('select name, roles, email from chat_user where tenant = $1 and id = $2', [tenant, id]))[0];
      await upsertUsers(ctx(), [
        { tenant, id: 'u1', name: 'First', roles: ['a'], email: 'u1@example.com' },
        { tenant, id: 'u2', name: 'Two', roles: [] },
        // The same user twice in one group: the later claims win.
        { tenant, id: 'u1', name: 'Latest', roles: ['a', 'b'], email: 'u1@example.com' },
      ]);
      expect(await rowOf('u1')).toEqual({ name: 'Latest', roles: ['a', 'b'], email: 'u1@example.com' });
      expect(await rowOf('u2')).toEqual({ name: 'Two', roles: [], email: null });
      await upsertUsers(ctx(), [{ tenant, id: 'u1', name: 'Renamed', roles: [] }]);
      expect(await rowOf('u1')).toEqual({ name: 'Renamed', roles: [], email: 'u1@example.com' });
      await sql(`update chat_user set name = 'deleted user', roles = '{}', email = null, erased_at = now() where tenant = $1 and id = 'u2'`, [tenant]);
      await upsertUsers(ctx(), [{ tenant, id: 'u2', name: 'Back', roles: ['admin'], email: 'u2@example.com' }]);
      expect(await rowOf('u2')).toEqual({ name: 'deleted user', roles: [], email: null });
      await upsertUsers(ctx(), []);
    });
  });
}
