/**
 * The transaction object (src/store/tx.ts) owns every durable change: it takes the room's seq,
 * writes the log row, publishes only after commit, and enforces the lock order. Real PostgreSQL and
 * Redis, through the server's own Store.
 */
import { describe, expect, it } from 'vitest';
import { actor, callerFor, fileServer, openEvents, uuid } from './fixture.js';

const t = fileServer('storetx');

let n = 0;
const owner = () => `txowner${++n}`;

async function room(who: string) {
  return callerFor(t.app, actor(who)).room.create({ kind: 'group', name: `tx ${who}` });
}

describe('Tx', () => {
  it('appends an event with the next seq and its log row, published after commit, in order', async () => {
    const me = owner();
    const r = await room(me);
    await using s = await openEvents(t.app, actor(me), { roomId: r.id });
    const ready = await s.next();
    const appended = await t.app.services.store.transact(async (tx) => {
      const a = await tx.append({ type: 'room.updated', roomId: r.id, name: 'one', topic: null, by: me });
      const b = await tx.append({ type: 'room.updated', roomId: r.id, name: 'two', topic: null, by: me });
      return [a.seq, b.seq];
    });
    expect(appended).toEqual([Number(ready.id) + 1, Number(ready.id) + 2]);
    const [e1, e2] = await s.take(2);
    expect([e1!.id, e2!.id]).toEqual(appended.map(String));
    expect(e2!.event).toMatchObject({ type: 'room.updated', name: 'two', seq: appended[1] });
    const rows = await t.env.sql<{ seq: number; type: string }>('select seq::int, type from room_event where room_id = $1 and seq > $2 order by seq', [
      r.id,
      Number(ready.id),
    ]);
    expect(rows).toEqual([
      { seq: appended[0], type: 'room.updated' },
      { seq: appended[1], type: 'room.updated' },
    ]);
  });

  it('a rolled-back change takes no seq and publishes nothing', async () => {
    const me = owner();
    const r = await room(me);
    await using s = await openEvents(t.app, actor(me), { roomId: r.id });
    const ready = Number((await s.next()).id);
    await expect(
      t.app.services.store.transact(async (tx) => {
        await tx.append({ type: 'room.updated', roomId: r.id, name: 'never', topic: null, by: me });
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    // The next committed change takes the very next seq, and it is the next event the stream sees.
    const m = await callerFor(t.app, actor(me)).chat.send({ roomId: r.id, clientId: uuid(), body: 'after' });
    expect(m.seq).toBe(ready + 1);
    const next = await s.next();
    expect(next.id).toBe(String(ready + 1));
    expect(next.event).toMatchObject({ type: 'message.new', message: { body: 'after' } });
  });

  it('refuses a message lock once a room seq is held (message rows, then the room: the lock order)', async () => {
    const me = owner();
    const r = await room(me);
    await expect(
      t.app.services.store.transact(async (tx) => {
        tx.lockForUpdate('message');
        await tx.append({ type: 'room.updated', roomId: r.id, name: 'x', topic: null, by: me });
        tx.lockForUpdate('message');
      }),
    ).rejects.toThrow(/lock order: message must be locked before a room's seq is taken/);
  });

  it('with retry, a callback aborted by a deadlock runs again in a new transaction: its seq is taken once and published once', async () => {
    const me = owner();
    const r = await room(me);
    await using s = await openEvents(t.app, actor(me), { roomId: r.id });
    const ready = Number((await s.next()).id);
    const store = t.app.services.store;
    const before = store.txStats.retried;
    let attempts = 0;
    const appended = await store.transact(
      async (tx) => {
        attempts++;
        const e = await tx.append({ type: 'room.updated', roomId: r.id, name: `attempt ${attempts}`, topic: null, by: me });
        // What PostgreSQL reports to the transaction it aborts to break a deadlock.
        if (attempts === 1) throw Object.assign(new Error('deadlock detected'), { code: '40P01' });
        return e.seq;
      },
      { retry: true },
    );
    expect(attempts).toBe(2);
    expect(store.txStats.retried).toBe(before + 1);
    expect(appended).toBe(ready + 1);
    const rows = await t.env.sql<{ seq: number; data: { name: string } }>('select seq::int, data from room_event where room_id = $1 and seq > $2', [r.id, ready]);
    expect(rows).toEqual([{ seq: ready + 1, data: expect.objectContaining({ name: 'attempt 2' }) }]);
    // The first attempt's event is never published: the next events are the second attempt's, then a marker.
    expect((await s.next()).event).toMatchObject({ type: 'room.updated', seq: ready + 1, name: 'attempt 2' });
    const marker = await callerFor(t.app, actor(me)).chat.send({ roomId: r.id, clientId: uuid(), body: 'marker' });
    expect((await s.next()).event).toMatchObject({ type: 'message.new', seq: marker.seq });
  });

  it('without retry, or for another error, the callback runs once and its error is thrown', async () => {
    const me = owner();
    const r = await room(me);
    const store = t.app.services.store;
    const before = store.txStats.retried;
    const fail = (code: string) => {
      let attempts = 0;
      return {
        fn: async (tx: Parameters<Parameters<typeof store.transact>[0]>[0]) => {
          attempts++;
          await tx.append({ type: 'room.updated', roomId: r.id, name: 'never', topic: null, by: me });
          throw Object.assign(new Error(`failed with ${code}`), { code });
        },
        attempts: () => attempts,
      };
    };
    const plain = fail('40P01');
    await expect(store.transact(plain.fn)).rejects.toThrow('failed with 40P01');
    expect(plain.attempts()).toBe(1);
    const other = fail('23505');
    await expect(store.transact(other.fn, { retry: true })).rejects.toThrow('failed with 23505');
    expect(other.attempts()).toBe(1);
    const always = fail('40001');
    await expect(store.transact(always.fn, { retry: true })).rejects.toThrow('failed with 40001');
    expect(always.attempts()).toBe(3);
    expect(store.txStats.retried).toBe(before + 2);
    expect(await t.env.sql('select seq from room_event where room_id = $1 and type = $2', [r.id, 'room.updated'])).toEqual([]);
  });

  it("inbox items of several users take each user's own next seq, in user id order", async () => {
    const me = owner();
    const users = [`${me}-c`, `${me}-a`, `${me}-b`];
    const items = await t.app.services.store.transact((tx) =>
      tx.appendInboxMany('default', users, { type: 'notification', kind: 'k', title: 't', data: null, from: me }),
    );
    expect(items.map((i) => i.seq)).toEqual([1, 1, 1]);
    const again = await t.app.services.store.transact((tx) => tx.appendInbox('default', users[1]!, { type: 'notification', kind: 'k', title: 'u', data: null, from: me }));
    expect(again.seq).toBe(2);
    const rows = await t.env.sql<{ user_id: string; seq: number }>(
      'select user_id, seq::int from inbox_event where tenant = $1 and user_id = any($2) order by user_id, seq',
      ['default', users],
    );
    expect(rows).toEqual([
      { user_id: `${me}-a`, seq: 1 },
      { user_id: `${me}-a`, seq: 2 },
      { user_id: `${me}-b`, seq: 1 },
      { user_id: `${me}-c`, seq: 1 },
    ]);
  });
});
