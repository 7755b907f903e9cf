// `sluice dev` (what `npm start` runs): one process with a controller, an agent and the demo service,
// reachable at http://demo.localhost:PORT through the tunnel, and at https://demo.localhost:PORT with
// the self-signed certificate dev makes into its data dir (issue #14): curl over HTTP/2 and HTTP/1.1
// trusting that file, the same certificate on the next start, a corrupt one replaced, the key 0600, and
// no TLS at all with --https-listen off.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect } from 'node:tls';
import { ask, SluiceProcess, tempDir } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, waitFor, within } from '../helpers/wait.js';

const CURL = '/usr/bin/curl';
const noCurl = existsSync(CURL) ? false : 'curl is not installed';

let dev: SluiceProcess;
let port = 0;
let demoUrl = '';
let httpsUrl = '';
let root = '';
let dataDir = '';

/** `sluice dev` on free ports with its data in `data`; resolves with its dev-ready line. */
async function startDev(data: string, https = '127.0.0.1:0') {
  const args = ['dev', '--listen', '127.0.0.1:0', '--https-listen', https, '--admin-listen', '127.0.0.1:0'];
  const p = new SluiceProcess([...args, '--data', data]);
  const ready = await p.waitLine('dev-ready', (l) => l.event === 'dev-ready');
  return { p, ready };
}

before(async () => {
  root = tempDir();
  dataDir = join(root, 'data');
  const started = await startDev(dataDir);
  dev = started.p;
  demoUrl = String(started.ready.demo);
  httpsUrl = String(started.ready.demoHttps);
  port = Number(new URL(demoUrl).port);
});

after(async () => {
  await dev?.stop();
  if (root !== '') rmSync(root, { recursive: true, force: true });
});

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(CURL, args, { timeout: scaled(EVENT_MS) }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? -1), stdout, stderr }),
    );
  });
}

/**
 * curl fetches `url` twice on one connection, trusting only `cert`, with demo.localhost pinned to the
 * loopback address; each reply's body, then its status, HTTP version and new connections.
 */
async function curlTwice(url: string, cert: string, version: '--http2' | '--http1.1') {
  const { hostname, port: p } = new URL(url);
  const r = await run([
    '-sS',
    '--noproxy',
    '*',
    version,
    '--cacert',
    cert,
    '--resolve',
    `${hostname}:${p}:127.0.0.1`,
    '-w',
    '\n%{http_code} %{http_version} %{num_connects}\n',
    url,
    url,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const replies = r.stdout.split(/\n(\d+ [\d.]+ \d+)\n/);
  return [
    { body: replies[0]!, result: replies[1]! },
    { body: replies[2]!, result: replies[3]! },
  ];
}

function fingerprintOf(file: string): string {
  return new X509Certificate(readFileSync(file)).fingerprint256;
}

/** The certificate the listener at `url` presents for demo.localhost. */
function servedFingerprint(url: string): Promise<string> {
  return within(
    new Promise<string>((resolve, reject) => {
      const socket = connect({
        host: '127.0.0.1',
        port: Number(new URL(url).port),
        servername: 'demo.localhost',
        rejectUnauthorized: false,
      });
      socket.once('secureConnect', () => {
        resolve(socket.getPeerCertificate().fingerprint256);
        socket.end();
      });
      socket.once('error', reject);
    }),
    EVENT_MS,
    'a TLS handshake',
  );
}

test('the ready line names the demo URLs through the tunnel, http and https, and the admin URL', async () => {
  assert.match(demoUrl, /^http:\/\/demo\.localhost:\d+\/$/);
  assert.match(httpsUrl, /^https:\/\/demo\.localhost:\d+\/$/);
  assert.notEqual(new URL(httpsUrl).port, new URL(demoUrl).port);
  const ready = dev.lines.find((l) => l.event === 'dev-ready')!;
  assert.match(String(ready.admin), /^http:\/\/127\.0\.0\.1:\d+$/);
  // stderr is another pipe: the human-readable URLs may land a moment after the JSON line.
  await waitFor('the URLs on stderr', () => dev.stderr.includes('dashboard'));
  assert.ok(dev.stderr.includes(`demo       ${demoUrl}\n`), dev.stderr);
  const cert = join(dataDir, 'dev-cert.pem');
  assert.ok(dev.stderr.includes(`demo       ${httpsUrl} (self-signed, to trust: ${cert})\n`), dev.stderr);
});

test('the demo page answers through the tunnel', async () => {
  const r = await ask({ port, host: `demo.localhost:${port}` });
  assert.equal(r.status, 200);
  assert.match(r.body.toString(), /Sluice demo/);
  assert.equal(r.headers.via, '1.1 sluice');
});

test('curl http://demo.localhost:PORT/ answers through the tunnel', async (t) => {
  if (!existsSync('/usr/bin/curl')) return t.skip('curl is not installed');
  const out = await new Promise<string>((resolve, reject) => {
    execFile(
      '/usr/bin/curl',
      ['-sS', '--noproxy', '*', '-o', '-', '-w', '\n%{http_code}', demoUrl],
      { timeout: scaled(EVENT_MS) },
      (err, stdout) => (err === null ? resolve(stdout) : reject(err)),
    );
  });
  assert.match(out, /Sluice demo/);
  assert.match(out, /\n200$/);
});

test('the demo echo API streams a body through and back', async () => {
  const body = Buffer.alloc(300_000, 'x');
  const r = await ask({ port, host: 'demo.localhost', path: '/api/echo', method: 'POST', body });
  assert.equal(r.status, 200);
  const seen = JSON.parse(r.body.toString()) as { bodyBytes: number };
  assert.equal(seen.bodyBytes, body.length);
});

test('an unknown host is a 404 page, not a crash', async () => {
  const r = await ask({ port, host: '127.0.0.1', headers: { accept: 'application/json' } });
  assert.equal(r.status, 404);
});

describe('sluice dev over HTTPS', () => {
  test('the certificate is in the data dir, its key 0600, and the log says it was made', () => {
    const cert = join(dataDir, 'dev-cert.pem');
    const key = join(dataDir, 'dev-key.pem');
    assert.equal(statSync(key).mode & 0o777, 0o600);
    const x509 = new X509Certificate(readFileSync(cert));
    assert.equal(
      x509.subjectAltName,
      'DNS:demo.localhost, DNS:*.localhost, DNS:localhost, IP Address:127.0.0.1',
    );
    const made = dev.lines.find((l) => l.event === 'dev-cert-generated')!;
    assert.equal(made.reason, 'missing');
    assert.equal(made.fingerprint, x509.fingerprint256);
  });

  test(
    'curl --http2 trusting the file gets the demo, twice on one connection',
    { skip: noCurl },
    async () => {
      const replies = await curlTwice(httpsUrl, join(dataDir, 'dev-cert.pem'), '--http2');
      for (const reply of replies) assert.match(reply.body, /Sluice demo/);
      assert.deepEqual(
        replies.map((r) => r.result),
        ['200 2 1', '200 2 0'],
      );
      // The demo page shows what the target got: the request came over TLS, through the controller.
      assert.match(replies[0]!.body, /2 sluice/);
      assert.match(replies[0]!.body, /https/);
    },
  );

  test(
    'curl --http1.1 trusting the file gets the demo, twice on one connection',
    { skip: noCurl },
    async () => {
      const replies = await curlTwice(httpsUrl, join(dataDir, 'dev-cert.pem'), '--http1.1');
      for (const reply of replies) assert.match(reply.body, /Sluice demo/);
      assert.deepEqual(
        replies.map((r) => r.result),
        ['200 1.1 1', '200 1.1 0'],
      );
    },
  );

  test('curl that does not trust the file refuses the certificate', { skip: noCurl }, async () => {
    const { port: p } = new URL(httpsUrl);
    const r = await run(['-sS', '--noproxy', '*', '--resolve', `demo.localhost:${p}:127.0.0.1`, httpsUrl]);
    assert.equal(r.code, 60, r.stderr); // CURLE_PEER_FAILED_VERIFICATION
  });

  test('the demo echo API streams a body over HTTP/2 and back', { skip: noCurl }, async () => {
    const body = join(root, 'body.bin');
    writeFileSync(body, Buffer.alloc(300_000, 'y'));
    const { port: p } = new URL(httpsUrl);
    const r = await run([
      '-sS',
      '--noproxy',
      '*',
      '--http2',
      '--cacert',
      join(dataDir, 'dev-cert.pem'),
      '--resolve',
      `demo.localhost:${p}:127.0.0.1`,
      '--data-binary',
      `@${body}`,
      `${httpsUrl}api/echo`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { bodyBytes: number }).bodyBytes, 300_000);
  });

  test('a second start on the same data dir reuses the certificate, and serves it', async () => {
    const cert = join(dataDir, 'dev-cert.pem');
    const before = readFileSync(cert);
    const { p, ready } = await startDev(dataDir);
    try {
      const reused = p.lines.find((l) => l.event === 'dev-cert-reused');
      assert.ok(reused !== undefined, 'a dev-cert-reused line');
      assert.equal(
        p.lines.find((l) => l.event === 'dev-cert-generated'),
        undefined,
      );
      assert.equal(reused.fingerprint, fingerprintOf(cert));
      assert.deepEqual(readFileSync(cert), before);
      assert.equal(await servedFingerprint(String(ready.demoHttps)), fingerprintOf(cert));
      assert.equal(await servedFingerprint(httpsUrl), fingerprintOf(cert));
    } finally {
      await p.stop();
    }
  });

  test('a corrupt certificate file is replaced, and the new one serves', async () => {
    const data = join(root, 'corrupt');
    mkdirSync(data);
    writeFileSync(join(data, 'dev-cert.pem'), '-----BEGIN CERTIFICATE-----\nnot base64 at all\n');
    writeFileSync(join(data, 'dev-key.pem'), 'junk', { mode: 0o644 });
    const { p, ready } = await startDev(data);
    try {
      const made = p.lines.find((l) => l.event === 'dev-cert-generated')!;
      assert.equal(made.reason, 'corrupt', JSON.stringify(made));
      const cert = join(data, 'dev-cert.pem');
      assert.equal(made.fingerprint, fingerprintOf(cert));
      assert.equal(statSync(join(data, 'dev-key.pem')).mode & 0o777, 0o600);
      assert.equal(await servedFingerprint(String(ready.demoHttps)), fingerprintOf(cert));
      if (noCurl === false) {
        const [first] = await curlTwice(String(ready.demoHttps), cert, '--http2');
        assert.equal(first!.result, '200 2 1');
      }
    } finally {
      await p.stop();
    }
  });

  test('--https-listen off serves no TLS and writes no file', async () => {
    const data = join(root, 'off');
    const { p, ready } = await startDev(data, 'off');
    try {
      assert.equal(ready.demoHttps, null);
      assert.equal(
        p.lines.find((l) => l.event === 'listening' && l.listener === 'tls'),
        undefined,
      );
      assert.equal(
        p.lines.find((l) => String(l.event).startsWith('dev-cert')),
        undefined,
      );
      assert.equal(existsSync(data), false, 'no data dir');
      await waitFor('the URLs on stderr', () => p.stderr.includes('dashboard'));
      assert.doesNotMatch(p.stderr, /https:|self-signed/);
      // The plain demo still answers.
      const r = await ask({ port: Number(new URL(String(ready.demo)).port), host: 'demo.localhost' });
      assert.equal(r.status, 200);
    } finally {
      await p.stop();
    }
  });
});
