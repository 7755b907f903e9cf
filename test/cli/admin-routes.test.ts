// `sluice route|cluster|token` many times over against a real `sluice controller` process: the second and
// the hundredth item, not just the first, and random add/remove sequences checked against a model
// (fast-check, fixed seed). The bulk runs the CLI's main() in this process, which talks to the
// controller over real HTTP as the binary does; the binary itself runs for the second route too.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { main } from '../../src/cli/main.js';
import { BIN, type SluiceProcess, startAdminController } from '../helpers/sluice-procs.js';

const ADMIN_TOKEN = 'cli-routes-admin-token-0123456789';
// The binary must not pick up the settings of whoever runs the tests.
const ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SLUICE_')));

const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-routes-'));
const tokenFile = join(dir, 'admin-token');
let controller: SluiceProcess | undefined;
let admin = '';

before(async () => {
  writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`);
  const started = await startAdminController(dir, ADMIN_TOKEN, 'cli-routes-seed-token-0123456789');
  controller = started.controller;
  admin = started.adminUrl;
});

after(async () => {
  try {
    await controller?.stop('SIGTERM', 30_000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** One CLI command run in this process. */
async function cli(...args: string[]): Promise<Ran> {
  let stdout = '';
  let stderr = '';
  const io = { out: (t: string) => void (stdout += t), err: (t: string) => void (stderr += t) };
  const code = await main([...args, '--admin', admin, '--admin-token-file', tokenFile], io);
  return { code, stdout, stderr };
}

/** One CLI command run as the real binary. */
function binary(...args: string[]): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args, '--admin', admin],
      { timeout: 60_000, env: { ...ENV, SLUICE_ADMIN_TOKEN: ADMIN_TOKEN }, cwd: dir },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

async function ok(ran: Promise<Ran>): Promise<string> {
  const r = await ran;
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

interface RouteRow {
  host: string;
  path: string;
  cluster: string;
  target: string;
}

async function listRoutes(): Promise<string[]> {
  const { routes } = JSON.parse(await ok(cli('route', 'ls', '--json'))) as { routes: RouteRow[] };
  return routes.map((r) => `${r.host} ${r.path} ${r.cluster} ${r.target}`);
}

/** Deterministic shuffles, so that a failure replays. */
function shuffled<T>(items: readonly T[], seed: number): T[] {
  return fc.sample(fc.shuffledSubarray([...items], { minLength: items.length }), { seed, numRuns: 1 })[0]!;
}

describe('routes', () => {
  test('the binary adds a second route, and a third; ls shows them; rm removes them', async () => {
    const target = 'http://127.0.0.1:9001';
    for (const host of ['one.example.test', 'two.example.test', 'three.example.test']) {
      const r = await binary('route', 'add', host, '--cluster', 'seeded', '--target', target);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `route ${host}/ added\n`);
    }
    const ls = await binary('route', 'ls');
    assert.equal(ls.code, 0, ls.stderr);
    assert.equal(ls.stdout.trimEnd().split('\n').length, 4, ls.stdout);
    for (const host of ['two.example.test', 'one.example.test', 'three.example.test']) {
      assert.equal((await binary('route', 'rm', host)).code, 0);
    }
    assert.deepEqual(await listRoutes(), []);
  });

  test('route add --tls passthrough takes a tcp:// target; ls shows its tls; a bad value is refused', async () => {
    const host = 'pass.example.test';
    await ok(
      cli('route', 'add', host, '--cluster', 'seeded', '--target', 'tcp://db:443', '--tls', 'passthrough'),
    );
    const ls = await ok(cli('route', 'ls'));
    assert.match(ls, /^HOST +PATH +CLUSTER +TARGET +TLS +SOURCE$/m);
    assert.match(ls, /^pass\.example\.test +\/ +seeded +tcp:\/\/db:443 +passthrough +api$/m);
    const bad = await cli(
      'route',
      'add',
      'b.example.test',
      '--cluster',
      'seeded',
      '--target',
      'tcp://db:443',
      '--tls',
      'yes',
    );
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /tls/);
    await ok(cli('route', 'rm', host));
    assert.deepEqual(await listRoutes(), []);
  });

  test('a repeated route is refused naming the host, and the others are untouched', async () => {
    await ok(cli('route', 'add', 'a.example.test', '--cluster', 'seeded', '--target', 'http://h:1'));
    await ok(
      cli(
        'route',
        'add',
        'a.example.test',
        '--path',
        '/api',
        '--cluster',
        'seeded',
        '--target',
        'http://h:2',
      ),
    );
    const again = await cli(
      'route',
      'add',
      'a.example.test',
      '--path',
      '/api',
      '--cluster',
      'seeded',
      '--target',
      'http://h:3',
    );
    assert.equal(again.code, 1);
    assert.equal(
      again.stderr,
      'sluice route: host: a route for host a.example.test, path /api already exists\n',
    );
    assert.deepEqual(await listRoutes(), [
      'a.example.test / seeded http://h:1',
      'a.example.test /api seeded http://h:2',
    ]);
    await ok(cli('route', 'rm', 'a.example.test', '--path', '/api'));
    await ok(cli('route', 'rm', 'a.example.test'));
    assert.deepEqual(await listRoutes(), []);
  });

  test('100 routes added in one order and removed in another', async () => {
    const routes = Array.from({ length: 100 }, (_, i) => ({
      host: i % 3 === 0 ? `*.w${i}.example.test` : `r${i}.example.test`,
      path: i % 4 === 0 ? `/p${i}` : '/',
      target: `http://10.0.0.${i}:${8000 + i}`,
    }));
    const key = (r: { host: string; path: string; target: string }) =>
      `${r.host} ${r.path} seeded ${r.target}`;
    for (const r of shuffled(routes, 1)) {
      await ok(cli('route', 'add', r.host, '--path', r.path, '--cluster', 'seeded', '--target', r.target));
    }
    assert.deepEqual((await listRoutes()).sort(), routes.map(key).sort());
    // The table, too: one row per route under the header.
    assert.equal((await ok(cli('route', 'ls'))).trimEnd().split('\n').length, 101);
    const left = new Set(routes.map(key));
    for (const [n, r] of shuffled(routes, 2).entries()) {
      await ok(cli('route', 'rm', r.host, '--path', r.path));
      left.delete(key(r));
      if (n === 1 || n === 49 || n === 98) assert.deepEqual((await listRoutes()).sort(), [...left].sort());
    }
    assert.deepEqual(await listRoutes(), []);
  });

  test('random add/remove sequences agree with a model', async () => {
    const hosts = ['m1.example.test', 'm2.example.test', '*.m.example.test', 'm3.example.test'];
    const paths = ['/', '/api', '/api/v2'];
    const op = fc.record({
      add: fc.boolean(),
      host: fc.constantFrom(...hosts),
      path: fc.constantFrom(...paths),
      port: fc.integer({ min: 1, max: 65535 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), async (ops) => {
        const model = new Map<string, string>();
        try {
          for (const { add, host, path, port } of ops) {
            const id = `${host} ${path}`;
            if (add) {
              const r = await cli(
                'route',
                'add',
                host,
                '--path',
                path,
                '--cluster',
                'seeded',
                '--target',
                `http://t:${port}`,
              );
              assert.equal(r.code, model.has(id) ? 1 : 0, `add ${id}: ${r.stderr}`);
              if (!model.has(id)) model.set(id, `${id} seeded http://t:${port}`);
            } else {
              const r = await cli('route', 'rm', host, '--path', path);
              assert.equal(r.code, model.has(id) ? 0 : 1, `rm ${id}: ${r.stderr}`);
              model.delete(id);
            }
          }
          assert.deepEqual((await listRoutes()).sort(), [...model.values()].sort());
        } finally {
          for (const id of [...model.keys()]) {
            const [host, path] = id.split(' ');
            await cli('route', 'rm', host!, '--path', path!);
          }
        }
      }),
      { numRuns: 25, seed: 0x5eed },
    );
  });
});

describe('clusters and tokens', () => {
  test('100 clusters: added, listed, removed in another order', async () => {
    const names = Array.from({ length: 100 }, (_, i) => `bulk-${i}`);
    for (const name of shuffled(names, 3))
      assert.equal(await ok(cli('cluster', 'add', name)), `cluster ${name} added\n`);
    const listed = (JSON.parse(await ok(cli('cluster', 'ls', '--json'))) as { clusters: { name: string }[] })
      .clusters;
    assert.deepEqual(
      listed
        .map((c) => c.name)
        .filter((n) => n.startsWith('bulk-'))
        .sort(),
      [...names].sort(),
    );
    for (const name of shuffled(names, 4)) await ok(cli('cluster', 'rm', name));
    const rest = (JSON.parse(await ok(cli('cluster', 'ls', '--json'))) as { clusters: { name: string }[] })
      .clusters;
    assert.deepEqual(
      rest.map((c) => c.name),
      ['seeded'],
    );
  });

  test('100 tokens of one cluster: each distinct, listed, revoked one by one in another order', async () => {
    await ok(cli('cluster', 'add', 'many-tokens'));
    const tokens = new Set<string>();
    for (let i = 0; i < 100; i++) tokens.add((await ok(cli('token', 'create', 'many-tokens'))).trim());
    assert.equal(tokens.size, 100);
    type TokenRow = { id: string; revoked: string | null };
    const list = async () =>
      (JSON.parse(await ok(cli('token', 'ls', 'many-tokens', '--json'))) as { tokens: TokenRow[] }).tokens;
    const ids = (await list()).map((t) => t.id);
    assert.equal(new Set(ids).size, 100);
    for (const [n, id] of shuffled(ids, 5).entries()) {
      await ok(cli('token', 'revoke', id));
      if (n === 1 || n === 99) {
        const revoked = (await list()).filter((t) => t.revoked !== null).length;
        assert.equal(revoked, n + 1);
      }
    }
    await ok(cli('cluster', 'rm', 'many-tokens'));
  });
});
