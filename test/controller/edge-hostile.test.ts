// The public edge in front of an agent that plays by no rules: each stream is answered with records
// written by hand (src/proxy/envelope.ts), in one write, so that the edge sees them in one chunk. Checks
// what the client gets, the request's log line, and what the edge keeps on an idle connection.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { DEFAULT_HTTP_OPTIONS } from '../../src/controller/config.js';
import { pendingLastRequest, PublicEdge, type RequestDone } from '../../src/controller/edge.js';
import { RouteTable } from '../../src/controller/routes.js';
import { TunnelRegistry } from '../../src/controller/tunnels.js';
import { ErrorCode } from '../../src/protocol/constants.js';
import { encodeBodyHeader, encodeHead } from '../../src/proxy/envelope.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { duplexPair } from '../helpers/duplex-pair.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { RawClient } from '../helpers/raw-http-client.js';
import { type SessionPair, sessionPair } from '../helpers/session-pair.js';

const HOST = 'app.test';
let server: Server;
let port: number;
let pair: SessionPair;
const done: RequestDone[] = [];
const sockets: Socket[] = [];
/** Streams the fake agent holds unanswered, by request id. */
const held = new Map<string, Stream>();

function ok(stream: Stream): void {
  stream.end(
    Buffer.concat([
      encodeHead({ status: 200, headers: ['Content-Length', '2'] }),
      encodeBodyHeader(2),
      Buffer.from('ok'),
    ]),
  );
}

/** The fake agent: what each path gets. */
function answer(stream: Stream): void {
  const head = (stream.meta.head ?? {}) as { path?: string };
  const id = String(stream.meta.requestId);
  stream.resume(); // the request's records are read and dropped
  stream.on('error', () => {});
  switch (head.path) {
    case '/ok':
      return ok(stream);
    case '/switch-then-200':
      // An unasked 101 and a 200 behind it, in one DATA frame.
      stream.write(
        Buffer.concat([
          encodeHead({ status: 101, headers: ['Connection', 'Upgrade', 'Upgrade', 'other'] }),
          encodeHead({ status: 200, headers: ['Content-Length', '2'] }),
          encodeBodyHeader(2),
          Buffer.from('ok'),
        ]),
      );
      return;
    case '/bad-head-then-body':
      // A head Node refuses to write (a control character in a value), and a body behind it.
      stream.write(
        Buffer.concat([
          encodeHead({ status: 200, headers: ['X-Bad', 'a\u0001b', 'Content-Length', '2'] }),
          encodeBodyHeader(2),
          Buffer.from('ok'),
        ]),
      );
      return;
    case '/break':
      // A head, part of the body, then a reset: the response can only be cut.
      stream.write(
        Buffer.concat([
          encodeHead({ status: 200, headers: ['Content-Length', '10'] }),
          encodeBodyHeader(2),
          Buffer.from('pa'),
        ]),
      );
      setImmediate(() => stream.reset(ErrorCode.INTERNAL_ERROR, 'broken on purpose'));
      return;
    default:
      held.set(id, stream);
  }
}

before(async () => {
  const registry = new TunnelRegistry();
  pair = await sessionPair(async () => {
    const { a, b } = duplexPair();
    return { client: a, server: b, close: async () => {} };
  });
  pair.client.on('stream', answer);
  registry.add({ session: pair.server, cluster: 'c1', agent: 'hostile', replica: 'r1', since: 0 });
  const routes = new RouteTable([{ host: HOST, cluster: 'c1', target: 'http://127.0.0.1:1' }]);
  const edge = new PublicEdge({
    routes: () => routes,
    registry,
    http: DEFAULT_HTTP_OPTIONS,
    logger: pino({ level: 'silent' }),
    onRequestDone: (d) => done.push(d),
  });
  server = createServer(edge.onRequest);
  server.on('connection', (s: Socket) => sockets.push(s));
  port = await listenOnLoopback(server);
});

after(async () => {
  for (const stream of held.values()) stream.destroy();
  server?.close();
  server?.closeAllConnections();
  await pair?.close();
});

let serial = 0;
function newId(label: string): string {
  return `hostile-${process.pid}-${++serial}-${label}`;
}

function get(path: string, id: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${HOST}\r\nX-Request-Id: ${id}\r\n${extra}\r\n`;
}

/** Resolves with the request's onRequestDone once it came (bounded). */
async function doneFor(id: string, timeoutMs = 10_000): Promise<RequestDone> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 10_000 && Date.now() < deadline; i++) {
    const found = done.find((d) => d.requestId === id);
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.fail(`no onRequestDone for ${id} within ${timeoutMs}ms`);
}

test('an idle keep-alive connection does not keep its last request', async () => {
  const id = newId('idle');
  const before = sockets.length;
  const client = await RawClient.open(port);
  try {
    client.write(get('/ok', id));
    const [response] = await client.responses(1);
    assert.equal(response!.statusLine, 'HTTP/1.1 200 OK');
    await doneFor(id);
    const socket = sockets.slice(before).find((s) => s.remotePort === client.socket.localPort);
    assert.ok(socket !== undefined, 'the server side of the connection');
    assert.equal(socket.destroyed, false, 'still open, idle');
    assert.equal(pendingLastRequest(socket), undefined);
  } finally {
    client.destroy();
  }
});

for (const [label, path] of [
  ['an unasked 101', '/switch-then-200'],
  ['a head that cannot be relayed', '/bad-head-then-body'],
] as const) {
  test(`records after ${label} in the same chunk are dropped: the client gets exactly one 502`, async () => {
    const id = newId(path.slice(1));
    const client = await RawClient.open(port);
    try {
      client.write(get(path, id, 'Connection: close\r\n'));
      const responses = await client.untilClosed();
      assert.deepEqual(
        responses.map((r) => r.statusLine),
        ['HTTP/1.1 502 Bad Gateway'],
      );
      assert.doesNotMatch(client.text, /200 OK/);
    } finally {
      client.destroy();
    }
    assert.equal((await doneFor(id)).status, 502);
  });
}

test('a pipelined response cut while queued is finished at once, as unsent', async () => {
  const first = newId('ahead');
  const second = newId('cut');
  const client = await RawClient.open(port);
  try {
    client.write(get('/hold', first) + get('/break', second));
    // The one ahead is still held by the agent: the cut one must not wait for it.
    const line = await doneFor(second);
    assert.equal(line.status, 0, 'the client never saw its status');
    assert.equal(line.outcome, 'broken');
    assert.equal(
      done.find((d) => d.requestId === first),
      undefined,
      'the one ahead is still in flight',
    );
    ok(held.get(first)!);
    const responses = await client.untilClosed();
    assert.deepEqual(
      responses.map((r) => r.statusLine),
      ['HTTP/1.1 200 OK'],
    );
  } finally {
    client.destroy();
  }
  assert.equal((await doneFor(first)).status, 200);
});
