/**
 * The webhook receiver of docs/INTEGRATION.md ("Webhooks"), run as the document writes it (only
 * its port is set, and it says when it listens): it verifies this server's real deliveries with its
 * copy of the secret, handles a retry of an event once, and refuses a request signed with another
 * secret. Real PostgreSQL and Redis.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Webhook } from 'standardwebhooks';
import { expect, it } from 'vitest';
import { actor, callerFor, Collector, fileServer, PROJECT_ROOT, uuid } from './fixture.js';

const t = fileServer('docshook', { webhooks: { retryBaseMs: 100, maxAttempts: 4, pollMs: 20, timeoutMs: 2000, allowPrivateUrls: true } });

/** The ```ts block of INTEGRATION.md that verifies webhook requests. */
async function receiverSnippet(): Promise<string> {
  const doc = await readFile(join(PROJECT_ROOT, 'docs/INTEGRATION.md'), 'utf8');
  const blocks = [...doc.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const snippet = blocks.find((b) => b.includes("from 'standardwebhooks'") && b.includes('createServer'));
  if (!snippet) throw new Error('docs/INTEGRATION.md has no webhook receiver snippet');
  expect(snippet).toContain('.listen(8080);');
  return snippet.replace('.listen(8080);', ".listen(Number(process.env.PORT), () => console.log('listening'));");
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

it('the receiver of INTEGRATION.md verifies real deliveries, handles a retried event once and refuses a forged one', async () => {
  const tenant = `docs-${uuid().slice(0, 8)}`;
  const admin = callerFor(t.app, actor('boss', tenant, ['admin']));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/hooks/chat`;
  const hook = await admin.webhook.create({ url, events: ['message.new'] });

  const lines = new Collector<string>();
  const child = spawn(process.execPath, [join(PROJECT_ROOT, 'node_modules/tsx/dist/cli.mjs'), '-e', await receiverSnippet()], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, PORT: String(port), CHAT_WEBHOOK_SECRET: hook.secret },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stderr: string[] = [];
  child.stderr.on('data', (d: Buffer) => stderr.push(d.toString()));
  createInterface({ input: child.stdout }).on('line', lines.push);
  try {
    await lines.first((l) => l === 'listening', `the receiver to listen (stderr: ${stderr.join('')})`);
    const room = await callerFor(t.app, actor('alice', tenant)).room.create({ kind: 'group', name: 'order 4711' });
    const sent = await callerFor(t.app, actor('alice', tenant)).chat.send({ roomId: room.id, clientId: uuid(), body: 'shipped today' });
    // It logs `event.type, event.data` of each verified event (over several lines): the message as the server sent it.
    const logged = (pred: (text: string) => boolean, what: string) => lines.until((ls) => pred(ls.join('\n')), what);
    await logged((text) => text.includes(`id: '${sent.id}'`) && text.includes("body: 'shipped today'"), 'the verified event logged');

    // The same event again (a retry): answered, not handled twice.
    const body = JSON.stringify({ type: 'message.new', timestamp: new Date().toISOString(), tenant, data: { type: 'message.new', seq: 99 } });
    const post = (secret: string, id: string) =>
      fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...signed(secret, id, body) },
        body,
      });
    expect((await post(hook.secret, 'retried-event')).status).toBe(204);
    expect((await post(hook.secret, 'retried-event')).status).toBe(204);
    // Signed with another secret: 401, nothing handled.
    const forged = await post(`whsec_${Buffer.alloc(32, 7).toString('base64')}`, 'forged-event');
    expect(forged.status).toBe(401);
    expect((await fetch(url, { method: 'POST', body })).status).toBe(401);
    // A last real delivery marks the end: everything before it was logged already.
    const last = await callerFor(t.app, actor('alice', tenant)).chat.send({ roomId: room.id, clientId: uuid(), body: 'the end' });
    await logged((text) => text.includes(`id: '${last.id}'`), 'the last event logged');
    expect(lines.items.filter((l) => l.includes('seq: 99')).length).toBe(1);
    expect(lines.items.filter((l) => l.startsWith('message.new ')).length).toBe(3);
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
});

function signed(secret: string, id: string, body: string): Record<string, string> {
  const at = new Date();
  return {
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, at, body),
  };
}
