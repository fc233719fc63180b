/**
 * Peer (c): a raw `ws` broadcast server, the ceiling of Node on this machine. No auth, no
 * persistence, no ordering beyond TCP's: join a room, send to a room, every socket of the room gets
 * the message (the sender too, like `io.to(room)` and like a subscriber of ours).
 *
 * Each message is serialized once and framed once: the WebSocket frame is built with
 * `WebSocket.Sender.frame` and written to every socket of the room as is (what Socket.IO does for
 * its broadcasts, and what ws suggests for broadcasting; websockets/ws#617). With REDIS_URL, every message is also published on one Redis channel and the other nodes
 * deliver it to their own sockets (the multi-node case).
 *
 * Protocol (JSON text frames):
 *   client: {"t":"join","room":R,"id":K}             server: {"t":"ack","id":K}
 *   client: {"t":"send","room":R,"n":N,"body":B,"id":K}  server: {"t":"ack","id":K,"n":N}
 *   server: {"t":"msg","m":{"id":..,"roomId":R,"n":N,"senderId":..,"body":B,"createdAt":..}}
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { Redis } from 'ioredis';
import { createRequire } from 'node:module';
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.env.PORT ?? 0);
const redisUrl = process.env.REDIS_URL;
const channel = `${process.env.REDIS_PREFIX ?? 'bench-ws:'}bcast`;
const nodeId = randomBytes(6).toString('hex');

const rooms = new Map<string, Set<WebSocket>>();
const joined = new WeakMap<WebSocket, string[]>();

/** ws's internal sender (not in its typings): `sendFrame` writes an already framed message. */
type Framed = WebSocket & { _sender?: { sendFrame?: (frame: Buffer[], cb?: () => void) => void } };
const { Sender } = createRequire(import.meta.url)('ws') as { Sender: { frame(data: Buffer, o: Record<string, unknown>): Buffer[] } };

function deliver(room: string, payload: Buffer): void {
  const set = rooms.get(room);
  if (!set) return;
  const frame = Sender.frame(payload, { readOnly: false, mask: false, rsv1: false, opcode: 1, fin: true });
  for (const ws of set as Set<Framed>) {
    if (ws.readyState !== 1) continue;
    if (ws._sender?.sendFrame) ws._sender.sendFrame(frame);
    else ws.send(payload, { binary: false });
  }
}

const pub = redisUrl ? new Redis(redisUrl, { lazyConnect: false }) : null;
const sub = pub ? pub.duplicate() : null;
if (sub) {
  await sub.subscribe(channel);
  sub.on('messageBuffer', (_ch: Buffer, payload: Buffer) => {
    // payload: nodeId \n room \n frame
    const a = payload.indexOf(10);
    const b = payload.indexOf(10, a + 1);
    if (payload.toString('latin1', 0, a) === nodeId) return;
    deliver(payload.toString('utf8', a + 1, b), payload.subarray(b + 1));
  });
}

const http = createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404);
  res.end();
});
const wss = new WebSocketServer({ server: http, perMessageDeflate: false, maxPayload: 64 * 1024 });

wss.on('connection', (ws) => {
  joined.set(ws, []);
  ws.on('message', (data) => {
    let m: { t?: string; room?: string; id?: number; n?: number; body?: string };
    try {
      m = JSON.parse(data.toString());
    } catch {
      return;
    }
    if (m.t === 'join' && typeof m.room === 'string') {
      let set = rooms.get(m.room);
      if (!set) {
        set = new Set();
        rooms.set(m.room, set);
      }
      set.add(ws);
      joined.get(ws)!.push(m.room);
      ws.send(`{"t":"ack","id":${Number(m.id)}}`);
    } else if (m.t === 'send' && typeof m.room === 'string') {
      const msg = { id: randomUUID(), roomId: m.room, n: m.n, senderId: 'anonymous', body: m.body, createdAt: new Date().toISOString() };
      const frame = Buffer.from(JSON.stringify({ t: 'msg', m: msg }));
      deliver(m.room, frame);
      if (pub) void pub.publish(channel, Buffer.concat([Buffer.from(`${nodeId}\n${m.room}\n`), frame])).catch(() => {});
      ws.send(`{"t":"ack","id":${Number(m.id)},"n":${Number(m.n)}}`);
    }
  });
  ws.on('close', () => {
    for (const r of joined.get(ws) ?? []) {
      const set = rooms.get(r);
      set?.delete(ws);
      if (set?.size === 0) rooms.delete(r);
    }
  });
  ws.on('error', () => {});
});

http.listen(port, '127.0.0.1', () => {
  const addr = http.address();
  const p = typeof addr === 'object' && addr ? addr.port : port;
  console.log(JSON.stringify({ url: `http://127.0.0.1:${p}`, system: 'ws', redis: !!pub }));
});

const stop = () => {
  for (const ws of wss.clients) ws.terminate();
  wss.close();
  http.close();
  pub?.disconnect();
  sub?.disconnect();
  setTimeout(() => process.exit(0), 100).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
