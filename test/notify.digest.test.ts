/**
 * E-mail digests over real SMTP (a local smtp-server): unread mentions and direct messages of a user
 * who stayed away for EMAIL_DIGEST_DELAY_MS, in one mail (plain text and HTML, links from
 * PUBLIC_APP_URL); nothing for what was read meanwhile, nothing of an encrypted room's bodies.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, callerFor, clientFor, elapse, type MailServer, mailServer, makeConfig, type TestEnv, type TestServer, testEnv, uuid, waitFor } from './fixture.js';

const DELAY_MS = 800;
let smtp: MailServer;
let env: TestEnv;
let digestServer: TestServer;
/** The server starts once the SMTP server's port is known. */
beforeAll(async () => {
  smtp = await mailServer();
  env = await testEnv('digest');
  digestServer = await env.startServer({
    messageKeys: `k1:${randomBytes(32).toString('base64')}`,
    notify: {
      ...makeConfig().notify,
      pollMs: 50,
      retryBaseMs: 50,
      digestDelayMs: DELAY_MS,
      publicAppUrl: 'https://chat.example.com',
      smtp: { url: smtp.url, from: 'Chat <chat@example.com>' },
    },
  });
});
afterAll(async () => {
  await env?.[Symbol.asyncDispose]();
  await smtp?.close();
});

function tenant() {
  const name = `mail-${uuid().slice(0, 8)}`;
  const as = (id: string) => callerFor(digestServer.app, actor(id, name));
  return {
    name,
    as,
    /** Makes the user known with an e-mail address (as a token with an `email` claim does). */
    withEmail: (id: string) => digestServer.app.services.users.touch({ ...actor(id, name), email: `${id}@${name}.example.com` }),
    digestRows: () => env.sql<{ user_id: string }>('select user_id from notify_digest where tenant = $1', [name]),
  };
}

const mailsTo = (addr: string) => smtp.mails.items.filter((m) => m.to.includes(addr));

describe('e-mail digests', () => {
  it('one digest of unread mentions and direct messages after the delay away: plain text and HTML with links', async () => {
    const tn = tenant();
    await tn.withEmail('bob');
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Release <train>', memberIds: ['bob'] });
    const sentAt = Date.now();
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'are you around?' });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: '@bob please sign off', mentions: ['bob'] });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'plain chatter is not in a digest' });
    const addr = `bob@${tn.name}.example.com`;
    await smtp.mails.until(() => mailsTo(addr).length >= 1, 'the digest', 10_000);
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(DELAY_MS);
    const [mail] = mailsTo(addr);
    expect(mail!.from).toBe('chat@example.com');
    expect(mail!.subject).toBe('2 unread messages for you');
    expect(mail!.text).toContain('Direct message from alice');
    expect(mail!.text).toContain('alice: are you around?');
    expect(mail!.text).toContain('alice: @bob please sign off');
    expect(mail!.text).toContain(`https://chat.example.com/#/room/${room.id}`);
    expect(mail!.text).not.toContain('plain chatter');
    expect(mail!.html).toContain(`<a href="https://chat.example.com/#/room/${room.id}">Release &lt;train&gt;</a>`);
    expect(mail!.html).toContain('<b>alice</b>: are you around?');
    // One digest: nothing more for the same messages.
    await elapse(DELAY_MS * 2);
    expect(mailsTo(addr)).toHaveLength(1);
  });

  it('nothing for what was read meanwhile; nothing with e-mail off; nothing without an address; nothing from a room set to none', async () => {
    const tn = tenant();
    await tn.withEmail('bob');
    await tn.withEmail('carol');
    await tn.withEmail('frank');
    await tn.as('carol').notify.setPreferences({ email: 'off' });
    // Bob and frank stay connected until their digest rows are checked: a connected user's row waits
    // (it is put off by EMAIL_DIGEST_DELAY_MS each time it comes due), so the check does not depend
    // on the steps below taking less than the delay.
    await using bobWs = clientFor(digestServer.url, 'bob', { tenant: tn.name, ws: true });
    await using frankWs = clientFor(digestServer.url, 'frank', { tenant: tn.name, ws: true });
    await Promise.all([bobWs.trpc.auth.me.query(), frankWs.trpc.auth.me.query()]);
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    const m = await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'read me quickly' });
    await tn.as('bob').receipt.markRead({ roomId: dm.id, seq: m.seq });
    const dmCarol = await tn.as('alice').room.openDirect({ userId: 'carol' });
    await tn.as('alice').chat.send({ roomId: dmCarol.id, clientId: uuid(), body: 'carol turned mail off' });
    // A room set to none is left out of the digest (here: its only item, so no mail at all).
    const quiet = await tn.as('alice').room.create({ kind: 'group', name: 'Quiet', memberIds: ['frank'] });
    await tn.as('frank').notify.setRoomPreference({ roomId: quiet.id, level: 'none' });
    await tn.as('alice').chat.send({ roomId: quiet.id, clientId: uuid(), body: '@frank shh', mentions: ['frank'] });
    const dmDave = await tn.as('alice').room.openDirect({ userId: 'dave' });
    await tn.as('alice').chat.send({ roomId: dmDave.id, clientId: uuid(), body: 'dave has no address' });
    expect((await tn.digestRows()).map((r) => r.user_id).sort()).toEqual(['bob', 'frank']);
    // Both go away: their rows are handled after the delay, and find nothing to send.
    await Promise.all([bobWs.close(), frankWs.close()]);
    await waitFor(() => tn.digestRows(), 'the digest rows handled', { until: (r) => r.length === 0, timeoutMs: 10_000 });
    expect(smtp.mails.items.filter((x) => x.to.some((a) => a.endsWith(`@${tn.name}.example.com`)))).toEqual([]);
  });

  it("a token's email claim is kept as the user's address (the last one known; a token without it keeps it; a bad one is ignored)", async () => {
    const tn = tenant();
    const emailOf = async () => (await env.sql<{ email: string | null }>('select email from chat_user where tenant = $1 and id = $2', [tn.name, 'erin']))[0]?.email;
    {
      await using erin = clientFor(digestServer.url, 'erin', { tenant: tn.name, email: 'erin@example.com' });
      await erin.trpc.auth.me.query();
    }
    expect(await emailOf()).toBe('erin@example.com');
    {
      await using erin = clientFor(digestServer.url, 'erin', { tenant: tn.name, name: 'Erin' });
      await erin.trpc.auth.me.query();
    }
    expect(await emailOf()).toBe('erin@example.com');
    {
      await using erin = clientFor(digestServer.url, 'erin', { tenant: tn.name, email: 'not an address' });
      await erin.trpc.auth.me.query();
    }
    expect(await emailOf()).toBe('erin@example.com');
  });

  it('encrypted rooms: "New message in <room>", never the body', async () => {
    const tn = tenant();
    await tn.withEmail('bob');
    const room = await tn.as('alice').room.create({ kind: 'group', name: 'Vault', memberIds: ['bob'], encrypted: true });
    await tn.as('alice').chat.send({ roomId: room.id, clientId: uuid(), body: 'the password is swordfish', mentions: ['bob'] });
    const addr = `bob@${tn.name}.example.com`;
    await smtp.mails.until(() => mailsTo(addr).length >= 1, 'the digest', 10_000);
    const [mail] = mailsTo(addr);
    expect(mail!.text).toContain('alice: New message in Vault');
    expect(mail!.raw).not.toContain('swordfish');
  });

  it('a user with an open connection gets no digest while connected; once away, one after EMAIL_DIGEST_DELAY_MS', async () => {
    const tn = tenant();
    const addr = `bob@${tn.name}.example.com`;
    await tn.withEmail('bob');
    await using bobWs = clientFor(digestServer.url, 'bob', { tenant: tn.name, ws: true });
    await bobWs.trpc.auth.me.query();
    const dm = await tn.as('alice').room.openDirect({ userId: 'bob' });
    await tn.as('alice').chat.send({ roomId: dm.id, clientId: uuid(), body: 'you are online' });
    await elapse(DELAY_MS * 2);
    expect(mailsTo(addr)).toEqual([]);
    expect((await tn.digestRows()).map((r) => r.user_id)).toEqual(['bob']);

    // Bob leaves: the digest waits until he has been away for the whole delay, then comes once.
    const leftAt = Date.now();
    await bobWs.close();
    await smtp.mails.until(() => mailsTo(addr).length >= 1, 'the digest once away', 10_000);
    expect(Date.now() - leftAt).toBeGreaterThanOrEqual(DELAY_MS);
    const [mail] = mailsTo(addr);
    expect(mail!.subject).toBe('1 unread message for you');
    expect(mail!.text).toContain('alice: you are online');
  });

  it('a muted room is left out of the digest', async () => {
    const tn = tenant();
    const addr = `bob@${tn.name}.example.com`;
    await tn.withEmail('bob');
    const muted = await tn.as('alice').room.create({ kind: 'group', name: 'Muted', memberIds: ['bob'] });
    const open = await tn.as('alice').room.create({ kind: 'group', name: 'Open', memberIds: ['bob'] });
    await tn.as('bob').notify.setRoomPreference({ roomId: muted.id, level: 'mentions', muteUntil: new Date(Date.now() + 3600_000) });
    await tn.as('alice').chat.send({ roomId: muted.id, clientId: uuid(), body: '@bob from the muted room', mentions: ['bob'] });
    await tn.as('alice').chat.send({ roomId: open.id, clientId: uuid(), body: '@bob from the open room', mentions: ['bob'] });
    await smtp.mails.until(() => mailsTo(addr).length >= 1, 'the digest', 10_000);
    const [mail] = mailsTo(addr);
    expect(mail!.subject).toBe('1 unread message for you');
    expect(mail!.text).toContain('alice: @bob from the open room');
    expect(mail!.raw).not.toContain('from the muted room');
  });
});
