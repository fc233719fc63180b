import { existsSync, mkdtempDisposableSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { clientFor, Collector, ofType, startServer, testConfig, uuid, type RecordedEvent } from './fixture.js';

/** The default mode: no DATABASE_URL, no REDIS_URL -> embedded PostgreSQL (PGlite) and in-process bus. */
describe('embedded mode', () => {
  const dataDir = mkdtempDisposableSync(join(tmpdir(), 'chat-embedded-'));
  afterAll(() => dataDir[Symbol.dispose]());

  it('serves a full round trip on an empty data dir and keeps the message across a restart', async () => {
    const config = testConfig({ databaseUrl: undefined, redisUrl: undefined, dataDir: dataDir.path });
    let roomId: string;
    let embeddedSocketDir = '';
    let sentId: string;
    {
      await using srv = await startServer(config);
      expect(srv.app.db.embedded).toBe(true);
      // PGlite has no passwords: it listens on a unix socket in a directory only this user may enter,
      // never on a TCP port another local user could reach.
      const url = new URL(srv.app.db.url);
      const socketDir = url.searchParams.get('host')!;
      expect(socketDir).toMatch(/^\//);
      expect(statSync(socketDir).mode & 0o777).toBe(0o700);
      expect(statSync(socketDir).uid).toBe(process.getuid!());
      expect(existsSync(join(socketDir, `.s.PGSQL.${url.port}`))).toBe(true);
      embeddedSocketDir = socketDir;
      expect(srv.app.bus.kind).toBe('memory');
      await using alice = clientFor(srv.url, 'alice');
      await using bob = clientFor(srv.url, 'bob');
      const room = await alice.trpc.room.create.mutate({ kind: 'group', name: 'embedded', memberIds: ['bob'] });
      roomId = room.id;
      const got = new Collector<RecordedEvent>();
      const sub = bob.trpc.chat.events.subscribe({ roomId }, { onData: got.push, onError: got.fail });
      await got.until((xs) => xs.some((x) => x.data.type === 'ready'), 'ready');
      const sent = await alice.trpc.chat.send.mutate({ roomId, clientId: uuid(), body: 'persist me' });
      sentId = sent.id;
      await got.until((xs) => xs.some((x) => x.data.type === 'message.new'), 'message');
      expect(got.items.find(ofType('message.new'))!.data.message.id).toBe(sent.id);
      sub.unsubscribe();
      const ready = await fetch(`${srv.url}/readyz`);
      expect(ready.status).toBe(200);
    }

    // Stopped: the socket and its directory are gone.
    expect(existsSync(embeddedSocketDir)).toBe(false);
    await using srv = await startServer(config);
    await using again = clientFor(srv.url, 'bob');
    const history = await again.trpc.chat.history.query({ roomId });
    expect(history.messages.map((m) => [m.id, m.body])).toEqual([[sentId, 'persist me']]);
    // The sequence continues where it stopped: no reuse of seq numbers after a restart.
    const next = await again.trpc.chat.send.mutate({ roomId, clientId: uuid(), body: 'after restart' });
    expect(next.seq).toBe(history.messages[0]!.seq + 1);
  });
});
