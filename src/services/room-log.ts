import type { DistributiveOmit } from '../util/types.js';
import { channels, type DurableRoomEvent, type EphemeralRoomEvent, type MessageDto } from '../realtime/events.js';
import { encodeEvent, type EventSource } from '../realtime/room-hub.js';
import { type Deps, type Em, em as fork, sql } from './deps.js';
import { MESSAGE_COLUMNS, type MessageMapper } from './message-dto.js';

export type NewRoomEvent = DistributiveOmit<DurableRoomEvent, 'seq'>;
/** Schedules work (a publish) for after the transaction commits. */
export type AfterCommit = (job: () => Promise<void>) => void;

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
    // Started in order without waiting on each other: local delivery is synchronous and the
    // broker publishes go out in order on one connection.
    for (const job of jobs) void job().catch((err) => this.deps.log.warn({ err }, 'publish after commit failed'));
    return result;
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
