// Runs the real binary as a child process.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../../bin/sluice.js', import.meta.url));

function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
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
