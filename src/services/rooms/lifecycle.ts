import { keyOf } from '../../domain/ids.js';
import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { Actor } from '../../domain/actor.js';
import { AppError, badRequest, conflict } from '../../domain/errors.js';
import type { JsonObject } from '../../domain/events.js';
import type { RoomDto, RoomVisibility } from '../../domain/rooms.js';
import {
  directKeyOf,
  directRoomId,
  directRoomName,
  insertRoom,
  isDirectRoomTaken,
  isRoomKeyTaken,
  lockRoomNaming,
  roomIdsByKey,
  setRetentionDays,
  setRoomMetadata,
  setRoomNaming,
  setVisibility,
} from '../../store/rooms.js';
import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import type { Logger } from '../../logger.js';
import type { RateLimits } from '../limits.js';
import type { Keyring } from '../keyring.js';
import { systemMessage } from '../system-message.js';
import { joinMember } from './member-changes.js';
import { auditModeration, RETRY, recordModeration } from './moderation.js';
import type { RoomMembership } from './membership.js';
import type { RoomReads } from './reads.js';

/** Creating rooms (group, support, broadcast; the one direct room of a pair) and changing their settings. */
export class RoomLifecycle {
  constructor(
    private readonly log: Logger,
    private readonly limits: RateLimits,
    private readonly access: AccessService,
    private readonly store: Store,
    private readonly keyring: Keyring,
    private readonly reads: RoomReads,
    private readonly membership: RoomMembership,
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
      metadata?: JsonObject | null | undefined;
      visibility?: RoomVisibility | undefined;
    },
  ): Promise<RoomDto> {
    if (input.key) this.access.requireTenant(actor, 'setRoomKey');
    const id = randomUUID();
    try {
      await this.insert(actor, id, input);
    } catch (err) {
      if (isRoomKeyTaken(err)) throw conflict(`a room with key "${input.key}" already exists`);
      throw err;
    }
    return this.reads.get(actor, id);
  }

  /**
   * The room of an external key (`order:4711`), created on first use like `create` (service and
   * admin tokens). Later calls, also concurrent ones, return that room: they add the members it
   * lacks (never remove any) and change nothing else. The unique key keeps it to one room. The call
   * that creates the room spends a room creation (`charged`); every other one, also a loser of a
   * concurrent first use, spends the caller's action budget like `room.addMembers` (it may add
   * members just the same), before anything is added.
   */
  async ensure(actor: Actor, input: Parameters<RoomLifecycle['create']>[1] & { key: string }): Promise<RoomDto> {
    this.access.requireTenant(actor, 'setRoomKey');
    const find = async () => (await roomIdsByKey(this.store.db(), actor.tenant, input.key))[0];
    let id = await find();
    if (!id) {
      const newId = randomUUID();
      try {
        await this.insert(actor, newId, input);
        return await this.reads.get(actor, newId);
      } catch (err) {
        // Created by a concurrent ensure meanwhile: the unique key kept it to one room.
        if (!isRoomKeyTaken(err)) throw err;
        id = await find();
        if (!id) throw err;
      }
    }
    await this.limits.consume('action', keyOf(actor.tenant, actor.id));
    const missing = [...new Set(input.memberIds ?? [])].filter((m) => m !== actor.id);
    if (missing.length) await this.membership.addMembers(actor, id, missing);
    return this.reads.get(actor, id, 'manage');
  }

  /**
   * Inserts a room with its creator as owner and its first members, in one transaction, after the
   * encryption precondition. The creator's rate limit is taken once the room's row is in (`charged`).
   */
  private async insert(actor: Actor, id: string, input: Parameters<RoomLifecycle['create']>[1]): Promise<void> {
    if (input.encrypted && !this.keyring.enabled) {
      throw new AppError('PRECONDITION_FAILED', 'encrypted rooms need MESSAGE_KEYS to be configured on the server');
    }
    // Sorted: rows of several users are always locked in the same order (no deadlocks between rooms).
    const others = [...new Set(input.memberIds ?? [])].filter((m) => m !== actor.id).sort();
    await this.store.transact(async (tx) => {
      await insertRoom(tx, {
        id,
        tenant: actor.tenant,
        kind: input.kind,
        name: input.name,
        topic: input.topic ?? null,
        key: input.key ?? null,
        directKey: null,
        encrypted: !!input.encrypted,
        metadata: input.metadata ?? null,
        createdBy: actor.id,
        visibility: input.visibility ?? 'private',
      });
      await this.charged(actor);
      const { kind, name } = input;
      await tx.webhookEvent({
        tenant: actor.tenant,
        roomId: id,
        type: 'room.created',
        data: {
          roomId: id,
          kind,
          name,
          topic: input.topic ?? null,
          key: input.key ?? null,
          metadata: input.metadata ?? null,
          visibility: input.visibility ?? 'private',
          createdBy: actor.id,
        },
      });
      await joinMember(tx, actor, id, actor.id, 'owner', null);
      for (const m of others) await joinMember(tx, actor, id, m, 'member', { name: input.name, kind: input.kind });
    });
  }

  /**
   * Takes a room creation from the creator's rate limit, inside the creating transaction once the
   * room's row is in: a concurrent first use of the same key (`ensure`) or pair (`openDirect`) waits
   * at that insert for the winner's commit, then finds the winner's room and is answered with it,
   * spending no room creation (charged before, every loser of such a race spent a creation and those over
   * the budget were refused, though only one room was made). Over the budget: the transaction
   * rolls back, TOO_MANY_REQUESTS.
   */
  private charged(actor: Actor): Promise<void> {
    return this.limits.consume('roomCreate', keyOf(actor.tenant, actor.id));
  }

  /** The one direct room of a pair of users; created on first use, idempotent under concurrency. */
  async openDirect(actor: Actor, userId: string): Promise<RoomDto> {
    if (userId === actor.id) throw badRequest('cannot open a direct room with yourself');
    const pair = [actor.id, userId].sort() as [string, string];
    const directKey = directKeyOf(pair);
    const name = directRoomName(pair);
    const find = () => directRoomId(this.store.db(), actor.tenant, directKey);
    let id = await find();
    if (!id) {
      const newId = randomUUID();
      try {
        await this.store.transact(async (tx) => {
          await insertRoom(tx, {
            id: newId,
            tenant: actor.tenant,
            kind: 'direct',
            name,
            topic: null,
            key: null,
            directKey,
            encrypted: false,
            metadata: null,
            createdBy: actor.id,
          });
          await this.charged(actor);
          await tx.webhookEvent({
            tenant: actor.tenant,
            roomId: newId,
            type: 'room.created',
            data: {
              roomId: newId,
              kind: 'direct',
              name,
              topic: null,
              key: null,
              metadata: null,
              visibility: 'private',
              createdBy: actor.id,
            },
          });
          for (const u of pair) await joinMember(tx, actor, newId, u, 'member', null);
          await tx.appendInbox(actor.tenant, userId, { type: 'direct.created', roomId: newId, userId: actor.id });
        });
        id = newId;
      } catch (err) {
        // Created by a concurrent call meanwhile: the unique key kept it to one room.
        if (!isDirectRoomTaken(err)) throw err;
        id = await find();
        if (!id) throw err;
      }
    }
    return this.reads.get(actor, id);
  }

  async update(
    actor: Actor,
    roomId: string,
    input: {
      name?: string | undefined;
      topic?: string | null | undefined;
      retentionDays?: number | null | undefined;
      visibility?: RoomVisibility | undefined;
      metadata?: JsonObject | null | undefined;
    },
  ): Promise<RoomDto> {
    if (input.name === undefined && input.topic === undefined && input.retentionDays === undefined && input.visibility === undefined && input.metadata === undefined) {
      throw badRequest('nothing to update: give name, topic, retentionDays, visibility and/or metadata');
    }
    const audited = await this.store.transact(async (tx) => {
      // Held to under the room's lock (taken before any write: a change of the retention or the
      // visibility alone appends no event), so an admin demoted meanwhile is refused.
      await this.access.requirePermissionInTx(tx, actor, roomId, 'update');
      await tx.lockRoom(roomId);
      const before = (await lockRoomNaming(tx, roomId))!;
      // A new retention makes the retention worker delete older messages: audited (old and new value).
      const retention =
        input.retentionDays !== undefined && input.retentionDays !== before.retention_days
          ? { retentionDays: input.retentionDays, previous: before.retention_days }
          : null;
      if (retention) {
        await setRetentionDays(tx, roomId, retention.retentionDays);
        await recordModeration(tx, 'room.set_retention', actor, roomId, null, retention);
      }
      // A new visibility changes who finds and joins the room (a public room's history is open to
      // every user of the tenant who joins): audited like the retention, and like it no room event.
      const visibility =
        input.visibility !== undefined && input.visibility !== before.visibility ? { visibility: input.visibility, previous: before.visibility } : null;
      if (visibility) {
        await setVisibility(tx, roomId, visibility.visibility);
        await recordModeration(tx, 'room.set_visibility', actor, roomId, null, visibility);
      }
      const changed = { retention, visibility };
      if (input.metadata !== undefined) await setRoomMetadata(tx, roomId, input.metadata);
      const name = input.name ?? before.name;
      const topic = input.topic === undefined ? before.topic : input.topic;
      const metadata = input.metadata === undefined ? before.metadata : input.metadata;
      const renamed = name !== before.name || topic !== before.topic;
      // Read back from jsonb, the stored metadata has its own key order: compared by value.
      if (!renamed && isDeepStrictEqual(metadata, before.metadata)) return changed;
      if (renamed) await setRoomNaming(tx, roomId, { name, topic });
      await tx.append({ type: 'room.updated', roomId, name, topic, metadata, by: actor.id });
      if (name !== before.name) await systemMessage(tx, actor, roomId, `${actor.name} renamed the room to "${name}"`);
      return changed;
    }, RETRY);
    if (audited.retention) auditModeration(this.log, 'set_retention', actor, roomId, null, audited.retention);
    if (audited.visibility) auditModeration(this.log, 'set_visibility', actor, roomId, null, audited.visibility);
    return this.reads.get(actor, roomId);
  }
}
