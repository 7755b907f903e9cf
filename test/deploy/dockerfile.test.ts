// The Dockerfile, without a Docker engine (none runs on these machines): every path it copies from the
// build context exists and is not excluded by .dockerignore; it runs as a non-root user, has no
// HEALTHCHECK and no `latest` base; and the command it runs works from what its last stage holds: a
// pruned `npm ci --omit=dev` (no devDependencies), the JavaScript of src/ alone compiled with
// tsconfig.build.json, package.json and bin/. `sluice --version` and `sluice agent --help` work there.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { READY_MS, scaled } from '../helpers/wait.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const dockerfile = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
const ignored = readFileSync(join(REPO, '.dockerignore'), 'utf8')
  .split('\n')
  .map((l) => l.trim())
  .filter((l) => l !== '' && !l.startsWith('#'));

function run(
  file: string,
  args: string[],
  cwd: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { cwd, timeout: scaled(READY_MS) * 3, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) =>
        resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? -1), stdout, stderr }),
    );
  });
}

/** The sources of every COPY from the build context (not --from another stage). */
function copiedPaths(): string[] {
  const paths: string[] = [];
  for (const line of dockerfile.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (words[0] !== 'COPY' || words.some((w) => w.startsWith('--from='))) continue;
    paths.push(...words.slice(1, -1).filter((w) => !w.startsWith('--')));
  }
  return paths;
}

describe('the Dockerfile', () => {
  test('copies only paths that exist and that .dockerignore lets through', () => {
    const paths = copiedPaths();
    assert.ok(
      paths.includes('src') && paths.includes('bin') && paths.includes('package-lock.json'),
      paths.join(' '),
    );
    for (const path of paths) {
      assert.ok(existsSync(join(REPO, path)), `COPY ${path}: no such path`);
      assert.ok(!ignored.includes(path), `COPY ${path}, but .dockerignore excludes it`);
    }
  });

  test('builds on node:20-bookworm-slim, runs as a non-root user, has no HEALTHCHECK', () => {
    // Every stage starts from node:20-bookworm-slim, directly or through an earlier stage.
    const stages = [...dockerfile.matchAll(/^FROM (\S+)(?: AS (\S+))?/gm)].map((m) => ({
      from: m[1]!,
      name: m[2],
    }));
    const names = new Set(stages.flatMap((st) => (st.name === undefined ? [] : [st.name])));
    const bases = stages.map((st) => st.from).filter((from) => !names.has(from));
    assert.ok(stages.length >= 2 && bases.length > 0, stages.map((st) => st.from).join(' '));
    assert.ok(
      bases.every((b) => b.startsWith('node:20-bookworm-slim')),
      bases.join(' '),
    );
    const users = [...dockerfile.matchAll(/^USER (\S+)/gm)].map((m) => m[1]!);
    assert.equal(users.length, 1);
    assert.doesNotMatch(users[0]!, /^(root|0)(:|$)/);
    assert.doesNotMatch(dockerfile, /^HEALTHCHECK/m);
    assert.match(dockerfile, /^ENTRYPOINT \["node", "bin\/sluice\.js"\]$/m);
    assert.match(dockerfile, /npm ci --omit=dev/);
  });

  describe('its last stage, rebuilt here', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-image-'));
    after(() => rmSync(dir, { recursive: true, force: true }));

    test('sluice --version and sluice agent --help work without devDependencies', async () => {
      for (const file of ['package.json', 'package-lock.json', 'bin'])
        cpSync(join(REPO, file), join(dir, file), { recursive: true });
      // --ignore-scripts: better-sqlite3's native build is the controller's; the agent never loads it.
      const ci = await run(
        'npm',
        ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline'],
        dir,
      );
      assert.equal(ci.code, 0, ci.stderr);
      assert.equal(
        existsSync(join(dir, 'node_modules', 'typescript')),
        false,
        'a devDependency was installed',
      );
      const tsc = await run(
        process.execPath,
        [
          join(REPO, 'node_modules/typescript/bin/tsc'),
          '-p',
          join(REPO, 'tsconfig.build.json'),
          '--outDir',
          join(dir, 'dist'),
        ],
        REPO,
      );
      assert.equal(tsc.code, 0, tsc.stdout + tsc.stderr);
      assert.equal(existsSync(join(dir, 'dist', 'test')), false, 'tsconfig.build.json compiles src only');
      const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string };
      const version = await run(process.execPath, ['bin/sluice.js', '--version'], dir);
      assert.equal(version.code, 0, version.stderr);
      assert.equal(version.stdout, `sluice ${pkg.version}\n`);
      const help = await run(process.execPath, ['bin/sluice.js', 'agent', '--help'], dir);
      assert.equal(help.code, 0, help.stderr);
      assert.match(help.stdout, /^Usage: sluice agent/);
    });
  });
});
