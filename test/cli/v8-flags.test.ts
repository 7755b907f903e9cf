// The V8 settings a Sluice process gives itself (src/cli/v8-flags.ts): concurrent marking off unless
// the node command line says otherwise. The effect is checked in real child processes, by V8's own
// trace: a heap grown until V8 has to mark it starts concurrent marking tasks in a plain Node process,
// and once the flags are applied, at run time, by the module or by bin/sluice.js itself, no step of
// the incremental marking reports work done on background threads. (The atomic pause that ends the
// marking may still start a parallel marking task: that is --parallel-marking, which stays on, and
// the main thread waits for it anyway.)
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { v8FlagsFor } from '../../src/cli/v8-flags.js';
import { runNode } from '../helpers/run-node.js';
import { BIN } from '../helpers/sluice-procs.js';

const MODULE = fileURLToPath(new URL('../../src/cli/v8-flags.js', import.meta.url));
const TRACE = ['--trace-gc', '--trace-incremental-marking', '--trace-concurrent-marking'];
const CONCURRENT = /Starting major concurrent marking task/;
const BACKGROUND = /\[IncrementalMarking\] Marked [1-9]\d*KB on background threads/;
const RUN_MS = 60_000;

const dir = mkdtempSync(join(tmpdir(), 'sluice-v8-flags-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// `child.mjs none|module|bin PATH`: applies nothing, the module's flags, or runs the binary (its
// --version), then keeps objects until V8 marks the old generation, yielding so that V8's tasks run.
const CHILD = join(dir, 'child.mjs');
writeFileSync(
  CHILD,
  `import { pathToFileURL } from 'node:url';
const [how, target] = process.argv.slice(2);
if (how === 'module') (await import(pathToFileURL(target))).applyV8Flags();
if (how === 'bin') {
  process.argv = [process.argv[0], target, '--version'];
  await import(pathToFileURL(target));
}
const keep = [];
for (let i = 0; i < 600000; i++) {
  keep.push({ i, s: 'x' + i });
  if (i % 10000 === 0) await new Promise((resolve) => setImmediate(resolve));
}
console.log('kept ' + keep.length);
`,
);

async function marked(how: 'none' | 'module' | 'bin', nodeFlags: string[] = []): Promise<string> {
  const target = how === 'bin' ? BIN : MODULE;
  const ran = await runNode(CHILD, [how, target], RUN_MS, [...TRACE, ...nodeFlags]);
  assert.equal(ran.code, 0, ran.output);
  assert.match(ran.output, /kept 600000/);
  // The heap was marked: without that, no trace line could show anything.
  assert.match(ran.output, /Mark-Compact/, ran.output);
  return ran.output;
}

describe('the V8 flags a Sluice process sets', () => {
  test('concurrent marking goes off by default, and beside flags about other things', () => {
    assert.deepEqual(v8FlagsFor([]), ['--no-concurrent-marking']);
    assert.deepEqual(v8FlagsFor(['--expose-gc', '--max-old-space-size=512', '--enable-source-maps']), [
      '--no-concurrent-marking',
    ]);
    // A flag whose name starts the same is another flag.
    assert.deepEqual(v8FlagsFor(['--concurrent-marking-max-worker-num=2']), ['--no-concurrent-marking']);
  });

  test('the command line wins, in any spelling V8 takes', () => {
    for (const given of [
      '--concurrent-marking',
      '--no-concurrent-marking',
      '--concurrent_marking',
      '--no-concurrent_marking',
      '--single-threaded-gc',
      '--single-threaded',
    ]) {
      assert.deepEqual(v8FlagsFor([given]), [], given);
    }
  });

  test('a plain Node process marks concurrently: the trace this file relies on', async () => {
    assert.match(await marked('none'), CONCURRENT);
  });

  test('after applyV8Flags, at run time, V8 marks without concurrent tasks', async () => {
    assert.doesNotMatch(await marked('module'), BACKGROUND);
  });

  test('bin/sluice.js applies them before it runs a command', async () => {
    const output = await marked('bin');
    assert.match(output, /^sluice \S+$/m);
    assert.doesNotMatch(output, BACKGROUND);
  });

  test('node --concurrent-marking bin/sluice.js keeps V8 marking concurrently', async () => {
    assert.match(await marked('bin', ['--concurrent-marking']), CONCURRENT);
  });
});
