// Header games at the public edge, played over raw sockets through real controller and agent processes
// (issue 11, items 8 to 11 and 14): what the target actually receives when a client sends forwarding
// headers, Connection tokens naming framing fields, `Upgrade: h2c`, or a path that a lenient server
// would walk out of its route's prefix with. Framing games (pipelining, smuggling) are in
// raw-http.test.ts. The origin runs in this process and echoes what it saw.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, describe, test, type TestContext } from 'node:test';
import { listenOnLoopback } from '../helpers/listen.js';
import { Stack } from '../helpers/sluice-procs.js';
import { within } from '../helpers/wait.js';

const CURL = '/usr/bin/curl';
const WAIT_MS = 30_000;

/** What the origin saw of one request, as it echoes it back. */
interface Seen {
  method: string;
  url: string;
  rawHeaders: string[];
  body: string;
}

interface RecordingOrigin {
  readonly url: string;
  /** Every request that reached it, plain or upgrade, in arrival order. */
  readonly seen: Seen[];
  close(): Promise<void>;
}

/**
 * Answers every plain request with 200 and a JSON echo of its method, target, raw headers and body. An
 * `Upgrade: h2c` that reaches it is accepted with a 101, as an h2c-capable server would: from then on
 * the client would speak HTTP/2 to it directly, past every route and check of the edge.
 */
async function startRecordingOrigin(): Promise<RecordingOrigin> {
  const seen: Seen[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const record = { ...describe(req), body: Buffer.concat(chunks).toString('latin1') };
      seen.push(record);
      const body = JSON.stringify(record);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    seen.push({ ...describe(req), body: '' });
    socket.on('error', () => {});
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  const port = await listenOnLoopback(server);
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };

  function describe(req: IncomingMessage): Omit<Seen, 'body'> {
    return { method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders };
  }
}

/** One response read off a raw connection. */
interface RawResponse {
  status: number;
  /** Lowercase name → values, in order. */
  headers: Map<string, string[]>;
  body: string;
}

/**
 * A raw HTTP/1.1 client connection: writes exactly the bytes given and parses the responses that come
 * back (Content-Length, chunked or to the close), so keep-alive and pipelining can be checked.
 */
class RawConnection {
  readonly socket: Socket;
  #buffer = '';
  #closed = false;
  #wake: (() => void) | null = null;

  constructor(port: number, localAddress = '127.0.0.1') {
    this.socket = connect({ port, host: '127.0.0.1', localAddress });
    this.socket.setEncoding('latin1');
    this.socket.on('data', (text: string) => {
      this.#buffer += text;
      this.#wake?.();
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.#closed = true;
      this.#wake?.();
    });
  }

  write(bytes: string): void {
    this.socket.write(bytes, 'latin1');
  }

  /** The next response; fails if the connection closes or nothing whole arrives within the wait. */
  async response(what: string): Promise<RawResponse> {
    const deadline = Date.now() + WAIT_MS;
    for (let turns = 0; turns < 100_000; turns++) {
      const parsed = this.#parse();
      if (parsed !== undefined) return parsed;
      if (this.#closed) {
        throw new Error(
          `connection closed before ${what}; got ${JSON.stringify(this.#buffer.slice(0, 300))}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await within(new Promise<void>((resolve) => (this.#wake = resolve)), left, what);
    }
    throw new Error(`gave up waiting for ${what}`);
  }

  /** Resolves once the peer has closed the connection. */
  async closed(): Promise<void> {
    if (this.#closed) return;
    await within(
      new Promise<void>((resolve) => this.socket.once('close', () => resolve())),
      WAIT_MS,
      'close',
    );
  }

  destroy(): void {
    this.socket.destroy();
  }

  #parse(): RawResponse | undefined {
    const end = this.#buffer.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const [statusLine = '', ...fields] = this.#buffer.slice(0, end).split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? NaN);
    assert.ok(Number.isInteger(status), `a status line, got ${JSON.stringify(statusLine)}`);
    const headers = new Map<string, string[]>();
    for (const f of fields) {
      const colon = f.indexOf(':');
      const name = f.slice(0, colon).trim().toLowerCase();
      headers.set(name, [...(headers.get(name) ?? []), f.slice(colon + 1).trim()]);
    }
    const rest = this.#buffer.slice(end + 4);
    const length = headers.get('content-length')?.[0];
    let body: string;
    let used: number;
    if (status === 101 || status === 204 || status === 304) {
      [body, used] = ['', 0];
    } else if (length !== undefined) {
      if (rest.length < Number(length)) return undefined;
      [body, used] = [rest.slice(0, Number(length)), Number(length)];
    } else if (/chunked/i.test(headers.get('transfer-encoding')?.[0] ?? '')) {
      const chunked = parseChunked(rest);
      if (chunked === undefined) return undefined;
      [body, used] = chunked;
    } else {
      if (!this.#closed) return undefined;
      [body, used] = [rest, rest.length];
    }
    this.#buffer = rest.slice(used);
    return { status, headers, body };
  }
}

function parseChunked(text: string): [string, number] | undefined {
  let at = 0;
  let body = '';
  for (let chunks = 0; chunks < 100_000; chunks++) {
    const line = text.indexOf('\r\n', at);
    if (line < 0) return undefined;
    const size = parseInt(text.slice(at, line), 16);
    if (size === 0) {
      const end = text.indexOf('\r\n\r\n', line);
      return end < 0 ? undefined : [body, end + 4];
    }
    if (text.length < line + 2 + size + 2) return undefined;
    body += text.slice(line + 2, line + 2 + size);
    at = line + 2 + size + 2;
  }
  return undefined;
}

/** The values of field `name` (any case) in a raw header list. */
function values(raw: readonly string[], name: string): string[] {
  return raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === name.toLowerCase());
}

function names(raw: readonly string[]): string[] {
  return raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
}

let origin: RecordingOrigin;
/** Default configuration: no trusted proxies, no Forwarded. */
let plain: Stack;
/** http.forwarded on, and 127.0.0.2 a trusted proxy. */
let behindProxy: Stack;

before(async () => {
  origin = await startRecordingOrigin();
  plain = await Stack.start({
    routes: [
      { host: 'raw.test', target: origin.url },
      { host: 'fence.test', path: '/api', target: origin.url },
    ],
  });
});

after(async () => {
  await Promise.allSettled([plain?.stop(), behindProxy?.stop()]);
  await origin?.close();
});

/** Sends one raw request on a fresh connection and returns its response, with what the origin saw. */
async function exchange(
  port: number,
  head: string,
  localAddress?: string,
): Promise<{ response: RawResponse; seen: Seen }> {
  const conn = new RawConnection(port, localAddress);
  try {
    conn.write(head);
    const response = await conn.response('the response');
    assert.equal(response.status, 200, response.body);
    return { response, seen: JSON.parse(response.body) as Seen };
  } finally {
    conn.destroy();
  }
}

function get(path: string, ...fields: string[]): string {
  return `GET ${path} HTTP/1.1\r\nHost: raw.test\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n`;
}

describe('forwarding headers, default configuration', () => {
  test('Sluice adds X-Forwarded-For/Proto/Host, Via and X-Request-Id, and no Forwarded', async () => {
    const { seen } = await exchange(plain.port, get('/fwd', 'X-Request-Id: raw-fwd-1'));
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-for'), ['127.0.0.1']);
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-proto'), ['http']);
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-host'), ['raw.test']);
    assert.deepEqual(values(seen.rawHeaders, 'via'), ['1.1 sluice']);
    assert.deepEqual(values(seen.rawHeaders, 'x-request-id'), ['raw-fwd-1']);
    assert.deepEqual(values(seen.rawHeaders, 'forwarded'), [], 'Forwarded is opt-in (http.forwarded)');
  });

  test("a client's forwarding claims are replaced by Sluice's own, none reaches the target", async () => {
    const { seen } = await exchange(
      plain.port,
      get(
        '/spoof',
        'Forwarded: for=6.6.6.6;proto=https;host=evil.test',
        'X-Forwarded-For: 6.6.6.6',
        'x-forwarded-for: 7.7.7.7',
        'X-Forwarded-Proto: https',
        'X-Forwarded-Host: evil.test',
        'X-Forwarded-Port: 443',
        'X-Forwarded-Prefix: /admin',
        'X-Forwarded-Ssl: on',
        'X-Forwarded-Server: evil',
        'X-Real-Ip: 6.6.6.6',
      ),
    );
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-for'), ['127.0.0.1']);
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-proto'), ['http']);
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-host'), ['raw.test']);
    for (const name of [
      'forwarded',
      'x-forwarded-port',
      'x-forwarded-prefix',
      'x-forwarded-ssl',
      'x-forwarded-server',
      'x-real-ip',
    ]) {
      assert.deepEqual(values(seen.rawHeaders, name), [], name);
    }
    assert.ok(!JSON.stringify(seen.rawHeaders).includes('6.6.6.6'), JSON.stringify(seen.rawHeaders));
  });

  test('Connection naming Host or Content-Length removes neither (item 10)', async () => {
    const { seen } = await exchange(
      plain.port,
      'POST /conn-host HTTP/1.1\r\nHost: raw.test\r\nConnection: Host, Content-Length, X-Hop\r\n' +
        'X-Hop: 1\r\nContent-Length: 5\r\n\r\nhello',
    );
    assert.deepEqual(values(seen.rawHeaders, 'host'), ['raw.test']);
    assert.deepEqual(values(seen.rawHeaders, 'content-length'), ['5']);
    assert.equal(seen.body, 'hello');
    assert.deepEqual(values(seen.rawHeaders, 'x-hop'), [], 'other named fields still go');
    const upper = await exchange(plain.port, get('/conn-host-2', 'Connection: keep-alive, HOST'));
    assert.deepEqual(values(upper.seen.rawHeaders, 'host'), ['raw.test']);
  });

  test('hop-by-hop fields and every Connection token are removed; end-to-end ones kept', async () => {
    const { seen } = await exchange(
      plain.port,
      get(
        '/hop',
        'Connection: keep-alive, X-Secret',
        'Connection: x-other',
        'Keep-Alive: timeout=5',
        'Proxy-Connection: keep-alive',
        'Proxy-Authorization: Basic Zm9vOmJhcg==',
        'TE: trailers',
        'X-Secret: s',
        'X-Other: o',
        'X-End: kept',
      ),
    );
    const got = names(seen.rawHeaders);
    for (const name of [
      'keep-alive',
      'proxy-connection',
      'proxy-authorization',
      'te',
      'x-secret',
      'x-other',
    ]) {
      assert.ok(!got.includes(name), `${name} in ${got.join(',')}`);
    }
    assert.deepEqual(values(seen.rawHeaders, 'x-end'), ['kept']);
  });

  test('Trailer goes on with a chunked body, and is dropped where no trailer section can follow', async () => {
    const chunked = await exchange(
      plain.port,
      'POST /trailer-chunked HTTP/1.1\r\nHost: raw.test\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n' +
        '2\r\nok\r\n0\r\nX-Sum: 1\r\n\r\n',
    );
    assert.deepEqual(values(chunked.seen.rawHeaders, 'trailer'), ['X-Sum'], 'Trailer is end-to-end');
    assert.equal(chunked.seen.body, 'ok');
    // A Trailer field on a request without chunked framing made node:http throw in the agent, which
    // took the agent process down with every tunnel it held.
    for (const path of ['/trailer-get', '/trailer-get-again']) {
      const { seen } = await exchange(plain.port, get(path, 'Trailer: X-Sum'));
      assert.deepEqual(values(seen.rawHeaders, 'trailer'), []);
    }
    assert.equal(plain.agent!.child.exitCode, null, plain.agent!.stderr.slice(-500));
  });

  test("a Connection token cannot remove Sluice's own fields", async () => {
    const { seen } = await exchange(
      plain.port,
      get(
        '/conn-own',
        'Connection: X-Forwarded-For, Via, X-Request-Id, X-Forwarded-Proto',
        'X-Request-Id: own-1',
      ),
    );
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-for'), ['127.0.0.1']);
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-proto'), ['http']);
    assert.deepEqual(values(seen.rawHeaders, 'via'), ['1.1 sluice']);
    assert.deepEqual(values(seen.rawHeaders, 'x-request-id'), ['own-1']);
  });

  test('X-Sluice-* from a client never reaches the target, in any case', async () => {
    const { seen } = await exchange(
      plain.port,
      get(
        '/internal',
        'X-Sluice-Cluster: other',
        'x-sluice-route: r',
        'X-SLUICE-TUNNEL: 1',
        'X-Sluicey: kept',
      ),
    );
    assert.deepEqual(
      names(seen.rawHeaders).filter((n) => n.startsWith('x-sluice')),
      ['x-sluicey'],
    );
  });

  test('X-Request-Id: one well-formed id is kept and echoed; two, or a malformed one, are replaced', async () => {
    const kept = await exchange(plain.port, get('/rid', 'X-Request-Id: trace-7'));
    assert.deepEqual(values(kept.seen.rawHeaders, 'x-request-id'), ['trace-7']);
    assert.deepEqual(kept.response.headers.get('x-request-id'), ['trace-7']);
    for (const fields of [
      ['X-Request-Id: a', 'X-Request-Id: b'],
      ['X-Request-Id: a b'],
      [`X-Request-Id: ${'x'.repeat(201)}`],
    ]) {
      const { response, seen } = await exchange(plain.port, get('/rid', ...fields));
      const id = values(seen.rawHeaders, 'x-request-id');
      assert.equal(id.length, 1, fields.join(' | '));
      assert.match(id[0]!, /^[0-9a-f]{32}$/, fields.join(' | '));
      assert.deepEqual(response.headers.get('x-request-id'), id);
    }
  });

  test('a Via naming this gateway is refused with 508 and never reaches the target', async () => {
    const conn = new RawConnection(plain.port);
    try {
      conn.write(get('/via-loop', 'Via: 1.0 fred, 1.1 SLUICE (Sluice)', 'Connection: via'));
      const response = await conn.response('the 508');
      assert.equal(response.status, 508);
    } finally {
      conn.destroy();
    }
    assert.ok(!origin.seen.some((s) => s.url === '/via-loop'));
  });
});

describe('behind a trusted proxy (http.trustedProxies, http.forwarded: true)', () => {
  // Its own controller, so that the default configuration's tests do not depend on these keys.
  before(async () => {
    behindProxy = await Stack.start({
      routes: [{ host: 'raw.test', target: origin.url }],
      extraYaml: 'http:\n  forwarded: true\n  trustedProxies: ["127.0.0.2/32", "fd00::/8"]',
    });
  });

  test('Forwarded is added when asked for, its host quoted with the port (RFC 7239)', async () => {
    const { seen } = await exchange(behindProxy.port, 'GET /fwd-on HTTP/1.1\r\nHost: raw.test:8080\r\n\r\n');
    assert.deepEqual(values(seen.rawHeaders, 'forwarded').length, 1);
    assert.match(
      values(seen.rawHeaders, 'forwarded')[0]!,
      /^for="127\.0\.0\.1:\d+";host="raw\.test:8080";proto=http$/,
    );
  });

  test('from a trusted proxy its X-Forwarded-* are kept and appended to, and its client is logged', async () => {
    const { seen } = await exchange(
      behindProxy.port,
      get(
        '/trusted',
        'X-Request-Id: raw-trusted-1',
        'X-Forwarded-For: 198.51.100.7, 10.1.2.3',
        'X-Forwarded-Proto: https',
        'X-Forwarded-Host: public.example',
        'X-Forwarded-Port: 443',
        'Forwarded: for=198.51.100.7;proto=https',
      ),
      '127.0.0.2',
    );
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-for'), ['198.51.100.7, 10.1.2.3, 127.0.0.2']);
    assert.deepEqual(
      values(seen.rawHeaders, 'x-forwarded-proto'),
      ['https'],
      'the TLS-terminating LB said https',
    );
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-host'), ['public.example']);
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-port'), ['443']);
    const forwarded = values(seen.rawHeaders, 'forwarded');
    assert.equal(forwarded.length, 2, forwarded.join(' | '));
    assert.equal(forwarded[0], 'for=198.51.100.7;proto=https');
    assert.match(forwarded[1]!, /^for="127\.0\.0\.2:\d+";host=raw\.test;proto=http$/);
    // 10.1.2.3 is not a trusted proxy, so it is the client as far as this gateway can tell.
    const line = await behindProxy.controller.waitLine(
      'the request line',
      (l) => l.msg === 'request' && l.requestId === 'raw-trusted-1',
    );
    assert.equal(line.client, '10.1.2.3');
  });

  test('from a peer that is not a trusted proxy, the same gateway replaces them', async () => {
    const { seen } = await exchange(
      behindProxy.port,
      get(
        '/untrusted',
        'X-Request-Id: raw-untrusted-1',
        'X-Forwarded-For: 198.51.100.7',
        'X-Forwarded-Proto: https',
        'Forwarded: for=198.51.100.7',
      ),
      '127.0.0.1',
    );
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-for'), ['127.0.0.1']);
    assert.deepEqual(values(seen.rawHeaders, 'x-forwarded-proto'), ['http']);
    assert.equal(values(seen.rawHeaders, 'forwarded').length, 1);
    assert.match(
      values(seen.rawHeaders, 'forwarded')[0]!,
      /^for="127\.0\.0\.1:\d+";host=raw\.test;proto=http$/,
    );
    const line = await behindProxy.controller.waitLine(
      'the request line',
      (l) => l.msg === 'request' && l.requestId === 'raw-untrusted-1',
    );
    assert.equal(line.client, '127.0.0.1');
  });
});

describe('Upgrade: h2c is served as HTTP/1.1 (item 11)', () => {
  const H2C =
    'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n';

  function assertPlain(seen: Seen): void {
    const got = names(seen.rawHeaders);
    assert.ok(!got.includes('upgrade'), got.join(','));
    assert.ok(!got.includes('http2-settings'), got.join(','));
    // The agent's own `Connection: keep-alive` to the target may be there, never the client's tokens.
    for (const value of values(seen.rawHeaders, 'connection')) assert.doesNotMatch(value, /upgrade|http2/i);
  }

  test('a GET with Upgrade: h2c gets a plain 200, and the connection stays usable', async () => {
    const conn = new RawConnection(plain.port);
    try {
      conn.write(`GET /h2c-1 HTTP/1.1\r\nHost: raw.test\r\n${H2C}\r\n`);
      const first = await conn.response('the answer to the h2c GET');
      assert.equal(first.status, 200, first.body);
      const seen = JSON.parse(first.body) as Seen;
      assert.equal(seen.url, '/h2c-1');
      assertPlain(seen);
      assert.equal(first.headers.get('upgrade'), undefined);
      conn.write(get('/h2c-2'));
      const second = await conn.response('the next request on the same connection');
      assert.equal((JSON.parse(second.body) as Seen).url, '/h2c-2');
    } finally {
      conn.destroy();
    }
    assert.ok(
      !origin.seen.some((s) => s.url.startsWith('/h2c-') && values(s.rawHeaders, 'upgrade').length > 0),
    );
  });

  test('a POST with Upgrade: h2c keeps its body, and a request pipelined behind it is answered', async () => {
    const conn = new RawConnection(plain.port);
    try {
      conn.write(
        `POST /h2c-post HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 11\r\n${H2C}\r\nhello world` +
          `POST /h2c-next HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`,
      );
      const first = await conn.response('the answer to the h2c POST');
      const seen = JSON.parse(first.body) as Seen;
      assert.deepEqual([seen.url, seen.body], ['/h2c-post', 'hello world']);
      assertPlain(seen);
      const second = await conn.response('the answer to the pipelined request');
      const next = JSON.parse(second.body) as Seen;
      assert.deepEqual([next.url, next.body], ['/h2c-next', 'abc']);
    } finally {
      conn.destroy();
    }
  });

  test('Upgrade: h2c without HTTP2-Settings, in odd case, is served plain too', async () => {
    const { seen } = await exchange(plain.port, get('/h2c-case', 'Connection: upgrade', 'Upgrade: H2C'));
    assertPlain(seen);
  });

  test('curl --http2 on an http:// URL gets an HTTP/1.1 200 with the body', async (t: TestContext) => {
    try {
      accessSync(CURL, constants.X_OK);
    } catch {
      t.skip(`${CURL} is not installed`);
      return;
    }
    const url = `http://raw.test:${plain.port}/h2c-curl`;
    const args = ['--silent', '--show-error', '--noproxy', '*', '--max-time', '25', '--http2', '-i'];
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        CURL,
        [...args, '--resolve', `raw.test:${plain.port}:127.0.0.1`, url],
        { timeout: WAIT_MS },
        (err, out, stderr) => (err === null ? resolve(out) : reject(new Error(`${err.message}\n${stderr}`))),
      );
    });
    assert.match(stdout, /^HTTP\/1\.1 200 OK\r\n/);
    const body = stdout.slice(stdout.indexOf('\r\n\r\n') + 4);
    const seen = JSON.parse(body) as Seen;
    assert.equal(seen.url, '/h2c-curl');
    assertPlain(seen);
  });

  test('a WebSocket-style upgrade is still relayed as an upgrade', async () => {
    const conn = new RawConnection(plain.port);
    try {
      conn.write(
        get(
          '/ws-still',
          'Connection: Upgrade',
          'Upgrade: websocket',
          'Sec-WebSocket-Version: 13',
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        ),
      );
      const response = await conn.response('the relayed 101');
      // The origin answers every upgrade with its h2c 101; that it arrives shows the upgrade went through.
      assert.equal(response.status, 101);
    } finally {
      conn.destroy();
    }
    const seen = origin.seen.find((s) => s.url === '/ws-still');
    assert.deepEqual(values(seen?.rawHeaders ?? [], 'upgrade'), ['websocket']);
  });
});

describe('path fence (item 14)', () => {
  const ESCAPES = [
    '/api/..;/admin',
    '/api/.;/admin',
    '/api/..;jsessionid=1/admin',
    '/api/%252e%252e/admin',
    '/api/%25252e%25252e/admin',
    '/api/%c0%ae%c0%ae/admin',
    '/api/%C0%AE./admin',
    '/api/%e0%80%ae%e0%80%ae/admin',
    '/api/%f0%80%80%ae%f0%80%80%ae/admin',
    '/api/..%00/admin',
    '/api/%00/x',
    '/api/x%2500',
    '/api/..%2500/admin',
    '/api/%ef%bc%8e%ef%bc%8e/admin',
    '/api/..%255c/admin',
    '/api/..%5c..%5cadmin',
    '/api/..\\admin',
    '/api/..%20/admin',
    '/api/%ff/x',
    '/api/%c3/x',
    '/api/%zz/x',
    '/api/%u002e%u002e/admin',
    '/api/..#/admin',
  ];

  for (const path of ESCAPES) {
    test(`${path} is refused with 400 and never reaches the target`, async () => {
      const conn = new RawConnection(plain.port);
      try {
        conn.write(`GET ${path} HTTP/1.1\r\nHost: fence.test\r\n\r\n`);
        const response = await conn.response('the 400');
        assert.equal(response.status, 400, response.body);
      } finally {
        conn.destroy();
      }
      assert.ok(!origin.seen.some((s) => s.url === path));
    });
  }

  test('ordinary paths with params, encodings and dots in names still go through', async () => {
    for (const path of [
      '/api/a;v=1/b',
      '/api/%c3%a4%e2%82%ac',
      '/api/file.tar.gz',
      '/api/.well-known',
      '/api/a%2Fb',
      '/api/%2541',
      '/api/x?q=../..',
    ]) {
      const conn = new RawConnection(plain.port);
      try {
        conn.write(`GET ${path} HTTP/1.1\r\nHost: fence.test\r\n\r\n`);
        const response = await conn.response(path);
        assert.equal(response.status, 200, `${path}: ${response.body}`);
        assert.equal((JSON.parse(response.body) as Seen).url, path, 'the path goes on as the client sent it');
      } finally {
        conn.destroy();
      }
    }
  });
});
