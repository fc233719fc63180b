import { randomUUID } from 'node:crypto';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { AttachmentDto, MessageDto } from '../realtime/events.js';
import type { Actor } from './actor.js';
import { type Deps, em as fork, sql } from './deps.js';
import { badRequest, conflict, forbidden } from './errors.js';
import { messageFromRow, MESSAGE_COLUMNS } from './message-dto.js';
import { can } from './permissions.js';
import type { RoomLog } from './room-log.js';
import type { RoomService } from './rooms.js';

export interface SendInput {
  roomId: string;
  clientId: string;
  body: string;
  kind?: 'text' | 'image' | 'file';
  attachments?: AttachmentDto[];
  replyToId?: string | null;
  mentions?: string[];
}

export interface HistoryInput {
  roomId: string;
  beforeSeq?: number | null;
  afterSeq?: number | null;
  limit?: number | null;
}

export const HISTORY_DEFAULT_LIMIT = 50;
export const HISTORY_MAX_LIMIT = 100;

/** Messages: sending (idempotent by clientId) and history. */
export class MessageService {
  constructor(
    private readonly deps: Deps,
    private readonly log: RoomLog,
    private readonly rooms: RoomService,
  ) {}

  /**
   * Sends a message. The message and its room sequence number are written in one transaction and
   * published after commit. A repeat of the same clientId by the same sender returns the original.
   */
  async send(actor: Actor, input: SendInput): Promise<MessageDto> {
    const existing = await this.findByClientId(actor, input.clientId);
    if (existing) return this.sameRoomOrConflict(existing, input.roomId);

    if (input.body.trim().length === 0 && !(input.attachments?.length)) {
      throw badRequest('message body must not be empty');
    }
    const id = randomUUID();
    try {
      return await this.log.transact(async (em, emit) => {
        const access = await this.rooms.requireMember(actor, input.roomId, em);
        if (!can(access.role, 'send', access.room.kind)) {
          throw forbidden(`only admins and the owner may post in a ${access.room.kind} room`);
        }
        if (input.replyToId) {
          const parent = await sql(em, 'select 1 from message where id = ? and room_id = ?', [input.replyToId, input.roomId]);
          if (!parent.length) throw badRequest('replyToId does not name a message of this room');
        }
        // An array parameter is inlined as a comma list: wrap it in array[...]::text[].
        const mentions = input.mentions?.length
          ? (
              await sql<{ user_id: string }>(em, 'select user_id from membership where room_id = ? and user_id = any(array[?]::text[])', [
                input.roomId,
                [...new Set(input.mentions)],
              ])
            ).map((r) => r.user_id)
          : [];
        // The event row and the seq first: the room row lock orders concurrent sends.
        const seq = await this.log.nextSeq(em, input.roomId);
        await this.log.record(em, input.roomId, seq, 'message.new', id, {});
        const rows = await sql(
          em,
          `insert into message (id, room_id, tenant, seq, sender_id, client_id, body, kind, attachments, reply_to_id,
                                mentions, created_at)
           values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())
           returning ${MESSAGE_COLUMNS.replaceAll('m.', '')}`,
          [
            id,
            input.roomId,
            actor.tenant,
            seq,
            actor.id,
            input.clientId,
            input.body,
            input.kind ?? 'text',
            JSON.stringify(input.attachments ?? []),
            input.replyToId ?? null,
            JSON.stringify(mentions),
          ],
        );
        const message = messageFromRow(rows[0]!);
        emit({ type: 'message.new', roomId: input.roomId, seq: seq, message });
        return message;
      });
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException) {
        // A concurrent send with the same clientId won: return its message.
        const winner = await this.findByClientId(actor, input.clientId);
        if (winner) return this.sameRoomOrConflict(winner, input.roomId);
      }
      throw err;
    }
  }

  private sameRoomOrConflict(m: MessageDto, roomId: string): MessageDto {
    if (m.roomId !== roomId) throw conflict('clientId was already used for a message in another room');
    return m;
  }

  private async findByClientId(actor: Actor, clientId: string): Promise<MessageDto | null> {
    const rows = await sql(
      fork(this.deps),
      `select ${MESSAGE_COLUMNS} from message m where m.tenant = ? and m.sender_id = ? and m.client_id = ?`,
      [actor.tenant, actor.id, clientId],
    );
    return rows[0] ? messageFromRow(rows[0]) : null;
  }

  /**
   * A page of history, always in ascending seq. No cursor: the newest page. `beforeSeq` pages back,
   * `afterSeq` pages forward; both together give the messages strictly between them.
   */
  async history(actor: Actor, input: HistoryInput): Promise<{ messages: MessageDto[]; hasMore: boolean }> {
    const limit = input.limit ?? HISTORY_DEFAULT_LIMIT;
    if (limit < 1 || limit > HISTORY_MAX_LIMIT) throw badRequest(`limit must be between 1 and ${HISTORY_MAX_LIMIT}`);
    await this.rooms.requireMember(actor, input.roomId);
    const conds = ['m.room_id = ?'];
    const params: unknown[] = [input.roomId];
    if (input.afterSeq != null) {
      conds.push('m.seq > ?');
      params.push(input.afterSeq);
    }
    if (input.beforeSeq != null) {
      conds.push('m.seq < ?');
      params.push(input.beforeSeq);
    }
    const forward = input.afterSeq != null;
    const rows = await sql(
      fork(this.deps),
      `select ${MESSAGE_COLUMNS} from message m where ${conds.join(' and ')}
        order by m.seq ${forward ? 'asc' : 'desc'} limit ?`,
      [...params, limit + 1],
    );
    const hasMore = rows.length > limit;
    const page = rows.slice(0, limit).map(messageFromRow);
    if (!forward) page.reverse();
    return { messages: page, hasMore };
  }
}
