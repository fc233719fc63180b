import { randomUUID } from 'node:crypto';
import { UniqueConstraintViolationException } from '@mikro-orm/core';
import type { DurableRoomEvent, MemberRole, MessageDto } from '../domain/events.js';
import type { Actor } from '../domain/actor.js';
import { type Deps, type Em, em as fork, hotQuery, sql } from './deps.js';
import { AppError, badRequest, conflict, forbidden, notFound } from '../domain/errors.js';
import type { InboxService } from './inbox.js';
import type { Keyring } from './keyring.js';
import { MESSAGE_COLUMNS, type MessageMapper } from './message-dto.js';
import { can, outranks, ROLE_RANK, type RoomAction, type RoomKind } from '../domain/permissions.js';
import { UNREAD_SQL } from './receipts.js';
import type { AfterCommit, RoomLog } from './room-log.js';

export interface RoomDto {
  id: string;
  kind: RoomKind;
  name: string;
  topic: string | null;
  key: string | null;
  encrypted: boolean;
  /** Messages older than this many days are removed (null: the server default). */
  retentionDays: number | null;
  createdBy: string;
  createdAt: Date;
  lastSeq: number;
  /** The caller's role in the room (support agents and service tokens get a role without membership). */
  myRole: MemberRole;
  memberCount: number;
}

export interface RoomListItem extends RoomDto {
  unreadCount: number;
  lastReadSeq: number;
  lastMessage: MessageDto | null;
}

export interface MemberDto {
  userId: string;
  name: string | null;
  role: MemberRole;
  joinedAt: Date;
  lastReadSeq: number;
  mutedUntil: Date | null;
}

/** The caller's access to a room, as resolved by `requireAccess`. */
export interface RoomAccess {
  room: { id: string; kind: RoomKind; name: string; tenant: string; encrypted: boolean };
  role: MemberRole;
  /** False for support agents and service tokens acting without a membership. */
  member: boolean;
  mutedUntil: Date | null;
}

export type Emit = (e: DurableRoomEvent) => void;

/** Muting without an end date lasts until unmuted. */
const FOREVER = new Date('9999-12-31T00:00:00Z');

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

function describe(action: RoomAction): string {
  const words: Record<RoomAction, string> = {
    send: 'post',
    addMembers: 'add members',
    removeMember: 'remove members',
    update: 'change the room',
    setRole: 'change roles',
    mute: 'mute members',
    ban: 'ban members',
    deleteOthers: "delete others' messages",
  };
  return words[action];
}

export interface AccessRequest {
  actor: Actor;
  roomId: string;
  purpose: 'read' | 'send';
}

/** The room of each request with the caller's membership and ban (no row: no such room in the caller's tenant). */
const ACCESS_QUERY = hotQuery(
  'rooms-check-access',
  `select q.i, r.id, r.kind, r.name, r.tenant, r.encrypted, mb.role, mb.muted_until,
          exists (select 1 from room_ban b where b.room_id = r.id and b.user_id = q.user_id) as banned
     from json_to_recordset(?::json) as q(i int, user_id text, room_id uuid, tenant text)
     join room r on r.id = q.room_id and r.tenant = q.tenant
     left join membership mb on mb.room_id = r.id and mb.user_id = q.user_id`,
);

/** The rules of the access check, applied to the room's row as the caller sees it (none: not found). */
function decideAccess({ actor, purpose }: AccessRequest, r: Record<string, any> | undefined): RoomAccess {
  if (!r) throw notFound('room');
  const room = { id: r.id, kind: r.kind, name: r.name, tenant: r.tenant, encrypted: !!r.encrypted };
  let access: RoomAccess;
  if (r.role) {
    access = { room, role: r.role, member: true, mutedUntil: r.muted_until ? new Date(r.muted_until) : null };
  } else if (r.banned) {
    // A ban also shuts out the access a support agent or a service token would otherwise have.
    throw notFound('room');
  } else if (room.kind === 'support' && actor.roles.includes('support')) {
    // Support agents read and answer; moderation stays with the room's own roles.
    access = { room, role: 'member', member: false, mutedUntil: null };
  } else if (purpose === 'send' && actor.roles.includes('service')) {
    access = { room, role: 'admin', member: false, mutedUntil: null };
  } else {
    throw notFound('room');
  }
  if (purpose === 'send' && access.mutedUntil && access.mutedUntil.getTime() > Date.now()) {
    const until = access.mutedUntil.getTime() >= FOREVER.getTime() ? 'until unmuted' : `until ${access.mutedUntil.toISOString()}`;
    throw forbidden(`you are muted in this room ${until}`);
  }
  return access;
}

/** Rooms, memberships, moderation and the rules about who may see and change them. */
export class RoomService {
  constructor(
    private readonly deps: Deps,
    private readonly log: RoomLog,
    private readonly inbox: InboxService,
    private readonly mapper: MessageMapper,
    private readonly keyring: Keyring,
  ) {}

  /**
   * The one access check. Members act with their role; on `support` rooms every user holding the
   * `support` role of the tenant reads and answers like a member (no moderation); `service` tokens may post into
   * any room of their tenant. Anyone else gets NOT_FOUND: a non-member learns nothing, not even that
   * the room exists. Sending also requires not being muted.
   */
  async requireAccess(actor: Actor, roomId: string, purpose: 'read' | 'send', em?: Em): Promise<RoomAccess> {
    const [access] = await this.checkAccess([{ actor, roomId, purpose }], em);
    if (access instanceof AppError) throw access;
    return access!;
  }

  /**
   * `requireAccess` for several requests in one query (grouped sends): per request its access, or
   * the error `requireAccess` would throw.
   */
  async checkAccess(requests: AccessRequest[], em?: Em): Promise<(RoomAccess | AppError)[]> {
    const rows = await ACCESS_QUERY(
      this.deps,
      [JSON.stringify(requests.map((q, i) => ({ i, user_id: q.actor.id, room_id: q.roomId, tenant: q.actor.tenant })))],
      em,
    );
    const byRequest = new Map(rows.map((r) => [r.i as number, r]));
    return requests.map((q, i) => {
      try {
        return decideAccess(q, byRequest.get(i));
      } catch (err) {
        if (err instanceof AppError) return err;
        throw err;
      }
    });
  }

  /** Read access (members, and support agents on support rooms). */
  requireMember(actor: Actor, roomId: string, em?: Em): Promise<RoomAccess> {
    return this.requireAccess(actor, roomId, 'read', em);
  }

  async requirePermission(actor: Actor, roomId: string, action: RoomAction, em?: Em): Promise<RoomAccess> {
    const access = await this.requireAccess(actor, roomId, action === 'send' ? 'send' : 'read', em);
    if (!can(access.role, action, access.room.kind)) {
      throw forbidden(`your role (${access.role}) may not ${describe(action)} in this ${access.room.kind} room`);
    }
    return access;
  }

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
      await this.log.transact(async (em, emit, after) => {
        await sql(
          em,
          `insert into room (id, tenant, kind, name, topic, key, direct_key, encrypted, created_by, last_seq, created_at, updated_at)
           values (?, ?, ?, ?, ?, ?, null, ?, ?, 0, now(), now())`,
          [id, actor.tenant, input.kind, input.name, input.topic ?? null, input.key ?? null, !!input.encrypted, actor.id],
        );
        await this.insertMember(em, emit, after, actor, id, actor.id, 'owner', null);
        for (const m of others) await this.insertMember(em, emit, after, actor, id, m, 'member', { name: input.name, kind: input.kind });
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
        await this.log.transact(async (em, emit, after) => {
          await sql(
            em,
            `insert into room (id, tenant, kind, name, topic, key, direct_key, created_by, last_seq, created_at, updated_at)
             values (?, ?, 'direct', ?, null, null, ?, ?, 0, now(), now())`,
            [newId, actor.tenant, pair.join(', '), directKey, actor.id],
          );
          for (const u of pair) await this.insertMember(em, emit, after, actor, newId, u, 'member', null);
          await this.inbox.append(em, after, actor.tenant, userId, { type: 'direct.created', roomId: newId, userId: actor.id });
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
    const access = await this.requireMember(actor, roomId);
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
    const ids = rows.map((r) => r.last_message_id).filter(Boolean);
    const lastRows = ids.length
      ? await sql(em, `select ${MESSAGE_COLUMNS} from message m where m.id = any(array[?]::uuid[])`, [ids])
      : [];
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
    await this.requireMember(actor, roomId);
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
    await this.log.transact(async (em, emit, after) => {
      const access = await this.requirePermission(actor, roomId, 'addMembers', em);
      const unique = [...new Set(userIds)].sort();
      const banned = await sql<{ user_id: string }>(em, 'select user_id from room_ban where room_id = ? and user_id = any(array[?]::text[])', [
        roomId,
        unique,
      ]);
      if (banned.length) throw forbidden(`banned from this room: ${banned.map((b) => b.user_id).join(', ')} (unban first)`);
      for (const u of unique) {
        const ok = await this.insertMember(em, emit, after, actor, roomId, u, 'member', { name: access.room.name, kind: access.room.kind });
        if (ok) {
          added.push(u);
          await this.systemMessage(em, emit, actor, roomId, `${actor.name} added ${u}`);
        }
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
      await this.systemMessage(em, emit, actor, roomId, `${actor.name} removed ${userId}`);
    });
    this.audit('remove', actor, roomId, userId);
  }

  async leave(actor: Actor, roomId: string): Promise<void> {
    await this.log.transact(async (em, emit) => {
      const access = await this.requireMember(actor, roomId, em);
      if (!access.member) throw badRequest('you are not a member of this room');
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
          await this.writeMember(em, emit, roomId, next[0].user_id, { role: 'owner' }, actor.id);
        }
      }
      await this.systemMessage(em, emit, actor, roomId, `${actor.name} left`);
    });
  }

  /**
   * Changes a member's role. Needs `setRole` and to outrank both the target's current and new role;
   * only the owner hands over ownership (and becomes an admin).
   */
  async setRole(actor: Actor, roomId: string, userId: string, role: MemberRole): Promise<MemberDto> {
    if (userId === actor.id) throw badRequest('you cannot change your own role');
    await this.log.transact(async (em, emit) => {
      const access = await this.requirePermission(actor, roomId, 'setRole', em);
      const current = await this.memberRole(em, roomId, userId, true);
      if (!current) throw notFound('member');
      if (role === 'owner') {
        if (access.role !== 'owner') throw forbidden('only the owner can hand over ownership');
        await this.writeMember(em, emit, roomId, actor.id, { role: 'admin' }, actor.id);
      } else if (!outranks(access.role, current) || ROLE_RANK[role] >= ROLE_RANK[access.role]) {
        throw forbidden(`a ${access.role} cannot make a ${current} a ${role}`);
      }
      if (current !== role) await this.writeMember(em, emit, roomId, userId, { role }, actor.id);
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
    await this.log.transact(async (em, emit) => {
      await this.requirePermission(actor, roomId, 'update', em);
      const before = (await sql(em, 'select name, topic from room where id = ? for update', [roomId]))[0]!;
      if (input.retentionDays !== undefined) {
        await sql(em, 'update room set retention_days = ? where id = ?', [input.retentionDays, roomId]);
      }
      const name = input.name ?? before.name;
      const topic = input.topic === undefined ? before.topic : input.topic;
      if (name === before.name && topic === before.topic) return;
      await sql(em, 'update room set name = ?, topic = ? where id = ?', [name, topic, roomId]);
      emit(await this.log.append(em, { type: 'room.updated', roomId, name, topic, by: actor.id }));
      if (name !== before.name) await this.systemMessage(em, emit, actor, roomId, `${actor.name} renamed the room to "${name}"`);
    });
    return this.get(actor, roomId);
  }

  /** Mutes a member (cannot send) until `until`, or until unmuted. */
  async mute(actor: Actor, roomId: string, userId: string, until: Date | null): Promise<MemberDto> {
    if (until && until.getTime() <= Date.now()) throw badRequest('until must be in the future');
    await this.moderate(actor, roomId, userId, 'mute', async (em, emit) => {
      await this.writeMember(em, emit, roomId, userId, { mutedUntil: until ?? FOREVER }, actor.id);
    });
    this.audit('mute', actor, roomId, userId, { until });
    return (await this.members(actor, roomId)).find((m) => m.userId === userId)!;
  }

  async unmute(actor: Actor, roomId: string, userId: string): Promise<MemberDto> {
    await this.moderate(actor, roomId, userId, 'mute', async (em, emit) => {
      await this.writeMember(em, emit, roomId, userId, { mutedUntil: null }, actor.id);
    });
    this.audit('unmute', actor, roomId, userId);
    return (await this.members(actor, roomId)).find((m) => m.userId === userId)!;
  }

  /** Bans a user: removes them (their live subscriptions end) and keeps them out until unbanned. */
  async ban(actor: Actor, roomId: string, userId: string): Promise<void> {
    if (userId === actor.id) throw badRequest('you cannot ban yourself');
    await this.log.transact(async (em, emit) => {
      const access = await this.requirePermission(actor, roomId, 'ban', em);
      const target = await this.memberRole(em, roomId, userId, true);
      if (target && !outranks(access.role, target)) throw forbidden(`a ${access.role} cannot ban a ${target}`);
      const added = await sql(
        em,
        'insert into room_ban (room_id, user_id, banned_by, created_at) values (?, ?, ?, now()) on conflict do nothing returning user_id',
        [roomId, userId, actor.id],
      );
      if (target) {
        await this.deleteMember(em, emit, roomId, userId, 'banned', actor.id);
        await this.systemMessage(em, emit, actor, roomId, `${actor.name} banned ${userId}`);
      } else if (added.length > 0 && access.room.kind === 'support') {
        // Support agents read support rooms without being members: the event ends an agent's open
        // streams of this room on every node (the hubs end the subscriptions of a leaving user).
        emit(await this.log.append(em, { type: 'member.left', roomId, userId, reason: 'banned', by: actor.id }));
      }
    });
    this.audit('ban', actor, roomId, userId);
  }

  async unban(actor: Actor, roomId: string, userId: string): Promise<{ unbanned: boolean }> {
    await this.requirePermission(actor, roomId, 'ban');
    const rows = await sql(fork(this.deps), 'delete from room_ban where room_id = ? and user_id = ? returning user_id', [roomId, userId]);
    this.audit('unban', actor, roomId, userId, { wasBanned: rows.length > 0 });
    return { unbanned: rows.length > 0 };
  }

  async bans(actor: Actor, roomId: string): Promise<{ userId: string; bannedBy: string; createdAt: Date }[]> {
    await this.requirePermission(actor, roomId, 'ban');
    const rows = await sql(fork(this.deps), 'select user_id, banned_by, created_at from room_ban where room_id = ? order by created_at', [roomId]);
    return rows.map((r) => ({ userId: r.user_id, bannedBy: r.banned_by, createdAt: new Date(r.created_at) }));
  }

  private async moderate(
    actor: Actor,
    roomId: string,
    userId: string,
    action: RoomAction,
    fn: (em: Em, emit: Emit) => Promise<void>,
  ): Promise<void> {
    if (userId === actor.id) throw badRequest(`you cannot ${describe(action)} on yourself`);
    await this.log.transact(async (em, emit) => {
      const access = await this.requirePermission(actor, roomId, action, em);
      const target = await this.memberRole(em, roomId, userId, true);
      if (!target) throw notFound('member');
      if (!outranks(access.role, target)) throw forbidden(`a ${access.role} cannot ${describe(action)} on a ${target}`);
      await fn(em, emit);
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
    em: Em,
    emit: Emit,
    roomId: string,
    userId: string,
    change: { role?: MemberRole; mutedUntil?: Date | null },
    by: string,
  ): Promise<void> {
    const rows = await sql(
      em,
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
    emit(
      await this.log.append(em, {
        type: 'member.updated',
        roomId,
        userId,
        role: r.role,
        mutedUntil: r.muted_until ? new Date(r.muted_until) : null,
        by,
      }),
    );
  }

  /** Inserts a membership, its `member.joined` event and (when `invite`) a `room.added` inbox item. */
  private async insertMember(
    em: Em,
    emit: Emit,
    after: AfterCommit,
    actor: Actor,
    roomId: string,
    userId: string,
    role: MemberRole,
    invite: { name: string; kind: string } | null,
  ): Promise<boolean> {
    const ins = await sql(
      em,
      `insert into membership (room_id, user_id, role, joined_at, last_read_seq)
       values (?, ?, ?, now(), (select last_seq from room where id = ?))
       on conflict do nothing returning user_id`,
      [roomId, userId, role, roomId],
    );
    if (ins.length === 0) return false;
    emit(await this.log.append(em, { type: 'member.joined', roomId, userId, role, by: actor.id }));
    if (invite && userId !== actor.id) {
      await this.inbox.append(em, after, actor.tenant, userId, {
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
    em: Em,
    emit: Emit,
    roomId: string,
    userId: string,
    reason: 'left' | 'removed' | 'banned',
    by: string,
  ): Promise<void> {
    const del = await sql(em, 'delete from membership where room_id = ? and user_id = ? returning user_id', [roomId, userId]);
    if (del.length === 0) throw notFound('member');
    emit(await this.log.append(em, { type: 'member.left', roomId, userId, reason, by }));
  }

  /**
   * Writes a `system` message (kind users cannot send) with its own seq. Used for joins, leaves,
   * removals, bans, renames and meetings.
   */
  async systemMessage(em: Em, emit: Emit, actor: Actor, roomId: string, body: string): Promise<MessageDto> {
    const id = randomUUID();
    const seq = await this.log.nextSeq(em, roomId);
    await this.log.record(em, roomId, seq, 'message.new', id, {});
    const rows = await sql(
      em,
      `insert into message (id, room_id, tenant, seq, sender_id, client_id, body, kind, attachments, mentions, created_at)
       values (?, ?, ?, ?, ?, null, ?, 'system', '[]', '[]', now())
       returning ${MESSAGE_COLUMNS.replaceAll('m.', '')}`,
      [id, roomId, actor.tenant, seq, actor.id, body],
    );
    const message = this.mapper.fromRow(rows[0]!);
    emit({ type: 'message.new', roomId, seq, message });
    return message;
  }
}
