/**
 * The browser chat page (web/) against data other users control and what it leaves behind: a link
 * attachment of any scheme but https is never a link, an upload is never a script the page could
 * load (files other than inline previews are served as bytes), and logging out takes the browser's
 * push registration off the server. Chromium driven by playwright-core as in test/web.e2e.test.ts.
 */
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWebPage, logIn, TestBrowser } from './fixture/browser.js';
import { clientFor, dispose, generateVapidKeys, pushService, testEnv, waitFor, type PushService, type TestEnv, type TestServer } from './fixture.js';

const WAIT = 10_000;
let env: TestEnv;
let srv: TestServer;
let browser: TestBrowser;

beforeAll(async () => {
  buildWebPage();
  env = await testEnv('web-security');
  srv = await env.startServer();
  browser = await TestBrowser.launch();
});

afterAll(() => dispose(env, browser));

/** A fresh context and page (`init`: a script run before the page's own). */
const newPage = (errors: string[], init?: string) => browser.newPage(errors, { timeoutMs: WAIT, viewport: { width: 1180, height: 760 }, initScript: init });

const roomItem = (page: Page, name: string) => page.locator(`#room-list .room-item[data-room-name="${name}"]`);

describe('the web page and data it must not trust', () => {
  it('a link attachment stored before the https-only rule (any scheme) is shown as its name, never as a javascript: link', async () => {
    const errors: string[] = [];
    await using mallory = clientFor(srv.url, 'rw-mallory');
    const room = await mallory.trpc.room.create.mutate({ kind: 'group', name: 'Legacy links', memberIds: ['rw-alice'] });
    const sent = await mallory.trpc.chat.send.mutate({
      roomId: room.id,
      clientId: crypto.randomUUID(),
      body: 'the report',
      attachments: [{ url: 'https://example.com/report.pdf', name: 'report.pdf' }],
    });
    // What a version before a599e41 stored for `{ url: 'javascript:…' }` (its schema was z.url(), which
    // accepts any scheme): nothing migrated or sanitised such rows when the https-only rule came.
    await env.sql(`update message set attachments = $1::jsonb where id = $2`, [
      JSON.stringify([{ url: 'javascript:window.__pwned=1', name: 'report.pdf', size: 10, mime: 'application/pdf' }]),
      sent.id,
    ]);
    const { page } = await newPage(errors);
    await logIn(page, srv.url, 'rw-alice');
    await roomItem(page, 'Legacy links').click();
    const shown = page.locator('#messages .msg[data-seq] .file-card.link');
    await shown.waitFor();
    expect(
      await page.evaluate<{ tag: string; text: string; href: string | null }>(
        `(() => { const el = document.querySelector('#messages .msg[data-seq] .file-card.link'); return { tag: el.tagName, text: el.textContent, href: el.getAttribute('href') }; })()`,
      ),
    ).toEqual({ tag: 'SPAN', text: 'report.pdf', href: null });
    expect(await page.locator('a[href^="javascript:" i]').count()).toBe(0);
    expect(errors).toEqual([]);
  });

  it('a script another user uploaded to /files/ cannot run as a script of the page (served as bytes), as an inline one cannot (CSP)', async () => {
    const errors: string[] = [];
    await using bob = clientFor(srv.url, 'rw-bob');
    await using alice = clientFor(srv.url, 'rw-carol');
    const room = await bob.trpc.room.create.mutate({ kind: 'group', name: 'Scripts', memberIds: ['rw-carol'] });
    const file = await bob.uploadFile(room.id, new Blob(['window.__ownedBy = "rw-bob";']), { name: 'notes.js', mime: 'text/javascript' });
    await bob.trpc.chat.send.mutate({ roomId: room.id, clientId: crypto.randomUUID(), body: 'see file', attachments: [{ fileId: file.fileId }] });
    const info = await alice.trpc.file.get.query({ fileId: file.fileId });
    expect(info.mime).toBe('text/javascript');
    const url = alice.resolveUrl(info.url);
    expect(new URL(url).origin, 'the default (local) driver serves files on the page origin').toBe(new URL(srv.url).origin);

    const { page } = await newPage(errors);
    await logIn(page, srv.url, 'rw-carol');
    // Stands for any markup injection into the page: an inline script is blocked by the CSP ...
    const inline = await page.evaluate<string>(`new Promise((resolve) => {
      document.addEventListener('securitypolicyviolation', (e) => resolve('blocked: ' + e.violatedDirective), { once: true });
      const s = document.createElement('script');
      s.textContent = 'window.__inline = 1';
      document.body.append(s);
      setTimeout(() => resolve(window.__inline ? 'ran' : 'not run'), 2000);
    })`);
    expect(inline).toMatch(/^blocked: script-src/);
    // ... but a script element naming the other user's upload runs: 'self' covers /files/.
    const loaded = await page.evaluate<string>(`new Promise((resolve) => {
      const s = document.createElement('script');
      s.src = ${JSON.stringify(url)};
      s.onload = () => resolve('load');
      s.onerror = () => resolve('error');
      document.addEventListener('securitypolicyviolation', () => resolve('blocked'), { once: true });
      document.body.append(s);
    })`);
    const owned = await page.evaluate<string | null>('window.__ownedBy ?? null');
    expect({ loaded, owned }, 'a user upload must not be executable as a script of the page').toEqual({ loaded: expect.not.stringMatching(/^load$/), owned: null });
  });

  it('a revoked session (4003) takes the page back to the login form with the reason: no page left open that can neither send nor receive', async () => {
    const errors: string[] = [];
    await using admin = clientFor(srv.url, 'rw-admin', { roles: ['admin'] });
    await using kim = clientFor(srv.url, 'rw-kim');
    await kim.trpc.room.create.mutate({ kind: 'group', name: 'Revoked', memberIds: ['rw-lea'] });
    const { page } = await newPage(errors);
    await logIn(page, srv.url, 'rw-lea');
    await roomItem(page, 'Revoked').click();
    await page.locator('#composer:not([hidden])').waitFor();

    // An admin ends every session of the user (a lost laptop): the server closes her socket with 4003.
    await admin.trpc.auth.revoke.mutate({ userId: 'rw-lea' });
    await page.locator('#login:not([hidden])').waitFor();
    await waitFor(() => page.evaluate<string | null>(`localStorage.getItem('chat.session')`), 'revoked session forgotten', { until: (s) => s === null });
    expect(await page.locator('#login-error').textContent()).toMatch(/session .*ended/i);
    expect(await page.locator('#app').isHidden()).toBe(true);
    expect(errors).toEqual([]);
  });

  it('"Log out" takes the browser\'s push registration off the server and unsubscribes it: the next direct message is not pushed to the logged-out browser', async () => {
    const vapid = { ...generateVapidKeys(), subject: 'mailto:ops@example.com' };
    const ps: PushService = await pushService(vapid.publicKey);
    try {
      await using pushSrv = await env.startServer({ notify: { ...srv.config.notify, vapid, allowPrivateUrls: true, pollMs: 50 } });
      const sub = ps.subscribe();
      const browserSub = { endpoint: sub.endpoint, keys: sub.keys };
      const errors: string[] = [];
      const { ctx, page } = await newPage(
        errors,
        `(() => {
          const sub = ${JSON.stringify(browserSub)};
          const fake = { endpoint: sub.endpoint, toJSON: () => sub };
          PushManager.prototype.subscribe = async function () { window.pushSubscribed = 1; return fake; };
          PushManager.prototype.getSubscription = async function () { return window.pushSubscribed ? fake : null; };
          fake.unsubscribe = async () => { window.pushSubscribed = 0; return true; };
        })()`,
      );
      await logIn(page, pushSrv.url, 'rw-hana');
      await page.locator('#enable-push[data-push="ready"]').waitFor();
      await ctx.grantPermissions(['notifications'], { origin: pushSrv.url });
      await page.locator('#enable-push').click();
      await page.locator('#enable-push', { hasText: 'Notifications on' }).waitFor();
      const devices = () => env.sql<{ endpoint: string }>(`select endpoint from push_device where user_id = 'rw-hana'`);
      expect((await devices()).map((d) => d.endpoint)).toEqual([sub.endpoint]);

      // Hana logs out (a shared computer): the page forgets her token and this browser's push registration.
      await page.locator('#logout').click();
      await page.locator('#login:not([hidden])').waitFor();
      await waitFor(() => page.evaluate<string | null>(`localStorage.getItem('chat.session')`), 'session forgotten', { until: (s) => s === null });
      expect(await page.evaluate('window.pushSubscribed')).toBe(0);

      await using ivo = clientFor(pushSrv.url, 'rw-ivo');
      const dm = await ivo.trpc.room.openDirect.mutate({ userId: 'rw-hana' });
      await ivo.trpc.chat.send.mutate({ roomId: dm.id, clientId: crypto.randomUUID(), body: 'salary review: yours is 87k' });
      // Either the push reaches this browser's endpoint, or (the device gone) the queue is handled without one.
      const pushed = await waitFor(
        async () => {
          const p = ps.received.items.find((r) => r.device === sub.device);
          if (p) return p.payload;
          const q = await env.sql<{ n: number }>(`select count(*)::int as n from notify_push where user_id = 'rw-hana' and pending > 0`);
          const d = await devices();
          return q[0]!.n === 0 && d.length === 0 ? null : undefined;
        },
        'the push sent or dropped',
        { until: (v) => v !== undefined, timeoutMs: WAIT },
      );
      expect({ devicesAfterLogout: (await devices()).length, pushed }, 'after logout this browser must get no more of her notifications').toEqual({ devicesAfterLogout: 0, pushed: null });
    } finally {
      await ps[Symbol.asyncDispose]();
    }
  });
});
