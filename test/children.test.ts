// No sluice child outlives its test file, however the file's setup fails (test/helpers/sluice-procs.ts).
// On a busy machine cli/admin.test.ts once had a 15 s setup wait run out: its `after` found no stack to
// stop, so the file hung until the runner's 600 s timeout and left its `sluice controller` running,
// listening on three ports, after the suite ended. Each case runs test/fixtures/failed-setup.ts under
// `node --test` and checks that it ends on its own and that the child it started is gone.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { READY_MS, waitFor, within } from './helpers/wait.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/failed-setup.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'sluice-children-'));
/** Every process a case started or learnt of, killed by pid in `after` should a case fail. */
const started: ChildProcess[] = [];
const learnt = new Set<number>();

after(() => {
  for (const c of started) c.kill('SIGKILL');
  for (const pid of learnt) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

/** A live process that runs bin/sluice.js (not a zombie, not another program that reused the pid). */
function sluiceAlive(pid: number): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state !== 'Z' && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('bin/sluice.js');
  } catch {
    return false;
  }
}

function pidsIn(file: string, key: 'child' | 'owner'): number[] {
  return [...readFileSync(file, 'utf8').matchAll(new RegExp(`^${key}=(\\d+)$`, 'gm'))].map((m) =>
    Number(m[1]),
  );
}

interface Ended {
  code: number | null;
  ms: number;
  output: string;
  children: number[];
}

async function runFixture(mode: 'wait' | 'start' | 'exit' | 'signal'): Promise<Ended> {
  const pids = join(dir, `${mode}.pids`);
  writeFileSync(pids, '');
  const begun = performance.now();
  // Without this run's NODE_TEST_CONTEXT, which would make the nested runner skip the file.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  const runner = spawn(process.execPath, ['--test', '--test-timeout=600000', FIXTURE], {
    env: { ...env, FIXTURE_MODE: mode, FIXTURE_PIDS: pids },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.push(runner);
  let output = '';
  runner.stdout.setEncoding('utf8').on('data', (text: string) => (output += text));
  runner.stderr.setEncoding('utf8').on('data', (text: string) => (output += text));
  const exited = once(runner, 'exit') as Promise<[number | null]>;
  if (mode === 'signal') {
    // The pids file has no event; its owner line is written once the child is up.
    await waitFor('the fixture to start its child', () => pidsIn(pids, 'owner').length > 0, READY_MS);
    for (const pid of pidsIn(pids, 'child')) learnt.add(pid);
    process.kill(pidsIn(pids, 'owner')[0]!, 'SIGTERM');
  }
  // The hang this guards against lasted until the runner's timeout; the fixture's own children are
  // then still running, so they are noted for `after` before the bound can run out.
  const [code] = await within(exited, READY_MS * 2, `the ${mode} fixture to end`).finally(() => {
    for (const pid of pidsIn(pids, 'child')) learnt.add(pid);
  });
  return { code, ms: Math.round(performance.now() - begun), output, children: pidsIn(pids, 'child') };
}

async function assertGone(ended: Ended): Promise<void> {
  assert.ok(ended.children.length > 0, `the fixture started a child:\n${ended.output}`);
  for (const pid of ended.children) {
    // A SIGKILL on the way out is delivered at once, but the kernel takes a moment to reap.
    await waitFor(`sluice child ${pid} to be gone`, () => !sluiceAlive(pid));
  }
}

describe('a test file whose setup fails', { skip: process.platform !== 'linux' && 'reads /proc' }, () => {
  test('a setup wait that runs out before the file keeps its stack: the file ends, its controller stops', async (t) => {
    const ended = await runFixture('wait');
    t.diagnostic(`the fixture ended after ${ended.ms} ms with code ${ended.code}`);
    assert.match(ended.output, /timed out after \d+ms waiting for a line that never comes/);
    assert.equal(ended.code, 1, 'the failed setup fails the file');
    await assertGone(ended);
  });

  test('Stack.start giving up on a listener stops the controller it started', async (t) => {
    const ended = await runFixture('start');
    t.diagnostic(`the fixture ended after ${ended.ms} ms with code ${ended.code}`);
    assert.match(ended.output, /timed out after \d+ms waiting for public listener/);
    assert.equal(ended.code, 1);
    await assertGone(ended);
  });

  test('process.exit() during setup kills the running child on the way out', async () => {
    const ended = await runFixture('exit');
    assert.equal(ended.code, 1);
    await assertGone(ended);
  });

  test('a SIGTERM to the test file (a runner cancelling it) kills the running child', async () => {
    const ended = await runFixture('signal');
    assert.equal(ended.code, 1);
    assert.match(ended.output, /SIGTERM/);
    await assertGone(ended);
  });
});
