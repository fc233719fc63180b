/**
 * Helpers for the moderation and authorization-matrix tests (createCaller against a real app).
 * Only used by test/moderation.test.ts and test/authz.matrix.test.ts.
 */
import { isTrackedEnvelope } from '@trpc/server';
import type { App } from '../src/app.js';
import type { InboxEvent, MessageDto } from '../src/domain/events.js';
import type { Actor } from '../src/domain/actor.js';
import { em, sql } from '../src/services/deps.js';
import { createCaller } from '../src/trpc/router.js';
import { actor, callerFor, uuid } from './helpers.js';
import { within } from './router-helpers.js';

/** The actors of the authorization matrix, from outside the room to its owner. */
export const ACTORS = ['nonMember', 'otherTenant', 'banned', 'muted', 'member', 'moderator', 'admin', 'owner'] as const;
export type ActorKey = (typeof ACTORS)[number];

/** The members of a fixture room (plus the two users who never belong to it). */
type Person = 'owner' | 'admin' | 'moderator' | 'member' | 'muted' | 'target' | 'banned' | 'outsider' | 'newcomer';
/** People who sent a message into the fixture room (banned before being banned, muted before being muted). */
type Author = 'owner' | 'admin' | 'moderator' | 'member' | 'muted' | 'target' | 'banned';

export const OTHER_TENANT = 'tenant-matrix-other';

export interface RoomFixture {
  roomId: string;
  /** Distinctive name that must never appear in an outsider's error. */
  roomName: string;
  /** A word in every message body; it must never appear in an outsider's error either. */
  secret: string;
  ids: Record<Person, string>;
  actors: Record<ActorKey, Actor>;
  msgs: Record<Author, MessageDto>;
  /** The message an actor edits/deletes as "their own" (for non-members: someone else's). */
  ownMessage(who: ActorKey): MessageDto;
}

let fixtures = 0;

/**
 * A fresh group room, built through the API: owner, admin, moderator, two plain members (`member`,
 * `target`), a member muted until unmuted, and a former member who was banned. Every member (the
 * muted and banned ones included) sent one message before the moderation happened. The non-member
 * and the other-tenant actor never belonged; the other-tenant actor has the owner's user id in
 * another tenant (ids are only unique per tenant).
 */
export async function buildRoomFixture(app: App, label = 'fx'): Promise<RoomFixture> {
  const k = ++fixtures;
  const p = (role: string) => `${label}${k}-${role}`;
  const ids: Record<Person, string> = {
    owner: p('owner'),
    admin: p('admin'),
    moderator: p('mod'),
    member: p('member'),
    muted: p('muted'),
    target: p('target'),
    banned: p('banned'),
    outsider: p('outsider'),
    newcomer: p('newcomer'),
  };
  const as = (id: string) => callerFor(app, actor(id));
  const roomName = `Secret Zebra ${label}${k}`;
  const secret = `walrus${label}${k}`;
  const room = await as(ids.owner).room.create({
    kind: 'group',
    name: roomName,
    topic: `topic of ${roomName}`,
    memberIds: [ids.admin, ids.moderator, ids.member, ids.muted, ids.target, ids.banned],
  });
  await as(ids.owner).room.setRole({ roomId: room.id, userId: ids.admin, role: 'admin' });
  await as(ids.owner).room.setRole({ roomId: room.id, userId: ids.moderator, role: 'moderator' });
  const authors: Author[] = ['owner', 'admin', 'moderator', 'member', 'muted', 'target', 'banned'];
  const msgs = {} as Record<Author, MessageDto>;
  for (const a of authors) {
    msgs[a] = await as(ids[a]).chat.send({ roomId: room.id, clientId: uuid(), body: `${secret} from ${a}` });
  }
  await as(ids.owner).room.mute({ roomId: room.id, userId: ids.muted });
  await as(ids.owner).room.ban({ roomId: room.id, userId: ids.banned });
  const actors: Record<ActorKey, Actor> = {
    nonMember: actor(ids.outsider),
    otherTenant: actor(ids.owner, OTHER_TENANT),
    banned: actor(ids.banned),
    muted: actor(ids.muted),
    member: actor(ids.member),
    moderator: actor(ids.moderator),
    admin: actor(ids.admin),
    owner: actor(ids.owner),
  };
  return {
    roomId: room.id,
    roomName,
    secret,
    ids,
    actors,
    msgs,
    ownMessage: (who) => (who === 'nonMember' || who === 'otherTenant' ? msgs.target : msgs[who]),
  };
}

/** A caller for an actor (createCaller, no signal). */
export const callerOf = (app: App, a: Actor) => callerFor(app, a);

/** Moves a membership's mute end directly in PostgreSQL (to let a mute expire without waiting). */
export async function setMutedUntil(app: App, roomId: string, userId: string, until: Date | null): Promise<void> {
  const rows = await sql(em(app.services.deps), 'update membership set muted_until = ? where room_id = ? and user_id = ? returning user_id', [
    until,
    roomId,
    userId,
  ]);
  if (rows.length !== 1) throw new Error(`${userId} is not a member of ${roomId}`);
}

export interface InboxStream {
  next(timeoutMs?: number): Promise<{ id: string; event: InboxEvent }>;
  abort(): void;
}

/** An `inbox.events` subscription through createCaller, with its own AbortController. */
export async function openInbox(app: App, a: Actor, lastEventId?: string | null): Promise<InboxStream> {
  const ac = new AbortController();
  const caller = createCaller({ actor: a, authError: null, services: app.services }, { signal: ac.signal });
  const iterable = (await caller.inbox.events({ lastEventId: lastEventId ?? null })) as unknown as AsyncIterable<unknown>;
  const it = iterable[Symbol.asyncIterator]();
  return {
    async next(timeoutMs = 5000) {
      const r = await within(it.next(), timeoutMs, 'the next inbox.events event');
      if (r.done) throw new Error('inbox.events ended unexpectedly');
      if (!isTrackedEnvelope(r.value)) throw new Error(`inbox.events yielded an untracked value: ${JSON.stringify(r.value)}`);
      const [id, event] = r.value;
      return { id, event: event as InboxEvent };
    },
    abort: () => ac.abort(),
  };
}
