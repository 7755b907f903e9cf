// WebSocket and every other Upgrade through real controller and agent processes (the upgrade issue):
// `ws` on both ends, a custom `Upgrade: echo/1` byte protocol, refusals, close and half-close, idle
// connections and a killed agent. The services run in this process on port 0.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { type AddressInfo, connect as netConnect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocket } from 'ws';
import { Stack } from '../helpers/sluice-procs.js';
import {
  REFUSED_BODY,
  startUpgradeOrigin,
  UPGRADE_REQUIRED,
  type UpgradeOrigin,
} from '../helpers/upgrade-origin.js';
import { EVENT_MS, scaled, waitFor, within } from '../helpers/wait.js';
import {
  type Dial,
  rawRequest,
  rawUpgrade,
  wsClosed,
  wsConnect,
  wsEcho,
  wsNext,
  wsOpened,
  wsRefused,
} from '../helpers/ws-client.js';

const MiB = 1024 * 1024;
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

let origin: UpgradeOrigin;
let stack: Stack;
let app: Dial;
let downPort: number;
let serial = 0;

/** A path no other connection uses, so the server side and the log line can be told apart. */
const unique = (what: string): string => `/${what}/${++serial}`;

before(async () => {
  origin = await startUpgradeOrigin();
  downPort = await closedPort();
  stack = await Stack.start({
    routes: [
      { host: 'ws.test', target: origin.url },
      { host: 'down.test', target: `http://127.0.0.1:${downPort}` },
    ],
  });
  app = { port: stack.port, host: 'ws.test' };
});

after(async () => {
  await stack?.stop();
  await origin?.close();
});

/** An open WebSocket and its server side. */
async function pair(path = unique('ws'), options: Parameters<typeof wsConnect>[2] = {}) {
  const client = wsConnect(app, path, options);
  client.on('error', () => {});
  const res = await wsOpened(client);
  const server = await within(origin.ws(path), EVENT_MS, 'the server side');
  return { client, server, res, path };
}

describe('ws echo', () => {
  test('text, binary and empty messages come back with their type', async () => {
    const { client } = await pair();
    const text = await wsEcho(client, 'hello, tunnel ✓');
    assert.equal(text.isBinary, false);
    assert.equal(text.data.toString('utf8'), 'hello, tunnel ✓');
    const bytes = randomBytes(4096);
    const binary = await wsEcho(client, bytes);
    assert.equal(binary.isBinary, true);
    assert.ok(binary.data.equals(bytes));
    const emptyText = await wsEcho(client, '');
    assert.equal(emptyText.isBinary, false);
    assert.equal(emptyText.data.length, 0);
    const emptyBinary = await wsEcho(client, Buffer.alloc(0));
    assert.equal(emptyBinary.isBinary, true);
    assert.equal(emptyBinary.data.length, 0);
    client.close(1000);
    await wsClosed(client);
  });

  test('a 16 MiB message comes back whole', async () => {
    const { client } = await pair();
    const big = randomBytes(16 * MiB);
    const echoed = await wsEcho(client, big, 60_000);
    assert.equal(echoed.data.length, big.length);
    assert.ok(echoed.data.equals(big), 'the 16 MiB echo differs from what was sent');
    client.close(1000);
    await wsClosed(client);
  });

  test('a fragmented message arrives as one message', async () => {
    const { client } = await pair();
    const pieces = ['frag-one ', 'frag-two ', '', 'frag-three'];
    const next = wsNext(client);
    pieces.forEach((piece, i) => client.send(piece, { fin: i === pieces.length - 1 }));
    const echoed = await next;
    assert.equal(echoed.isBinary, false);
    assert.equal(echoed.data.toString(), pieces.join(''));

    const parts = [randomBytes(100_000), randomBytes(1), randomBytes(70_000)];
    const nextBinary = wsNext(client);
    parts.forEach((part, i) => client.send(part, { binary: true, fin: i === parts.length - 1 }));
    const binary = await nextBinary;
    assert.equal(binary.isBinary, true);
    assert.ok(binary.data.equals(Buffer.concat(parts)));
    client.close(1000);
    await wsClosed(client);
  });

  test('ping and pong from both sides', async () => {
    const { client, server } = await pair();
    const pong = within(once(client, 'pong'), EVENT_MS, "the client's pong");
    client.ping(Buffer.from('client-ping'));
    assert.equal(((await pong) as [Buffer])[0].toString(), 'client-ping');

    const ping = within(once(client, 'ping'), EVENT_MS, "the server's ping at the client");
    const serverPong = within(once(server.ws, 'pong'), EVENT_MS, "the client's answer at the server");
    server.ws.ping(Buffer.from('server-ping'));
    assert.equal(((await ping) as [Buffer])[0].toString(), 'server-ping');
    assert.equal(((await serverPong) as [Buffer])[0].toString(), 'server-ping');
    client.close(1000);
    await wsClosed(client);
  });

  for (const code of [1000, 1001, 4000, 4999]) {
    test(`close code ${code} and its reason, client-initiated`, async () => {
      const { client, server } = await pair();
      const closed = wsClosed(client);
      client.close(code, `client closes with ${code}`);
      const seen = await within(server.closed, EVENT_MS, 'the close at the server');
      assert.equal(seen.code, code);
      assert.equal(seen.reason, `client closes with ${code}`);
      const back = await within(closed, EVENT_MS, 'the close at the client');
      assert.equal(back.code, code, 'the server echoes the close code');
      assert.equal(back.reason, `client closes with ${code}`);
    });

    test(`close code ${code} and its reason, server-initiated`, async () => {
      const { client, server } = await pair();
      const closed = wsClosed(client);
      server.ws.close(code, `server closes with ${code}`);
      const seen = await within(closed, EVENT_MS, 'the close at the client');
      assert.equal(seen.code, code);
      assert.equal(seen.reason, `server closes with ${code}`);
      const back = await within(server.closed, EVENT_MS, 'the close at the server');
      assert.equal(back.code, code);
    });
  }

  test('subprotocol selection, and the 101 headers arrive as the service sent them', async () => {
    const { client, server, res } = await pair(unique('proto'), { protocols: ['a', 'b'] });
    assert.equal(server.req.headers['sec-websocket-protocol'], 'a,b', 'as the ws client offers them');
    assert.equal(client.protocol, 'b');
    assert.equal(res.statusCode, 101);
    assert.equal(res.headers['sec-websocket-protocol'], 'b');
    const key = String(server.req.headers['sec-websocket-key']);
    const accept = createHash('sha1')
      .update(key + WS_GUID)
      .digest('base64');
    assert.equal(res.headers['sec-websocket-accept'], accept, 'the Accept the service computed');
    assert.equal(res.headers.upgrade?.toLowerCase(), 'websocket');
    assert.equal(res.headers['x-request-id'], server.req.headers['x-request-id']);
    client.close(1000);
    await wsClosed(client);
  });

  test('permessage-deflate is negotiated between client and service, and crosses compressed', async () => {
    const { client, server, res, path } = await pair(unique('deflate'), { perMessageDeflate: true });
    assert.match(String(server.req.headers['sec-websocket-extensions']), /permessage-deflate/);
    assert.match(String(res.headers['sec-websocket-extensions']), /permessage-deflate/);
    assert.match(client.extensions, /permessage-deflate/);
    const text = 'compress me please '.repeat(64 * 1024); // about 1.2 MiB, very compressible
    const echoed = await wsEcho(client, text);
    assert.equal(echoed.data.toString(), text);
    const closed = wsClosed(client);
    client.close(1000);
    await within(closed, EVENT_MS, 'the close');
    // The tunnel carried the compressed frames as they were: far fewer bytes than the text, each way.
    const line = await stack.controller.waitLine(
      'the log line of the compressed connection',
      (l) => l.msg === 'request' && l.path === path,
    );
    assert.equal(line.status, 101);
    assert.ok(Number(line.bytesIn) < 64 * 1024, `bytesIn ${line.bytesIn}`);
    assert.ok(Number(line.bytesOut) < 64 * 1024, `bytesOut ${line.bytesOut}`);
  });
});

describe('a custom Upgrade protocol (echo/1)', () => {
  test('64 MiB round-trips byte-exact with backpressure, bytes sent with the head first', async (t) => {
    const early = randomBytes(1024);
    const up = await rawUpgrade(app, unique('echo1'), early);
    assert.equal(up.status, 101, up.head);
    assert.equal(up.headers.get('upgrade'), 'echo/1');
    assert.match(up.headers.get('connection') ?? '', /upgrade/i);
    const { socket } = up;
    const total = 64 * MiB;

    const received = new Promise<{ bytes: number; sha256: string; first: Buffer }>((resolve, reject) => {
      const hash = createHash('sha256');
      let bytes = 0;
      const firsts: Buffer[] = [];
      const take = (chunk: Buffer): void => {
        if (bytes < early.length) firsts.push(chunk.subarray(0, early.length - bytes));
        hash.update(chunk);
        bytes += chunk.length;
      };
      take(up.after);
      socket.on('data', take);
      socket.once('end', () => resolve({ bytes, sha256: hash.digest('hex'), first: Buffer.concat(firsts) }));
      socket.once('error', reject);
    });
    socket.resume();

    const started = performance.now();
    const sent = createHash('sha256').update(early);
    const base = randomBytes(MiB);
    for (let offset = 0, index = 0; offset < total; index++) {
      const n = Math.min(64 * 1024, total - offset);
      const chunk = Buffer.from(base.subarray((index * 7919) % (MiB - n), ((index * 7919) % (MiB - n)) + n));
      chunk.writeUInt32BE(index, 0);
      sent.update(chunk);
      offset += n;
      if (!socket.write(chunk)) await within(once(socket, 'drain'), 30_000, 'drain');
    }
    socket.end();
    const got = await within(received, 120_000, 'the whole echo');
    t.diagnostic(`64 MiB echo in ${Math.round(performance.now() - started)} ms`);
    assert.equal(got.bytes, total + early.length);
    assert.ok(got.first.equals(early), 'the bytes written with the request head come back first');
    assert.equal(got.sha256, sent.digest('hex'));
    socket.destroy();
  });

  test("the target's bytes in the same write as its 101 come right behind the head", async () => {
    const up = await rawUpgrade(app, `${unique('echo1')}?greet`, Buffer.from('ping\n'));
    assert.equal(up.status, 101);
    let got = up.after;
    up.socket.on('data', (c: Buffer) => (got = Buffer.concat([got, c])));
    up.socket.resume();
    up.socket.end();
    await within(once(up.socket, 'end'), EVENT_MS, 'the end');
    assert.equal(got.toString(), 'hello\nping\n');
    up.socket.destroy();
  });

  test('Upgrade and Connection reach the service; the other hop-by-hop fields do not', async () => {
    const path = unique('echo1');
    const up = await rawUpgrade(
      app,
      path,
      undefined,
      'Connection: Upgrade, X-Hop\r\nUpgrade: echo/1\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n' +
        'Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-End-To-End: kept\r\n',
    );
    assert.equal(up.status, 101, up.head);
    const { req } = await within(origin.raw(path), EVENT_MS, 'the server side');
    assert.equal(req.headers.upgrade, 'echo/1');
    assert.equal(req.headers.connection?.toLowerCase(), 'upgrade');
    assert.equal(req.headers['x-hop'], undefined);
    assert.equal(req.headers['keep-alive'], undefined);
    assert.equal(req.headers['proxy-authorization'], undefined);
    assert.equal(req.headers['x-end-to-end'], 'kept');
    assert.equal(req.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(req.headers.via, '1.1 sluice');
    up.socket.destroy();
  });

  test('an upgrade on a keep-alive connection that already carried a plain request', async () => {
    const socket = netConnect({ host: '127.0.0.1', port: stack.port, allowHalfOpen: true });
    socket.on('error', () => {});
    await within(once(socket, 'connect'), EVENT_MS, 'the connection');
    const plain = await rawRequest(socket, app, '/plain', undefined, '');
    assert.equal(plain.status, 426, plain.head);
    assert.equal(plain.headers.get('content-length'), String(UPGRADE_REQUIRED.length), plain.head);
    await echoed(socket, plain.after, UPGRADE_REQUIRED);
    socket.pause();
    const up = await rawRequest(socket, app, unique('echo1'), Buffer.from('same connection'));
    assert.equal(up.status, 101, up.head);
    await echoed(socket, up.after, 'same connection');
    socket.destroy();
  });

  test('half-close: after the service sends its FIN, the client can still send to it', async () => {
    const up = await rawUpgrade(app, '/half-close', Buffer.from('early;'));
    assert.equal(up.status, 101);
    const side = await within(origin.raw('/half-close'), EVENT_MS, 'the server side');
    let got = up.after;
    up.socket.on('data', (c: Buffer) => (got = Buffer.concat([got, c])));
    const ended = within(once(up.socket, 'end'), EVENT_MS, "the service's FIN at the client");
    up.socket.resume();
    await ended;
    assert.equal(got.toString(), 'bye\n');
    assert.equal(up.socket.writable, true);
    const closed = within(once(up.socket, 'close'), EVENT_MS, 'the connection to close');
    up.socket.end('after-fin');
    const seen = await within(side.ended, EVENT_MS, "the client's FIN at the service");
    assert.equal(seen.toString(), 'early;after-fin');
    await closed;
    await within(side.closed, EVENT_MS, 'the connection to close at the service');
  });
});

describe('refusals', () => {
  test('a service that refuses the upgrade: its 403 and body reach the client', async () => {
    const client = wsConnect(app, '/refuse');
    const refused = await wsRefused(client);
    assert.equal(refused.status, 403);
    assert.equal(refused.body, REFUSED_BODY);
    assert.equal(refused.headers['content-type'], 'text/plain');

    const raw = await rawUpgrade(app, '/refuse', Buffer.from('never delivered'));
    assert.equal(raw.status, 403);
    let body = raw.after;
    raw.socket.on('data', (c: Buffer) => (body = Buffer.concat([body, c])));
    raw.socket.resume();
    await within(once(raw.socket, 'end'), EVENT_MS, 'the end of the refusal');
    assert.equal(body.toString(), REFUSED_BODY);
    raw.socket.destroy();
  });

  test('a target that is down: 502 with the reason', async () => {
    const client = wsConnect({ port: stack.port, host: 'down.test' }, '/', {
      headers: { accept: 'application/json' },
    });
    const refused = await wsRefused(client);
    assert.equal(refused.status, 502);
    const page = JSON.parse(refused.body) as { error: { reason: string; requestId: string } };
    assert.match(page.error.reason, /could not connect/);
    assert.equal(page.error.requestId, refused.headers['x-request-id']);
  });

  test('an unknown host: 404', async () => {
    const refused = await wsRefused(wsConnect({ port: stack.port, host: 'nobody.test' }, '/'));
    assert.equal(refused.status, 404);
  });
});

describe('close propagation', () => {
  test("the client destroys its socket: the service's socket closes within a second", async (t) => {
    const { client, server } = await pair();
    await wsEcho(client, 'alive');
    const at = performance.now();
    client.terminate();
    const seen = await within(server.closed, EVENT_MS, 'the close at the service');
    const ms = seen.at - at;
    t.diagnostic(`service saw the close after ${ms.toFixed(1)} ms`);
    assert.ok(ms < scaled(1000), `took ${ms} ms`);
    assert.equal(seen.code, 1006, 'no close frame was sent');
  });

  test("the service destroys its socket: the client's socket closes within a second", async (t) => {
    const { client, server } = await pair();
    await wsEcho(client, 'alive');
    const closed = wsClosed(client);
    const at = performance.now();
    server.ws.terminate();
    const seen = await within(closed, EVENT_MS, 'the close at the client');
    const ms = seen.at - at;
    t.diagnostic(`client saw the close after ${ms.toFixed(1)} ms`);
    assert.ok(ms < scaled(1000), `took ${ms} ms`);
    assert.equal(seen.code, 1006);
  });

  test("echo/1: a destroyed client socket closes the service's socket within a second", async () => {
    const path = unique('echo1');
    const up = await rawUpgrade(app, path);
    const side = await within(origin.raw(path), EVENT_MS, 'the server side');
    const at = performance.now();
    up.socket.destroy();
    const seen = await within(side.closed, EVENT_MS, 'the close at the service');
    assert.ok(seen.at - at < scaled(1000), `took ${seen.at - at} ms`);
  });

  test("echo/1: a client's reset reaches the service as a reset, not as a FIN", async () => {
    const path = unique('echo1');
    const up = await rawUpgrade(app, path, Buffer.from('x'));
    const side = await within(origin.raw(path), EVENT_MS, 'the server side');
    await echoed(up.socket, up.after, 'x');
    up.socket.resetAndDestroy();
    const seen = await within(side.closed, EVENT_MS, 'the close at the service');
    assert.equal(seen.error, 'ECONNRESET', 'the service took the reset for a clean end');
  });

  test("echo/1: a service's reset reaches the client as a reset, not as a FIN", async () => {
    const path = unique('echo1');
    const up = await rawUpgrade(app, path, Buffer.from('x'));
    const side = await within(origin.raw(path), EVENT_MS, 'the server side');
    await echoed(up.socket, up.after, 'x');
    const cut = new Promise<string | undefined>((resolve) => {
      up.socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code));
      up.socket.once('end', () => resolve('a FIN'));
    });
    side.socket.resetAndDestroy();
    assert.equal(await within(cut, EVENT_MS, 'the cut at the client'), 'ECONNRESET');
    up.socket.destroy();
  });

  test('50 connections open and close: each is logged with 101, none is left behind', async () => {
    const before = origin.openSockets();
    const paths = Array.from({ length: 50 }, () => unique('churn'));
    await Promise.all(
      paths.map(async (path, i) => {
        const { client, server } = await pair(path);
        await wsEcho(client, `churn ${i}`);
        const closed = wsClosed(client);
        // Every way a connection ends: client close, server close, and a cut from either side.
        if (i % 4 === 0) client.close(1000, 'bye');
        else if (i % 4 === 1) server.ws.close(1001, 'going away');
        else if (i % 4 === 2) client.terminate();
        else server.ws.terminate();
        await within(closed, EVENT_MS, `close of ${path}`);
        await within(server.closed, EVENT_MS, `close of ${path} at the service`);
      }),
    );
    const wanted = new Set(paths);
    await stack.controller.waitCount(
      '50 request lines',
      (l) => l.msg === 'request' && wanted.has(String(l.path)),
      50,
    );
    const lines = stack.controller.lines.filter((l) => l.msg === 'request' && wanted.has(String(l.path)));
    assert.equal(lines.length, 50);
    for (const line of lines) {
      assert.equal(line.status, 101, JSON.stringify(line));
      assert.equal(line.method, 'GET');
      assert.match(String(line.requestId), /^[0-9a-f]{32}$/);
    }
    await waitFor('the service to hold no more sockets than before', () => origin.openSockets() <= before);
    const { client } = await pair();
    assert.equal((await wsEcho(client, 'still works')).data.toString(), 'still works');
    client.close(1000);
    await wsClosed(client);
  });
});

describe('load', () => {
  test('1,000 concurrent WebSockets each exchange 100 messages, none lost or reordered', async (t) => {
    const connections = 1000;
    const messages = 100;
    const started = performance.now();
    await within(
      (async () => {
        const clients: WebSocket[] = [];
        // Opened in waves so that the SYN burst stays inside the listen backlogs; all 1,000 are open
        // at once before any message is sent.
        for (let i = 0; i < connections; i += 250) {
          const wave = Array.from({ length: Math.min(250, connections - i) }, (_, j) => {
            const ws = wsConnect(app, `/load/${i + j}`);
            ws.on('error', () => {});
            return ws;
          });
          await Promise.all(wave.map((ws) => wsOpened(ws, 60_000)));
          clients.push(...wave);
        }
        const opened = performance.now();
        t.diagnostic(`${connections} WebSockets open in ${Math.round(opened - started)} ms`);
        assert.equal(
          origin.wss.clients.size >= connections,
          true,
          `the service holds ${origin.wss.clients.size}`,
        );
        await Promise.all(clients.map((ws, i) => exchange(ws, i, messages)));
        t.diagnostic(
          `${connections * messages} messages echoed in ${Math.round(performance.now() - opened)} ms`,
        );
        await Promise.all(
          clients.map((ws) => {
            const closed = wsClosed(ws);
            ws.close(1000);
            return closed;
          }),
        );
      })(),
      120_000,
      'the load run',
    );
  });
});

/** Sends `count` numbered messages at once and checks the echoes arrive all, in order. */
function exchange(ws: WebSocket, connection: number, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let expected = 0;
    ws.on('message', (data: Buffer) => {
      const text = data.toString();
      if (text !== `${connection}:${expected}`) {
        reject(new Error(`connection ${connection}: got ${text}, expected ${connection}:${expected}`));
        return;
      }
      if (++expected === count) resolve();
    });
    ws.once('close', () => {
      if (expected < count) reject(new Error(`connection ${connection} closed after ${expected}`));
    });
    for (let n = 0; n < count; n++) ws.send(`${connection}:${n}`);
  });
}

describe('idle connections', () => {
  let idle: Stack;
  before(async () => {
    // Every HTTP timeout of the controller far below the idle time: none may apply to an upgraded
    // connection. The key names are those of the controller config's `http` section.
    idle = await Stack.start({
      routes: [{ host: 'ws.test', target: origin.url }],
      extraYaml: 'http:\n  headersTimeout: 1s\n  requestTimeout: 2s\n  keepAliveTimeout: 1s',
    });
  });
  after(async () => {
    await idle?.stop();
  });

  test('a WebSocket and an echo/1 connection idle past every HTTP timeout still work', async () => {
    const dial = { port: idle.port, host: 'ws.test' };
    const client = wsConnect(dial, unique('idle'));
    client.on('error', () => {});
    await wsOpened(client);
    await wsEcho(client, 'before');
    const raw = await rawUpgrade(dial, unique('echo1'), Buffer.from('x'));
    let got = raw.after;
    raw.socket.on('data', (c: Buffer) => (got = Buffer.concat([got, c])));
    raw.socket.resume();
    const closedEarly = wsClosed(client).then((c) => c.code);
    // The one fixed wait of this suite, on purpose: the connections must sit idle for longer than
    // requestTimeout (2 s) plus Node's 1 s check interval. There is no event to wait for: the point is
    // that nothing happens.
    await sleep(3_500);
    assert.equal(client.readyState, WebSocket.OPEN, 'the WebSocket was closed while idle');
    assert.equal((await wsEcho(client, 'after')).data.toString(), 'after');
    raw.socket.write('y');
    await waitFor('the echo/1 echo after idling', () => got.toString() === 'xy');
    raw.socket.end();
    await within(once(raw.socket, 'end'), EVENT_MS, 'the echo/1 end');
    raw.socket.destroy();
    client.close(1000);
    assert.equal(await within(closedEarly, EVENT_MS, 'the close'), 1000);
  });
});

describe('upgrade idle timeout, when configured', () => {
  let strict: Stack;
  before(async () => {
    strict = await Stack.start({
      routes: [{ host: 'ws.test', target: origin.url }],
      extraYaml: 'http:\n  upgradeIdleTimeout: 1s',
    });
  });
  after(async () => {
    await strict?.stop();
  });

  test('a silent WebSocket is closed after it, a busy one is not', async () => {
    const dial = { port: strict.port, host: 'ws.test' };
    const silent = wsConnect(dial, unique('silent'));
    const busy = wsConnect(dial, unique('busy'));
    for (const ws of [silent, busy]) ws.on('error', () => {});
    await Promise.all([wsOpened(silent), wsOpened(busy)]);
    const opened = performance.now();
    const silentClosed = wsClosed(silent);
    // Echo back to back for twice the timeout: the busy connection is never idle for a second.
    let echoes = 0;
    for (; echoes < 1_000_000 && performance.now() - opened < 2_000; echoes++) {
      await wsEcho(busy, `m${echoes}`);
    }
    const closed = await within(silentClosed, EVENT_MS, 'the silent WebSocket to be closed');
    const after = Math.round(closed.at - opened);
    assert.ok(after >= 900, `closed after ${after} ms, before the timeout`);
    assert.equal(busy.readyState, WebSocket.OPEN, `the busy WebSocket was closed after ${echoes} echoes`);
    busy.close(1000);
    await within(wsClosed(busy), EVENT_MS, 'the busy close');
  });
});

describe('agent killed mid-connection', () => {
  let doomed: Stack;
  before(async () => {
    doomed = await Stack.start({ routes: [{ host: 'ws.test', target: origin.url }] });
  });
  after(async () => {
    await doomed?.stop();
  });

  test('the client sees a close promptly, not a hang', async (t) => {
    const dial = { port: doomed.port, host: 'ws.test' };
    const path = unique('doomed');
    const client = wsConnect(dial, path);
    client.on('error', () => {});
    await wsOpened(client);
    const server = await within(origin.ws(path), EVENT_MS, 'the server side');
    await wsEcho(client, 'alive');
    const closed = wsClosed(client);
    const at = performance.now();
    doomed.agent!.child.kill('SIGKILL');
    const seen = await within(closed, EVENT_MS, 'the close at the client');
    t.diagnostic(`client closed ${Math.round(seen.at - at)} ms after the kill, code ${seen.code}`);
    assert.ok(seen.at - at < scaled(10_000), `closed ${Math.round(seen.at - at)} ms after the kill`);
    // The agent's socket to the service died with the process.
    await within(server.closed, EVENT_MS, 'the close at the service');
    // New connections get an answer, not a hang: no agent is connected any more.
    const refused = await wsRefused(wsConnect(dial, '/'));
    assert.equal(refused.status, 503);
  });
});

/** Resumes `socket` and waits until `text` has come back (counting `after`, read with the head). */
function echoed(socket: Socket, after: Buffer, text: string): Promise<void> {
  let got = after.toString('latin1');
  if (got === text) return Promise.resolve();
  const done = within(
    new Promise<void>((resolve) => {
      const onData = (c: Buffer): void => {
        got += c.toString('latin1');
        if (got.length >= text.length) {
          socket.off('data', onData);
          resolve();
        }
      };
      socket.on('data', onData);
    }),
    EVENT_MS,
    `the echo of ${text}`,
  ).then(() => assert.equal(got, text));
  socket.resume();
  return done;
}

/** A port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
