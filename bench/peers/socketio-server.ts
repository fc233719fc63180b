/**
 * Peer (b): a Socket.IO 4 chat server as a user would write one. A JWT (the same HS256 tokens as
 * ours) is checked once per connection in a middleware; `join` puts the socket in a room; `send`
 * broadcasts to the room (`io.to(room)`, the sender included, like a subscriber of ours) and
 * acknowledges. Socket.IO serializes a broadcast once and builds its WebSocket frame once.
 *
 * With DATABASE_URL, each message is first inserted into PostgreSQL with `pg` (one INSERT, the way a
 * user adds persistence), then broadcast and acknowledged. With REDIS_URL, `@socket.io/redis-adapter`
 * carries broadcasts between nodes. There is no resume: a client that was away misses what was sent.
 *
 * Events: `join(roomId, ack)`, `send({ room, n, body }, ack)`, server → client `msg(message)`.
 */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { createAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { jwtVerify } from 'jose';
import pg from 'pg';
import { Server } from 'socket.io';

const port = Number(process.env.PORT ?? 0);
const secret = process.env.JWT_SECRET ?? '';
const databaseUrl = process.env.DATABASE_URL;
const redisUrl = process.env.REDIS_URL;

const pool = databaseUrl ? new pg.Pool({ connectionString: databaseUrl, max: 10 }) : null;
if (pool) {
  await pool.query(`create table if not exists sio_message (
    id uuid primary key,
    room_id text not null,
    sender_id text not null,
    body text not null,
    created_at timestamptz not null
  )`);
  await pool.query('create index if not exists sio_message_room on sio_message (room_id, created_at)');
}

const http = createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
    return;
  }
  // engine.io answers /socket.io/ itself and hands us everything else.
  res.writeHead(404);
  res.end();
});
const io = new Server(http, { serveClient: false });

let pub: Redis | null = null;
let sub: Redis | null = null;
if (redisUrl) {
  pub = new Redis(redisUrl);
  sub = pub.duplicate();
  io.adapter(createAdapter(pub, sub, { key: process.env.REDIS_PREFIX ?? 'bench-sio' }));
}

const key = new TextEncoder().encode(secret);
io.use((socket, next) => {
  void jwtVerify(String(socket.handshake.auth?.token ?? ''), key, { algorithms: ['HS256'] }).then(
    ({ payload }) => {
      socket.data.userId = payload.sub;
      next();
    },
    () => next(new Error('unauthorized')),
  );
});

type Ack = (reply: unknown) => void;

io.on('connection', (socket) => {
  socket.on('join', (room: unknown, ack?: Ack) => {
    if (typeof room !== 'string') return ack?.({ error: 'room must be a string' });
    void socket.join(room);
    ack?.({ ok: true });
  });
  socket.on('send', async (m: { room?: unknown; n?: unknown; body?: unknown }, ack?: Ack) => {
    if (typeof m?.room !== 'string' || typeof m.body !== 'string') return ack?.({ error: 'bad message' });
    const message = {
      id: randomUUID(),
      roomId: m.room,
      n: Number(m.n),
      senderId: socket.data.userId as string,
      body: m.body,
      createdAt: new Date(),
    };
    if (pool) {
      try {
        await pool.query('insert into sio_message (id, room_id, sender_id, body, created_at) values ($1, $2, $3, $4, $5)', [
          message.id,
          message.roomId,
          message.senderId,
          message.body,
          message.createdAt,
        ]);
      } catch (err) {
        return ack?.({ error: String(err) });
      }
    }
    io.to(m.room).emit('msg', message);
    ack?.({ id: message.id, n: message.n });
  });
});

http.listen(port, '127.0.0.1', () => {
  const addr = http.address();
  const p = typeof addr === 'object' && addr ? addr.port : port;
  console.log(JSON.stringify({ url: `http://127.0.0.1:${p}`, system: 'socketio', redis: !!pub, persist: !!pool }));
});

const stop = () => {
  void io.close();
  pub?.disconnect();
  sub?.disconnect();
  void pool?.end();
  setTimeout(() => process.exit(0), 200).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
