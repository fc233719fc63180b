/** The notification variables: all-or-none groups, shapes, defaults (src/config/notify.ts). */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, generateVapidKeys, loadConfig } from './fixture.js';

describe('notification config', () => {
  const keys = generateVapidKeys();
  it('off by default, with the documented defaults', () => {
    expect(loadConfig({}).notify).toEqual({
      vapid: null,
      allowPrivateUrls: false,
      pushTtlSeconds: 86_400,
      pushTimeoutMs: 10_000,
      coalesceMs: 30_000,
      pollMs: 1000,
      retryBaseMs: 5000,
      maxAttempts: 10,
      smtp: null,
      digestDelayMs: 900_000,
      publicAppUrl: null,
    });
  });

  it('web push needs all three VAPID variables; e-mail needs SMTP_URL and MAIL_FROM', () => {
    const vapid = { VAPID_PUBLIC_KEY: keys.publicKey, VAPID_PRIVATE_KEY: keys.privateKey, VAPID_SUBJECT: 'mailto:ops@example.com' };
    expect(loadConfig(vapid).notify.vapid).toEqual({ publicKey: keys.publicKey, privateKey: keys.privateKey, subject: 'mailto:ops@example.com' });
    expect(() => loadConfig({ VAPID_PUBLIC_KEY: keys.publicKey })).toThrow(ConfigError);
    expect(() => loadConfig({ VAPID_PUBLIC_KEY: keys.publicKey })).toThrow(/VAPID_PRIVATE_KEY and VAPID_SUBJECT/);
    expect(() => loadConfig({ ...vapid, VAPID_SUBJECT: 'ops@example.com' })).toThrow(/mailto: address or an https: URL/);
    expect(() => loadConfig({ ...vapid, VAPID_PUBLIC_KEY: 'short' })).toThrow(/npm run vapid/);
    expect(loadConfig({ SMTP_URL: 'smtp://u:p@mail.example.com:587', MAIL_FROM: 'Chat <chat@example.com>' }).notify.smtp).toEqual({
      url: 'smtp://u:p@mail.example.com:587',
      from: 'Chat <chat@example.com>',
    });
    expect(() => loadConfig({ SMTP_URL: 'smtp://mail.example.com' })).toThrow(/SMTP_URL and MAIL_FROM/);
    expect(() => loadConfig({ SMTP_URL: 'http://mail.example.com', MAIL_FROM: 'x@example.com' })).toThrow(/smtp:\/\/ or smtps:\/\//);
    expect(loadConfig({ PUBLIC_APP_URL: 'https://chat.example.com/' }).notify.publicAppUrl).toBe('https://chat.example.com');
    expect(loadConfig({ VAPID_PUBLIC_KEY: '', SMTP_URL: '' }).notify.vapid).toBeNull();
  });

  it('`npm run vapid` prints a key pair the config takes as it is', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['scripts/vapid.mjs']);
    const vars = Object.fromEntries(
      stdout
        .split('\n')
        .map((l) => /^(VAPID_[A-Z_]+)=(\S+)/.exec(l))
        .filter((m) => m !== null)
        .map((m) => [m[1]!, m[2]!]),
    );
    expect(Object.keys(vars).sort()).toEqual(['VAPID_PRIVATE_KEY', 'VAPID_PUBLIC_KEY', 'VAPID_SUBJECT']);
    expect(loadConfig(vars).notify.vapid).toEqual({ publicKey: vars.VAPID_PUBLIC_KEY, privateKey: vars.VAPID_PRIVATE_KEY, subject: 'mailto:ops@example.com' });
    // A new pair each time.
    const again = await promisify(execFile)(process.execPath, ['scripts/vapid.mjs']);
    expect(again.stdout).not.toContain(vars.VAPID_PRIVATE_KEY!);
  });
});
