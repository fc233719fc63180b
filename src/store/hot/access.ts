import type { MemberRole } from '../../domain/events.js';
import type { Em } from '../database.js';
import { type HotContext, hotQuery } from './query.js';

/**
 * Why hand-written: the access check runs in front of every send, read and subscription. Measured
 * with `npm run bench` (the `sends` and `rooms` scenarios, docs/BENCHMARKS.md): grouped sends check
 * the access of every queued send in one statement, and one round trip on the common path is what
 * keeps a lone send's latency down. The ORM cannot join a JSON list of requests.
 */

/** The room of a request as its caller sees it: the membership and ban joined (no row: no such room in the tenant). */
export interface AccessRow {
  i: number;
  id: string;
  kind: string;
  name: string;
  tenant: string;
  encrypted: boolean;
  archived: boolean;
  role: MemberRole | null;
  muted_until: Date | null;
  banned: boolean;
  /** The room's last seq as this check read it on the primary (the read routing's floor). */
  last_seq: number;
  /** The room's access version (src/store/entities.ts): bumped by every change this row reflects. */
  access_version: number;
}

/**
 * The membership is joined on the request's own columns (`q.room_id`, not `r.id`): both columns of
 * its primary key then come from one relation, and the planner looks the row up by both. Joined on
 * `r.id`, it may probe by the room alone and filter the user, which reads every member of the room
 * per request: with a room estimated small (a fresh table, or the average room), the members of a
 * 19,000-member room coming online took 40 ms per 70 checks instead of 0.4 ms (EXPLAIN ANALYZE of the
 * `bigroom` bench's statement).
 */
const ACCESS_QUERY = hotQuery<AccessRow>(
  'rooms-check-access',
  `select q.i, r.id, r.kind, r.name, r.tenant, r.encrypted, r.archived_at is not null as archived, r.last_seq, r.access_version, mb.role, mb.muted_until,
          exists (select 1 from room_ban b where b.room_id = r.id and b.user_id = q.user_id) as banned
     from json_to_recordset(?::json) as q(i int, user_id text, room_id uuid, tenant text)
     join room r on r.id = q.room_id and r.tenant = q.tenant
     left join membership mb on mb.room_id = q.room_id and mb.user_id = q.user_id`,
);

export interface AccessLookup {
  userId: string;
  tenant: string;
  roomId: string;
}

/** The access rows of several lookups in one statement; `i` is the lookup's index. In a transaction given its EntityManager. */
export function accessRows(ctx: HotContext, lookups: AccessLookup[], em?: Em): Promise<AccessRow[]> {
  const input = lookups.map((q, i) => ({ i, user_id: q.userId, room_id: q.roomId, tenant: q.tenant }));
  return ACCESS_QUERY(ctx, [JSON.stringify(input)], em);
}
