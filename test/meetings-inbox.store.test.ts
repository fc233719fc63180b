/**
 * The store modules of meetings, inbox and retention against a real PostgreSQL: participant rows
 * merge joins and leaves in any order, meeting status only moves forward, webhook ids de-duplicate,
 * inbox positions of many users in one query, mention redaction touches exactly its items, and the
 * retention lock admits one holder. Also `inbox.notify` for admin tokens and its FORBIDDEN message.
 */
import { describe, expect, it } from 'vitest';
import {
  blankMentionExcerpts,
  expectTRPCError,
  fileServer,
  findMeeting,
  inboxEvents,
  inboxLastSeqs,
  insertMeeting,
  markMeetingEnded,
  markMeetingLive,
  participantsOf,
  recordWebhookEvent,
  roomKit,
  upsertParticipant,
  uuid,
  withRetentionLock,
} from './fixture.js';

const t = fileServer('mtg-store');

const { as } = roomKit(() => t);
const store = () => t.app.services.store;

async function newMeeting(): Promise<string> {
  const room = await as('ms-owner').room.create({ kind: 'group', name: 'meetings store' });
  const id = uuid();
  await store().transact((tx) =>
    insertMeeting(tx, {
      id,
      tenant: 'default',
      roomId: room.id,
      createdBy: 'ms-owner',
      title: 'standup',
      provider: 'livekit',
      providerRoomId: id,
      url: 'wss://video.example',
      expiresAt: new Date(Date.now() + 3_600_000),
    }),
  );
  return id;
}

describe('inbox.notify', () => {
  it('admin tokens may notify; anyone else is FORBIDDEN and told who may', async () => {
    const item = await as('ms-admin', 'default', ['admin']).inbox.notify({ userId: 'ms-bob', kind: 'k', title: 'from an admin' });
    expect(item).toMatchObject({ type: 'notification', title: 'from an admin', from: 'ms-admin', seq: expect.any(Number) });
    await expectTRPCError(
      as('ms-eve').inbox.notify({ userId: 'ms-bob', kind: 'k', title: 'spam' }),
      'FORBIDDEN',
      'only tenant admins and service tokens may call inbox.notify',
    );
  });
});

describe('meetings store', () => {
  it('merges joins and leaves of a session in any order: earliest join, latest leave, a known name stays', async () => {
    const id = await newMeeting();
    const at = (s: number) => new Date(Date.UTC(2030, 0, 1, 0, 0, s));
    const seen = (joinedAt: Date, leftAt: Date | null, name: string | null) =>
      store().transact((tx) => upsertParticipant(tx, { meetingId: id, sessionId: 's1', userId: 'ms-bob', name, joinedAt, leftAt }));
    // The leave arrives first (with the time it learned of the join), then the join itself.
    await seen(at(20), at(30), 'Bob');
    await seen(at(10), null, null);
    // A late, earlier leave does not move the end back; a join with a later time does not move the start.
    await seen(at(25), at(25), null);
    const rows = await participantsOf(store().db(), [id]);
    expect(rows).toEqual([{ meeting_id: id, user_id: 'ms-bob', joined_at: at(10), left_at: at(30) }]);
    const named = await store().db().selectFrom('meeting_participant').select('name').where('meeting_id', '=', id).executeTakeFirstOrThrow();
    expect(named.name).toBe('Bob');
  });

  it('status only moves forward, each move once; webhook ids de-duplicate', async () => {
    const id = await newMeeting();
    const moves = await store().transact(async (tx) => [
      await markMeetingLive(tx, id, new Date()),
      await markMeetingLive(tx, id, new Date()),
      await markMeetingEnded(tx, id, new Date(), 'ms-owner'),
      await markMeetingEnded(tx, id, new Date(), 'ms-owner'),
      await markMeetingLive(tx, id, new Date()),
    ]);
    expect(moves.map((m) => m !== undefined)).toEqual([true, false, true, false, false]);
    expect(moves[0]).toEqual({ title: 'standup', tenant: 'default' });
    expect((await findMeeting(store().db(), id, 'default'))?.status).toBe('ended');
    expect(await findMeeting(store().db(), id, 'other-tenant')).toBeUndefined();

    const eventId = `evt-${uuid()}`;
    expect(await store().transact((tx) => recordWebhookEvent(tx, 'livekit', eventId))).toBe(true);
    expect(await store().transact((tx) => recordWebhookEvent(tx, 'livekit', eventId))).toBe(false);
    expect(await store().transact((tx) => recordWebhookEvent(tx, 'daily', eventId))).toBe(true);
  });
});

describe('inbox store', () => {
  it('reads many positions in one query and blanks exactly the mention excerpts of one message', async () => {
    const [u1, u2, u3] = ['ms-i1', 'ms-i2', 'ms-never'];
    const messageId = uuid();
    const other = uuid();
    const mention = (id: string) => ({ type: 'mention' as const, roomId: uuid(), messageId: id, messageSeq: 1, from: 'x', excerpt: 'secret' });
    await store().transact(async (tx) => {
      await tx.appendInboxMany('default', [u1!, u2!], mention(messageId));
      await tx.appendInbox('default', u1!, mention(other));
      await tx.appendInbox('other-tenant', u1!, mention(messageId));
    });
    const positions = await inboxLastSeqs(store().db(), [
      ['default', u1!],
      ['default', u2!],
      ['default', u3!],
      ['other-tenant', u1!],
    ]);
    expect(new Map(positions.map((p) => [`${p.tenant}/${p.user_id}`, p.last_seq]))).toEqual(
      new Map([
        [`default/${u1}`, 2],
        [`default/${u2}`, 1],
        [`other-tenant/${u1}`, 1],
      ]),
    );

    await blankMentionExcerpts(store().db(), 'default', [u1!], messageId);
    const excerpts = async (tenant: string, userId: string) =>
      (await inboxEvents(store().db(), tenant, userId, 0, 100, 100)).map((r) => [r.seq, r.data.messageId, r.data.excerpt]);
    expect(await excerpts('default', u1!)).toEqual([
      [1, messageId, ''],
      [2, other, 'secret'],
    ]);
    expect(await excerpts('default', u2!)).toEqual([[1, messageId, 'secret']]);
    expect(await excerpts('other-tenant', u1!)).toEqual([[1, messageId, 'secret']]);
  });
});

describe('retention lock', () => {
  it('admits one holder at a time and is free again afterwards', async () => {
    const inner = await withRetentionLock(store().db(), () => withRetentionLock(store().db(), async () => 'inner'));
    expect(inner).toEqual({ ran: true, value: { ran: false } });
    expect(await withRetentionLock(store().db(), async () => 'again')).toEqual({ ran: true, value: 'again' });
  });
});
