/** RTC_ICE_SERVERS (src/config/rtc.ts) and `signal.config`, which hands the ICE servers to call clients; `video.config`. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { actor, callerFor, ConfigError, dispose, loadConfig, testEnv, type TestEnv } from './fixture.js';

describe('RTC_ICE_SERVERS', () => {
  it('defaults to no ICE servers; takes a JSON array of STUN and TURN servers (urls as a string or a list)', () => {
    expect(loadConfig({}).rtc).toEqual({ iceServers: [] });
    expect(loadConfig({ RTC_ICE_SERVERS: ' ' }).rtc).toEqual({ iceServers: [] });
    const json = JSON.stringify([
      { urls: 'stun:stun.example.com:3478' },
      { urls: ['turn:turn.example.com:3478?transport=udp', 'turns:turn.example.com:5349'], username: 'chat', credential: 's3cret' },
    ]);
    expect(loadConfig({ RTC_ICE_SERVERS: json }).rtc.iceServers).toEqual([
      { urls: ['stun:stun.example.com:3478'] },
      { urls: ['turn:turn.example.com:3478?transport=udp', 'turns:turn.example.com:5349'], username: 'chat', credential: 's3cret' },
    ]);
  });

  it('refuses what a browser would refuse, naming the variable', () => {
    expect(() => loadConfig({ RTC_ICE_SERVERS: '{"urls":' })).toThrow(ConfigError);
    expect(() => loadConfig({ RTC_ICE_SERVERS: '{"urls":' })).toThrow(/RTC_ICE_SERVERS must be JSON/);
    expect(() => loadConfig({ RTC_ICE_SERVERS: '[{"urls":"https://stun.example.com"}]' })).toThrow(/stun:, stuns:, turn: or turns: URL/);
    expect(() => loadConfig({ RTC_ICE_SERVERS: '[{"urls":"turn:turn.example.com"}]' })).toThrow(/TURN server needs username and credential/);
    expect(() => loadConfig({ RTC_ICE_SERVERS: '[{"urls":"stun:a","extra":1}]' })).toThrow(/invalid RTC_ICE_SERVERS/);
  });
});

describe('signal.config', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await testEnv('rtc');
  });
  afterAll(() => dispose(env));

  it('answers the configured ICE servers to every signed-in user, and none by default', async () => {
    const plain = await env.startServer();
    expect(await callerFor(plain.app, actor('rtc-a')).signal.config()).toEqual({ iceServers: [] });
    const iceServers = [{ urls: ['turn:turn.example.com:3478'], username: 'u', credential: 'c' }];
    const withTurn = await env.startServer({ rtc: { iceServers } });
    expect(await callerFor(withTurn.app, actor('rtc-b')).signal.config()).toEqual({ iceServers });
  });

  it('video.config says which provider meetings run on, or why there is none, without failing', async () => {
    const plain = await env.startServer();
    const answer = await callerFor(plain.app, actor('rtc-c')).video.config();
    expect(answer.provider).toBeNull();
    expect(answer.unavailableReason).toMatch(/^video is not configured on this server: set VIDEO_PROVIDER=livekit/);
  });
});
