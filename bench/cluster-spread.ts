/**
 * `npm run bench:cluster` (`npx tsx bench/cluster-spread.ts [rooms] [messagesPerRoom]`): how evenly
 * room events spread over the shards of a Redis Cluster on sharded pub/sub.
 *
 * Starts a private cluster of 3 masters and 3 replicas on free loopback ports (redis-server and
 * redis-cli on the PATH; test/fixture/redis-topologies.ts), then two buses of ours on it (our
 * `RedisBus`, as a node opens it with `REDIS_CLUSTER_NODES`): node B subscribes to every room,
 * node A publishes `messagesPerRoom` events to each of `rooms` rooms (default 1,000 x 20). Counts
 * the SPUBLISH calls each master served (INFO commandstats, before and after), the rooms whose
 * channel each master owns, and checks that B received every event. Prints a summary and writes
 * bench/results/cluster-spread.json. Every process it starts is stopped at the end.
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { RedisBus } from '../src/realtime/redis-bus.js';
import { keySlot } from '../src/realtime/redis-slot.js';
import { RedisClusterEnv } from '../test/fixture/redis-topologies.js';
import { ROOT } from './lib/proc.js';

const ROOMS = Number(process.argv[2] ?? 1000);
const PER_ROOM = Number(process.argv[3] ?? 20);
const PREFIX = `bench-spread:${process.pid}:`;

const summary = (xs: number[]) => {
  const min = Math.min(...xs);
  const max = Math.max(...xs);
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  return { min, max, mean: Math.round(mean * 10) / 10, maxOverMin: Math.round((max / min) * 1000) / 1000, maxOverMean: Math.round((max / mean) * 1000) / 1000 };
};

const cluster = await RedisClusterEnv.start();
const buses: RedisBus[] = [];
try {
  const open = () => {
    const bus = new RedisBus({ url: cluster.topology, prefix: PREFIX, onError: (err) => console.error('bus error', err) });
    buses.push(bus);
    return bus;
  };
  const a = open();
  const b = open();
  await Promise.all(buses.flatMap((bus) => [bus.links.pub.ready(), bus.links.sub.ready()]));
  const rooms = Array.from({ length: ROOMS }, () => `room:${randomUUID()}`);
  let received = 0;
  await Promise.all(rooms.map((r) => b.subscribe(r, () => received++)));

  const masters = (await cluster.nodes()).filter((n) => n.master);
  const ownerOfSlot = (slot: number) => masters.find((m) => m.slots.some(([x, y]) => slot >= x && slot <= y))!.port;
  const roomsPer = new Map(masters.map((m) => [m.port, 0]));
  for (const r of rooms) {
    const port = ownerOfSlot(keySlot(`${PREFIX}{${r}}`));
    roomsPer.set(port, roomsPer.get(port)! + 1);
  }
  const slotsPer = new Map(masters.map((m) => [m.port, m.slots.reduce((s, [x, y]) => s + y - x + 1, 0)]));

  const before = await cluster.commandCalls('spublish');
  const t0 = performance.now();
  const payload = JSON.stringify({ type: 'message.new', seq: 0, body: 'x'.repeat(100) });
  // Round robin over the rooms, 1,000 publishes in flight at a time (the bus pipelines them).
  for (let m = 0; m < PER_ROOM; m++) await Promise.all(rooms.map((r) => a.publish(r, payload)));
  const publishMs = performance.now() - t0;
  const total = ROOMS * PER_ROOM;
  const deadline = Date.now() + 60_000;
  while (received < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const deliverMs = performance.now() - t0;
  const after = await cluster.commandCalls('spublish');
  const publishPer = new Map(masters.map((m) => [m.port, (after.get(m.port) ?? 0) - (before.get(m.port) ?? 0)]));
  const classic = [...(await cluster.commandCalls('publish')).values()].reduce((s, x) => s + x, 0);

  const perShard = masters.map((m) => ({ master: m.port, slots: slotsPer.get(m.port)!, rooms: roomsPer.get(m.port)!, messages: publishPer.get(m.port)! }));
  const result = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model },
    rooms: ROOMS,
    messagesPerRoom: PER_ROOM,
    messages: total,
    received,
    classicPublish: classic,
    perShard,
    messagesPerShard: summary(perShard.map((s) => s.messages)),
    roomsPerShard: summary(perShard.map((s) => s.rooms)),
    publishMs: Math.round(publishMs),
    deliverMs: Math.round(deliverMs),
    messagesPerSec: Math.round(total / (deliverMs / 1000)),
  };
  writeFileSync(`${ROOT}/bench/results/cluster-spread.json`, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`rooms ${ROOMS}, messages ${total} (${PER_ROOM} per room), received by the other node ${received}, classic PUBLISH ${classic}`);
  for (const s of perShard) console.log(`  master :${s.master}  slots ${s.slots}  rooms ${s.rooms}  SPUBLISH ${s.messages}`);
  console.log(`messages per shard ${JSON.stringify(result.messagesPerShard)}`);
  console.log(`rooms per shard ${JSON.stringify(result.roomsPerShard)}`);
  console.log(`published in ${result.publishMs} ms, all received after ${result.deliverMs} ms (${result.messagesPerSec}/s, informative)`);
  if (received !== total) process.exitCode = 1;
} finally {
  await Promise.allSettled(buses.map((bus) => bus.close()));
  await cluster.close();
}
