/**
 * A broker subscription that fails, or that races its own release, on a Redis of this file's own
 * (test/fault-env.ts): its ACL is changed, and it is stopped, killed and started again, without
 * touching the shared Redis. What has to hold: a handler whose channel Redis did not subscribe is
 * never told it is live; a channel with handlers is subscribed again (after a reconnect, or by the
 * next subscribe); the last handler leaving while a new one joins leaves the channel subscribed.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Collector, dispose, FaultEnv, RedisBus, testPrefix, textOf, waitFor, within, type BusPayload, type PrivateRedis } from './fixture.js';

const texts =
  (c: Collector<string>) =>
  (p: BusPayload): void =>
    c.push(textOf(p));

const fault = new FaultEnv();
let redis: PrivateRedis;
let admin: Redis;
const opened: RedisBus[] = [];

beforeAll(async () => {
  redis = await fault.redis();
  admin = new Redis(redis.url, { maxRetriesPerRequest: null });
  // It waits through the outages the tests make.
  admin.on('error', () => undefined);
}, 60_000);
afterAll(async () => {
  if (redis && !redis.running) await redis.start().catch(() => undefined);
  await Promise.all(opened.map((b) => b.close()));
  admin?.disconnect();
  await dispose(fault);
}, 60_000);

let n = 0;
/** A fresh prefix and ACL user name per test. */
const fresh = () => ({ prefix: `${testPrefix('subfail')}${++n}:`, user: `bus${n}` });

/**
 * A bus of a node (REDIS_SOLO=0: it publishes to Redis and subscribes only what its handlers ask
 * for); `user`: the node reaches Redis as that ACL user.
 */
function bus(prefix: string, user?: string): RedisBus {
  const url = user ? `redis://${user}:pw@127.0.0.1:${redis.port}` : redis.url;
  const b = new RedisBus({ url, prefix, solo: false });
  opened.push(b);
  return b;
}

/** How many connections subscribe to a broker channel now. */
async function numsub(channel: string): Promise<number> {
  const [, count] = (await admin.call('PUBSUB', 'NUMSUB', channel)) as [string, number];
  return Number(count);
}

/** An ACL user that may use every key and command, and only the channels matching `patterns`. */
async function aclUser(user: string, patterns: string[]): Promise<void> {
  await admin.call('ACL', 'SETUSER', user, 'on', '>pw', '~*', '+@all', 'resetchannels', ...patterns.map((p) => `&${p}`));
}

/**
 * Publishes `what` on `channel` and then a marker on `marker` (a channel `got` surely listens to):
 * Redis delivers one publisher's messages to one subscriber in order, so once the marker is in,
 * whatever of `channel` did not come before it never will.
 */
async function publishThenMarker(from: RedisBus, channel: string, what: string, marker: string, got: Collector<string>): Promise<void> {
  await from.publish(channel, what);
  await from.publish(marker, `marker:${what}`);
  await got.until((xs) => xs.includes(`marker:${what}`), `the marker after ${what}`);
}

/** Two nodes on a fresh prefix: `a` publishes, `b` listens to the `marker` channel (into `marker`). */
async function twoNodes() {
  const { prefix } = fresh();
  const a = bus(prefix);
  const b = bus(prefix);
  const marker = new Collector<string>();
  await b.subscribe('marker', texts(marker));
  return { prefix, a, b, marker };
}

/** Once Redis is back: both nodes reconnected, then 'after the restart' published on room:1 (the marker behind it). */
async function publishAfterRestart(prefix: string, a: RedisBus, marker: Collector<string>): Promise<void> {
  await waitFor(() => a.ping(), 'the publishing node reconnected', { timeoutMs: 30_000 });
  await waitFor(() => numsub(`${prefix}marker`), 'the marker channel subscribed again', { timeoutMs: 30_000 });
  await publishThenMarker(a, 'room:1', 'after the restart', 'marker', marker);
}

describe('RedisBus: a SUBSCRIBE that Redis refuses', () => {
  it('tells every handler that waited for it, and the next subscribe of the channel subscribes it', async () => {
    const { prefix, user } = fresh();
    // The node may subscribe `ok:*` channels only (an ACL; what matters is Redis answering the SUBSCRIBE with an error).
    await aclUser(user, [`${prefix}ok:*`]);
    const a = bus(prefix);
    const b = bus(prefix, user);
    const got = new Collector<string>();
    await b.subscribe('ok:marker', texts(got));

    // The first handler's SUBSCRIBE is on its way when the second joins the same channel.
    const first = b.subscribe('room:1', texts(got));
    const second = b.subscribe('room:1', texts(got));
    await expect(first).rejects.toThrow(/NOPERM/);
    // The second handler is told too: the channel is not live, nothing will come to it.
    await expect(second).rejects.toThrow(/NOPERM/);
    expect(await numsub(`${prefix}room:1`)).toBe(0);

    // Permission granted: the next subscribe sends its own SUBSCRIBE and is live once it resolves.
    await aclUser(user, [`${prefix}ok:*`, `${prefix}room:*`]);
    const third = new Collector<string>();
    const off = await b.subscribe('room:1', texts(third));
    expect(await numsub(`${prefix}room:1`)).toBe(1);
    await publishThenMarker(a, 'room:1', 'after the grant', 'ok:marker', got);
    expect(third.items).toEqual(['after the grant']);
    // The refused handlers were never added: they got nothing.
    expect(got.items).toEqual(['marker:after the grant']);
    await off();
  });

  it('a resubscription that Redis refuses after a reconnect is retried until it succeeds, and the listeners are told', async () => {
    const { prefix, user } = fresh();
    await aclUser(user, [`${prefix}ok:*`, `${prefix}room:*`]);
    const a = bus(prefix);
    const b = bus(prefix, user);
    const marker = new Collector<string>();
    await b.subscribe('ok:marker', texts(marker));
    const got = new Collector<string>();
    await b.subscribe('room:1', texts(got));
    await publishThenMarker(a, 'room:1', 'before', 'ok:marker', marker);
    expect(got.items).toEqual(['before']);

    // The operator takes `room:*` away: Redis drops the node's subscriber connection (it listens
    // to a channel it may no longer), and refuses the resubscription after the reconnect.
    const reconnects = new Collector<number>();
    b.onReconnect(() => reconnects.push(reconnects.items.length + 1));
    await aclUser(user, [`${prefix}ok:*`]);
    await reconnects.until((xs) => xs.length >= 1, 'the reconnect after the ACL change');
    // The channels it may still use are back at once, one refused channel does not hold them back.
    expect(await numsub(`${prefix}ok:marker`)).toBe(1);
    expect(await numsub(`${prefix}room:1`)).toBe(0);

    // Permission back: the bus subscribes the channel again by itself and tells its listeners
    // (what was published meanwhile is for the gap fill).
    await aclUser(user, [`${prefix}ok:*`, `${prefix}room:*`]);
    await reconnects.until((xs) => xs.length >= 2, 'the listeners told after the retried resubscription');
    expect(await numsub(`${prefix}room:1`)).toBe(1);
    await publishThenMarker(a, 'room:1', 'after', 'ok:marker', marker);
    expect(got.items).toEqual(['before', 'after']);
  });
});

describe('RedisBus: a SUBSCRIBE cut off by an outage', () => {
  it('is sent again once Redis is back: every handler that waited for it is live and gets the next publish', async () => {
    const { prefix, a, b, marker } = await twoNodes();
    // Redis stops answering: the SUBSCRIBE goes out and waits for its reply.
    process.kill(redis.pid!, 'SIGSTOP');
    let first: Promise<() => Promise<void>>;
    let second: Promise<() => Promise<void>>;
    const h1 = new Collector<string>();
    const h2 = new Collector<string>();
    try {
      first = b.subscribe('room:1', texts(h1));
      second = b.subscribe('room:1', texts(h2));
      // Both calls have run up to their wait for Redis (a turn of the event loop, no time).
      await new Promise((r) => setImmediate(r));
    } finally {
      // Then it dies with the command unanswered, and comes back empty.
      await redis.kill();
    }
    await redis.start();
    const [off1, off2] = await within(Promise.all([first, second]), 30_000, 'both subscribes after the restart');
    expect(await numsub(`${prefix}room:1`)).toBe(1);
    await publishAfterRestart(prefix, a, marker);
    expect([h1.items, h2.items]).toEqual([['after the restart'], ['after the restart']]);
    await off1();
    await off2();
  });
});

describe('RedisBus: the last handler leaving while a new one joins', () => {
  it('leaves the channel subscribed for the new handler (connection up)', async () => {
    const { prefix, a, b, marker } = await twoNodes();
    const h1 = new Collector<string>();
    const h2 = new Collector<string>();
    const off1 = await b.subscribe('room:1', texts(h1));
    // UNSUBSCRIBE and SUBSCRIBE of the same channel on their way together.
    const [, off2] = await Promise.all([off1(), b.subscribe('room:1', texts(h2))]);
    expect(await numsub(`${prefix}room:1`)).toBe(1);
    await publishThenMarker(a, 'room:1', 'one', 'marker', marker);
    expect([h1.items, h2.items]).toEqual([[], ['one']]);
    await off2();
    expect(await numsub(`${prefix}room:1`)).toBe(0);
  });

  it('leaves the channel subscribed for the new handler when both happen while Redis is down', async () => {
    const { prefix, a, b, marker } = await twoNodes();
    const h1 = new Collector<string>();
    const h2 = new Collector<string>();
    const h3 = new Collector<string>();
    const off1 = await b.subscribe('room:1', texts(h1));
    await redis.kill();
    await waitFor(() => b.links.sub.down, 'the subscriber connection down');
    // A second handler joins (the channel has one), then both leave: the UNSUBSCRIBE waits for Redis;
    // a third joins: its SUBSCRIBE waits behind it.
    const off2 = await b.subscribe('room:1', texts(h2));
    const left = Promise.all([off1(), off2()]);
    const joined = b.subscribe('room:1', texts(h3));
    await redis.start();
    const [, off3] = await within(Promise.all([left, joined]), 30_000, 'the leave and the join after the restart');
    expect(await numsub(`${prefix}room:1`)).toBe(1);
    await publishAfterRestart(prefix, a, marker);
    expect([h1.items, h2.items, h3.items]).toEqual([[], [], ['after the restart']]);
    await off3();
  });
});
