// Every way the public edge refuses a request carries a stable reason code, the same one in three
// places: the JSON error page's `code`, the request log line's `reasonCode` and the RequestDone the
// metrics and dashboard are told of (docs/errors.md, "Refusal reason codes"). Real HTTP on loopback,
// tunnels over real TCP; the agent side is the real delivery where it can be (policy, a closed port)
// and a hand-made peer where the case is the agent's answer itself (an RST code, broken records).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { TargetPolicy } from '../../src/agent/policy.js';
import type { ReasonCode } from '../../src/errors.js';
import { DEFAULT_HTTP_OPTIONS } from '../../src/controller/config.js';
import { PublicEdge, type RequestDone } from '../../src/controller/edge.js';
import { RouteTable } from '../../src/controller/routes.js';
import { TunnelRegistry } from '../../src/controller/tunnels.js';
import { ErrorCode } from '../../src/protocol/constants.js';
import { createTargetPool, deliverStream } from '../../src/agent/deliver.js';
import { guardedLookup } from '../../src/proxy/target.js';
import type { Stream } from '../../src/tunnel/stream.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { type SessionPair, sessionPair } from '../helpers/session-pair.js';
import { ask } from '../helpers/sluice-procs.js';
import { transportPair } from '../helpers/transport-pair.js';
import { waitFor, within } from '../helpers/wait.js';

let origin: Origin;
/** A real server outside the agent's policy. */
let forbidden: Origin;
let server: Server;
/** The edge's side of the latest connection accepted. */
let accepted: Socket | undefined;
let port: number;
let closedPort: number;
const pairs: SessionPair[] = [];
const pool = createTargetPool();
const done: RequestDone[] = [];
const lines: Record<string, unknown>[] = [];

/** A tunnel whose agent answers every stream with `behave`, in its own cluster. */
async function agentTunnel(
  registry: TunnelRegistry,
  cluster: string,
  behave: ((stream: Stream) => void) | null,
): Promise<void> {
  const pair = await sessionPair(transportPair('tcp'));
  pairs.push(pair);
  // Without a 'stream' listener the agent refuses every SYN with REFUSED_STREAM, as when draining.
  if (behave !== null) pair.client.on('stream', behave);
  registry.add({ session: pair.server, cluster, agent: cluster, replica: 'r1', since: 0 });
}

before(async () => {
  origin = await startOrigin('main');
  forbidden = await startOrigin('forbidden');
  // Port 1 (tcpmux), where nothing listens: a port freed by a probe could be taken again meanwhile
  // by another test's listener, which would accept the connection and leave it hanging (a 504).
  closedPort = 1;

  const registry = new TunnelRegistry();
  const policy = new TargetPolicy([`127.0.0.1:${origin.port}`, `127.0.0.1:${closedPort}`]);
  const agentLog = pino({ level: 'silent' });
  await agentTunnel(registry, 'live', (stream) =>
    deliverStream(stream, {
      policy,
      pool,
      connectTimeoutMs: 5_000,
      lookup: guardedLookup((ip) => policy.forbidsAddress(ip)),
      wildcardLookup: guardedLookup((ip) => policy.forbidsWildcardAddress(ip)),
      logger: agentLog,
    }),
  );
  await agentTunnel(registry, 'draining', null);
  await agentTunnel(registry, 'overloaded', (s) => s.reset(ErrorCode.OVERLOAD, 'at the stream limit'));
  await agentTunnel(registry, 'slow', (s) => s.reset(ErrorCode.TARGET_TIMEOUT, 'connect timed out'));
  await agentTunnel(registry, 'broken', (s) => s.reset(ErrorCode.INTERNAL_ERROR, 'agent bug'));
  await agentTunnel(registry, 'garbage', (s) => {
    s.on('error', () => {});
    s.resume();
    s.end(Buffer.from('this is not a response record\r\n'));
  });

  const route = (host: string, cluster: string, target = origin.url) => ({ host, cluster, target });
  const routes = new RouteTable([
    route('ok.test', 'live'),
    route('unreachable.test', 'live', `http://127.0.0.1:${closedPort}`),
    route('denied.test', 'live', forbidden.url),
    route('empty.test', 'nobody'),
    route('draining.test', 'draining'),
    route('overloaded.test', 'overloaded'),
    route('slow.test', 'slow'),
    route('broken.test', 'broken'),
    route('garbage.test', 'garbage'),
  ]);
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const edge = new PublicEdge({
    routes: () => routes,
    registry,
    // Long enough that a closed port's refusal, on a busy machine, comes before it (a 502, not a
    // 504); the /hang test waits it out once.
    http: { ...DEFAULT_HTTP_OPTIONS, responseTimeoutMs: 5_000, maxHeaders: 20 },
    logger,
    onRequestDone: (d) => done.push(d),
  });
  // As the controller's public server does: a small head limit, and timeouts checked often.
  server = createServer({ maxHeaderSize: 4096, headersTimeout: 500, connectionsCheckingInterval: 100 });
  server.on('request', edge.onRequest);
  server.on('upgrade', edge.onUpgrade);
  server.on('clientError', edge.onClientError);
  server.on('connection', (socket: Socket) => (accepted = socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  server?.close();
  server?.closeAllConnections();
  for (const p of pairs) await p.close();
  pool.destroy();
  await origin?.close();
  await forbidden?.close();
});

/** The JSON page of a refused request, checked against its RequestDone and its log line. */
async function refused(
  host: string,
  status: number,
  code: ReasonCode,
  extra: { path?: string; headers?: Record<string, string> } = {},
): Promise<void> {
  const requestId = `reasons-${code}-${host}`;
  const r = await within(
    ask({
      port,
      host,
      path: extra.path ?? '/headers',
      headers: { accept: 'application/json', 'x-request-id': requestId, ...extra.headers },
    }),
    15_000,
    `the answer for ${host}`,
  );
  assert.equal(r.status, status, r.body.toString());
  const page = (JSON.parse(r.body.toString()) as { error: { code: string; reason: string } }).error;
  assert.equal(page.code, code, 'the JSON page');
  await waitFor(`the RequestDone of ${requestId}`, () => done.some((d) => d.requestId === requestId));
  const finished = done.find((d) => d.requestId === requestId)!;
  assert.equal(finished.reasonCode, code, 'RequestDone');
  assert.equal(finished.reason, page.reason);
  const line = lines.find((l) => l.msg === 'request' && l.requestId === requestId);
  assert.ok(line, 'a request log line');
  assert.equal(line.reasonCode, code, 'the log line');
  assert.equal(line.reason, page.reason);
}

/** Writes `payload` raw and reads until the edge closes the connection. */
async function raw(payload: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  socket.on('error', () => {});
  const closed = once(socket, 'close');
  socket.write(payload);
  try {
    await within(closed, 10_000, 'the edge to answer and close');
  } finally {
    socket.destroy();
  }
  return Buffer.concat(chunks).toString('latin1');
}

describe('refusals before a tunnel is asked', () => {
  test('no_route (404)', () => refused('nobody.test', 404, 'no_route'));
  test('bad_request (400): a dot segment', () => refused('ok.test', 400, 'bad_request', { path: '/a/../b' }));
  test('loop (508)', () => refused('ok.test', 508, 'loop', { headers: { via: '1.1 sluice' } }));
  test('too_many_headers (431)', () => {
    const headers: Record<string, string> = {};
    for (let i = 0; i < 25; i++) headers[`x-field-${i}`] = String(i);
    return refused('ok.test', 431, 'too_many_headers', { headers });
  });
  test('no_tunnel (503): the cluster has no agent', () => refused('empty.test', 503, 'no_tunnel'));
});

describe("refusals from the agent's answer", () => {
  test('target_denied (502): outside the policy', () => refused('denied.test', 502, 'target_denied'));
  test('target_unreachable (502): a closed port', () =>
    refused('unreachable.test', 502, 'target_unreachable'));
  test('target_timeout (504): RST(TARGET_TIMEOUT)', () => refused('slow.test', 504, 'target_timeout'));
  test('agent_draining (503): REFUSED_STREAM', () => refused('draining.test', 503, 'agent_draining'));
  test('overloaded (503): RST(OVERLOAD)', () => refused('overloaded.test', 503, 'overloaded'));
  test('stream_broken (502): RST(INTERNAL_ERROR) before an answer', () =>
    refused('broken.test', 502, 'stream_broken'));
  test('bad_response (502): records that do not parse', () => refused('garbage.test', 502, 'bad_response'));
  test('timeout (504): no response head within http.responseTimeout', () =>
    refused('ok.test', 504, 'timeout', { path: '/hang' }));
});

describe('refusals on the raw socket', () => {
  test('an upgrade refused with no_route: the raw page and the log line carry it', async () => {
    const text = await raw(
      'GET /ws HTTP/1.1\r\nHost: nobody.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n' +
        'X-Request-Id: reasons-upgrade\r\nAccept: application/json\r\n\r\n',
    );
    assert.match(text, /^HTTP\/1\.1 404 /);
    assert.match(text, /"code":"no_route"/);
    await waitFor('the upgrade RequestDone', () => done.some((d) => d.requestId === 'reasons-upgrade'));
    assert.equal(done.find((d) => d.requestId === 'reasons-upgrade')!.reasonCode, 'no_route');
    const line = lines.find((l) => l.msg === 'request' && l.requestId === 'reasons-upgrade');
    assert.equal(line?.reasonCode, 'no_route');
  });

  // Node rejects these before they become requests: no RequestDone, but the page and the line.
  for (const [name, payload, status, code] of [
    ['garbage', 'this is not http\r\n\r\n', 400, 'bad_request'],
    [
      'a head too large',
      `GET / HTTP/1.1\r\nHost: ok.test\r\nX-Big: ${'a'.repeat(8192)}\r\n\r\n`,
      431,
      'head_too_large',
    ],
    ['a head that never ends', 'GET / HTTP/1.1\r\nHost: ok.test\r\n', 408, 'request_timeout'],
  ] as const) {
    test(`${name}: ${code} (${status})`, async () => {
      const before = lines.length;
      const text = await raw(payload);
      assert.match(text, new RegExp(`^HTTP/1\\.1 ${status} `));
      assert.ok(text.includes(`<p>Code: <code>${code}</code></p>`), text);
      await waitFor('the bad request line', () => lines.slice(before).some((l) => l.msg === 'bad request'));
      const line = lines.slice(before).find((l) => l.msg === 'bad request')!;
      assert.equal(line.reasonCode, code);
      assert.equal(line.status, status);
    });
  }
  // RFC 9112 §9.6: a server that closes at once while the client is still sending risks the client
  // never reading the response: the bytes still coming meet a closed socket and are answered with a
  // reset, which fails the client's next send (curl then reports no status at all) and may drop what
  // it has not read yet. Here the client sends its body only once the page has arrived, paced by its
  // drain as an uploader is: the edge takes every byte it sends, and the connection then closes with
  // no error on the client's side.
  test('a head too large, then its 1 MiB body: the edge reads it all, the client keeps its 431 (10 times)', async () => {
    const chunk = Buffer.alloc(64 * 1024, 'b');
    const head =
      `POST / HTTP/1.1\r\nHost: ok.test\r\nContent-Length: ${16 * chunk.length}\r\n` +
      `X-Big: ${'a'.repeat(8192)}\r\n\r\n`;
    const total = Buffer.byteLength(head) + 16 * chunk.length;
    for (let i = 1; i <= 10; i++) {
      accepted = undefined;
      const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      const chunks: Buffer[] = [];
      const page = once(socket, 'data');
      socket.on('data', (c: Buffer) => chunks.push(c));
      let failed: string | undefined;
      socket.on('error', (err: NodeJS.ErrnoException) => (failed ??= err.code ?? err.message));
      const closed = once(socket, 'close');
      try {
        socket.write(head);
        await within(page, 10_000, `connection ${i}'s page`);
        const edgeSide = accepted!;
        for (let n = 1; n <= 16 && failed === undefined; n++) {
          socket.write(chunk);
          const sent = Buffer.byteLength(head) + n * chunk.length;
          await waitFor(
            `the edge to read connection ${i}'s chunk ${n}`,
            () => edgeSide.bytesRead >= sent || edgeSide.destroyed,
            10_000,
          );
        }
        assert.equal(edgeSide.bytesRead, total, `the edge read all connection ${i} sent`);
        socket.end();
        await within(closed, 10_000, `connection ${i} to close`);
        const text = Buffer.concat(chunks).toString('latin1');
        assert.equal(failed, undefined, `connection ${i} failed after ${text.length} bytes of its answer`);
        assert.match(text, /^HTTP\/1\.1 431 /, `connection ${i}`);
        assert.ok(text.includes('<p>Code: <code>head_too_large</code></p>'), `connection ${i}: ${text}`);
      } finally {
        socket.destroy();
      }
    }
  });
});
