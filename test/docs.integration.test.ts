/**
 * The code of docs/INTEGRATION.md, run as the document writes it against a real server (PostgreSQL,
 * Redis): the order-room walkthrough of a service account (ensure, a card, reacting to a reply,
 * notifying many; only the server's URL and the client's import path are set), and the webhook receiver (only its
 * port is set, and it says when it listens), which verifies this server's real deliveries with its
 * copy of the secret, handles a retry of an event once, and refuses a request signed with another
 * secret.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Webhook } from 'standardwebhooks';
import { expect, it } from 'vitest';
import { actor, callerFor, Collector, fileServer, PROJECT_ROOT, TEST_SECRET, uuid } from './fixture.js';

const t = fileServer('docshook', { webhooks: { retryBaseMs: 100, maxAttempts: 4, pollMs: 20, timeoutMs: 2000, allowPrivateUrls: true } });

/** The ```ts blocks of INTEGRATION.md, in order. */
async function docBlocks(): Promise<string[]> {
  const doc = await readFile(join(PROJECT_ROOT, 'docs/INTEGRATION.md'), 'utf8');
  return [...doc.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/** The block of INTEGRATION.md that verifies webhook requests. */
async function receiverSnippet(): Promise<string> {
  const snippet = (await docBlocks()).find((b) => b.includes("from 'standardwebhooks'") && b.includes('createServer'));
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

/** Runs TypeScript with tsx in the project (its imports resolve there); its stdout by line. */
function runTs(code: string, env: Record<string, string>) {
  const lines = new Collector<string>();
  const child = spawn(process.execPath, [join(PROJECT_ROOT, 'node_modules/tsx/dist/cli.mjs'), '--input-type=module', '-e', code], {
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stderr: string[] = [];
  child.stderr.on('data', (d: Buffer) => stderr.push(d.toString()));
  createInterface({ input: child.stdout }).on('line', lines.push);
  return {
    lines,
    stderr,
    async [Symbol.asyncDispose]() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

it('the order-room walkthrough of INTEGRATION.md: ensure, a card, a reply to it opens a task in the ERP, notifications to many', async () => {
  const blocks = await docBlocks();
  const steps = ['new SignJWT(', 'room.ensure.mutate(', "kind: 'card'", 'chat.subscribeRoom(', 'inbox.notify.mutate('].map((marker) => {
    const block = blocks.find((b) => b.includes(marker));
    if (!block) throw new Error(`docs/INTEGRATION.md has no block with ${marker}`);
    return block;
  });
  const script = [
    // What the walkthrough leaves to the ERP: its own task function.
    "const openErpTask = (task: unknown) => console.log('TASK ' + JSON.stringify(task));",
    ...steps,
    "console.log('CARD ' + card.id + ' ' + room.id);",
  ]
    .join('\n')
    .replace("from '@trpc-chat/client'", "from './client/index.ts'")
    .replace("'https://chat.example.com'", `'${t.url}'`);
  await using erp = runTs(script, { JWT_SECRET: TEST_SECRET });
  const started = await erp.lines.first((l) => l.startsWith('CARD '), 'the walkthrough to post its card', 15_000).catch((err: Error) => {
    throw new Error(`${err.message}; its output: ${[...erp.lines.items, ...erp.stderr].join('\n')}`);
  });
  const [, cardId, roomId] = started.split(' ') as [string, string, string];

  const anna = callerFor(t.app, actor('u-sales-anna', 'acme'));
  const room = await anna.room.get({ roomId: roomId });
  expect(room).toMatchObject({ key: 'order:4711', name: 'Order 4711 (ACME GmbH)', metadata: { orderId: 4711, customer: 'ACME GmbH' } });
  const [posted] = (await anna.chat.history({ roomId })).messages.filter((m) => m.id === cardId);
  expect(posted).toMatchObject({ kind: 'card', senderId: 'erp', card: { title: 'Order 4711 shipped' }, metadata: { orderId: 4711, event: 'shipped' } });
  // Ben was added by the ensure too; his chatter is no task, Anna's reply to the card is.
  await callerFor(t.app, actor('u-logistics-ben', 'acme')).chat.send({ roomId, clientId: uuid(), body: 'thanks' });
  const reply = await anna.chat.send({ roomId, clientId: uuid(), body: 'When does it arrive?', replyToId: cardId });
  const task = await erp.lines.first((l) => l.startsWith('TASK '), 'the task opened by the ERP');
  expect(JSON.parse(task.slice('TASK '.length))).toEqual({ orderId: 4711, question: 'When does it arrive?', askedBy: 'u-sales-anna', chatMessageId: reply.id });
  expect(erp.lines.items.filter((l) => l.startsWith('TASK '))).toHaveLength(1);
  // The notifications: the room's members (Anna, Ben, the ERP) and the two users named.
  const notified = await t.env.sql<{ user_id: string; title: string }>(
    `select user_id, data->>'title' as title from inbox_event where tenant = 'acme' and type = 'notification' order by title, user_id`,
  );
  expect(notified.map((r) => [r.title, r.user_id])).toEqual([
    ['Order 4711 shipped', 'erp'],
    ['Order 4711 shipped', 'u-logistics-ben'],
    ['Order 4711 shipped', 'u-sales-anna'],
    ['Quote 88 approved', 'u-controlling-eva'],
    ['Quote 88 approved', 'u-sales-anna'],
  ]);
});

it('the receiver of INTEGRATION.md verifies real deliveries, handles a retried event once and refuses a forged one', async () => {
  const tenant = `docs-${uuid().slice(0, 8)}`;
  const admin = callerFor(t.app, actor('boss', tenant, ['admin']));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}/hooks/chat`;
  const hook = await admin.webhook.create({ url, events: ['message.new'] });

  await using receiver = runTs(await receiverSnippet(), { PORT: String(port), CHAT_WEBHOOK_SECRET: hook.secret });
  const { lines } = receiver;
  await lines.first((l) => l === 'listening', 'the receiver to listen');
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
});

function signed(secret: string, id: string, body: string): Record<string, string> {
  const at = new Date();
  return {
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, at, body),
  };
}
