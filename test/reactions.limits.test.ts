/**
 * Reactions are bounded per message: every history page and every reaction event carries the
 * message's reactions, so one member adding thousands of made-up "emoji" grew each of them (and the
 * stored events quadratically). At most MAX_REACTION_EMOJI different emoji per message and
 * MAX_REACTIONS_PER_USER reactions of one user per message; past them, BAD_REQUEST and nothing written.
 */
import { describe, expect, it } from 'vitest';
import { MAX_REACTION_EMOJI, MAX_REACTIONS_PER_USER } from '../src/services/messages/change.js';
import { expectTRPCError, fileServer, roomKit, TEST_LIMITS, uuid } from './fixture.js';

const t = fileServer('reaction_limits', { limits: TEST_LIMITS });
const { users, as, groupRoom } = roomKit(() => t);

const emoji = (i: number) => `e${i}`;
const reactionRows = async (messageId: string) => Number((await t.env.sql<{ n: string }>('select count(*) as n from reaction where message_id = $1', [messageId]))[0]!.n);

describe('reactions per message', () => {
  it(`one user: at most ${MAX_REACTIONS_PER_USER} on a message; the next is BAD_REQUEST, written nowhere, and takes no seq`, async () => {
    const [owner, bob] = users('rl-owner', 'rl-bob');
    const room = await groupRoom(owner!, [bob!]);
    const m = await as(owner!).chat.send({ roomId: room.id, clientId: uuid(), body: 'react to me' });
    for (let i = 0; i < MAX_REACTIONS_PER_USER; i++) await as(bob!).chat.react({ messageId: m.id, emoji: emoji(i) });
    const seq = (await as(owner!).room.get({ roomId: room.id })).lastSeq;
    await expectTRPCError(as(bob!).chat.react({ messageId: m.id, emoji: emoji(999) }), 'BAD_REQUEST', /at most 20 reactions to one message/);
    expect(await reactionRows(m.id)).toBe(MAX_REACTIONS_PER_USER);
    expect((await as(owner!).room.get({ roomId: room.id })).lastSeq).toBe(seq);
    // Repeating one of them is still fine (idempotent), and another user may react.
    await as(bob!).chat.react({ messageId: m.id, emoji: emoji(0) });
    await as(owner!).chat.react({ messageId: m.id, emoji: emoji(0) });
  });

  it(`all users: at most ${MAX_REACTION_EMOJI} different emoji on a message; an emoji already there may still be added`, async () => {
    const names = users('rm-a', 'rm-b', 'rm-c', 'rm-d');
    const [owner, ...others] = names;
    const room = await groupRoom(owner!, others as string[]);
    const m = await as(owner!).chat.send({ roomId: room.id, clientId: uuid(), body: 'many' });
    let k = 0;
    for (const who of names) {
      for (let i = 0; i < MAX_REACTIONS_PER_USER && k < MAX_REACTION_EMOJI; i++) await as(who!).chat.react({ messageId: m.id, emoji: emoji(k++) });
    }
    expect(k).toBe(MAX_REACTION_EMOJI);
    const last = names.at(-1)!;
    await expectTRPCError(as(last).chat.react({ messageId: m.id, emoji: 'one-too-many' }), 'BAD_REQUEST', /at most 50 different reactions/);
    await as(last).chat.react({ messageId: m.id, emoji: emoji(0) });
    const history = await as(owner!).chat.history({ roomId: room.id });
    expect(history.messages.find((x) => x.id === m.id)!.reactions).toHaveLength(MAX_REACTION_EMOJI);
  });
});
