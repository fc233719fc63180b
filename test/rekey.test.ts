/**
 * The re-encryption job after a key rotation (src/services/rekey.ts, `npm run keys:reencrypt`):
 * every sealed body, earlier version and webhook secret ends on the new key, bound to its room and
 * message (a secret: to its tenant and endpoint), so the old key can leave MESSAGE_KEYS; a row it cannot open is counted and left alone;
 * a second run changes nothing.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, callerFor, dispose, PROJECT_ROOT, testEnv, type TestEnv, type TestServer, uuid } from './fixture.js';
import { createLogger, Keyring, makeConfig, Rekeyer, SecretBox } from './fixture/src.js';

const silentLogger = () => createLogger('silent');
const hooks = { webhooks: { ...makeConfig().webhooks, allowPrivateUrls: true } };

const run = promisify(execFile);
const k1 = randomBytes(32).toString('base64');
const k2 = randomBytes(32).toString('base64');

let env: TestEnv;
let srv: TestServer | null = null;
const as = (id: string) => callerFor(srv!.app, actor(id));
const asService = () => callerFor(srv!.app, actor('integration', 'default', ['service']));
const rows = (table: 'message' | 'message_edit') => env.sql<{ id: string; body: string | null; key_id: string | null }>(`select id, body, key_id from ${table} where key_id is not null order by id`);

beforeAll(async () => {
  env = await testEnv('rekey');
  srv = await env.startServer({ messageKeys: `k1:${k1}`, ...hooks });
});
afterAll(async () => {
  await srv?.close();
  await dispose(env);
});

describe('re-encryption after a key rotation', () => {
  it('moves every body, earlier version and webhook secret to the new key; the old key can then go', async () => {
    const room = await as('alice').room.create({ kind: 'group', name: 'vault', memberIds: ['bob'], encrypted: true });
    const bodies: string[] = [];
    for (let i = 0; i < 7; i++) {
      const body = `secret ${i} ${uuid()}`;
      bodies.push(body);
      await as('alice').chat.send({ roomId: room.id, clientId: uuid(), body });
    }
    const history = (await as('bob').chat.history({ roomId: room.id })).messages;
    const edited = history[2]!;
    await as('alice').chat.edit({ messageId: edited.id, body: 'edited once' });
    await as('alice').chat.edit({ messageId: edited.id, body: 'edited twice' });
    // One body from before the binding (sealed without associated data), as older versions stored it.
    const legacyId = history[4]!.id;
    const legacy = new Keyring(`k1:${k1}`).encrypt('sealed before the binding');
    await env.sql('update message set body = $1, key_id = $2 where id = $3', [legacy.text, legacy.keyId, legacyId]);
    const hook = await asService().webhook.create({ url: 'http://127.0.0.1:9/in', events: ['message.new'] });
    // And a webhook secret sealed before secrets were bound to their endpoint (no associated data).
    const oldHook = await asService().webhook.create({ url: 'http://127.0.0.1:9/old', events: ['message.new'] });
    const oldSealed = new Keyring(`k1:${k1}`).encrypt(oldHook.secret);
    await env.sql('update webhook_endpoint set secret = $1 where id = $2', [`sealed:${oldSealed.keyId}:${oldSealed.text}`, oldHook.id]);
    const plainRoom = await as('alice').room.create({ kind: 'group', name: 'open' });
    await as('alice').chat.send({ roomId: plainRoom.id, clientId: uuid(), body: 'plain text stays plain' });

    expect(new Set((await rows('message')).map((r) => r.key_id))).toEqual(new Set(['k1']));
    const before = await rows('message_edit');
    expect(before).toHaveLength(2);

    const editTimesBefore = (await as('bob').chat.history({ roomId: room.id })).messages;
    // Rotation: k2 first, k1 still there to read. The job runs beside the serving node, in batches of 3.
    const keyring = new Keyring(`k2:${k2},k1:${k1}`);
    const secrets = new SecretBox(keyring);
    const rekey = new Rekeyer(srv!.app.services.store, keyring, secrets, silentLogger(), 3);
    expect((await rekey.usage()).bodies).toEqual({ k1: 9 });
    const batches: number[] = [];
    const report = await rekey.run((r) => batches.push(r.messages.seen + r.edits.seen + r.webhookSecrets.seen));
    expect(report).toEqual({
      activeKeyId: 'k2',
      messages: { seen: 7, resealed: 7, failed: 0 },
      edits: { seen: 2, resealed: 2, failed: 0 },
      webhookSecrets: { seen: 2, resealed: 2, failed: 0 },
    });
    expect(batches.length).toBeGreaterThanOrEqual(5);
    expect(await rekey.usage()).toEqual({ activeKeyId: 'k2', bodies: { k2: 9 }, webhookSecrets: { k2: 2 } });
    for (const r of [...(await rows('message')), ...(await rows('message_edit'))]) {
      expect(r.key_id).toBe('k2');
      expect(r.body).toMatch(/^v2\./);
    }
    // The edit times did not move: the text did not change.
    const editTimes = (ms: { id: string; editedAt: Date | null }[]) => ms.map((m) => [m.id, m.editedAt?.getTime() ?? null]);
    expect(editTimes((await as('bob').chat.history({ roomId: room.id })).messages)).toEqual(editTimes(editTimesBefore));

    // A second run finds nothing to do.
    const again = await new Rekeyer(srv!.app.services.store, keyring, secrets, silentLogger(), 3).run();
    expect(again).toMatchObject({ messages: { seen: 7, resealed: 0, failed: 0 }, edits: { seen: 2, resealed: 0 }, webhookSecrets: { resealed: 0 } });

    // k1 removed: a node with only k2 reads every body, every earlier version, and signs with the same secret.
    await srv!.close();
    srv = await env.startServer({ redisPrefix: env.prefix('rekey2'), messageKeys: `k2:${k2}`, ...hooks });
    const read = (await as('bob').chat.history({ roomId: room.id })).messages;
    expect(read.map((m) => m.body)).toEqual(bodies.map((b, i) => (i === 2 ? 'edited twice' : i === 4 ? 'sealed before the binding' : b)));
    expect((await as('bob').chat.edits({ messageId: edited.id })).map((e) => e.body)).toEqual([bodies[2], 'edited once']);
    const onlyK2 = new SecretBox(new Keyring(`k2:${k2}`));
    for (const h of [hook, oldHook]) {
      const [stored] = await env.sql<{ secret: string }>('select secret from webhook_endpoint where id = $1', [h.id]);
      // Sealed with k2 and bound to its endpoint: it opens for that endpoint only.
      expect(stored!.secret).toMatch(/^sealed:k2:v2\./);
      expect(onlyK2.open(stored!.secret, { tenant: 'default', id: h.id })).toBe(h.secret);
      expect(() => onlyK2.open(stored!.secret, { tenant: 'default', id: h === hook ? oldHook.id : hook.id })).toThrow();
    }
  });

  it('a body it cannot open (tampered, or its key is gone) is counted and left as it is', async () => {
    const room = await as('carol').room.create({ kind: 'group', name: 'tampered', encrypted: true });
    const a = await as('carol').chat.send({ roomId: room.id, clientId: uuid(), body: 'first' });
    const b = await as('carol').chat.send({ roomId: room.id, clientId: uuid(), body: 'second' });
    // a's ciphertext copied onto b: bound to a, it does not open as b.
    await env.sql('update message set body = (select body from message where id = $1) where id = $2', [a.id, b.id]);
    const [tampered] = await env.sql<{ body: string }>('select body from message where id = $1', [b.id]);
    const keyring = new Keyring(`k3:${randomBytes(32).toString('base64')},k2:${k2}`);
    const report = await new Rekeyer(srv!.app.services.store, keyring, new SecretBox(keyring), silentLogger()).run();
    expect(report.messages.failed).toBe(1);
    expect(report.messages.resealed).toBe(report.messages.seen - 1);
    expect((await env.sql<{ body: string; key_id: string }>('select body, key_id from message where id = $1', [b.id]))[0]).toEqual({
      body: tampered!.body,
      key_id: 'k2',
    });
    expect((await env.sql<{ key_id: string }>('select key_id from message where id = $1', [a.id]))[0]!.key_id).toBe('k3');
  });

  it('the command prints which keys still hold rows (--status) without changing any', async () => {
    const before = await rows('message');
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'src/rekey-main.ts', '--status'], {
      cwd: PROJECT_ROOT,
      env: { ...env.nodeEnv(), MESSAGE_KEYS: `k3:${randomBytes(32).toString('base64')}`, LOG_LEVEL: 'warn' },
    });
    const usage = JSON.parse(stdout.trim().split('\n').at(-1)!) as { usage: { activeKeyId: string; bodies: Record<string, number> } };
    expect(usage.usage.activeKeyId).toBe('k3');
    // Bodies and earlier versions: the tampered one stayed on k2, the rest moved to k3.
    const edits = (await rows('message_edit')).length;
    expect(usage.usage.bodies).toEqual({ k2: 1, k3: before.length - 1 + edits });
    expect(await rows('message')).toEqual(before);
  });
});
