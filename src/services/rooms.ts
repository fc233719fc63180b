import { randomUUID } from 'node:crypto';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { DurableRoomEvent, MemberRole, MessageDto } from '../domain/events.js';
import type { Actor } from '../domain/actor.js';
import { type Deps, type Em, em as fork, hotQuery, sql } from './deps.js';
import { AppError, badRequest, conflict, forbidden, notFound } from '../domain/errors.js';
import type { Keyring } from './keyring.js';
import type { MessageMapper } from './message-dto.js';
import { kysely } from '../store/database.js';
import { MESSAGE_FIELDS } from '../store/message-row.js';
import { can, outranks, ROLE_RANK, type RoomAction, type RoomKind } from '../domain/permissions.js';
import { UNREAD_SQL } from '../store/hot/unread.js';
import type { Store } from '../store/store.js';
import { type AccessService, describeAction } from './access.js';
import { systemMessage } from './system-message.js';
import { FOREVER, type MemberDto, type RoomDto, type RoomListItem } from '../domain/rooms.js';
import type { Tx } from '../store/tx.js';


function roomFromRow(r: Record<string, any>, role: MemberRole): RoomDto {
  return {
    id: r.id,
    kind: r.kind,
    name: r.name,
    topic: r.topic ?? null,
    key: r.key ?? null,
    encrypted: !!r.encrypted,
    retentionDays: r.retention_days ?? null,
    createdBy: r.created_by,
    createdAt: new Date(r.created_at),
    lastSeq: Number(r.last_seq),
    myRole: role,
    memberCount: Number(r.member_count ?? 0),
  };
}

const ROOM_COLUMNS = `r.id, r.kind, r.name, r.topic, r.key, r.encrypted, r.retention_days, r.created_by, r.created_at, r.last_seq,
  (select count(*) from membership x where x.room_id = r.id) as member_count`;

/** Rooms, memberships, moderation and the rules about who may see and change them. */
export class RoomService {
  constructor(
    private readonly deps: Deps,
    private readonly access: AccessService,
    private readonly store: Store,
    private readonly mapper: MessageMapper,
    private readonly keyring: Keyring,
  ) {}

  async create(
    actor: Actor,
    input: {
      kind: 'group' | 'support' | 'broadcast';
      name: string;
      topic?: string | null;
      key?: string | null;
      memberIds?: string[] | undefined;
      encrypted?: boolean | undefined;
    },
  ): Promise<RoomDto> {
    await this.deps.limits.consume('roomCreate', `${actor.tenant}:${actor.id}`);
    if (input.encrypted && !this.keyring.enabled) {
      throw new AppError('PRECONDITION_FAILED', 'encrypted rooms need MESSAGE_KEYS to be configured on the server');
    }
    const id = randomUUID();
    // Sorted: rows of several users are always locked in the same order (no deadlocks between rooms).
    const others = [...new Set(input.memberIds ?? [])].filter((m) => m !== actor.id).sort();
    try {
      await this.store.transact(async (tx) => {
        await sql(
          tx.em,
          `insert into room (id, tenant, kind, name, topic, key, direct_key, encrypted, created_by, last_seq, created_at, updated_at)
           values (?, ?, ?, ?, ?, ?, null, ?, ?, 0, now(), now())`,
          [id, actor.tenant, input.kind, input.name, input.topic ?? null, input.key ?? null, !!input.encrypted, actor.id],
        );
        await this.insertMember(tx, actor, id, actor.id, 'owner', null);
        for (const m of others) await this.insertMember(tx, actor, id, m, 'member', { name: input.name, kind: input.kind });
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
      await this.deps.limits.consume('roomCreate', `${actor.tenant}:${actor.id}`);
      const newId = randomUUID();
      try {
        await this.store.transact(async (tx) => {
          await sql(
            tx.em,
            `insert into room (id, tenant, kind, name, topic, key, direct_key, created_by, last_seq, created_at, updated_at)
             values (?, ?, 'direct', ?, null, null, ?, ?, 0, now(), now())`,
            [newId, actor.tenant, pair.join(', '), directKey, actor.id],
          );
          for (const u of pair) await this.insertMember(tx, actor, newId, u, 'member', null);
          await tx.appendInbox(actor.tenant, userId, { type: 'direct.created', roomId: newId, userId: actor.id });
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
    const access = await this.access.requireMember(actor, roomId);
    const rows = await sql(fork(this.deps), `select ${ROOM_COLUMNS} from room r where r.id = ?`, [roomId]);
    if (!rows[0]) throw notFound('room');
    return roomFromRow(rows[0], access.role);
  }

  /** Rooms linked to an external entity (`order:123`) that the caller can see. */
  async byKey(actor: Actor, key: string): Promise<RoomDto[]> {
    const rows = await sql<{ id: string }>(fork(this.deps), 'select id from room where tenant = ? and key = ?', [actor.tenant, key]);
    const out: RoomDto[] = [];
    for (const r of rows) {
      try {
        out.push(await this.get(actor, r.id));
      } catch (err) {
        if (!(err instanceof AppError && err.code === 'NOT_FOUND')) throw err;
      }
    }
    return out;
  }

  /**
   * The caller's rooms, most recently active first, with unread counts and the last message.
   * Support agents also see every support room of their tenant.
   */
  async list(actor: Actor): Promise<RoomListItem[]> {
    const em = fork(this.deps);
    const agent = actor.roles.includes('support');
    const rows = await sql(
      em,
      `select ${ROOM_COLUMNS}, coalesce(mb.role, 'member') as role, coalesce(mb.last_read_seq, 0) as last_read_seq,
              case when mb.user_id is null then 0 else ${UNREAD_SQL} end as unread_count,
              (select m.id from message m where m.room_id = r.id order by m.seq desc limit 1) as last_message_id
         from room r
         left join membership mb on mb.room_id = r.id and mb.user_id = ?
        where r.tenant = ? and (mb.user_id is not null ${agent ? "or r.kind = 'support'" : ''})`,
      [actor.id, actor.tenant],
    );
    const ids: string[] = rows.map((r) => r.last_message_id).filter(Boolean);
    const lastRows = ids.length ? await kysely(em).selectFrom('message').select(MESSAGE_FIELDS).where('id', 'in', ids).execute() : [];
    const last = new Map((await this.mapper.many(em, lastRows, actor.id)).map((m) => [m.id, m]));
    return rows
      .map((r) => ({
        ...roomFromRow(r, r.role),
        unreadCount: Number(r.unread_count),
        lastReadSeq: Number(r.last_read_seq),
        lastMessage: (r.last_message_id && last.get(r.last_message_id)) || null,
      }))
      .sort((a, b) => (b.lastMessage?.createdAt ?? b.createdAt).getTime() - (a.lastMessage?.createdAt ?? a.createdAt).getTime());
  }

  async members(actor: Actor, roomId: string): Promise<MemberDto[]> {
    await this.access.requireMember(actor, roomId);
    const rows = await sql(
      fork(this.deps),
      `select mb.user_id, u.name, mb.role, mb.joined_at, mb.last_read_seq, mb.muted_until
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
      mutedUntil: r.muted_until && new Date(r.muted_until).getTime() > Date.now() ? new Date(r.muted_until) : null,
    }));
  }

  async addMembers(actor: Actor, roomId: string, userIds: string[]): Promise<{ added: string[] }> {
    const added: string[] = [];
    await this.store.transact(async (tx) => {
      const access = await this.access.requirePermission(actor, roomId, 'addMembers', tx.em);
      const unique = [...new Set(userIds)].sort();
      const banned = await sql<{ user_id: string }>(tx.em, 'select user_id from room_ban where room_id = ? and user_id = any(array[?]::text[])', [
        roomId,
        unique,
      ]);
      if (banned.length) throw forbidden(`banned from this room: ${banned.map((b) => b.user_id).join(', ')} (unban first)`);
      for (const u of unique) {
        const ok = await this.insertMember(tx, actor, roomId, u, 'member', { name: access.room.name, kind: access.room.kind });
        if (ok) {
          added.push(u);
          await systemMessage(tx, actor, roomId, `${actor.name} added ${u}`);
        }
      }
    });
    return { added };
  }

  async removeMember(actor: Actor, roomId: string, userId: string): Promise<void> {
    if (userId === actor.id) throw badRequest('use room.leave to leave a room');
    await this.store.transact(async (tx) => {
      const access = await this.access.requirePermission(actor, roomId, 'removeMember', tx.em);
      const target = await this.memberRole(tx.em, roomId, userId);
      if (!target) throw notFound('member');
      if (!outranks(access.role, target)) throw forbidden(`a ${access.role} cannot remove a ${target}`);
      await this.deleteMember(tx, roomId, userId, 'removed', actor.id);
      await systemMessage(tx, actor, roomId, `${actor.name} removed ${userId}`);
    });
    this.audit('remove', actor, roomId, userId);
  }

  async leave(actor: Actor, roomId: string): Promise<void> {
    await this.store.transact(async (tx) => {
      const access = await this.access.requireMember(actor, roomId, tx.em);
      if (!access.member) throw badRequest('you are not a member of this room');
      if (access.room.kind === 'direct') throw badRequest('a direct room cannot be left');
      await this.deleteMember(tx, roomId, actor.id, 'left', actor.id);
      if (access.role === 'owner') {
        // Hand ownership to the longest-standing remaining member of the highest role.
        const next = await sql<{ user_id: string; role: MemberRole }>(
          tx.em,
          `select user_id, role from membership where room_id = ?
            order by case role when 'owner' then 0 when 'admin' then 1 when 'moderator' then 2 else 3 end, joined_at, user_id limit 1`,
          [roomId],
        );
        if (next[0] && next[0].role !== 'owner') {
          await this.writeMember(tx, roomId, next[0].user_id, { role: 'owner' }, actor.id);
        }
      }
      await systemMessage(tx, actor, roomId, `${actor.name} left`);
    });
  }

  /**
   * Changes a member's role. Needs `setRole` and to outrank both the target's current and new role;
   * only the owner hands over ownership (and becomes an admin).
   */
  async setRole(actor: Actor, roomId: string, userId: string, role: MemberRole): Promise<MemberDto> {
    if (userId === actor.id) throw badRequest('you cannot change your own role');
    await this.store.transact(async (tx) => {
      const access = await this.access.requirePermission(actor, roomId, 'setRole', tx.em);
      const current = await this.memberRole(tx.em, roomId, userId, true);
      if (!current) throw notFound('member');
      if (role === 'owner') {
        if (access.role !== 'owner') throw forbidden('only the owner can hand over ownership');
        await this.writeMember(tx, roomId, actor.id, { role: 'admin' }, actor.id);
      } else if (!outranks(access.role, current) || ROLE_RANK[role] >= ROLE_RANK[access.role]) {
        throw forbidden(`a ${access.role} cannot make a ${current} a ${role}`);
      }
      if (current !== role) await this.writeMember(tx, roomId, userId, { role }, actor.id);
    });
    this.audit('set_role', actor, roomId, userId, { role });
    return (await this.members(actor, roomId)).find((m) => m.userId === userId)!;
  }

  async update(
    actor: Actor,
    roomId: string,
    input: { name?: string | undefined; topic?: string | null | undefined; retentionDays?: number | null | undefined },
  ): Promise<RoomDto> {
    if (input.name === undefined && input.topic === undefined && input.retentionDays === undefined) {
      throw badRequest('nothing to update: give name, topic and/or retentionDays');
    }
    await this.store.transact(async (tx) => {
      await this.access.requirePermission(actor, roomId, 'update', tx.em);
      const before = (await sql(tx.em, 'select name, topic from room where id = ? for update', [roomId]))[0]!;
      if (input.retentionDays !== undefined) {
        await sql(tx.em, 'update room set retention_days = ? where id = ?', [input.retentionDays, roomId]);
      }
      const name = input.name ?? before.name;
      const topic = input.topic === undefined ? before.topic : input.topic;
      if (name === before.name && topic === before.topic) return;
      await sql(tx.em, 'update room set name = ?, topic = ? where id = ?', [name, topic, roomId]);
      await tx.append({ type: 'room.updated', roomId, name, topic, by: actor.id });
      if (name !== before.name) await systemMessage(tx, actor, roomId, `${actor.name} renamed the room to "${name}"`);
    });
    return this.get(actor, roomId);
  }

  /** Mutes a member (cannot send) until `until`, or until unmuted. */
  async mute(actor: Actor, roomId: string, userId: string, until: Date | null): Promise<MemberDto> {
    if (until && until.getTime() <= Date.now()) throw badRequest('until must be in the future');
    await this.moderate(actor, roomId, userId, 'mute', async (tx) => {
      await this.writeMember(tx, roomId, userId, { mutedUntil: until ?? FOREVER }, actor.id);
    });
    this.audit('mute', actor, roomId, userId, { until });
    return (await this.members(actor, roomId)).find((m) => m.userId === userId)!;
  }

  async unmute(actor: Actor, roomId: string, userId: string): Promise<MemberDto> {
    await this.moderate(actor, roomId, userId, 'mute', async (tx) => {
      await this.writeMember(tx, roomId, userId, { mutedUntil: null }, actor.id);
    });
    this.audit('unmute', actor, roomId, userId);
    return (await this.members(actor, roomId)).find((m) => m.userId === userId)!;
  }

  /** Bans a user: removes them (their live subscriptions end) and keeps them out until unbanned. */
  async ban(actor: Actor, roomId: string, userId: string): Promise<void> {
    if (userId === actor.id) throw badRequest('you cannot ban yourself');
    await this.store.transact(async (tx) => {
      const access = await this.access.requirePermission(actor, roomId, 'ban', tx.em);
      const target = await this.memberRole(tx.em, roomId, userId, true);
      if (target && !outranks(access.role, target)) throw forbidden(`a ${access.role} cannot ban a ${target}`);
      const added = await sql(
        tx.em,
        'insert into room_ban (room_id, user_id, banned_by, created_at) values (?, ?, ?, now()) on conflict do nothing returning user_id',
        [roomId, userId, actor.id],
      );
      if (target) {
        await this.deleteMember(tx, roomId, userId, 'banned', actor.id);
        await systemMessage(tx, actor, roomId, `${actor.name} banned ${userId}`);
      } else if (added.length > 0 && access.room.kind === 'support') {
        // Support agents read support rooms without being members: the event ends an agent's open
        // streams of this room on every node (the hubs end the subscriptions of a leaving user).
        await tx.append({ type: 'member.left', roomId, userId, reason: 'banned', by: actor.id });
      }
    });
    this.audit('ban', actor, roomId, userId);
  }

  async unban(actor: Actor, roomId: string, userId: string): Promise<{ unbanned: boolean }> {
    await this.access.requirePermission(actor, roomId, 'ban');
    const rows = await sql(fork(this.deps), 'delete from room_ban where room_id = ? and user_id = ? returning user_id', [roomId, userId]);
    this.audit('unban', actor, roomId, userId, { wasBanned: rows.length > 0 });
    return { unbanned: rows.length > 0 };
  }

  async bans(actor: Actor, roomId: string): Promise<{ userId: string; bannedBy: string; createdAt: Date }[]> {
    await this.access.requirePermission(actor, roomId, 'ban');
    const rows = await sql(fork(this.deps), 'select user_id, banned_by, created_at from room_ban where room_id = ? order by created_at', [roomId]);
    return rows.map((r) => ({ userId: r.user_id, bannedBy: r.banned_by, createdAt: new Date(r.created_at) }));
  }

  private async moderate(
    actor: Actor,
    roomId: string,
    userId: string,
    action: RoomAction,
    fn: (tx: Tx) => Promise<void>,
  ): Promise<void> {
    if (userId === actor.id) throw badRequest(`you cannot ${describeAction(action)} on yourself`);
    await this.store.transact(async (tx) => {
      const access = await this.access.requirePermission(actor, roomId, action, tx.em);
      const target = await this.memberRole(tx.em, roomId, userId, true);
      if (!target) throw notFound('member');
      if (!outranks(access.role, target)) throw forbidden(`a ${access.role} cannot ${describeAction(action)} on a ${target}`);
      await fn(tx);
    });
  }

  /** Audit log of a moderation action (who, what, where; never message content). */
  private audit(action: string, actor: Actor, roomId: string, target: string | null, extra: Record<string, unknown> = {}): void {
    this.deps.log.info({ audit: 'moderation', action, tenant: actor.tenant, by: actor.id, roomId, target, ...extra }, `moderation: ${action}`);
  }

  private async memberRole(em: Em, roomId: string, userId: string, lock = false): Promise<MemberRole | null> {
    const rows = await sql<{ role: MemberRole }>(
      em,
      `select role from membership where room_id = ? and user_id = ?${lock ? ' for update' : ''}`,
      [roomId, userId],
    );
    return rows[0]?.role ?? null;
  }

  /** Updates a membership and records `member.updated` with its new state. */
  private async writeMember(
    tx: Tx,
    roomId: string,
    userId: string,
    change: { role?: MemberRole; mutedUntil?: Date | null },
    by: string,
  ): Promise<void> {
    const rows = await sql(
      tx.em,
      `with before as (select role, muted_until from membership where room_id = ? and user_id = ? for update)
       update membership m set role = coalesce(?, m.role), muted_until = case when ? then ?::timestamptz else m.muted_until end
         from before
        where m.room_id = ? and m.user_id = ?
        returning m.role, m.muted_until,
                  (m.role is distinct from before.role or m.muted_until is distinct from before.muted_until) as changed`,
      [roomId, userId, change.role ?? null, change.mutedUntil !== undefined, change.mutedUntil ?? null, roomId, userId],
    );
    const r = rows[0];
    if (!r) throw notFound('member');
    if (!r.changed) return;
    await tx.append({
        type: 'member.updated',
        roomId,
        userId,
        role: r.role,
        mutedUntil: r.muted_until ? new Date(r.muted_until) : null,
        by,
      });
  }

  /** Inserts a membership, its `member.joined` event and (when `invite`) a `room.added` inbox item. */
  private async insertMember(
    tx: Tx,
    actor: Actor,
    roomId: string,
    userId: string,
    role: MemberRole,
    invite: { name: string; kind: string } | null,
  ): Promise<boolean> {
    const ins = await sql(
      tx.em,
      `insert into membership (room_id, user_id, role, joined_at, last_read_seq)
       values (?, ?, ?, now(), (select last_seq from room where id = ?))
       on conflict do nothing returning user_id`,
      [roomId, userId, role, roomId],
    );
    if (ins.length === 0) return false;
    await tx.append({ type: 'member.joined', roomId, userId, role, by: actor.id });
    if (invite && userId !== actor.id) {
      await tx.appendInbox(actor.tenant, userId, {
        type: 'room.added',
        roomId,
        roomName: invite.name,
        roomKind: invite.kind,
        by: actor.id,
      });
    }
    return true;
  }

  private async deleteMember(
    tx: Tx,
    roomId: string,
    userId: string,
    reason: 'left' | 'removed' | 'banned',
    by: string,
  ): Promise<void> {
    const del = await sql(tx.em, 'delete from membership where room_id = ? and user_id = ? returning user_id', [roomId, userId]);
    if (del.length === 0) throw notFound('member');
    await tx.append({ type: 'member.left', roomId, userId, reason, by });
  }

}
