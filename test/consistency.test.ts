/**
 * Consistency in the style of Zulip's `verify_action`: a client loads a room (every history page and
 * the members) on node A while a seeded random workload runs from several users on nodes A and B,
 * subscribes with the last seq it has, and applies the live events to its local state. When the
 * workload is over and a sentinel message has arrived, its state must equal a fresh load. Any race
 * between loading and receiving (an event missed, applied twice, or carrying the wrong state) shows
 * up as a difference. Issue 3, "Tests".
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ChatClient, Message, RoomEvent } from '../client/index.js';
import {
  clientFor,
  codeOf,
  deferred,
  fileCluster,
  isDurable,
  loadAllHistory,
  prng,
  recordEvents,
  Scope,
  uuid,
} from './fixture.js';

const SEED = Number(process.env.CONSISTENCY_SEED ?? 20261122);
const WORKERS = 5;
const OPS_PER_WORKER = 60;
const TOTAL_OPS = WORKERS * OPS_PER_WORKER;
/**
 * A slow, stale client: it loads the history once this many operations are done, the members after
 * some more, and subscribes (with the last seq it has) later still; the workload never pauses.
 */
const HISTORY_AT = 60;
const MEMBERS_AT = 90;
const SUBSCRIBE_AT = 130;
const EMOJI = ['👍', '🎉', '❤️', ':ship-it:'] as const;

/** Two nodes on one database and one Redis prefix. */
const cl = fileCluster('consistency');
/** The clients of a test, closed after it. */
const open = new Scope();

afterEach(() => open.dispose());

/** What the client keeps of a message. */
interface MsgState {
  id: string;
  seq: number;
  senderId: string;
  kind: string;
  body: string | null;
  mentions: string[];
  replyToId: string | null;
  editedAt: number | null;
  deletedAt: number | null;
  /** emoji -> count (`me` is relative to the viewer and false in events: compared by count only). */
  reactions: Map<string, number>;
}

/** The client's local state of one room. */
class RoomState {
  readonly messages = new Map<string, MsgState>();
  readonly members = new Map<string, string>();
  lastSeq = 0;
  applied = { durable: 0, ephemeral: 0 };

  setMessage(m: Message) {
    this.messages.set(m.id, {
      id: m.id,
      seq: m.seq,
      senderId: m.senderId,
      kind: m.kind,
      body: m.body,
      mentions: [...m.mentions],
      replyToId: m.replyToId,
      editedAt: m.editedAt ? m.editedAt.getTime() : null,
      deletedAt: m.deletedAt ? m.deletedAt.getTime() : null,
      reactions: new Map(m.reactions.map((r) => [r.emoji, r.count])),
    });
  }

  apply(e: RoomEvent) {
    if (e.type !== 'ready' && e.type !== 'reset' && isDurable(e)) {
      if (e.seq !== this.lastSeq + 1) throw new Error(`event seq ${e.seq} after ${this.lastSeq}: not contiguous`);
      this.lastSeq = e.seq;
      this.applied.durable++;
    }
    switch (e.type) {
      case 'message.new':
      case 'message.edited':
      case 'message.deleted':
        this.setMessage(e.message);
        return;
      case 'reaction.added':
      case 'reaction.removed': {
        const m = this.messages.get(e.messageId);
        if (!m) throw new Error(`${e.type} for unknown message ${e.messageId}`);
        // The event carries the message's reactions after the change: set, never add.
        m.reactions = new Map(e.reactions.map((r) => [r.emoji, r.count]));
        return;
      }
      case 'member.joined':
      case 'member.updated':
        this.members.set(e.userId, e.role);
        return;
      case 'member.left':
        this.members.delete(e.userId);
        return;
      case 'room.updated':
        return;
      case 'ready':
        throw new Error('a resumed subscription must not start with ready');
      default:
        this.applied.ephemeral++;
    }
  }

  /** A comparable snapshot; reply counts as the client derives them from the messages it holds. */
  snapshot() {
    const replies = new Map<string, number>();
    for (const m of this.messages.values()) {
      if (m.replyToId && m.deletedAt === null) replies.set(m.replyToId, (replies.get(m.replyToId) ?? 0) + 1);
    }
    return {
      messages: [...this.messages.values()]
        .sort((a, b) => a.seq - b.seq)
        .map((m) => ({
          ...m,
          reactions: [...m.reactions].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
          replyCount: replies.get(m.id) ?? 0,
        })),
      members: [...this.members].sort(([a], [b]) => (a < b ? -1 : 1)),
    };
  }
}

/** A fresh load, in the same shape (reply counts as the server reports them). */
async function freshLoad(c: ChatClient, roomId: string) {
  const state = new RoomState();
  const history = await loadAllHistory(c, roomId);
  for (const m of history) state.setMessage(m);
  for (const mb of await c.trpc.room.members.query({ roomId })) state.members.set(mb.userId, mb.role);
  const snap = state.snapshot();
  const serverReplies = new Map(history.map((m) => [m.id, m.replyCount]));
  return { ...snap, messages: snap.messages.map((m) => ({ ...m, replyCount: serverReplies.get(m.id)! })) };
}

describe('consistency (verify_action)', () => {
  it(`a client that loads while ${TOTAL_OPS} random operations run on two nodes ends equal to a fresh load`, async () => {
    const u = uuid().slice(0, 8);
    const owner = `own-${u}`;
    const workers = [owner, ...Array.from({ length: WORKERS - 1 }, (_, i) => `w${i}-${u}`)];
    const extras = Array.from({ length: 3 }, (_, i) => `x${i}-${u}`);
    const observer = `obs-${u}`;
    const nodeOf = (i: number) => (i % 2 === 0 ? cl.a.url : cl.b.url);
    const clients = workers.map((w, i) => open.use(clientFor(nodeOf(i), w, { ws: i % 3 === 0 })));
    const room = await clients[0]!.trpc.room.create.mutate({ kind: 'group', name: 'verify', memberIds: [...workers.slice(1), observer] });
    await clients[0]!.trpc.room.setRole.mutate({ roomId: room.id, userId: workers[1]!, role: 'moderator' });

    // Shared knowledge of the workload (what exists), not of the observer.
    const known: { id: string; senderId: string; seq: number }[] = [];
    const extraIn = new Set<string>();
    let maxSeq = room.lastSeq;
    let opsDone = 0;
    const opCounts: Record<string, number> = {};
    const outcomes: Record<string, number> = {};
    const unexpected: { op: string; code: string | undefined; message: string }[] = [];
    const reached = new Map([HISTORY_AT, MEMBERS_AT, SUBSCRIBE_AT].map((n) => [n, deferred()]));

    async function worker(index: number) {
      const me = workers[index]!;
      const c = clients[index]!;
      const rnd = prng(SEED * 31 + index);
      const isOwner = index === 0;
      const isModerator = index === 1;
      const note = (m: Message) => {
        known.push({ id: m.id, senderId: m.senderId, seq: m.seq });
        maxSeq = Math.max(maxSeq, m.seq);
      };
      for (let i = 0; i < OPS_PER_WORKER; i++) {
        // The owner also adds and removes members (the extras): every fifth operation.
        const memberOp = isOwner && i % 5 === 2;
        const roll = rnd.next();
        const mine = known.filter((k) => k.senderId === me);
        let op: string;
        let run: () => Promise<unknown>;
        if (memberOp) {
          const x = rnd.pick(extras);
          if (extraIn.has(x)) {
            op = 'removeMember';
            run = async () => {
              await c.trpc.room.removeMember.mutate({ roomId: room.id, userId: x });
              extraIn.delete(x);
            };
          } else {
            op = 'addMembers';
            run = async () => {
              await c.trpc.room.addMembers.mutate({ roomId: room.id, userIds: [x] });
              extraIn.add(x);
            };
          }
        } else if (roll < 0.22 || known.length === 0) {
          op = 'send';
          const mentions = rnd.next() < 0.2 ? [rnd.pick([...workers, observer])] : undefined;
          run = async () => note(await c.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `${me} says ${i}`, mentions }));
        } else if (roll < 0.32) {
          op = 'reply';
          const parent = rnd.pick(known);
          run = async () => note(await c.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `${me} replies ${i}`, replyToId: parent.id }));
        } else if (roll < 0.44 && mine.length > 0) {
          op = 'edit';
          const target = rnd.pick(mine);
          run = () => c.trpc.chat.edit.mutate({ messageId: target.id, body: `${me} edited ${i}` });
        } else if (roll < 0.52 && (isOwner || isModerator || mine.length > 0)) {
          op = 'delete';
          const target = rnd.pick(isOwner || isModerator ? known : mine);
          run = () => c.trpc.chat.delete.mutate({ messageId: target.id });
        } else if (roll < 0.72) {
          op = 'react';
          const target = rnd.pick(known);
          const emoji = rnd.pick(EMOJI);
          run = () => c.trpc.chat.react.mutate({ messageId: target.id, emoji });
        } else if (roll < 0.82) {
          op = 'unreact';
          const target = rnd.pick(known);
          const emoji = rnd.pick(EMOJI);
          run = () => c.trpc.chat.unreact.mutate({ messageId: target.id, emoji });
        } else if (roll < 0.94) {
          op = 'markRead';
          const seq = rnd.int(maxSeq + 5);
          run = () => c.trpc.receipt.markRead.mutate({ roomId: room.id, seq });
        } else {
          op = 'typing';
          run = () => c.trpc.chat.typing.mutate({ roomId: room.id, typing: rnd.next() < 0.7 });
        }
        opCounts[op] = (opCounts[op] ?? 0) + 1;
        try {
          await run();
          outcomes.ok = (outcomes.ok ?? 0) + 1;
        } catch (err) {
          const code = codeOf(err);
          // The only expected refusal: editing, reacting or replying to a message deleted meanwhile.
          if (code === 'BAD_REQUEST' && ['edit', 'react', 'unreact', 'reply'].includes(op)) {
            outcomes[`${op}:${code}`] = (outcomes[`${op}:${code}`] ?? 0) + 1;
          } else {
            unexpected.push({ op, code, message: (err as Error).message });
          }
        }
        reached.get(++opsDone)?.resolve();
      }
    }

    const t0 = performance.now();
    const workload = Promise.all(workers.map((_, i) => worker(i)));

    // The observer: load everything (while the workload runs), then subscribe with the last seq it has.
    await reached.get(HISTORY_AT)!.promise;
    await using obs = clientFor(cl.a.url, observer, { ws: true });
    const state = new RoomState();
    const history = await loadAllHistory(obs, room.id, 10);
    for (const m of history) state.setMessage(m);
    const loadedAt = history.at(-1)?.seq ?? 0;
    state.lastSeq = loadedAt;
    await reached.get(MEMBERS_AT)!.promise;
    for (const mb of await obs.trpc.room.members.query({ roomId: room.id })) state.members.set(mb.userId, mb.role);
    await reached.get(SUBSCRIBE_AT)!.promise;
    let applyError: unknown = null;
    using rec = recordEvents(obs, { roomId: room.id, lastEventId: String(loadedAt) });
    let appliedUpTo = 0;
    const applyNew = () => {
      for (; appliedUpTo < rec.events.items.length; appliedUpTo++) {
        try {
          state.apply(rec.events.items[appliedUpTo]!.data);
        } catch (err) {
          applyError ??= err;
        }
      }
    };

    await workload;
    const sendMs = performance.now() - t0;
    const sentinel = await clients[1]!.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'sentinel' });
    await rec.untilSeq(sentinel.seq, 30_000);
    applyNew();
    const totalMs = performance.now() - t0;

    // A fresh load from the other node.
    const fresh = await freshLoad(open.use(clientFor(cl.b.url, observer, { ws: true })), room.id);
    const { lastSeq } = await obs.trpc.room.get.query({ roomId: room.id });

    console.log(
      `[consistency] seed ${SEED}: ${opsDone} operations (${JSON.stringify(opCounts)}; outcomes ${JSON.stringify(outcomes)}) in ${sendMs.toFixed(0)} ms; ` +
        `observer loaded ${history.length} messages up to seq ${loadedAt} after ${HISTORY_AT} ops, subscribed after ${SUBSCRIBE_AT}, applied ${state.applied.durable} durable + ` +
        `${state.applied.ephemeral} live-only events up to seq ${state.lastSeq} (sentinel received after ${totalMs.toFixed(0)} ms); ` +
        `final: ${fresh.messages.length} messages, ${fresh.members.length} members`,
    );
    expect(unexpected).toEqual([]);
    expect(applyError).toBeNull();
    expect(rec.error).toBeNull();
    expect(opsDone).toBe(TOTAL_OPS);
    expect(state.applied.durable).toBeGreaterThan(0);
    expect(state.lastSeq).toBe(lastSeq);
    expect(state.lastSeq).toBe(sentinel.seq);
    const mine = state.snapshot();
    expect(mine.members).toEqual(fresh.members);
    // Message by message first (a readable diff), then the whole.
    const freshById = new Map(fresh.messages.map((m) => [m.id, m]));
    for (const m of mine.messages) expect(m, `message seq ${m.seq}`).toEqual(freshById.get(m.id));
    expect(mine.messages).toEqual(fresh.messages);
    rec.unsubscribe();
  });

  it('races on one message: a reaction never lands on a message deleted meanwhile; deleting replies never deadlocks with work on the root', async () => {
    const u = uuid().slice(0, 8);
    const owner = `own-${u}`;
    const users = Array.from({ length: 6 }, (_, i) => `r${i}-${u}`);
    await using oc = clientFor(cl.a.url, owner);
    const cs = users.map((id, i) => open.use(clientFor(i % 2 === 0 ? cl.a.url : cl.b.url, id, { ws: i % 3 === 0 })));
    const room = await oc.trpc.room.create.mutate({ kind: 'group', name: 'races', memberIds: users });
    using rec = recordEvents(oc, { roomId: room.id });
    await rec.ready();
    const unexpected: { what: string; code: string | undefined; message: string }[] = [];
    const expectOk = (what: string, p: Promise<unknown>, allowed: string[] = []) =>
      p.catch((err: unknown) => {
        if (!allowed.includes(codeOf(err) ?? '')) unexpected.push({ what, code: codeOf(err), message: (err as Error).message });
      });
    const ROUNDS = 12;
    for (let round = 0; round < ROUNDS; round++) {
      const root = await oc.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `root ${round}` });
      const replies = await Promise.all(
        cs.slice(0, 3).map((c, i) => c.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `reply ${round}.${i}`, replyToId: root.id })),
      );
      await Promise.all([
        // Deleting replies (locks: reply, root, room) while the root is edited, reacted to and replied to.
        ...replies.slice(0, 2).map((r) => expectOk('delete reply', oc.trpc.chat.delete.mutate({ messageId: r.id }))),
        expectOk('edit root', oc.trpc.chat.edit.mutate({ messageId: root.id, body: `root ${round} edited` })),
        ...cs.map((c, i) => expectOk('react root', c.trpc.chat.react.mutate({ messageId: root.id, emoji: i % 2 ? '👍' : '🎉' }))),
        expectOk('reply root', cs[4]!.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'late reply', replyToId: root.id })),
        // Reactions racing the delete of the message they are about: refused once it is deleted.
        ...cs.map((c) => expectOk('react deleted', c.trpc.chat.react.mutate({ messageId: replies[0]!.id, emoji: '👀' }), ['BAD_REQUEST'])),
      ]);
    }
    const barrier = await oc.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: 'barrier' });
    await rec.untilSeq(barrier.seq);
    expect(unexpected).toEqual([]);

    // In seq order, nothing happens to a message's reactions after its message.deleted.
    const deletedAt = new Map<string, number>();
    const late: string[] = [];
    for (const { data: e } of rec.events.items) {
      if (e.type === 'message.deleted') deletedAt.set(e.message.id, e.seq);
      if ((e.type === 'reaction.added' || e.type === 'reaction.removed') && deletedAt.has(e.messageId)) late.push(`${e.type} seq ${e.seq} after delete seq ${deletedAt.get(e.messageId)}`);
    }
    expect(late).toEqual([]);
    expect(deletedAt.size).toBe(ROUNDS * 2);
    // And the fresh state agrees: deleted messages carry no reactions; roots count their live replies.
    const history = await loadAllHistory(oc, room.id);
    for (const m of history) if (m.deletedAt) expect(m.reactions, `deleted message seq ${m.seq}`).toEqual([]);
    for (const m of history.filter((x) => x.body?.startsWith('root'))) {
      expect(m.replyCount, `root seq ${m.seq}`).toBe(history.filter((r) => r.replyToId === m.id && !r.deletedAt).length);
      expect(m.replyCount).toBe(2);
    }
    rec.unsubscribe();
  });
});
