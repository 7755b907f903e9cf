// `sluice tcp-route add | ls | rm` against a real `sluice controller` process: the binary adds a route
// on a free port and it accepts, the 2nd route through main(), ls shows both with their bound address,
// rm makes the port refuse, and the errors (a taken port, a bad target, a missing flag) exit 1 or 2.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { main } from '../../src/cli/main.js';
import { BIN, type SluiceProcess, startAdminController } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled } from '../helpers/wait.js';

const ADMIN_TOKEN = 'cli-tcp-admin-token-0123456789abc';
// The binary must not pick up the settings of whoever runs the tests.
const ENV = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('SLUICE_')));

const dir = mkdtempSync(join(tmpdir(), 'sluice-cli-tcp-'));
const tokenFile = join(dir, 'admin-token');
let controller: SluiceProcess | undefined;
let admin = '';
let squatter: Server | undefined;

before(async () => {
  writeFileSync(tokenFile, `${ADMIN_TOKEN}\n`);
  const started = await startAdminController(dir, ADMIN_TOKEN, 'cli-tcp-seed-token-0123456789abc');
  controller = started.controller;
  admin = started.adminUrl;
});

after(async () => {
  try {
    squatter?.close();
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

async function cli(...args: string[]): Promise<Ran> {
  let stdout = '';
  let stderr = '';
  const io = { out: (t: string) => void (stdout += t), err: (t: string) => void (stderr += t) };
  const code = await main([...args, '--admin', admin, '--admin-token-file', tokenFile], io);
  return { code, stdout, stderr };
}

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

/** 'accepted' once a listener on `port` answers (accept, or accept then reset: no agent is up). */
function dial(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('timeout');
    }, scaled(EVENT_MS));
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve('accepted');
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code === 'ECONNRESET' ? 'accepted' : (err.code ?? 'error'));
    });
  });
}

const portOf = (address: string): number => Number(address.slice(address.lastIndexOf(':') + 1));

test('add (the binary, then main for the 2nd), ls, rm: each route accepts, then refuses once removed', async () => {
  const first = await binary(
    'tcp-route',
    'add',
    '127.0.0.1:0',
    '--cluster',
    'seeded',
    '--target',
    'tcp://db:5432',
  );
  assert.equal(first.code, 0, first.stderr);
  const a = /^tcp route (127\.0\.0\.1:\d+) added\n$/.exec(first.stdout)?.[1];
  assert.ok(a !== undefined, first.stdout);
  const second = await cli(
    'tcp-route',
    'add',
    '127.0.0.1:0',
    '--cluster',
    'seeded',
    '--target',
    'tcp://db:5433',
    '--proxy-protocol',
    'v2',
  );
  assert.equal(second.code, 0, second.stderr);
  const b = /^tcp route (127\.0\.0\.1:\d+) added\n$/.exec(second.stdout)?.[1];
  assert.ok(b !== undefined && b !== a, second.stdout);
  assert.equal(await dial(portOf(a)), 'accepted');
  assert.equal(await dial(portOf(b)), 'accepted');

  const ls = await cli('tcp-route', 'ls');
  assert.equal(ls.code, 0, ls.stderr);
  const lines = ls.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^LISTEN\s+ADDRESS\s+CLUSTER\s+TARGET\s+PROXYPROTOCOL\s+OPENCONNECTIONS$/);
  const rowA = lines.find((l) => l.includes(a))!;
  const rowB = lines.find((l) => l.includes(b))!;
  assert.match(rowA, /seeded\s+tcp:\/\/db:5432\s+-\s+\d+$/);
  assert.match(rowB, /seeded\s+tcp:\/\/db:5433\s+v2\s+\d+$/);
  const json = JSON.parse((await cli('tcp-route', 'ls', '--json')).stdout);
  assert.equal(json.tcpRoutes.length, 2);

  const rm = await binary('tcp-route', 'rm', a);
  assert.equal(rm.code, 0, rm.stderr);
  assert.equal(rm.stdout, `tcp route ${a} deleted\n`);
  assert.equal(await dial(portOf(a)), 'ECONNREFUSED');
  assert.equal(await dial(portOf(b)), 'accepted');
  assert.equal((await cli('tcp-route', 'rm', b)).code, 0);
  const again = await cli('tcp-route', 'rm', b);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^sluice tcp-route: no tcp route listens on /);
});

test('a taken port and a bad target exit 1 with the message; a missing flag or verb exits 2 with usage', async () => {
  squatter = createServer((s) => s.destroy());
  await new Promise<void>((resolve) => squatter!.listen(0, '127.0.0.1', resolve));
  const taken = `127.0.0.1:${(squatter.address() as { port: number }).port}`;
  const inUse = await cli('tcp-route', 'add', taken, '--cluster', 'seeded', '--target', 'tcp://db:1');
  assert.equal(inUse.code, 1);
  assert.match(inUse.stderr, /^sluice tcp-route: listen: .*already in use/);
  const bad = await cli('tcp-route', 'add', '127.0.0.1:0', '--cluster', 'seeded', '--target', 'http://db:1');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^sluice tcp-route: target: must be tcp:\/\/host:port/);
  const noTarget = await cli('tcp-route', 'add', '127.0.0.1:0', '--cluster', 'seeded');
  assert.equal(noTarget.code, 2);
  assert.match(noTarget.stderr, /--target is required[\s\S]*Usage: sluice tcp-route add LISTEN/);
  const noVerb = await cli('tcp-route');
  assert.equal(noVerb.code, 2);
  const help = await cli('tcp-route', '--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--proxy-protocol V/);
});
