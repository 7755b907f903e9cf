// WebSockets over HTTP/2 (RFC 8441) on the TLS listener, with Node's http2 client sending
// `:method CONNECT`, `:protocol websocket` through a real controller and agent to a real `ws` server.
// The client frames its messages with ws's own Sender and Receiver (test/helpers/ws-h2-client.ts).
// - the listener's SETTINGS carry ENABLE_CONNECT_PROTOCOL;
// - the stream gets 200 (no Sec-WebSocket-Accept, no Upgrade), the chosen subprotocol, and the target
//   an HTTP/1.1 upgrade with a key; text and binary messages echo, the second and the hundredth too;
// - close codes 1000 and 4001 with a reason, from either side;
// - 64 MiB through, hashed both ways; backpressure both ways, with the controller's memory bounded;
// - a client reset reaches the target as a closed connection, a target reset the client as RST_STREAM;
// - a target that does not switch: its status and body (a 2xx, which would open the tunnel, is a 502);
//   a wrong Sec-WebSocket-Accept is a 502; other CONNECTs get 501; all without connection fields;
// - the log line, the request id and sluice_upgrades_open; many WebSockets on one connection;
// - a drain: GOAWAY, the WebSocket works on through the grace period, then its stream is ended.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type IncomingHttpHeaders,
  type Settings,
} from 'node:http2';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import type { WebSocket } from 'ws';
import { makeTestCerts, issueCert, type TestCerts } from '../helpers/certs.js';
import { MiB } from '../helpers/data.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { Stack, tempDir } from '../helpers/sluice-procs.js';
import { REFUSED_BODY, startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { EVENT_MS, READY_MS, scaled, within } from '../helpers/wait.js';
import { connectHeaders, H2WebSocket, responseOf } from '../helpers/ws-h2-client.js';

const HOST = 'ws.test';
const PLAIN = 'plain.test';
const BAD = 'bad-accept.test';
// RFC 9113 §8.2.2: fields an HTTP/2 message must not carry.
const CONNECTION_SPECIFIC = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'];
// How long no progress at all counts as a stall, in the backpressure tests.
const QUIET_MS = scaled(1500);
// What may pile up between a writer and a reader that stopped: HTTP/2 and tunnel windows, socket buffers
// in three processes and the kernel. Far below what the writers offer (256 MiB).
const MAX_BUFFERED = 96 * MiB;

let ca: TestCerts;
let upgrades: UpgradeOrigin;
let origin: Origin;
let badAccept: Server;
let stack: Stack;
let tlsPort = 0;

function session(): ClientHttp2Session {
  const s = connect(`https://${HOST}:${tlsPort}`, {
    ca: ca.ca,
    servername: HOST,
    lookup: (_name, _opts, done) => done(null, [{ address: '127.0.0.1', family: 4 }]),
  } as Parameters<typeof connect>[1]);
  s.on('error', () => {});
  settingsOf.set(s, new Promise((resolve) => s.once('remoteSettings', resolve)));
  return s;
}

const settingsOf = new WeakMap<ClientHttp2Session, Promise<Settings>>();

/** The server's first SETTINGS. */
function remoteSettings(s: ClientHttp2Session): Promise<Settings> {
  return settingsOf.get(s)!;
}

/**
 * Opens a WebSocket on `path` (authority HOST unless given) and waits for its 200. The client may only
 * send an extended CONNECT once the server's SETTINGS allowed it (RFC 8441 §3).
 */
async function open(
  s: ClientHttp2Session,
  path: string,
  extra: Record<string, string> = {},
  authority = HOST,
  options: { endOnEnd?: boolean } = {},
): Promise<{ ws: H2WebSocket; headers: IncomingHttpHeaders }> {
  await within(remoteSettings(s), EVENT_MS, 'the server SETTINGS');
  const stream = s.request(connectHeaders(authority, path, extra), { endStream: false });
  const headers = await within(responseOf(stream), EVENT_MS, `the answer to ${path}`);
  assert.equal(headers[':status'], 200, JSON.stringify(headers));
  return { ws: new H2WebSocket(stream, options), headers };
}

/** A stream's whole answer: head and body as text. */
async function answer(stream: ClientHttp2Stream): Promise<{ headers: IncomingHttpHeaders; body: string }> {
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  const headers = await within(responseOf(stream), EVENT_MS, 'the answer');
  await within(
    new Promise<void>((resolve) => stream.once('close', resolve)),
    EVENT_MS,
    'the end of the answer',
  );
  return { headers, body: Buffer.concat(chunks).toString() };
}

function socketOf(ws: WebSocket): Socket {
  return (ws as unknown as { _socket: Socket })._socket;
}

/** One of 1 MiB blocks, stamped with its index so that a lost or reordered one changes the hash. */
function block(index: number, size = MiB): Buffer {
  const b = Buffer.alloc(size, index % 251);
  b.writeUInt32BE(index, 0);
  return b;
}

before(async () => {
  ca = await makeTestCerts();
  const dir = tempDir();
  const cert = await issueCert([HOST, PLAIN, BAD, 'other.test'], { dir, file: 'ws' });
  upgrades = await startUpgradeOrigin();
  origin = await startOrigin('plain');
  // A target that switches with an accept value for some other key.
  badAccept = createServer((_req, res) => res.end());
  badAccept.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
    socket.on('error', () => {});
    socket.end(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n',
    );
  });
  const badPort = await listenOnLoopback(badAccept);
  stack = await Stack.start({
    routes: [
      { host: HOST, target: upgrades.url },
      { host: PLAIN, target: origin.url },
      { host: BAD, target: `http://127.0.0.1:${badPort}` },
    ],
    admin: true,
    extraYaml: [
      'tunnel:',
      '  gracePeriod: 2s',
      'tls:',
      '  listen: 127.0.0.1:0',
      '  certs:',
      `    - { cert: ${JSON.stringify(cert.certFile)}, key: ${JSON.stringify(cert.keyFile)} }`,
    ].join('\n'),
  });
  const line = await stack.controller.waitLine(
    'the TLS listener',
    (l) => l.event === 'listening' && l.listener === 'tls',
  );
  tlsPort = Number(new URL(String(line.url)).port);
});

after(async () => {
  await stack?.stop();
  await upgrades?.close();
  await origin?.close();
  await new Promise<void>((resolve) =>
    badAccept === undefined ? resolve() : badAccept.close(() => resolve()),
  );
});

describe('RFC 8441: WebSockets over HTTP/2', () => {
  test('the listener advertises SETTINGS_ENABLE_CONNECT_PROTOCOL', async () => {
    const s = session();
    try {
      const settings = await within(remoteSettings(s), EVENT_MS, 'the server SETTINGS');
      assert.equal(settings.enableConnectProtocol, true);
    } finally {
      s.close();
    }
  });

  test('200 with the chosen subprotocol; the target gets an HTTP/1.1 upgrade; the 2nd and 100th message echo', async () => {
    const s = session();
    try {
      const { ws, headers } = await open(s, '/chat?room=1', { 'sec-websocket-protocol': 'a, b' });
      const side = await within(upgrades.ws('/chat?room=1'), EVENT_MS, 'the target side');
      assert.equal(headers['sec-websocket-protocol'], 'b');
      assert.equal(
        headers['sec-websocket-accept'],
        undefined,
        'the accept value is the HTTP/1.1 handshake’s',
      );
      for (const name of CONNECTION_SPECIFIC) assert.equal(headers[name], undefined, name);
      const requestId = headers['x-request-id'];
      assert.equal(typeof requestId, 'string');
      assert.deepEqual(headers.via, '1.1 sluice');

      // What the target saw: the GET of RFC 6455 §4.1, with a key this hop made up.
      const seen = side.req;
      assert.equal(seen.method, 'GET');
      assert.equal(seen.httpVersion, '1.1');
      assert.equal(seen.headers.host, HOST);
      assert.equal(seen.headers.upgrade, 'websocket');
      assert.match(seen.headers.connection ?? '', /upgrade/i);
      assert.equal(Buffer.from(seen.headers['sec-websocket-key'] ?? '', 'base64').length, 16);
      assert.equal(seen.headers['sec-websocket-version'], '13');
      assert.equal(seen.headers['sec-websocket-protocol'], 'a, b');
      assert.equal(seen.headers['x-forwarded-proto'], 'https');
      assert.equal(seen.headers.via, '2 sluice');
      assert.equal(seen.headers['x-request-id'], requestId);
      assert.ok(!seen.rawHeaders.some((h) => h.startsWith(':')), JSON.stringify(seen.rawHeaders));

      ws.send('hello');
      assert.deepEqual(await within(ws.next(), EVENT_MS, 'the echo'), {
        data: Buffer.from('hello'),
        binary: false,
      });
      const bin = Buffer.from([0, 1, 2, 255]);
      ws.send(bin);
      assert.deepEqual(await within(ws.next(), EVENT_MS, 'the second echo'), { data: bin, binary: true });
      for (let i = 3; i <= 100; i++) ws.send(`message ${i}`);
      for (let i = 3; i <= 100; i++) {
        const m = await within(ws.next(), EVENT_MS, `echo ${i}`);
        assert.equal(m.data.toString(), `message ${i}`);
      }

      ws.close(1000);
      assert.deepEqual(await within(ws.concluded, EVENT_MS, 'the close frame'), { code: 1000, reason: '' });
      assert.equal(await within(ws.finished, EVENT_MS, 'the stream to end'), 'end');
      const line = await stack.controller.waitLine(
        'the log line',
        (l) => l.msg === 'request' && l.path === '/chat' && l.requestId === requestId,
        EVENT_MS,
      );
      assert.equal(line.method, 'CONNECT');
      assert.equal(line.status, 200);
      assert.equal(line.outcome, 'done');
      assert.equal(line.route, HOST);
      assert.ok(Number(line.bytesIn) > 100 && Number(line.bytesOut) > 100, JSON.stringify(line));
    } finally {
      s.close();
    }
  });

  for (const [code, reason] of [
    [1000, ''],
    [4001, 'custom reason'],
  ] as const) {
    test(`close code ${code}, client-initiated, reaches the target with its reason`, async () => {
      const s = session();
      try {
        const path = `/close-client-${code}`;
        const { ws } = await open(s, path);
        const side = await within(upgrades.ws(path), EVENT_MS, 'the target side');
        ws.close(code, reason);
        const closed = await within(side.closed, EVENT_MS, 'the target to see the close');
        assert.deepEqual({ code: closed.code, reason: closed.reason }, { code, reason });
        assert.deepEqual(await within(ws.concluded, EVENT_MS, 'the close frame back'), { code, reason });
        assert.equal(await within(ws.finished, EVENT_MS, 'the stream to end'), 'end');
      } finally {
        s.close();
      }
    });

    test(`close code ${code}, server-initiated, reaches the client with its reason`, async () => {
      const s = session();
      try {
        const path = `/close-server-${code}`;
        const { ws } = await open(s, path);
        const side = await within(upgrades.ws(path), EVENT_MS, 'the target side');
        side.ws.close(code, reason);
        assert.deepEqual(await within(ws.concluded, EVENT_MS, 'the close frame'), { code, reason });
        ws.close(code, reason);
        const closed = await within(side.closed, EVENT_MS, 'the target to finish the close');
        assert.equal(closed.code, code);
        assert.equal(await within(ws.finished, EVENT_MS, 'the stream to end'), 'end');
      } finally {
        s.close();
      }
    });
  }

  test('64 MiB through and back, its sha256 the same both ways', { timeout: scaled(600_000) }, async () => {
    const s = session();
    try {
      const { ws } = await open(s, '/bulk');
      // Three messages of 16 MiB, then 16 of 1 MiB.
      const sizes = [16 * MiB, 16 * MiB, 16 * MiB, ...Array<number>(16).fill(MiB)];
      const sentHash = createHash('sha256');
      const gotHash = createHash('sha256');
      let total = 0;
      const receiving = (async () => {
        for (let i = 0; i < sizes.length; i++) {
          const m = await within(ws.next(), EVENT_MS, `echo ${i}`);
          assert.equal(m.data.length, sizes[i]);
          gotHash.update(m.data);
        }
      })();
      for (let i = 0; i < sizes.length; i++) {
        const data = block(i, sizes[i]);
        sentHash.update(data);
        total += data.length;
        ws.send(data);
        if (ws.stream.writableNeedDrain) await within(once(ws.stream, 'drain'), EVENT_MS, 'drain');
      }
      await receiving;
      assert.equal(total, 64 * MiB);
      assert.equal(gotHash.digest('hex'), sentHash.digest('hex'));
      ws.close(1000);
      await within(ws.finished, EVENT_MS, 'the stream to end');
    } finally {
      s.close();
    }
  });

  test('backpressure: a target that stops reading stalls the client, and the controller holds little', async (t) => {
    const s = session();
    try {
      const { ws } = await open(s, '/slow-target');
      const side = await within(upgrades.ws('/slow-target'), EVENT_MS, 'the target side');
      socketOf(side.ws).pause();
      const rss = stack.controller.rss();
      let offered = 0;
      let stalled = false;
      for (let i = 0; i < 256 && !stalled; i++) {
        ws.send(block(i));
        offered++;
        if (!ws.stream.writableNeedDrain) continue;
        const drained = await Promise.race([once(ws.stream, 'drain'), sleep(QUIET_MS, 'quiet')]);
        stalled = drained === 'quiet';
      }
      const accepted = offered * MiB - ws.stream.writableLength;
      const grew = stack.controller.rss() - rss;
      t.diagnostic(
        `accepted ${(accepted / MiB).toFixed(1)} MiB before the stall; controller RSS +${(grew / MiB).toFixed(1)} MiB`,
      );
      assert.ok(stalled, `the client never stalled: ${offered} MiB went in`);
      assert.ok(accepted < MAX_BUFFERED, `${accepted} bytes accepted`);
      assert.ok(grew < MAX_BUFFERED, `controller RSS grew by ${grew} bytes`);
      // The target reads again: every message arrives, in order, and comes back.
      socketOf(side.ws).resume();
      for (let i = 0; i < offered; i++) {
        const m = await within(ws.next(), EVENT_MS, `echo ${i}`);
        assert.equal(m.data.readUInt32BE(0), i);
      }
      ws.close(1000);
      await within(ws.finished, EVENT_MS, 'the stream to end');
    } finally {
      s.close();
    }
  });

  test('backpressure: a client that stops reading stalls the target, and the controller holds little', async (t) => {
    const s = session();
    try {
      const { ws } = await open(s, '/slow-client');
      const side = await within(upgrades.ws('/slow-client'), EVENT_MS, 'the target side');
      ws.stream.pause();
      const rss = stack.controller.rss();
      let written = 0;
      let offered = 0;
      let stalled = false;
      // The target sends a block whenever the last one left it; once none leaves for a while, it stalls.
      for (let i = 0; i < 256 && !stalled; i++) {
        const sent = new Promise<void>((resolve) => side.ws.send(block(i), () => resolve()));
        offered++;
        const outcome = await Promise.race([sent.then(() => 'sent'), sleep(QUIET_MS, 'quiet')]);
        if (outcome === 'sent') written++;
        else stalled = true;
      }
      const grew = stack.controller.rss() - rss;
      t.diagnostic(
        `the target wrote ${written} MiB before the stall; controller RSS +${(grew / MiB).toFixed(1)} MiB`,
      );
      assert.ok(stalled, `the target never stalled: ${written} MiB went out`);
      assert.ok(written * MiB < MAX_BUFFERED, `${written} MiB written`);
      assert.ok(grew < MAX_BUFFERED, `controller RSS grew by ${grew} bytes`);
      ws.stream.resume();
      for (let i = 0; i < offered; i++) {
        const m = await within(ws.next(), EVENT_MS, `message ${i}`);
        assert.equal(m.data.readUInt32BE(0), i);
      }
      ws.close(1000);
      await within(ws.finished, EVENT_MS, 'the stream to end');
    } finally {
      s.close();
    }
  });

  test('a client that resets its stream mid-way: the target sees its connection close', async () => {
    const s = session();
    try {
      const { ws } = await open(s, '/client-reset');
      const side = await within(upgrades.ws('/client-reset'), EVENT_MS, 'the target side');
      ws.send(block(0));
      await within(ws.next(), EVENT_MS, 'the echo');
      ws.send(block(1));
      ws.stream.close(constants.NGHTTP2_CANCEL);
      const closed = await within(side.closed, EVENT_MS, 'the target to see the reset');
      // No close frame came: the connection just went (1006).
      assert.equal(closed.code, 1006);
      // The session is fine: another WebSocket opens on it.
      const again = await open(s, '/after-reset');
      again.ws.send('still here');
      assert.equal((await within(again.ws.next(), EVENT_MS, 'the echo')).data.toString(), 'still here');
      again.ws.close(1000);
      await within(again.ws.finished, EVENT_MS, 'the stream to end');
    } finally {
      s.close();
    }
  });

  test("a target that resets its connection: the client's stream is reset (CONNECT_ERROR)", async () => {
    const s = session();
    try {
      const { ws } = await open(s, '/target-reset', {}, HOST, { endOnEnd: false });
      const side = await within(upgrades.ws('/target-reset'), EVENT_MS, 'the target side');
      ws.send('x');
      await within(ws.next(), EVENT_MS, 'the echo');
      socketOf(side.ws).resetAndDestroy();
      const line = await stack.controller.waitLine(
        'x',
        (l) => l.msg === 'request' && l.path === '/target-reset',
        EVENT_MS,
      );
      assert.equal(line.outcome, 'broken');
      assert.equal(
        await within(ws.finished, EVENT_MS, 'the stream to be reset'),
        `reset ${constants.NGHTTP2_CONNECT_ERROR}`,
      );
    } finally {
      s.close();
    }
  });

  test('a target that does not switch: its status and body, as an HTTP/2 response', async () => {
    const s = session();
    try {
      await within(remoteSettings(s), EVENT_MS, 'the server SETTINGS');
      const refused = await answer(s.request(connectHeaders(HOST, '/refuse'), { endStream: false }));
      assert.equal(refused.headers[':status'], 403);
      assert.equal(refused.body, REFUSED_BODY);
      for (const name of CONNECTION_SPECIFIC) assert.equal(refused.headers[name], undefined, name);
      // A plain HTTP target serves the GET as a request: a 404 is relayed ...
      const missing = await answer(
        s.request(connectHeaders(PLAIN, '/status?code=404'), { endStream: false }),
      );
      assert.equal(missing.headers[':status'], 404);
      assert.equal(missing.headers['x-origin'], 'plain');
      assert.equal(missing.body, 'body');
      // ... but a 2xx would tell the client its WebSocket is open: 502.
      const ok = await answer(
        s.request(connectHeaders(PLAIN, '/status?code=200', { accept: 'application/json' }), {
          endStream: false,
        }),
      );
      assert.equal(ok.headers[':status'], 502);
      assert.equal((JSON.parse(ok.body) as { error: { code: string } }).error.code, 'bad_response');
      for (const name of CONNECTION_SPECIFIC) assert.equal(ok.headers[name], undefined, name);
      // The session still serves WebSockets.
      const { ws } = await open(s, '/after-refusals');
      ws.close(1000);
      await within(ws.finished, EVENT_MS, 'the stream to end');
    } finally {
      s.close();
    }
  });

  test('a target whose 101 carries a wrong Sec-WebSocket-Accept: 502', async () => {
    const s = session();
    try {
      await within(remoteSettings(s), EVENT_MS, 'the server SETTINGS');
      const r = await answer(
        s.request(connectHeaders(BAD, '/', { accept: 'application/json' }), { endStream: false }),
      );
      assert.equal(r.headers[':status'], 502);
      const page = JSON.parse(r.body) as { error: { code: string; reason: string } };
      assert.equal(page.error.code, 'bad_response');
      assert.match(page.error.reason, /Sec-WebSocket-Accept/);
    } finally {
      s.close();
    }
  });

  test('CONNECT without :protocol, or with another protocol: 501; one with a body: 400', async () => {
    const s = session();
    try {
      await within(remoteSettings(s), EVENT_MS, 'the server SETTINGS');
      const plain = await answer(
        s.request(
          { ':method': 'CONNECT', ':authority': 'example.com:443', accept: 'application/json' },
          { endStream: false },
        ),
      );
      assert.equal(plain.headers[':status'], 501);
      assert.equal((JSON.parse(plain.body) as { error: { code: string } }).error.code, 'not_implemented');
      for (const name of CONNECTION_SPECIFIC) assert.equal(plain.headers[name], undefined, name);
      const other = await answer(
        s.request(connectHeaders(HOST, '/x', { ':protocol': 'connect-udp', accept: 'application/json' }), {
          endStream: false,
        }),
      );
      assert.equal(other.headers[':status'], 501);
      assert.equal((JSON.parse(other.body) as { error: { code: string } }).error.code, 'not_implemented');
      const body = await answer(
        s.request(connectHeaders(HOST, '/with-body', { 'content-length': '5' }), { endStream: false }),
      );
      assert.equal(body.headers[':status'], 400);
      const unknown = await answer(s.request(connectHeaders('other.test', '/'), { endStream: false }));
      assert.equal(unknown.headers[':status'], 404);
      const line = await stack.controller.waitLine(
        'the 501 log line',
        (l) => l.msg === 'request' && l.status === 501 && l.reasonCode === 'not_implemented',
        EVENT_MS,
      );
      assert.equal(line.method, 'CONNECT');
    } finally {
      s.close();
    }
  });

  test('50 WebSockets on one connection each echo; sluice_upgrades_open counts them; each is logged', async () => {
    const s = session();
    const sockets: H2WebSocket[] = [];
    try {
      const opened = await Promise.all(Array.from({ length: 50 }, (_, i) => open(s, `/many-${i}`)));
      for (const { ws } of opened) sockets.push(ws);
      const metrics = await (await fetch(`${stack.adminUrl}/metrics`)).text();
      const gauge = /^sluice_upgrades_open (\d+)$/m.exec(metrics);
      assert.ok(gauge !== null && Number(gauge[1]) >= 50, `sluice_upgrades_open: ${gauge?.[1]}`);
      sockets.forEach((ws, i) => ws.send(`to ${i}`));
      for (let i = 0; i < sockets.length; i++) {
        assert.equal((await within(sockets[i]!.next(), EVENT_MS, `echo ${i}`)).data.toString(), `to ${i}`);
      }
      for (const ws of sockets) ws.close(1000);
      await within(Promise.all(sockets.map((ws) => ws.finished)), EVENT_MS, 'every stream to end');
      await stack.controller.waitCount(
        'the log lines',
        (l) => l.msg === 'request' && String(l.path).startsWith('/many-') && l.status === 200,
        50,
        EVENT_MS,
      );
    } finally {
      s.close();
    }
  });

  // Last: it stops the controller.
  test('a drain: GOAWAY, the WebSocket works through the grace period, then its stream is ended', async () => {
    const s = session();
    try {
      const { ws } = await open(s, '/drain');
      const side = await within(upgrades.ws('/drain'), EVENT_MS, 'the target side');
      const goaway = new Promise<number>((resolve) => s.once('goaway', resolve));
      const signalled = performance.now();
      stack.controller.child.kill('SIGTERM');
      assert.equal(await within(goaway, EVENT_MS, 'the GOAWAY'), constants.NGHTTP2_NO_ERROR);
      ws.send('during the grace period');
      assert.equal(
        (await within(ws.next(), EVENT_MS, 'the echo')).data.toString(),
        'during the grace period',
      );
      // When the grace period ends the controller ends the stream: END_STREAM, the FIN of RFC 8441.
      await within(
        new Promise<void>((resolve) => ws.stream.once('end', resolve)),
        EVENT_MS,
        'the end of the stream',
      );
      assert.ok(performance.now() - signalled >= 1800, 'kept open for the grace period');
      ws.stream.end();
      const closed = await within(side.closed, EVENT_MS, 'the target to see the close');
      assert.equal(closed.code, 1006);
      assert.equal(await within(stack.controller.exited, READY_MS, 'the controller to exit'), 0);
      assert.ok(
        stack.controller.lines.some((l) => l.event === 'grace-ended' && l.upgrades === 1),
        'grace-ended counts the HTTP/2 WebSocket',
      );
    } finally {
      s.destroy();
    }
  });
});
