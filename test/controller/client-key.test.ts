// The key a client's requests are counted under for http.maxRequestsPerClient: IPv4 per address, IPv6
// per /64, whatever form the address was written in.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clientKey } from '../../src/controller/edge.js';

test('an IPv4 address is its own key', () => {
  assert.equal(clientKey('203.0.113.7'), '203.0.113.7');
  assert.notEqual(clientKey('203.0.113.7'), clientKey('203.0.113.8'));
});

test('IPv6 addresses of one /64 share a key, in every written form', () => {
  const key = '2001:db8:0:1::/64';
  for (const address of [
    '2001:db8:0:1::1',
    '2001:db8:0:1:ffff:ffff:ffff:ffff',
    '2001:0db8:0000:0001:0000:0000:0000:0002',
    '2001:DB8:0:1:a:b:c:d',
    '2001:db8::1:0:0:0:9',
    '2001:db8:0:1::5%eth0',
    '2001:db8:0:1::192.0.2.1',
  ]) {
    assert.equal(clientKey(address), key, address);
  }
});

test('IPv6 addresses of different /64s have different keys', () => {
  assert.notEqual(clientKey('2001:db8:0:1::1'), clientKey('2001:db8:0:2::1'));
  assert.equal(clientKey('::1'), '0:0:0:0::/64');
  assert.equal(clientKey('::'), '0:0:0:0::/64');
  assert.equal(clientKey('fe80::1'), 'fe80:0:0:0::/64');
  assert.equal(clientKey('2001:db8::'), '2001:db8:0:0::/64');
});

test('what is not an address is its own key', () => {
  for (const value of ['', 'unknown', '2001:db8::g', '1:2:3:4:5:6:7:8:9'])
    assert.equal(clientKey(value), value);
});
