import type { DistributiveOmit } from '../util/types.js';
import { channels, type AttachmentDto, type DurableRoomEvent, type EphemeralRoomEvent, type MessageDto } from '../domain/events.js';
import { encodeEvent, type EventSource } from '../stream/hubs.js';
import { type Deps, type Em, em as fork, hotQuery, sql } from './deps.js';
import { MESSAGE_COLUMNS, MESSAGE_RETURNING, type MessageMapper } from './message-dto.js';

export type NewRoomEvent = DistributiveOmit<DurableRoomEvent, 'seq'>;
/** Schedules work (a publish) for after the transaction commits. */
export type AfterCommit = (job: () => Promise<void>) => void;

/** A plain new message (no reply, no mentions) for `appendMessages`; its body already sealed. */
export interface NewMessage {
  id: string;
  roomId: string;
  tenant: string;
  senderId: string;
  clientId: string;
  body: string;
  keyId: string | null;
  kind: 'text' | 'image' | 'file';
  attachments: AttachmentDto[];
}

/**
 * What became of one message of `appendMessages`: written (with its seq), a repeat (the sender
 * already has a message with this clientId, written earlier; nothing was written), or its room is
 * gone.
 */
export type AppendOutcome = { kind: 'new'; message: MessageDto } | { kind: 'repeat' } | { kind: 'gone' };

/**
 * Writes a group of plain messages, across rooms, in one statement (so one implicit transaction):
 *
 * - `fresh`: the inputs whose (tenant, sender, clientId) has no message yet (a lookup in its unique
 *   key per input; written as a scalar subquery so it never becomes a scan of the table), numbered
 *   per room in input order. A repeat is left out here, before any seq is taken, so it never uses one up.
 * - `locked`: the rooms' rows locked in id order (every group locks in the same order: no deadlock
 *   between groups), with their current `last_seq` (FOR UPDATE returns the latest committed version).
 * - `taken`: `last_seq + n` per room: n consecutive seqs for the n fresh messages of the room.
 * - then one insert of the room log rows and one of the message rows.
 *
 * The room row locks are held until the statement commits, so commit order equals seq order per room,
 * as for `nextSeq`. A concurrent send of the same clientId that committed after this statement's
 * snapshot (another node) is not in `fresh`: its insert fails the unique key and the whole statement
 * rolls back (no seq used up); the caller retries and then sees it as a repeat.
 */
const APPEND_MESSAGES = hotQuery(
  'room-log-append-messages',
  `
with input as (
  select * from json_to_recordset(?::json) as t(i int, id uuid, room_id uuid, tenant text, sender_id text, client_id uuid,
                                                  body text, key_id text, kind text, attachments jsonb)
), fresh as (
  select n.*, row_number() over (partition by n.room_id order by n.i) as k
    from input n
   where (select x.id from message x where x.tenant = n.tenant and x.sender_id = n.sender_id and x.client_id = n.client_id) is null
), locked as (
  select r.id, r.last_seq from room r where r.id = any(array(select room_id from fresh)) order by r.id for update
), counts as (
  select room_id, count(*) as n from fresh group by room_id
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
  insert into message (id, room_id, tenant, seq, sender_id, client_id, body, key_id, kind, attachments, reply_to_id, mentions, created_at)
  select id, room_id, tenant, seq, sender_id, client_id, body, key_id, kind, attachments, null, '[]', now() from numbered
  returning ${MESSAGE_RETURNING}
)
select n.i, f.id is null as repeat, ${MESSAGE_COLUMNS}
  from input n left join fresh f on f.id = n.id left join inserted m on m.id = n.id`,
);

/**
 * The room's durable log: the one place that takes sequence numbers. `append` must run inside the
 * transaction that writes the change; the row lock on the room makes commit order equal seq order.
 */
export class RoomLog implements EventSource {
  constructor(
    private readonly deps: Deps,
    private readonly mapper: MessageMapper,
  ) {}

  /** Takes the room's next sequence number (row lock held until the transaction ends). */
  async nextSeq(em: Em, roomId: string): Promise<number> {
    const rows = await sql<{ last_seq: string }>(
      em,
      'update room set last_seq = last_seq + 1, updated_at = now() where id = ? returning last_seq',
      [roomId],
    );
    const row = rows[0];
    if (!row) throw new Error(`room ${roomId} vanished during a write`);
    return Number(row.last_seq);
  }

  /** Records the event of a seq in the room's log (same transaction as `nextSeq`). */
  async record(em: Em, roomId: string, seq: number, type: DurableRoomEvent['type'], messageId: string | null, data: object): Promise<void> {
    await sql(em, 'insert into room_event (room_id, seq, type, message_id, data, created_at) values (?, ?, ?, ?, ?, now())', [
      roomId,
      seq,
      type,
      messageId,
      JSON.stringify(data),
    ]);
  }

  /** Takes the next seq and records a non-message event; returns the event with its seq. */
  async append<E extends NewRoomEvent>(em: Em, event: E): Promise<E & { seq: number }> {
    const seq = await this.nextSeq(em, event.roomId);
    const { type, roomId, ...data } = event as NewRoomEvent & Record<string, unknown>;
    await this.record(em, roomId, seq, type, null, data);
    return { ...event, seq };
  }

  /**
   * Runs `fn` in a transaction; the room events it emits (and whatever it schedules with `after`,
   * e.g. inbox items) are published on the bus only after commit, in order.
   */
  async transact<T>(
    fn: (em: Em, emit: (e: DurableRoomEvent) => void, after: AfterCommit) => Promise<T>,
  ): Promise<T> {
    let jobs: (() => Promise<void>)[] = [];
    const result = await fork(this.deps).transactional((em) => {
      jobs = []; // a retried callback starts over
      return fn(
        em,
        (e) => jobs.push(() => this.publish(e)),
        (job) => jobs.push(job),
      );
    });
    this.runAfterCommit(jobs);
    return result;
  }

  /**
   * Writes plain new messages of any rooms at once (see APPEND_MESSAGES_SQL) and publishes their
   * events after commit, in seq order per room. One outcome per input, in input order. The statement
   * runs on the pool directly (`hotQuery`): it is the hot path of sends.
   */
  async appendMessages(messages: NewMessage[]): Promise<AppendOutcome[]> {
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
    }));
    const rows = await APPEND_MESSAGES(this.deps, [JSON.stringify(input)]);
    const outcomes = new Array<AppendOutcome>(messages.length);
    for (const r of rows) {
      outcomes[r.i] = r.id ? { kind: 'new', message: this.mapper.fromRow(r) } : r.repeat ? { kind: 'repeat' } : { kind: 'gone' };
    }
    // Input order is seq order within each room.
    const jobs: (() => Promise<void>)[] = [];
    for (const o of outcomes) {
      if (o.kind !== 'new') continue;
      const { roomId, seq } = o.message;
      jobs.push(() => this.publish({ type: 'message.new', roomId, seq, message: o.message }));
    }
    this.runAfterCommit(jobs);
    return outcomes;
  }

  /**
   * Starts a committed transaction's jobs in order without waiting on each other: local delivery is
   * synchronous and the broker publishes go out in order on one connection.
   */
  private runAfterCommit(jobs: (() => Promise<void>)[]): void {
    for (const job of jobs) void job().catch((err) => this.deps.log.warn({ err }, 'publish after commit failed'));
  }

  publish(e: DurableRoomEvent | EphemeralRoomEvent): Promise<void> {
    this.deps.counters.busPublished++;
    return this.deps.bus.publish(channels.room(e.roomId), encodeEvent(e));
  }

  async lastSeq(roomId: string): Promise<number> {
    const rows = await sql<{ last_seq: string }>(fork(this.deps), 'select last_seq from room where id = ?', [roomId]);
    return rows[0] ? Number(rows[0].last_seq) : 0;
  }

  async lastSeqs(roomIds: string[]): Promise<Map<string, number>> {
    if (roomIds.length === 0) return new Map();
    const rows = await sql<{ id: string; last_seq: string }>(fork(this.deps), 'select id, last_seq from room where id = any(array[?]::uuid[])', [
      roomIds,
    ]);
    return new Map(rows.map((r) => [r.id, Number(r.last_seq)]));
  }

  async load(roomId: string, after: number, upto: number, limit: number): Promise<DurableRoomEvent[]> {
    const em = fork(this.deps);
    const rows = await sql(
      em,
      `select e.seq as e_seq, e.type as e_type, e.data as e_data, ${MESSAGE_COLUMNS}
         from room_event e left join message m on m.id = e.message_id
        where e.room_id = ? and e.seq > ? and e.seq <= ?
        order by e.seq asc limit ?`,
      [roomId, after, upto, limit],
    );
    const messages = await this.mapper.many(
      em,
      rows.filter((r) => r.id),
      null,
    );
    const byId = new Map(messages.map((m) => [m.id, m]));
    return rows.map((r) => {
      const seq = Number(r.e_seq);
      const type = r.e_type as DurableRoomEvent['type'];
      if (type === 'message.new' || type === 'message.edited' || type === 'message.deleted') {
        const message: MessageDto | undefined = byId.get(r.id);
        // Removed by retention meanwhile: nothing left to show.
        if (!message) return null;
        return { type, roomId, seq, message } as DurableRoomEvent;
      }
      const data = r.e_data as Record<string, unknown>;
      if (type === 'member.updated' && data.mutedUntil) data.mutedUntil = new Date(data.mutedUntil as string);
      return { ...data, type, roomId, seq } as DurableRoomEvent;
    }).filter((e): e is DurableRoomEvent => e !== null);
  }
}
