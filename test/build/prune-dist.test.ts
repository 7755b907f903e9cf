// The incremental build (`npm run compile`) must never leave the output of a deleted source in dist/,
// where `npm test` would still run it. scripts/prune-dist.mjs runs before tsc -b; here it runs on a
// package tree of its own.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const SCRIPT = fileURLToPath(new URL('../../../scripts/prune-dist.mjs', import.meta.url));
const PACKAGE = fileURLToPath(new URL('../../../package.json', import.meta.url));
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function tree(files: string[]): string {
  const root = mkdtempSync(join(tmpdir(), 'sluice-prune-'));
  dirs.push(root);
  for (const file of files) {
    mkdirSync(dirname(join(root, file)), { recursive: true });
    writeFileSync(join(root, file), '');
  }
  return root;
}

async function prune(root: string): Promise<string> {
  const { stderr } = await promisify(execFile)(process.execPath, [SCRIPT, root], { timeout: 30_000 });
  return stderr;
}

const OUTPUTS = (base: string) => ['.js', '.js.map', '.d.ts', '.d.ts.map'].map((ext) => base + ext);

test('removes every output of a deleted source, keeps the others and the build info', async () => {
  const root = tree([
    'src/kept.ts',
    'test/kept.test.ts',
    ...OUTPUTS('dist/src/kept'),
    ...OUTPUTS('dist/test/kept.test'),
    ...OUTPUTS('dist/test/gone.test'),
    ...OUTPUTS('dist/test/old/deep.test'),
    'dist/tsconfig.tsbuildinfo',
  ]);
  const stderr = await prune(root);
  for (const file of [...OUTPUTS('dist/src/kept'), ...OUTPUTS('dist/test/kept.test')]) {
    assert.ok(existsSync(join(root, file)), `${file} was removed`);
  }
  for (const file of [...OUTPUTS('dist/test/gone.test'), ...OUTPUTS('dist/test/old/deep.test')]) {
    assert.ok(!existsSync(join(root, file)), `${file} is still there`);
  }
  assert.ok(!existsSync(join(root, 'dist/test/old')), 'the emptied folder is still there');
  assert.ok(existsSync(join(root, 'dist/tsconfig.tsbuildinfo')));
  assert.match(stderr, /removed 8 compiled file/);
});

test('a source without its output drops the build info, so that tsc rebuilds everything', async () => {
  const root = tree(['src/a.ts', 'src/b.ts', ...OUTPUTS('dist/src/a'), 'dist/tsconfig.tsbuildinfo']);
  await prune(root);
  assert.ok(!existsSync(join(root, 'dist/tsconfig.tsbuildinfo')));
  assert.ok(existsSync(join(root, 'dist/src/a.js')));
});

test('a tree never built is left alone', async () => {
  const root = tree(['src/a.ts']);
  assert.equal(await prune(root), '');
  assert.ok(!existsSync(join(root, 'dist')));
});

test('npm start and npm test build incrementally, after the prune; npm run build stays clean', () => {
  const pkg = JSON.parse(readFileSync(PACKAGE, 'utf8')) as { scripts: Record<string, string> };
  const tsconfig = JSON.parse(readFileSync(join(dirname(PACKAGE), 'tsconfig.json'), 'utf8')) as {
    compilerOptions: Record<string, unknown>;
  };
  assert.equal(tsconfig.compilerOptions.tsBuildInfoFile, 'dist/tsconfig.tsbuildinfo');
  assert.match(pkg.scripts.compile!, /^node scripts\/prune-dist\.mjs && tsc -b /);
  assert.equal(pkg.scripts.prestart, 'npm run compile');
  assert.equal(pkg.scripts.pretest, 'npm run compile');
  assert.match(pkg.scripts.build!, /rmSync\('dist'/);
});
