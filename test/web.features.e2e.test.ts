/**
 * The browser page's threads, search, meetings, 1:1 calls, keyboard use and phone layout, end to
 * end: Debian's Chromium (with fake camera and microphone) driven by playwright-core, one browser
 * context per user, against real servers (PostgreSQL + Redis; one with a LiveKit double as its
 * video provider). Every wait is on the page (a selector, or a bounded poll of a condition),
 * never a fixed sleep. UPDATE_SCREENSHOT=1 (or UPDATE_SCREENSHOTS=1) writes docs/screenshot-phone.png.
 */
import { createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Locator, Page } from 'playwright-core';
import { buildWebPage, TestBrowser } from './fixture/browser.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFor, dispose, testEnv, uuid, waitFor, type TestEnv, type TestServer } from './fixture.js';
import { type DailyDouble, livekitEvent, postWebhook, signLiveKit, startDailyDouble, startLiveKitDouble, type LiveKitDouble, videoConfig } from './video-doubles.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const UPDATE = Boolean(process.env.UPDATE_SCREENSHOT || process.env.UPDATE_SCREENSHOTS);
const PHONE_SHOT = UPDATE ? join(ROOT, 'docs', 'screenshot-phone.png') : join(tmpdir(), `chat-phone-${process.pid}.png`);
/** Page-side waits: generous for a loaded CI machine, still well inside the test timeout. */
const WAIT = 15_000;

let env: TestEnv;
let srv: TestServer;
let lk: LiveKitDouble;
let daily: DailyDouble;
let dailySrv: TestServer;
let iceSrv: TestServer;
/** The STUN and TURN servers the ICE test's server hands out (nothing listens there: only the configuration is checked). */
const ICE = [{ urls: ['stun:127.0.0.1:3478'] }, { urls: ['turn:127.0.0.1:3478?transport=udp'], username: 'u', credential: 'p' }];
let lkSrv: TestServer;
let browser: TestBrowser;

beforeAll(async () => {
  buildWebPage();
  env = await testEnv('web-features');
  lk = await startLiveKitDouble();
  // One after the other: the first applies the migrations.
  srv = await env.startServer({ redisPrefix: env.prefix('web-plain') });
  lkSrv = await env.startServer({
    redisPrefix: env.prefix('web-lk'),
    ...videoConfig({ provider: 'livekit', livekit: { url: lk.url, apiKey: lk.apiKey, apiSecret: lk.apiSecret } }),
  });
  iceSrv = await env.startServer({ redisPrefix: env.prefix('web-ice'), rtc: { iceServers: ICE } });
  daily = await startDailyDouble();
  dailySrv = await env.startServer({
    redisPrefix: env.prefix('web-daily'),
    ...videoConfig({ provider: 'daily', daily: { apiKey: daily.apiKey, apiUrl: daily.url, webhookSecret: null } }),
  });
  browser = await TestBrowser.launch([
    // Calls: a synthetic camera and microphone, permission granted without a prompt.
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ]);
});

afterAll(() => dispose(lk, daily, env, browser));

/** A fresh browser context (its own storage: its own user) with the page's errors surfaced. */
async function newPage(errors: string[], viewport = { width: 1180, height: 760 }): Promise<Page> {
  return (await browser.newPage(errors, { timeoutMs: WAIT, viewport, deviceScaleFactor: 1, consoleErrors: true })).page;
}

async function login(page: Page, server: TestServer, username: string, name: string) {
  await page.goto(server.url);
  await page.locator('#login-username').fill(username);
  await page.locator('#login-name').fill(name);
  await page.locator('#login-form button[type=submit]').click();
  await waitText(page.locator('#me'), name);
  await page.waitForSelector('#conn[data-state="open"]');
}

const waitText = (loc: Locator, text: string | RegExp) => loc.filter({ hasText: text }).first().waitFor();
const waitGone = (loc: Locator) => loc.first().waitFor({ state: 'detached' });
const roomItem = (page: Page, name: string) => page.locator(`#room-list .room-item[data-room-name="${name}"]`);
/** A message of the room's main list that the server has confirmed, by its text. */
const message = (page: Page, text: string | RegExp) => page.locator('#messages .msg[data-seq]', { has: page.locator('.body', { hasText: text }) });
/** Polls a condition in the page (a string: the tests compile without DOM types; the page's CSP forbids waitForFunction's eval). */
const pagePoll = (page: Page, expr: string, what: string) => waitFor(() => page.evaluate<boolean>(expr), what, { timeoutMs: WAIT, everyMs: 50 });

async function openRoom(page: Page, name: string) {
  await roomItem(page, name).click();
  await waitText(page.locator('#room-title'), new RegExp(`^${name}$`));
}

describe('threads', () => {
  it('reply in thread from a message; the panel shows the root and its replies live; the root counts them live', async () => {
    const errors: string[] = [];
    const alice = await newPage(errors);
    const bob = await newPage(errors);
    await login(alice, srv, 'th-alice', 'Alice');
    await login(bob, srv, 'th-bob', 'Bob');
    {
      await using api = clientFor(srv.url, 'th-alice');
      await api.trpc.room.create.mutate({ kind: 'group', name: 'Design', memberIds: ['th-bob'] });
    }
    await openRoom(alice, 'Design');
    await openRoom(bob, 'Design');
    await alice.locator('#composer-input').fill('Which font for the logo?');
    await alice.locator('#composer-input').press('Enter');
    await message(bob, 'Which font for the logo?').waitFor();

    // Bob replies in a thread from the message's actions.
    const onBob = message(bob, 'Which font for the logo?');
    await onBob.hover();
    await onBob.locator('.react-bar .reply-in-thread').click();
    await bob.locator('#thread-panel:not([hidden])').waitFor();
    await waitText(bob.locator('#thread-root .body'), 'Which font for the logo?');
    await bob.locator('#thread-input').fill('Inter, I think');
    await bob.locator('#thread-input').press('Enter');
    await waitText(bob.locator('#thread-replies .thread-reply .body'), 'Inter, I think');

    // Alice's root counts it live; the reply stays out of the main list.
    const onAlice = message(alice, 'Which font for the logo?');
    await waitText(onAlice.locator('.thread-link'), /^1 reply/);
    expect(await message(alice, 'Inter, I think').count()).toBe(0);
    await onAlice.locator('.thread-link').click();
    await waitText(alice.locator('#thread-replies .thread-reply .body'), 'Inter, I think');
    await waitText(alice.locator('#thread-count'), /^1 reply$/);

    // Both panels open: replies from either side arrive live, with the count.
    await alice.locator('#thread-input').fill('Agreed, with a heavier weight');
    await alice.locator('#thread-input').press('Enter');
    await waitText(bob.locator('#thread-replies .thread-reply .body'), 'Agreed, with a heavier weight');
    await waitText(bob.locator('#thread-count'), /^2 replies$/);
    {
      await using api = clientFor(srv.url, 'th-bob');
      const root = await api.trpc.chat.history.query({ roomId: (await api.trpc.room.list.query()).find((r) => r.name === 'Design')!.id });
      const rootMsg = root.messages.find((m) => m.body === 'Which font for the logo?')!;
      await api.trpc.chat.send.mutate({ roomId: rootMsg.roomId, clientId: uuid(), body: 'Sent from elsewhere', replyToId: rootMsg.id });
      expect((await api.trpc.chat.thread.query({ messageId: rootMsg.id })).root.replyCount).toBe(3);
    }
    await waitText(alice.locator('#thread-replies .thread-reply .body'), 'Sent from elsewhere');
    await waitText(alice.locator('#thread-count'), /^3 replies$/);
    await waitText(onAlice.locator('.thread-link'), /^3 replies/);
    await waitText(onBob.locator('.thread-link'), /^3 replies/);
    expect(await alice.locator('#thread-replies .thread-reply .body').allTextContents()).toEqual([
      'Inter, I think',
      'Agreed, with a heavier weight',
      'Sent from elsewhere',
    ]);
    await alice.locator('#thread-close').click();
    await alice.locator('#thread-panel[hidden]').waitFor({ state: 'attached' });
    expect(errors).toEqual([]);
  });
});

describe('search', () => {
  it('searches the rooms I can read: results with room and highlighted snippet; a click jumps to the message, loading history around it', async () => {
    const errors: string[] = [];
    const page = await newPage(errors);
    await login(page, srv, 'se-carol', 'Carol');
    {
      await using api = clientFor(srv.url, 'se-dave');
      const room = await api.trpc.room.create.mutate({ kind: 'group', name: 'Budget', memberIds: ['se-carol'] });
      for (let i = 1; i <= 120; i++) {
        const body = i === 12 ? 'The <b>unicorn</b> budget is approved & signed' : i === 40 ? 'The dragon invoice is late' : `filler line ${i}`;
        await api.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body });
      }
      // A room Carol is not in: its matches never show.
      const secret = await api.trpc.room.create.mutate({ kind: 'group', name: 'Secret' });
      await api.trpc.chat.send.mutate({ roomId: secret.id, clientId: uuid(), body: 'unicorn secret' });
    }
    await roomItem(page, 'Budget').waitFor();
    await page.getByRole('searchbox', { name: 'Search messages' }).fill('unicorn');
    await page.getByRole('searchbox', { name: 'Search messages' }).press('Enter');
    const hit = page.locator('#search-results .search-hit');
    await waitText(page.locator('#search-status'), /^1 result$/);
    expect(await hit.count()).toBe(1);
    expect(await hit.locator('.hit-room').textContent()).toBe('# Budget');
    // The snippet as text, the match highlighted: the message's markup is shown, never parsed.
    expect(await hit.locator('.hit-snippet').textContent()).toBe('The <b>unicorn</b> budget is approved & signed');
    expect(await hit.locator('.hit-snippet mark').allTextContents()).toEqual(['unicorn']);
    expect(await hit.locator('.hit-snippet b').count()).toBe(0);

    // The jump: the room opens at the message (far older than the newest page), highlighted and focused.
    await hit.click();
    await waitText(page.locator('#room-title'), /^Budget$/);
    const target = page.locator('#messages .msg.highlight');
    await waitText(target.locator('.body'), 'The <b>unicorn</b> budget is approved & signed');
    await pagePoll(page, `document.activeElement?.classList.contains('highlight') === true`, 'the hit focused');
    await pagePoll(
      page,
      `(() => { const r = document.querySelector('#messages .msg.highlight').getBoundingClientRect(); const b = document.getElementById('messages').getBoundingClientRect(); return r.top >= b.top && r.bottom <= b.bottom; })()`,
      'the hit scrolled into view',
    );
    // Around it: its neighbours; the newest page is still there, with a marker for what lies between.
    await message(page, /^filler line 11$/).waitFor();
    await message(page, /^filler line 13$/).waitFor();
    await message(page, /^filler line 120$/).waitFor();
    expect(await message(page, /^filler line 60$/).count()).toBe(0);
    expect(await page.locator('#history-gap').count()).toBe(1);

    // A second jump in the same room, to another old message: one gap, from there to the newest page.
    await page.getByRole('searchbox', { name: 'Search messages' }).fill('dragon');
    await page.getByRole('searchbox', { name: 'Search messages' }).press('Enter');
    await waitText(page.locator('#search-results .search-hit .hit-snippet'), 'dragon invoice');
    await page.locator('#search-results .search-hit').click();
    await waitText(page.locator('#messages .msg.highlight .body'), 'The dragon invoice is late');
    await message(page, /^filler line 39$/).waitFor();
    await message(page, /^filler line 41$/).waitFor();
    expect(await message(page, /^filler line 13$/).count()).toBe(0);
    expect(await page.locator('#history-gap').count()).toBe(1);
    await page.locator('#history-gap').click();
    await message(page, /^filler line 60$/).waitFor();
    await waitGone(page.locator('#history-gap'));
    const bodies = (await page.locator('#messages .msg[data-seq] .body').allTextContents()).filter((t) => t.startsWith('filler'));
    // Each once, in order, without a hole from the first loaded one to the newest.
    const nums = bodies.map((b) => Number(b.split(' ')[2]));
    const from = nums[0]!;
    expect(from).toBeLessThan(40);
    expect(nums).toEqual(Array.from({ length: 121 - from }, (_, i) => i + from).filter((n) => n !== 12 && n !== 40));
    expect(errors).toEqual([]);
  });
});

describe('meetings', () => {
  it('without a video provider, "Start meeting" says why it is unavailable', async () => {
    const errors: string[] = [];
    const page = await newPage(errors);
    await login(page, srv, 'mt-erin', 'Erin');
    {
      await using api = clientFor(srv.url, 'mt-erin');
      await api.trpc.room.create.mutate({ kind: 'group', name: 'No video here' });
    }
    await openRoom(page, 'No video here');
    const button = page.getByRole('button', { name: /Start meeting/ });
    await page.locator('#start-meeting[data-unavailable="true"]').waitFor();
    expect(await button.getAttribute('aria-disabled')).toBe('true');
    expect(await button.getAttribute('title')).toMatch(/Meetings are unavailable: video is not configured on this server: set VIDEO_PROVIDER/);
    // Unavailable, not disabled: it stays focusable and explains itself (aria-disabled keeps mouse clicks from Playwright).
    await button.focus();
    await page.keyboard.press('Enter');
    await waitText(page.locator('#toast'), /Meetings are unavailable: video is not configured/);
    expect(errors).toEqual([]);
  });

  it('"Start meeting" posts a meeting card everyone sees live; "Join" opens LiveKit Meet with liveKitUrl and token; the card shows who is in and ends', async () => {
    const errors: string[] = [];
    const alice = await newPage(errors);
    const bob = await newPage(errors);
    // The provider's hosted UI is outside this test: its page is answered locally.
    for (const p of [alice, bob]) await p.context().route('https://meet.livekit.io/**', (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<title>meet</title>' }));
    await login(alice, lkSrv, 'mt-alice', 'Alice');
    await login(bob, lkSrv, 'mt-bob', 'Bob');
    {
      await using api = clientFor(lkSrv.url, 'mt-alice');
      await api.trpc.room.create.mutate({ kind: 'group', name: 'Standup', memberIds: ['mt-bob'] });
    }
    await openRoom(alice, 'Standup');
    await openRoom(bob, 'Standup');
    await alice.locator('#start-meeting[data-unavailable="false"]').waitFor();
    await alice.getByRole('button', { name: /Start meeting/ }).click();
    const card = (p: Page) => p.locator('#messages .msg[data-seq] .meeting-card');
    for (const p of [alice, bob]) {
      await card(p).locator('.meeting-status[data-status="scheduled"]').waitFor();
      await waitText(card(p).locator('.meeting-people'), 'Nobody has joined yet');
    }
    const meetingId = (await card(bob).getAttribute('data-meeting-id'))!;
    // Bob got the invite in his inbox as well.
    await waitText(bob.locator('#toast'), /started a video meeting/);

    // Join: a fresh token, the provider's meeting UI in a new tab.
    const [popup] = await Promise.all([bob.waitForEvent('popup'), card(bob).getByRole('button', { name: 'Join' }).click()]);
    const opened = new URL(popup.url());
    expect(`${opened.origin}${opened.pathname}`).toBe('https://meet.livekit.io/custom');
    expect(opened.searchParams.get('liveKitUrl')).toBe(lk.url.replace(/^http/, 'ws'));
    const token = opened.searchParams.get('token')!;
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { sub: string; video: { room: string; roomJoin: boolean } };
    expect(claims).toMatchObject({ sub: 'mt-bob', video: { room: meetingId, roomJoin: true } });
    await popup.close();

    // The provider says Bob is in: both cards show the meeting live with him in it.
    const hook = async (event: 'participant_joined' | 'room_finished') => {
      const body = livekitEvent({ event, room: meetingId, ...(event === 'participant_joined' ? { participant: { sid: `PA_${uuid()}`, identity: 'mt-bob', name: 'Bob' } } : {}) });
      const res = await postWebhook(`${lkSrv.url}/webhooks/video/livekit`, body, { authorization: await signLiveKit(body, lk.apiKey, lk.apiSecret) });
      expect(res.status).toBe(200);
    };
    await hook('participant_joined');
    for (const p of [alice, bob]) {
      await card(p).locator('.meeting-status[data-status="live"]').waitFor();
      await waitText(card(p).locator('.meeting-people'), 'In the meeting: Bob');
    }
    // Only its creator may end it: Alice's card has "End", Bob's has not.
    expect(await card(bob).getByRole('button', { name: 'End' }).count()).toBe(0);
    await card(alice).getByRole('button', { name: 'End' }).click();
    for (const p of [alice, bob]) {
      await card(p).locator('.meeting-status[data-status="ended"]').waitFor();
      await waitGone(card(p).getByRole('button', { name: 'Join' }));
    }
    await waitText(message(bob, 'ended'), /Meeting ended/);
    expect(errors).toEqual([]);
  });
});

describe('meetings on Daily', () => {
  it('"Join" opens the Daily room URL with the join token as t', async () => {
    const errors: string[] = [];
    const carol = await newPage(errors);
    const dave = await newPage(errors);
    for (const p of [carol, dave]) await p.context().route(`https://${daily.domain}.daily.co/**`, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<title>daily</title>' }));
    await login(carol, dailySrv, 'dy-carol', 'Carol');
    await login(dave, dailySrv, 'dy-dave', 'Dave');
    {
      await using api = clientFor(dailySrv.url, 'dy-carol');
      await api.trpc.room.create.mutate({ kind: 'group', name: 'Review', memberIds: ['dy-dave'] });
    }
    await openRoom(carol, 'Review');
    await openRoom(dave, 'Review');
    await carol.locator('#start-meeting[data-unavailable="false"]').waitFor();
    await carol.getByRole('button', { name: /Start meeting/ }).click();
    const card = dave.locator('#messages .msg[data-seq] .meeting-card');
    await card.locator('.meeting-status[data-status="scheduled"]').waitFor();
    const [popup] = await Promise.all([dave.waitForEvent('popup'), card.getByRole('button', { name: 'Join' }).click()]);
    const opened = new URL(popup.url());
    const [room] = [...daily.rooms.values()];
    expect(`${opened.origin}${opened.pathname}`).toBe(room!.url);
    // The token Daily minted for Dave in that room.
    const minted = daily.tokens.find((t) => t.token === opened.searchParams.get('t'));
    expect(minted?.properties).toMatchObject({ room_name: room!.name, user_id: 'dy-dave' });
    await popup.close();
    expect(errors).toEqual([]);
  });
});

/** Before the page's scripts: records the configuration of every RTCPeerConnection the page makes (`window.__pcConfigs`). */
const RECORD_PEER_CONFIGS = `{
  const Native = window.RTCPeerConnection;
  window.__pcConfigs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(config, ...rest) { window.__pcConfigs.push(JSON.parse(JSON.stringify(config ?? null))); super(config, ...rest); }
  };
}`;

/** The call bar of a page, by state. */
const callState = (page: Page, state: string) => page.locator(`#call[data-state="${state}"]`).waitFor({ state: 'attached' });

describe('1:1 calls', () => {
  it('the page builds its peer connection with the ICE servers of RTC_ICE_SERVERS (signal.config)', async () => {
    const errors: string[] = [];
    const alice = await newPage(errors);
    await alice.addInitScript(RECORD_PEER_CONFIGS);
    await login(alice, iceSrv, 'ic-alice', 'Alice');
    {
      await using api = clientFor(iceSrv.url, 'ic-bob');
      await api.trpc.room.openDirect.mutate({ userId: 'ic-alice' });
    }
    await openRoom(alice, 'ic-bob');
    await alice.getByRole('button', { name: 'Call ic-bob (audio and video)' }).click();
    await callState(alice, 'calling');
    await pagePoll(alice, 'window.__pcConfigs.length > 0', 'a peer connection');
    const configs = await alice.evaluate<{ iceServers: unknown }[]>('window.__pcConfigs');
    expect(configs[0]!.iceServers).toEqual(ICE);
    await alice.getByRole('button', { name: 'Hang up' }).click();
    await callState(alice, 'idle');
    expect(errors).toEqual([]);
  });

  it('the page calls with the TURN credential minted for it (RTC_TURN_URLS), asking signal.config again once it is about to expire', async () => {
    const secret = 'web-turn-secret-0123456789';
    const turnUrls = ['turn:127.0.0.1:3478?transport=udp'];
    // 60 s is within the page's renewal margin (every call asks again); a day is not (the answer is kept).
    for (const [ttlSeconds, queries] of [
      [60, 2],
      [86_400, 1],
    ] as const) {
      const server = await env.startServer({ redisPrefix: env.prefix(`web-turn-${ttlSeconds}`), rtc: { iceServers: [ICE[0]!], turn: { urls: turnUrls, secret, ttlSeconds } } });
      const errors: string[] = [];
      const alice = await newPage(errors);
      await alice.addInitScript(RECORD_PEER_CONFIGS);
      let configQueries = 0;
      alice.on('request', (r) => {
        if (r.url().includes('signal.config')) configQueries++;
      });
      const [me, peer] = [`tc${ttlSeconds}-alice`, `tc${ttlSeconds}-bob`];
      await login(alice, server, me, 'Alice');
      {
        await using api = clientFor(server.url, peer);
        await api.trpc.room.openDirect.mutate({ userId: me });
      }
      await openRoom(alice, peer);
      for (const n of [1, 2]) {
        await alice.getByRole('button', { name: `Call ${peer} (audio and video)` }).click();
        await callState(alice, 'calling');
        await pagePoll(alice, `window.__pcConfigs.length >= ${n}`, `peer connection ${n}`);
        await alice.getByRole('button', { name: 'Hang up' }).click();
        await callState(alice, 'idle');
      }
      const configs = await alice.evaluate<{ iceServers: { urls: string[]; username?: string; credential?: string }[] }[]>('window.__pcConfigs');
      expect(configs).toHaveLength(2);
      for (const { iceServers } of configs) {
        expect(iceServers).toEqual([ICE[0], { urls: turnUrls, username: expect.stringMatching(/^\d{10}:[A-Za-z0-9_-]{22}$/), credential: expect.any(String) }]);
        const { username, credential } = iceServers[1]!;
        expect(credential).toBe(createHmac('sha1', secret).update(username!).digest('base64'));
      }
      expect(configQueries, `signal.config queries with a TTL of ${ttlSeconds} s`).toBe(queries);
      expect(errors).toEqual([]);
    }
  });

  it('calls over WebRTC in a direct room: ringing, accept, media both ways, hangup; decline; missed; busy; the call ends when either page goes away', async () => {
    const errors: string[] = [];
    const alice = await newPage(errors);
    const bob = await newPage(errors);
    const carol = await newPage(errors);
    await login(alice, srv, 'ca-alice', 'Alice');
    await login(bob, srv, 'ca-bob', 'Bob');
    await login(carol, srv, 'ca-carol', 'Carol');
    {
      await using api = clientFor(srv.url, 'ca-bob');
      await api.trpc.room.openDirect.mutate({ userId: 'ca-alice' });
      await api.trpc.room.openDirect.mutate({ userId: 'ca-carol' });
    }
    await openRoom(alice, 'ca-bob');
    await openRoom(carol, 'ca-bob');
    const call = alice.getByRole('button', { name: 'Call ca-bob (audio and video)' });
    await call.waitFor();
    // Group rooms have no call button.
    expect(await bob.locator('#call-button').isVisible()).toBe(false);

    // 1. Ringing, accept, connected both ways, the callee receives video; then Alice hangs up.
    await call.click();
    await callState(alice, 'calling');
    await callState(bob, 'ringing');
    await waitText(bob.locator('#call-status'), /is calling/);
    await bob.getByRole('button', { name: 'Accept' }).click();
    for (const p of [alice, bob]) await p.locator('#call[data-pc="connected"]').waitFor({ state: 'attached' });
    await bob.locator('#call[data-remote-video="true"]').waitFor({ state: 'attached' });
    await pagePoll(
      bob,
      `(() => { const v = document.getElementById('call-remote'); const s = v.srcObject; return !!s && s.getVideoTracks().length > 0 && s.getVideoTracks()[0].readyState === 'live' && v.videoWidth > 0; })()`,
      "the caller's video playing at the callee",
    );
    await pagePoll(alice, `(() => { const v = document.getElementById('call-remote'); return v.videoWidth > 0; })()`, "the callee's video playing at the caller");
    await callState(alice, 'connected');
    await alice.getByRole('button', { name: 'Hang up' }).click();
    await callState(alice, 'idle');
    await callState(bob, 'idle');
    await waitText(bob.locator('#toast'), /hung up/);

    // 2. Declined.
    await call.click();
    await callState(bob, 'ringing');
    await bob.getByRole('button', { name: 'Decline' }).click();
    await callState(bob, 'idle');
    await callState(alice, 'idle');
    await waitText(alice.locator('#toast'), /declined the call/);

    // A call given up while it rings is a missed call for the callee.
    await call.click();
    await callState(bob, 'ringing');
    await alice.getByRole('button', { name: 'Hang up' }).click();
    await callState(bob, 'idle');
    await waitText(bob.locator('#toast'), /Missed call from/);

    // 3. Busy: Carol calls Bob while he is in a call with Alice.
    await call.click();
    await callState(bob, 'ringing');
    await bob.getByRole('button', { name: 'Accept' }).click();
    for (const p of [alice, bob]) await p.locator('#call[data-pc="connected"]').waitFor({ state: 'attached' });
    await carol.getByRole('button', { name: 'Call ca-bob (audio and video)' }).click();
    await callState(carol, 'idle');
    await waitText(carol.locator('#toast'), /busy in another call/);
    await waitText(bob.locator('#toast'), /Missed call from .* \(you were in a call\)/);
    expect(await bob.locator('#call').getAttribute('data-pc')).toBe('connected');

    // 4. Bob's page goes away: Alice's call ends by itself.
    await bob.close();
    await callState(alice, 'idle');
    await waitText(alice.locator('#toast'), /left the call|hung up/);

    // 5. And the other way round: Bob, back on a new page, takes Alice's call; her page goes away.
    const bob2 = await newPage(errors);
    await login(bob2, srv, 'ca-bob', 'Bob');
    await call.click();
    await callState(bob2, 'ringing');
    await bob2.getByRole('button', { name: 'Accept' }).click();
    for (const p of [alice, bob2]) await p.locator('#call[data-pc="connected"]').waitFor({ state: 'attached' });
    await alice.close();
    await callState(bob2, 'idle');
    await waitText(bob2.locator('#toast'), /left the call|hung up/);
    expect(errors).toEqual([]);
  });
});

describe('keyboard, screen readers and phones', () => {
  it('moves through rooms and messages with the keyboard; every control has a name; a 390 px layout shows the list or the room', async () => {
    const errors: string[] = [];
    const page = await newPage(errors);
    await login(page, srv, 'kb-gina', 'Gina');
    {
      await using api = clientFor(srv.url, 'kb-hal');
      for (const name of ['Kb one', 'Kb two']) {
        const room = await api.trpc.room.create.mutate({ kind: 'group', name, memberIds: ['kb-gina'] });
        for (const body of ['first', 'second', 'third']) await api.trpc.chat.send.mutate({ roomId: room.id, clientId: uuid(), body: `${name}: ${body}` });
      }
    }
    await roomItem(page, 'Kb one').waitFor();
    await roomItem(page, 'Kb two').waitFor();
    const active = () => page.evaluate<string | null>(`document.activeElement?.getAttribute('data-room-name') ?? document.activeElement?.querySelector('.body')?.textContent ?? document.activeElement?.id ?? null`);
    // The room list is one tab stop; arrows move, Enter opens.
    await page.locator('#room-list .room-item').first().focus();
    const first = await active();
    await page.keyboard.press('ArrowDown');
    const second = await active();
    expect(second).not.toBe(first);
    expect(['Kb one', 'Kb two']).toContain(second);
    await page.keyboard.press('ArrowUp');
    expect(await active()).toBe(first);
    await page.keyboard.press('End');
    expect(await active()).toBe(second);
    await page.keyboard.press('Enter');
    await waitText(page.locator('#room-title'), new RegExp(`^${second}$`));
    expect(await roomItem(page, second!).getAttribute('aria-current')).toBe('page');
    // Messages: from the list, ArrowUp goes to the newest, arrows move between them.
    await message(page, `${second}: third`).waitFor();
    await page.locator('#messages').focus();
    await page.keyboard.press('ArrowUp');
    expect(await active()).toBe(`${second}: third`);
    await page.keyboard.press('ArrowUp');
    expect(await active()).toBe(`${second}: second`);
    await page.keyboard.press('Home');
    await page.keyboard.press('End');
    expect(await active()).toBe(`${second}: third`);
    // Enter on a message opens its thread; Escape closes it.
    await page.keyboard.press('Enter');
    await page.locator('#thread-panel:not([hidden])').waitFor();
    await waitText(page.locator('#thread-root .body'), `${second}: third`);
    await pagePoll(page, `document.activeElement?.id === 'thread-input'`, 'the thread composer focused');
    await page.keyboard.press('Escape');
    await page.locator('#thread-panel[hidden]').waitFor({ state: 'attached' });

    // Names for screen readers: landmarks and every visible control.
    await page.getByRole('searchbox', { name: 'Search messages' }).waitFor();
    await page.getByRole('textbox', { name: 'Message', exact: true }).waitFor();
    await page.getByRole('log', { name: 'Messages' }).waitFor();
    await page.getByRole('link', { name: `Room ${second}` }).waitFor();
    const unnamed = await page.evaluate<string[]>(`(() => {
      const out = [];
      for (const el of document.querySelectorAll('input, select, button, textarea')) {
        if (!el.offsetParent || el.type === 'hidden' || el.type === 'file') continue;
        const named = el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || (el.labels && el.labels.length) || (el.tagName === 'BUTTON' && el.textContent.trim());
        if (!named) out.push(el.outerHTML.slice(0, 120));
      }
      return out;
    })()`);
    expect(unnamed).toEqual([]);

    // A phone: the list alone, then the room alone with a way back; nothing wider than the screen.
    const phone = await newPage(errors, { width: 390, height: 844 });
    await login(phone, srv, 'kb-gina', 'Gina');
    const visible = (sel: string) => phone.locator(sel).isVisible();
    await roomItem(phone, 'Kb one').waitFor();
    expect(await visible('.sidebar')).toBe(true);
    expect(await visible('main.room')).toBe(false);
    await openRoom(phone, 'Kb one');
    await message(phone, 'Kb one: third').waitFor();
    expect(await visible('.sidebar')).toBe(false);
    expect(await visible('#composer-input')).toBe(true);
    // The room's notification level stays in its header on a phone.
    expect(await visible('#room-notify')).toBe(true);
    expect(await phone.locator('#room-notify').inputValue()).toBe('mentions');
    const width = () => phone.evaluate<number>('document.documentElement.scrollWidth');
    expect(await width()).toBeLessThanOrEqual(390);
    await phone.locator('#composer-input').fill('On my phone');
    await phone.locator('#composer-input').press('Enter');
    await message(phone, 'On my phone').waitFor();
    await phone.locator('#composer-input').fill('Looks good here too');
    // No hover effects in the picture: the pointer rests on empty space.
    await phone.mouse.move(380, 600);
    mkdirSync(dirname(PHONE_SHOT), { recursive: true });
    await phone.screenshot({ path: PHONE_SHOT });
    await phone.getByRole('button', { name: 'Back to rooms' }).click();
    await phone.locator('.sidebar').waitFor();
    expect(await visible('main.room')).toBe(false);
    expect(await width()).toBeLessThanOrEqual(390);
    expect(errors).toEqual([]);
  });
});
