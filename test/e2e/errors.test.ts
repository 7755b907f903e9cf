// The error paths of the HTTP edge through real controller and agent processes (DESIGN §3, the HTTP
// issue's "Errors" and "Logs"): every status the controller answers itself carries its reason and the
// request id, in the format Accept asks for; slow or oversized requests are refused without taking the
// controller down; each request leaves one log line, and each tunnel one readiness line.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask, type LogLine, type Reply, Stack } from '../helpers/sluice-procs.js';
import { EVENT_MS, within } from '../helpers/wait.js';

const JSON_ACCEPT = 'application/json';
// What Firefox and Chrome send for a page load.
const BROWSER_ACCEPT =
  'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8';

let origin: Origin;
/** A real server the agent's policy does not allow; it must never see a connection. */
let second: Origin;
let secondConnections = 0;
/** A port that was bound and closed again: connecting to it is refused. */
let refusedPort: number;
let stack: Stack;

before(async () => {
  origin = await startOrigin('main');
  second = await startOrigin('second');
  second.server.on('connection', () => secondConnections++);
  refusedPort = await closedPort();
  stack = await Stack.start({
    routes: [
      { host: 'app.test', target: origin.url },
      { host: 'none.test', cluster: 'empty', target: origin.url },
      { host: 'refused.test', target: `http://127.0.0.1:${refusedPort}` },
      { host: 'denied.test', target: second.url },
    ],
    // Exact ports only: the second server's port is outside the policy.
    allow: [`127.0.0.1:${origin.port}`, `127.0.0.1:${refusedPort}`],
    tunnels: 3,
  });
});

after(async () => {
  await stack?.stop();
  await origin?.close();
  await second?.close();
});

async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

interface PageJson {
  error: { status: number; title: string; code: string; reason: string; requestId: string };
}

/** Checks a JSON error page: its status, and the request id in the header equal to the body's. */
function jsonPage(r: Reply, status: number): PageJson['error'] {
  assert.equal(r.status, status, r.body.toString());
  assert.match(String(r.headers['content-type']), /^application\/json/);
  const page = (JSON.parse(r.body.toString()) as PageJson).error;
  assert.equal(page.status, status);
  assert.ok(page.requestId.length > 0, 'the page names a request id');
  assert.equal(page.requestId, r.headers['x-request-id'], 'X-Request-Id equals the id in the page');
  return page;
}

function get(port: number, host: string, path: string, requestId: string, accept = JSON_ACCEPT) {
  return ask({ port, host, path, headers: { accept, 'x-request-id': requestId } });
}

interface RawReply {
  status: number;
  headers: Map<string, string>;
  body: string;
  /** The whole response as received, head included. */
  text: string;
}

/**
 * Writes `payload` on a fresh connection to the controller's public port and reads until the
 * controller closes it (bounded by `ms`). For requests node:http's client would not send.
 */
async function raw(port: number, payload: string, ms = EVENT_MS): Promise<RawReply> {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (c: Buffer) => chunks.push(c));
  // A reset after the answer (the controller closing with input unread) is not a failure here: the
  // bytes that arrived are what is checked.
  socket.on('error', () => {});
  const closed = once(socket, 'close');
  socket.write(payload);
  try {
    await within(closed, ms, 'the controller to answer and close the connection');
  } finally {
    socket.destroy();
  }
  const text = Buffer.concat(chunks).toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  assert.ok(end > 0, `a whole response head, got ${JSON.stringify(text.slice(0, 200))}`);
  const [statusLine = '', ...fields] = text.slice(0, end).split('\r\n');
  const headers = new Map<string, string>();
  for (const f of fields) {
    const colon = f.indexOf(':');
    headers.set(f.slice(0, colon).trim().toLowerCase(), f.slice(colon + 1).trim());
  }
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(statusLine)?.[1] ?? 0);
  return { status, headers, body: text.slice(end + 4), text };
}

/** Checks an HTML error page received raw: the status, the reason, its code and the header id in the body. */
function htmlPage(r: RawReply, status: number, reason: RegExp, code: string): void {
  assert.equal(r.status, status, r.text.slice(0, 500));
  assert.match(r.headers.get('content-type') ?? '', /^text\/html/);
  const id = r.headers.get('x-request-id') ?? '';
  assert.ok(id.length > 0, 'X-Request-Id is set');
  assert.ok(r.body.includes(`<code>${id}</code>`), 'the page shows the id of its header');
  assert.match(r.body, reason);
  assert.ok(r.body.includes(`<p>Code: <code>${code}</code></p>`), `the page names the code ${code}`);
}

describe('each error status, with its reason and the request id', () => {
  test("503 when the route's cluster has no connected agent", async () => {
    const r = await get(stack.port, 'none.test', '/headers', 'e2e-503');
    const page = jsonPage(r, 503);
    assert.equal(page.requestId, 'e2e-503', "the client's request id is the page's");
    assert.equal(page.reason, 'no agent of cluster empty is connected');
    assert.equal(page.code, 'no_tunnel');
  });

  test('502 when the target refuses the connection', async () => {
    const r = await get(stack.port, 'refused.test', '/headers', 'e2e-refused');
    const page = jsonPage(r, 502);
    assert.equal(page.reason, 'the agent could not connect to the target');
    assert.equal(page.code, 'target_unreachable');
    assert.equal(page.requestId, 'e2e-refused');
  });

  test("502 when the agent's policy denies the target, which is never dialed", async () => {
    const r = await get(stack.port, 'denied.test', '/headers', 'e2e-denied');
    const page = jsonPage(r, 502);
    assert.equal(page.reason, "the agent's policy does not allow this route's target");
    assert.equal(page.code, 'target_denied');
    const line = await stack.agent!.waitLine(
      'the policy refusal in the agent log',
      (l) => l.msg === 'target refused by policy' && l.requestId === 'e2e-denied',
    );
    assert.equal(typeof line.reason, 'string');
    assert.ok(String(line.reason).length > 0, 'the agent logs why');
    assert.match(String(line.target), new RegExp(`:${second.port}\\b`));
    assert.equal(secondConnections, 0, 'the denied target never saw a connection');
  });
});

describe('error pages by Accept', () => {
  test('JSON for application/json', async () => {
    const r = await get(stack.port, 'nobody.test', '/', 'e2e-json');
    const page = jsonPage(r, 404);
    assert.equal(page.title, 'Not Found');
    assert.equal(page.reason, 'no route for host nobody.test');
  });

  test("HTML for a browser's Accept", async () => {
    const r = await get(stack.port, 'none.test', '/', 'e2e-html', BROWSER_ACCEPT);
    assert.equal(r.status, 503);
    assert.match(String(r.headers['content-type']), /^text\/html; charset=utf-8$/);
    assert.match(String(r.headers['content-security-policy']), /default-src 'none'/);
    const html = r.body.toString();
    assert.equal(r.headers['x-request-id'], 'e2e-html');
    assert.ok(html.includes('<code>e2e-html</code>'), html);
    assert.ok(html.includes('<p>no agent of cluster empty is connected</p>'), html);
  });

  test('a Host with markup is refused, and nothing of it is rendered unescaped', async () => {
    const host = '<script>alert(1)</script>.test';
    const r = await ask({ port: stack.port, host, headers: { accept: BROWSER_ACCEPT } });
    assert.ok(r.status === 400 || r.status === 404, `status ${r.status}`);
    const html = r.body.toString();
    assert.match(html, /^<!doctype html>/);
    assert.ok(!html.includes('<script'), html);
    assert.ok(!html.includes('alert(1)') || html.includes('&lt;script&gt;alert(1)'), html);
    assert.ok(html.includes(`<code>${String(r.headers['x-request-id'])}</code>`));
  });

  test('HEAD gets the header section and no body', async () => {
    const head = await raw(
      stack.port,
      'HEAD /x HTTP/1.1\r\nHost: nobody.test\r\nAccept: application/json\r\nConnection: close\r\n\r\n',
    );
    assert.equal(head.status, 404);
    assert.match(head.headers.get('content-type') ?? '', /^application\/json/);
    assert.match(head.headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/);
    assert.equal(head.body, '', 'no body after the head');
    // The same request as a GET (its generated id has the same length): Content-Length is its page's.
    const got = await ask({
      port: stack.port,
      host: 'nobody.test',
      path: '/x',
      headers: { accept: JSON_ACCEPT },
    });
    jsonPage(got, 404);
    assert.equal(Number(head.headers.get('content-length')), got.body.length);
  });
});

describe('logs', () => {
  test('one request line per request: route, cluster, status, bytes and duration', async () => {
    const body = Buffer.alloc(12_345, 'b');
    const ok = await ask({
      port: stack.port,
      host: 'app.test',
      method: 'POST',
      path: '/hash',
      headers: { 'x-request-id': 'e2e-log-post', 'content-type': 'application/octet-stream' },
      body,
    });
    assert.equal(ok.status, 200);
    assert.equal((JSON.parse(ok.body.toString()) as { bytes: number }).bytes, body.length);
    const missing = await get(stack.port, 'nobody.test', '/', 'e2e-log-404');
    jsonPage(missing, 404);

    const isRequest = (id: string) => (l: LogLine) => l.msg === 'request' && l.requestId === id;
    const post = await stack.controller.waitLine('the POST request line', isRequest('e2e-log-post'));
    assert.equal(post.route, 'app.test');
    assert.equal(post.cluster, 'c1');
    assert.equal(post.method, 'POST');
    assert.equal(post.status, 200);
    assert.equal(post.bytesIn, body.length);
    assert.equal(post.bytesOut, ok.body.length);
    assert.equal(typeof post.ms, 'number');
    assert.ok((post.ms as number) >= 0);

    const notFound = await stack.controller.waitLine('the 404 request line', isRequest('e2e-log-404'));
    assert.equal(notFound.status, 404);
    assert.equal(notFound.reason, 'no route for host nobody.test');
    assert.equal(notFound.reasonCode, 'no_route');
    assert.equal(post.reasonCode, undefined, 'a request served is no refusal');
    assert.equal(notFound.route, undefined, 'no route matched');
    assert.equal(notFound.bytesIn, 0);
    assert.equal(notFound.bytesOut, missing.body.length, 'the error page is what was sent');
    assert.equal(typeof notFound.ms, 'number');

    // Both lines were written when their responses closed; no second line follows for either.
    assert.equal(stack.controller.lines.filter(isRequest('e2e-log-post')).length, 1);
    assert.equal(stack.controller.lines.filter(isRequest('e2e-log-404')).length, 1);
  });

  test('the agent logs one readiness line per tunnel; the controller names the cluster', async () => {
    const agent = stack.agent!;
    const up = (l: LogLine) => l.event === 'tunnel-up';
    await agent.waitCount('3 tunnel-up lines from the agent', up, 3);
    const lines = agent.lines.filter(up);
    assert.equal(lines.length, 3, '--tunnels 3 gives 3 lines');
    assert.deepEqual(lines.map((l) => l.tunnel).sort(), [0, 1, 2]);
    const controllerLines = stack.controller.lines.filter(up);
    assert.equal(controllerLines.length, 3);
    for (const l of controllerLines) {
      assert.equal(l.cluster, 'c1');
      assert.equal(l.agent, 'e2e');
    }
  });
});

describe('timeouts and limits (1 s timeouts, at most 50 header fields)', () => {
  let tight: Stack;
  before(async () => {
    tight = await Stack.start({
      routes: [{ host: 'app.test', target: origin.url }],
      extraYaml: 'http:\n  responseTimeout: 1s\n  headersTimeout: 1s\n  maxHeaders: 50',
      allow: [`127.0.0.1:${origin.port}`],
      tunnels: 1,
    });
  });
  after(async () => {
    await tight?.stop();
  });

  test('504 on the upstream response timeout, and the origin sees the request dropped', async () => {
    const dropped = origin.whenAborted('e2e-timeout');
    const started = Date.now();
    const r = await within(
      get(tight.port, 'app.test', '/hang', 'e2e-timeout'),
      EVENT_MS,
      'the 504 after a 1 s response timeout',
    );
    const page = jsonPage(r, 504);
    assert.equal(page.reason, 'the target did not answer within 1s');
    assert.equal(page.code, 'timeout');
    assert.equal(page.requestId, 'e2e-timeout');
    assert.ok(Date.now() - started >= 900, 'not before the timeout');
    await within(dropped, EVENT_MS, 'the origin to see the request dropped');
  });

  test('a request head that never ends is answered 408 and closed', async () => {
    const started = Date.now();
    const r = await raw(tight.port, 'GET / HTTP/1.1\r\nHost: app.test\r\n', 5_000);
    htmlPage(r, 408, /the request was not received in time/, 'request_timeout');
    assert.equal(r.headers.get('connection'), 'close');
    assert.ok(Date.now() - started >= 900, 'not before the headers timeout');
  });

  test('a 20 KiB header gets 431', async () => {
    const r = await raw(
      tight.port,
      `GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`,
    );
    htmlPage(r, 431, /the request head is larger than this gateway accepts/, 'head_too_large');
  });

  test('60 header fields get 431', async () => {
    let head = 'GET /headers HTTP/1.1\r\nHost: app.test\r\n';
    for (let i = 0; i < 60; i++) head += `X-Field-${i}: ${i}\r\n`;
    const r = await raw(tight.port, `${head}\r\n`);
    htmlPage(r, 431, /the request has more than 50 header fields/, 'too_many_headers');
    assert.equal(r.headers.get('connection'), 'close');
  });

  test('a garbage request line gets 400', async () => {
    const r = await raw(tight.port, 'this is not http\r\n\r\n');
    htmlPage(r, 400, /the request is not valid HTTP\/1\.1/, 'bad_request');
  });

  test('two Host headers get 400', async () => {
    const r = await raw(tight.port, 'GET /headers HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n');
    htmlPage(r, 400, /the request has more than one Host header/, 'bad_request');
    assert.equal(r.headers.get('connection'), 'close');
  });

  test('none of these took the controller down: a normal request still works', async () => {
    assert.equal(tight.controller.child.exitCode, null);
    const r = await ask({ port: tight.port, host: 'app.test', path: '/headers' });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['x-origin'], 'main');
  });
});

describe('the agent dies mid-request', () => {
  let dying: Stack;
  before(async () => {
    dying = await Stack.start({ routes: [{ host: 'app.test', target: origin.url }] });
  });
  after(async () => {
    await dying?.stop();
  });

  test('502 at once (not at the 60 s response timeout), then 503 with no agent left', async () => {
    const id = 'e2e-agent-killed';
    const reply = get(dying.port, 'app.test', '/hang', id);
    await within(origin.whenRequested(id), EVENT_MS, 'the origin to receive the request');
    const dropped = origin.whenAborted(id);
    dying.agent!.child.kill('SIGKILL');
    const r = await within(reply, EVENT_MS, 'the 502 after the agent was killed');
    const page = jsonPage(r, 502);
    assert.equal(page.requestId, id);
    assert.match(page.reason, /^the tunnel stream (broke|closed) before the target answered$/);
    assert.equal(page.code, 'stream_broken');
    await within(dropped, EVENT_MS, "the origin to see the dead agent's connection close");

    await dying.controller.waitCount('both tunnels down', (l) => l.event === 'tunnel-down', 2);
    const next = await get(dying.port, 'app.test', '/headers', 'e2e-after-kill');
    const none = jsonPage(next, 503);
    assert.equal(none.reason, 'no agent of cluster c1 is connected');
    assert.equal(none.code, 'no_tunnel');
    assert.equal(dying.controller.child.exitCode, null, 'the controller is still up');
  });
});
