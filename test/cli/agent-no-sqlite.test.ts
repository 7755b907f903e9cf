// The agent needs nothing of SQLite: an agent-only install or image can leave out better-sqlite3 and its
// native build. Proved with a module hook (node:module register) that makes 'better-sqlite3'
// unresolvable in a child process, as if the package were not installed.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BIN, SluiceProcess, Stack } from '../helpers/sluice-procs.js';

const ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SLUICE_')));
const INDEX = fileURLToPath(new URL('../../src/index.js', import.meta.url));

const dir = mkdtempSync(join(tmpdir(), 'sluice-no-sqlite-'));
const HOOKS = `
export async function resolve(specifier, context, next) {
  if (specifier === 'better-sqlite3' || specifier.startsWith('better-sqlite3/')) {
    const err = new Error("Cannot find package 'better-sqlite3' (hidden by the test)");
    err.code = 'ERR_MODULE_NOT_FOUND';
    throw err;
  }
  return next(specifier, context);
}
`;
const REGISTER = `import { register } from 'node:module';\nregister(${JSON.stringify(
  pathToFileURL(join(dir, 'hooks.mjs')).href,
)});\n`;
writeFileSync(join(dir, 'hooks.mjs'), HOOKS);
writeFileSync(join(dir, 'register.mjs'), REGISTER);
const WITHOUT_SQLITE = { NODE_OPTIONS: `--import=${pathToFileURL(join(dir, 'register.mjs')).href}` };

let stack: Stack | undefined;
const agents: SluiceProcess[] = [];

before(async () => {
  stack = await Stack.start({ routes: [], agent: false });
});

after(async () => {
  await Promise.allSettled(agents.map((a) => a.stop()));
  await stack?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function node(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      args,
      { timeout: 60_000, env: { ...ENV, ...WITHOUT_SQLITE }, cwd: dir },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

test('the hook really hides better-sqlite3: the controller cannot start under it', async () => {
  const r = await node([BIN, 'controller', '--listen', '127.0.0.1:0', '--tunnel-listen', '127.0.0.1:0']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /better-sqlite3/);
});

test('sluice agent --help runs without better-sqlite3', async () => {
  const r = await node([BIN, 'agent', '--help']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Usage: sluice agent/);
});

test('the library entry point loads without better-sqlite3', async () => {
  const r = await node(['--input-type=module', '-e', `await import(${JSON.stringify(INDEX)})`]);
  assert.equal(r.code, 0, r.stderr);
});

test('an agent without better-sqlite3 dials, holds its tunnels and drains on SIGTERM', async () => {
  const agent = await stack!.spawnAgent({ tunnels: 1, env: WITHOUT_SQLITE });
  agents.push(agent);
  await agent.waitLine('agent tunnel up', (l) => l.event === 'tunnel-up', 30_000);
  assert.equal(await agent.stop('SIGTERM', 30_000), 0);
});
