import { randomUUID } from 'node:crypto';
import type { Actor } from '../../domain/actor.js';
import { AppError, badRequest, conflict } from '../../domain/errors.js';
import type { RoomDto } from '../../domain/rooms.js';
import {
  directKeyOf,
  directRoomId,
  insertRoom,
  isDirectRoomTaken,
  isRoomKeyTaken,
  lockRoomNaming,
  setRetentionDays,
  setRoomNaming,
} from '../../store/rooms.js';
import type { Store } from '../../store/store.js';
import type { AccessService } from '../access.js';
import type { RateLimits } from '../limits.js';
import type { Keyring } from '../keyring.js';
import { systemMessage } from '../system-message.js';
import { joinMember } from './member-changes.js';
import type { RoomReads } from './reads.js';

/** Creating rooms (group, support, broadcast; the one direct room of a pair) and changing their settings. */
export class RoomLifecycle {
  constructor(
    private readonly limits: RateLimits,
    private readonly access: AccessService,
    private readonly store: Store,
    private readonly keyring: Keyring,
    private readonly reads: RoomReads,
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
    await this.limits.consume('roomCreate', `${actor.tenant}:${actor.id}`);
    if (input.encrypted && !this.keyring.enabled) {
      throw new AppError('PRECONDITION_FAILED', 'encrypted rooms need MESSAGE_KEYS to be configured on the server');
    }
    const id = randomUUID();
    // Sorted: rows of several users are always locked in the same order (no deadlocks between rooms).
    const others = [...new Set(input.memberIds ?? [])].filter((m) => m !== actor.id).sort();
    try {
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
          createdBy: actor.id,
        });
        const { kind, name } = input;
        await tx.webhookEvent({ tenant: actor.tenant, roomId: id, type: 'room.created', data: { roomId: id, kind, name, topic: input.topic ?? null, key: input.key ?? null, createdBy: actor.id } });
        await joinMember(tx, actor, id, actor.id, 'owner', null);
        for (const m of others) await joinMember(tx, actor, id, m, 'member', { name: input.name, kind: input.kind });
      });
    } catch (err) {
      if (isRoomKeyTaken(err)) throw conflict(`a room with key "${input.key}" already exists`);
      throw err;
    }
    return this.reads.get(actor, id);
  }

  /** The one direct room of a pair of users; created on first use, idempotent under concurrency. */
  async openDirect(actor: Actor, userId: string): Promise<RoomDto> {
    if (userId === actor.id) throw badRequest('cannot open a direct room with yourself');
    const pair = [actor.id, userId].sort() as [string, string];
    const directKey = directKeyOf(pair);
    const find = () => directRoomId(this.store.db(), actor.tenant, directKey);
    let id = await find();
    if (!id) {
      await this.limits.consume('roomCreate', `${actor.tenant}:${actor.id}`);
      const newId = randomUUID();
      try {
        await this.store.transact(async (tx) => {
          await insertRoom(tx, {
            id: newId,
            tenant: actor.tenant,
            kind: 'direct',
            name: pair.join(', '),
            topic: null,
            key: null,
            directKey,
            encrypted: false,
            createdBy: actor.id,
          });
          await tx.webhookEvent({ tenant: actor.tenant, roomId: newId, type: 'room.created', data: { roomId: newId, kind: 'direct', name: pair.join(', '), topic: null, key: null, createdBy: actor.id } });
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
    input: { name?: string | undefined; topic?: string | null | undefined; retentionDays?: number | null | undefined },
  ): Promise<RoomDto> {
    if (input.name === undefined && input.topic === undefined && input.retentionDays === undefined) {
      throw badRequest('nothing to update: give name, topic and/or retentionDays');
    }
    await this.store.transact(async (tx) => {
      await this.access.requirePermission(actor, roomId, 'update', tx.em);
      const before = (await lockRoomNaming(tx, roomId))!;
      if (input.retentionDays !== undefined) await setRetentionDays(tx, roomId, input.retentionDays);
      const name = input.name ?? before.name;
      const topic = input.topic === undefined ? before.topic : input.topic;
      if (name === before.name && topic === before.topic) return;
      await setRoomNaming(tx, roomId, { name, topic });
      await tx.append({ type: 'room.updated', roomId, name, topic, by: actor.id });
      if (name !== before.name) await systemMessage(tx, actor, roomId, `${actor.name} renamed the room to "${name}"`);
    });
    return this.reads.get(actor, roomId);
  }
}
