import { randomUUID } from 'node:crypto';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { MemberRole } from '../realtime/events.js';
import type { Actor } from './actor.js';
import { type Deps, type Em, em as fork, sql } from './deps.js';
import { badRequest, conflict, forbidden, notFound } from './errors.js';
import { messageFromRow, MESSAGE_COLUMNS } from './message-dto.js';
import { can, outranks, type RoomAction, type RoomKind } from './permissions.js';
import type { RoomLog } from './room-log.js';

export interface RoomDto {
  id: string;
  kind: RoomKind;
  name: string;
  topic: string | null;
  key: string | null;
  createdBy: string;
  createdAt: Date;
  lastSeq: number;
  /** The caller's role in the room. */
  myRole: MemberRole;
  memberCount: number;
}

export interface RoomListItem extends RoomDto {
  unreadCount: number;
  lastReadSeq: number;
  lastMessage: ReturnType<typeof messageFromRow> | null;
}

export interface MemberDto {
  userId: string;
  name: string | null;
  role: MemberRole;
  joinedAt: Date;
  lastReadSeq: number;
}

/** The caller's membership of a room, as loaded by `requireMember`. */
export interface RoomAccess {
  room: { id: string; kind: RoomKind; name: string; tenant: string };
  role: MemberRole;
}

function roomFromRow(r: Record<string, any>): RoomDto {
  return {
    id: r.id,
    kind: r.kind,
    name: r.name,
    topic: r.topic ?? null,
    key: r.key ?? null,
    createdBy: r.created_by,
    createdAt: new Date(r.created_at),
    lastSeq: Number(r.last_seq),
    myRole: r.role,
    memberCount: Number(r.member_count ?? 0),
  };
}

const ROOM_COLUMNS = `r.id, r.kind, r.name, r.topic, r.key, r.created_by, r.created_at, r.last_seq, mb.role,
  (select count(*) from membership x where x.room_id = r.id) as member_count`;

/** Rooms, memberships and the rules about who may see and change them. */
export class RoomService {
  constructor(
    private readonly deps: Deps,
    private readonly log: RoomLog,
  ) {}

  /**
   * The one membership check. A room the caller is not a member of (or that belongs to another
   * tenant) is NOT_FOUND: a non-member learns nothing, not even that the room exists.
   */
  async requireMember(actor: Actor, roomId: string, em: Em = fork(this.deps), lock = false): Promise<RoomAccess> {
    const rows = await sql(
      em,
      `select r.id, r.kind, r.name, r.tenant, mb.role from room r
         join membership mb on mb.room_id = r.id and mb.user_id = ?
        where r.id = ? and r.tenant = ?${lock ? ' for update of mb' : ''}`,
      [actor.id, roomId, actor.tenant],
    );
    const r = rows[0];
    if (!r) throw notFound('room');
    return { room: { id: r.id, kind: r.kind, name: r.name, tenant: r.tenant }, role: r.role };
  }

  /** Access for a purpose; support agents and service tokens get more than members (see issue rules). */
  async requireAccess(actor: Actor, roomId: string, _purpose: 'read' | 'send', em?: Em): Promise<RoomAccess> {
    return this.requireMember(actor, roomId, em);
  }

  async requirePermission(actor: Actor, roomId: string, action: RoomAction, em?: Em): Promise<RoomAccess> {
    const access = await this.requireMember(actor, roomId, em);
    if (!can(access.role, action, access.room.kind)) {
      throw forbidden(`your role (${access.role}) may not ${describe(action)} in this ${access.room.kind} room`);
    }
    return access;
  }

  async create(
    actor: Actor,
    input: { kind: 'group' | 'support' | 'broadcast'; name: string; topic?: string | null; key?: string | null; memberIds?: string[] },
  ): Promise<RoomDto> {
    const id = randomUUID();
    const others = [...new Set(input.memberIds ?? [])].filter((m) => m !== actor.id);
    try {
      await this.log.transact(async (em, emit) => {
        await sql(
          em,
          `insert into room (id, tenant, kind, name, topic, key, direct_key, created_by, last_seq, created_at, updated_at)
           values (?, ?, ?, ?, ?, ?, null, ?, 0, now(), now())`,
          [id, actor.tenant, input.kind, input.name, input.topic ?? null, input.key ?? null, actor.id],
        );
        await this.insertMember(em, emit, id, actor.id, 'owner', actor.id);
        for (const m of others) await this.insertMember(em, emit, id, m, 'member', actor.id);
      });
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException) throw conflict(`a room with key "${input.key}" already exists`);
      throw err;
    }
    return this.get(actor, id);
  }

  /** The one direct room of a pair of users; created on first use, idempotent under concurrency. */
  async openDirect(actor: Actor, userId: string): Promise<RoomDto> {
    if (userId === actor.id) throw badRequest('cannot open a direct room with yourself');
    const pair = [actor.id, userId].sort();
    const directKey = JSON.stringify(pair);
    const find = async () =>
      (await sql<{ id: string }>(fork(this.deps), 'select id from room where tenant = ? and direct_key = ?', [actor.tenant, directKey]))[0]?.id;
    let id = await find();
    if (!id) {
      const newId = randomUUID();
      try {
        await this.log.transact(async (em, emit) => {
          await sql(
            em,
            `insert into room (id, tenant, kind, name, topic, key, direct_key, created_by, last_seq, created_at, updated_at)
             values (?, ?, 'direct', ?, null, null, ?, ?, 0, now(), now())`,
            [newId, actor.tenant, pair.join(', '), directKey, actor.id],
          );
          for (const u of pair) await this.insertMember(em, emit, newId, u, 'member', actor.id);
        });
        id = newId;
      } catch (err) {
        if (!(err instanceof UniqueConstraintViolationException)) throw err;
        id = await find();
        if (!id) throw err;
      }
    }
    return this.get(actor, id);
  }

  async get(actor: Actor, roomId: string): Promise<RoomDto> {
    const rows = await sql(
      fork(this.deps),
      `select ${ROOM_COLUMNS} from room r join membership mb on mb.room_id = r.id and mb.user_id = ?
        where r.id = ? and r.tenant = ?`,
      [actor.id, roomId, actor.tenant],
    );
    if (!rows[0]) throw notFound('room');
    return roomFromRow(rows[0]);
  }

  /** The caller's rooms, most recently active first, with unread counts and the last message. */
  async list(actor: Actor): Promise<RoomListItem[]> {
    const rows = await sql(
      fork(this.deps),
      `select ${ROOM_COLUMNS}, mb.last_read_seq,
              (select count(*) from message u where u.room_id = r.id and u.seq > mb.last_read_seq
                  and u.sender_id <> mb.user_id and u.deleted_at is null) as unread_count,
              lm.id as lm_id, lm.room_id as lm_room_id, lm.seq as lm_seq, lm.sender_id as lm_sender_id,
              lm.body as lm_body, lm.kind as lm_kind, lm.attachments as lm_attachments,
              lm.reply_to_id as lm_reply_to_id, lm.mentions as lm_mentions, lm.created_at as lm_created_at,
              lm.edited_at as lm_edited_at, lm.deleted_at as lm_deleted_at
         from membership mb
         join room r on r.id = mb.room_id and r.tenant = ?
         left join lateral (select ${MESSAGE_COLUMNS} from message m where m.room_id = r.id
                             order by m.seq desc limit 1) lm on true
        where mb.user_id = ?
        order by coalesce(lm.created_at, r.created_at) desc`,
      [actor.tenant, actor.id],
    );
    return rows.map((r) => {
      const lm: Record<string, any> = {};
      for (const k of Object.keys(r)) if (k.startsWith('lm_')) lm[k.slice(3)] = r[k];
      return {
        ...roomFromRow(r),
        unreadCount: Number(r.unread_count),
        lastReadSeq: Number(r.last_read_seq),
        lastMessage: lm.id ? messageFromRow(lm) : null,
      };
    });
  }

  async members(actor: Actor, roomId: string): Promise<MemberDto[]> {
    await this.requireMember(actor, roomId);
    const rows = await sql(
      fork(this.deps),
      `select mb.user_id, u.name, mb.role, mb.joined_at, mb.last_read_seq
         from membership mb left join chat_user u on u.tenant = ? and u.id = mb.user_id
        where mb.room_id = ? order by mb.joined_at, mb.user_id`,
      [actor.tenant, roomId],
    );
    return rows.map((r) => ({
      userId: r.user_id,
      name: r.name ?? null,
      role: r.role,
      joinedAt: new Date(r.joined_at),
      lastReadSeq: Number(r.last_read_seq),
    }));
  }

  async addMembers(actor: Actor, roomId: string, userIds: string[]): Promise<{ added: string[] }> {
    const added: string[] = [];
    await this.log.transact(async (em, emit) => {
      await this.requirePermission(actor, roomId, 'addMembers', em);
      for (const u of [...new Set(userIds)]) {
        if (await this.insertMember(em, emit, roomId, u, 'member', actor.id)) added.push(u);
      }
    });
    return { added };
  }

  async removeMember(actor: Actor, roomId: string, userId: string): Promise<void> {
    if (userId === actor.id) throw badRequest('use room.leave to leave a room');
    await this.log.transact(async (em, emit) => {
      const access = await this.requirePermission(actor, roomId, 'removeMember', em);
      const target = await this.memberRole(em, roomId, userId);
      if (!target) throw notFound('member');
      if (!outranks(access.role, target)) throw forbidden(`a ${access.role} cannot remove a ${target}`);
      await this.deleteMember(em, emit, roomId, userId, 'removed', actor.id);
    });
  }

  async leave(actor: Actor, roomId: string): Promise<void> {
    await this.log.transact(async (em, emit) => {
      const access = await this.requireMember(actor, roomId, em);
      if (access.room.kind === 'direct') throw badRequest('a direct room cannot be left');
      await this.deleteMember(em, emit, roomId, actor.id, 'left', actor.id);
      if (access.role === 'owner') {
        // Hand ownership to the longest-standing remaining member of the highest role.
        const next = await sql<{ user_id: string; role: MemberRole }>(
          em,
          `select user_id, role from membership where room_id = ?
            order by case role when 'owner' then 0 when 'admin' then 1 when 'moderator' then 2 else 3 end, joined_at, user_id limit 1`,
          [roomId],
        );
        if (next[0] && next[0].role !== 'owner') {
          await sql(em, `update membership set role = 'owner' where room_id = ? and user_id = ?`, [roomId, next[0].user_id]);
        }
      }
    });
  }

  private async memberRole(em: Em, roomId: string, userId: string): Promise<MemberRole | null> {
    const rows = await sql<{ role: MemberRole }>(em, 'select role from membership where room_id = ? and user_id = ?', [roomId, userId]);
    return rows[0]?.role ?? null;
  }

  /** Inserts a membership and its `member.joined` event; false when already a member. */
  private async insertMember(
    em: Em,
    emit: (e: any) => void,
    roomId: string,
    userId: string,
    role: MemberRole,
    by: string,
  ): Promise<boolean> {
    const ins = await sql(
      em,
      `insert into membership (room_id, user_id, role, joined_at, last_read_seq)
       values (?, ?, ?, now(), (select last_seq from room where id = ?))
       on conflict do nothing returning user_id`,
      [roomId, userId, role, roomId],
    );
    if (ins.length === 0) return false;
    emit(await this.log.append(em, { type: 'member.joined', roomId, userId, role, by }));
    return true;
  }

  private async deleteMember(
    em: Em,
    emit: (e: any) => void,
    roomId: string,
    userId: string,
    reason: 'left' | 'removed' | 'banned',
    by: string,
  ): Promise<void> {
    const del = await sql(em, 'delete from membership where room_id = ? and user_id = ? returning user_id', [roomId, userId]);
    if (del.length === 0) throw notFound('member');
    emit(await this.log.append(em, { type: 'member.left', roomId, userId, reason, by }));
  }
}

function describe(action: RoomAction): string {
  switch (action) {
    case 'send':
      return 'post';
    case 'addMembers':
      return 'add members';
    case 'removeMember':
      return 'remove members';
    case 'update':
      return 'change the room';
    case 'setRole':
      return 'change roles';
    case 'deleteOthers':
      return "delete others' messages";
    default:
      return action;
  }
}

