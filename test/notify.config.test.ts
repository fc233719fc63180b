/** The notification variables: all-or-none groups, shapes, defaults (src/config/notify.ts). */
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
});
