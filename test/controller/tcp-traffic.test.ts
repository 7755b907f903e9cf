// TCP routes and TLS passthrough in /api/traffic, /metrics and the limits (issue #15), through a
// controller started in-process (port 0, SQLite in a temp dir) with a real agent, a TCP echo target and
// a TLS echo target holding the customer's own certificate. The clients are real: net sockets for the
// TCP route, node:tls with SNI (checked against the test CA) for passthrough.
// - /api/traffic lists the TCP route and the passthrough host in `tcpRoutes` (not among the HTTP
//   `routes`), and its keys are those of the OpenAPI document;
// - each finished connection shows in `connections` with its client, route, target, bytes and outcome;
//   the ring keeps the last 100, newest first;
// - passthrough is held to tcp.maxConnectionsPerClient: the 2nd and the 100th from one address echo,
//   the 101st is reset after its ClientHello and logged and counted as over_limit, and once one
//   closes another is admitted, several times over; tcp.maxConnectionsPerRoute likewise across
//   addresses;
// - a passthrough client that resets mid-way is listed as `reset`, and its place is freed.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as netConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { OPENAPI } from '../../src/controller/openapi.js';
import type { TcpRouteTraffic, TrafficSnapshot } from '../../src/controller/traffic.js';
import { metricValue, trafficSnapshot, trafficUntil } from '../helpers/admin-traffic.js';
import { issueCert, makeTestCerts, type TestCerts } from '../helpers/certs.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { echoServer, tlsEchoServer } from '../helpers/listen.js';
import { captureLog } from '../helpers/log-capture.js';
import { EVENT_MS, within } from '../helpers/wait.js';

const AGENT_TOKEN = 'tcp-traffic-agent-token-0123456789';
const ADMIN_TOKEN = 'tcp-traffic-admin-token-0123456789';
const PASS = 'db.example.test';
const PER_CLIENT = 100;
const PER_ROUTE = 120;

const logs = captureLog();
let dir: string;
let ca: TestCerts;
let controller: ControllerHandle;
let agent: AgentHandle;
let tcpTarget: Server;
let tlsTarget: TlsServer;
let tcpTargetPort = 0;
let tlsTargetPort = 0;
let tlsPort = 0;
let route = '';

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-tcp-traffic-'));
  ca = await makeTestCerts();
  const sluiceCert = await issueCert(['default.sluice.test'], { dir, file: 'default' });
  const customer = await issueCert([PASS], { dir, file: 'customer', cn: 'Customer DB' });
  ({ server: tcpTarget, port: tcpTargetPort } = await echoServer());
  ({ server: tlsTarget, port: tlsTargetPort } = await tlsEchoServer(
    customer.cert,
    readFileSync(customer.keyFile, 'utf8'),
  ));
  const yaml = [
    'clusters:',
    `  - name: c1\n    tokens: ["${AGENT_TOKEN}"]`,
    'routes:',
    `  - host: ${PASS}\n    cluster: c1\n    target: tcp://127.0.0.1:${tlsTargetPort}\n    tls: passthrough`,
    'tcpRoutes:',
    `  - listen: 127.0.0.1:0\n    cluster: c1\n    target: tcp://127.0.0.1:${tcpTargetPort}`,
    'tcp:',
    `  maxConnectionsPerClient: ${PER_CLIENT}`,
    `  maxConnectionsPerRoute: ${PER_ROUTE}`,
    'tls:',
    '  listen: 127.0.0.1:0',
    '  certs:',
    `    - { cert: ${JSON.stringify(sluiceCert.certFile)}, key: ${JSON.stringify(sluiceCert.keyFile)} }`,
  ].join('\n');
  const config = inProcessControllerConfig(yaml, dir, { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN });
  controller = await startController(config, logs.logger);
  tlsPort = Number(new URL(controller.tlsUrl!).port);
  route = controller.tcpRoutes.list()[0]!.address;
  agent = await startAgent(
    loadAgentConfig({
      flags: { controller: controller.tunnelUrl, token: AGENT_TOKEN, tunnels: '1', allow: ['127.0.0.1:*'] },
      env: {},
    }),
    captureLog().logger,
  );
  await within(agent.whenUp(), EVENT_MS, 'the agent to connect');
});

after(async () => {
  await agent?.close(0);
  await controller?.close(0);
  tcpTarget?.close();
  tlsTarget?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

const snapshot = (): Promise<TrafficSnapshot> => trafficSnapshot(controller.adminUrl!, ADMIN_TOKEN);
const until = (what: string, check: (s: TrafficSnapshot) => boolean): Promise<TrafficSnapshot> =>
  trafficUntil(controller.adminUrl!, ADMIN_TOKEN, what, check);
const metric = (name: string, labels: string): Promise<number> =>
  metricValue(controller.adminUrl!, name, labels);

async function tcpLine(kind: string, name: string): Promise<TcpRouteTraffic> {
  const found = (await snapshot()).tcpRoutes.find((r) => r.kind === kind && r.route === name);
  assert.ok(found !== undefined, `${kind} ${name} is not in tcpRoutes`);
  return found;
}

/** Writes `data` and reads until as many bytes came back. */
async function echo(client: Socket, data: string): Promise<string> {
  let got = '';
  const done = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      got += chunk.toString();
      if (got.length >= data.length) {
        client.off('data', onData);
        resolve();
      }
    };
    client.on('data', onData);
    client.once('close', () => reject(new Error(`closed after ${got.length} of ${data.length} bytes`)));
  });
  client.write(data);
  await within(done, EVENT_MS, `${data.length} bytes echoed`);
  return got;
}

/**
 * A passthrough connection from `from`: the TLS socket once the target's certificate was checked, or
 * 'reset' when the controller turned it away (no handshake, the connection reset).
 */
async function dialPass(from = '127.0.0.1'): Promise<TLSSocket | 'reset'> {
  const raw = netConnect({ port: tlsPort, host: '127.0.0.1', localAddress: from });
  raw.on('error', () => {});
  const client = tlsConnect({ socket: raw, servername: PASS, ca: ca.ca });
  const first = await within(
    new Promise<'up' | 'reset'>((resolve) => {
      client.once('secureConnect', () => resolve('up'));
      client.once('error', () => resolve('reset'));
      client.once('close', () => resolve('reset'));
    }),
    EVENT_MS,
    'the passthrough handshake or its refusal',
  );
  if (first === 'reset') {
    client.destroy();
    return 'reset';
  }
  client.on('error', () => {});
  assert.equal(client.getPeerCertificate().subject.CN, 'Customer DB');
  return client;
}

async function closeAll(sockets: Socket[]): Promise<void> {
  await Promise.all(
    sockets.map(async (s) => {
      const closed = once(s, 'close');
      s.end();
      await within(closed, EVENT_MS, 'a client to close');
    }),
  );
}

describe('TCP routes and passthrough in /api/traffic', () => {
  test('tcpRoutes lists the TCP route and the passthrough host, idle; HTTP routes leave passthrough out', async () => {
    const snap = await snapshot();
    const schemas = OPENAPI.components.schemas;
    assert.deepEqual(Object.keys(snap).sort(), Object.keys(schemas.Traffic.properties).sort());
    assert.deepEqual(snap.routes, []);
    assert.deepEqual(snap.connections, []);
    assert.deepEqual(snap.tcpRoutes, [
      {
        kind: 'tcp',
        route,
        cluster: 'c1',
        target: `tcp://127.0.0.1:${tcpTargetPort}`,
        open: 0,
        connections: 0,
        refused: 0,
        bytesIn: 0,
        bytesOut: 0,
      },
      {
        kind: 'tls-passthrough',
        route: PASS,
        cluster: 'c1',
        target: `tcp://127.0.0.1:${tlsTargetPort}`,
        open: 0,
        connections: 0,
        refused: 0,
        bytesIn: 0,
        bytesOut: 0,
      },
    ]);
    for (const r of snap.tcpRoutes) {
      assert.deepEqual(Object.keys(r).sort(), Object.keys(schemas.TcpRouteTraffic.properties).sort());
    }
  });

  test('a TCP connection is counted while open, then listed with its client, bytes and outcome', async () => {
    const c = netConnect(Number(route.split(':')[1]), '127.0.0.1');
    await once(c, 'connect');
    assert.equal(await echo(c, 'hello tcp'), 'hello tcp');
    const open = await tcpLine('tcp', route);
    assert.equal(open.open, 1);
    assert.equal(open.connections, 1);
    assert.equal(open.bytesIn, 9, 'an open connection counts its bytes so far');
    const clientPort = c.localPort;
    await closeAll([c]);
    const snap = await until('the connection listed', (s) => s.connections.length === 1);
    const done = snap.connections[0]!;
    assert.deepEqual(
      Object.keys(done).sort(),
      Object.keys(OPENAPI.components.schemas.RecentConnection.properties).sort(),
    );
    assert.equal(done.kind, 'tcp');
    assert.equal(done.client, `127.0.0.1:${clientPort}`);
    assert.equal(done.route, route);
    assert.equal(done.target, `tcp://127.0.0.1:${tcpTargetPort}`);
    assert.equal(done.bytesIn, 9);
    assert.equal(done.bytesOut, 9);
    assert.equal(done.outcome, 'done');
    assert.ok(done.ms >= 0 && !Number.isNaN(Date.parse(done.at)));
    const line = snap.tcpRoutes.find((r) => r.route === route)!;
    assert.deepEqual(
      [line.open, line.connections, line.refused, line.bytesIn, line.bytesOut],
      [0, 1, 0, 9, 9],
    );
  });

  test('passthrough: the 2nd and the 100th from one address echo, the 101st is reset and counted, one closed frees a place', async () => {
    const held: TLSSocket[] = [];
    for (let i = 1; i <= PER_CLIENT; i++) {
      const c = await dialPass();
      assert.notEqual(c, 'reset', `connection ${i} was refused`);
      held.push(c as TLSSocket);
      if (i === 2 || i === PER_CLIENT) assert.equal(await echo(c as TLSSocket, `conn ${i}`), `conn ${i}`);
    }
    await until('100 open', (s) => s.tcpRoutes.find((r) => r.route === PASS)?.open === PER_CLIENT);
    assert.equal(await metric('sluice_tls_passthrough_open_connections', `host="${PASS}"`), PER_CLIENT);
    for (let round = 1; round <= 3; round++) {
      assert.equal(await dialPass(), 'reset', `round ${round}: the 101st was admitted`);
      await closeAll([held.shift()!]);
      await until('a place freed', (s) => s.tcpRoutes.find((r) => r.route === PASS)?.open === PER_CLIENT - 1);
      const again = await dialPass();
      assert.notEqual(again, 'reset', `round ${round}: none admitted after one closed`);
      assert.equal(await echo(again as TLSSocket, `again ${round}`), `again ${round}`);
      held.push(again as TLSSocket);
    }
    const refused = logs.lines.filter((l) => l.msg === 'tls passthrough connection refused: over limit');
    assert.equal(refused.length, 3);
    assert.equal(refused[0]!.route, PASS);
    assert.equal(refused[0]!.sni, PASS);
    assert.match(String(refused[0]!.client), /^127\.0\.0\.1:\d+$/);
    const line = await tcpLine('tls-passthrough', PASS);
    assert.equal(line.refused, 3);
    assert.equal(line.connections, PER_CLIENT + 3);
    assert.equal(
      await metric('sluice_tls_passthrough_connections_total', `host="${PASS}",outcome="over_limit"`),
      3,
    );
    const snap = await snapshot();
    const turnedAway = snap.connections.filter((c) => c.outcome === 'over_limit');
    assert.equal(turnedAway.length, 3);
    assert.equal(turnedAway[0]!.kind, 'tls-passthrough');

    // Another address is not held to this one's limit, but the route's limit holds for every address.
    const others: TLSSocket[] = [];
    for (let i = 0; i < PER_ROUTE - PER_CLIENT; i++) {
      const c = await dialPass('127.0.0.2');
      assert.notEqual(c, 'reset', `connection ${i + 1} from 127.0.0.2 was refused`);
      others.push(c as TLSSocket);
    }
    assert.equal(await dialPass('127.0.0.3'), 'reset', 'the route took more than its limit');
    await closeAll([others.shift()!]);
    await until('a place freed', (s) => s.tcpRoutes.find((r) => r.route === PASS)?.open === PER_ROUTE - 1);
    const third = await dialPass('127.0.0.3');
    assert.notEqual(third, 'reset', 'none admitted after one closed');
    assert.equal(await echo(third as TLSSocket, 'third'), 'third');
    others.push(third as TLSSocket);

    await closeAll([...held, ...others]);
    const settled = await until('every connection closed and listed', (s) => {
      const l = s.tcpRoutes.find((r) => r.route === PASS);
      return (
        l?.open === 0 &&
        s.connections.filter((c) => c.outcome === 'done' && c.kind === 'tls-passthrough').length >= 100
      );
    });
    // The ring keeps the last 100: the TCP connection and the early refusals have left it.
    assert.equal(settled.connections.length, 100);
    assert.equal(settled.connections.filter((c) => c.kind === 'tcp').length, 0);
    assert.equal(await metric('sluice_tls_passthrough_open_connections', `host="${PASS}"`), 0);
    assert.ok(
      (await metric('sluice_tls_passthrough_bytes_total', `host="${PASS}",direction="in"`)) > 0,
      'passthrough bytes are counted',
    );
  });

  test('a passthrough client that resets mid-way is listed as reset, and frees its place', async () => {
    const earlier = await tcpLine('tls-passthrough', PASS);
    const raw = netConnect({ port: tlsPort, host: '127.0.0.1' });
    raw.on('error', () => {});
    const client = tlsConnect({ socket: raw, servername: PASS, ca: ca.ca });
    client.on('error', () => {});
    await within(once(client, 'secureConnect'), EVENT_MS, 'the passthrough handshake');
    assert.equal(await echo(client, 'before the reset'), 'before the reset');
    const clientPort = raw.localPort;
    raw.resetAndDestroy();
    const snap = await until('the reset connection listed', (s) =>
      s.connections.some((c) => c.client === `127.0.0.1:${clientPort}`),
    );
    const done = snap.connections.find((c) => c.client === `127.0.0.1:${clientPort}`)!;
    assert.equal(done.kind, 'tls-passthrough');
    assert.equal(done.outcome, 'reset');
    assert.ok(done.bytesIn > 0 && done.bytesOut > 0, JSON.stringify(done));
    const line = await until('its place freed', (s) =>
      s.tcpRoutes.some((r) => r.route === PASS && r.open === 0),
    );
    const settled = line.tcpRoutes.find((r) => r.route === PASS)!;
    assert.equal(settled.connections, earlier.connections + 1);
    assert.equal(settled.refused, earlier.refused);
    assert.equal(await metric('sluice_tls_passthrough_open_connections', `host="${PASS}"`), 0);
    assert.ok(
      (await metric('sluice_tls_passthrough_connections_total', `host="${PASS}",outcome="reset"`)) >= 1,
    );
  });
});
