// The admin commands run as the real binary against a running controller process (admin listener on
// port 0): tables, --json, exit 1 with the API's message on an API error, exit 2 on bad usage.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ask, BIN, Stack } from '../helpers/sluice-procs.js';
import { startOrigin } from '../helpers/origin.js';
import { READY_MS, scaled } from '../helpers/wait.js';
import { sluiceVersion } from '../../src/version.js';

const ADMIN_TOKEN = 'cli-test-admin-token-0123456789';
// The child must not pick up the settings of whoever runs the tests.
const ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SLUICE_')));

let stack: Stack;
let origin: Awaited<ReturnType<typeof startOrigin>>;
const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-admin-'));

// Should a wait here run out (a busy machine), Stack.start stops the controller it started, and the
// helper's own `after` stops any child still running: the file ends instead of hanging on it.
before(async () => {
  origin = await startOrigin();
  stack = await Stack.start({
    routes: [],
    agent: false,
    admin: true,
    controllerEnv: { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN },
  });
});

after(async () => {
  await stack?.stop();
  await origin?.close();
  rmSync(dir, { recursive: true, force: true });
});

function sluice(
  args: string[],
  env: NodeJS.ProcessEnv = { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN },
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args, '--admin', stack.adminUrl],
      { timeout: scaled(READY_MS), env: { ...ENV, ...env }, cwd: dir },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

test('cluster add, ls (table and --json) and rm', async () => {
  assert.deepEqual(await sluice(['cluster', 'add', 'shop']), {
    code: 0,
    stdout: 'cluster shop added\n',
    stderr: '',
  });
  const ls = await sluice(['cluster', 'ls']);
  assert.equal(ls.code, 0);
  const lines = ls.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^NAME +SOURCE +CREATED$/);
  assert.ok(lines.some((l) => /^shop +api +\d{4}-/.test(l)));
  // Columns line up: every row starts its second column where the header does.
  const at = lines[0]!.indexOf('SOURCE');
  for (const line of lines.slice(1)) assert.match(line.slice(at), /^(api|config) /);
  const json = JSON.parse((await sluice(['cluster', 'ls', '--json'])).stdout);
  assert.ok(json.clusters.some((c: { name: string }) => c.name === 'shop'));
  const again = await sluice(['cluster', 'add', 'shop']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^sluice cluster: name: cluster "shop" already exists\n$/);
  assert.equal((await sluice(['cluster', 'rm', 'shop'])).code, 0);
});

test('token create prints the token once; an agent connects with it; status lists the tunnel; revoke', async () => {
  await sluice(['cluster', 'add', 'web']);
  const created = await sluice(['token', 'create', 'web']);
  assert.equal(created.code, 0);
  assert.match(created.stdout, /^slu_[A-Za-z0-9_-]{43}\n$/);
  const token = created.stdout.trim();
  const route = await sluice([
    'route',
    'add',
    'web.example.test',
    '--cluster',
    'web',
    '--target',
    origin.url,
    '--path',
    '/',
  ]);
  assert.equal(route.code, 0, route.stderr);
  const routes = await sluice(['route', 'ls']);
  assert.match(
    routes.stdout,
    /^HOST +PATH +CLUSTER +TARGET +TLS +SOURCE\nweb\.example\.test +\/ +web +http:\/\/127\.0\.0\.1:\d+ +- +api\n$/,
  );

  await stack.spawnAgent({ token, tunnels: 1, name: 'cli-agent' });
  const reply = await ask({ port: stack.port, host: 'web.example.test', path: '/headers' });
  assert.equal(reply.status, 200);
  const status = await sluice(['status']);
  assert.match(
    status.stdout,
    /^CLUSTER +AGENT +REPLICA +VERSION +REMOTE +SINCE +RTT +STREAMS +BYTESIN +BYTESOUT\nweb +cli-agent +\S+ +\d+\.\d+\.\d+\S* /,
  );
  const tunnels = JSON.parse((await sluice(['status', '--json'])).stdout).tunnels;
  assert.equal(tunnels.length, 1);
  assert.equal(tunnels[0].version, sluiceVersion());

  const tokens = JSON.parse((await sluice(['token', 'ls', 'web', '--json'])).stdout).tokens;
  assert.equal(tokens.length, 1);
  assert.ok(!(await sluice(['token', 'ls', 'web'])).stdout.includes(token));
  assert.equal((await sluice(['token', 'revoke', tokens[0].id])).code, 0);
  await stack.controller.waitLine(
    'the tunnel to close',
    (l) => l.event === 'tunnel-down' && l.agent === 'cli-agent',
  );
  assert.match((await sluice(['status'])).stdout, /^CLUSTER[^\n]*\n$/);

  assert.equal((await sluice(['route', 'rm', 'web.example.test'])).code, 0);
  assert.equal((await sluice(['route', 'ls'])).stdout, 'HOST  PATH  CLUSTER  TARGET  TLS  SOURCE\n');
});

test('API errors print the message and exit 1; bad usage exits 2 with usage', async () => {
  const bad = await sluice(['route', 'add', 'x.example.test', '--cluster', 'nope', '--target', 'http://h:1']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^sluice route: cluster: names no cluster: "nope"\n$/);
  const missing = await sluice(['route', 'add', 'x.example.test', '--target', 'http://h:1']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--cluster is required[^]*Usage: sluice route/);
  assert.equal((await sluice(['cluster', 'frob'])).code, 2);
  assert.equal((await sluice(['token', 'create'])).code, 2);
  const wrong = await sluice(['cluster', 'ls'], { SLUICE_ADMIN_TOKEN: 'wrong-token-0123456789' });
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /wrong admin token/);
  const none = await sluice(['cluster', 'ls'], {});
  assert.equal(none.code, 2);
  assert.match(none.stderr, /no admin token/);
  const file = join(dir, 'token');
  writeFileSync(file, `${ADMIN_TOKEN}\n`);
  assert.equal((await sluice(['cluster', 'ls', '--admin-token-file', file], {})).code, 0);
});
