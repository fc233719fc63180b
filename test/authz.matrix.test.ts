/**
 * The authorization matrix: every procedure that takes a roomId or a messageId x every kind of
 * caller (from a stranger to the owner) -> the expected outcome. Outsiders (non-member, other
 * tenant, banned) always get NOT_FOUND without learning anything of the room; members get
 * FORBIDDEN where their role is too low, and a muted member gets FORBIDDEN on send-type actions.
 *
 * Calls that change state run against a fresh room per (procedure, actor) so the cells never
 * influence each other; read-only calls share one room.
 */
import { TRPCError } from '@trpc/server';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  ACTORS,
  buildRoomFixture,
  callerFor,
  fileServer,
  openEvents,
  uuid,
  type ActorKey,
  type App,
  type RoomFixture,
} from './fixture.js';

const t = fileServer('authz');
let shared: RoomFixture;

beforeAll(async () => {
  shared = await buildRoomFixture(t.app, 'shared');
});

type Outcome = 'ok' | 'NOT_FOUND' | 'FORBIDDEN';
type Caller = ReturnType<typeof callerFor>;

interface Cell {
  app: App;
  fx: RoomFixture;
  who: ActorKey;
  c: Caller;
}

interface Row {
  name: string;
  /** A fresh room per actor (the call changes state) or the shared one. */
  fresh: boolean;
  expect: Record<ActorKey, Outcome>;
  call(cell: Cell): Promise<unknown>;
  /** Further checks of a successful call. */
  ok?(result: unknown, cell: Cell): Promise<void> | void;
  /** What a FORBIDDEN message must say (per actor). */
  forbidden?: Partial<Record<ActorKey, RegExp>>;
}

const OUTSIDERS = { nonMember: 'NOT_FOUND', otherTenant: 'NOT_FOUND', banned: 'NOT_FOUND' } as const;
/** Every member may (muted ones included). */
const READ: Record<ActorKey, Outcome> = { ...OUTSIDERS, muted: 'ok', member: 'ok', moderator: 'ok', admin: 'ok', owner: 'ok' };
/** Every member may, except a muted one. */
const SEND: Record<ActorKey, Outcome> = { ...READ, muted: 'FORBIDDEN' };
const MUTED = { muted: /muted/ };
/** Members from `min` up may; lower roles (the muted member is a plain member) get FORBIDDEN. */
function atLeast(min: 'moderator' | 'admin'): Record<ActorKey, Outcome> {
  const ok = min === 'moderator' ? ['moderator', 'admin', 'owner'] : ['admin', 'owner'];
  return Object.fromEntries(
    ACTORS.map((a) => [a, a in OUTSIDERS ? 'NOT_FOUND' : ok.includes(a) ? 'ok' : 'FORBIDDEN']),
  ) as Record<ActorKey, Outcome>;
}
const ROLE_OF: Partial<Record<ActorKey, string>> = { muted: 'member', member: 'member', moderator: 'moderator', admin: 'admin', owner: 'owner' };

const members = async (cell: Cell) => (await callerFor(cell.app, cell.fx.actors.owner).room.members({ roomId: cell.fx.roomId })).map((m) => m.userId);

const ROWS: Row[] = [
  {
    name: 'room.get',
    fresh: false,
    expect: READ,
    call: ({ c, fx }) => c.room.get({ roomId: fx.roomId }),
    ok: (r, { fx, who }) => expect(r).toMatchObject({ id: fx.roomId, name: fx.roomName, myRole: ROLE_OF[who] }),
  },
  {
    name: 'room.members',
    fresh: false,
    expect: READ,
    call: ({ c, fx }) => c.room.members({ roomId: fx.roomId }),
    ok: (r: { userId: string }[], { fx }) => {
      expect(r.map((m) => m.userId)).toContain(fx.ids.owner);
      expect(r.map((m) => m.userId)).not.toContain(fx.ids.banned);
    },
  },
  {
    name: 'room.addMembers',
    fresh: true,
    expect: atLeast('admin'),
    call: ({ c, fx }) => c.room.addMembers({ roomId: fx.roomId, userIds: [fx.ids.newcomer] }),
    ok: (r, { fx }) => expect(r).toEqual({ added: [fx.ids.newcomer] }),
    forbidden: { member: /add members/, muted: /add members/, moderator: /add members/ },
  },
  {
    name: 'room.removeMember',
    fresh: true,
    expect: atLeast('moderator'),
    call: ({ c, fx }) => c.room.removeMember({ roomId: fx.roomId, userId: fx.ids.target }),
    ok: async (r, cell) => {
      expect(r).toEqual({ ok: true });
      expect(await members(cell)).not.toContain(cell.fx.ids.target);
    },
    forbidden: { member: /remove members/, muted: /remove members/ },
  },
  {
    name: 'room.leave',
    fresh: true,
    expect: READ,
    call: ({ c, fx }) => c.room.leave({ roomId: fx.roomId }),
    ok: async (r, cell) => {
      expect(r).toEqual({ ok: true });
      const left = cell.fx.actors[cell.who].id;
      const rest = await callerFor(cell.app, cell.fx.actors[cell.who === 'owner' ? 'admin' : 'owner']).room.members({ roomId: cell.fx.roomId });
      expect(rest.map((m) => m.userId)).not.toContain(left);
      // The room always keeps exactly one owner.
      expect(rest.filter((m) => m.role === 'owner')).toHaveLength(1);
    },
  },
  {
    name: 'room.update',
    fresh: true,
    expect: atLeast('admin'),
    call: ({ c, fx }) => c.room.update({ roomId: fx.roomId, name: `${fx.roomName} renamed`, topic: 'new topic' }),
    ok: (r, { fx }) => expect(r).toMatchObject({ name: `${fx.roomName} renamed`, topic: 'new topic' }),
    forbidden: { member: /change the room/, muted: /change the room/, moderator: /change the room/ },
  },
  {
    name: 'room.setRole',
    fresh: true,
    expect: atLeast('admin'),
    call: ({ c, fx }) => c.room.setRole({ roomId: fx.roomId, userId: fx.ids.target, role: 'moderator' }),
    ok: (r, { fx }) => expect(r).toMatchObject({ userId: fx.ids.target, role: 'moderator' }),
    forbidden: { member: /change roles/, muted: /change roles/, moderator: /change roles/ },
  },
  {
    name: 'room.mute',
    fresh: true,
    expect: atLeast('moderator'),
    call: ({ c, fx }) => c.room.mute({ roomId: fx.roomId, userId: fx.ids.target }),
    ok: (r: { mutedUntil: Date | null }, { fx }) => {
      expect(r).toMatchObject({ userId: fx.ids.target });
      expect(r.mutedUntil).toBeInstanceOf(Date);
    },
    forbidden: { member: /mute members/, muted: /mute members/ },
  },
  {
    name: 'room.unmute',
    fresh: true,
    expect: atLeast('moderator'),
    // The target is the muted member; the muted member calling it on someone else is covered by
    // the row's FORBIDDEN (a plain member may not unmute anyone).
    call: ({ c, fx, who }) => c.room.unmute({ roomId: fx.roomId, userId: who === 'muted' ? fx.ids.target : fx.ids.muted }),
    ok: (r, { fx }) => expect(r).toMatchObject({ userId: fx.ids.muted, mutedUntil: null }),
    forbidden: { member: /mute members/, muted: /mute members/ },
  },
  {
    name: 'room.ban',
    fresh: true,
    expect: atLeast('moderator'),
    call: ({ c, fx }) => c.room.ban({ roomId: fx.roomId, userId: fx.ids.target }),
    ok: async (r, cell) => {
      expect(r).toEqual({ ok: true });
      expect(await members(cell)).not.toContain(cell.fx.ids.target);
    },
    forbidden: { member: /ban members/, muted: /ban members/ },
  },
  {
    name: 'room.unban',
    fresh: true,
    expect: atLeast('moderator'),
    call: ({ c, fx }) => c.room.unban({ roomId: fx.roomId, userId: fx.ids.banned }),
    ok: (r) => expect(r).toEqual({ unbanned: true }),
    forbidden: { member: /ban members/, muted: /ban members/ },
  },
  {
    name: 'room.bans',
    fresh: false,
    expect: atLeast('moderator'),
    call: ({ c, fx }) => c.room.bans({ roomId: fx.roomId }),
    ok: (r: { userId: string; bannedBy: string }[], { fx }) =>
      expect(r.map((b) => [b.userId, b.bannedBy])).toEqual([[fx.ids.banned, fx.ids.owner]]),
    forbidden: { member: /ban members/, muted: /ban members/ },
  },
  {
    name: 'chat.send',
    fresh: true,
    expect: SEND,
    call: ({ c, fx }) => c.chat.send({ roomId: fx.roomId, clientId: uuid(), body: 'hello' }),
    ok: (r, { fx, who }) => expect(r).toMatchObject({ roomId: fx.roomId, senderId: fx.actors[who].id, body: 'hello' }),
    forbidden: MUTED,
  },
  {
    name: 'chat.history',
    fresh: false,
    expect: READ,
    call: ({ c, fx }) => c.chat.history({ roomId: fx.roomId }),
    ok: (r: { messages: { body: string | null }[] }, { fx }) =>
      expect(r.messages.filter((m) => m.body?.startsWith(fx.secret))).toHaveLength(7),
  },
  {
    name: 'chat.edit (own message)',
    fresh: true,
    expect: SEND,
    call: ({ c, fx, who }) => c.chat.edit({ messageId: fx.ownMessage(who).id, body: 'edited' }),
    ok: (r) => expect(r).toMatchObject({ body: 'edited' }),
    forbidden: MUTED,
  },
  {
    name: "chat.edit (someone else's message)",
    fresh: true,
    expect: { ...OUTSIDERS, muted: 'FORBIDDEN', member: 'FORBIDDEN', moderator: 'FORBIDDEN', admin: 'FORBIDDEN', owner: 'FORBIDDEN' },
    call: ({ c, fx }) => c.chat.edit({ messageId: fx.msgs.target.id, body: 'edited' }),
    forbidden: { muted: /author/, member: /author/, moderator: /author/, admin: /author/, owner: /author/ },
  },
  {
    name: 'chat.edits',
    fresh: false,
    expect: READ,
    call: ({ c, fx }) => c.chat.edits({ messageId: fx.msgs.target.id }),
    ok: (r) => expect(r).toEqual([]),
  },
  {
    name: 'chat.delete (own message)',
    fresh: true,
    expect: READ,
    call: ({ c, fx, who }) => c.chat.delete({ messageId: fx.ownMessage(who).id }),
    ok: (r) => expect(r).toMatchObject({ body: null, deletedAt: expect.any(Date) }),
  },
  {
    name: "chat.delete (someone else's message)",
    fresh: true,
    expect: atLeast('moderator'),
    call: ({ c, fx }) => c.chat.delete({ messageId: fx.msgs.target.id }),
    ok: (r, { fx }) => expect(r).toMatchObject({ id: fx.msgs.target.id, body: null }),
    forbidden: { member: /author or a moderator/, muted: /author or a moderator/ },
  },
  {
    name: 'chat.react',
    fresh: true,
    expect: SEND,
    call: ({ c, fx }) => c.chat.react({ messageId: fx.msgs.target.id, emoji: '👍' }),
    ok: (r: { reactions: unknown }) => expect(r.reactions).toEqual([{ emoji: '👍', count: 1, me: true }]),
    forbidden: MUTED,
  },
  {
    name: 'chat.unreact',
    fresh: true,
    expect: SEND,
    call: ({ c, fx }) => c.chat.unreact({ messageId: fx.msgs.target.id, emoji: '👍' }),
    ok: (r: { reactions: unknown }) => expect(r.reactions).toEqual([]),
    forbidden: MUTED,
  },
  {
    name: 'chat.thread',
    fresh: false,
    expect: READ,
    call: ({ c, fx }) => c.chat.thread({ messageId: fx.msgs.target.id }),
    ok: (r, { fx }) => expect(r).toMatchObject({ root: { id: fx.msgs.target.id }, replies: [], hasMore: false }),
  },
  {
    name: 'chat.search (roomId)',
    fresh: false,
    expect: READ,
    call: ({ c, fx }) => c.chat.search({ query: fx.secret, roomId: fx.roomId }),
    ok: (r: { hits: { roomId: string }[] }, { fx }) => {
      expect(r.hits).toHaveLength(7);
      expect(r.hits.every((h) => h.roomId === fx.roomId)).toBe(true);
    },
  },
  {
    name: 'chat.typing',
    fresh: true,
    expect: SEND,
    call: ({ c, fx }) => c.chat.typing({ roomId: fx.roomId, typing: true }),
    ok: (r) => expect(r).toEqual({ forwarded: true }),
    forbidden: MUTED,
  },
  {
    name: 'chat.events',
    fresh: false,
    expect: READ,
    call: async ({ app, fx, who }) => {
      await using s = await openEvents(app, fx.actors[who], { roomId: fx.roomId });
      return (await s.next()).event;
    },
    ok: (r, { fx }) => expect(r).toMatchObject({ type: 'ready', roomId: fx.roomId }),
  },
  {
    name: 'receipt.markRead',
    fresh: true,
    expect: READ,
    call: ({ c, fx }) => c.receipt.markRead({ roomId: fx.roomId, seq: 1_000_000 }),
    ok: async (r, { app, fx }) => {
      const room = await callerFor(app, fx.actors.owner).room.get({ roomId: fx.roomId });
      expect(r).toEqual({ roomId: fx.roomId, lastReadSeq: room.lastSeq });
    },
  },
  {
    name: 'receipt.readers',
    fresh: false,
    expect: READ,
    call: ({ c, fx }) => c.receipt.readers({ roomId: fx.roomId, seq: 0 }),
    ok: (r: { userId: string }[], { fx }) => {
      expect(r.map((x) => x.userId)).toContain(fx.ids.owner);
      expect(r.map((x) => x.userId)).not.toContain(fx.ids.banned);
    },
  },
];

interface Result {
  outcome: string;
  value?: unknown;
  error?: TRPCError;
}

async function run(row: Row, cell: Cell): Promise<Result> {
  try {
    return { outcome: 'ok', value: await row.call(cell) };
  } catch (err) {
    if (err instanceof TRPCError) return { outcome: err.code, error: err };
    return { outcome: `unexpected ${String(err)}` };
  }
}

describe('authorization matrix', () => {
  it('covers every procedure that takes a roomId or a messageId', () => {
    const names = new Set(ROWS.map((r) => r.name.split(' ')[0]));
    const expected = [
      'room.get', 'room.members', 'room.addMembers', 'room.removeMember', 'room.leave', 'room.update', 'room.setRole',
      'room.mute', 'room.unmute', 'room.ban', 'room.unban', 'room.bans',
      'chat.send', 'chat.history', 'chat.edit', 'chat.edits', 'chat.delete', 'chat.react', 'chat.unreact', 'chat.thread',
      'chat.search', 'chat.typing', 'chat.events', 'receipt.markRead', 'receipt.readers',
    ];
    expect([...names].sort()).toEqual(expected.sort());
  });

  for (const row of ROWS) {
    it(`${row.name}: ${ACTORS.map((a) => `${a}=${row.expect[a]}`).join(' ')}`, async () => {
      const cells = await Promise.all(
        ACTORS.map(async (who) => {
          const fx = row.fresh ? await buildRoomFixture(t.app, 'mx') : shared;
          const cell: Cell = { app: t.app, fx, who, c: callerFor(t.app, fx.actors[who]) };
          return { cell, result: await run(row, cell) };
        }),
      );
      const outcomes = Object.fromEntries(cells.map(({ cell, result }) => [cell.who, result.outcome]));
      expect(outcomes).toEqual(row.expect);

      for (const { cell, result } of cells) {
        const { fx, who } = cell;
        if (result.outcome === 'ok') {
          await row.ok?.(result.value, cell);
          continue;
        }
        const message = result.error!.message;
        if (result.outcome === 'NOT_FOUND') {
          // An outsider learns nothing: not the room's name, not a word of its messages.
          expect(message, `${row.name} as ${who}`).toMatch(/^(room|message) not found$/);
          expect(message).not.toContain(fx.roomName);
          expect(message).not.toContain('Zebra');
          expect(message).not.toContain(fx.secret);
        }
        if (result.outcome === 'FORBIDDEN') {
          const want = row.forbidden?.[who];
          if (want) expect(message, `${row.name} as ${who}`).toMatch(want);
        }
      }
    });
  }
});
