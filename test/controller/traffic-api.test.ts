// GET /api/traffic and the dashboard's files, through real HTTP on a controller started in-process (port
// 0, SQLite in a temp dir) with a real agent and origin: the bearer token is required, each finished
// request shows up by its X-Request-Id with its route and status, and the route rates count 5xx answers
// and answers that broke. The dashboard's page and files are served with a strict CSP and nosniff.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { CONTENT_SECURITY_POLICY } from '../../src/controller/dashboard.js';
import type { RecentRequest, TrafficSnapshot } from '../../src/controller/traffic.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask } from '../helpers/sluice-procs.js';
import { EVENT_MS, within } from '../helpers/wait.js';

const silent = pino({ level: 'silent' });
const AGENT_TOKEN = 'traffic-agent-token-0123456789';
const ADMIN_TOKEN = 'traffic-admin-token-0123456789';

let dir: string;
let controller: ControllerHandle;
let agent: AgentHandle;
let origin: Origin;
let admin: string;
let publicPort: number;

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sluice-traffic-'));
  origin = await startOrigin();
  const down = await closedPort();
  const yaml = [
    'clusters:',
    `  - name: c1\n    tokens: ["${AGENT_TOKEN}"]`,
    'routes:',
    `  - host: app.example.test\n    cluster: c1\n    target: ${origin.url}`,
    `  - host: app.example.test\n    path: /api\n    cluster: c1\n    target: ${origin.url}`,
    `  - host: down.example.test\n    cluster: c1\n    target: http://127.0.0.1:${down}`,
  ].join('\n');
  const config = inProcessControllerConfig(yaml, dir, { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN });
  controller = await startController(config, silent);
  admin = controller.adminUrl!;
  publicPort = Number(new URL(controller.publicUrl).port);
  agent = await startAgent(
    loadAgentConfig({
      flags: { controller: controller.tunnelUrl, token: AGENT_TOKEN, tunnels: '1', allow: ['127.0.0.1:*'] },
      env: {},
    }),
    silent,
  );
  await within(agent.whenUp(), EVENT_MS, 'the agent to connect');
});

after(async () => {
  await agent?.close(0);
  await controller?.close(0);
  await origin?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function traffic(token: string | null = ADMIN_TOKEN): Promise<{ status: number; res: Response }> {
  const res = await fetch(`${admin}/api/traffic`, {
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: res.status, res };
}

async function snapshot(): Promise<TrafficSnapshot> {
  const { status, res } = await traffic();
  assert.equal(status, 200);
  return (await res.json()) as TrafficSnapshot;
}

/**
 * Sends one request with this id and waits until /api/traffic lists it (the edge records a request once
 * its connection has closed, which may be a moment after the client has the answer). Bounded.
 */
async function sendAndSee(id: string, host: string, path: string): Promise<RecentRequest> {
  // A broken answer makes the client fail: that is the point of those requests.
  await ask({ port: publicPort, host, path, headers: { 'x-request-id': id } }).catch(() => undefined);
  const deadline = Date.now() + 10_000;
  for (let i = 0; i < 10_000; i++) {
    const found = (await snapshot()).requests.find((r) => r.requestId === id);
    if (found !== undefined) return found;
    if (Date.now() > deadline) break;
  }
  throw new Error(`request ${id} never showed in /api/traffic`);
}

describe('GET /api/traffic', () => {
  test('wants the admin token: 401 without it or with a wrong one', async () => {
    for (const token of [null, 'wrong-admin-token-0123456789']) {
      const { status, res } = await traffic(token);
      assert.equal(status, 401);
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="sluice"');
      const body = (await res.json()) as { error: { code: string } };
      assert.equal(body.error.code, 'unauthorized');
    }
  });

  test('lists every route, with no traffic at first, and no requests', async () => {
    const { res } = await traffic();
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const snap = (await res.json()) as TrafficSnapshot;
    assert.equal(snap.windowSeconds, 10);
    assert.deepEqual(
      snap.routes.map((r) => [r.host, r.path, r.cluster, r.requests, r.perSecond]),
      [
        ['app.example.test', '/', 'c1', 0, 0],
        ['app.example.test', '/api', 'c1', 0, 0],
        ['down.example.test', '/', 'c1', 0, 0],
      ],
    );
    assert.deepEqual(snap.unrouted, { requests: 0, perSecond: 0, errors5xx: 0, failed: 0 });
    assert.deepEqual(snap.requests, []);
  });

  test('shows each finished request, newest first, and counts it in its route', async () => {
    const ok = await sendAndSee('traffic-ok', 'app.example.test', '/headers?secret=1');
    assert.equal(ok.status, 200);
    assert.equal(ok.path, '/headers', 'no query');
    assert.equal(ok.route, 'app.example.test');
    assert.equal(ok.cluster, 'c1');
    assert.equal(ok.outcome, 'done');
    assert.equal(ok.method, 'GET');
    assert.ok(ok.bytesOut > 0 && ok.ms > 0);
    assert.ok(Math.abs(Date.parse(ok.at) - Date.now()) < 60_000);

    const api = await sendAndSee('traffic-api', 'app.example.test', '/api/x');
    assert.equal(api.route, 'app.example.test/api');
    const error = await sendAndSee('traffic-500', 'app.example.test', '/status?code=500');
    assert.equal(error.status, 500);
    const broken = await sendAndSee('traffic-cut', 'app.example.test', '/cut');
    assert.equal(broken.outcome, 'broken');
    const down = await sendAndSee('traffic-502', 'down.example.test', '/');
    assert.equal(down.status, 502);
    assert.match(down.reason ?? '', /target|agent/);
    const lost = await sendAndSee('traffic-404', 'nowhere.example.test', '/');
    assert.equal(lost.status, 404);
    assert.equal(lost.route, null);

    const snap = await snapshot();
    assert.deepEqual(
      snap.requests.map((r) => r.requestId),
      ['traffic-404', 'traffic-502', 'traffic-cut', 'traffic-500', 'traffic-api', 'traffic-ok'],
    );
    const [app, appApi, downRoute] = snap.routes;
    // The window is 10 s: these few requests are all in it unless the test machine stalled that long.
    assert.equal(app!.requests, 3);
    assert.ok(app!.perSecond > 0);
    assert.equal(app!.errors5xx, 1);
    assert.equal(app!.failed, 1);
    assert.equal(appApi!.requests, 1);
    assert.equal(downRoute!.requests, 1);
    assert.equal(downRoute!.errors5xx, 1);
    assert.equal(snap.unrouted.requests, 1);
  });

  test('a deleted route leaves the list', async () => {
    const res = await fetch(`${admin}/api/routes?host=down.example.test`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(res.status, 200);
    const snap = await snapshot();
    assert.ok(!snap.routes.some((r) => r.host === 'down.example.test'));
    // Its requests stay among the recent ones.
    assert.ok(snap.requests.some((r) => r.requestId === 'traffic-502'));
  });
});

describe('the dashboard files', () => {
  test('the page at / has a strict CSP, nosniff, and no inline script or style', async () => {
    const res = await fetch(`${admin}/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.equal(csp, CONTENT_SECURITY_POLICY);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /require-trusted-types-for 'script'/);
    assert.doesNotMatch(csp, /unsafe/);
    const html = await res.text();
    assert.match(html, /<script type="module" src="\/dashboard\/app\.js"><\/script>/);
    assert.doesNotMatch(html, /<script(?![^>]*\ssrc=)/, 'no inline script');
    assert.doesNotMatch(html, /<style|\sstyle=|\son[a-z]+=/i, 'no inline style or handler');
  });

  test('the script, style sheet and icon are served with their types', async () => {
    for (const [path, type] of [
      ['/dashboard/app.js', 'text/javascript; charset=utf-8'],
      ['/dashboard/style.css', 'text/css; charset=utf-8'],
      ['/dashboard/icon.svg', 'image/svg+xml'],
    ] as const) {
      const res = await fetch(`${admin}${path}`);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get('content-type'), type, path);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff', path);
      const body = await res.text();
      assert.ok(body.length > 100, path);
      if (path.endsWith('.js')) {
        assert.doesNotMatch(body, /sourceMappingURL/);
        // Data goes in as text only (the CSP's Trusted Types would also make these throw).
        assert.doesNotMatch(body, /\.(inner|outer)HTML\s*=|insertAdjacentHTML\(|document\.write\(/);
      }
    }
  });

  test('only GET and HEAD; other paths are not the dashboard', async () => {
    const post = await fetch(`${admin}/`, { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    const head = await fetch(`${admin}/dashboard/app.js`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    assert.equal((await fetch(`${admin}/dashboard/nope.js`)).status, 404);
    assert.equal((await fetch(`${admin}/healthz`)).status, 200);
  });
});
