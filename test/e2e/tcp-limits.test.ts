// TCP routes and TLS passthrough held to tcp.maxConnectionsPerClient, logged, counted in /metrics and
// shown in /api/traffic (issue #15), with real clients against real controller and agent processes:
// redis-cli through a TCP route to a real redis-server, openssl s_client through passthrough to a TLS
// server holding the customer's certificate.
// - redis-cli PING gets PONG, the 1st, 2nd and 3rd time, each listed in /api/traffic's connections
//   with its bytes and `done`, and counted on the route;
// - with two connections held from 127.0.0.1, the third (redis-cli, or openssl s_client after its
//   ClientHello) is reset, logged as refused over the limit and counted as over_limit; once one of the
//   two closes, the next is served;
// - a passthrough host is not among /api/traffic's HTTP routes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect, type Server, type TLSSocket } from 'node:tls';
import type { TrafficSnapshot } from '../../src/controller/traffic.js';
import { metricValue, trafficUntil } from '../helpers/admin-traffic.js';
import { issueCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { tlsEchoServer } from '../helpers/listen.js';
import { RedisServer } from '../helpers/redis.js';
import { Stack, tempDir } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, within } from '../helpers/wait.js';

const OPENSSL = '/usr/bin/openssl';
const REDIS_CLI = '/usr/bin/redis-cli';
const PASS = 'db.example.test';
const ADMIN_TOKEN = 'tcp-limits-admin-token-0123456789';

let ca: TestCerts;
let redis: RedisServer;
let target: Server;
let stack: Stack;
let tlsPort = 0;
let tcpPort = 0;
let route = '';

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { timeout: scaled(EVENT_MS) }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : Number((err as { code?: unknown }).code ?? -1), stdout, stderr }),
    );
    child.stdin?.end('');
  });
}

before(async () => {
  ca = await makeTestCerts();
  const dir = tempDir();
  const sluiceCert = await issueCert(['default.sluice.test'], { dir, file: 'default', cn: 'Sluice default' });
  const customer = await issueCert([PASS], { dir, file: 'customer', cn: 'Customer DB' });
  const echo = await tlsEchoServer(customer.cert, readFileSync(customer.keyFile, 'utf8'));
  target = echo.server;
  const targetPort = echo.port;
  redis = await RedisServer.start();
  stack = await Stack.start({
    routes: [{ host: PASS, target: `tcp://127.0.0.1:${targetPort}`, tls: 'passthrough' }],
    admin: true,
    controllerEnv: { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN },
    extraYaml: [
      'tls:',
      '  listen: 127.0.0.1:0',
      '  certs:',
      `    - { cert: ${JSON.stringify(sluiceCert.certFile)}, key: ${JSON.stringify(sluiceCert.keyFile)} }`,
      'tcpRoutes:',
      '  - listen: 127.0.0.1:0',
      '    cluster: c1',
      `    target: tcp://127.0.0.1:${redis.port}`,
      'tcp:',
      '  maxConnectionsPerClient: 2',
      '  maxConnectionsPerRoute: 100',
    ].join('\n'),
  });
  const tls = await stack.controller.waitLine(
    'the TLS listener',
    (l) => l.event === 'listening' && l.listener === 'tls',
  );
  tlsPort = Number(new URL(String(tls.url)).port);
  const tcp = await stack.controller.waitLine(
    'the TCP route',
    (l) => l.event === 'listening' && l.listener === 'tcp',
  );
  route = new URL(String(tcp.url)).host;
  tcpPort = Number(new URL(String(tcp.url)).port);
});

after(async () => {
  await stack?.stop();
  await redis?.stop();
  target?.close();
});

const until = (what: string, check: (s: TrafficSnapshot) => boolean): Promise<TrafficSnapshot> =>
  trafficUntil(stack.adminUrl, ADMIN_TOKEN, what, check);
const metric = (name: string, labels: string): Promise<number> => metricValue(stack.adminUrl, name, labels);

function openOn(s: TrafficSnapshot, name: string): number | undefined {
  return s.tcpRoutes.find((r) => r.route === name)?.open;
}

/** A TCP connection to the TCP route that Redis answered. */
async function redisConnection(): Promise<Socket> {
  const c = netConnect(tcpPort, '127.0.0.1');
  c.on('error', () => {});
  await within(once(c, 'connect'), EVENT_MS, 'the TCP route connection');
  c.write('PING\r\n');
  const [reply] = (await within(once(c, 'data'), EVENT_MS, 'the PONG')) as [Buffer];
  assert.equal(reply.toString(), '+PONG\r\n');
  return c;
}

/** A passthrough connection whose handshake with the target completed. */
async function passConnection(): Promise<TLSSocket> {
  const c = tlsConnect({ port: tlsPort, host: '127.0.0.1', servername: PASS, ca: ca.ca });
  c.on('error', () => {});
  await within(once(c, 'secureConnect'), EVENT_MS, 'the passthrough handshake');
  return c;
}

async function close(c: Socket): Promise<void> {
  const closed = once(c, 'close');
  c.end();
  await within(closed, EVENT_MS, 'the close');
}

describe('TCP route and passthrough limits, logs, metrics and /api/traffic', () => {
  test('redis-cli PING through the TCP route, three times, each listed with its bytes', async () => {
    for (let i = 1; i <= 3; i++) {
      const r = await run(REDIS_CLI, ['-h', '127.0.0.1', '-p', String(tcpPort), 'PING']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), 'PONG');
    }
    const snap = await until('three connections listed', (s) => s.connections.length === 3);
    for (const c of snap.connections) {
      assert.equal(c.kind, 'tcp');
      assert.equal(c.route, route);
      assert.equal(c.target, `tcp://127.0.0.1:${redis.port}`);
      assert.equal(c.outcome, 'done');
      assert.match(c.client, /^127\.0\.0\.1:\d+$/);
      assert.ok(c.bytesIn > 0 && c.bytesOut >= 7, JSON.stringify(c));
    }
    const line = snap.tcpRoutes.find((r) => r.route === route)!;
    assert.equal(line.connections, 3);
    assert.equal(line.open, 0);
    assert.equal(
      line.bytesOut,
      snap.connections.reduce((n, c) => n + c.bytesOut, 0),
    );
    assert.equal(snap.routes.length, 0, 'the passthrough host is no HTTP route');
    const logged = stack.controller.lines.filter((l) => l.msg === 'tcp connection' && l.route === route);
    assert.equal(logged.length, 3);
  });

  test('a third redis-cli while two connections are held is refused; one closed, it is served', async () => {
    const held = [await redisConnection(), await redisConnection()];
    const refused = await run(REDIS_CLI, ['-h', '127.0.0.1', '-p', String(tcpPort), 'PING']);
    assert.notEqual(refused.stdout.trim(), 'PONG', 'a third connection was served');
    await stack.controller.waitLine(
      'the refusal',
      (l) => l.msg === 'tcp connection refused: over limit' && l.route === route,
      EVENT_MS,
    );
    await close(held.shift()!);
    await until('one place freed', (s) => openOn(s, route) === 1);
    const served = await run(REDIS_CLI, ['-h', '127.0.0.1', '-p', String(tcpPort), 'PING']);
    assert.equal(served.stdout.trim(), 'PONG', served.stderr);
    // redis-cli tries again once when the server drops it: each of its tries is refused and counted.
    const refusals = stack.controller.lines.filter(
      (l) => l.msg === 'tcp connection refused: over limit' && l.route === route,
    ).length;
    assert.ok(refusals >= 1 && refusals <= 2, `${refusals} refusals`);
    assert.equal(
      await metric('sluice_tcp_connections_total', `route="${route}",outcome="over_limit"`),
      refusals,
    );
    await close(held.shift()!);
    const snap = await until('no connection open', (s) => openOn(s, route) === 0);
    assert.equal(snap.tcpRoutes.find((r) => r.route === route)!.refused, refusals);
    assert.equal(snap.connections.filter((c) => c.outcome === 'over_limit').length, refusals);
  });

  test('a third openssl s_client while two passthrough connections are held is reset after its hello; one closed, it sees the target', async () => {
    const held = [await passConnection(), await passConnection()];
    await until('two open', (s) => openOn(s, PASS) === 2);
    assert.equal(await metric('sluice_tls_passthrough_open_connections', `host="${PASS}"`), 2);
    const refused = await run(OPENSSL, ['s_client', '-connect', `127.0.0.1:${tlsPort}`, '-servername', PASS]);
    assert.notEqual(refused.code, 0);
    assert.doesNotMatch(refused.stdout, /CN ?= ?Customer DB/);
    const line = await stack.controller.waitLine(
      'the refusal',
      (l) => l.msg === 'tls passthrough connection refused: over limit',
      EVENT_MS,
    );
    assert.equal(line.route, PASS);
    assert.equal(line.sni, PASS);
    assert.match(String(line.client), /^127\.0\.0\.1:\d+$/);
    assert.equal(
      await metric('sluice_tls_passthrough_connections_total', `host="${PASS}",outcome="over_limit"`),
      1,
    );
    await close(held.shift()!);
    await until('one place freed', (s) => openOn(s, PASS) === 1);
    const served = await run(OPENSSL, ['s_client', '-connect', `127.0.0.1:${tlsPort}`, '-servername', PASS]);
    assert.match(served.stdout, /^subject=.*CN ?= ?Customer DB/m, served.stderr);
    await close(held.shift()!);
    const snap = await until('none open, the s_client listed', (s) => {
      return openOn(s, PASS) === 0 && s.connections.filter((c) => c.kind === 'tls-passthrough').length === 4;
    });
    const pass = snap.tcpRoutes.find((r) => r.route === PASS)!;
    assert.equal(pass.kind, 'tls-passthrough');
    assert.equal(pass.connections, 3);
    assert.equal(pass.refused, 1);
    assert.ok(pass.bytesIn > 0 && pass.bytesOut > 0);
    assert.ok((await metric('sluice_tls_passthrough_bytes_total', `host="${PASS}",direction="out"`)) > 0);
    assert.equal(await metric('sluice_tls_passthrough_open_connections', `host="${PASS}"`), 0);
    const logged = stack.controller.lines.filter((l) => l.msg === 'tls passthrough connection');
    assert.equal(logged.length, 3);
  });
});
