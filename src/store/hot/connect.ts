import { type HotContext, hotQuery } from './query.js';

/**
 * Why hand-written: the two statements of a user coming online, grouped by their batchers over the
 * users connecting at the same time (a reconnect wave after a deploy is thousands at once). Built
 * with the query builder, each group was a new statement text (an `in` list, a `values` list as long
 * as the group): the builder compiled it on every call and PostgreSQL parsed and planned it every
 * time. Measured (docs/BENCHMARKS.md, "Issue 18, thirteenth pass"): `npm run bench:statement` gives
 * PostgreSQL 250 -> 200 µs per presence call and 190 -> 140 µs per user upsert (groups of 1-3 users
 * of a room of 5,000); the query builder was 29 µs of our CPU per connect (`npm run bench -- --perf
 * --only bigroom`); `npm run bench:ab -- --only bigroom`: server CPU per connect 0.84x, the 5,000
 * members of one room online in 0.87x the time. One text each, a JSON or array parameter for the
 * group: parsed and planned once per connection (`hotQuery`, a named prepared statement).
 */

/**
 * The rooms of at most `maxMembers` members of several users of one tenant, in one query: the rooms
 * that get their presence events. Each distinct room is sized once (its count stops at
 * `maxMembers + 1` rows), however many of the users share it: the 19,000 members of one room coming
 * online in groups size it once per group, not once per member (19,000 x 201 index entries before).
 *
 * Each membership's room is probed by its key (a lateral subquery that `offset 0` keeps from being
 * flattened into a join). With the statistics of rooms and members just created in bulk (whose users
 * then all come online), the planner hashed every room row of the tenant instead, dead versions
 * included: 714 heap pages for 3 rooms, 4.1 ms per query against 0.7 (docs/BENCHMARKS.md, "twelfth
 * pass").
 */
const PRESENCE_ROOMS = hotQuery<{ user_id: string; room_id: string }>(
  'presence-rooms-of-users',
  `with mine as (
  select mb.user_id, mb.room_id
    from membership mb
    join lateral (select r.id from room r where r.id = mb.room_id and r.tenant = ? offset 0) r on true
   where mb.user_id = any(?::text[])
), small as (
  select d.room_id
    from (select distinct room_id from mine) d
   where not exists (select 1 from membership x where x.room_id = d.room_id offset ? limit 1)
)
select mine.user_id, mine.room_id from mine join small on small.room_id = mine.room_id`,
);

/** The rooms that get the presence events of each of `userIds` (users without one are left out). */
export async function presenceRoomsOfUsers(ctx: HotContext, tenant: string, userIds: readonly string[], maxMembers: number): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (maxMembers <= 0 || userIds.length === 0) return out;
  const rows = await PRESENCE_ROOMS(ctx, [tenant, [...new Set(userIds)], maxMembers]);
  for (const r of rows) {
    const list = out.get(r.user_id);
    if (list) list.push(r.room_id);
    else out.set(r.user_id, [r.room_id]);
  }
  return out;
}

/** A user as their token describes them. */
export interface UserClaims {
  tenant: string;
  id: string;
  name: string;
  roles: string[];
  email?: string | undefined;
}

/**
 * Creates or refreshes users' rows from their tokens' claims (name, roles, e-mail, last seen); a
 * token without e-mail keeps the last known one. An erased user (`admin.eraseUser`) keeps the name
 * "deleted user", no roles and no address.
 */
const UPSERT_USERS = hotQuery<never>(
  'upsert-users',
  `insert into chat_user (tenant, id, name, roles, email, created_at, last_seen_at)
select u.tenant, u.id, u.name, u.roles, u.email, now(), now()
  from json_to_recordset(?::json) as u(tenant text, id text, name text, roles text[], email text)
 order by u.tenant, u.id
on conflict (tenant, id) do update set
  name = case when chat_user.erased_at is null then excluded.name else chat_user.name end,
  roles = case when chat_user.erased_at is null then excluded.roles else chat_user.roles end,
  email = case when chat_user.erased_at is null then coalesce(excluded.email, chat_user.email) else null end,
  last_seen_at = now()`,
);

/**
 * Several users in one statement (the latest claims per user win; rows written in key order, so two
 * statements of different nodes never wait on each other in a cycle).
 */
export async function upsertUsers(ctx: HotContext, users: readonly UserClaims[]): Promise<void> {
  const latest = new Map<string, UserClaims>();
  for (const u of users) latest.set(`${u.tenant}\u0000${u.id}`, u);
  if (latest.size === 0) return;
  const input = [...latest.values()].map((u) => ({ tenant: u.tenant, id: u.id, name: u.name, roles: u.roles, email: u.email ?? null }));
  await UPSERT_USERS(ctx, [JSON.stringify(input)]);
}
