// HTTPS at the public edge (the edge-TLS issue), with real clients against a real controller process:
// - curl --http1.1 --cacert gets 200 over TLS, twice on one connection, and the target sees
//   X-Forwarded-Proto: https;
// - openssl s_client -servername sees the certificate for each name: an exact name, a wildcard's
//   subdomain, a name no certificate serves (the first one), and no SNI at all (the first one);
// - a WebSocket over wss:// echoes;
// - rotation: new files are picked up without a restart, a new handshake sees the new certificate
//   while a connection opened before keeps working; SIGHUP reloads too; a bad new file keeps the old
//   certificate and says why;
// - sluice_tls_cert_expiry_seconds reports each certificate, and one that ends within 14 days is
//   warned about at start;
// - the flags/variables (--tls-listen, --tls-cert, --tls-key) with `unknownName: refuse`: a name no
//   certificate serves ends the handshake;
// - a missing, unreadable or mismatched file exits 2 naming the file and the key.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ClientOptions, WebSocket } from 'ws';
import { issueCert, type IssuedCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { BIN, Stack, tempDir } from '../helpers/sluice-procs.js';
import { startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { wsEcho, wsOpened } from '../helpers/ws-client.js';
import { EVENT_MS, scaled, waitFor } from '../helpers/wait.js';

const CURL = '/usr/bin/curl';
const OPENSSL = '/usr/bin/openssl';

let ca: TestCerts;
let origin: Origin;
let upgrades: UpgradeOrigin;
let stack: Stack;
let tlsPort = 0;
let dir: string;
let first: IssuedCert;
let shop: IssuedCert;
let wild: IssuedCert;

function run(
  file: string,
  args: string[],
  input?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { timeout: scaled(EVENT_MS) }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? -1), stdout, stderr }),
    );
    child.stdin?.end(input ?? '');
  });
}

/** The subject CN of the certificate the listener presents for `servername` (none: no SNI). */
async function presented(port: number, servername?: string): Promise<string> {
  const sni = servername === undefined ? ['-noservername'] : ['-servername', servername];
  const r = await run(OPENSSL, [
    's_client',
    '-connect',
    `127.0.0.1:${port}`,
    ...sni,
    '-CAfile',
    join(ca.dir, 'ca.pem'),
  ]);
  const subject = /^subject=.*?CN ?= ?([^,\n]+)/m.exec(r.stdout)?.[1];
  if (subject === undefined)
    throw new Error(`no certificate in: ${r.stdout.slice(0, 400)} ${r.stderr.slice(0, 400)}`);
  return subject.trim();
}

function curl(
  host: string,
  path: string,
  ...extra: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(CURL, [
    '--silent',
    '--show-error',
    '--http1.1',
    '--cacert',
    join(ca.dir, 'ca.pem'),
    '--resolve',
    `${host}:${tlsPort}:127.0.0.1`,
    ...extra,
    `https://${host}:${tlsPort}${path}`,
  ]);
}

before(async () => {
  ca = await makeTestCerts();
  dir = tempDir();
  first = await issueCert(['first.test'], { dir, file: 'first', days: 1 });
  shop = await issueCert(['shop.test'], { dir, file: 'shop' });
  wild = await issueCert(['*.wild.test'], { dir, file: 'wild' });
  origin = await startOrigin('tls');
  upgrades = await startUpgradeOrigin();
  stack = await Stack.start({
    routes: [
      { host: 'shop.test', target: origin.url },
      { host: 'a.wild.test', target: origin.url },
      { host: 'ws.wild.test', target: upgrades.url },
    ],
    admin: true,
    extraYaml: [
      'tls:',
      '  listen: 127.0.0.1:0',
      '  certs:',
      ...[first, shop, wild].map(
        (c) => `    - { cert: ${JSON.stringify(c.certFile)}, key: ${JSON.stringify(c.keyFile)} }`,
      ),
    ].join('\n'),
  });
  const line = await stack.controller.waitLine(
    'the TLS listener',
    (l) => l.event === 'listening' && l.listener === 'tls',
  );
  assert.match(String(line.url), /^https:\/\/127\.0\.0\.1:\d+$/);
  tlsPort = Number(new URL(String(line.url)).port);
});

after(async () => {
  await stack?.stop();
  await origin?.close();
  await upgrades?.close();
});

describe('the TLS listener', () => {
  test('curl --http1.1 gets 200 twice on one connection, and the target sees proto https', async () => {
    const url = `https://shop.test:${tlsPort}/headers`;
    const r = await curl(
      'shop.test',
      '/headers',
      '--write-out',
      '\\n%{http_code} %{http_version} %{num_connects}\\n',
      url,
    );
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    // Two answers: each body, then its figures; the second reused the connection (0 new connects).
    const figures = lines.filter((l) => /^\d{3} [\d.]+ \d+$/.test(l));
    assert.deepEqual(figures, ['200 1.1 1', '200 1.1 0']);
    const body = JSON.parse(lines[0]!) as { rawHeaders: string[] };
    const proto = body.rawHeaders.findIndex((h) => h.toLowerCase() === 'x-forwarded-proto');
    assert.ok(proto >= 0, JSON.stringify(body.rawHeaders));
    assert.equal(body.rawHeaders[proto + 1], 'https');
  });

  test('SNI: an exact name, a wildcard subdomain, an unknown name and no name each get the right certificate', async () => {
    assert.equal(await presented(tlsPort, 'shop.test'), 'shop.test');
    assert.equal(await presented(tlsPort, 'a.wild.test'), '*.wild.test');
    // A wildcard covers one label only.
    assert.equal(await presented(tlsPort, 'b.a.wild.test'), 'first.test');
    assert.equal(await presented(tlsPort, 'nowhere.test'), 'first.test');
    assert.equal(await presented(tlsPort), 'first.test');
    const r = await curl(
      'a.wild.test',
      '/status?code=200',
      '--write-out',
      '%{http_code}',
      '--output',
      '/dev/null',
    );
    assert.equal(r.stdout, '200', r.stderr);
  });

  test('a WebSocket over wss:// echoes', async () => {
    const ws = new WebSocket(`wss://127.0.0.1:${tlsPort}/echo`, {
      ca: ca.ca,
      servername: 'ws.wild.test',
      headers: { host: 'ws.wild.test' },
      perMessageDeflate: false,
    } as ClientOptions);
    try {
      await wsOpened(ws);
      const message = Buffer.alloc(256 * 1024, 7);
      assert.deepEqual(await wsEcho(ws, message), { data: message, isBinary: true });
    } finally {
      ws.terminate();
    }
  });

  test('the expiry metric reports each certificate, and the first one (1 day left) was warned about', async () => {
    const text = await (await fetch(`${stack.adminUrl}/metrics`)).text();
    for (const name of ['first.test', 'shop.test', '*.wild.test']) {
      const m = new RegExp(
        `^sluice_tls_cert_expiry_seconds\\{name="${name.replace(/[.*]/g, '\\$&')}"\\} (\\d+)$`,
        'm',
      ).exec(text);
      assert.ok(
        m !== null,
        `no expiry for ${name} in:\n${text
          .split('\n')
          .filter((l) => l.includes('tls'))
          .join('\n')}`,
      );
      assert.ok(Number(m[1]) > 0 && Number(m[1]) <= 2 * 86_400, m[0]);
    }
    const warned = stack.controller.lines.filter((l) => l.event === 'tls-cert-expiring');
    assert.ok(
      warned.some((l) => JSON.stringify(l.names) === '["first.test"]'),
      JSON.stringify(warned),
    );
  });

  test('rotation: new files are used for new handshakes, an open connection keeps working; SIGHUP too; a bad file keeps the old', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: ca.ca, servername: 'shop.test' });
    const get = (): Promise<{ status: number; port: number }> =>
      new Promise((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port: tlsPort,
            path: '/status?code=200',
            headers: { host: 'shop.test' },
            agent,
          },
          (res) => {
            const port = res.socket.localPort ?? 0;
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode ?? 0, port }));
          },
        );
        req.on('error', reject);
        req.end();
      });
    try {
      const before = await get();
      assert.equal(before.status, 200);

      // A new certificate for shop.test, written over the files the controller reads.
      const rotated = await issueCert(['shop.test'], { file: 'shop-rotated', cn: 'shop.test rotated' });
      const reloads = stack.controller.lines.filter((l) => l.event === 'tls-reloaded').length;
      copyFileSync(rotated.keyFile, shop.keyFile);
      copyFileSync(rotated.certFile, shop.certFile);
      await waitFor(
        'the reload',
        () => stack.controller.lines.filter((l) => l.event === 'tls-reloaded').length > reloads,
        EVENT_MS,
      );
      // The two files may be seen in two polls (a first reload can fail on a half-swapped pair): wait
      // until the new pair is the one in use.
      const deadline = Date.now() + scaled(EVENT_MS);
      let subject = '';
      for (let i = 0; i < 200 && Date.now() < deadline; i++) {
        subject = await presented(tlsPort, 'shop.test');
        if (subject === 'shop.test rotated') break;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.equal(subject, 'shop.test rotated');
      const after = await get();
      assert.deepEqual(after, { status: 200, port: before.port }, 'the open connection was kept');

      // SIGHUP reloads at once.
      const hups = stack.controller.lines.filter((l) => l.event === 'tls-reloaded').length;
      stack.controller.child.kill('SIGHUP');
      await waitFor(
        'the SIGHUP reload',
        () => stack.controller.lines.filter((l) => l.event === 'tls-reloaded').length > hups,
      );

      // A broken file: the old certificate stays, and the log says why. (A reload during the swap
      // above may have failed on a half-written pair: count only what comes now.)
      const failures = (): Record<string, unknown>[] =>
        stack.controller.lines.filter((l) => l.event === 'tls-reload-failed');
      const earlier = failures().length;
      writeFileSync(
        shop.certFile,
        '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n',
      );
      await waitFor('the failed reload', () => failures().length > earlier);
      assert.match(String(failures().at(-1)!.err), /tls\.certs\[1\]\.cert.*shop\.pem/);
      assert.equal(await presented(tlsPort, 'shop.test'), 'shop.test rotated');
      assert.equal((await get()).status, 200);
    } finally {
      agent.destroy();
    }
  });
});

describe('the TLS flags and variables, with unknownName: refuse', () => {
  let refusing: Stack | undefined;
  after(async () => {
    await refusing?.stop();
  });

  test('a name no certificate serves ends the handshake; a known one is served', async () => {
    refusing = await Stack.start({
      routes: [{ host: 'a.wild.test', target: origin.url }],
      agent: false,
      extraYaml: 'tls:\n  unknownName: refuse',
      controllerEnv: {
        SLUICE_TLS_LISTEN: '127.0.0.1:0',
        SLUICE_TLS_CERT: wild.certFile,
        SLUICE_TLS_KEY: wild.keyFile,
      },
    });
    const line = await refusing.controller.waitLine(
      'the TLS listener',
      (l) => l.event === 'listening' && l.listener === 'tls',
    );
    const port = Number(new URL(String(line.url)).port);
    await assert.rejects(presented(port, 'nowhere.test'), /no certificate/);
    assert.equal(await presented(port, 'a.wild.test'), '*.wild.test');
  });
});

describe('bad certificate files', () => {
  async function startWith(yaml: string): Promise<{ code: number; stderr: string }> {
    const d = tempDir();
    const file = join(d, 'sluice.yaml');
    writeFileSync(
      file,
      [
        'listen: 127.0.0.1:0',
        'tunnelListen: tcp://127.0.0.1:0',
        'adminListen: off',
        `dataDir: ${JSON.stringify(d)}`,
        yaml,
      ].join('\n'),
    );
    const r = await run(process.execPath, [BIN, 'controller', '--config', file]);
    return { code: r.code, stderr: r.stderr };
  }

  test('a missing file, a file that is no certificate, and a key of another certificate each exit 2 naming the file', async () => {
    const missing = await startWith(
      `tls:\n  listen: 127.0.0.1:0\n  certs:\n    - { cert: /nonexistent/x.pem, key: ${JSON.stringify(wild.keyFile)} }`,
    );
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /tls\.certs\[0\]\.cert file "\/nonexistent\/x\.pem" cannot be read/);

    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, 'hello\n');
    const notPem = await startWith(
      `tls:\n  listen: 127.0.0.1:0\n  certs:\n    - { cert: ${JSON.stringify(garbage)}, key: ${JSON.stringify(wild.keyFile)} }`,
    );
    assert.equal(notPem.code, 2, notPem.stderr);
    assert.match(notPem.stderr, /tls\.certs\[0\]\.cert file ".*garbage\.pem" is not a PEM certificate/);

    const mismatched = await startWith(
      `tls:\n  listen: 127.0.0.1:0\n  certs:\n    - { cert: ${JSON.stringify(wild.certFile)}, key: ${JSON.stringify(first.keyFile)} }`,
    );
    assert.equal(mismatched.code, 2, mismatched.stderr);
    assert.match(
      mismatched.stderr,
      /tls\.certs\[0\]\.key file ".*first\.key" is not the key of the certificate in ".*wild\.pem"/,
    );

    const alone = await startWith(
      `tls:\n  certs:\n    - { cert: ${JSON.stringify(wild.certFile)}, key: ${JSON.stringify(wild.keyFile)} }`,
    );
    assert.equal(alone.code, 2, alone.stderr);
    assert.match(alone.stderr, /tls\.listen is required/);
  });
});
