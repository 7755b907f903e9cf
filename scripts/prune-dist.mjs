// Runs before every incremental build (`npm run compile`, hence `npm start` and `npm test`). tsc -b
// rebuilds only what changed but never deletes: the output of a source file that was deleted or renamed
// would stay in dist/, and `npm test` runs every dist/test/**/*.test.js it finds. So this removes each
// compiled file whose TypeScript source is gone. When an output is missing instead (someone deleted part
// of dist/), it removes the build info, and tsc rebuilds everything.
//
// Usage: node scripts/prune-dist.mjs [root]   (root: the package directory, default the current one)
import { existsSync, readdirSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = process.argv[2] ?? process.cwd();
const dist = join(root, 'dist');
// The folders tsconfig.json compiles, with rootDir "." and outDir "dist".
const SOURCE_DIRS = ['src', 'test', 'bench'];
const BUILD_INFO = join(dist, 'tsconfig.tsbuildinfo');
// What tsc writes for one foo.ts: foo.js, foo.js.map, foo.d.ts, foo.d.ts.map.
const OUTPUT = /\.(?:js|js\.map|d\.ts|d\.ts\.map)$/;

function walk(dir, visit) {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) walk(path, visit);
    else visit(path);
  }
}

function sourceOf(output) {
  return join(root, relative(dist, output).replace(OUTPUT, '.ts'));
}

function isDeclarationSource(path) {
  return path.endsWith('.d.ts');
}

let removed = 0;
for (const dir of SOURCE_DIRS) {
  walk(join(dist, dir), (output) => {
    if (!OUTPUT.test(output) || existsSync(sourceOf(output))) return;
    rmSync(output);
    removed += 1;
  });
}
for (const dir of SOURCE_DIRS) removeEmptyDirs(join(dist, dir));

let missing = 0;
for (const dir of SOURCE_DIRS) {
  walk(join(root, dir), (source) => {
    if (!source.endsWith('.ts') || isDeclarationSource(source)) return;
    const output = join(dist, relative(root, source)).replace(/\.ts$/, '.js');
    if (!existsSync(output)) missing += 1;
  });
}
if (missing > 0 && existsSync(BUILD_INFO)) rmSync(BUILD_INFO);

if (removed > 0) console.error(`prune-dist: removed ${removed} compiled file(s) whose source is gone`);

function removeEmptyDirs(dir) {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeEmptyDirs(join(dir, entry.name));
  }
  if (readdirSync(dir).length === 0) rmdirSync(dir);
}
