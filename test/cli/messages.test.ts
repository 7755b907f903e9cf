// Messages that must tell a user what to do, read from real processes: an agent dialling the wrong
// transport or an untrusted certificate gets a hint in its log line, and `sluice status` shows no RTT
// before the first ping has measured one.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { BIN, type LogLine, SluiceProcess, TOKEN } from '../helpers/sluice-procs.js';

const ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SLUICE_')));
const ADMIN_TOKEN = 'messages-test-admin-token-0123456789';
const dir = mkdtempSync(join(tmpdir(), 'sluice-messages-'));
const procs: SluiceProcess[] = [];
let certs: TestCerts;

function spawn(args: string[], env: NodeJS.ProcessEnv = {}): SluiceProcess {
  const proc = new SluiceProcess(args, { ...env });
  procs.push(proc);
  return proc;
}

/** A controller on port 0 with the given tunnel listener scheme; resolves with its tunnel URL. */
async function controller(name: string, tunnelListen: string, extra: string[] = []): Promise<string> {
  const file = join(dir, `${name}.yaml`);
  const yaml = [
    'listen: 127.0.0.1:0',
    `tunnelListen: ${tunnelListen}`,
    'adminListen: 127.0.0.1:0',
    `dataDir: ${JSON.stringify(join(dir, name))}`,
    'clusters:',
    `  - name: c1\n    tokens: [${JSON.stringify(TOKEN)}]`,
    ...extra,
  ];
  writeFileSync(file, yaml.join('\n') + '\n');
  const proc = spawn(['controller', '--config', file], { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN });
  const tunnel = await proc.waitLine(
    `${name} tunnel listener`,
    (l) => l.event === 'listening' && l.listener === 'tunnel',
    30_000,
  );
  const admin = await proc.waitLine(
    `${name} admin listener`,
    (l) => l.event === 'listening' && l.listener === 'admin',
    30_000,
  );
  adminUrls.set(name, String(admin.url));
  return String(tunnel.url);
}
const adminUrls = new Map<string, string>();

function agent(url: string, args: string[] = []): SluiceProcess {
  return spawn(['agent', '--controller', url, '--tunnels', '1', ...args], { SLUICE_TOKEN: TOKEN });
}

const failed = (l: LogLine): boolean => l.event === 'tunnel-failed';

let tlsUrl = '';
let tcpUrl = '';

before(async () => {
  certs = await makeTestCerts();
  [tlsUrl, tcpUrl] = await Promise.all([
    controller('tls', 'tls://127.0.0.1:0', [
      `tunnelCert: ${JSON.stringify(join(certs.dir, 'server.pem'))}`,
      `tunnelKey: ${JSON.stringify(join(certs.dir, 'server.key'))}`,
    ]),
    // No ping from the controller during the test, so its tunnels have measured no RTT.
    controller('tcp', 'tcp://127.0.0.1:0', ['tunnel:', '  pingInterval: 5m', '  pingTimeout: 15m']),
  ]);
});

after(async () => {
  await Promise.allSettled(procs.map((p) => p.stop('SIGKILL')));
  rmSync(dir, { recursive: true, force: true });
});

describe('an agent dialling the wrong transport is told which one to try', () => {
  test('tcp:// at a tls:// listener: the controller may expect TLS', async () => {
    const url = tlsUrl.replace(/^tls:/, 'tcp:');
    const line = await agent(url).waitLine('tunnel-failed', failed, 30_000);
    assert.match(String(line.err), /may expect TLS: try tls:\/\/127\.0\.0\.1:\d+/);
    assert.doesNotMatch(String(line.err), /^transport ended by peer$/);
  });

  test('tls:// at a tcp:// listener: the controller may not speak TLS', async () => {
    const url = tcpUrl.replace(/^tcp:/, 'tls:');
    const line = await agent(url, ['--ca', join(certs.dir, 'ca.pem')]).waitLine(
      'tunnel-failed',
      failed,
      30_000,
    );
    assert.match(String(line.err), /may not serve TLS.*try tcp:\/\/127\.0\.0\.1:\d+/);
    // OpenSSL's own text (file names and line numbers of its source) is not what a user needs.
    assert.doesNotMatch(String(line.err), /rec_layer|deps\/openssl/);
  });

  test("wss:// at a plain listener: the same hint, without OpenSSL's source lines", async () => {
    const url = tcpUrl.replace(/^tcp:/, 'wss:');
    const line = await agent(url, ['--ca', join(certs.dir, 'ca.pem')]).waitLine(
      'tunnel-failed',
      failed,
      30_000,
    );
    assert.match(String(line.err), /may not serve TLS.*try ws:\/\/127\.0\.0\.1:\d+/);
    assert.doesNotMatch(String(line.err), /rec_layer|deps\/openssl/);
  });

  test('tls:// with a certificate the agent does not trust: pass its CA with --ca', async () => {
    const line = await agent(tlsUrl).waitLine('tunnel-failed', failed, 30_000);
    assert.equal(line.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    assert.match(String(line.err), /--ca FILE/);
  });

  test('tls:// to a name the certificate does not carry: set --servername', async () => {
    const args = ['--ca', join(certs.dir, 'ca.pem'), '--servername', 'other.example.test'];
    const line = await agent(tlsUrl, args).waitLine('tunnel-failed', failed, 30_000);
    assert.equal(line.code, 'ERR_TLS_CERT_ALTNAME_INVALID');
    assert.match(String(line.err), /--servername/);
  });

  test('with the right scheme and CA, the same agent connects', async () => {
    const up = await agent(tlsUrl, ['--ca', join(certs.dir, 'ca.pem')]).waitLine(
      'tunnel-up',
      (l) => l.event === 'tunnel-up',
      30_000,
    );
    assert.equal(up.controller, tlsUrl);
  });
});

describe('sluice status', () => {
  test('shows "-" for the RTT of a tunnel not pinged yet, never -1ms', async () => {
    const proc = agent(tcpUrl, ['--ping-interval', '5m']);
    await proc.waitLine('tunnel-up', (l) => l.event === 'tunnel-up', 30_000);
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [BIN, 'status', '--admin', adminUrls.get('tcp')!],
        { timeout: 30_000, env: { ...ENV, SLUICE_ADMIN_TOKEN: ADMIN_TOKEN }, cwd: dir },
        (err, stdout, stderr) => {
          const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
          resolve({ code, stdout, stderr });
        },
      );
    });
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /-1ms/);
    const [header, row] = r.stdout.split('\n');
    const rtt = header!.split(/\s+/).indexOf('RTT');
    assert.ok(rtt >= 0, r.stdout);
    assert.equal(row!.trim().split(/\s+/)[rtt], '-', r.stdout);
  });
});
