import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Collector, deferred, LocalValue, MemoryBus, RedisBus, textOf, type BusPayload, TEST_REDIS_URL, testPrefix, type EventBus } from './fixture.js';
import { RedisClusterEnv } from './fixture/redis-topologies.js';

/** A bus handler that collects the text of each payload (a local publish's or another node's). */
const texts =
  (c: Collector<string>) =>
  (p: BusPayload): void =>
    c.push(textOf(p));

/**
 * One contract, two implementations: whatever the bus, a subscriber that is live gets each publish
 * exactly once and in order, channels are isolated, and subscriptions are reference-counted.
 */
interface Fixture {
  name: string;
  /** Two buses that see each other (two processes); for the memory bus, the same instance. */
  pair(): Pair;
}

interface Pair<B extends EventBus = EventBus> extends AsyncDisposable {
  a: B;
  b: B;
}

/** Two Redis buses on one prefix (two nodes). */
function redisPair(): Pair<RedisBus> {
  const a = new RedisBus({ url: TEST_REDIS_URL, prefix });
  const b = new RedisBus({ url: TEST_REDIS_URL, prefix });
  return { a, b, [Symbol.asyncDispose]: async () => void (await Promise.all([a.close(), b.close()])) };
}

const prefix = testPrefix('bus');
const admin = new Redis(TEST_REDIS_URL);
afterAll(() => admin.disconnect());

/** A private Redis Cluster (3 masters, 3 replicas) for the sharded bus (SPUBLISH / SSUBSCRIBE). */
let cluster: RedisClusterEnv | undefined;
beforeAll(async () => {
  cluster = await RedisClusterEnv.start();
}, 60_000);
afterAll(() => cluster?.close());

const fixtures: Fixture[] = [
  {
    name: 'memory',
    pair() {
      const bus = new MemoryBus();
      return { a: bus, b: bus, [Symbol.asyncDispose]: () => bus.close() };
    },
  },
  {
    name: 'redis',
    pair: redisPair,
  },
  {
    name: 'redis cluster (sharded pub/sub)',
    pair() {
      const a = new RedisBus({ url: cluster!.topology, prefix });
      const b = new RedisBus({ url: cluster!.topology, prefix });
      return { a, b, [Symbol.asyncDispose]: async () => void (await Promise.all([a.close(), b.close()])) };
    },
  },
];

for (const fx of fixtures) {
  describe(`EventBus contract: ${fx.name}`, () => {
    it('listened: the channels some node subscribes to now, seen from either node', async () => {
      await using pair = fx.pair();
      const { a, b } = pair;
      const off = await b.subscribe('user:t:listening', () => undefined);
      expect(await a.listened(['user:t:listening', 'user:t:quiet'])).toEqual(new Set(['user:t:listening']));
      expect(await a.listened([])).toEqual(new Set());
      await off();
      expect(await a.listened(['user:t:listening'])).toEqual(new Set());
    });

    it('delivers a publish once to every live handler, locally and on the other node', async () => {
      await using pair = fx.pair();
      const { a, b } = pair;
      const onA = new Collector<string>();
      const onB = new Collector<string>();
      const offA = await a.subscribe('room:1', texts(onA));
      const offB = await b.subscribe('room:1', texts(onB));
      await a.publish('room:1', 'hello');
      await onA.until((xs) => xs.length >= 1, 'local delivery');
      await onB.until((xs) => xs.length >= 1, 'remote delivery');
      // A marker published afterwards proves nothing else (no echo, no duplicate) arrived before it.
      await a.publish('room:1', 'marker');
      await onA.until((xs) => xs.includes('marker'));
      await onB.until((xs) => xs.includes('marker'));
      expect(onA.items).toEqual(['hello', 'marker']);
      expect(onB.items).toEqual(['hello', 'marker']);
      await offA();
      await offB();
    });

    it('a local value: handlers of the publishing process get the value itself, the other node its text, encoded once', async () => {
      await using pair = fx.pair();
      const { a, b } = pair;
      const onA: BusPayload[] = [];
      const onB = new Collector<BusPayload>();
      await a.subscribe('room:v', (p) => onA.push(p));
      await b.subscribe('room:v', onB.push);
      const value = { type: 'x', at: new Date(0) };
      let encoded = 0;
      await a.publish('room:v', new LocalValue(value, (v) => `text of ${v.type}#${++encoded}`));
      expect(onA).toHaveLength(1);
      expect(onA[0]).toBeInstanceOf(LocalValue);
      expect((onA[0] as LocalValue).value).toBe(value);
      const [got] = await onB.until((xs) => xs.length === 1, 'the publish on b');
      if (a === b) expect(got).toBe(onA[0]);
      else expect(got).toBe('text of x#1');
      expect(encoded).toBe(a === b ? 0 : 1);
    });

    it('keeps publish order per channel', async () => {
      await using pair = fx.pair();
      const { a, b } = pair;
      const got = new Collector<string>();
      const off = await b.subscribe('room:order', texts(got));
      const sent = Array.from({ length: 500 }, (_, i) => `m${i}`);
      await Promise.all(sent.map((m) => a.publish('room:order', m)));
      await got.until((xs) => xs.length >= sent.length, '500 messages');
      expect(got.items).toEqual(sent);
      await off();
    });

    it('isolates channels and reference-counts handlers', async () => {
      await using pair = fx.pair();
      const { a, b } = pair;
      const h1 = new Collector<string>();
      const h2 = new Collector<string>();
      const other = new Collector<string>();
      const off1 = await b.subscribe('room:x', texts(h1));
      const off2 = await b.subscribe('room:x', texts(h2));
      const offOther = await b.subscribe('room:y', texts(other));
      await a.publish('room:x', 'one');
      await h1.until((xs) => xs.length === 1);
      await h2.until((xs) => xs.length === 1);
      await off1();
      await a.publish('room:x', 'two');
      await a.publish('room:y', 'y-marker');
      await h2.until((xs) => xs.length === 2);
      await other.until((xs) => xs.length === 1);
      expect(h1.items).toEqual(['one']);
      expect(h2.items).toEqual(['one', 'two']);
      expect(other.items).toEqual(['y-marker']);
      await off2();
      await off2(); // idempotent
      if (fx.name === 'redis') {
        const [, n] = (await admin.pubsub('NUMSUB', `${prefix}room:x`)) as [string, number];
        expect(Number(n)).toBe(0);
      }
      await offOther();
    });

    it('isolates a throwing handler from the others', async () => {
      await using pair = fx.pair();
      const { a, b } = pair;
      const got = new Collector<string>();
      await b.subscribe('room:t', () => {
        throw new Error('boom');
      });
      await b.subscribe('room:t', texts(got));
      await a.publish('room:t', 'ok');
      await got.until((xs) => xs.length === 1);
      expect(got.items).toEqual(['ok']);
    });

    it('answers ping while open', async () => {
      await using pair = fx.pair();
      const { a } = pair;
      expect(await a.ping()).toBe(true);
    });
  });
}

describe('RedisBus reconnect', () => {
  it('resubscribes after its connection is killed and tells listeners', async () => {
    await using pair = redisPair();
    const { a, b } = pair;
    const got = new Collector<string>();
    await b.subscribe('room:r', texts(got));
    await a.publish('room:r', 'before');
    await got.until((xs) => xs.length === 1);
    const reconnected = deferred();
    b.onReconnect(() => reconnected.resolve());
    const list = (await admin.client('LIST')) as string;
    const line = list.split('\n').find((l) => l.includes(`name=chat-sub-${b.nodeId}`));
    expect(line).toBeDefined();
    const id = /id=(\d+)/.exec(line!)![1]!;
    await admin.client('KILL', 'ID', id);
    await reconnected.promise;
    await a.publish('room:r', 'after');
    await got.until((xs) => xs.includes('after'), 'delivery after reconnect');
    expect(got.items).toEqual(['before', 'after']);
  });
});
