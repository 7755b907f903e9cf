// Startup failures as an operator meets them: the real binary as a child process, and each failure
// before the service is up exits 2 (docs/configuration.md "Exit codes") with a message that names the key or flag at
// fault. Files named by the config are checked before anything is bound.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { BIN } from '../helpers/sluice-procs.js';

// The child must not pick up the settings of whoever runs the tests.
const ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SLUICE_')));
const TOKEN = 'startup-test-token-0123456789';

interface Exit {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Exit> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { timeout: 60_000, env: { ...ENV, ...env }, cwd: dir },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const dir = mkdtempSync(join(tmpdir(), 'sluice-startup-'));
let certs: TestCerts;
// A port held by the test, so that binding it fails with EADDRINUSE.
let taken: Server;
let takenPort = 0;

before(async () => {
  certs = await makeTestCerts();
  taken = createServer();
  takenPort = await listenOnLoopback(taken);
});

after(async () => {
  if (taken?.listening) {
    taken.close();
    await once(taken, 'close');
  }
  rmSync(dir, { recursive: true, force: true });
});

function config(name: string, lines: string[]): string {
  const file = join(dir, name);
  const base = [
    'listen: 127.0.0.1:0',
    'adminListen: off',
    `dataDir: ${JSON.stringify(join(dir, `data-${name}`))}`,
    'clusters:',
    `  - name: c1\n    tokens: [${JSON.stringify(TOKEN)}]`,
  ];
  writeFileSync(file, [...base, ...lines].join('\n') + '\n');
  return file;
}

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Nothing was bound: no listener logged its readiness line. */
function assertNothingListened(r: Exit): void {
  assert.doesNotMatch(r.stdout, /"event":"listening"/, `a listener was up: ${r.stdout}`);
}

describe('controller: TLS files are checked before anything is bound', () => {
  test('a missing tunnelCert file exits 2, names the key and the path, and binds nothing', async () => {
    const missing = join(dir, 'no-such-cert.pem');
    const path = config('missing-cert.yaml', [
      'tunnelListen: tls://127.0.0.1:0',
      `tunnelCert: ${JSON.stringify(missing)}`,
      `tunnelKey: ${JSON.stringify(join(certs.dir, 'server.key'))}`,
    ]);
    const r = await run(['controller', '--config', path]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /^sluice controller: tunnelCert file ".*no-such-cert\.pem" cannot be read: ENOENT/,
    );
    assertNothingListened(r);
  });

  test('a missing tunnelKey file exits 2 naming tunnelKey', async () => {
    const path = config('missing-key.yaml', [
      'tunnelListen: wss://127.0.0.1:0/tunnel',
      `tunnelCert: ${JSON.stringify(join(certs.dir, 'server.pem'))}`,
      `tunnelKey: ${JSON.stringify(join(dir, 'no-such.key'))}`,
    ]);
    const r = await run(['controller', '--config', path]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^sluice controller: tunnelKey file ".*no-such\.key" cannot be read: ENOENT/);
    assertNothingListened(r);
  });

  test('a tunnelCert that is not a certificate exits 2 naming both keys, before binding', async () => {
    const path = config('garbage-cert.yaml', [
      'tunnelListen: tls://127.0.0.1:0',
      `tunnelCert: ${JSON.stringify(file('garbage.pem', 'not a certificate\n'))}`,
      `tunnelKey: ${JSON.stringify(join(certs.dir, 'server.key'))}`,
    ]);
    const r = await run(['controller', '--config', path]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^sluice controller: tunnelCert .*garbage\.pem.* and tunnelKey .* are not usable/);
    assertNothingListened(r);
  });
});

describe('an address in use exits 2 naming the listener', () => {
  test('controller --listen', async () => {
    const r = await run(['controller', '--listen', `127.0.0.1:${takenPort}`, '--admin-listen', 'off']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^sluice controller: listen 127\\.0\\.0\\.1:${takenPort} .*already in use`),
    );
  });

  test('controller --tunnel-listen, and the public listener it had bound is released', async () => {
    const r = await run([
      'controller',
      '--listen',
      '127.0.0.1:0',
      '--tunnel-listen',
      `tcp://127.0.0.1:${takenPort}`,
      '--admin-listen',
      'off',
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^sluice controller: tunnelListen tcp://127\\.0\\.0\\.1:${takenPort} .*already in use`),
    );
  });

  test('controller --admin-listen', async () => {
    const args = ['--listen', '127.0.0.1:0', '--tunnel-listen', 'tcp://127.0.0.1:0'];
    const r = await run(['controller', ...args, '--admin-listen', `127.0.0.1:${takenPort}`], {
      SLUICE_DATA: join(dir, 'admin-in-use'),
      SLUICE_ADMIN_TOKEN: 'startup-test-admin-token-0123456789',
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^sluice controller: adminListen 127\\.0\\.0\\.1:${takenPort} .*already in use`),
    );
  });

  test('dev --listen', async () => {
    const r = await run([
      'dev',
      '--listen',
      `127.0.0.1:${takenPort}`,
      '--https-listen',
      'off',
      '--admin-listen',
      'off',
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`^sluice dev: listen 127\\.0\\.0\\.1:${takenPort} .*already in use`));
  });

  test('dev --https-listen names its own flag, not the controller key', async () => {
    const r = await run([
      'dev',
      '--listen',
      '127.0.0.1:0',
      '--https-listen',
      `127.0.0.1:${takenPort}`,
      '--admin-listen',
      'off',
      '--data',
      join(dir, 'dev-https-in-use'),
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(
        `^sluice dev: httpsListen 127\\.0\\.0\\.1:${takenPort} .*already in use.*\\(--https-listen\\)\n$`,
      ),
    );
  });

  test('agent --health-listen exits at once, without tunnels left dialing', async () => {
    const r = await run(
      ['agent', '--controller', 'tcp://127.0.0.1:1', '--health-listen', `127.0.0.1:${takenPort}`],
      { SLUICE_TOKEN: TOKEN },
    );
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^sluice agent: healthListen 127\\.0\\.0\\.1:${takenPort} .*already in use`),
    );
    // Had the tunnel slots kept dialing, the exit would wait for the 5 s watchdog of bin/sluice.js.
    assert.doesNotMatch(r.stderr, /handles still open/);
  });
});

describe('agent: --ca is checked at startup', () => {
  test('a missing --ca file exits 2 naming the flag', async () => {
    const r = await run(['agent', '--controller', 'tls://127.0.0.1:1', '--ca', join(dir, 'no-such-ca.pem')], {
      SLUICE_TOKEN: TOKEN,
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /^sluice agent: ca file ".*no-such-ca\.pem" cannot be read \(--ca, \$SLUICE_CA\): ENOENT/,
    );
  });

  test('a --ca file that holds no certificate exits 2, instead of failing every dial', async () => {
    const r = await run(
      ['agent', '--controller', 'tls://127.0.0.1:1', '--ca', file('not-a-ca.pem', 'hello\n')],
      { SLUICE_TOKEN: TOKEN },
    );
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^sluice agent: ca file ".*not-a-ca\.pem" .*must hold PEM certificates/);
    assert.doesNotMatch(r.stdout, /tunnel-failed/);
  });
});

describe('a mistyped flag says so, with the usage, and exits 2', () => {
  test('an admin command: unknown flag --jsn, and what was meant', async () => {
    const r = await run(['status', '--jsn']);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /^sluice status: unknown flag --jsn \(did you mean --json\?\)\n\nUsage: sluice status/,
    );
    assert.doesNotMatch(r.stderr, /positional/);
  });

  test('a service command: unknown flag --tunnel', async () => {
    const r = await run(['agent', '--tunnel', '2']);
    assert.equal(r.code, 2);
    assert.match(
      r.stderr,
      /^sluice agent: unknown flag --tunnel \(did you mean --tunnels\?\)\n\nUsage: sluice agent/,
    );
  });

  test('a flag far from any known one gets no suggestion', async () => {
    const r = await run(['route', 'ls', '--frobnicate']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^sluice route: unknown flag --frobnicate\n\nUsage: sluice route/);
  });
});
