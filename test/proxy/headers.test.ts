// The proxy edge's header rules (RFC 9110 §7.6.1 hop-by-hop, §7.6.3 Via, RFC 7239 Forwarded), each
// pinned with the exact raw header list that comes out. Inputs are frozen, so any mutation throws.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  chooseRequestId,
  clientAddress,
  type ForwardContext,
  forwardRequestHeaders,
  forwardResponseHeaders,
  type ResponseContext,
  stripHopByHop,
  trustedProxyCheck,
} from '../../src/proxy/headers.js';

const CTX: ForwardContext = {
  clientAddress: '203.0.113.7',
  trustedPeer: false,
  forwarded: true,
  proto: 'https',
  host: 'app.example.com',
  requestId: 'req-1',
  via: 'sluice',
  httpVersion: '1.1',
  upgrade: false,
};

const RESPONSE_CTX: ResponseContext = {
  via: 'sluice',
  requestId: 'req-1',
  httpVersion: '1.1',
  upgrade: false,
};

function frozen(...raw: string[]): readonly string[] {
  return Object.freeze(raw);
}

function strip(raw: readonly string[], keepUpgrade = false): string[] {
  return stripHopByHop(raw, { keepUpgrade });
}

function forward(raw: readonly string[], ctx: Partial<ForwardContext> = {}): string[] {
  return forwardRequestHeaders(raw, { ...CTX, ...ctx }).headers;
}

function isLoop(raw: readonly string[], via = 'sluice'): boolean {
  return forwardRequestHeaders(raw, { ...CTX, via }).loop;
}

/** The fields forwardRequestHeaders appends for CTX, after the client's own. */
function added(forwardedFor = '203.0.113.7'): string[] {
  return [
    'X-Forwarded-For',
    forwardedFor,
    'X-Forwarded-Proto',
    'https',
    'X-Forwarded-Host',
    'app.example.com',
    'Forwarded',
    'for=203.0.113.7;host=app.example.com;proto=https',
    'Via',
    '1.1 sluice',
    'X-Request-Id',
    'req-1',
  ];
}

/** The value of the single field called `name` in a raw list. */
function only(raw: readonly string[], name: string): string {
  const values = raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === name.toLowerCase());
  assert.equal(values.length, 1, `expected one ${name}, got ${values.length}`);
  return values[0]!;
}

describe('stripHopByHop', () => {
  test('removes the fixed hop-by-hop fields in any case and keeps end-to-end ones', () => {
    const raw = frozen(
      'Host',
      'app.example.com',
      'CONNECTION',
      'keep-alive',
      'keep-alive',
      'timeout=5',
      'Proxy-Connection',
      'keep-alive',
      'te',
      'trailers',
      'Upgrade',
      'h2c',
      'Proxy-Authorization',
      'Basic Zm9vOmJhcg==',
      'proxy-authenticate',
      'Basic realm="x"',
      'Trailer',
      'Expires',
      'Content-Length',
      '3',
      'Accept',
      '*/*',
    );
    assert.deepEqual(strip(raw), [
      'Host',
      'app.example.com',
      'Trailer',
      'Expires',
      'Content-Length',
      '3',
      'Accept',
      '*/*',
    ]);
  });

  test('removes every field a Connection header names, across repeated Connection headers', () => {
    const raw = frozen(
      'Connection',
      'close, X-Foo',
      'X-Foo',
      'a',
      'x-bar',
      'b',
      'connection',
      ' , X-BAR ,,\tx-baz ',
      'X-BAZ',
      'c',
      'X-Foo',
      'd',
      'X-Fooo',
      'kept',
      'Accept',
      '*/*',
    );
    assert.deepEqual(strip(raw), ['X-Fooo', 'kept', 'Accept', '*/*']);
  });

  test('Connection: close, X-Foo removes X-Foo', () => {
    assert.deepEqual(strip(frozen('Connection', 'close, X-Foo', 'x-foo', '1', 'X-Other', '2')), [
      'X-Other',
      '2',
    ]);
  });

  test('a Connection naming Host, Content-Length or Transfer-Encoding removes none of them', () => {
    const raw = frozen(
      'Host',
      'app.example.com',
      'Connection',
      'HOST, content-length, Transfer-Encoding, X-Hop',
      'Content-Length',
      '5',
      'X-Hop',
      '1',
    );
    assert.deepEqual(strip(raw), ['Host', 'app.example.com', 'Content-Length', '5']);
    const chunked = frozen('Connection', 'transfer-encoding', 'Transfer-Encoding', 'chunked', 'Host', 'a');
    assert.deepEqual(strip(chunked), ['Host', 'a'], 'Transfer-Encoding is redone on every hop anyway');
  });

  test('HTTP2-Settings is hop-by-hop (RFC 9113 §3.2.1), even when Connection does not name it', () => {
    const raw = frozen('HTTP2-Settings', 'AAMAAABkAAQAAP__', 'Upgrade', 'h2c', 'Accept', '*/*');
    assert.deepEqual(strip(raw), ['Accept', '*/*']);
  });

  test('Transfer-Encoding goes, and takes a conflicting Content-Length with it (RFC 9112 §6.3)', () => {
    const raw = frozen('Transfer-Encoding', 'chunked', 'content-length', '10', 'Accept', '*/*');
    assert.deepEqual(strip(raw), ['Accept', '*/*']);
    assert.deepEqual(strip(frozen('Content-Length', '10')), ['Content-Length', '10']);
  });

  test('without keepUpgrade, Upgrade is removed', () => {
    const raw = frozen('Connection', 'Upgrade', 'Upgrade', 'websocket', 'Sec-WebSocket-Key', 'k');
    assert.deepEqual(strip(raw), ['Sec-WebSocket-Key', 'k']);
  });

  test('with keepUpgrade, the output has the original Upgrade and exactly Connection: upgrade', () => {
    const raw = frozen(
      'Connection',
      'keep-alive, Upgrade, X-Hop',
      'connection',
      'UPGRADE',
      'upgrade',
      'WebSocket',
      'X-Hop',
      'h',
      'Keep-Alive',
      'timeout=5',
      'Sec-WebSocket-Key',
      'k',
    );
    assert.deepEqual(strip(raw, true), [
      'upgrade',
      'WebSocket',
      'Sec-WebSocket-Key',
      'k',
      'Connection',
      'upgrade',
    ]);
  });

  test('with keepUpgrade but no Upgrade field, no Connection is invented', () => {
    assert.deepEqual(strip(frozen('Connection', 'upgrade', 'Accept', '*/*'), true), ['Accept', '*/*']);
  });

  test('drops values with CR, LF or NUL, names that are not tokens, and a dangling name', () => {
    const raw = frozen(
      'X-Cr',
      'a\rb',
      'X-Lf',
      'a\nb',
      'X-Fold',
      'a\r\n b',
      'X-Nul',
      'a\0b',
      ':authority',
      'app.example.com',
      'Bad Name',
      'v',
      'X-Ok',
      'a\tb',
      'X-Dangling',
    );
    assert.deepEqual(strip(raw), ['X-Ok', 'a\tb']);
  });

  test('does not mutate its input', () => {
    const raw = ['Connection', 'X-Foo', 'X-Foo', '1', 'Upgrade', 'websocket', 'Accept', '*/*'];
    const copy = [...raw];
    strip(raw);
    strip(raw, true);
    assert.deepEqual(raw, copy);
  });
});

describe('forwardRequestHeaders', () => {
  test('keeps the client fields in order and appends this hop', () => {
    const raw = frozen('Host', 'app.example.com', 'User-Agent', 'curl/8', 'Accept', '*/*');
    assert.deepEqual(forwardRequestHeaders(raw, CTX), {
      headers: ['Host', 'app.example.com', 'User-Agent', 'curl/8', 'Accept', '*/*', ...added()],
      loop: false,
    });
  });

  test('strips hop-by-hop fields before adding its own', () => {
    const raw = frozen('Connection', 'close, X-Foo', 'X-Foo', '1', 'TE', 'trailers', 'Accept', '*/*');
    assert.deepEqual(forward(raw), ['Accept', '*/*', ...added()]);
  });

  test('from a trusted proxy, merges repeated X-Forwarded-For into one list and appends the peer', () => {
    const raw = frozen(
      'X-Forwarded-For',
      '198.51.100.1, 198.51.100.2',
      'Accept',
      '*/*',
      'x-forwarded-for',
      ' 2001:db8::9 ,, ',
    );
    assert.deepEqual(forward(raw, { trustedPeer: true }), [
      'Accept',
      '*/*',
      ...added('198.51.100.1, 198.51.100.2, 2001:db8::9, 203.0.113.7'),
    ]);
  });

  test('a Connection naming X-Forwarded-For removes the client list, never the field we add', () => {
    const raw = frozen('Connection', 'X-Forwarded-For, Forwarded, Via', 'X-Forwarded-For', '10.0.0.1');
    assert.deepEqual(forward(raw), added());
    const again = frozen(
      'Connection',
      'x-forwarded-for',
      'Upgrade',
      'websocket',
      'X-Forwarded-For',
      '10.0.0.1',
    );
    assert.deepEqual(forward(again, { upgrade: true }), [
      'Upgrade',
      'websocket',
      'Connection',
      'upgrade',
      ...added(),
    ]);
  });

  test('replaces client X-Forwarded-Proto and X-Forwarded-Host with this hop', () => {
    const raw = frozen('X-Forwarded-Proto', 'https', 'X-FORWARDED-HOST', 'evil.example', 'Accept', '*/*');
    assert.deepEqual(forward(raw, { proto: 'http' }), [
      'Accept',
      '*/*',
      'X-Forwarded-For',
      '203.0.113.7',
      'X-Forwarded-Proto',
      'http',
      'X-Forwarded-Host',
      'app.example.com',
      'Forwarded',
      'for=203.0.113.7;host=app.example.com;proto=http',
      'Via',
      '1.1 sluice',
      'X-Request-Id',
      'req-1',
    ]);
  });

  test('removes spoofed X-Sluice-* fields in any case', () => {
    const raw = frozen(
      'X-Sluice-Cluster',
      'prod',
      'x-sluice-route',
      'r',
      'X-SLUICE-TUNNEL',
      '3',
      'X-Sluicey',
      'kept',
      'Accept',
      '*/*',
    );
    assert.deepEqual(forward(raw), ['X-Sluicey', 'kept', 'Accept', '*/*', ...added()]);
  });

  test('replaces any client X-Request-Id with the chosen one', () => {
    const raw = frozen('X-Request-Id', 'a', 'x-request-id', 'b', 'Accept', '*/*');
    assert.deepEqual(forward(raw), ['Accept', '*/*', ...added()]);
  });

  test("keeps a trusted proxy's Forwarded and any Via, and appends a new field after them", () => {
    const raw = frozen(
      'Forwarded',
      'for=198.51.100.1;proto=http',
      'Via',
      '1.0 fred, 1.1 p.example.net (Apache/1.1)',
      'Accept',
      '*/*',
    );
    assert.deepEqual(forward(raw, { trustedPeer: true }), [
      'Forwarded',
      'for=198.51.100.1;proto=http',
      'Via',
      '1.0 fred, 1.1 p.example.net (Apache/1.1)',
      'Accept',
      '*/*',
      ...added(),
    ]);
  });

  test('drops a Forwarded or Via line left open, which would swallow the element we append', () => {
    const raw = frozen(
      'Forwarded',
      'for="198.51.100.1',
      'Forwarded',
      'for="[2001:db8::1]";host="a,b"',
      'Via',
      '1.1 x (comment, (nested)',
      'Via',
      '1.1 y (a "quote, in (a) comment)',
    );
    assert.deepEqual(forward(raw, { trustedPeer: true }), [
      'Forwarded',
      'for="[2001:db8::1]";host="a,b"',
      'Via',
      '1.1 y (a "quote, in (a) comment)',
      ...added(),
    ]);
  });

  test('from a peer that is not a trusted proxy, every forwarding claim is replaced (Traefik)', () => {
    const raw = frozen(
      'Forwarded',
      'for=6.6.6.6;proto=https',
      'X-Forwarded-For',
      '6.6.6.6',
      'X-Forwarded-Proto',
      'https',
      'x-forwarded-host',
      'evil.example',
      'X-Forwarded-Port',
      '443',
      'X-Forwarded-Prefix',
      '/admin',
      'X-Forwarded-Ssl',
      'on',
      'X-Forwarded-Tls-Client-Cert',
      'MIIB',
      'X-Real-Ip',
      '6.6.6.6',
      'X-Forwardedness',
      'kept',
      'Accept',
      '*/*',
    );
    assert.deepEqual(forward(raw), ['X-Forwardedness', 'kept', 'Accept', '*/*', ...added()]);
  });

  test("from a trusted proxy, its X-Forwarded-Proto and -Host stand and this hop's are not added", () => {
    const raw = frozen(
      'X-Forwarded-For',
      '198.51.100.1',
      'X-Forwarded-Proto',
      'https',
      'X-Forwarded-Host',
      'public.example',
      'X-Forwarded-Port',
      '443',
      'X-Real-Ip',
      '198.51.100.1',
    );
    assert.deepEqual(forward(raw, { trustedPeer: true, proto: 'http' }), [
      'X-Forwarded-Proto',
      'https',
      'X-Forwarded-Host',
      'public.example',
      'X-Forwarded-Port',
      '443',
      'X-Real-Ip',
      '198.51.100.1',
      'X-Forwarded-For',
      '198.51.100.1, 203.0.113.7',
      'Forwarded',
      'for=203.0.113.7;host=app.example.com;proto=http',
      'Via',
      '1.1 sluice',
      'X-Request-Id',
      'req-1',
    ]);
  });

  test('Forwarded is added only when asked for (http.forwarded), as nginx and Traefik do', () => {
    const headers = forward(frozen('Accept', '*/*'), { forwarded: false });
    assert.deepEqual(
      headers,
      ['Accept', '*/*', ...added()].filter((_, i, all) => all[i - (i % 2)] !== 'Forwarded'),
    );
  });

  test('a Trailer field goes on only with a chunked body, the one framing with a trailer section', () => {
    assert.deepEqual(forward(frozen('Trailer', 'X-Sum', 'Accept', '*/*')), ['Accept', '*/*', ...added()]);
    const chunked = frozen('Trailer', 'X-Sum', 'Transfer-Encoding', 'chunked');
    assert.deepEqual(forward(chunked), ['Trailer', 'X-Sum', ...added()]);
  });

  describe('Forwarded (RFC 7239)', () => {
    function forwardedFor(ctx: Partial<ForwardContext>): string {
      return only(forward(frozen(), ctx), 'Forwarded');
    }

    test('an IPv6 client is bracketed and quoted; X-Forwarded-For has it bare', () => {
      const headers = forward(frozen(), { clientAddress: '2001:db8:cafe::17' });
      assert.equal(only(headers, 'Forwarded'), 'for="[2001:db8:cafe::17]";host=app.example.com;proto=https');
      assert.equal(only(headers, 'X-Forwarded-For'), '2001:db8:cafe::17');
    });

    test('a client port is added to the node, which is then quoted', () => {
      assert.equal(
        forwardedFor({ clientAddress: '2001:db8:cafe::17', clientPort: 4711 }),
        'for="[2001:db8:cafe::17]:4711";host=app.example.com;proto=https',
      );
      assert.equal(
        forwardedFor({ clientPort: 47011 }),
        'for="203.0.113.7:47011";host=app.example.com;proto=https',
      );
      assert.equal(forwardedFor({ clientPort: 0 }), 'for=203.0.113.7;host=app.example.com;proto=https');
      assert.equal(forwardedFor({ clientPort: 70000 }), 'for=203.0.113.7;host=app.example.com;proto=https');
    });

    test('an obfuscated identifier is a token; anything else becomes unknown', () => {
      const obfuscated = forward(frozen(), { clientAddress: '_hidden', clientPort: 80 });
      assert.equal(only(obfuscated, 'Forwarded'), 'for="_hidden:80";host=app.example.com;proto=https');
      assert.equal(only(obfuscated, 'X-Forwarded-For'), '_hidden');
      const junk = forward(frozen(), { clientAddress: 'evil"; for=1.2.3.4', clientPort: 80 });
      assert.equal(only(junk, 'Forwarded'), 'for=unknown;host=app.example.com;proto=https');
      assert.equal(only(junk, 'X-Forwarded-For'), 'unknown');
      assert.equal(forwardedFor({ clientAddress: '' }), 'for=unknown;host=app.example.com;proto=https');
    });

    test('a host that is not a token is quoted, with quotes and backslashes escaped', () => {
      assert.equal(
        forwardedFor({ host: 'app.example.com:8443' }),
        'for=203.0.113.7;host="app.example.com:8443";proto=https',
      );
      assert.equal(
        forwardedFor({ host: '[2001:db8::1]:80' }),
        'for=203.0.113.7;host="[2001:db8::1]:80";proto=https',
      );
      assert.equal(forwardedFor({ host: 'a"b\\c' }), 'for=203.0.113.7;host="a\\"b\\\\c";proto=https');
    });

    test('an empty or unquotable host is left out, here and in X-Forwarded-Host', () => {
      for (const host of ['', 'a\r\nb: c']) {
        const headers = forward(frozen(), { host });
        assert.equal(only(headers, 'Forwarded'), 'for=203.0.113.7;proto=https');
        assert.equal(
          headers.some((item, i) => i % 2 === 0 && item === 'X-Forwarded-Host'),
          false,
        );
      }
    });
  });

  describe('Via and loops (RFC 9110 §7.6.3)', () => {
    test('the Via version is the client request version', () => {
      // Node says `2.0` for HTTP/2; the protocol's version is `2` (RFC 9113 §3, RFC 9110 §7.6.3).
      assert.equal(only(forward(frozen(), { httpVersion: '2.0' }), 'Via'), '2 sluice');
      assert.equal(only(forward(frozen(), { httpVersion: '2' }), 'Via'), '2 sluice');
      assert.equal(only(forward(frozen(), { httpVersion: '3.0' }), 'Via'), '3 sluice');
      assert.equal(only(forward(frozen(), { httpVersion: '1.0' }), 'Via'), '1.0 sluice');
      assert.equal(only(forward(frozen(), { httpVersion: 'HTTP/9 x' }), 'Via'), '1.1 sluice');
    });

    test('a loop is our pseudonym as the received-by of any element of any Via, in any case', () => {
      assert.equal(isLoop(frozen('Via', '1.1 sluice')), true);
      assert.equal(isLoop(frozen('via', '1.0 fred, HTTP/1.1 SLUICE (Sluice/0.1)')), true);
      assert.equal(isLoop(frozen('Via', '1.0 fred', 'Accept', '*/*', 'VIA', '1.1 gw,2.0 Sluice')), true);
      assert.equal(isLoop(frozen('Via', '1.1 Sluice'), 'SLUICE'), true);
    });

    test('a loop is found even when Connection names Via or the Via line is malformed', () => {
      assert.equal(isLoop(frozen('Connection', 'Via', 'Via', '1.1 sluice')), true);
      assert.equal(isLoop(frozen('Via', '1.1 sluice, 1.1 x (open')), true);
    });

    test('our name in a comment, a protocol, a longer name or another hop is not a loop', () => {
      assert.equal(isLoop(frozen()), false);
      assert.equal(isLoop(frozen('Via', '1.1 proxy (sluice)')), false);
      assert.equal(isLoop(frozen('Via', '1.1 proxy (via 1.1 sluice, cached)')), false);
      assert.equal(isLoop(frozen('Via', 'sluice/1.1 proxy')), false);
      assert.equal(isLoop(frozen('Via', '1.1 sluice-2, 1.1 my.sluice')), false);
      assert.equal(isLoop(frozen('X-Via', '1.1 sluice')), false);
    });

    test('a looped request still gets its headers', () => {
      const raw = frozen('Via', '1.1 sluice');
      assert.deepEqual(forwardRequestHeaders(raw, CTX), {
        headers: ['Via', '1.1 sluice', ...added()],
        loop: true,
      });
    });
  });

  test('an upgrade keeps Upgrade and Connection: upgrade and still adds this hop', () => {
    const raw = frozen(
      'Host',
      'app.example.com',
      'Connection',
      'Upgrade, X-Hop',
      'Upgrade',
      'websocket',
      'X-Hop',
      '1',
      'Sec-WebSocket-Key',
      'dGhlIHNhbXBsZSBub25jZQ==',
      'Sec-WebSocket-Version',
      '13',
    );
    assert.deepEqual(forward(raw, { upgrade: true }), [
      'Host',
      'app.example.com',
      'Upgrade',
      'websocket',
      'Sec-WebSocket-Key',
      'dGhlIHNhbXBsZSBub25jZQ==',
      'Sec-WebSocket-Version',
      '13',
      'Connection',
      'upgrade',
      ...added(),
    ]);
  });

  test('does not mutate its input', () => {
    const raw = [
      'Connection',
      'X-Foo',
      'X-Foo',
      '1',
      'X-Forwarded-For',
      '10.0.0.1',
      'X-Forwarded-For',
      '10.0.0.2',
      'X-Sluice-Route',
      'r',
      'Via',
      '1.1 sluice',
      'Upgrade',
      'websocket',
    ];
    const copy = [...raw];
    forwardRequestHeaders(raw, CTX);
    forwardRequestHeaders(raw, { ...CTX, upgrade: true });
    assert.deepEqual(raw, copy);
  });
});

describe('clientAddress and trustedProxyCheck (http.trustedProxies)', () => {
  const trusts = trustedProxyCheck(['10.0.0.0/8', '192.0.2.1/32', 'fd00::/8']);

  test('matches IPv4 and IPv6 ranges, IPv4-mapped addresses as IPv4, and nothing else', () => {
    assert.equal(trusts('10.255.0.1'), true);
    assert.equal(trusts('::ffff:10.1.2.3'), true);
    assert.equal(trusts('192.0.2.1'), true);
    assert.equal(trusts('192.0.2.2'), false);
    assert.equal(trusts('fd12:3456::1'), true);
    assert.equal(trusts('fe80::1'), false);
    assert.equal(trusts('11.0.0.1'), false);
    for (const junk of ['', 'unknown', '10.0.0.1:80', '_hidden']) assert.equal(trusts(junk), false, junk);
    assert.equal(trustedProxyCheck([])('10.0.0.1'), false);
  });

  test('a peer that is not trusted is the client, whatever X-Forwarded-For says', () => {
    assert.equal(clientAddress(frozen('X-Forwarded-For', '6.6.6.6'), '203.0.113.7', trusts), '203.0.113.7');
  });

  test('behind trusted proxies, the client is the rightmost element that is not one of them', () => {
    const raw = frozen('X-Forwarded-For', '6.6.6.6, 198.51.100.9', 'x-forwarded-for', '10.0.0.5');
    assert.equal(clientAddress(raw, '10.0.0.1', trusts), '198.51.100.9');
    assert.equal(
      clientAddress(frozen('X-Forwarded-For', '10.0.0.9, 10.0.0.5'), '10.0.0.1', trusts),
      '10.0.0.9',
    );
    assert.equal(clientAddress(frozen(), '10.0.0.1', trusts), '10.0.0.1', 'no header: the proxy itself');
  });

  test('elements with ports are read; one that is no address ends the walk at the hop that added it', () => {
    assert.equal(
      clientAddress(frozen('X-Forwarded-For', '198.51.100.9:4711'), '10.0.0.1', trusts),
      '198.51.100.9',
    );
    const v6 = frozen('X-Forwarded-For', '[2001:db8::7]:443');
    assert.equal(clientAddress(v6, 'fd00::1', trusts), '2001:db8::7');
    const junk = frozen('X-Forwarded-For', '6.6.6.6, evil, 10.0.0.5');
    assert.equal(clientAddress(junk, '10.0.0.1', trusts), '10.0.0.5');
  });
});

describe('forwardResponseHeaders', () => {
  test('strips hop-by-hop fields, appends Via and sets X-Request-Id', () => {
    const raw = frozen(
      'Content-Type',
      'text/plain',
      'Connection',
      'keep-alive, X-Backend',
      'Keep-Alive',
      'timeout=5',
      'X-Backend',
      'pod-1',
      'Transfer-Encoding',
      'chunked',
      'Via',
      '1.1 envoy',
    );
    assert.deepEqual(forwardResponseHeaders(raw, RESPONSE_CTX), [
      'Content-Type',
      'text/plain',
      'Via',
      '1.1 envoy',
      'Via',
      '1.1 sluice',
      'X-Request-Id',
      'req-1',
    ]);
  });

  test("keeps the target's X-Request-Id, in any case", () => {
    const raw = frozen('x-request-id', 'from-target', 'Content-Length', '0');
    assert.deepEqual(forwardResponseHeaders(raw, { ...RESPONSE_CTX, httpVersion: '1.0' }), [
      'x-request-id',
      'from-target',
      'Content-Length',
      '0',
      'Via',
      '1.0 sluice',
    ]);
  });

  test('a 101 keeps Upgrade and Connection: upgrade', () => {
    const raw = frozen('Upgrade', 'websocket', 'Connection', 'Upgrade', 'Sec-WebSocket-Accept', 'acc');
    assert.deepEqual(forwardResponseHeaders(raw, { ...RESPONSE_CTX, upgrade: true }), [
      'Upgrade',
      'websocket',
      'Sec-WebSocket-Accept',
      'acc',
      'Connection',
      'upgrade',
      'Via',
      '1.1 sluice',
      'X-Request-Id',
      'req-1',
    ]);
  });

  test('any other response loses Upgrade', () => {
    const raw = frozen('Upgrade', 'h2c', 'Connection', 'Upgrade', 'Content-Length', '0');
    assert.deepEqual(forwardResponseHeaders(raw, RESPONSE_CTX), [
      'Content-Length',
      '0',
      'Via',
      '1.1 sluice',
      'X-Request-Id',
      'req-1',
    ]);
  });

  test('hsts: added when the target sent none; its own kept once, in any case, even when empty', () => {
    const ctx = { ...RESPONSE_CTX, hsts: 'max-age=100' };
    assert.deepEqual(forwardResponseHeaders(frozen('Content-Length', '0'), ctx), [
      'Content-Length',
      '0',
      'Via',
      '1.1 sluice',
      'X-Request-Id',
      'req-1',
      'Strict-Transport-Security',
      'max-age=100',
    ]);
    for (const value of ['max-age=5; preload', '']) {
      const own = frozen('strict-TRANSPORT-security', value, 'Content-Length', '0');
      const out = forwardResponseHeaders(own, ctx);
      const fields = out.filter(
        (_, i) => i % 2 === 0 && out[i]!.toLowerCase() === 'strict-transport-security',
      );
      assert.equal(fields.length, 1, value);
      assert.equal(out[out.indexOf('strict-TRANSPORT-security') + 1], value);
    }
    // None asked for (plain HTTP, or http.hsts off): none added.
    assert.ok(
      !forwardResponseHeaders(frozen('Content-Length', '0'), RESPONSE_CTX).includes(
        'Strict-Transport-Security',
      ),
    );
  });

  test('does not mutate its input', () => {
    const raw = ['Connection', 'close', 'Upgrade', 'websocket', 'Content-Length', '0'];
    const copy = [...raw];
    forwardResponseHeaders(raw, RESPONSE_CTX);
    forwardResponseHeaders(raw, { ...RESPONSE_CTX, upgrade: true });
    assert.deepEqual(raw, copy);
  });
});

describe('chooseRequestId', () => {
  function choose(raw: readonly string[]): { id: string; generated: number } {
    let generated = 0;
    const id = chooseRequestId(raw, () => `gen-${++generated}`);
    return { id, generated };
  }

  test('keeps a single valid client id, in any case, without generating one', () => {
    assert.deepEqual(choose(frozen('X-Request-Id', 'abc-123')), { id: 'abc-123', generated: 0 });
    assert.deepEqual(choose(frozen('x-REQUEST-id', '~!{}')), { id: '~!{}', generated: 0 });
    const longest = 'a'.repeat(200);
    assert.deepEqual(choose(frozen('X-Request-Id', longest)), { id: longest, generated: 0 });
  });

  test('generates one when the client id is absent, repeated, too long, empty or not visible ASCII', () => {
    for (const raw of [
      frozen(),
      frozen('X-Request-Id', 'a', 'X-Request-Id', 'a'),
      frozen('X-Request-Id', 'a'.repeat(201)),
      frozen('X-Request-Id', ''),
      frozen('X-Request-Id', 'a b'),
      frozen('X-Request-Id', 'a\tb'),
      frozen('X-Request-Id', 'caf\u00e9'),
      frozen('X-Request-Id', 'a\r\nX-Admin: 1'),
      frozen('X-Request-Idx', 'abc'),
    ]) {
      assert.deepEqual(choose(raw), { id: 'gen-1', generated: 1 }, JSON.stringify(raw));
    }
  });

  test('does not mutate its input', () => {
    const raw = ['X-Request-Id', 'abc'];
    chooseRequestId(raw, () => 'gen');
    assert.deepEqual(raw, ['X-Request-Id', 'abc']);
  });
});
