/**
 * The client's address behind proxies (TRUST_PROXY = trusted hops): the entries a client writes
 * into X-Forwarded-For itself are never believed; each trusted proxy's appended entry is.
 */
import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { addressKey, clientAddress, loadConfig } from './fixture.js';

const req = (peer: string, xff?: string | string[]) => ({ socket: { remoteAddress: peer }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } }) as unknown as IncomingMessage;

describe('clientAddress', () => {
  it('without trusted proxies: the TCP peer, whatever the header says', () => {
    expect(clientAddress(req('10.0.0.2', '6.6.6.6'), 0)).toBe('10.0.0.2');
  });

  it('behind one proxy (nginx appends the address it saw): the right-most entry, not a spoofed first one', () => {
    expect(clientAddress(req('10.0.0.2', '6.6.6.6, 1.2.3.4'), 1)).toBe('1.2.3.4');
    expect(clientAddress(req('10.0.0.2', '1.2.3.4'), 1)).toBe('1.2.3.4');
    // Several header lines count as one list.
    expect(clientAddress(req('10.0.0.2', ['6.6.6.6', '1.2.3.4']), 1)).toBe('1.2.3.4');
    // No header (a request that reached the node past the proxy): the peer.
    expect(clientAddress(req('10.0.0.2'), 1)).toBe('10.0.0.2');
  });

  it('a proxy that appends the port too (`192.0.2.7:51234`, `[2001:db8::1]:443`): the address without it, so each socket of a client is not another client', () => {
    expect(clientAddress(req('10.0.0.2', '6.6.6.6, 192.0.2.7:51234'), 1)).toBe('192.0.2.7');
    expect(clientAddress(req('10.0.0.2', '[2001:db8:1:2::a]:443'), 1)).toBe('2001:db8:1:2::a');
    expect(clientAddress(req('10.0.0.2', '[2001:db8:1:2::a]'), 1)).toBe('2001:db8:1:2::a');
    expect(clientAddress(req('10.0.0.2', '2001:db8:1:2::a'), 1)).toBe('2001:db8:1:2::a');
    expect(addressKey(clientAddress(req('10.0.0.2', '192.0.2.7:1001'), 1))).toBe(addressKey(clientAddress(req('10.0.0.2', '192.0.2.7:1002'), 1)));
  });

  it('behind two proxies: the entry two from the right; fewer entries than hops: the left-most', () => {
    expect(clientAddress(req('10.0.0.3', '6.6.6.6, 1.2.3.4, 10.0.0.2'), 2)).toBe('1.2.3.4');
    expect(clientAddress(req('10.0.0.3', '1.2.3.4'), 2)).toBe('1.2.3.4');
  });

  it('TRUST_PROXY is a hop count; on/off as 1/0; anything else is refused', () => {
    expect(loadConfig({ TRUST_PROXY: '2' }).trustProxy).toBe(2);
    expect(loadConfig({ TRUST_PROXY: 'on' }).trustProxy).toBe(1);
    expect(loadConfig({ TRUST_PROXY: 'off' }).trustProxy).toBe(0);
    expect(loadConfig({}).trustProxy).toBe(0);
    expect(() => loadConfig({ TRUST_PROXY: 'nginx' })).toThrow(/TRUST_PROXY is the number of proxies/);
  });

  it('the key of the per-address limits: an IPv6 address by its /64, an IPv4-mapped one as IPv4', () => {
    for (const [address, key] of [
      ['10.1.2.3', '10.1.2.3'],
      ['::ffff:10.1.2.3', '10.1.2.3'],
      ['::FFFF:10.1.2.3', '10.1.2.3'],
      ['2001:db8:1:2::a', '2001:db8:1:2::/64'],
      ['2001:0db8:0001:0002:ffff:ffff:ffff:ffff', '2001:db8:1:2::/64'],
      ['2001:DB8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
      ['2001:db8::1', '2001:db8:0:0::/64'],
      ['fe80::1:2:3:4', 'fe80:0:0:0::/64'],
      ['::1', '0:0:0:0::/64'],
      ['unknown', 'unknown'],
    ] as const) {
      expect(addressKey(address), address).toBe(key);
    }
    expect(addressKey('2001:db8:1:3::a')).not.toBe(addressKey('2001:db8:1:2::a'));
  });
});
