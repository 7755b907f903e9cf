// http.redirectHttps and http.hsts (the edge-TLS issue), with curl against a real controller and agent:
// - the plain listener answers 308 with the exact https Location (the TLS listener's port, the Host's
//   name without its port, path and query as sent): a second request on the kept-alive connection,
//   HEAD, POST with a body (small, and one big enough for curl to wait for 100 Continue), a Host with
//   a port, in capitals, with a trailing dot, IPv6 literals, absolute-form targets;
// - none of them reaches the target; the ACME HTTP-01 path (http.redirectExclude) is served through
//   the tunnel, a near miss is not;
// - a missing or bad Host gets 400, the edge's error page where Node leaves it to the edge; dot
//   segments and too many fields are refused as usual, and OPTIONS * is served;
// - a trusted proxy's X-Forwarded-Proto: https is served as usual, an untrusted peer's is not;
// - a WebSocket upgrade on the plain listener gets the 308 and its connection closes;
// - each redirect has its log line (status 308) and counts in sluice_requests_total (3xx);
// - Strict-Transport-Security over https with HTTP/1.1 and HTTP/2, on a 200, on 404 and 502 error
//   pages and on an upgrade's raw 404; never over plain HTTP; a target's own value kept, not doubled.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as connectTcp } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as connectTls } from 'node:tls';
import { issueCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { freePort, listenOnLoopback } from '../helpers/listen.js';
import { Stack } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, within } from '../helpers/wait.js';

const CURL = '/usr/bin/curl';
const HSTS = 'max-age=15552000; includeSubDomains';
const TARGET_HSTS = 'max-age=60';

let ca: TestCerts;
let stack: Stack | undefined;
let target: Server | undefined;
/** The paths the target was asked for, in order. */
const seen: string[] = [];
let plainPort = 0;
let tlsPort = 0;

interface Response {
  status: number;
  /** Lowercased names, in order, repeats kept. */
  headers: [string, string][];
  body: string;
  /** New connections curl made for this transfer: 0 when it reused one. */
  connects: number;
  version: string;
}

function header(r: Response, name: string): string[] {
  return r.headers.filter(([n]) => n === name).map(([, v]) => v);
}

const MARK = '\n@@ %{http_code} %{num_connects} %{http_version}\n';

/** Runs curl with `-i` and a marker after each transfer; returns each response, in order. */
function curl(args: string[], input?: string): Promise<Response[]> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      CURL,
      ['--silent', '--show-error', '--include', '--write-out', MARK, ...args],
      { timeout: scaled(EVENT_MS), maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err !== null) {
          reject(new Error(`curl ${args.join(' ')}: ${err.message} ${stderr}`));
          return;
        }
        resolve(parse(stdout));
      },
    );
    // curl may be done (and its stdin closed) before this is written: that is no failure.
    child.stdin?.on('error', () => {});
    child.stdin?.end(input ?? '');
  });
}

function parse(stdout: string): Response[] {
  const out: Response[] = [];
  const parts = stdout.split(/\n@@ (\d{3}) (\d+) ([\d.]+)\n/);
  for (let i = 0; i + 3 < parts.length; i += 4) {
    const text = parts[i]!;
    // An interim 100 Continue comes first in --include output; the final head is the last one.
    const heads = [...text.matchAll(/^HTTP\/[\d.]+ \d{3}[^\r\n]*\r\n([\s\S]*?)\r\n\r\n/gm)];
    const last = heads.at(-1);
    assert.ok(last !== undefined, `no response head in ${JSON.stringify(text.slice(0, 300))}`);
    const headers = last[1]!.split('\r\n').map((line): [string, string] => {
      const colon = line.indexOf(':');
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
    });
    const body = text.slice(last.index + last[0].length);
    out.push({
      status: Number(parts[i + 1]),
      headers,
      body,
      connects: Number(parts[i + 2]),
      version: parts[i + 3]!,
    });
  }
  return out;
}

/** Plain HTTP/1.1 to the public listener with `host` as Host; `paths` on one connection. */
function plain(host: string, paths: string[], ...extra: string[]): Promise<Response[]> {
  return curl([
    '--http1.1',
    '-H',
    `Host: ${host}`,
    ...extra,
    ...paths.map((p) => `http://127.0.0.1:${plainPort}${p}`),
  ]);
}

/** HTTPS to the TLS listener for `host`, with the test CA; `version` is --http1.1 or --http2. */
function secure(version: string, host: string, path: string, ...extra: string[]): Promise<Response[]> {
  return curl([
    version,
    '--cacert',
    join(ca.dir, 'ca.pem'),
    '--resolve',
    `${host}:${tlsPort}:127.0.0.1`,
    ...extra,
    `https://${host}:${tlsPort}${path}`,
  ]);
}

/** Writes `request` on a fresh connection and reads until the server closes it. */
function rawExchange(request: string, tls = false): Promise<string> {
  const socket = tls
    ? connectTls({ host: '127.0.0.1', port: tlsPort, servername: 'shop.test', ca: ca.ca })
    : connectTcp(plainPort, '127.0.0.1');
  const chunks: Buffer[] = [];
  const done = new Promise<string>((resolve, reject) => {
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('error', reject);
    socket.once('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
  });
  socket.write(request);
  return within(
    done,
    scaled(EVENT_MS),
    `the server to answer and close: ${request.split('\r\n')[0]}`,
  ).finally(() => socket.destroy());
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  const url = req.url ?? '/';
  seen.push(url);
  req.resume();
  req.once('end', () => {
    if (url === '/sts') {
      res.writeHead(200, { 'Strict-Transport-Security': TARGET_HSTS, 'Content-Type': 'text/plain' });
      res.end('own');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(`target:${url}`);
  });
}

before(async () => {
  ca = await makeTestCerts();
  const cert = await issueCert(['shop.test', 'nowhere.test', 'down.test'], { file: 'redirect-hsts' });
  target = createServer(handle);
  const port = await listenOnLoopback(target);
  // Nothing listens there: the agent's connect is refused, and the edge answers 502.
  const dead = await freePort();
  stack = await Stack.start({
    routes: [
      { host: 'shop.test', target: `http://127.0.0.1:${port}` },
      { host: 'down.test', target: `http://127.0.0.1:${dead}` },
    ],
    admin: true,
    extraYaml: [
      'http:',
      '  redirectHttps: true',
      // The test's own clients are a trusted proxy: their X-Forwarded-Proto counts.
      '  trustedProxies: [127.0.0.1]',
      '  hsts: { maxAge: 180d, includeSubDomains: true }',
      'tls:',
      '  listen: 127.0.0.1:0',
      '  certs:',
      `    - { cert: ${JSON.stringify(cert.certFile)}, key: ${JSON.stringify(cert.keyFile)} }`,
    ].join('\n'),
  });
  plainPort = stack.port;
  const line = await stack.controller.waitLine(
    'the TLS listener',
    (l) => l.event === 'listening' && l.listener === 'tls',
  );
  tlsPort = Number(new URL(String(line.url)).port);
});

after(async () => {
  await stack?.stop();
  await new Promise<void>((resolve) => (target === undefined ? resolve() : target.close(() => resolve())));
  target?.closeAllConnections();
});

describe('http.redirectHttps on the plain listener', () => {
  test('308 to the exact https URL, and again on the kept-alive connection', async () => {
    const before = seen.length;
    const [first, second] = await plain('shop.test', ['/a/b?x=1&y=%20z', '/second?q']);
    assert.equal(first!.status, 308);
    assert.deepEqual(header(first!, 'location'), [`https://shop.test:${tlsPort}/a/b?x=1&y=%20z`]);
    assert.equal(first!.body, '');
    assert.equal(header(first!, 'x-request-id').length, 1);
    assert.deepEqual(header(first!, 'strict-transport-security'), [], 'no HSTS over plain HTTP');
    assert.equal(second!.status, 308);
    assert.deepEqual(header(second!, 'location'), [`https://shop.test:${tlsPort}/second?q`]);
    assert.deepEqual([first!.connects, second!.connects], [1, 0], 'the second reused the connection');
    assert.equal(seen.length, before, 'no redirected request reached the target');
  });

  test('HEAD gets the 308 without a body', async () => {
    const [r] = await plain('shop.test', ['/head?h=1'], '--head');
    assert.equal(r!.status, 308);
    assert.deepEqual(header(r!, 'location'), [`https://shop.test:${tlsPort}/head?h=1`]);
    assert.equal(r!.body, '');
  });

  test('POST with a body gets the 308, and the connection serves the next request', async () => {
    const before = seen.length;
    const [post] = await plain('shop.test', ['/form'], '--data-binary', 'a=1&b=2');
    assert.equal(post!.status, 308);
    assert.deepEqual(header(post!, 'location'), [`https://shop.test:${tlsPort}/form`]);
    // One command, two transfers on one connection: the body was read and dropped, not parsed as a request.
    const pair = await curl([
      '--http1.1',
      '-H',
      'Host: shop.test',
      '--data-binary',
      'x'.repeat(10_000),
      `http://127.0.0.1:${plainPort}/post-one`,
      // --next starts a new option set: the second transfer needs its own.
      '--next',
      '--silent',
      '--include',
      '--write-out',
      MARK,
      '--http1.1',
      '-H',
      'Host: shop.test',
      `http://127.0.0.1:${plainPort}/get-two`,
    ]);
    assert.deepEqual(
      pair.map((r) => [r.status, header(r, 'location')[0], r.connects]),
      [
        [308, `https://shop.test:${tlsPort}/post-one`, 1],
        [308, `https://shop.test:${tlsPort}/get-two`, 0],
      ],
    );
    // 2 MiB: curl sends Expect: 100-continue and waits; the 308 comes instead, and curl sends no body.
    const big = await curl(
      ['--http1.1', '-H', 'Host: shop.test', '--data-binary', '@-', `http://127.0.0.1:${plainPort}/big`],
      'y'.repeat(2 * 1024 * 1024),
    );
    assert.equal(big[0]!.status, 308);
    assert.deepEqual(header(big[0]!, 'location'), [`https://shop.test:${tlsPort}/big`]);
    assert.equal(seen.length, before, 'no redirected request reached the target');
  });

  test('the Host loses its port, case and trailing dot; IPv6 literals stay bracketed', async () => {
    const cases: [string, string][] = [
      ['shop.test:8080', 'shop.test'],
      ['SHOP.Test', 'shop.test'],
      ['shop.test.:80', 'shop.test'],
      ['[::1]:8080', '[::1]'],
      ['[2001:DB8::1]', '[2001:db8::1]'],
      ['127.0.0.1:80', '127.0.0.1'],
    ];
    for (const [host, name] of cases) {
      const [r] = await plain(host, ['/p?q=1']);
      assert.equal(r!.status, 308, host);
      assert.deepEqual(header(r!, 'location'), [`https://${name}:${tlsPort}/p?q=1`], host);
    }
  });

  test('an absolute-form target is redirected to its path', async () => {
    const [r] = await curl([
      '--http1.1',
      '--request-target',
      'http://shop.test/abs?z=9',
      '-H',
      'Host: shop.test',
      `http://127.0.0.1:${plainPort}/`,
    ]);
    assert.equal(r!.status, 308);
    assert.deepEqual(header(r!, 'location'), [`https://shop.test:${tlsPort}/abs?z=9`]);
  });

  test('the ACME HTTP-01 path is served through the tunnel; a near miss is redirected', async () => {
    const path = '/.well-known/acme-challenge/tok_123-abc';
    const [acme, second] = await plain('shop.test', [path, `${path}?again`]);
    assert.equal(acme!.status, 200);
    assert.equal(acme!.body, `target:${path}`);
    assert.deepEqual(header(acme!, 'strict-transport-security'), [], 'no HSTS over plain HTTP');
    assert.equal(second!.status, 200);
    assert.equal(second!.connects, 0);
    assert.ok(seen.includes(path));
    for (const near of [
      '/.well-known/acme-challenge',
      '/.well-known/acme-challengeX/t',
      '/x/.well-known/acme-challenge/t',
    ]) {
      const [r] = await plain('shop.test', [near]);
      assert.equal(r!.status, 308, near);
    }
    // A host with no route: no tunnel to serve it, so the edge's 404.
    const [none] = await plain('nowhere.test', [path]);
    assert.equal(none!.status, 404);
  });

  test('checked as usual first: dot segments get 400, too many fields 431, OPTIONS * is served', async () => {
    const dots = await rawExchange('GET /a/../b HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n');
    assert.match(dots, /^HTTP\/1\.1 400 /);
    assert.match(dots, /dot segments/);
    const fields = Array.from({ length: 120 }, (_, i) => `X-F${i}: v\r\n`).join('');
    const many = await rawExchange(
      `GET /m HTTP/1.1\r\nHost: shop.test\r\n${fields}Connection: close\r\n\r\n`,
    );
    assert.match(many, /^HTTP\/1\.1 431 /);
    const star = await rawExchange('OPTIONS * HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n');
    // Served through the tunnel: the target answers it.
    assert.match(star, /^HTTP\/1\.1 200 /);
    assert.match(star, /target:\*/);
    assert.doesNotMatch(star, /^HTTP\/1\.1 308 /);
    assert.doesNotMatch(star, /\r\nLocation:/i);
  });

  test("a trusted proxy's X-Forwarded-Proto: https is served as usual, http is redirected", async () => {
    const [https] = await plain('shop.test', ['/behind-lb'], '-H', 'X-Forwarded-Proto: https');
    assert.equal(https!.status, 200);
    assert.equal(https!.body, 'target:/behind-lb');
    const [http] = await plain('shop.test', ['/behind-lb'], '-H', 'X-Forwarded-Proto: http');
    assert.equal(http!.status, 308);
    // The nearest proxy's element decides: a client's own claim before it does not.
    const [chain] = await plain('shop.test', ['/behind-lb'], '-H', 'X-Forwarded-Proto: https, http');
    assert.equal(chain!.status, 308);
    // From a peer that is no trusted proxy (127.0.0.2), the claim is ignored.
    const untrusted = ['-H', 'X-Forwarded-Proto: https', '--interface', '127.0.0.2'];
    const [claimed] = await plain('shop.test', ['/behind-lb'], ...untrusted);
    assert.equal(claimed!.status, 308);
  });

  test('a host with no route is redirected too', async () => {
    const [r] = await plain('nowhere.test', ['/']);
    assert.equal(r!.status, 308);
    assert.deepEqual(header(r!, 'location'), [`https://nowhere.test:${tlsPort}/`]);
  });

  test('a missing or bad Host gets 400', async () => {
    // HTTP/1.1 without Host: Node refuses it before the edge sees it (requireHostHeader).
    const [missing] = await plain('', ['/'], '-H', 'Host:');
    assert.equal(missing!.status, 400);
    assert.deepEqual(header(missing!, 'location'), []);
    // HTTP/1.0 may omit it, and does reach the edge: its error page.
    const old = await rawExchange('GET /x HTTP/1.0\r\nAccept: application/json\r\n\r\n');
    assert.match(old, /^HTTP\/1\.1 400 /);
    assert.doesNotMatch(old, /\r\nlocation:/i);
    assert.match(old, /"code":"bad_request"/);
    assert.match(old, /no valid Host/);
    for (const bad of ['shop..test', 'shop.test:80x', '[::1', '[zz::1]:80']) {
      const [r] = await plain(bad, ['/'], '-H', 'Accept: application/json');
      assert.equal(r!.status, 400, bad);
      assert.match(r!.body, /"code":"bad_request"/, bad);
      assert.deepEqual(header(r!, 'location'), [], bad);
    }
    const twice = await rawExchange(
      'GET / HTTP/1.1\r\nHost: shop.test\r\nHost: other.test\r\nAccept: text/plain\r\n\r\n',
    );
    assert.match(twice, /^HTTP\/1\.1 400 /);
    assert.match(twice, /more than one Host/);
  });

  test('a WebSocket upgrade gets the 308, then the connection closes', async () => {
    const before = seen.length;
    const answer = await rawExchange(
      [
        'GET /ws?room=1 HTTP/1.1',
        'Host: shop.test',
        'Connection: Upgrade',
        'Upgrade: websocket',
        'Sec-WebSocket-Version: 13',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        '',
        '',
      ].join('\r\n'),
    );
    const [head, body] = answer.split('\r\n\r\n', 2) as [string, string];
    assert.match(head, /^HTTP\/1\.1 308 Permanent Redirect\r\n/);
    assert.match(head, new RegExp(`\\r\\nLocation: https://shop\\.test:${tlsPort}/ws\\?room=1(\\r\\n|$)`));
    assert.match(head, /\r\nConnection: close(\r\n|$)/);
    assert.doesNotMatch(head, /Upgrade:|Strict-Transport-Security/i);
    assert.equal(body, '');
    assert.equal(seen.length, before);
  });

  test('each redirect has its log line, and counts as a 3xx response', async () => {
    const [r] = await plain('shop.test', ['/logged?yes']);
    const id = header(r!, 'x-request-id')[0]!;
    const line = await stack!.controller.waitLine(
      'the redirect log line',
      (l) => l.msg === 'request' && l.requestId === id,
      scaled(EVENT_MS),
    );
    assert.equal(line.status, 308);
    assert.equal(line.path, '/logged');
    assert.equal(line.route, 'shop.test');
    assert.match(String(line.reason), /redirectHttps/);
    const upgrade = await stack!.controller.waitLine(
      'the upgrade redirect log line',
      (l) => l.msg === 'request' && l.path === '/ws' && l.status === 308,
      scaled(EVENT_MS),
    );
    assert.equal(upgrade.reason, line.reason);
    const metrics = await (await fetch(`${stack!.adminUrl}/metrics`)).text();
    const counted = /^sluice_requests_total\{cluster="c1",route="shop\.test",status="3xx"\} (\d+)$/m.exec(
      metrics,
    );
    assert.ok(
      counted !== null,
      metrics
        .split('\n')
        .filter((l) => l.startsWith('sluice_requests_total'))
        .join('\n'),
    );
    assert.ok(Number(counted[1]) >= 10, counted[0]);
  });
});

describe('http.hsts', () => {
  for (const version of ['--http1.1', '--http2']) {
    const v = version === '--http2' ? '2' : '1.1';

    test(`over https ${version}: on a 200 and on error pages (404, 502)`, async () => {
      const [ok] = await secure(version, 'shop.test', '/page');
      assert.equal(ok!.status, 200);
      assert.equal(ok!.version, v);
      assert.equal(ok!.body, 'target:/page');
      assert.deepEqual(header(ok!, 'strict-transport-security'), [HSTS]);
      const [missing] = await secure(version, 'nowhere.test', '/');
      assert.equal(missing!.status, 404);
      assert.deepEqual(header(missing!, 'strict-transport-security'), [HSTS]);
      const [down] = await secure(version, 'down.test', '/', '-H', 'Accept: application/json');
      assert.equal(down!.status, 502);
      assert.match(down!.body, /"code":"/);
      assert.deepEqual(header(down!, 'strict-transport-security'), [HSTS]);
    });

    test(`over https ${version}: the target's own value is kept, once`, async () => {
      const [r] = await secure(version, 'shop.test', '/sts');
      assert.equal(r!.status, 200);
      assert.equal(r!.body, 'own');
      assert.deepEqual(header(r!, 'strict-transport-security'), [TARGET_HSTS]);
    });
  }

  test('over https the TLS listener never redirects', async () => {
    const [r] = await secure('--http1.1', 'shop.test', '/no-redirect?q=1');
    assert.equal(r!.status, 200);
    assert.equal(r!.body, 'target:/no-redirect?q=1');
  });

  test('an upgrade refused over TLS: the raw error page carries it too', async () => {
    const answer = await rawExchange(
      [
        'GET /ws HTTP/1.1',
        'Host: nowhere.test',
        'Connection: Upgrade',
        'Upgrade: websocket',
        'Sec-WebSocket-Version: 13',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        '',
        '',
      ].join('\r\n'),
      true,
    );
    assert.match(answer, /^HTTP\/1\.1 404 /);
    assert.match(answer, new RegExp(`\\r\\nStrict-Transport-Security: ${HSTS}\\r\\n`));
  });

  test('never over plain HTTP: not on a redirect, an excluded path or an error page', async () => {
    const [redirect] = await plain('shop.test', ['/x']);
    const [acme] = await plain('shop.test', ['/.well-known/acme-challenge/t']);
    const [error] = await plain('nowhere.test', ['/.well-known/acme-challenge/t']);
    for (const r of [redirect!, acme!, error!]) {
      assert.deepEqual(header(r, 'strict-transport-security'), [], String(r.status));
    }
    assert.deepEqual([redirect!.status, acme!.status, error!.status], [308, 200, 404]);
  });
});

describe('http.redirectPort', () => {
  const stacks: Stack[] = [];
  after(async () => {
    await Promise.allSettled(stacks.map((s) => s.stop()));
  });

  /** A controller whose TLS listener sits behind a port mapping (a Service 443 → 8443, say). */
  async function behindMapping(redirectPort: number): Promise<number> {
    const cert = await issueCert(['shop.test'], { file: `redirect-port-${redirectPort}` });
    const s = await Stack.start({
      routes: [{ host: 'shop.test', target: 'http://127.0.0.1:9' }],
      extraYaml: [
        'http:',
        '  redirectHttps: true',
        `  redirectPort: ${redirectPort}`,
        'tls:',
        '  listen: 127.0.0.1:0',
        '  certs:',
        `    - { cert: ${JSON.stringify(cert.certFile)}, key: ${JSON.stringify(cert.keyFile)} }`,
      ].join('\n'),
    });
    stacks.push(s);
    return s.port;
  }

  test('the Location names the mapped port, and none for 443; the second request too', async () => {
    for (const [port, suffix] of [
      [443, ''],
      [9443, ':9443'],
    ] as const) {
      const plain = await behindMapping(port);
      const replies = await curl([
        '--http1.1',
        '-H',
        'Host: Shop.test:8080',
        `http://127.0.0.1:${plain}/cart?id=7`,
        `http://127.0.0.1:${plain}/second`,
      ]);
      assert.deepEqual(
        replies.map((r) => [r.status, header(r, 'location')[0]]),
        [
          [308, `https://shop.test${suffix}/cart?id=7`],
          [308, `https://shop.test${suffix}/second`],
        ],
      );
    }
  });
});
