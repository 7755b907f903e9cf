// Runs the real binary as a child process.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { READY_MS, scaled } from '../helpers/wait.js';

const BIN = fileURLToPath(new URL('../../../bin/sluice.js', import.meta.url));

// The child must not pick up the settings of whoever runs the tests.
const ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SLUICE_')));

function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { timeout: scaled(READY_MS), env: ENV },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

test('--version prints the package version', async () => {
  const r = await run('--version');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^sluice \d+\.\d+\.\d+\n$/);
});

test('--help prints usage and exits 0', async () => {
  const r = await run('--help');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /Usage: sluice <command>/);
});

test('an unknown command prints usage and exits 2', async () => {
  const r = await run('frobnicate');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unknown command 'frobnicate'/);
  assert.match(r.stderr, /Usage: sluice/);
});

test('a bad flag prints usage and exits 2', async () => {
  const r = await run('agent', '--no-such-flag');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /no-such-flag/);
  assert.match(r.stderr, /Usage: sluice/);
});

const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function yamlFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

test('controller --config with a missing file exits 2 naming `config`', async () => {
  const missing = join(dir, 'missing.yaml');
  const r = await run('controller', '--config', missing);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^sluice controller: config file ".*missing\.yaml" cannot be read: ENOENT/);
  assert.equal(r.stdout, '');
});

test('controller with a bad route exits 2 naming the key and the line', async () => {
  const path = yamlFile(
    'bad-route.yaml',
    'clusters:\n  - name: demo\nroutes:\n  - host: app.example.test\n    cluster: demo\n    target: ftp://x\n',
  );
  const r = await run('controller', '--config', path);
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    /^sluice controller: routes\[0\]\.target must be an http:\/\/, https:\/\/ or h2c:\/\/ URL .*bad-route\.yaml:6\)\n$/,
  );
});

test('controller with invalid YAML exits 2 with the line', async () => {
  const r = await run('controller', '--config', yamlFile('syntax.yaml', 'listen: 127.0.0.1:0\nroutes: [\n'));
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^sluice controller: config file ".*syntax\.yaml" is not valid YAML at line \d+/);
});

test('agent without --controller exits 2', async () => {
  const r = await run('agent', '--token', 'agent-token-0123456789');
  assert.equal(r.code, 2);
  assert.equal(
    r.stderr,
    'sluice agent: controller is required: pass --controller URL or set SLUICE_CONTROLLER\n',
  );
});

test('agent with a bad token exits 2 without showing it', async () => {
  const r = await run('agent', '--controller', 'tcp://127.0.0.1:1', '--token', 'tiny-secret');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^sluice agent: token must be at least 16/);
  assert.ok(!r.stderr.includes('tiny-secret'));
});

test('controller --bogus exits 2 with the usage', async () => {
  const r = await run('controller', '--bogus');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^sluice controller: unknown flag --bogus\n/);
  assert.match(r.stderr, /Usage: sluice controller/);
});

test('a positional argument is a bad flag', async () => {
  const r = await run('dev', 'extra');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /Usage: sluice dev/);
});

test('agent --help prints its flags with their variables and exits 0', async () => {
  const r = await run('agent', '--help');
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^Usage: sluice agent/);
  for (const name of [
    'CONTROLLER',
    'TOKEN',
    'NAME',
    'TUNNELS',
    'ALLOW',
    'HEALTH_LISTEN',
    'CA',
    'SERVERNAME',
    'GRACE_PERIOD',
    'PING_INTERVAL',
    'PING_TIMEOUT',
  ]) {
    assert.match(r.stdout, new RegExp(`\\$SLUICE_${name}\\b`));
  }
  assert.equal(r.stderr, '');
});

test('controller -h and dev -h print their usage and exit 0', async () => {
  const controller = await run('controller', '-h');
  assert.equal(controller.code, 0);
  assert.match(controller.stdout, /--tunnel-listen ADDR .*\n.*\$SLUICE_TUNNEL_LISTEN/);
  const dev = await run('dev', '-h');
  assert.equal(dev.code, 0);
  assert.match(dev.stdout, /--admin-listen ADDR .*\$SLUICE_ADMIN_LISTEN/);
});

test('dev with a bad --listen exits 2 naming the key', async () => {
  const r = await run('dev', '--listen', 'nowhere');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^sluice dev: listen must be host:port .*, got "nowhere" \(from --listen\)\n$/);
});

test('sluice dev takes off for --admin-listen and refuses a bad address with its key', async () => {
  const bad = await run('dev', '--admin-listen', 'nowhere');
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /adminListen must be host:port[^\n]*or "off"/);
});
