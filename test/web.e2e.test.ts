import { tmpdir } from 'node:os';
/**
 * The browser chat page end to end: Debian's Chromium driven by playwright-core, two browser
 * contexts (two users) against a real server (PostgreSQL + Redis), and the browser's own CORS
 * enforcement against pages of other origins. Every wait is on the page
 * (a selector or a condition), never a fixed sleep.
 */
import { createECDH, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Locator, Page } from 'playwright-core';
import { buildWebPage, TestBrowser } from './fixture/browser.js';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFor, dispose, generateVapidKeys, testEnv, tokenFor, uuid, waitFor, within, type TestEnv, type TestServer } from './fixture.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** docs/screenshot-chat.png is refreshed with UPDATE_SCREENSHOT=1; otherwise the shot goes to a temp file. */
const SCREENSHOT = process.env.UPDATE_SCREENSHOT
  ? join(ROOT, 'docs', 'screenshot-chat.png')
  : join(tmpdir(), `chat-screenshot-${process.pid}.png`);
/** Page-side waits: generous for a loaded CI machine, still well inside the test timeout. */
const WAIT = 10_000;

let env: TestEnv;
let srv: TestServer;
let browser: TestBrowser;

beforeAll(async () => {
  buildWebPage();
  env = await testEnv('web');
  srv = await env.startServer();
  browser = await TestBrowser.launch();
});

afterAll(() => dispose(env, browser));

/** A fresh browser context (its own storage: its own user) with the page's errors surfaced. */
async function newPage(errors: string[]): Promise<Page> {
  const opts = { timeoutMs: WAIT, viewport: { width: 1180, height: 760 }, deviceScaleFactor: 1, consoleErrors: true };
  return (await browser.newPage(errors, opts)).page;
}

async function login(page: Page, username: string, name: string) {
  await page.goto(srv.url);
  await page.locator('#login-username').fill(username);
  await page.locator('#login-name').fill(name);
  await page.locator('#login-form button[type=submit]').click();
  await waitText(page.locator('#me'), name);
  await page.waitForSelector('#conn[data-state="open"]');
}

/** Waits (in the page) until an element of `loc` has this text. */
const waitText = (loc: Locator, text: string | RegExp) => loc.filter({ hasText: text }).first().waitFor();
/** Waits until no element of `loc` is left. */
const waitGone = (loc: Locator) => loc.first().waitFor({ state: 'detached' });
/** Waits until the element has no content left. */
const waitEmpty = (page: Page, selector: string) => page.locator(`${selector}:empty`).waitFor();

const roomItem = (page: Page, name: string) => page.locator(`#room-list .room-item[data-room-name="${name}"]`);
/** A message the server has confirmed (it has a seq), by its text. */
const message = (page: Page, text: string) => page.locator('#messages .msg[data-seq]', { has: page.locator('.body', { hasText: text }) });

describe('browser chat page', () => {
  it('keeps the room list live on one inbox subscription: previews, badges, renames, removals and reads on another device without a subscription per room', async () => {
    const errors: string[] = [];
    const page = await newPage(errors);
    // Every subscription the page starts, by procedure path, read from its WebSocket frames.
    const subscribed: string[] = [];
    page.on('websocket', (ws) =>
      ws.on('framesent', (f) => {
        const text = String(f.payload);
        // Keep-alive frames (PING/PONG) are not JSON.
        if (!text.startsWith('{') && !text.startsWith('[')) return;
        for (const m of [JSON.parse(text)].flat() as { method?: string; params?: { path?: string } }[]) {
          if (m.method === 'subscription' && m.params?.path) subscribed.push(m.params.path);
        }
      }),
    );
    await login(page, 'carol', 'Carol');
    await using dave = clientFor(srv.url, 'dave');
    const rooms = [];
    for (const name of ['Ops 1', 'Ops 2', 'Ops 3']) {
      const room = await dave.trpc.room.create.mutate({ kind: 'group', name, memberIds: ['carol'] });
      await dave.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `first in ${name}` });
      rooms.push(room);
    }
    for (const name of ['Ops 1', 'Ops 2', 'Ops 3']) {
      await waitText(roomItem(page, name).locator('.room-last'), `dave: first in ${name}`);
      await waitText(roomItem(page, name).locator('.badge'), /^1$/);
    }
    // A new message moves the room to the top with its preview and count, from room.activity.
    await dave.trpc.chat.send.mutate({ roomId: rooms[1]!.id, clientId: uuid(), body: 'second in Ops 2' });
    await waitText(roomItem(page, 'Ops 2').locator('.room-last'), 'dave: second in Ops 2');
    await waitText(roomItem(page, 'Ops 2').locator('.badge'), /^2$/);
    expect(await page.locator('#room-list .room-item').first().getAttribute('data-room-name')).toBe('Ops 2');
    // Renamed: the list follows; removed: the room leaves the list.
    await dave.trpc.room.update.mutate({ roomId: rooms[2]!.id, name: 'Ops three' });
    await roomItem(page, 'Ops three').waitFor();
    await dave.trpc.room.removeMember.mutate({ roomId: rooms[0]!.id, userId: 'carol' });
    await waitGone(roomItem(page, 'Ops 1'));
    // Read on another device of Carol's: unread.changed takes the badge off here.
    await using phone = clientFor(srv.url, 'carol');
    const three = await phone.trpc.room.get.query({ roomId: rooms[2]!.id });
    await phone.trpc.receipt.markRead.mutate({ roomId: three.id, seq: three.lastSeq });
    await waitGone(roomItem(page, 'Ops three').locator('.badge'));
    await waitText(roomItem(page, 'Ops 2').locator('.badge'), /^2$/);
    // All of it over the inbox: no room subscription until a room is opened, then exactly one.
    expect(subscribed.filter((p) => p === 'chat.events')).toEqual([]);
    expect(subscribed.filter((p) => p === 'inbox.events')).toEqual(['inbox.events']);
    await roomItem(page, 'Ops 2').click();
    await message(page, 'second in Ops 2').waitFor();
    await waitGone(roomItem(page, 'Ops 2').locator('.badge'));
    expect(subscribed.filter((p) => p === 'chat.events')).toEqual(['chat.events']);
    expect(errors).toEqual([]);
  });

  it('files: attach with the picker, drop and paste; progress while uploading; the other member sees file cards and an image preview', async () => {
    const errors: string[] = [];
    const alice = await newPage(errors);
    const bob = await newPage(errors);
    await login(alice, 'fay', 'Fay');
    await login(bob, 'gus', 'Gus');
    {
      await using api = clientFor(srv.url, 'fay');
      await api.trpc.room.create.mutate({ kind: 'group', name: 'Drawings', memberIds: ['gus'] });
    }
    for (const p of [alice, bob]) {
      await roomItem(p, 'Drawings').click();
      await waitText(p.locator('#room-title'), /^Drawings$/);
    }
    // Every progress value the page shows, recorded in the page as it changes.
    // (Page code as strings: the tests are compiled without the DOM's types.)
    await alice.evaluate(`(() => {
      const seen = (window.progressSeen = []);
      new MutationObserver(() => {
        for (const p of document.querySelectorAll('#uploads progress')) seen.push(Math.round((p.value / p.max) * 100));
      }).observe(document.getElementById('uploads'), { subtree: true, childList: true, attributes: true });
    })()`);

    // 1. The picker: a photo (an image) and a drawing (a PDF of about 1.5 MB).
    const photo = await sharp({ create: { width: 640, height: 480, channels: 3, background: { r: 30, g: 120, b: 200 } } }).png().toBuffer();
    const pdf = Buffer.concat([Buffer.from('%PDF-1.4\n'), Buffer.alloc(1_500_000, 0x20), Buffer.from('\n%%EOF\n')]);
    await alice.locator('#composer-input').fill('the plans');
    await alice.locator('#composer-file').setInputFiles([
      { name: 'photo.png', mimeType: 'image/png', buffer: photo },
      { name: 'plan 4711.pdf', mimeType: 'application/pdf', buffer: pdf },
    ]);
    const cards = (p: Page) => p.locator('#messages .msg[data-seq] .file-card[data-file-id]');
    await waitText(cards(bob).filter({ hasText: 'plan 4711.pdf' }).locator('.file-size'), /MB · application\/pdf/);
    await waitText(message(bob, 'the plans').locator('.file-card'), 'photo.png');
    expect(Math.max(...(await alice.evaluate<number[]>('window.progressSeen')))).toBe(100);
    // The photo's preview appears when its thumbnail is ready (file.ready), and loads.
    const img = cards(bob).filter({ hasText: 'photo.png' }).locator('img');
    await img.waitFor();
    // (Polled with page.evaluate: waitForFunction's string form is an eval the page's CSP forbids.)
    await waitFor(
      () => bob.evaluate<boolean>(`(() => {
        const i = document.querySelector('#messages .file-card[data-mime="image/png"] img');
        return !!i && i.complete && i.naturalWidth > 0;
      })()`),
      'the preview image loaded',
      { timeoutMs: WAIT, everyMs: 50 },
    );
    // The name downloads it: a signed URL of this server, in a new tab.
    const [popup] = await Promise.all([bob.waitForEvent('popup'), cards(bob).filter({ hasText: 'plan 4711.pdf' }).locator('.file-name').click()]);
    expect(popup.url()).toMatch(/\/files\//);
    await popup.close();

    // 2. Dropped on the room, 3. pasted into the composer: files made in the page.
    await alice.evaluate(`(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['dropped text'], 'dropped.txt', { type: 'text/plain' }));
      const room = document.querySelector('main.room');
      room.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
      room.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    })()`);
    await waitText(cards(bob), 'dropped.txt');
    await alice.evaluate(`(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['pasted'], 'pasted.txt', { type: 'text/plain' }));
      document.getElementById('composer-input').dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    })()`);
    await waitText(cards(bob), 'pasted.txt');
    await waitText(cards(alice), 'pasted.txt');
    expect(await alice.locator('#uploads .upload').count()).toBe(0);
    expect(errors).toEqual([]);
  });

  it('notifications: "Enable notifications" registers this browser for web push (service worker + PushManager), the worker shows a push; the room menu shows and sets its level and shows a mute', async () => {
    const vapid = { ...generateVapidKeys(), subject: 'mailto:ops@example.com' };
    await using pushSrv = await env.startServer({ notify: { ...srv.config.notify, vapid, allowPrivateUrls: true } });
    // The browser's push service is not reachable from here: the page's PushManager is given a
    // subscription whose endpoint and keys are real (a P-256 key, an auth secret), as a push service
    // would hand out. Everything else (permission, service worker, device.register) is the page's own.
    const ecdh = createECDH('prime256v1');
    ecdh.generateKeys();
    const sub = { endpoint: 'http://127.0.0.1:9/push/browser-1', keys: { p256dh: ecdh.getPublicKey().toString('base64url'), auth: randomBytes(16).toString('base64url') } };
    const errors: string[] = [];
    const { ctx, page } = await browser.newPage(errors, {
      timeoutMs: WAIT,
      viewport: { width: 1180, height: 760 },
      initScript: `(() => {
      const sub = ${JSON.stringify(sub)};
      const fake = { endpoint: sub.endpoint, toJSON: () => sub };
      PushManager.prototype.subscribe = async function () { window.pushSubscribed = (window.pushSubscribed || 0) + 1; return fake; };
      PushManager.prototype.getSubscription = async function () { return window.pushSubscribed ? fake : null; };
    })()`,
    });
    await page.goto(pushSrv.url);
    await page.locator('#login-username').fill('hana');
    await page.locator('#login-form button[type=submit]').click();
    // The server has VAPID keys: the button shows; the person allows notifications, then clicks.
    await waitText(page.locator('#enable-push'), 'Enable notifications');
    expect(await page.locator('#enable-push').getAttribute('data-push')).toBe('ready');
    await ctx.grantPermissions(['notifications'], { origin: pushSrv.url });
    await page.locator('#enable-push').click();
    await waitText(page.locator('#enable-push'), 'Notifications on');
    expect(await page.evaluate('navigator.serviceWorker.getRegistration("/").then((r) => !!r && r.active !== null)')).toBe(true);
    await using api = clientFor(pushSrv.url, 'hana');
    expect((await api.trpc.device.list.query()).map((d) => d.endpoint)).toEqual([sub.endpoint]);
    // The service worker shows a push as the browser would deliver it (through DevTools' push
    // delivery): title with the count, body, and the room's link kept for the click.
    const cdp = await ctx.newCDPSession(page);
    const registrations: { registrationId: string; scopeURL: string }[] = [];
    cdp.on('ServiceWorker.workerRegistrationUpdated', (e: { registrations: { registrationId: string; scopeURL: string }[] }) => registrations.push(...e.registrations));
    type Version = { registrationId: string; runningStatus: string; status: string };
    const versions = new Map<string, Version>();
    cdp.on('ServiceWorker.workerVersionUpdated', (e: { versions: (Version & { versionId: string })[] }) => {
      for (const v of e.versions) versions.set(v.versionId, v);
    });
    await cdp.send('ServiceWorker.enable');
    const reg = await waitFor(() => registrations.find((r) => r.scopeURL.startsWith(pushSrv.url)), 'the service worker registration');
    // Delivered only to a running, activated worker (a push sent while the worker was still
    // starting was lost once on a loaded machine): start it, then wait until DevTools says so.
    await cdp.send('ServiceWorker.startWorker', { scopeURL: reg!.scopeURL });
    await waitFor(
      () => [...versions.values()].some((v) => v.registrationId === reg!.registrationId && v.status === 'activated' && v.runningStatus === 'running'),
      'the service worker running',
    );
    const payload = { type: 'mention', roomId: 'r-1', title: 'Ivo mentioned you', body: 'in Quiet room: look', url: `${pushSrv.url}/#/room/r-1`, count: 2 };
    // DevTools' delivery is fire and forget: Chromium drops its outcome, and on a loaded machine a
    // delivery was once lost with no notification. As a push service does, it is delivered again
    // while none shows; the payload's tag (its room) makes a repeat replace the notification, so
    // exactly one must show.
    const notifications = () =>
      page.evaluate<{ title: string; body: string; url: string }[]>(
        `navigator.serviceWorker.ready.then((r) => r.getNotifications()).then((ns) => ns.map((n) => ({ title: n.title, body: n.body, url: n.data.url })))`,
      );
    let shown: Awaited<ReturnType<typeof notifications>> = [];
    let deliveries = 0;
    const deadline = Date.now() + WAIT;
    while (shown.length === 0 && Date.now() < deadline) {
      deliveries++;
      await cdp.send('ServiceWorker.deliverPushMessage', { origin: pushSrv.url, registrationId: reg!.registrationId, data: JSON.stringify(payload) });
      shown = await waitFor(notifications, 'the notification shown', { until: (ns) => ns.length > 0, timeoutMs: 2000, everyMs: 50 }).catch(() => []);
    }
    if (deliveries > 1) console.log(`[web push] the notification showed after ${deliveries} deliveries`);
    expect(shown).toEqual([{ title: 'Ivo mentioned you (2)', body: 'in Quiet room: look', url: payload.url }]);

    // The room menu: mentions by default; "None" is stored for this room.
    const room = await api.trpc.room.create.mutate({ kind: 'group', name: 'Quiet room' });
    await roomItem(page, 'Quiet room').click();
    await waitText(page.locator('#room-title'), /^Quiet room$/);
    expect(await page.locator('#room-notify').inputValue()).toBe('mentions');
    await page.locator('#room-notify').selectOption('none');
    await waitText(page.locator('#toast'), /No notifications from this room/);
    await waitFor(() => api.trpc.notify.preferences.query(), 'the room level stored', { until: (p) => p.rooms.some((r) => r.roomId === room.id && r.level === 'none') });
    // A mute set elsewhere (the CLI's --mute-until) shows in the menu; picking a level unmutes the room.
    await api.trpc.notify.setRoomPreference.mutate({ roomId: room.id, level: 'none', muteUntil: new Date(Date.now() + 3600_000) });
    await page.reload();
    await roomItem(page, 'Quiet room').click();
    await waitText(page.locator('#room-title'), /^Quiet room$/);
    await page.locator('#room-notify option[value="muted"]').waitFor({ state: 'attached' });
    expect(await page.locator('#room-notify').inputValue()).toBe('muted');
    expect(await page.locator('#room-notify option[value="muted"]').textContent()).toMatch(/^🔕 Muted until \S/);
    await page.locator('#room-notify').selectOption('mentions');
    await waitText(page.locator('#toast'), 'Unmuted. Notified of mentions here.');
    await waitFor(() => api.trpc.notify.preferences.query(), 'the room unmuted', {
      until: (p) => p.rooms.some((r) => r.roomId === room.id && r.level === 'mentions' && r.muteUntil === null),
    });
    expect(await page.locator('#room-notify option[value="muted"]').count()).toBe(0);
    expect(await page.locator('#enable-push').isVisible()).toBe(true);
    expect(errors).toEqual([]);

    // Without VAPID keys on the server there is no button: the page asked (data-push="off") and left it hidden.
    const noPush = await newPage(errors);
    await login(noPush, 'hana', 'Hana');
    await noPush.locator('#enable-push[data-push="off"]').waitFor({ state: 'attached' });
    expect(await noPush.locator('#enable-push').isVisible()).toBe(false);
    expect(errors).toEqual([]);
  });

  it('serves the built page at / and its assets with their content types', async () => {
    const res = await fetch(`${srv.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await res.text();
    const js = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    const css = /href="(\/assets\/[^"]+\.css)"/.exec(html)?.[1];
    expect(js, 'index.html names its script').toBeTruthy();
    expect(css, 'index.html names its stylesheet').toBeTruthy();
    const jsRes = await fetch(`${srv.url}${js}`);
    expect(jsRes.status).toBe(200);
    expect(jsRes.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    const cssRes = await fetch(`${srv.url}${css}`);
    expect(cssRes.headers.get('content-type')).toBe('text/css; charset=utf-8');
  });

  it('two users chat: messages both ways, unread badge, typing, read receipts, reactions, presence, history on scroll', async () => {
    const errors: string[] = [];
    const alice = await newPage(errors);
    const bob = await newPage(errors);
    await login(alice, 'alice', 'Alice');
    await login(bob, 'bob', 'Bob');

    // Alice creates a group with Bob and writes before Bob opens it: Bob gets the room (inbox
    // event) with an unread badge.
    await alice.locator('#new-group-name').fill('Launch plan');
    await alice.locator('#new-group-members').fill('bob');
    await alice.locator('#new-group-form button[type=submit]').click();
    await waitText(alice.locator('#room-title'), /^Launch plan$/);
    await alice.locator('#composer-input').fill('Hi Bob! Ready for the launch?');
    await alice.locator('#composer-input').press('Enter');
    await message(alice, 'Hi Bob! Ready for the launch?').waitFor();
    await waitText(roomItem(bob, 'Launch plan').locator('.badge'), /^1$/);

    // Bob opens it: the message is there, the badge goes, and Alice sees her message seen by Bob.
    await roomItem(bob, 'Launch plan').click();
    await waitText(bob.locator('#room-title'), /^Launch plan$/);
    await message(bob, 'Hi Bob! Ready for the launch?').waitFor();
    await waitGone(roomItem(bob, 'Launch plan').locator('.badge'));
    await waitText(alice.locator('#messages .seen'), /Seen by Bob/);

    // Presence of the members, live: both online, then Bob goes away.
    await alice.waitForSelector('#members .member[data-user-id="bob"][data-status="online"]');
    await bob.waitForSelector('#members .member[data-user-id="alice"][data-status="online"]');
    await bob.locator('#my-status').selectOption('away');
    await alice.waitForSelector('#members .member[data-user-id="bob"][data-status="away"]');
    await bob.locator('#my-status').selectOption('online');
    await alice.waitForSelector('#members .member[data-user-id="bob"][data-status="online"]');

    // Alice types: Bob sees it; she sends: Bob sees the message live and the indicator goes.
    await alice.locator('#composer-input').pressSequentially('Launch is at 10', { delay: 15 });
    await waitText(bob.locator('#typing'), /Alice is typing/);
    await alice.locator('#composer-input').press('Enter');
    await message(bob, 'Launch is at 10').waitFor();
    await waitEmpty(bob, '#typing');
    await waitText(alice.locator('#messages .seen'), /Seen by Bob/);
    // ...under her latest message.
    const latestSeq = await message(alice, 'Launch is at 10').getAttribute('data-seq');
    await alice.locator(`#messages .seen[data-seq="${latestSeq}"]`, { hasText: 'Seen by Bob' }).waitFor();

    // Bob answers: Alice sees him typing, then his message, and Bob sees it read by Alice.
    await bob.locator('#composer-input').pressSequentially('Great, see you there', { delay: 15 });
    await waitText(alice.locator('#typing'), /Bob is typing/);
    await bob.locator('#composer-input').press('Enter');
    await message(alice, 'Great, see you there').waitFor();
    await waitEmpty(alice, '#typing');
    await waitText(bob.locator('#messages .seen'), /Seen by Alice/);
    expect(await message(alice, 'Great, see you there').getAttribute('data-sender')).toBe('bob');

    // Reactions: Alice reacts to Bob's message with a thumbs up; both see it counted once.
    const bobsMsg = message(alice, 'Great, see you there');
    await bobsMsg.hover();
    await bobsMsg.locator('.react-bar button[data-emoji="👍"]').click();
    await waitText(bobsMsg.locator('.reaction[data-emoji="👍"] .count'), /^1$/);
    await bobsMsg.locator('.reaction.me[data-emoji="👍"]').waitFor();
    const onBob = message(bob, 'Great, see you there');
    await waitText(onBob.locator('.reaction[data-emoji="👍"] .count'), /^1$/);
    expect(await onBob.locator('.reaction.me').count()).toBe(0);
    // Bob adds his: two, and his chip is his.
    await onBob.locator('.reaction[data-emoji="👍"]').click();
    await waitText(onBob.locator('.reaction[data-emoji="👍"] .count'), /^2$/);
    await onBob.locator('.reaction.me[data-emoji="👍"]').waitFor();
    await waitText(bobsMsg.locator('.reaction[data-emoji="👍"] .count'), /^2$/);
    await alice.locator('#composer-input').fill('🚀 Then it is settled');
    await alice.locator('#composer-input').press('Enter');
    await message(bob, 'Then it is settled').waitFor();
    await waitText(alice.locator('#messages .seen'), /Seen by Bob/);
    // For the picture: Bob is typing, Alice has a draft.
    await bob.locator('#composer-input').pressSequentially('On my way', { delay: 15 });
    await waitText(alice.locator('#typing'), /Bob is typing/);
    await alice.locator('#composer-input').fill('Checklist is in the doc');
    await alice.mouse.move(0, 0);

    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await alice.screenshot({ path: SCREENSHOT });

    // History that loads on scroll: Bob shares a room with 75 messages; Alice's page shows the
    // newest page and loads older ones (beforeSeq) as she scrolls up, each message exactly once.
    {
      await using api = clientFor(srv.url, 'bob');
      const room = await api.trpc.room.create.mutate({ kind: 'group', name: 'Archive', memberIds: ['alice'] });
      for (let i = 1; i <= 75; i++) await api.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `history ${i}` });
    }
    await waitText(roomItem(alice, 'Archive').locator('.badge'), /^75$/);
    await roomItem(alice, 'Archive').click();
    await message(alice, 'history 75').waitFor();
    const historyBodies = async () => (await alice.locator('#messages .msg[data-seq] .body').allTextContents()).filter((t) => t.startsWith('history '));
    expect((await historyBodies()).length).toBeLessThan(75);
    expect(await alice.locator('#history-more').count()).toBe(1);
    for (let i = 0; i < 10 && (await alice.locator('#history-start').count()) === 0; i++) {
      const before = await alice.locator('#messages .msg').count();
      // Scroll up the way a person does: the mouse wheel over the message list.
      await alice.locator('#messages').hover();
      await alice.mouse.wheel(0, -20_000);
      // One more message than before, or the beginning of the conversation.
      await alice.locator('#messages .msg').nth(before).or(alice.locator('#history-start')).first().waitFor();
    }
    expect(await alice.locator('#history-start').count()).toBe(1);
    expect(await historyBodies()).toEqual(Array.from({ length: 75 }, (_, i) => `history ${i + 1}`));
    await waitGone(roomItem(alice, 'Archive').locator('.badge'));

    // A card from a service token: title, label/value fields and links, all as text (never HTML).
    {
      await using erp = clientFor(srv.url, 'erp', { roles: ['service'] });
      const room = await erp.trpc.room.ensure.mutate({ key: 'order:4711', kind: 'group', name: 'Order 4711', memberIds: ['alice'] });
      await erp.trpc.chat.send.mutate({
        roomId: room.id,
        clientId: uuid(),
        kind: 'card',
        body: 'Order 4711 shipped',
        card: {
          title: 'Shipped <img src=x onerror=alert(1)>',
          fields: [{ label: 'Carrier', value: '<b>DHL</b>' }],
          links: [{ label: 'Tracking', url: 'https://tracking.example.com/4711' }],
        },
      });
    }
    await roomItem(alice, 'Order 4711').click();
    const card = alice.locator('#messages .msg[data-seq] .card');
    await waitText(card.locator('.card-title'), 'Shipped <img src=x onerror=alert(1)>');
    expect(await card.locator('img, b').count()).toBe(0);
    expect(await card.locator('dt').allTextContents()).toEqual(['Carrier']);
    expect(await card.locator('dd').allTextContents()).toEqual(['<b>DHL</b>']);
    const link = card.locator('.card-links a');
    expect(await link.textContent()).toBe('Tracking');
    expect(await link.getAttribute('href')).toBe('https://tracking.example.com/4711');
    expect(await link.getAttribute('rel')).toBe('noopener noreferrer');
    expect(await link.getAttribute('target')).toBe('_blank');

    // Archived while open: the composer turns read-only; unarchived: writable again; deleted: the
    // page leaves it and it is gone from the list.
    {
      await using erp = clientFor(srv.url, 'erp', { roles: ['service'] });
      const room = await erp.trpc.room.ensure.mutate({ key: 'order:4711', kind: 'group', name: 'Order 4711' });
      const composerDisabled = (disabled: boolean) =>
        alice.locator(disabled ? '#composer-input:disabled' : '#composer-input:enabled').waitFor({ timeout: WAIT });
      await erp.trpc.room.archive.mutate({ roomId: room.id });
      await composerDisabled(true);
      expect(await alice.locator('#composer-input').getAttribute('placeholder')).toBe('This room is archived: read-only');
      await erp.trpc.room.unarchive.mutate({ roomId: room.id });
      await composerDisabled(false);
      await erp.trpc.room.delete.mutate({ roomId: room.id });
      await waitGone(roomItem(alice, 'Order 4711'));
    }

    expect(errors).toEqual([]);
  });
});

describe('browser origins', () => {
  /** What a page of `origin` gets from the API at `api`: HTTP calls (with a preflight) and a tRPC query over WebSocket. */
  async function callFrom(origin: string, api: string): Promise<{ http: string; batch: string; ws: string }> {
    const page = await newPage([]);
    await page.goto(`${origin}/`);
    expect(new URL(page.url()).origin).toBe(origin);
    const result = page.evaluate(
      async ({ api, token }) => {
        const http = await fetch(`${api}/trpc/auth.me`, { headers: { authorization: `Bearer ${token}` } }).then(
          async (r) => `${r.status} ${((await r.json()) as { result: { data: { json: { id: string } } } }).result.data.json.id}`,
          (e: Error) => `failed: ${e.name}`,
        );
        // What httpBatchLink sends: a POST with content-type and, for the stream link, trpc-accept.
        const batch = await fetch(`${api}/trpc/room.create?batch=1`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'trpc-accept': 'application/json' },
          body: JSON.stringify({ 0: { json: { kind: 'group', name: 'from another origin' } } }),
        }).then(
          (r) => String(r.status),
          (e: Error) => `failed: ${e.name}`,
        );
        const ws = await new Promise<string>((resolve) => {
          const socket = new WebSocket(`${api.replace(/^http/, 'ws')}/trpc?connectionParams=1`);
          socket.onopen = () => {
            socket.send(JSON.stringify({ method: 'connectionParams', data: { token } }));
            socket.send(JSON.stringify({ id: 1, method: 'query', params: { path: 'auth.me', input: {} } }));
          };
          socket.onmessage = (m) => {
            const frame = JSON.parse(String(m.data)) as { id?: number; result?: { data: { json: { id: string } } } };
            if (frame.id !== 1) return;
            resolve(`query ${frame.result?.data.json.id ?? 'failed'}`);
            socket.close();
          };
          socket.onerror = () => resolve('refused');
          socket.onclose = (e) => resolve(`closed ${e.code}`);
        });
        return { http, batch, ws };
      },
      { api, token: tokenFor('pat') },
    );
    return within(result, WAIT, `calls from ${origin}`);
  }

  it('a page of a listed origin uses the API over HTTP and WebSocket; a page of another origin is refused on both', async () => {
    // One tiny server for the frontend pages: http://127.0.0.1:<port> and http://localhost:<port> are two origins.
    const pages = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><title>frontend</title>');
    });
    await new Promise<void>((resolve) => pages.listen(0, '127.0.0.1', resolve));
    try {
      const port = (pages.address() as AddressInfo).port;
      const listed = `http://127.0.0.1:${port}`;
      const api = await env.startServer({ corsOrigins: [listed] });
      expect(await callFrom(listed, api.url)).toEqual({ http: '200 pat', batch: '200', ws: 'query pat' });
      expect(await callFrom(`http://localhost:${port}`, api.url)).toEqual({ http: 'failed: TypeError', batch: 'failed: TypeError', ws: 'refused' });
      // The refused page's POST did not run (it was stopped at its preflight): one room, the listed page's.
      await using pat = clientFor(api.url, 'pat');
      expect((await pat.trpc.room.list.query()).filter((r) => r.name === 'from another origin')).toHaveLength(1);
    } finally {
      await new Promise<void>((resolve) => pages.close(() => resolve()));
    }
  });
});
