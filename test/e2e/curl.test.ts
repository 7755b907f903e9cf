// Requests through the tunnel with the real curl (the HTTP issue: "a request through real curl"): a
// client that is not node:http, with its own framing habits, such as Expect: 100-continue on large
// uploads and HEAD via -I.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { Stack, tempDir } from '../helpers/sluice-procs.js';

const CURL = '/usr/bin/curl';
const MiB = 1024 * 1024;

function curlMissing(): boolean {
  try {
    accessSync(CURL, constants.X_OK);
    return false;
  } catch {
    return true;
  }
}

interface CurlResult {
  stdout: string;
  stderr: string;
}

/** Runs curl with a time limit; never through a proxy the environment may name. */
function curl(args: string[], timeoutMs = 30_000): Promise<CurlResult> {
  const env = { ...process.env };
  for (const name of ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'])
    delete env[name];
  return new Promise((resolve, reject) => {
    execFile(
      CURL,
      ['--silent', '--show-error', '--noproxy', '*', '--max-time', String(timeoutMs / 1000 - 1), ...args],
      { timeout: timeoutMs, env, maxBuffer: 16 * MiB },
      (err, stdout, stderr) => {
        if (err !== null) reject(new Error(`curl ${args.join(' ')} failed: ${err.message}\n${stderr}`));
        else resolve({ stdout, stderr });
      },
    );
  });
}

/** The header block curl printed with -i, -I or -D -: status and lowercase names. */
function parseHead(text: string): { status: number; headers: Map<string, string> } {
  const blocks = text.split('\r\n\r\n');
  // Interim responses (100 Continue) come first; the final head is the last one before the body.
  const head = blocks.filter((b) => /^HTTP\/1\.1 \d{3}/.test(b)).at(-1) ?? '';
  const [statusLine = '', ...fields] = head.split('\r\n');
  const headers = new Map<string, string>();
  for (const f of fields) {
    const colon = f.indexOf(':');
    if (colon > 0) headers.set(f.slice(0, colon).toLowerCase(), f.slice(colon + 1).trim());
  }
  return { status: Number(statusLine.split(' ')[1]), headers };
}

let origin: Origin;
let stack: Stack;

before(async () => {
  if (curlMissing()) return;
  origin = await startOrigin('curl-origin');
  stack = await Stack.start({
    routes: [{ host: 'app.test', target: origin.url }],
    allow: [`127.0.0.1:${origin.port}`],
  });
});

after(async () => {
  await stack?.stop();
  await origin?.close();
});

function skipWithoutCurl(t: TestContext): boolean {
  if (!curlMissing()) return false;
  t.skip(`${CURL} is not installed; these tests need the real curl`);
  return true;
}

describe('real curl through the tunnel', () => {
  test('GET with --resolve: the target sees the Host curl sent', async (t) => {
    if (skipWithoutCurl(t)) return;
    const url = `http://app.test:${stack.port}/headers?from=curl`;
    const { stdout } = await curl(['--resolve', `app.test:${stack.port}:127.0.0.1`, '-i', url]);
    const { status, headers } = parseHead(stdout);
    assert.equal(status, 200, stdout);
    assert.equal(headers.get('x-origin'), 'curl-origin');
    assert.match(headers.get('x-request-id') ?? '', /^[0-9a-f]{32}$/);
    const seen = JSON.parse(stdout.slice(stdout.indexOf('\r\n\r\n') + 4)) as {
      method: string;
      url: string;
      rawHeaders: string[];
    };
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/headers?from=curl');
    const host = seen.rawHeaders.filter((_, i) => i % 2 === 1 && /^host$/i.test(seen.rawHeaders[i - 1]!));
    assert.deepEqual(host, [`app.test:${stack.port}`]);
    const ua = seen.rawHeaders.findIndex((h) => /^user-agent$/i.test(h));
    assert.match(seen.rawHeaders[ua + 1] ?? '', /^curl\//);
  });

  test('POST of a 3 MiB file: Expect: 100-continue is answered, the body arrives intact', async (t) => {
    if (skipWithoutCurl(t)) return;
    const file = join(tempDir(), 'upload.bin');
    const data = randomBytes(3 * MiB);
    writeFileSync(file, data);
    const sha256 = createHash('sha256').update(data).digest('hex');
    const { stdout, stderr } = await curl([
      '-v',
      '-H',
      'Host: app.test',
      '-H',
      'Content-Type: application/octet-stream',
      '--data-binary',
      `@${file}`,
      `http://127.0.0.1:${stack.port}/continue`,
    ]);
    // -v shows what curl sent (>) and got (<): it asked for a 100 and the target's 100 came through.
    assert.match(stderr, /^> Expect: 100-continue\r?$/m);
    assert.match(stderr, /^< HTTP\/1\.1 100 Continue\r?$/m);
    assert.match(stderr, /^< HTTP\/1\.1 200 OK\r?$/m);
    const reported = JSON.parse(stdout) as { bytes: number; sha256: string };
    assert.equal(reported.bytes, data.length);
    assert.equal(reported.sha256, sha256);
  });

  test('curl -I (HEAD): the head of the GET, no body', async (t) => {
    if (skipWithoutCurl(t)) return;
    const { stdout } = await curl(['-I', '-H', 'Host: app.test', `http://127.0.0.1:${stack.port}/length`]);
    const { status, headers } = parseHead(stdout);
    assert.equal(status, 200, stdout);
    assert.equal(headers.get('content-length'), '11');
    assert.equal(headers.get('x-origin'), 'curl-origin');
    assert.equal(headers.get('via'), '1.1 sluice');
    assert.ok(stdout.endsWith('\r\n\r\n'), 'nothing after the head');
  });

  test('an error page to curl: 404 as JSON with the request id of its header', async (t) => {
    if (skipWithoutCurl(t)) return;
    const { stdout } = await curl([
      '-i',
      '-H',
      'Host: nobody.test',
      '-H',
      'Accept: application/json',
      `http://127.0.0.1:${stack.port}/`,
    ]);
    const { status, headers } = parseHead(stdout);
    assert.equal(status, 404, stdout);
    const page = JSON.parse(stdout.slice(stdout.indexOf('\r\n\r\n') + 4)) as {
      error: { reason: string; requestId: string };
    };
    assert.equal(page.error.reason, 'no route for host nobody.test');
    assert.equal(page.error.requestId, headers.get('x-request-id'));
  });
});
