// The demo service over real sockets: each route, the page's escaping, the WebSocket echo, and a
// close() that does not wait for connected clients.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { type IncomingMessage, request } from 'node:http';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import {
  DEMO_EVENT_COUNT,
  DEMO_MAX_WS_PAYLOAD,
  type DemoService,
  startDemoService,
} from '../../src/dev/demo.js';
import { ConfigError } from '../../src/errors.js';
import { EVENT_MS, within } from '../helpers/wait.js';

let demo: DemoService;

beforeEach(async () => {
  demo = await startDemoService({ intervalMs: 5 });
});

afterEach(async () => {
  await demo.close();
});

/** A GET through node:http, which lets a test send any Host. */
async function rawGet(
  path: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string }> {
  const req = request(`${demo.url}${path}`, { headers, agent: false });
  req.end();
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  res.setEncoding('utf8');
  let body = '';
  for await (const chunk of res) body += chunk as string;
  return { status: res.statusCode ?? 0, body };
}

async function openWs(): Promise<WebSocket> {
  const ws = new WebSocket(`${demo.url.replace('http:', 'ws:')}/ws`);
  await once(ws, 'open');
  return ws;
}

async function nextMessage(ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  const [data, isBinary] = (await once(ws, 'message')) as [Buffer, boolean];
  return { data, isBinary };
}

describe('demo service: HTTP', () => {
  test('url and port name the bound address', () => {
    assert.ok(demo.port > 0);
    assert.equal(demo.url, `http://127.0.0.1:${demo.port}`);
  });

  test('GET / is the page, with the forwarding headers it received', async () => {
    const res = await fetch(`${demo.url}/`, {
      headers: {
        'X-Forwarded-For': '203.0.113.7',
        'X-Forwarded-Proto': 'https',
        Via: '1.1 sluice',
        'X-Request-Id': 'r-42',
      },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    const html = await res.text();
    assert.match(html, /<title>Sluice demo<\/title>/);
    assert.ok(html.includes(`<tr><th>Host</th><td>127.0.0.1:${demo.port}</td></tr>`));
    assert.ok(html.includes('<tr><th>X-Forwarded-For</th><td>203.0.113.7</td></tr>'));
    assert.ok(html.includes('<tr><th>X-Forwarded-Proto</th><td>https</td></tr>'));
    assert.ok(html.includes('<tr><th>Via</th><td>1.1 sluice</td></tr>'));
    assert.ok(html.includes('<tr><th>X-Request-Id</th><td>r-42</td></tr>'));
  });

  test('the page is self-contained: inline script pinned by the CSP, no external assets', async () => {
    const res = await fetch(`${demo.url}/`);
    const html = await res.text();
    assert.doesNotMatch(html, /<script[^>]+src=|<link|<img|https?:\/\//);
    const script = /<script>([\s\S]*?)<\/script>/.exec(html)?.[1];
    assert.ok(script !== undefined && script.includes("+ '/ws'") && script.includes('location.host'));
    const hash = createHash('sha256').update(script).digest('base64');
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.ok(csp.includes(`script-src 'sha256-${hash}'`), csp);
    assert.ok(csp.includes("default-src 'none'"));
  });

  test('the page escapes what it shows', async () => {
    const { status, body } = await rawGet('/', {
      Host: '<script>alert(1)</script>',
      'X-Forwarded-For': '"><img src=x onerror=alert(2)>',
      'X-Request-Id': "a&b'c",
    });
    assert.equal(status, 200);
    assert.ok(!body.includes('<script>alert'));
    assert.ok(!body.includes('<img'));
    assert.ok(body.includes('<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>'));
    assert.ok(body.includes('<td>&quot;&gt;&lt;img src=x onerror=alert(2)&gt;</td>'));
    assert.ok(body.includes('<td>a&amp;b&#39;c</td>'));
  });

  test('HEAD / has the headers and no body', async () => {
    const res = await fetch(`${demo.url}/`, { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.ok(Number(res.headers.get('content-length')) > 0);
    assert.equal((await res.arrayBuffer()).byteLength, 0);
  });

  test('/api/echo reports method, url, raw headers and the body digest', async () => {
    const body = Buffer.alloc(300_000, 'sluice');
    const res = await fetch(`${demo.url}/api/echo?x=1`, {
      method: 'PUT',
      headers: { 'X-Case-Kept': 'yes', 'content-type': 'application/octet-stream' },
      body,
    });
    assert.equal(res.status, 200);
    const echo = (await res.json()) as {
      method: string;
      url: string;
      headers: string[];
      bodyBytes: number;
      sha256: string;
    };
    assert.equal(echo.method, 'PUT');
    assert.equal(echo.url, '/api/echo?x=1');
    assert.equal(echo.bodyBytes, body.length);
    assert.equal(echo.sha256, createHash('sha256').update(body).digest('hex'));
    const at = echo.headers.findIndex((h) => h.toLowerCase() === 'x-case-kept');
    assert.ok(at >= 0 && at % 2 === 0 && echo.headers[at + 1] === 'yes');
  });

  test('/api/echo with no body', async () => {
    const echo = (await (await fetch(`${demo.url}/api/echo`)).json()) as {
      method: string;
      bodyBytes: number;
      sha256: string;
    };
    assert.equal(echo.method, 'GET');
    assert.equal(echo.bodyBytes, 0);
    assert.equal(echo.sha256, createHash('sha256').digest('hex'));
  });

  test('/events sends each tick as it happens, then ends', async () => {
    const res = await fetch(`${demo.url}/events`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    const expected = Array.from({ length: DEMO_EVENT_COUNT }, (_, i) => `data: tick ${i + 1}\n\n`).join('');
    assert.equal(await res.text(), expected);
  });

  test('/events flushes the first tick before the next is due', async () => {
    const slow = await startDemoService({ intervalMs: 60_000 });
    try {
      const controller = new AbortController();
      const res = await fetch(`${slow.url}/events`, { signal: controller.signal });
      const reader = res.body!.getReader();
      const first = await within(reader.read(), EVENT_MS, 'the first event');
      assert.equal(Buffer.from(first.value!).toString('utf8'), 'data: tick 1\n\n');
      controller.abort();
      await assert.rejects(reader.read(), { name: 'AbortError' });
    } finally {
      await slow.close();
    }
  });

  test('/healthz is ok', async () => {
    const res = await fetch(`${demo.url}/healthz`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'ok');
  });

  test('anything else is 404; a known path with the wrong method is 405', async () => {
    for (const path of ['/nope', '/healthz/x', '/ws']) {
      const res = await fetch(`${demo.url}${path}`);
      assert.equal(res.status, 404, path);
      await res.arrayBuffer();
    }
    const res = await fetch(`${demo.url}/healthz`, { method: 'POST', body: 'x' });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get('allow'), 'GET, HEAD');
    await res.arrayBuffer();
  });
});

describe('demo service: WebSocket echo', () => {
  test('echoes text as text and binary as binary', async () => {
    const ws = await openWs();
    ws.send('hello through the tunnel');
    const text = await nextMessage(ws);
    assert.equal(text.isBinary, false);
    assert.equal(text.data.toString('utf8'), 'hello through the tunnel');
    const bytes = Buffer.from([0, 1, 2, 255, 254]);
    ws.send(bytes);
    const binary = await nextMessage(ws);
    assert.equal(binary.isBinary, true);
    assert.deepEqual(binary.data, bytes);
    ws.close();
    await once(ws, 'close');
  });

  test(`a message up to ${DEMO_MAX_WS_PAYLOAD} bytes is echoed; a bigger one closes with 1009`, async () => {
    const ws = await openWs();
    const max = Buffer.alloc(DEMO_MAX_WS_PAYLOAD, 7);
    ws.send(max);
    assert.deepEqual((await nextMessage(ws)).data, max);
    ws.send(Buffer.alloc(DEMO_MAX_WS_PAYLOAD + 1));
    const [code] = (await once(ws, 'close')) as [number];
    assert.equal(code, 1009);
  });

  test('an upgrade to another path is refused', async () => {
    const ws = new WebSocket(`${demo.url.replace('http:', 'ws:')}/`);
    const [err] = (await once(ws, 'error')) as [Error];
    assert.match(err.message, /404/);
  });
});

describe('demo service: close', () => {
  test('resolves with a WebSocket client still connected, and disconnects it', async () => {
    const ws = await openWs();
    const closed = once(ws, 'close');
    await within(demo.close(), EVENT_MS, 'close()');
    await within(closed, EVENT_MS, 'the client to see the close');
    assert.equal(ws.readyState, WebSocket.CLOSED);
  });

  test('resolves with an idle keep-alive connection and a running /events', async () => {
    const slow = await startDemoService({ intervalMs: 60_000 });
    await (await fetch(`${slow.url}/healthz`)).text(); // leaves a pooled keep-alive socket
    const res = await fetch(`${slow.url}/events`);
    const reader = res.body!.getReader();
    await reader.read();
    await within(slow.close(), EVENT_MS, 'close()');
    await assert.rejects(reader.read());
  });

  test('is idempotent, and stops listening', async () => {
    const first = demo.close();
    assert.equal(demo.close(), first);
    await first;
    await assert.rejects(fetch(`${demo.url}/healthz`));
  });
});

describe('demo service: options', () => {
  test('bad values fail fast with the key named', async () => {
    await assert.rejects(startDemoService({ port: 70000 }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message, 'demo.port must be an integer from 0 to 65535');
      return true;
    });
    await assert.rejects(
      startDemoService({ intervalMs: 0 }),
      /demo\.intervalMs must be an integer from 1 to 60000/,
    );
  });
});
