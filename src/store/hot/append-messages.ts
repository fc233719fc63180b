import type { AttachmentDto, CardDto, JsonObject, MessageDto } from '../../domain/events.js';
import type { MessageRow } from '../message-row.js';
import { PUSH_KIND_ON_CONFLICT, type QueueSettings } from '../notify.js';
import { type HotContext, hotQuery } from './query.js';

/**
 * Why hand-written: the grouped send. Every plain send of a group (across rooms) is written by this
 * one statement: one round trip and one implicit transaction per group instead of a transaction per
 * send. Measured with `npm run bench` (the `sends` and `rooms` scenarios, docs/BENCHMARKS.md):
 * grouped sends are what takes persisted sends past the Socket.IO + PostgreSQL peer; the ORM cannot
 * express the data-modifying CTEs below as one statement.
 */

/** A plain new message (no reply, no mentions); its body already sealed. */
export interface NewMessage {
  id: string;
  roomId: string;
  tenant: string;
  senderId: string;
  clientId: string;
  body: string;
  keyId: string | null;
  kind: MessageDto['kind'];
  attachments: AttachmentDto[];
  metadata: JsonObject | null;
  card: CardDto | null;
  /**
   * The room's `access_version` of the cached access row the send was checked against (null: checked
   * against the database just before, nothing to verify). The message is written only while the room
   * still has it: outcome `stale` otherwise, and nothing is written.
   */
  accessVersion: number | null;
}

/**
 * What became of one message: written (with its seq), a repeat (the sender already has a message
 * with this clientId, written earlier; nothing was written), its room is gone, or its room was
 * archived after the send's access check (nothing was written).
 */
export type AppendRowOutcome = { kind: 'new'; row: MessageRow } | { kind: 'repeat' } | { kind: 'gone' } | { kind: 'archived' } | { kind: 'stale' };

/**
 * - `fresh`: the inputs whose (tenant, sender, clientId) has no message yet (a lookup in its unique
 *   key per input: `not exists` with `offset 0` stays a probe per input, never an anti join that
 *   could scan the table, and the planner takes it for half the input rather than one row, so the
 *   CTEs after it are joined by hash, not by nested loops over CTE scans, which cost a group of n
 *   n² comparisons). A repeat is left out here, before any seq is taken, so it never uses one up.
 * - `locked`: the rooms' rows locked in id order (every group locks in the same order: no deadlock
 *   between groups), with their current `last_seq`, `archived_at` and `access_version` (FOR UPDATE
 *   returns the latest committed version). A room archived since the access check takes no message.
 * - `numbered`: the fresh inputs of rooms not archived whose access, if it was checked against a
 *   cached row, was checked against the room's current `access_version` (a membership, role, mute,
 *   ban or room change committed since bumps it: the send is `stale` and checked again), each with
 *   its seq: the room's `last_seq` plus its place among the room's accepted inputs, in input order.
 * - `taken`: the rooms' `last_seq` moved to their highest new seq (a data-modifying CTE runs to
 *   completion whether or not it is read).
 * - then one insert of the room log rows and one of the message rows.
 * - `hooks`: the webhook outbox rows of the new messages (src/store/webhooks.ts), for the tenant's
 *   enabled endpoints subscribed to `message.new`: part of this statement, so a tenant without
 *   webhooks pays an index probe of `webhook_endpoint`, not a round trip; `hooked` says whether any
 *   was written (the caller then wakes the delivery worker).
 * - `notify_rcpt` .. `digests` (the statement `APPEND_MESSAGES`, used when web push or e-mail is
 *   configured; `APPEND_MESSAGES_PLAIN` has none of it): the notification queue (src/store/notify.ts):
 *   the other member of a direct room, and members who set a
 *   group room to `all` (system messages, a service's notices, tell nobody, as in `Tx.appendMessage`; an index probe of `notify_room_preference` per room, not a scan of its
 *   members), folded per user and room (a count and the newest message, the row keeping the most
 *   personal kind of its pending items) into their push rows (only
 *   users with a device) and, for direct messages, digest rows (users with an e-mail address who did
 *   not turn digests off). Push rows are keyed by room, and every writer of a room's rows holds the
 *   room's lock first, so they add no deadlock; digest rows are keyed by user (a trigger locks an
 *   existing one, src/store/notify-entities.ts) and written in user order, as `enqueue` does. In this statement, a crash between the commit and the
 *   queueing cannot lose a notification; `notified` says whether any row was written (the caller then
 *   wakes the notification worker).
 *
 * The room row locks are held until the statement commits, so commit order equals seq order per room,
 * as for a transaction's `append` (src/store/tx.ts). A concurrent send of the same clientId that
 * committed after this statement's snapshot (another node) is not in `fresh`: its insert fails the
 * unique key and the whole statement rolls back (no seq used up); the caller retries and then sees it
 * as a repeat.
 *
 * `WRITE` is the statement up to the webhook outbox; `FRESH` and `ROWS` are its parts that the
 * one-message statement (`LONE`, below) shares.
 */

/** `fresh` (see above). */
const FRESH = `
), fresh as (
  select n.*
    from input n
   where not exists (select from message x where x.tenant = n.tenant and x.sender_id = n.sender_id and x.client_id = n.client_id offset 0)`;

/** `events`, `inserted` and `hooks`: the rows of `numbered`, the accepted messages with their seqs. */
const ROWS = `
), events as (
  insert into room_event (room_id, seq, type, message_id, data, created_at)
  select room_id, seq, 'message.new', id, '{}', now() from numbered
), inserted as (
  insert into message (id, room_id, tenant, seq, sender_id, client_id, body, key_id, kind, attachments, reply_to_id, mentions, metadata, card, created_at)
  select id, room_id, tenant, seq, sender_id, client_id, body, key_id, kind, attachments, null, '[]', metadata, card, now() from numbered
  returning id, seq, created_at
), hooks as (
  insert into webhook_delivery (endpoint_id, tenant, room_id, seq, event_id, event_type, status, attempts, next_attempt_at, created_at)
  select w.id, n.tenant, n.room_id, n.seq, n.room_id || ':' || n.seq, 'message.new', 'pending', 0, now(), now()
    from numbered n join webhook_endpoint w on w.tenant = n.tenant and w.enabled and w.events && array['message.new', '*']::text[]
   order by n.room_id, n.seq
  returning 1`;

const WRITE = `
with input as (
  select * from json_to_recordset(?::json) as t(i int, id uuid, room_id uuid, tenant text, sender_id text, client_id uuid,
                                                  body text, key_id text, kind text, attachments jsonb,
                                                  metadata jsonb, card jsonb, access_version bigint)${FRESH}
), locked as (
  select r.id, r.last_seq, r.archived_at, r.kind, r.access_version from room r where r.id = any(array(select room_id from fresh)) order by r.id for update
), numbered as (
  select f.*, l.last_seq + row_number() over (partition by f.room_id order by f.i) as seq
    from fresh f join locked l on l.id = f.room_id and l.archived_at is null
   where f.access_version is null or f.access_version = l.access_version
), taken as (
  update room r set last_seq = c.seq, updated_at = now()
    from (select room_id, max(seq) as seq from numbered group by room_id) c
   where r.id = c.room_id
  returning 1${ROWS}`;

/** The notification queue's part (only with web push or e-mail configured). */
const NOTIFY = `
), notify_rcpt as (
  select n.tenant, mb.user_id, n.room_id, n.id as message_id, n.seq, n.sender_id, 'direct' as kind
    from numbered n join locked l on l.id = n.room_id and l.kind = 'direct'
    join membership mb on mb.room_id = n.room_id and mb.user_id <> n.sender_id
   where n.kind <> 'system'
  union all
  select n.tenant, p.user_id, n.room_id, n.id, n.seq, n.sender_id, 'message'
    from numbered n join locked l on l.id = n.room_id and l.kind <> 'direct'
    join notify_room_preference p on p.room_id = n.room_id and p.level = 'all' and p.user_id <> n.sender_id
   where n.kind <> 'system' and exists (select 1 from membership mb where mb.room_id = n.room_id and mb.user_id = p.user_id)
), notify_agg as (
  select distinct on (tenant, user_id, room_id) tenant, user_id, room_id, kind, message_id, seq, sender_id,
         count(*) over (partition by tenant, user_id, room_id) as n
    from notify_rcpt
   order by tenant, user_id, room_id, seq desc
), pushes as (
  insert into notify_push (tenant, user_id, room_key, room_id, pending, kind, message_id, message_seq, from_user, due_at, attempts, updated_at)
  select a.tenant, a.user_id, a.room_id::text, a.room_id, a.n, a.kind, a.message_id, a.seq, a.sender_id, now(), 0, now()
    from notify_agg a
   where ?::boolean and exists (select 1 from push_device d where d.tenant = a.tenant and d.user_id = a.user_id)
   order by a.tenant, a.user_id, a.room_id
  on conflict (tenant, user_id, room_key) do update set
    pending = notify_push.pending + excluded.pending,
    room_id = excluded.room_id, kind = ${PUSH_KIND_ON_CONFLICT}, message_id = excluded.message_id, message_seq = excluded.message_seq,
    from_user = excluded.from_user, title = null, url = null, updated_at = now(),
    due_at = case when notify_push.pending > 0 then notify_push.due_at
      else greatest(now(), coalesce(notify_push.last_sent_at + ?::int * interval '1 millisecond', now())) end,
    attempts = case when notify_push.pending > 0 then notify_push.attempts else 0 end
  returning 1
), digests as (
  insert into notify_digest (tenant, user_id, since, due_at, attempts)
  select distinct a.tenant, a.user_id, now(), now() + ?::int * interval '1 millisecond', 0
    from notify_agg a join chat_user u on u.tenant = a.tenant and u.id = a.user_id and u.email is not null
   where ?::boolean and a.kind = 'direct'
     and not exists (select 1 from notify_preference np where np.tenant = a.tenant and np.user_id = a.user_id and np.email = 'off')
   order by a.tenant, a.user_id
  on conflict (tenant, user_id) do nothing
  returning 1
)`;

/**
 * One outcome row per input, as one text column (`OutcomeRow`): the driver reads a row description
 * of one field and parses one value per row instead of nine (in the small rooms' profile, their share
 * of the server's busy time went from 3.1% to 1.8%: docs/BENCHMARKS.md, "Issue 18, twelfth pass";
 * too small to show end to end on that machine). `created_at` goes as PostgreSQL's text output of
 * the column, the text the driver would have parsed.
 */
const outcomes = (notified: string) => `
select n.i || '|' || case when m.id is not null then 'n' when f.id is null then 'r'
                          when n.access_version is not null and n.access_version <> l.access_version then 's'
                          when l.archived_at is not null then 'a' else 'g' end
       || '|' || (select count(*) from hooks) || '|' || ${notified} || '|' || coalesce(m.seq || '|' || m.created_at::text, '') as o
  from input n left join fresh f on f.id = n.id left join inserted m on m.id = n.id left join locked l on l.id = n.room_id`;

/**
 * One message alone (a group of one, no notification queue): the same rules as `WRITE` for one row,
 * with parameters instead of a JSON group and nothing to number or count per room. A lone send (the
 * common case below the group-commit load) costs PostgreSQL about a third less CPU and wall time than
 * `APPEND_MESSAGES_PLAIN` with one row (238 against 350 µs, 385 against 608 µs per statement:
 * `npm run bench:statement`, docs/BENCHMARKS.md "eighth pass"). test/append-messages.test.ts runs every
 * outcome through both.
 */
const LONE = `
with input as (
  select 0 as i, ?::uuid as id, ?::uuid as room_id, ?::text as tenant, ?::text as sender_id, ?::uuid as client_id, ?::text as body,
         ?::text as key_id, ?::text as kind, ?::jsonb as attachments, ?::jsonb as metadata, ?::jsonb as card, ?::bigint as access_version${FRESH}
), locked as (
  select r.id, r.last_seq, r.archived_at, r.access_version from room r where r.id = (select room_id from fresh) for update
), numbered as (
  select f.*, l.last_seq + 1 as seq from fresh f join locked l on l.id = f.room_id and l.archived_at is null
   where f.access_version is null or f.access_version = l.access_version
), taken as (
  update room r set last_seq = n.seq, updated_at = now() from numbered n where r.id = n.room_id${ROWS}
)${outcomes('0')}`;

/**
 * One outcome row: `i|kind|hooked|notified|seq|created_at` (`OUTCOME_KINDS`; seq and created_at
 * only for a written message). A written message comes back as its seq and time only: the rest of
 * its row is the input (`insertedRow`). `hooked` and `notified` (the statement's counts of webhook
 * outbox and notification rows) are the same in every row.
 */
interface OutcomeRow {
  o: string;
}

/** The outcome kinds of `outcomes`, by the letter the statement writes. */
const OUTCOME_KINDS = { r: 'repeat', s: 'stale', a: 'archived', g: 'gone' } as const;

/** The row `inserted` wrote for `m`: what a read of it returns (jsonb may order object keys differently). */
function insertedRow(m: NewMessage, seq: number, createdAt: Date): MessageRow {
  return {
    id: m.id,
    room_id: m.roomId,
    seq,
    sender_id: m.senderId,
    body: m.body,
    key_id: m.keyId,
    kind: m.kind,
    attachments: m.attachments,
    reply_to_id: null,
    mentions: [],
    metadata: m.metadata,
    card: m.card,
    reply_count: 0,
    last_reply_at: null,
    created_at: createdAt,
    edited_at: null,
    deleted_at: null,
  };
}

/**
 * Two prepared statements: with the notification queue, and without it for a deployment that has
 * neither web push nor e-mail (its CTEs, even with nothing to queue, cost PostgreSQL 60-90 µs of
 * CPU per statement: `npm run bench:statement`, docs/BENCHMARKS.md).
 */
const PIPELINED = { pipelined: true };
const APPEND_MESSAGES = hotQuery<OutcomeRow>('room-log-append-messages', WRITE + NOTIFY + outcomes('((select count(*) from pushes) + (select count(*) from digests))::int'), PIPELINED);
const APPEND_MESSAGES_PLAIN = hotQuery<OutcomeRow>('room-log-append-messages-plain', `${WRITE}\n)${outcomes('0')}`, PIPELINED);
const APPEND_MESSAGE_LONE = hotQuery<OutcomeRow>('room-log-append-message-lone', LONE, PIPELINED);

/** An outcome row read: the input's index, what became of it, and the statement's two counts. */
interface ParsedOutcome {
  i: number;
  outcome: AppendRowOutcome;
  hooked: boolean;
  notified: boolean;
}

/** What became of `messages[i]`, by its outcome row. */
function outcomeOf(row: OutcomeRow, messages: NewMessage[]): ParsedOutcome {
  const [i, kind, hooked, notified, seq, createdAt] = row.o.split('|') as [string, string, string, string, string, string | undefined];
  const index = Number(i);
  const outcome: AppendRowOutcome =
    kind === 'n'
      ? // The same conversion as the pool's parser of timestamptz (src/store/database.ts).
        { kind: 'new', row: insertedRow(messages[index]!, Number(seq), new Date(createdAt!)) }
      : { kind: OUTCOME_KINDS[kind as keyof typeof OUTCOME_KINDS] };
  return { i: index, outcome, hooked: hooked !== '0', notified: notified !== '0' };
}

/**
 * Writes plain new messages of any rooms at once; one outcome per input, in input order, and
 * whether webhook outbox rows were written.
 */
export async function appendMessageRows(
  ctx: HotContext,
  messages: NewMessage[],
  queue: QueueSettings | null,
): Promise<{ outcomes: AppendRowOutcome[]; hooked: boolean; notified: boolean }> {
  if (messages.length === 1 && !queue) {
    const m = messages[0]!;
    const [row] = await APPEND_MESSAGE_LONE(ctx, [
      m.id,
      m.roomId,
      m.tenant,
      m.senderId,
      m.clientId,
      m.body,
      m.keyId,
      m.kind,
      JSON.stringify(m.attachments),
      JSON.stringify(m.metadata),
      JSON.stringify(m.card),
      m.accessVersion,
    ]);
    const r = outcomeOf(row!, messages);
    return { outcomes: [r.outcome], hooked: r.hooked, notified: false };
  }
  const input = messages.map((m, i) => ({
    i,
    id: m.id,
    room_id: m.roomId,
    tenant: m.tenant,
    sender_id: m.senderId,
    client_id: m.clientId,
    body: m.body,
    key_id: m.keyId,
    kind: m.kind,
    attachments: m.attachments,
    metadata: m.metadata,
    card: m.card,
    access_version: m.accessVersion,
  }));
  const json = JSON.stringify(input);
  const rows = queue
    ? await APPEND_MESSAGES(ctx, [json, queue.push, queue.coalesceMs, queue.digestDelayMs, queue.digest])
    : await APPEND_MESSAGES_PLAIN(ctx, [json]);
  const outcomes = new Array<AppendRowOutcome>(messages.length);
  let hooked = false;
  let notified = false;
  for (const row of rows) {
    const r = outcomeOf(row, messages);
    outcomes[r.i] = r.outcome;
    hooked = r.hooked;
    notified = r.notified;
  }
  return { outcomes, hooked, notified };
}
