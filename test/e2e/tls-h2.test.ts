// HTTP/2 on the TLS listener (the edge-TLS issue), with real clients against a real controller process:
// - curl --http2 and curl --http1.1 on the same port each get 200 with their protocol;
// - h2load -n 20000 -c 10 -m 10 gets no failed or errored request;
// - a 1 GiB download and a 100 MiB upload over HTTP/2 keep their sha256, trailers included (both
//   generated and hashed as they stream, on both sides: nothing is held in memory);
// - SSE over HTTP/2 arrives event by event;
// - an error page (no route: 404) carries no connection-specific field, and the request's id;
// - a head above http.maxHeaderBytes is refused over HTTP/1.1 (431) and HTTP/2;
// - a client that opens and resets streams in a loop has its session closed, while another client
//   keeps getting 200s;
// - an idle HTTP/2 connection is closed after http.keepAliveTimeout, one with a quiet stream is not;
// - a drain (SIGTERM) sends GOAWAY, and the stream open then still finishes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect,
  constants,
  type IncomingHttpHeaders,
} from 'node:http2';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { issueCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { GiB, MiB, readAll, writePattern } from '../helpers/data.js';
import { rapidReset } from '../helpers/h2-rapid-reset.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { Stack, tempDir } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, waitFor, within } from '../helpers/wait.js';

const CURL = '/usr/bin/curl';
const H2LOAD = '/usr/bin/h2load';
const HOST = 'shop.test';
// Short, so that the idle-session test need not wait a minute.
const KEEP_ALIVE_MS = 2000;
// RFC 9113 §8.2.2: fields an HTTP/2 message must not carry.
const CONNECTION_SPECIFIC = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade'];
// The issue's big transfers: on a busy 2-core machine the gigabyte takes a minute or more (TLS, HTTP/2
// framing and the tunnel, through three processes besides the test's own), so their bound is generous.
const BIG_TRANSFER = { timeout: scaled(600_000) };

let ca: TestCerts;
let origin: Origin;
let stack: Stack;
let tlsPort = 0;

function run(
  file: string,
  args: string[],
  timeoutMs = scaled(EVENT_MS),
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? -1), stdout, stderr }),
    );
  });
}

function session(): ClientHttp2Session {
  const s = connect(`https://${HOST}:${tlsPort}`, {
    ca: ca.ca,
    host: '127.0.0.1',
    servername: HOST,
    // Connect to the loopback address while the TLS name and :authority say shop.test.
    lookup: (_name, _opts, done) => done(null, [{ address: '127.0.0.1', family: 4 }]),
  } as Parameters<typeof connect>[1]);
  s.on('error', () => {});
  return s;
}

/** One request's head and body (as text), on `s`. */
function fetch(
  s: ClientHttp2Session,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = s.request({ ':path': path, ...headers });
    let head: IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => (head = h));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ headers: head, body: Buffer.concat(chunks).toString() }));
    req.on('error', reject);
    req.end();
  });
}

function responseOf(stream: ClientHttp2Stream): Promise<IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', reject);
  });
}

before(async () => {
  ca = await makeTestCerts();
  const dir = tempDir();
  const shop = await issueCert([HOST, 'other.test'], { dir, file: 'shop' });
  origin = await startOrigin('h2');
  stack = await Stack.start({
    routes: [{ host: HOST, target: origin.url }],
    admin: true,
    extraYaml: [
      'http:',
      `  keepAliveTimeout: ${KEEP_ALIVE_MS}`,
      'tls:',
      '  listen: 127.0.0.1:0',
      '  certs:',
      `    - { cert: ${JSON.stringify(shop.certFile)}, key: ${JSON.stringify(shop.keyFile)} }`,
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
  await origin?.close();
});

describe('HTTP/2 on the TLS listener', () => {
  test('curl --http2 gets HTTP/2 and curl --http1.1 gets HTTP/1.1 on the same port', async () => {
    for (const [flag, version] of [
      ['--http2', '2'],
      ['--http1.1', '1.1'],
    ] as const) {
      const r = await run(CURL, [
        '--silent',
        '--show-error',
        flag,
        '--cacert',
        join(ca.dir, 'ca.pem'),
        '--resolve',
        `${HOST}:${tlsPort}:127.0.0.1`,
        '--output',
        '/dev/null',
        '--write-out',
        '%{http_code} %{http_version}',
        `https://${HOST}:${tlsPort}/status?code=200`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `200 ${version}`);
    }
  });

  test('the target gets HTTP/1.1 with Host from :authority, proto https and the joined cookies', async () => {
    const s = session();
    try {
      const r = await fetch(s, '/headers?x=1', { cookie: 'a=1', 'x-test': 'yes' });
      assert.equal(r.headers[':status'], 200);
      const seen = JSON.parse(r.body) as { rawHeaders: string[]; version: string; url: string };
      assert.equal(seen.version, '1.1');
      assert.equal(seen.url, '/headers?x=1');
      const field = (name: string): string[] =>
        seen.rawHeaders.filter((_, i) => i % 2 === 1 && seen.rawHeaders[i - 1]!.toLowerCase() === name);
      assert.deepEqual(field('host'), [`${HOST}:${tlsPort}`]);
      assert.deepEqual(field('x-forwarded-proto'), ['https']);
      // HTTP/2's version in Via is `2`, not Node's `2.0` (RFC 9110 §7.6.3, RFC 9113 §3).
      assert.deepEqual(field('via'), ['2 sluice']);
      assert.deepEqual(field('x-test'), ['yes']);
      assert.ok(!seen.rawHeaders.some((h) => h.startsWith(':')), JSON.stringify(seen.rawHeaders));
      assert.ok(typeof r.headers['x-request-id'] === 'string');
      for (const name of CONNECTION_SPECIFIC) assert.equal(r.headers[name], undefined, name);
    } finally {
      s.close();
    }
  });

  test('an error page over HTTP/2 (no route: 404) carries no connection-specific field', async () => {
    const s = session();
    try {
      const r = await fetch(s, '/', { ':authority': 'other.test', accept: 'application/json' });
      assert.equal(r.headers[':status'], 404);
      for (const name of CONNECTION_SPECIFIC) assert.equal(r.headers[name], undefined, name);
      const page = JSON.parse(r.body) as { error: { code: string; requestId: string } };
      assert.equal(page.error.code, 'no_route');
      assert.equal(page.error.requestId, r.headers['x-request-id']);
      // A 400 is a page that says `Connection: close` over HTTP/1.1.
      const bad = await fetch(s, '/a/../../b');
      assert.equal(bad.headers[':status'], 400);
      for (const name of CONNECTION_SPECIFIC) assert.equal(bad.headers[name], undefined, name);
      // The session is still good after both.
      assert.equal((await fetch(s, '/status?code=200')).headers[':status'], 200);
    } finally {
      s.close();
    }
  });

  test('a head above http.maxHeaderBytes is refused over both protocols', async () => {
    const big = 'x'.repeat(32 * 1024);
    const r = await run(CURL, [
      '--silent',
      '--http1.1',
      '--cacert',
      join(ca.dir, 'ca.pem'),
      '--resolve',
      `${HOST}:${tlsPort}:127.0.0.1`,
      '--header',
      `X-Big: ${big}`,
      '--output',
      '/dev/null',
      '--write-out',
      '%{http_code}',
      `https://${HOST}:${tlsPort}/status?code=200`,
    ]);
    assert.equal(r.stdout, '431');
    // Over HTTP/2 the header list is bounded by SETTINGS_MAX_HEADER_LIST_SIZE: the stream is not served.
    const s = session();
    try {
      const req = s.request({ ':path': '/status?code=200', 'x-big': big });
      const outcome = await new Promise<string>((resolve) => {
        req.once('response', (h) => resolve(String(h[':status'])));
        req.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
        req.once('close', () => resolve(`closed ${req.rstCode}`));
      });
      assert.notEqual(outcome, '200');
    } finally {
      s.destroy();
    }
  });

  test('an HTTP/2 connection idle for http.keepAliveTimeout is closed; a quiet stream keeps it', async () => {
    const s = session();
    try {
      const closed = new Promise<void>((resolve) => s.once('close', resolve));
      // An event stream quiet for longer than the timeout: its session stays.
      const req = s.request({ ':path': '/sse' });
      req.resume();
      await responseOf(req);
      const quiet = await Promise.race([
        closed.then(() => 'closed'),
        new Promise<string>((resolve) => setTimeout(resolve, 2 * KEEP_ALIVE_MS, 'open')),
      ]);
      assert.equal(quiet, 'open');
      origin.releaseSse();
      await new Promise<void>((resolve) => req.once('close', resolve));
      // Then nothing open: closed after the timeout, well within the bound.
      const idleSince = Date.now();
      await within(closed, scaled(EVENT_MS), 'the idle session to close');
      assert.ok(Date.now() - idleSince >= KEEP_ALIVE_MS / 2, 'closed before it was idle');
    } finally {
      s.destroy();
    }
  });

  test('h2load -n 20000 -c 10 -m 10 gets no failed or errored request', async () => {
    const r = await run(
      H2LOAD,
      [
        '-n',
        '20000',
        '-c',
        '10',
        '-m',
        '10',
        '--header',
        `:authority: ${HOST}`,
        `https://127.0.0.1:${tlsPort}/status?code=200`,
      ],
      scaled(120_000),
    );
    const line =
      /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(
        r.stdout,
      );
    assert.ok(line !== null, `${r.stdout}\n${r.stderr}`);
    assert.equal(Number(line[4]), 20000, line[0]);
    assert.equal(Number(line[5]), 0, line[0]);
    assert.equal(Number(line[6]), 0, line[0]);
    assert.match(r.stdout, /status codes: 20000 2xx/);
  });

  test('a 1 GiB download over HTTP/2 keeps its sha256 and its trailer', BIG_TRANSFER, async () => {
    const s = session();
    try {
      const req = s.request({ ':path': `/download?bytes=${GiB}` });
      let trailers: IncomingHttpHeaders = {};
      req.on('trailers', (t) => (trailers = t));
      const head = await responseOf(req);
      assert.equal(head[':status'], 200);
      const got = await readAll(req);
      assert.equal(got.bytes, GiB);
      assert.equal(got.sha256, trailers['x-sha256']);
    } finally {
      s.close();
    }
  });

  test('a 100 MiB upload over HTTP/2 with no Content-Length keeps its sha256', BIG_TRANSFER, async () => {
    const s = session();
    try {
      const req = s.request({ ':path': '/hash', ':method': 'POST' });
      const answer = new Promise<string>((resolve, reject) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => resolve(Buffer.concat(chunks).toString()));
        req.on('error', reject);
      });
      const sent = await writePattern(req, 100 * MiB);
      const seen = JSON.parse(await answer) as { bytes: number; sha256: string; chunked: string | null };
      assert.equal(seen.bytes, 100 * MiB);
      assert.equal(seen.sha256, sent);
      assert.equal(seen.chunked, 'chunked');
    } finally {
      s.close();
    }
  });

  test('SSE over HTTP/2 arrives event by event', async () => {
    const s = session();
    try {
      const req = s.request({ ':path': '/sse', accept: 'text/event-stream' });
      const head = await responseOf(req);
      assert.equal(head[':status'], 200);
      req.setEncoding('utf8');
      let text = '';
      await new Promise<void>((resolve, reject) => {
        req.on('data', (c: string) => {
          text += c;
          if (text.includes('data: first\n\n')) resolve();
        });
        req.once('error', reject);
      });
      // The first event came while the target still holds the stream open.
      assert.ok(!text.includes('last'));
      origin.releaseSse();
      await new Promise<void>((resolve) => req.on('end', resolve));
      assert.equal(text, 'data: first\n\ndata: last\n\n');
    } finally {
      s.close();
    }
  });

  test('a response cut by the target is reset with INTERNAL_ERROR, never ended as whole', async () => {
    // Node's compatibility response resets with NO_ERROR on a plain destroy(), which curl and
    // Node's client take as a complete body: a truncated download would pass as good.
    for (const path of ['/cut?chunked', '/cut']) {
      const r = await run(CURL, [
        '--silent',
        '--http2',
        '--cacert',
        join(ca.dir, 'ca.pem'),
        '--resolve',
        `${HOST}:${tlsPort}:127.0.0.1`,
        '--output',
        '/dev/null',
        `https://${HOST}:${tlsPort}${path}`,
      ]);
      assert.notEqual(r.code, 0, `curl took the cut body of ${path} as whole`);
    }
    const s = session();
    try {
      for (let i = 1; i <= 3; i++) {
        const req = s.request({ ':path': '/cut?chunked' });
        let bytes = 0;
        let ended = false;
        req.on('data', (c: Buffer) => (bytes += c.length));
        req.on('end', () => (ended = true));
        req.on('error', () => {});
        // Not events.once: it rejects on the 'error' this stream is expected to emit.
        const closed = new Promise<void>((resolve) => req.once('close', () => resolve()));
        await within(closed, scaled(EVENT_MS), `the cut response ${i}`);
        assert.equal(req.rstCode, constants.NGHTTP2_INTERNAL_ERROR, `response ${i}: rstCode`);
        assert.equal(ended, false, `response ${i} ended as if whole after ${bytes} bytes`);
      }
      // The session outlives its cut streams.
      const ok = await fetch(s, '/status?code=200');
      assert.equal(ok.headers[':status'], 200);
    } finally {
      s.destroy();
    }
  });

  test('an answer before the upload ended arrives whole, then RST_STREAM(NO_ERROR) stops the upload, 120 at once', async () => {
    // The target (/download) answers without reading the body. Without the reset, each stream stays
    // half-closed with its upload stalled on flow control, and once 100 of them (the listener's
    // SETTINGS_MAX_CONCURRENT_STREAMS) are stuck the connection starts no more: streams 101 to 120
    // are only sent once the edge has closed earlier ones.
    const STREAMS = 120;
    const s = session();
    try {
      const one = async (i: number): Promise<void> => {
        const req = s.request({ ':path': `/download?bytes=${MiB}`, ':method': 'POST' });
        req.on('error', () => {});
        const trailers = new Promise<IncomingHttpHeaders>((resolve) => req.once('trailers', resolve));
        const body = readAll(req);
        const chunk = Buffer.alloc(64 * 1024, i);
        let sent = 0;
        const pump = (): void => {
          // Bounded: a stream the edge never stops would end its body after 64 MiB.
          while (!req.destroyed && !req.writableEnded && sent < 64 * MiB) {
            sent += chunk.length;
            if (!req.write(chunk)) return void req.once('drain', pump);
          }
          if (!req.destroyed && !req.writableEnded) req.end();
        };
        pump();
        const got = await within(body, scaled(60_000), `response ${i}'s body`);
        assert.equal(got.bytes, MiB, `response ${i}`);
        const sums = await within(trailers, scaled(30_000), `response ${i}'s trailers`);
        assert.equal(got.sha256, sums['x-sha256'], `response ${i}'s sha256`);
        // Node's client marks the stream closed on the peer's RST_STREAM, recording its code, but
        // emits 'close' only once its own upload has ended; a real client (curl) stops sending.
        await waitFor(`stream ${i}'s RST_STREAM`, () => req.closed, 60_000);
        assert.equal(req.rstCode, constants.NGHTTP2_NO_ERROR, `stream ${i}`);
        assert.ok(sent < 64 * MiB, `stream ${i}: the whole 64 MiB went up, so nothing stopped the upload`);
        req.destroy();
      };
      await Promise.all(Array.from({ length: STREAMS }, (_, i) => one(i)));
      const ok = await fetch(s, '/status?code=200');
      assert.equal(ok.headers[':status'], 200);
    } finally {
      s.destroy();
    }
  });

  test('a rapid-reset client has its session closed while another client keeps being served', async () => {
    const other = session();
    let served = 0;
    let failed = 0;
    let attacking = true;
    // The loop sends its first request before the attack starts, and always has one open, so at least
    // one of its requests overlaps the attack. A busy machine may take longer for one round trip than
    // the controller takes to end the attack: so what is checked is that every request the other
    // client had open was answered, not how many fit inside the attack.
    const steady = (async () => {
      // Bounded: the attack ends within its own bounds, and so does this loop.
      for (let i = 0; i < 10_000 && attacking; i++) {
        const r = await fetch(other, '/status?code=200');
        if (Number(r.headers[':status']) === 200) served++;
        else failed++;
      }
    })();
    try {
      const result = await rapidReset({
        port: tlsPort,
        servername: HOST,
        ca: ca.ca,
        authority: HOST,
        path: '/status?code=200',
        maxStreams: 20_000,
        maxMs: scaled(EVENT_MS),
      });
      assert.ok(result.closed, `the session was not closed after ${result.streams} resets`);
      assert.ok(result.streams < 20_000, `the session was closed only after ${result.streams} resets`);
      assert.ok(
        result.goaway.includes(constants.NGHTTP2_ENHANCE_YOUR_CALM),
        `GOAWAY ${result.goaway.join(', ')}`,
      );
      await stack.controller.waitLine('the rapid-reset warning', (l) => l.event === 'h2-rapid-reset');
      attacking = false;
      await steady;
      // The other client was served throughout, and still is.
      assert.equal(failed, 0);
      assert.ok(served > 0);
      assert.equal((await fetch(other, '/status?code=200')).headers[':status'], 200);
    } finally {
      attacking = false;
      other.close();
    }
  });

  // Last: it stops the controller.
  test('a drain sends GOAWAY on an HTTP/2 connection and lets its open stream finish', async () => {
    const s = session();
    try {
      const req = s.request({ ':path': '/sse', accept: 'text/event-stream' });
      req.setEncoding('utf8');
      let text = '';
      const first = new Promise<void>((resolve) =>
        req.on('data', (c: string) => {
          text += c;
          if (text.includes('data: first')) resolve();
        }),
      );
      const ended = new Promise<void>((resolve) => req.once('end', resolve));
      await within(first, scaled(EVENT_MS), 'the first event');
      const goaway = new Promise<number>((resolve) => s.once('goaway', resolve));
      stack.controller.child.kill('SIGTERM');
      assert.equal(await within(goaway, scaled(EVENT_MS), 'the GOAWAY'), constants.NGHTTP2_NO_ERROR);
      origin.releaseSse();
      await within(ended, scaled(EVENT_MS), 'the end of the event stream');
      assert.equal(text, 'data: first\n\ndata: last\n\n');
    } finally {
      s.destroy();
    }
  });
});
