import type { AttachmentDto, CardDto, JsonObject, MessageDto } from '../../domain/events.js';
import type { MessageRow } from '../message-row.js';
import { MESSAGE_FIELDS } from '../message-row.js';
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
}

/**
 * What became of one message: written (with its seq), a repeat (the sender already has a message
 * with this clientId, written earlier; nothing was written), its room is gone, or its room was
 * archived after the send's access check (nothing was written).
 */
export type AppendRowOutcome = { kind: 'new'; row: MessageRow } | { kind: 'repeat' } | { kind: 'gone' } | { kind: 'archived' };

const M_FIELDS = MESSAGE_FIELDS.map((f) => `m.${f}`).join(', ');
const RETURNING = MESSAGE_FIELDS.join(', ');

/**
 * - `fresh`: the inputs whose (tenant, sender, clientId) has no message yet (a lookup in its unique
 *   key per input; written as a scalar subquery so it never becomes a scan of the table), numbered
 *   per room in input order. A repeat is left out here, before any seq is taken, so it never uses one up.
 * - `locked`: the rooms' rows locked in id order (every group locks in the same order: no deadlock
 *   between groups), with their current `last_seq` and `archived_at` (FOR UPDATE returns the latest
 *   committed version). A room archived since the access check takes no message.
 * - `taken`: `last_seq + n` per room: n consecutive seqs for the n fresh messages of the room.
 * - then one insert of the room log rows and one of the message rows.
 * - `hooks`: the webhook outbox rows of the new messages (src/store/webhooks.ts), for the tenant's
 *   enabled endpoints subscribed to `message.new`: part of this statement, so a tenant without
 *   webhooks pays an index probe of `webhook_endpoint`, not a round trip; `hooked` says whether any
 *   was written (the caller then wakes the delivery worker).
 *
 * The room row locks are held until the statement commits, so commit order equals seq order per room,
 * as for a transaction's `append` (src/store/tx.ts). A concurrent send of the same clientId that
 * committed after this statement's snapshot (another node) is not in `fresh`: its insert fails the
 * unique key and the whole statement rolls back (no seq used up); the caller retries and then sees it
 * as a repeat.
 */
const APPEND_MESSAGES = hotQuery<MessageRow & { i: number; repeat: boolean; archived: boolean; hooked: number }>(
  'room-log-append-messages',
  `
with input as (
  select * from json_to_recordset(?::json) as t(i int, id uuid, room_id uuid, tenant text, sender_id text, client_id uuid,
                                                  body text, key_id text, kind text, attachments jsonb,
                                                  metadata jsonb, card jsonb)
), fresh as (
  select n.*, row_number() over (partition by n.room_id order by n.i) as k
    from input n
   where (select x.id from message x where x.tenant = n.tenant and x.sender_id = n.sender_id and x.client_id = n.client_id) is null
), locked as (
  select r.id, r.last_seq, r.archived_at from room r where r.id = any(array(select room_id from fresh)) order by r.id for update
), counts as (
  select f.room_id, count(*) as n from fresh f join locked l on l.id = f.room_id and l.archived_at is null group by f.room_id
), taken as (
  update room r set last_seq = l.last_seq + c.n, updated_at = now()
    from locked l join counts c on c.room_id = l.id
   where r.id = l.id
  returning r.id, l.last_seq as base
), numbered as (
  select f.*, t.base + f.k as seq from fresh f join taken t on t.id = f.room_id
), events as (
  insert into room_event (room_id, seq, type, message_id, data, created_at)
  select room_id, seq, 'message.new', id, '{}', now() from numbered
), inserted as (
  insert into message (id, room_id, tenant, seq, sender_id, client_id, body, key_id, kind, attachments, reply_to_id, mentions, metadata, card, created_at)
  select id, room_id, tenant, seq, sender_id, client_id, body, key_id, kind, attachments, null, '[]', metadata, card, now() from numbered
  returning ${RETURNING}
), hooks as (
  insert into webhook_delivery (endpoint_id, tenant, room_id, seq, event_id, event_type, status, attempts, next_attempt_at, created_at)
  select w.id, n.tenant, n.room_id, n.seq, n.room_id || ':' || n.seq, 'message.new', 'pending', 0, now(), now()
    from numbered n join webhook_endpoint w on w.tenant = n.tenant and w.enabled and w.events && array['message.new', '*']::text[]
   order by n.room_id, n.seq
  returning 1
)
select n.i, f.id is null as repeat, l.archived_at is not null as archived, (select count(*) from hooks)::int as hooked, ${M_FIELDS}
  from input n left join fresh f on f.id = n.id left join inserted m on m.id = n.id left join locked l on l.id = n.room_id`,
);

/**
 * Writes plain new messages of any rooms at once; one outcome per input, in input order, and
 * whether webhook outbox rows were written.
 */
export async function appendMessageRows(ctx: HotContext, messages: NewMessage[]): Promise<{ outcomes: AppendRowOutcome[]; hooked: boolean }> {
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
  }));
  const rows = await APPEND_MESSAGES(ctx, [JSON.stringify(input)]);
  const outcomes = new Array<AppendRowOutcome>(messages.length);
  for (const r of rows) {
    outcomes[r.i] = r.id ? { kind: 'new', row: r } : r.repeat ? { kind: 'repeat' } : r.archived ? { kind: 'archived' } : { kind: 'gone' };
  }
  return { outcomes, hooked: (rows[0]?.hooked ?? 0) > 0 };
}
