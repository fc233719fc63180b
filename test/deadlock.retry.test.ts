/**
 * Deadlocks between a reply's delete and a re-encryption batch (src/store/tx.ts `transact` with
 * `retry`): the delete locks the reply, then its root (src/store/messages.ts); a re-encryption batch
 * (src/services/rekey.ts) locks every sealed message of its page in id order, so the root first when
 * its id is the lower one. PostgreSQL aborts one of the two with 40P01; that one runs again and
 * both changes land.
 *
 * Driven step by step, never timed: the other side is a transaction on a connection of its own that
 * takes its row locks one statement at a time, the next only once PostgreSQL reports the server's
 * transaction waiting on it. PostgreSQL looks for a deadlock once per lock wait, `deadlock_timeout`
 * after the wait began (1 s by default): the server's transaction waits first, and the other side
 * closes the cycle a moment later, so the server's check finds it and breaks it there, in the
 * transaction under test. The other side's own check comes much later (5 s): it never breaks the
 * cycle first, and should the server's check ever have missed it, the test fails there at once.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { fileServer, openEvents, actor, roomKit, uuid, waitFor } from './fixture.js';
import { createLogger, Keyring, Rekeyer, SecretBox } from './fixture/src.js';

const k1 = randomBytes(32).toString('base64');
const k2 = randomBytes(32).toString('base64');
const t = fileServer('deadlock', { messageKeys: `k1:${k1},k2:${k2}` });
const { users, as } = roomKit(() => t);

/** A transaction on a connection of its own that leaves breaking a deadlock to the server's transaction. */
async function otherTransaction() {
  const c = new pg.Client({ connectionString: t.env.databaseUrl });
  await c.connect();
  await c.query("set deadlock_timeout = '5s'");
  await c.query('begin');
  const pid = (await c.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  return {
    query: (text: string, params: unknown[] = []) => c.query(text, params),
    /**
     * Until a server connection waits on a lock this transaction holds, or `call` is over (it failed,
     * never to wait again: the test's expectations on its result say how).
     */
    blocking: (call: Tracked<unknown>) =>
      waitFor(
        async () =>
          call.done || (await t.env.sql<{ n: number }>('select count(*)::int as n from pg_stat_activity where $1 = any(pg_blocking_pids(pid))', [pid]))[0]!.n > 0,
        'the server transaction to wait on the other one',
        { timeoutMs: 10_000 },
      ),
    async [Symbol.asyncDispose]() {
      await c.end();
    },
  };
}

interface Tracked<T> {
  /** The call's result (awaiting it rethrows its error). */
  result: Promise<T>;
  readonly done: boolean;
}

/** A call running in the background, watched (its failure is awaited by the test, never unhandled). */
function track<T>(p: Promise<T>): Tracked<T> {
  const settled = { done: false };
  const result = p.finally(() => {
    settled.done = true;
  });
  result.catch(() => undefined);
  return {
    result,
    get done() {
      return settled.done;
    },
  };
}

const retried = () => t.app.services.store.txStats.retried;
const lastSeq = async (roomId: string) => (await t.env.sql<{ s: number }>('select last_seq::int as s from room where id = $1', [roomId]))[0]!.s;

/** An encrypted room with a root and a reply whose id sorts after the root's (a batch in id order locks the root first). */
async function thread(owner: string, member: string) {
  const room = await as(owner).room.create({ kind: 'group', name: 'vault', memberIds: [member], encrypted: true });
  // Ids are random: a root whose id sorts in the lower half first (each does with probability 1/2),
  // then replies until one sorts after it (each does with probability 1/2 at least). A root with a
  // high id could need hundreds of replies, pushing it off the first history page.
  let root = await as(owner).chat.send({ roomId: room.id, clientId: uuid(), body: 'the root' });
  while (root.id >= '8') root = await as(owner).chat.send({ roomId: room.id, clientId: uuid(), body: 'the root' });
  let reply = await as(member).chat.send({ roomId: room.id, clientId: uuid(), body: 'a reply', replyToId: root.id });
  while (reply.id < root.id) reply = await as(member).chat.send({ roomId: room.id, clientId: uuid(), body: 'a reply', replyToId: root.id });
  return { room, root, reply };
}

describe('a deadlock is broken and the aborted transaction runs again', () => {
  it("a reply's delete that deadlocks with a re-encryption batch is run again: deleted once, one event, the batch's new seal kept", async () => {
    const [owner, bob] = users('owner', 'bob');
    const { room, root, reply } = await thread(owner, bob);
    const repliesBefore = (await as(owner).chat.thread({ messageId: root.id, limit: 1 })).root.replyCount;
    await using s = await openEvents(t.app, actor(owner), { roomId: room.id });
    const ready = Number((await s.next()).id);
    const before = retried();

    await using batch = await otherTransaction();
    // The batch locks the root (its id is the lower one)...
    await batch.query('select id from message where id = $1 for update', [root.id]);
    // ... the delete locks the reply and waits for the root ...
    const deleting = track(as(bob).chat.delete({ messageId: reply.id }));
    await batch.blocking(deleting);
    // ... and the batch goes on to the reply: a deadlock. PostgreSQL aborts the delete's transaction,
    // which releases the reply; the delete's next attempt waits for the batch to commit.
    await batch.query('select id from message where id = $1 for update', [reply.id]);
    const resealed = new Keyring(`k2:${k2}`).encrypt('the root', `message:${room.id}:${root.id}`);
    await batch.query('update message set body = $2, key_id = $3 where id = $1', [root.id, resealed.text, resealed.keyId]);
    await batch.blocking(deleting);
    await batch.query('commit');

    const deleted = await deleting.result;
    expect(deleted).toMatchObject({ id: reply.id, body: null });
    expect(retried()).toBe(before + 1);
    // The delete's seq was taken once (the aborted attempt's rolled back), and published once.
    expect(await lastSeq(room.id)).toBe(ready + 1);
    const [event] = await s.take(1);
    expect(event).toMatchObject({ id: String(ready + 1), event: { type: 'message.deleted', message: { id: reply.id } } });
    const marker = await as(owner).chat.send({ roomId: room.id, clientId: uuid(), body: 'after' });
    expect((await s.next()).event).toMatchObject({ type: 'message.new', seq: marker.seq });
    // Both changes are there: the root carries the batch's seal and reads as before; one reply less.
    const rows = await t.env.sql<{ id: string; key_id: string | null; deleted: boolean }>(
      'select id, key_id, deleted_at is not null as deleted from message where id = any($1) order by seq',
      [[root.id, reply.id]],
    );
    expect(rows).toEqual([
      { id: root.id, key_id: 'k2', deleted: false },
      { id: reply.id, key_id: null, deleted: true },
    ]);
    const after = (await as(owner).chat.thread({ messageId: root.id, limit: 1 })).root;
    expect(after.body).toBe('the root');
    expect(after.replyCount).toBe(repliesBefore - 1);
  });

  it("a re-encryption batch that deadlocks with a reply's delete is run again: every body on the new key, counted once", async () => {
    const [owner, bob] = users('owner', 'bob');
    const { root, reply } = await thread(owner, bob);
    const sealed = async () => (await t.env.sql<{ n: number }>('select count(*)::int as n from message where key_id is not null and body is not null'))[0]!.n;
    const total = await sealed();
    const before = retried();
    const k3 = randomBytes(32).toString('base64');
    const keyring = new Keyring(`k3:${k3},k1:${k1},k2:${k2}`);
    const rekey = new Rekeyer(t.app.services.store, keyring, new SecretBox(keyring), createLogger('silent'));

    await using del = await otherTransaction();
    // The delete locks the reply ...
    await del.query('select id from message where id = $1 for update', [reply.id]);
    // ... the batch locks every sealed message in id order, the root among them, and waits for the reply ...
    const running = track(rekey.run());
    await del.blocking(running);
    // ... and the delete goes on to the root: a deadlock. PostgreSQL aborts the batch's transaction;
    // its next attempt waits for the delete to commit, and then finds the reply without a body (not
    // counted: the aborted attempt's rows are not counted either).
    await del.query('select id from message where id = $1 for update', [root.id]);
    await del.query('update message set body = null, key_id = null, deleted_at = now(), deleted_by = $2 where id = $1', [reply.id, bob]);
    await del.blocking(running);
    await del.query('commit');

    const report = await running.result;
    expect(retried()).toBe(before + 1);
    expect(report.messages).toEqual({ seen: total - 1, resealed: total - 1, failed: 0 });
    expect(await t.env.sql('select distinct key_id from message where key_id is not null')).toEqual([{ key_id: 'k3' }]);
    expect(await t.env.sql('select body from message where id = $1', [reply.id])).toEqual([{ body: null }]);
  });
});
