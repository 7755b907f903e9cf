// The PROXY v2 header the agent writes before a TCP route's first byte, checked byte by byte against
// the layout in HAProxy's proxy-protocol.txt §2.2, and the tcp stream kind's metadata check.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseTcpStreamMeta } from '../../src/proxy/meta.js';
import { encodeProxyV2, PROXY_V2_SIGNATURE } from '../../src/proxy/proxy-protocol.js';

describe('encodeProxyV2', () => {
  it('writes PROXY over TCP4 with both addresses and ports', () => {
    const header = encodeProxyV2({
      sourceAddress: '203.0.113.7',
      sourcePort: 51000,
      destinationAddress: '10.0.0.1',
      destinationPort: 15432,
    });
    assert.equal(header.length, 28);
    assert.deepEqual(header.subarray(0, 12), PROXY_V2_SIGNATURE);
    assert.equal(header[12], 0x21);
    assert.equal(header[13], 0x11);
    assert.equal(header.readUInt16BE(14), 12);
    assert.deepEqual([...header.subarray(16, 20)], [203, 0, 113, 7]);
    assert.deepEqual([...header.subarray(20, 24)], [10, 0, 0, 1]);
    assert.equal(header.readUInt16BE(24), 51000);
    assert.equal(header.readUInt16BE(26), 15432);
  });

  it('reads IPv4-mapped IPv6 addresses as IPv4', () => {
    const header = encodeProxyV2({
      sourceAddress: '::ffff:127.0.0.1',
      sourcePort: 1,
      destinationAddress: '127.0.0.1',
      destinationPort: 2,
    });
    assert.equal(header[13], 0x11);
    assert.deepEqual([...header.subarray(16, 20)], [127, 0, 0, 1]);
  });

  it('writes PROXY over TCP6 with 16-byte addresses', () => {
    const header = encodeProxyV2({
      sourceAddress: '2001:db8::1',
      sourcePort: 443,
      destinationAddress: '::1',
      destinationPort: 8443,
    });
    assert.equal(header.length, 52);
    assert.equal(header[12], 0x21);
    assert.equal(header[13], 0x21);
    assert.equal(header.readUInt16BE(14), 36);
    assert.equal(header.subarray(16, 32).toString('hex'), '20010db8000000000000000000000001');
    assert.equal(header.subarray(32, 48).toString('hex'), '00000000000000000000000000000001');
    assert.equal(header.readUInt16BE(48), 443);
    assert.equal(header.readUInt16BE(50), 8443);
  });

  it('writes LOCAL when the addresses are unknown or of two families', () => {
    for (const endpoints of [
      undefined,
      { sourceAddress: '2001:db8::1', sourcePort: 1, destinationAddress: '10.0.0.1', destinationPort: 2 },
    ]) {
      const header = encodeProxyV2(endpoints);
      assert.equal(header.length, 16);
      assert.deepEqual(header.subarray(0, 12), PROXY_V2_SIGNATURE);
      assert.equal(header[12], 0x20);
      assert.equal(header[13], 0x00);
      assert.equal(header.readUInt16BE(14), 0);
    }
  });
});

describe('parseTcpStreamMeta', () => {
  const good = { kind: 'tcp', target: 'tcp://db.shop.svc:5432', client: '203.0.113.7', requestId: 'r1' };

  it('accepts a tcp stream, with and without PROXY v2 addresses', () => {
    assert.equal(parseTcpStreamMeta(good).ok, true);
    const addresses = { clientAddress: '203.0.113.7', clientPort: 5, listenAddress: '::1', listenPort: 6 };
    assert.equal(parseTcpStreamMeta({ ...good, proxyProtocol: 'v2', addresses }).ok, true);
  });

  it('refuses what a hostile controller could send, naming the field', () => {
    const cases: [unknown, string][] = [
      [null, '(root)'],
      [{ ...good, head: {} }, 'head'],
      [{ ...good, kind: 'http' }, 'kind'],
      [{ ...good, target: 'http://db:5432' }, 'target'],
      [{ ...good, client: 7 }, 'client'],
      [{ ...good, proxyProtocol: 'v1' }, 'proxyProtocol'],
      [{ ...good, addresses: {} }, 'addresses'],
      [{ ...good, proxyProtocol: 'v2', addresses: { clientAddress: 'x' } }, 'addresses.clientAddress'],
      [
        {
          ...good,
          proxyProtocol: 'v2',
          addresses: { clientAddress: '::1', clientPort: 70000, listenAddress: '::1', listenPort: 1 },
        },
        'addresses.clientPort',
      ],
    ];
    for (const [meta, field] of cases) {
      const result = parseTcpStreamMeta(meta);
      assert.equal(result.ok, false, JSON.stringify(meta));
      if (!result.ok) assert.match(result.reason, new RegExp(field.replace(/[.()]/g, '\\$&')));
    }
  });
});
