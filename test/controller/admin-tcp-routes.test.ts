// The admin API's TCP routes through real HTTP on a controller started in-process (port 0, SQLite in a
// temp dir): add binds at once and accepts, the 2nd and 10th route, 409 on a port bound elsewhere and
// on a repeated one, 400 naming each bad field, 404 for an unknown cluster, DELETE stops accepting.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { ADMIN_TOKEN_FILE } from '../../src/controller/control.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { EVENT_MS, scaled, within } from '../helpers/wait.js';

const silent = pino({ level: 'silent' });

let dir: string;
let controller: ControllerHandle;
let admin: string;
let adminToken = '';
let squatter: Server;
let squatterPort = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-tcpapi-'));
  squatter = createServer((s) => s.destroy());
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  squatterPort = (squatter.address() as { port: number }).port;
  const yaml = `clusters:\n  - name: seeded\n    tokens: ["seed-token-0123456789abcdef"]\n`;
  controller = await startController(inProcessControllerConfig(yaml, join(dir, 'data')), silent, {
    announceAdminToken: () => undefined,
  });
  admin = controller.adminUrl!;
  adminToken = readFileSync(join(dir, 'data', ADMIN_TOKEN_FILE), 'utf8').trim();
});

after(async () => {
  await controller?.close(0);
  squatter?.close();
  rmSync(dir, { recursive: true, force: true });
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON replies are probed field by field
async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`${admin}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${adminToken}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text === '' ? undefined : JSON.parse(text) };
}

/** Resolves 'accepted' once a listener on `port` answers, or the error code; bounded. */
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
      // No agent is connected for the cluster, so the listener accepts and then cuts: a reset still
      // means something listened (a closed port is ECONNREFUSED).
      resolve(err.code === 'ECONNRESET' ? 'accepted' : (err.code ?? 'error'));
    });
  });
}

const portOf = (address: string): number => Number(address.slice(address.lastIndexOf(':') + 1));
const route = (extra: Record<string, unknown> = {}) => ({
  listen: '127.0.0.1:0',
  cluster: 'seeded',
  target: 'tcp://echo.default:7',
  ...extra,
});

test('POST binds at once: 201 with the bound address, which accepts; GET lists it', async () => {
  const added = await api('POST', '/api/tcp-routes', route({ proxyProtocol: 'v2' }));
  assert.equal(added.status, 201, JSON.stringify(added.json));
  const address: string = added.json.tcpRoute.address;
  assert.match(address, /^127\.0\.0\.1:\d+$/);
  assert.notEqual(portOf(address), 0);
  assert.equal(added.json.tcpRoute.proxyProtocol, 'v2');
  assert.equal(await dial(portOf(address)), 'accepted');
  const listed = await api('GET', '/api/tcp-routes');
  assert.equal(listed.status, 200);
  const mine = listed.json.tcpRoutes.find((r: { address: string }) => r.address === address);
  assert.equal(mine.target, 'tcp://echo.default:7');
  assert.equal(typeof mine.openConnections, 'number');
});

test('the 2nd and the 10th route each bind and accept; DELETE of each stops accepting', async () => {
  const addresses: string[] = [];
  for (let i = 0; i < 10; i++) {
    const added = await api('POST', '/api/tcp-routes', route());
    assert.equal(added.status, 201, JSON.stringify(added.json));
    addresses.push(added.json.tcpRoute.address);
  }
  assert.equal(new Set(addresses).size, 10);
  for (const address of [addresses[1]!, addresses[9]!]) {
    assert.equal(await dial(portOf(address)), 'accepted');
  }
  const listed = await api('GET', '/api/tcp-routes');
  for (const address of addresses) {
    assert.ok(
      listed.json.tcpRoutes.some((r: { address: string }) => r.address === address),
      address,
    );
  }
  for (const address of addresses) {
    const deleted = await api('DELETE', `/api/tcp-routes/${encodeURIComponent(address)}`);
    assert.equal(deleted.status, 204);
    assert.equal(deleted.json, undefined);
  }
  assert.equal(await dial(portOf(addresses[1]!)), 'ECONNREFUSED');
  assert.equal(await dial(portOf(addresses[9]!)), 'ECONNREFUSED');
  const again = await api('DELETE', `/api/tcp-routes/${encodeURIComponent(addresses[1]!)}`);
  assert.equal(again.status, 404);
  assert.equal(again.json.error.code, 'not_found');
});

test('a port bound by another program is 409 address_in_use; a route already on it is 409 too', async () => {
  const taken = await api('POST', '/api/tcp-routes', route({ listen: `127.0.0.1:${squatterPort}` }));
  assert.equal(taken.status, 409);
  assert.equal(taken.json.error.code, 'address_in_use');
  assert.equal(taken.json.error.field, 'listen');

  const first = await api('POST', '/api/tcp-routes', route());
  const address: string = first.json.tcpRoute.address;
  const twice = await api('POST', '/api/tcp-routes', route({ listen: address }));
  assert.equal(twice.status, 409);
  assert.equal(twice.json.error.code, 'duplicate');
  assert.equal((await api('DELETE', `/api/tcp-routes/${encodeURIComponent(address)}`)).status, 204);
});

test('each bad field is a 400 naming it; an unknown cluster is 404', async () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ listen: 'nowhere' }, 'listen'],
    [{ listen: '127.0.0.1:70000' }, 'listen'],
    [{ listen: undefined }, 'listen'],
    [{ cluster: '' }, 'cluster'],
    [{ target: 'http://echo:7' }, 'target'],
    [{ target: 'tcp://echo:0' }, 'target'],
    [{ proxyProtocol: 'v1' }, 'proxyProtocol'],
    [{ color: 'blue' }, 'color'],
  ];
  for (const [extra, field] of cases) {
    const r = await api('POST', '/api/tcp-routes', route(extra));
    assert.equal(r.status, 400, `${JSON.stringify(extra)}: ${JSON.stringify(r.json)}`);
    assert.equal(r.json.error.code, 'invalid_input');
    assert.equal(r.json.error.field, field, JSON.stringify(extra));
  }
  const notObject = await api('POST', '/api/tcp-routes', ['listen']);
  assert.equal(notObject.status, 400);
  const unknown = await api('POST', '/api/tcp-routes', route({ cluster: 'nope' }));
  assert.equal(unknown.status, 404);
  assert.equal(unknown.json.error.code, 'not_found');
});

test('a route added through the API carries bytes to an echo target through a real agent within 1 s', async () => {
  const echo = createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const echoPort = (echo.address() as { port: number }).port;
  const agent = await startAgent(
    loadAgentConfig({
      flags: {
        controller: controller.tunnelUrl,
        token: 'seed-token-0123456789abcdef',
        name: 'tcp-api-test',
        allow: [`127.0.0.1:${echoPort}`],
      },
      env: {},
    }),
    silent,
  );
  try {
    await within(agent.whenUp(), EVENT_MS, 'the agent to connect');
    const added = await api('POST', '/api/tcp-routes', route({ target: `tcp://127.0.0.1:${echoPort}` }));
    assert.equal(added.status, 201, JSON.stringify(added.json));
    const since = Date.now();
    const reply = await within(
      echoOnce(portOf(added.json.tcpRoute.address), 'ping through the api'),
      EVENT_MS,
      'the echo',
    );
    assert.equal(reply, 'ping through the api');
    assert.ok(Date.now() - since < scaled(1000), `echoed after ${Date.now() - since} ms`);
    await api('DELETE', `/api/tcp-routes/${encodeURIComponent(added.json.tcpRoute.address)}`);
  } finally {
    await agent.close(0);
    echo.close();
  }
});

/** Writes `text`, half-closes, and resolves what came back before the far end closed. */
function echoOnce(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => socket.end(text));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => {
      socket.destroy();
      resolve(Buffer.concat(chunks).toString());
    });
    socket.once('error', reject);
  });
}
