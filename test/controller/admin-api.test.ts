// The admin REST API through real HTTP on a controller started in-process (port 0, SQLite in a temp
// dir): auth, CRUD, exact 400s naming the field, changes taking effect at once, revocation closing a
// live agent's tunnels, the admin token file, and the OpenAPI document.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { ADMIN_TOKEN_FILE } from '../../src/controller/control.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { OPENAPI } from '../../src/controller/openapi.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { ask } from '../helpers/sluice-procs.js';
import { EVENT_MS, scaled, within } from '../helpers/wait.js';
import { sluiceVersion } from '../../src/version.js';

const silent = pino({ level: 'silent' });
const SEED_TOKEN = 'seed-token-0123456789abcdef';

let dir: string;
let controller: ControllerHandle;
let admin: string;
let adminToken = '';
const announced: string[] = [];
let origin: Server;
let originPort = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-api-'));
  origin = createServer((_req, res) => res.end('origin says hi'));
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  originPort = (origin.address() as { port: number }).port;
  const yaml = `clusters:\n  - name: seeded\n    tokens: ["${SEED_TOKEN}"]\n`;
  const config = inProcessControllerConfig(yaml, join(dir, 'data'));
  controller = await startController(config, silent, {
    announceAdminToken: (token) => announced.push(token),
  });
  admin = controller.adminUrl!;
  adminToken = readFileSync(join(dir, 'data', ADMIN_TOKEN_FILE), 'utf8').trim();
});

after(async () => {
  await controller?.close(0);
  origin?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function api(
  method: string,
  path: string,
  body?: unknown,
  token: string | null = adminToken,
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- JSON replies are probed field by field
): Promise<{ status: number; json: any }> {
  const res = await fetch(`${admin}${path}`, {
    method,
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

describe('admin token', () => {
  test('is generated on first start, written mode 0600 and announced once', () => {
    assert.match(adminToken, /^sluadm_[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(announced, [adminToken]);
    assert.equal(statSync(join(dir, 'data', ADMIN_TOKEN_FILE)).mode & 0o777, 0o600);
  });

  test('a missing or wrong token is 401 with a JSON error; probes stay open', async () => {
    const missing = await api('GET', '/api/clusters', undefined, null);
    assert.equal(missing.status, 401);
    assert.equal(missing.json.error.code, 'unauthorized');
    const wrong = await api('GET', '/api/clusters', undefined, 'sluadm_wrong');
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.error.message, 'wrong admin token');
    assert.equal((await fetch(`${admin}/healthz`)).status, 200);
    assert.equal((await fetch(`${admin}/readyz`)).status, 200);
    assert.equal((await fetch(`${admin}/debug/memory`)).status, 200);
  });
});

describe('clusters and routes', () => {
  test('the YAML seed is in the store', async () => {
    const { json } = await api('GET', '/api/clusters');
    assert.deepEqual(
      json.clusters.map((c: { name: string; source: string }) => [c.name, c.source]),
      [['seeded', 'config']],
    );
  });

  test('add, list and delete a cluster; repeats are 409, bad names 400 naming the field', async () => {
    assert.equal((await api('POST', '/api/clusters', { name: 'web' })).status, 201);
    const repeat = await api('POST', '/api/clusters', { name: 'web' });
    assert.equal(repeat.status, 409);
    assert.equal(repeat.json.error.field, 'name');
    const bad = await api('POST', '/api/clusters', { name: 'Not_A_Name' });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'invalid_input');
    assert.equal(bad.json.error.field, 'name');
    const extra = await api('POST', '/api/clusters', { name: 'x', color: 'red' });
    assert.equal(extra.json.error.field, 'color');
    const notJson = await api('POST', '/api/clusters', '{nope');
    assert.equal(notJson.status, 400);
    assert.equal(notJson.json.error.code, 'invalid_json');
    assert.equal((await api('DELETE', '/api/clusters/web')).status, 200);
    assert.equal((await api('DELETE', '/api/clusters/web')).status, 404);
  });

  test('a route takes effect at once, and its removal too', async () => {
    await api('POST', '/api/clusters', { name: 'live' });
    const host = 'live.example.test';
    assert.equal((await ask({ port: port(controller.publicUrl), host })).status, 404);
    const added = await api('POST', '/api/routes', {
      host: 'Live.Example.Test',
      cluster: 'live',
      target: `http://127.0.0.1:${originPort}`,
    });
    assert.equal(added.status, 201);
    assert.equal(added.json.route.host, host);
    // No agent for the cluster yet: routed, so 503 rather than 404.
    assert.equal((await ask({ port: port(controller.publicUrl), host })).status, 503);
    const { json } = await api('GET', '/api/routes');
    assert.deepEqual(
      json.routes.map((r: { host: string; path: string }) => `${r.host} ${r.path}`),
      [`${host} /`],
    );
    const clash = await api('DELETE', '/api/clusters/live');
    assert.equal(clash.status, 409);
    assert.equal((await api('DELETE', `/api/routes?host=${host}`)).status, 200);
    assert.equal((await ask({ port: port(controller.publicUrl), host })).status, 404);
    assert.equal((await api('DELETE', `/api/routes?host=${host}`)).status, 404);
  });

  test('a tls: passthrough route is added, listed with its tls, and serves no HTTP request', async () => {
    const host = 'pass.example.test';
    const body = { host, cluster: 'seeded', target: 'tcp://127.0.0.1:1', tls: 'passthrough' };
    const added = await api('POST', '/api/routes', body);
    assert.equal(added.status, 201);
    assert.equal(added.json.route.tls, 'passthrough');
    const listed = (await api('GET', '/api/routes')).json.routes as { host: string; tls?: string }[];
    assert.equal(listed.find((r) => r.host === host)?.tls, 'passthrough');
    assert.equal((await ask({ port: port(controller.publicUrl), host })).status, 404);
    assert.equal((await api('DELETE', `/api/routes?host=${host}`)).status, 200);
  });

  test('bad route input is 400 naming the field', async () => {
    const base = { host: 'a.example.test', cluster: 'seeded', target: 'http://127.0.0.1:1' };
    const cases: [Record<string, unknown>, string][] = [
      [{ ...base, host: 'not a host' }, 'host'],
      [{ ...base, path: 'no-slash' }, 'path'],
      [{ ...base, target: 'ftp://x' }, 'target'],
      [{ ...base, cluster: 'nope' }, 'cluster'],
      [{ ...base, paht: '/x' }, 'paht'],
      [{ ...base, target: 'tcp://db:5432' }, 'target'],
      [{ ...base, tls: 'passthrough' }, 'target'],
      [{ ...base, target: 'tcp://db:443', tls: 'terminate' }, 'tls'],
      [{ ...base, target: 'tcp://db:443', tls: 'passthrough', path: '/api' }, 'path'],
    ];
    for (const [body, field] of cases) {
      const r = await api('POST', '/api/routes', body);
      assert.equal(r.status, 400, field);
      assert.equal(r.json.error.field, field);
      assert.equal(typeof r.json.error.message, 'string');
    }
  });

  test('a second route, the hundredth, a repeat (409 naming host): each routed at once', async () => {
    const pub = port(controller.publicUrl);
    const target = `http://127.0.0.1:${originPort}`;
    const hosts = Array.from({ length: 100 }, (_, i) => `many${i}.example.test`);
    for (const host of hosts) {
      const added = await api('POST', '/api/routes', { host, cluster: 'seeded', target });
      assert.equal(added.status, 201, `${host}: ${JSON.stringify(added.json)}`);
    }
    // Routed (503: no agent of the cluster) rather than unknown (404), the second and the last too.
    for (const host of [hosts[0]!, hosts[1]!, hosts[99]!])
      assert.equal((await ask({ port: pub, host })).status, 503);
    const repeat = await api('POST', '/api/routes', { host: hosts[1], cluster: 'seeded', target });
    assert.equal(repeat.status, 409);
    assert.equal(repeat.json.error.field, 'host');
    const listed = (await api('GET', '/api/routes')).json.routes as { host: string }[];
    assert.deepEqual(
      listed
        .map((r) => r.host)
        .filter((h) => h.startsWith('many'))
        .sort(),
      [...hosts].sort(),
    );
    for (const host of [...hosts].reverse()) {
      assert.equal((await api('DELETE', `/api/routes?host=${host}`)).status, 200, host);
    }
    assert.equal((await ask({ port: pub, host: hosts[1]! })).status, 404);
    assert.equal((await api('GET', '/api/routes')).json.routes.length, 0);
  });

  test('unknown paths are 404 and wrong methods 405, as JSON', async () => {
    assert.equal((await api('GET', '/api/nothing')).status, 404);
    const r = await api('PUT', '/api/routes');
    assert.equal(r.status, 405);
    assert.equal(r.json.error.code, 'method_not_allowed');
  });
});

describe('tokens and tunnels', () => {
  test('a created token connects an agent; the tunnel is listed; revoking it closes the tunnel', async () => {
    await api('POST', '/api/clusters', { name: 'agents' });
    const created = await api('POST', '/api/clusters/agents/tokens');
    assert.equal(created.status, 201);
    assert.match(created.json.token, /^slu_[A-Za-z0-9_-]{43}$/);
    const listed = await api('GET', '/api/clusters/agents/tokens');
    assert.deepEqual(Object.keys(listed.json.tokens[0]).sort(), [
      'cluster',
      'created',
      'id',
      'revoked',
      'source',
    ]);
    assert.ok(!JSON.stringify(listed.json).includes('sha256'));

    await api('POST', '/api/routes', {
      host: 'agent.example.test',
      cluster: 'agents',
      target: `http://127.0.0.1:${originPort}`,
    });
    const agent = await startAgent(
      loadAgentConfig({
        flags: {
          controller: controller.tunnelUrl,
          token: created.json.token,
          name: 'api-test',
          tunnels: '2',
          allow: [`127.0.0.1:${originPort}`],
        },
        env: {},
      }),
      silent,
    );
    try {
      await within(agent.whenUp(), EVENT_MS, 'the agent to connect');
      await until('two tunnels', async () => (await api('GET', '/api/tunnels')).json.tunnels.length === 2);
      const reply = await ask({ port: port(controller.publicUrl), host: 'agent.example.test' });
      assert.equal(reply.body.toString(), 'origin says hi');
      const [tunnel] = (await api('GET', '/api/tunnels')).json.tunnels;
      assert.equal(tunnel.agent, 'api-test');
      assert.equal(tunnel.version, sluiceVersion(), 'the version the agent sent in HELLO');
      assert.equal(tunnel.cluster, 'agents');
      assert.match(tunnel.remote, /^127\.0\.0\.1:\d+$/);
      assert.ok(!Number.isNaN(Date.parse(tunnel.since)));
      for (const key of ['rttMs', 'streams', 'bytesIn', 'bytesOut'])
        assert.equal(typeof tunnel[key], 'number');

      const revoked = await api('DELETE', `/api/tokens/${created.json.id}`);
      assert.equal(revoked.status, 200);
      assert.ok(revoked.json.revoked !== null);
      await until(
        'the tunnels to close',
        async () => (await api('GET', '/api/tunnels')).json.tunnels.length === 0,
      );
      assert.equal((await ask({ port: port(controller.publicUrl), host: 'agent.example.test' })).status, 503);
      assert.ok((await api('GET', '/api/clusters/agents/tokens')).json.tokens[0].revoked !== null);
      assert.equal((await api('DELETE', '/api/tokens/tok_nope')).status, 404);
    } finally {
      await agent.close(0);
    }
  });

  test('tokens of an unknown cluster are 404', async () => {
    assert.equal((await api('POST', '/api/clusters/nope/tokens')).status, 404);
    assert.equal((await api('GET', '/api/clusters/nope/tokens')).status, 404);
  });
});

test('the OpenAPI document is served, and every path in it answers (not 404)', async () => {
  const res = await fetch(`${admin}/api/openapi.json`);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), JSON.parse(JSON.stringify(OPENAPI)));
  for (const path of Object.keys(OPENAPI.paths)) {
    const concrete = path.replace('{name}', 'seeded').replace('{id}', 'tok_x');
    const method = 'get' in OPENAPI.paths[path as keyof typeof OPENAPI.paths] ? 'GET' : 'DELETE';
    const r = await api(method, concrete);
    assert.notEqual(r.json.error?.message?.startsWith('no such API path'), true, path);
  }
});

function port(url: string): number {
  return Number(new URL(url).port);
}

/** Re-asks until `check` holds; bounded. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = EVENT_MS): Promise<void> {
  const deadline = Date.now() + scaled(timeoutMs);
  for (let i = 0; i < 100_000; i++) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
  }
  throw new Error(`gave up waiting for ${what}`);
}
