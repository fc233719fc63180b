import { type Actor, isAdmin, isService } from '../domain/actor.js';
import { AppError, forbidden, notFound, roomArchived } from '../domain/errors.js';
import { can, ROLE_RANK, type RoomAction, type TenantAction, tenantMay, tenantRolesOf } from '../domain/permissions.js';
import { FOREVER, type RoomAccess } from '../domain/rooms.js';
import type { Em } from '../store/database.js';
import { type AccessRow, accessRows } from '../store/hot/access.js';
import type { Store } from '../store/store.js';
import type { Tx } from '../store/tx.js';
import { SendBatcher } from './send-batcher.js';
import { setNewest } from '../util/bounded.js';

/** Access rows a node keeps for sends (the oldest goes first). */
export const SEND_ACCESS_CACHE_MAX = 20_000;

/** A send's access, and the room's access version of the row it was decided on (a cached row, or one just read). */
export interface SendAccess {
  access: RoomAccess;
  /** The write verifies it under the room's lock (src/store/hot/append-messages.ts). */
  version: number;
}

/** An access check's answer, and the room's access version of the row it was decided on (null: no row). */
interface Checked {
  result: RoomAccess | AppError;
  version: number | null;
}

/**
 * What the caller wants to do: `read` (history, search, subscriptions) or `send` (post, edit,
 * react, type: also not muted, and the room not archived).
 */
export interface AccessRequest {
  actor: Actor;
  roomId: string;
  /**
   * `manage`: adding and removing members (service tokens without a membership). `repeat`: being
   * answered the original of one's own send that went through (a retry with its clientId): who may
   * send or read, whatever came since (archived, muted).
   */
  purpose: 'read' | 'send' | 'manage' | 'repeat';
}

/**
 * The one "is the room writable" rule: an archived room is read-only for everyone. Applied by every
 * `send` access check, and by `requireWritable` to writes that are not sends (message deletes).
 */
function requireNotArchived(room: RoomAccess['room']): void {
  if (room.archived) throw roomArchived();
}

/** Words for an action in an error message ("may not ... in this group room"). */
export function describeAction(action: RoomAction): string {
  const words: Record<RoomAction, string> = {
    send: 'post',
    addMembers: 'add members',
    removeMember: 'remove members',
    update: 'change the room',
    setRole: 'change roles',
    mute: 'mute members',
    ban: 'ban members',
    deleteOthers: "delete others' messages",
    archive: 'archive the room',
    delete: 'delete the room',
  };
  return words[action];
}

/** The access a room action is checked with: adding and removing members is `manage` (service tokens). */
function purposeOf(action: RoomAction): AccessRequest['purpose'] {
  return action === 'send' ? 'send' : action === 'addMembers' || action === 'removeMember' ? 'manage' : 'read';
}

/** The role's permission for `action` (FORBIDDEN with the reason otherwise). */
function requireCan(access: RoomAccess, action: RoomAction): void {
  if (!can(access.role, action, access.room.kind)) {
    throw forbidden(`your role (${access.role}) may not ${describeAction(action)} in this ${access.room.kind} room`);
  }
}

/** A member's right to archive, unarchive or delete the room (FORBIDDEN with the reason otherwise). */
function requireManagerRole(access: RoomAccess, action: 'archive' | 'delete'): void {
  if (!can(access.role, action, access.room.kind)) {
    throw forbidden(`your role (${access.role}) may not ${describeAction(action)}: only its owner or a tenant admin may`);
  }
}

/** Words for a tenant-level action in an error message ("only service tokens may ..."). */
const TENANT_WORDS: Record<TenantAction, string> = {
  setRoomKey: 'set a room key (room keys link rooms to records of the integration)',
  manageAnyRoom: 'manage members of rooms they are not in',
  sendSystem: 'send system messages',
  sendCard: 'send card messages',
};

/**
 * The role a tenant's integration has in any room of its tenant, member or not: service tokens post
 * (`send`, `repeat`) as a room admin, and integrations add and remove the people of the rooms they
 * run (`manage`, the `manageAnyRoom` right) like one. Null: none beyond a membership.
 */
function integrationRole(actor: Actor, purpose: AccessRequest['purpose']): 'admin' | null {
  if ((purpose === 'send' || purpose === 'repeat') && actor.roles.includes('service')) return 'admin';
  if (purpose === 'manage' && tenantMay(actor.roles, 'manageAnyRoom')) return 'admin';
  return null;
}

/** The rules of the access check, applied to the room's row as the caller sees it (none: not found). */
function decideAccess({ actor, purpose }: AccessRequest, r: AccessRow | undefined): RoomAccess {
  if (!r) throw notFound('room');
  const room = {
    id: r.id,
    kind: r.kind as RoomAccess['room']['kind'],
    name: r.name,
    tenant: r.tenant,
    encrypted: r.encrypted,
    archived: r.archived,
    lastSeq: r.last_seq,
  };
  let access: RoomAccess;
  if (r.role) {
    // A service token keeps the room admin's rights its tenant gives it when it is also a member
    // of lower role (a member to read the room): a membership never takes rights away.
    const role = integrationRole(actor, purpose) === 'admin' && ROLE_RANK[r.role] < ROLE_RANK.admin ? 'admin' : r.role;
    access = { room, role, member: true, mutedUntil: r.muted_until };
  } else if (r.banned) {
    // A ban also shuts out the access a support agent or a service token would otherwise have.
    throw notFound('room');
  } else if (room.kind === 'support' && actor.roles.includes('support')) {
    // Support agents read and answer; moderation stays with the room's own roles.
    access = { room, role: 'member', member: false, mutedUntil: null };
  } else if (integrationRole(actor, purpose) === 'admin') {
    access = { room, role: 'admin', member: false, mutedUntil: null };
  } else {
    throw notFound('room');
  }
  if (purpose === 'send') requireNotArchived(room);
  if (purpose === 'send' && isMuted(access)) {
    const until = access.mutedUntil.getTime() >= FOREVER.getTime() ? 'until unmuted' : `until ${access.mutedUntil.toISOString()}`;
    throw forbidden(`you are muted in this room ${until}`);
  }
  return access;
}

/** Whether the member is muted in the room now: who may not post may not speak in its calls either. */
export function isMuted(access: Pick<RoomAccess, 'mutedUntil'>, now = Date.now()): access is Pick<RoomAccess, 'mutedUntil'> & { mutedUntil: Date } {
  return access.mutedUntil !== null && access.mutedUntil.getTime() > now;
}

/**
 * The one access check. Members act with their role; on `support` rooms every user holding the
 * `support` role of the tenant reads and answers like a member (no moderation); `service` tokens
 * may post into any room of their tenant and add and remove its members (as a room admin).
 * Anyone else gets NOT_FOUND: a non-member learns nothing, not even that the room exists. Sending
 * also requires not being muted. Tenant-level actions (room keys, system and card messages) are
 * checked by `requireTenant`, from the same permission table (src/domain/permissions.ts).
 */
export class AccessService {
  /**
   * Checks outside a transaction, grouped: one query for every check waiting while another runs
   * (a reconnect wave of a big room's members opening their streams at once, say). A check that
   * finds nothing running goes at once, so a lone one waits for nobody (src/services/send-batcher.ts).
   */
  private readonly grouped: SendBatcher<AccessRequest, Checked>;
  /**
   * The last access row of a send checked outside a transaction per (tenant, user, room). A row is only
   * ever trusted to allow a send, never to refuse one, and the send is then written only while the
   * room's `access_version` still equals the row's (checked under the room's lock by the write,
   * src/store/hot/append-messages.ts): a membership, role, mute, ban or room change committed on any
   * node since makes the send `stale`, and it is checked again. A send checked against the database
   * is verified the same way, with the version of the row it was decided on.
   */
  private readonly sendRows = new Map<string, AccessRow>();
  /** Sends allowed from a cached row, and cached rows found stale by the write. */
  readonly cacheStats = { hits: 0, stale: 0 };

  constructor(private readonly store: Store) {
    this.grouped = new SendBatcher((requests) => this.checkRows(requests));
  }

  /**
   * A plain send's access: from this node's cached row when that row allows it, otherwise checked
   * in the next group, which caches the row. Either way the write verifies the row's version, so a
   * change committed between this check and the write is never missed.
   */
  async checkSend(actor: Actor, roomId: string): Promise<SendAccess | AppError> {
    const row = this.sendRows.get(rowKey(actor.tenant, actor.id, roomId));
    if (row) {
      try {
        const access = decideAccess({ actor, roomId, purpose: 'send' }, row);
        this.cacheStats.hits++;
        return { access, version: row.access_version };
      } catch {
        // A refusal is never taken from the cache: the database answers below.
      }
    }
    const checked = await this.grouped.submit({ actor, roomId, purpose: 'send' });
    return checked.result instanceof AppError ? checked.result : { access: checked.result, version: checked.version! };
  }

  /** The write found the room's access version changed since the cached row: drops the row. */
  forgetSend(actor: Actor, roomId: string): void {
    this.cacheStats.stale++;
    this.sendRows.delete(rowKey(actor.tenant, actor.id, roomId));
  }

  private remember(row: AccessRow, userId: string): void {
    setNewest(this.sendRows, rowKey(row.tenant, userId, row.id), row, SEND_ACCESS_CACHE_MAX);
  }

  /** Read (`read`), post (`send`) or member management (`manage`) access; in a transaction given its EntityManager. */
  async requireAccess(actor: Actor, roomId: string, purpose: AccessRequest['purpose'], em?: Em): Promise<RoomAccess> {
    const access = em ? (await this.checkAccess([{ actor, roomId, purpose }], em))[0] : await this.checkGrouped({ actor, roomId, purpose });
    if (access instanceof AppError) throw access;
    return access!;
  }

  /** One check outside a transaction, in the next group: its access, or the error `requireAccess` would throw. */
  async checkGrouped(request: AccessRequest): Promise<RoomAccess | AppError> {
    return (await this.grouped.submit(request)).result;
  }

  /**
   * `requireAccess` for several requests in one query (grouped sends): per request its access, or
   * the error `requireAccess` would throw.
   */
  async checkAccess(requests: AccessRequest[], em?: Em): Promise<(RoomAccess | AppError)[]> {
    return (await this.checkRows(requests, em)).map((c) => c.result);
  }

  /** `checkAccess`, each answer with the access version of the row it was decided on. */
  private async checkRows(requests: AccessRequest[], em?: Em): Promise<Checked[]> {
    const rows = await accessRows(
      this.store.hot,
      requests.map((q) => ({ userId: q.actor.id, tenant: q.actor.tenant, roomId: q.roomId })),
      em,
    );
    const byRequest = new Map(rows.map((r) => [r.i, r]));
    // The rows of sends are kept (not of reads and subscriptions: a reader who never posts holds
    // none), and only those read outside a transaction (one may hold its uncommitted changes).
    if (!em) {
      for (const r of rows) {
        const q = requests[r.i]!;
        if (q.purpose === 'send') this.remember(r, q.actor.id);
      }
    }
    return requests.map((q, i) => {
      const row = byRequest.get(i);
      const version = row ? Number(row.access_version) : null;
      try {
        return { result: decideAccess(q, row), version };
      } catch (err) {
        if (err instanceof AppError) return { result: err, version };
        throw err;
      }
    });
  }

  /**
   * `requireAccess` for a change written in `tx` with the room's next seq (a reply, a message with
   * mentions or files, an edit, a reaction, a delete; moderation and room changes, which take the
   * room's lock with `tx.lockRoom` before their first write), held to until the write: the check runs
   * now, and again once the change holds the room's lock if the room's `access_version` moved in
   * between (src/store/tx.ts `whenRoomLocked`). A ban, removal, leave, role change, mute or archive that
   * committed after this check and before the lock is then applied as if it had come first: the
   * change is refused with the error a check after it gives, the transaction rolls back and no seq is
   * used. Without it, a change that passed its check just before a ban landed after the ban's
   * `member.left`. `rule` adds the caller's conditions on the access (the poster rule, the right to
   * delete others' messages), applied both times; `refused` rewrites a refusal of the access itself
   * (a message's caller is told the message is not found, not the room).
   */
  async requireInTx(
    tx: Tx,
    actor: Actor,
    roomId: string,
    purpose: AccessRequest['purpose'],
    opts: { rule?: (access: RoomAccess) => void; refused?: (err: AppError) => AppError } = {},
  ): Promise<RoomAccess> {
    const request: AccessRequest = { actor, roomId, purpose };
    const check = async (): Promise<{ access: RoomAccess; version: number }> => {
      const [row] = await accessRows(this.store.hot, [{ userId: actor.id, tenant: actor.tenant, roomId }], tx.em);
      let access: RoomAccess;
      try {
        access = decideAccess(request, row);
      } catch (err) {
        throw err instanceof AppError && opts.refused ? opts.refused(err) : err;
      }
      opts.rule?.(access);
      return { access, version: Number(row!.access_version) };
    };
    const first = await check();
    tx.whenRoomLocked(roomId, async (version) => {
      // Unchanged since the check: its answer stands. Changed: the check again, under the lock.
      if (version !== first.version) await check();
    });
    return first.access;
  }

  /** Read access (members, and support agents on support rooms). */
  requireMember(actor: Actor, roomId: string, em?: Em): Promise<RoomAccess> {
    return this.requireAccess(actor, roomId, 'read', em);
  }

  /** Access plus the role's permission for `action` (FORBIDDEN with the reason otherwise). */
  async requirePermission(actor: Actor, roomId: string, action: RoomAction, em?: Em): Promise<RoomAccess> {
    const access = await this.requireAccess(actor, roomId, purposeOf(action), em);
    requireCan(access, action);
    return access;
  }

  /**
   * `requirePermission` for a change written in `tx`, held to until the room's lock like `requireInTx`:
   * a moderation or room change (a ban, a role change, a removal, a room update) whose actor is
   * demoted, removed or banned by a change committed before that lock is refused as if that change
   * had come first. `rule` adds the caller's conditions (outranking the target), applied both times.
   */
  requirePermissionInTx(tx: Tx, actor: Actor, roomId: string, action: RoomAction, rule?: (access: RoomAccess) => void): Promise<RoomAccess> {
    return this.requireInTx(tx, actor, roomId, purposeOf(action), {
      rule: (access) => {
        requireCan(access, action);
        rule?.(access);
      },
    });
  }

  /** A tenant-level permission of the token (FORBIDDEN naming the roles it needs otherwise). */
  requireTenant(actor: Actor, action: TenantAction): void {
    if (!tenantMay(actor.roles, action)) throw forbidden(`only ${tenantRolesOf(action)} tokens may ${TENANT_WORDS[action]}`);
  }

  /**
   * Posting in the room with the role held now: broadcast rooms take posts (and edits of posts)
   * from their admins and owner only. Applied to sends and to edits, so a demoted admin cannot
   * rewrite old posts either.
   */
  requirePoster(access: RoomAccess): void {
    if (!can(access.role, 'send', access.room.kind)) {
      throw forbidden(`only admins and the owner may post in a ${access.room.kind} room`);
    }
  }

  /** A write other than a send (deleting a message) into a room read with `requireMember`: not archived. */
  requireWritable(access: RoomAccess): void {
    requireNotArchived(access.room);
  }

  /**
   * Room-wide changes (archive, unarchive, delete): the room's owner, an admin of the tenant or a
   * service token of the tenant. Works on archived rooms. NOT_FOUND for whoever cannot see the room,
   * FORBIDDEN for members without the right.
   */
  async requireRoomManager(actor: Actor, roomId: string, action: 'archive' | 'delete', em?: Em): Promise<RoomAccess> {
    if (isAdmin(actor) || isService(actor)) {
      const [row] = await accessRows(this.store.hot, [{ userId: actor.id, tenant: actor.tenant, roomId }], em);
      if (!row) throw notFound('room');
      return decideAccess({ actor, roomId, purpose: 'read' }, { ...row, role: row.role ?? 'owner', banned: false });
    }
    const access = await this.requireAccess(actor, roomId, 'read', em);
    requireManagerRole(access, action);
    return access;
  }

  /**
   * `requireRoomManager` for a change written in `tx`: a member's right (the owner's) is held to until
   * the room's lock like `requireInTx`, so an owner who handed over ownership meanwhile is refused. A
   * tenant admin's or service token's right is its token's, not the room's: nothing to hold to.
   */
  requireRoomManagerInTx(tx: Tx, actor: Actor, roomId: string, action: 'archive' | 'delete'): Promise<RoomAccess> {
    if (isAdmin(actor) || isService(actor)) return this.requireRoomManager(actor, roomId, action, tx.em);
    return this.requireInTx(tx, actor, roomId, 'read', { rule: (access) => requireManagerRole(access, action) });
  }
}

/** The cache key of a user's access row of a room. */
const rowKey = (tenant: string, userId: string, roomId: string) => `${tenant}\n${userId}\n${roomId}`;
