/**
 * What the logs never hold: message bodies, Redis command arguments, statement parameters and row
 * values of database errors (docs/OPERATIONS.md "Logs", docs/SECURITY.md "Logs"). The error
 * serializer keeps what an error is and where it came from, never the data it was about; and a
 * publish Redis refuses is logged without the event it carried, against a real Redis.
 */
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFor, Collector, createLogger, dispose, FaultEnv, testEnv, uuid, type TestEnv } from './fixture.js';

let env: TestEnv;
const faults = new FaultEnv();

beforeAll(async () => {
  env = await testEnv('logs');
  // The first server of the env applies the migrations.
  await env.startServer();
});
afterAll(async () => {
  await dispose(env);
  await faults.cleanup();
});

/** Every JSON line a logger writes, as text, for a test to wait on and search. */
function capturedLog(level = 'debug') {
  const lines = new Collector<string>();
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(line);
      cb();
    },
  });
  return { lines, log: createLogger(level, false, sink) };
}

describe('the error serializer', () => {
  it('keeps what an error is and where it came from; never a Redis command\'s arguments, a statement\'s parameters or a row\'s values', async () => {
    const { lines, log } = capturedLog('debug');
    const secret = `SECRET-${uuid()}`;
    // As ioredis gives it: a ReplyError with the command and its arguments.
    class ReplyError extends Error {}
    const redisError = Object.assign(new ReplyError("NOPERM this user has no permissions to run the 'publish' command"), {
      command: { name: 'publish', args: ['chat:room:1', JSON.stringify({ type: 'message.new', message: { body: secret } })] },
    });
    const pgError = Object.assign(new Error(`insert into "message" ("body") values ($1) - new row violates check constraint "message_body_check"`), {
      code: '23514',
      severity: 'ERROR',
      constraint: 'message_body_check',
      table: 'message',
      detail: `Failing row contains (${secret}).`,
      where: `SQL statement with ${secret}`,
      sql: 'insert into "message" ("body") values ($1)',
      params: [secret],
    });
    const wrapped = new AggregateError([pgError], 'both failed', { cause: redisError });
    log.warn({ err: redisError }, 'bus error');
    log.warn({ err: pgError }, 'statement failed');
    log.warn({ err: wrapped }, 'wrapped');
    const [bus, statement, aggregate] = (await lines.until((ls) => ls.length >= 3, 'three lines')).map((l) => JSON.parse(l) as { err: Record<string, unknown> });
    expect(lines.items.filter((l) => l.includes(secret))).toEqual([]);
    expect(bus!.err).toMatchObject({ type: 'ReplyError', message: expect.stringContaining('NOPERM'), command: 'publish' });
    expect(statement!.err).toMatchObject({ message: '[query] - new row violates check constraint "message_body_check"', code: '23514', constraint: 'message_body_check', table: 'message' });
    expect(statement!.err).not.toHaveProperty('detail');
    expect(aggregate!.err).toMatchObject({ message: expect.stringMatching(/^both failed/), cause: { command: 'publish' }, errors: [{ code: '23514' }] });
  });
});

describe('logs never hold a message body (docs/OPERATIONS.md "Logs", docs/SECURITY.md "Logs")', () => {
  it('a publish that Redis refuses is logged as a bus error without the event it carried (ioredis puts the command and its arguments on the error)', async () => {
    // A Redis of the test's own, so that its ACL can be changed without touching anyone else's.
    const redis = await faults.redis();
    const { lines, log } = capturedLog('debug');
    // REDIS_SOLO=0: the node publishes every event to Redis, as every node of a deployment of several does.
    const srv = await env.startServer({ redisUrl: redis.url, redisPrefix: env.prefix('ops-acl'), redisSolo: false }, { log });
    await using alice = clientFor(srv.url, `acl-alice-${uuid().slice(0, 8)}`);
    const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'acl' });
    // Redis answers PUBLISH with an error from now on (here an ACL; on a Cluster, CLUSTERDOWN while a
    // shard fails over): a reply error, which ioredis gives the command's arguments.
    const admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    try {
      await admin.call('ACL', 'SETUSER', 'default', '-publish');
    } finally {
      admin.disconnect();
    }
    const secret = `SECRET-BODY-${uuid()}`;
    // The send itself succeeds: a failed publish is repaired by the gap fill, never thrown.
    const sent = await alice.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: secret });
    expect(sent.body).toBe(secret);
    const busError = await lines.first((l) => l.includes('"msg":"bus error"'), 'the bus error line', 10_000);
    expect(busError).toContain('NOPERM');
    // "Message bodies and tokens are never logged."
    expect(lines.items.filter((l) => l.includes(secret))).toEqual([]);
  });
});
