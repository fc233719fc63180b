import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { Collector, deferred, LocalValue, newCounters, RateLimits, RedisBus, textOf, type BusPayload, RedisLink, TEST_REDIS_URL, testConfig, testPrefix, within } from './fixture.js';

/** A bus handler that collects the text of each payload (a local publish's or another node's). */
const texts =
  (c: Collector<string>) =>
  (p: BusPayload): void =>
    c.push(textOf(p));

/**
 * A node alone on its Redis skips the broker (src/realtime/redis-bus.ts, "Alone on Redis"): what
 * it skips can never be something another node's live subscriber should have had, and it publishes
 * again as soon as another node may listen.
 */
const admin = new Redis(TEST_REDIS_URL);
const opened: { close(): Promise<unknown> }[] = [];
afterAll(async () => {
  await Promise.all(opened.map((b) => b.close()));
  admin.disconnect();
});

let n = 0;
/** A fresh prefix per test: the buses of one test see each other and nobody else. */
const freshPrefix = () => `${testPrefix('alone')}${++n}:`;

function bus(prefix: string, opts: { soloCheckMs?: number; announceTimeoutMs?: number; solo?: boolean } = {}): RedisBus {
  const b = new RedisBus({ url: TEST_REDIS_URL, prefix, ...opts });
  opened.push(b);
  return b;
}

/** Resolves with the next value `alone` takes. */
function nextAlone(b: RedisBus): Promise<boolean> {
  const d = deferred<boolean>();
  const off = b.onAloneChange((v) => {
    off();
    d.resolve(v);
  });
  return within(d.promise, 10_000, 'a change of alone');
}

/** A plain Redis subscriber of one broker channel: what the bus really put on Redis. */
async function rawListener(channel: string): Promise<Collector<string> & Disposable> {
  const raw = new Redis(TEST_REDIS_URL);
  const got = new Collector<string>();
  raw.on('message', (c: string, m: string) => c === channel && got.push(m));
  await raw.subscribe(channel);
  return Object.assign(got, { [Symbol.dispose]: () => raw.disconnect() });
}

describe('RedisBus alone on its Redis', () => {
  it('skips the broker while alone; a second node makes both publish', async () => {
    const prefix = freshPrefix();
    const a = bus(prefix);
    const local = new Collector<string>();
    await a.subscribe('room:1', texts(local));
    expect(a.alone).toBe(true);
    using raw = await rawListener(`${prefix}room:1`);
    await a.publish('room:1', 'skipped');
    expect(local.items).toEqual(['skipped']);
    // A local value is never even encoded.
    let encoded = 0;
    await a.publish('room:2', new LocalValue('v', () => `${++encoded}`));
    expect(encoded).toBe(0);
    // Only nodes count: a plain subscriber is not one.
    expect(await a.listened(['room:1', 'room:2'])).toEqual(new Set(['room:1']));

    const b = bus(prefix);
    const onB = new Collector<string>();
    await b.subscribe('room:1', texts(onB));
    expect([a.alone, b.alone, a.peerCount, b.peerCount]).toEqual([false, false, 1, 1]);
    await a.publish('room:1', 'published');
    await onB.until((xs) => xs.length === 1, 'the publish on the other node');
    expect(onB.items).toEqual(['published']);
    // The first thing on the broker is the second publish: the first never left the node.
    expect(await raw.first(() => true, 'a message on the broker')).toBe(`${a.nodeId}\npublished`);
    expect(local.items).toEqual(['skipped', 'published']);
  });

  it('every publish after a newcomer subscribed reaches it, whatever the node was skipping before', async () => {
    const prefix = freshPrefix();
    const a = bus(prefix);
    await a.subscribe('room:busy', () => undefined);
    expect(a.alone).toBe(true);
    // A hears nothing for a while (its subscriber socket paused): B's hello reaches it late, so
    // A goes on skipping the broker meanwhile, and B's subscription must wait for A's answer.
    const socket = (a.links.sub.client as Redis).stream;
    socket.pause();
    const b = bus(prefix);
    const onB = new Collector<string>();
    let live: number | null = null;
    const subscribed = b.subscribe('room:busy', texts(onB)).then(() => {
      live = sent;
    });
    // A publishes without pause (yielding to I/O between publishes) until 200 after B went live.
    let sent = 0;
    while ((live === null || sent < live + 200) && sent < 1_000_000) {
      await a.publish('room:busy', String(sent++));
      await new Promise<void>((r) => setImmediate(r));
      if (sent === 300) socket.resume();
    }
    expect(live).toBeGreaterThanOrEqual(300);
    await subscribed;
    const from = live!;
    await onB.until((xs) => xs.includes(String(sent - 1)), 'the last publish on the newcomer');
    const got = new Set(onB.items.map(Number));
    const missing: number[] = [];
    for (let i = from; i < sent; i++) if (!got.has(i)) missing.push(i);
    expect(missing).toEqual([]);
    expect(a.alone).toBe(false);
  });

  it('is alone again when the other node leaves (bye), or is found gone by the check', async () => {
    const prefix = freshPrefix();
    const a = bus(prefix, { soloCheckMs: 50 });
    await a.subscribe('room:x', () => undefined);
    const b = bus(prefix);
    await b.subscribe('room:x', () => undefined);
    expect(a.alone).toBe(false);
    const aloneAgain = nextAlone(a);
    await b.close();
    expect(await aloneAgain).toBe(true);

    // A node that crashed says no bye: its connections just go away.
    const c = bus(prefix);
    await c.subscribe('room:x', () => undefined);
    expect(a.alone).toBe(false);
    const found = nextAlone(a);
    await Promise.all([c.links.pub.close(), c.links.sub.close()]);
    expect(await found).toBe(true);
  });

  it('a subscriber of the control channel that never acknowledges keeps the node publishing', async () => {
    const prefix = freshPrefix();
    const silent = new Redis(TEST_REDIS_URL);
    try {
      await silent.subscribe(`${prefix}@nodes`);
      const errors: unknown[] = [];
      const a = new RedisBus({ url: TEST_REDIS_URL, prefix, announceTimeoutMs: 100, soloCheckMs: 50, onError: (e) => errors.push(e) });
      opened.push(a);
      await a.subscribe('room:1', () => undefined);
      expect(a.alone).toBe(false);
      expect(String(errors[0])).toMatch(/node announcement timed out/);
      const alone = nextAlone(a);
      await silent.unsubscribe();
      expect(await alone).toBe(true);
    } finally {
      silent.disconnect();
    }
  });

  it('publishes from the moment its subscriber connection drops, and announces itself again before its listeners fill gaps', async () => {
    const prefix = freshPrefix();
    const a = bus(prefix);
    await a.subscribe('room:1', () => undefined);
    expect(a.alone).toBe(true);
    const steps: string[] = [];
    const off = a.onAloneChange((v) => steps.push(`alone ${v}`));
    const reconnected = deferred();
    a.onReconnect(() => {
      steps.push('reconnect');
      reconnected.resolve();
    });
    const list = (await admin.call('CLIENT', 'LIST')) as string;
    const line = list.split('\n').find((l) => l.includes(`name=chat-sub-${a.nodeId}`));
    const id = /\bid=(\d+)/.exec(line ?? '')?.[1];
    expect(id).toBeDefined();
    await admin.call('CLIENT', 'KILL', 'ID', id!);
    await within(reconnected.promise, 10_000, 'the reconnect');
    off();
    expect(steps).toEqual(['alone false', 'alone true', 'reconnect']);
  });

  it('never skips with solo off', async () => {
    const prefix = freshPrefix();
    const a = bus(prefix, { solo: false });
    await a.subscribe('room:1', () => undefined);
    using raw = await rawListener(`${prefix}room:1`);
    expect(a.alone).toBe(false);
    await a.publish('room:1', 'out');
    expect(await raw.first(() => true, 'the publish on the broker')).toBe(`${a.nodeId}\nout`);
  });
});

describe('rate limits of a node alone on its Redis', () => {
  it('counts in memory while alone, in Redis otherwise: the same budget either way', async () => {
    const prefix = freshPrefix();
    const config = testConfig({ redisPrefix: prefix, limits: { roomCreatesPerMinute: 2 } });
    const link = new RedisLink('limits', TEST_REDIS_URL);
    opened.push(link);
    await link.ready();
    let alone = true;
    const limits = new RateLimits(config, newCounters(), link, undefined, () => alone);
    const keys = () => admin.keys(`${prefix}rl:*`);

    await limits.consume('roomCreate', 'u1');
    await limits.consume('roomCreate', 'u1');
    await expect(limits.consume('roomCreate', 'u1')).rejects.toMatchObject({ code: 'TOO_MANY_REQUESTS' });
    expect(await keys()).toEqual([]);

    alone = false;
    await limits.consume('roomCreate', 'u2');
    await limits.consume('roomCreate', 'u2');
    await expect(limits.consume('roomCreate', 'u2')).rejects.toMatchObject({ code: 'TOO_MANY_REQUESTS' });
    expect(await keys()).toEqual([`${prefix}rl:room:u2`]);
  });
});
