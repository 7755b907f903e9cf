// The `ssh` path's sshd_config is one that sshd itself accepts (`sshd -t`, its config test mode),
// and it keeps the private sshd to loopback and keys: no password can ever be tried on it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { sshdBinary, sshdConf } from '../../bench/suite/ssh.js';

const sshd = sshdBinary();

test('the ssh path config listens on loopback only and allows keys only', () => {
  const conf = sshdConf('/tmp/x', 2222);
  assert.match(conf, /^ListenAddress 127\.0\.0\.1:2222$/m);
  assert.match(conf, /^PasswordAuthentication no$/m);
  assert.match(conf, /^KbdInteractiveAuthentication no$/m);
  assert.match(conf, /^AllowTcpForwarding remote$/m);
  assert.match(conf, /^HostKey \/tmp\/x\/host_key$/m);
});

test('sshd accepts the config (sshd -t)', { skip: sshd === null ? 'needs openssh-server' : false }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-sshd-'));
  try {
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')], {
      timeout: 10_000,
    });
    writeFileSync(join(dir, 'sshd_config'), sshdConf(dir, 2222));
    execFileSync(sshd!, ['-t', '-f', join(dir, 'sshd_config')], { timeout: 10_000, stdio: 'pipe' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
