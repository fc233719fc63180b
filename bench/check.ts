/**
 * `npx tsx bench/check.ts`: checks that the load generator's lean clients speak each system's real
 * protocol, against the real clients (`@trpc/client` wsLink with superjson, `socket.io-client`, `ws`):
 *
 * 1. lean senders (a load worker) send; a real client and a lean subscriber both receive every
 *    acknowledged message exactly once;
 * 2. a real client sends; a lean subscriber receives every message.
 *
 * Takes about 20 s; exits non-zero on a mismatch.
 */
import { randomUUID } from 'node:crypto';
import { createTRPCClient, createWSClient, wsLink } from '@trpc/client';
import { io as ioClient } from 'socket.io-client';
import superjson from 'superjson';
import WebSocket from 'ws';
import type { AppRouter } from '../src/trpc/router.js';
import { makeBody, nowUs } from './lib/clock.js';
import { dropDatabase, resetDatabase } from './lib/database.js';
import type { CollectResult, ExpectResult, KeyRanges, OpenResult, SendResult } from './lib/ipc.js';
import { OursApi } from './lib/ours-api.js';
import { cleanRedis, killAll, ROOT, sleep } from './lib/proc.js';
import { startServer, WIRE, type BenchEnv, type SystemName } from './lib/servers.js';
import { LoadWorker } from './lib/workers.js';

const PG_ADMIN = process.env.BENCH_PG_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres';
const DB = 'chat_bench_check';
const env: BenchEnv = {
  databaseUrl: PG_ADMIN.replace(/\/[^/]*$/, `/${DB}`),
  redisUrl: process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379',
  redisPrefix: `bench-check:${process.pid}:`,
  jwtSecret: `bench-check-${randomUUID()}`,
  profileDir: `${ROOT}/bench/results/profiles`,
};
const N = 40;


/** A real client of each system: subscribes to `room`, records message indexes, can send. */
interface RealClient {
  received: number[];
  /** ours: the seq of each message received, in arrival order. */
  seqs: number[];
  send(n: number): Promise<number>;
  close(): void;
}

async function realClient(sys: SystemName, url: string, room: string, token: string): Promise<RealClient> {
  const received: number[] = [];
  const seqs: number[] = [];
  const indexOf = (body: string) => Number(body.split(':')[1]);
  if (sys === 'ours') {
    const ws = createWSClient({ url: `${url.replace(/^http/, 'ws')}/trpc`, connectionParams: { token } });
    const trpc = createTRPCClient<AppRouter>({ links: [wsLink({ client: ws, transformer: superjson })] });
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    const sub = trpc.chat.events.subscribe(
      { roomId: room },
      {
        onData: (env) => {
          const e = env.data;
          if (e.type === 'ready') ready();
          if (e.type === 'message.new' && e.message.body) {
            if (!(e.message.createdAt instanceof Date)) throw new Error('superjson did not revive createdAt');
            received.push(indexOf(e.message.body));
            seqs.push(e.seq);
          }
        },
        onError: (err) => console.error('trpc subscription error', err),
      },
    );
    await isReady;
    return {
      received,
      seqs,
      send: async (n) => (await trpc.chat.send.mutate({ roomId: room, clientId: randomUUID(), body: makeBody(nowUs(), n) })).seq,
      close: () => {
        sub.unsubscribe();
        void ws.close();
      },
    };
  }
  if (sys === 'ws') {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/`);
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    const acks = new Map<number, (n: number) => void>();
    let id = 1;
    ws.on('message', (d) => {
      const m = JSON.parse(d.toString()) as { t: string; id?: number; n?: number; m?: { body: string } };
      if (m.t === 'msg') received.push(indexOf(m.m!.body));
      if (m.t === 'ack') acks.get(m.id!)?.(m.n ?? 0);
    });
    const joined = new Promise<number>((r) => acks.set(id, r));
    ws.send(JSON.stringify({ t: 'join', room, id: id++ }));
    await joined;
    return {
      received,
      seqs,
      send: (n) => {
        const p = new Promise<number>((r) => acks.set(id, r));
        ws.send(JSON.stringify({ t: 'send', room, n, body: makeBody(nowUs(), n), id: id++ }));
        return p;
      },
      close: () => ws.close(),
    };
  }
  const socket = ioClient(url, { auth: { token }, transports: ['websocket'] });
  socket.on('msg', (m: { body: string }) => received.push(indexOf(m.body)));
  await socket.timeout(10_000).emitWithAck('join', room);
  return {
    received,
    seqs,
    send: async (n) => {
      const r = (await socket.timeout(10_000).emitWithAck('send', { room, n, body: makeBody(nowUs(), n) })) as { n: number };
      return r.n;
    },
    close: () => socket.close(),
  };
}

function check(cond: boolean, what: string, failures: string[]) {
  console.log(`  ${cond ? 'ok  ' : 'FAIL'} ${what}`);
  if (!cond) failures.push(what);
}

async function main() {
  const failures: string[] = [];
  await resetDatabase(PG_ADMIN, DB);
  const [subW, sendW] = await Promise.all([LoadWorker.start(0), LoadWorker.start(1)]);
  try {
    for (const sys of ['ours', 'socketio', 'socketioPg', 'ws'] as SystemName[]) {
      console.log(sys);
      const s = await startServer(env, sys);
      try {
        const api = new OursApi(s.url, env.jwtSecret);
        const room = sys === 'ours' ? await api.groupRoom('chk-sender', 'check', ['chk-real', 'chk-lean']) : randomUUID();
        const real = await realClient(sys, s.url, room, api.token('chk-real'));
        const wire = WIRE[sys];
        const o = await subW.call<OpenResult>({
          cmd: 'open',
          args: { system: wire, url: s.url, conns: [{ user: 'chk-lean', token: api.token('chk-lean'), subs: [room], sends: [] }], parallel: 1, timeoutMs: 15_000, reconnect: false },
        });
        await sendW.call<OpenResult>({
          cmd: 'open',
          args: { system: wire, url: s.url, conns: [{ user: 'chk-sender', token: api.token('chk-sender'), subs: [], sends: [room] }], parallel: 1, timeoutMs: 15_000, reconnect: false },
        });
        check(o.ready === 1, 'lean subscriber is subscribed', failures);

        // 1. lean sender -> real client and lean subscriber
        await Promise.all([subW, sendW].map((w) => w.call({ cmd: 'phase', args: { watermark: false } })));
        const sent = await sendW.call<SendResult>({ cmd: 'send', args: { mode: 'rate', rate: N * 4, durationMs: 250, drainMs: 10_000 } });
        await sleep(1000);
        const col = await subW.call<CollectResult>({ cmd: 'collect' });
        const exp = await subW.call<ExpectResult>({ cmd: 'expect', rooms: sent.ackedKeys });
        check(sent.acked === sent.issued && sent.acked > 0, `lean sender: ${sent.acked}/${sent.issued} acknowledged`, failures);
        check(exp.lost === 0 && exp.duplicated === 0 && exp.unexpected === 0, `lean subscriber got them exactly once (lost ${exp.lost}, dup ${exp.duplicated}, unexpected ${exp.unexpected})`, failures);
        check(col.deliveries === sent.acked, `lean subscriber deliveries ${col.deliveries}`, failures);
        const want = Array.from({ length: sent.acked }, (_, i) => i);
        // One sender with many sends in flight: ours orders them by seq (commit order), Socket.IO with
        // pg by insert completion; only the in-memory peers keep the sender's order.
        const ordered = sys === 'socketio' || sys === 'ws';
        const got = ordered ? real.received : [...real.received].sort((a, b) => a - b);
        check(JSON.stringify(got) === JSON.stringify(want), `real client got ${real.received.length}, exactly once${ordered ? ', in order' : ''}`, failures);
        if (sys === 'ours') check(real.seqs.every((q, i) => i === 0 || q > real.seqs[i - 1]!), 'real client: seqs strictly increasing', failures);

        // 2. real client -> lean subscriber
        await subW.call({ cmd: 'phase', args: { watermark: false } });
        const keys: number[] = [];
        for (let n = 0; n < 10; n++) keys.push(await real.send(n));
        await sleep(500);
        const col2 = await subW.call<CollectResult>({ cmd: 'collect' });
        const ranges: KeyRanges = { [room]: keys.map((k) => [k, k] as [number, number]) };
        const exp2 = await subW.call<ExpectResult>({ cmd: 'expect', rooms: ranges });
        check(col2.deliveries === 10 && exp2.lost === 0 && exp2.duplicated === 0, `real sender -> lean subscriber: ${col2.deliveries}/10, lost ${exp2.lost}`, failures);
        real.close();
      } finally {
        await Promise.all([subW, sendW].map((w) => w.call({ cmd: 'close' }).catch(() => {})));
        await s.proc.stop('SIGTERM', 10_000);
      }
    }
  } finally {
    await killAll();
    await dropDatabase(PG_ADMIN, DB).catch(() => {});
    await cleanRedis(env.redisUrl, env.redisPrefix).catch(() => {});
  }
  console.log(failures.length ? `\n${failures.length} check(s) failed` : '\nall checks passed');
  process.exit(failures.length ? 1 : 0);
}

await main();
