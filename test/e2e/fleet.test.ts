// A fleet of three real controllers on one real redis-server (the fleet issue), with an agent on
// controller A only. Through each of A, B and C: a GET, a 100 MiB upload checked by sha256, SSE events
// one by one, and a WebSocket echo of 1 MiB messages; B and C carry them over a peer tunnel to A. A
// route added through B is served by A and C within a second, and a token revoked through C closes the
// agent's tunnel on A within a second. A controller with the wrong fleet secret is refused by its
// peers, says so, and answers 503 at once instead of hanging.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { chromium } from 'playwright-core';
import { after, before, describe, test } from 'node:test';
import { MiB, writePattern } from '../helpers/data.js';
import { ADMIN_TOKEN, Fleet, type FleetController } from '../helpers/fleet.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask, BIN } from '../helpers/sluice-procs.js';
import { startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { wsConnect, wsEcho, wsOpened } from '../helpers/ws-client.js';
import { EVENT_MS, READY_MS, scaled, waitFor, within } from '../helpers/wait.js';

let origin: Origin;
let upgrades: UpgradeOrigin;
let fleet: Fleet;

before(async () => {
  origin = await startOrigin('fleet');
  upgrades = await startUpgradeOrigin();
  fleet = await Fleet.start({
    controllers: 3,
    routes: [
      { host: 'app.test', target: origin.url },
      { host: 'ws.test', target: upgrades.url },
    ],
  });
  await fleet.startAgent([fleet.at('a')], { tunnels: 2 });
  // B and C learn from presence that A holds c1's tunnels: wait until each one serves the host.
  for (const name of ['b', 'c']) await servesWithin(fleet.at(name), 'app.test', READY_MS);
});

after(async () => {
  await fleet?.stop();
  await origin?.close();
  await upgrades?.close();
});

/** Polls GET / on `controller` for `host` until it answers 200; resolves with how long that took. */
async function servesWithin(controller: FleetController, host: string, ms: number): Promise<number> {
  const started = performance.now();
  let last = 0;
  const deadline = started + scaled(ms);
  for (let attempt = 0; attempt < 100_000; attempt++) {
    last = (await ask({ port: controller.publicPort, host, path: '/status?code=200' })).status;
    if (last === 200) return performance.now() - started;
    if (performance.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`${host} through controller ${controller.name}: still ${last} after ${scaled(ms)}ms`);
}

/** POSTs `bytes` of the stamped pattern to /hash; resolves with what was sent and what the origin read. */
function upload(
  port: number,
  bytes: number,
): Promise<{ sent: string; received: { bytes: number; sha256: string } }> {
  return within(
    new Promise((resolve, reject) => {
      const req = request({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/hash',
        headers: { host: 'app.test', 'content-type': 'application/octet-stream' },
        agent: false,
      });
      let sent = '';
      req.on('error', reject);
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`upload answered ${res.statusCode}: ${body}`));
          else resolve({ sent, received: JSON.parse(body) as { bytes: number; sha256: string } });
        });
      });
      void writePattern(req, bytes).then((sha) => (sent = sha), reject);
    }),
    READY_MS * 2,
    'the 100 MiB upload',
  );
}

/** GET /sse: the first event must arrive before the origin is told to send the last one. */
function sse(port: number): Promise<string[]> {
  return within(
    new Promise((resolve, reject) => {
      const req = request({
        host: '127.0.0.1',
        port,
        path: '/sse',
        headers: { host: 'app.test' },
        agent: false,
      });
      req.on('error', reject);
      req.on('response', (res) => {
        const events: string[] = [];
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => {
          text += c;
          for (let i = text.indexOf('\n\n'); i !== -1; i = text.indexOf('\n\n')) {
            events.push(text.slice(0, i));
            text = text.slice(i + 2);
            // Only once the first event came through on its own is the last one asked for.
            if (events.length === 1) origin.releaseSse();
          }
        });
        res.on('end', () => resolve(events));
      });
      req.end();
    }),
    EVENT_MS,
    'the SSE events',
  );
}

describe('three controllers on one Redis, an agent on A only', () => {
  for (const name of ['a', 'b', 'c']) {
    describe(`through controller ${name}`, () => {
      test('a GET, twice on one connection', async () => {
        const c = fleet.at(name);
        const first = await ask({ port: c.publicPort, host: 'app.test', path: '/status?code=200' });
        assert.equal(first.status, 200);
        assert.equal(first.headers['x-origin'], 'fleet');
        const second = await ask({ port: c.publicPort, host: 'app.test', path: '/headers' });
        assert.equal(second.status, 200);
      });

      test('a 100 MiB upload arrives whole, sha256 checked', async () => {
        const { sent, received } = await upload(fleet.at(name).publicPort, 100 * MiB);
        assert.equal(received.bytes, 100 * MiB);
        assert.equal(received.sha256, sent);
      });

      test('SSE events arrive one by one', async () => {
        assert.deepEqual(await sse(fleet.at(name).publicPort), ['data: first', 'data: last']);
      });

      test('a WebSocket echoes 1 MiB messages', async () => {
        const ws = wsConnect({ port: fleet.at(name).publicPort, host: 'ws.test' }, `/echo-${name}`);
        try {
          await wsOpened(ws);
          for (let i = 0; i < 3; i++) {
            const message = randomBytes(MiB);
            const echo = await wsEcho(ws, message);
            assert.ok(echo.data.equals(message), `message ${i} came back changed`);
          }
        } finally {
          ws.terminate();
        }
      });
    });
  }

  test('B and C log the request as served through peer A', async () => {
    const b = fleet.at('b');
    const id = `peer-log-${randomBytes(4).toString('hex')}`;
    const reply = await ask({
      port: b.publicPort,
      host: 'app.test',
      path: '/status?code=200',
      headers: { 'x-request-id': id },
    });
    assert.equal(reply.status, 200);
    const line = await b.proc.waitLine('the request log line', (l) => l.requestId === id, EVENT_MS);
    assert.ok(line.peer !== undefined && line.peer !== null, `no peer in ${JSON.stringify(line)}`);
  });
});

describe('sluice status on a fleet member', () => {
  test("lists the fleet's three controllers, this one marked, and which holds c1's tunnels", async () => {
    const b = fleet.at('b');
    const run = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [BIN, 'status', '--admin', b.adminUrl, ...args],
          { timeout: scaled(READY_MS), env: { ...process.env, SLUICE_ADMIN_TOKEN: ADMIN_TOKEN } },
          (err, stdout, stderr) =>
            resolve({ code: err === null ? 0 : Number(err.code ?? -1), stdout, stderr }),
        );
      });
    const text = await run([]);
    assert.equal(text.code, 0, text.stderr);
    const [tunnels, instances] = text.stdout.split('\n\n');
    assert.match(tunnels!, /^CLUSTER/);
    const rows = instances!.trim().split('\n');
    assert.match(rows[0]!, /^INSTANCE\s+ADVERTISE\s+SINCE\s+STATE\s+SESSIONS\s+CLUSTERS$/);
    assert.equal(rows.length, 4, instances);
    assert.match(rows[1]!, /\(this\)/);
    assert.equal(rows.filter((r) => /\bc1:2\b/.test(r)).length, 1, instances);
    assert.ok(
      rows.slice(1).every((r) => /\bserving\b/.test(r)),
      instances,
    );

    const json = await run(['--json']);
    assert.equal(json.code, 0, json.stderr);
    const parsed = JSON.parse(json.stdout) as { tunnels: unknown[]; fleet: { self: boolean }[] };
    assert.equal(parsed.fleet.length, 3);
    assert.equal(parsed.fleet.filter((i) => i.self).length, 1);
  });
});

const CHROMIUM = '/usr/bin/chromium';
const noChromium = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)`;

describe("the dashboard's fleet view in Chromium", { skip: noChromium }, () => {
  test("C's dashboard lists the three controllers, itself first, and A holding c1's tunnels", async () => {
    const c = fleet.at('c');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox'],
      timeout: scaled(READY_MS),
    });
    try {
      const page = await browser.newPage();
      page.setDefaultTimeout(scaled(EVENT_MS));
      const errors: string[] = [];
      page.on('pageerror', (err) => errors.push(err.message));
      await page.goto(`${c.adminUrl}/`);
      await page.fill('#token', ADMIN_TOKEN);
      await page.click('#login-submit');
      await page.locator('#fleet-view').waitFor();
      const rows = page.locator('#fleet tbody tr');
      await page.waitForFunction("document.querySelectorAll('#fleet tbody tr').length === 3");
      assert.match(await rows.nth(0).innerText(), /\(this controller\)/);
      assert.equal(await page.locator('#fleet tbody tr', { hasText: 'c1 (2)' }).count(), 1);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
    }
  });
});

describe('changes reach every controller through Redis', () => {
  test('a route added through B is served by A and C within 1 s', async () => {
    const b = fleet.at('b');
    const added = await b.admin('POST', '/api/routes', {
      host: 'new.test',
      cluster: 'c1',
      target: origin.url,
    });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    const [a, c] = await Promise.all([
      servesWithin(fleet.at('a'), 'new.test', EVENT_MS),
      servesWithin(fleet.at('c'), 'new.test', EVENT_MS),
    ]);
    assert.ok(a < scaled(1000), `A served the new route after ${Math.round(a)}ms`);
    assert.ok(c < scaled(1000), `C served the new route after ${Math.round(c)}ms`);
  });

  test('the hundredth route added through C works like the first', async () => {
    const c = fleet.at('c');
    for (let i = 0; i < 100; i++) {
      const added = await c.admin('POST', '/api/routes', {
        host: `r${i}.test`,
        cluster: 'c1',
        target: origin.url,
      });
      assert.equal(added.status, 201, `route ${i}: ${JSON.stringify(added.body)}`);
    }
    await servesWithin(fleet.at('a'), 'r99.test', EVENT_MS);
    await servesWithin(fleet.at('b'), 'r0.test', EVENT_MS);
    const listed = await fleet.at('a').admin<{ routes: { host: string }[] }>('GET', '/api/routes');
    const hosts = listed.body.routes.map((r) => r.host);
    for (let i = 0; i < 100; i++) assert.ok(hosts.includes(`r${i}.test`), `r${i}.test missing on A`);
  });

  test("a token revoked through C closes the agent's tunnel on A within 1 s", async () => {
    const c = fleet.at('c');
    const created = await c.admin('POST', '/api/clusters/c1/tokens');
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const { id, token } = created.body as unknown as { id: string; token: string };
    const a = fleet.at('a');
    const second = await fleet.startAgent([a], { tunnels: 1, name: 'revoked-agent', token });
    const revokedAt = performance.now();
    const revoked = await c.admin('DELETE', `/api/tokens/${id}`);
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    const down = await a.proc.waitLine(
      "the revoked agent's tunnel down on A",
      (l) => l.event === 'tunnel-down' && l.agent === 'revoked-agent',
      EVENT_MS,
    );
    const elapsed = performance.now() - revokedAt;
    assert.equal(down.code, 'SLUICE_ERR_TOKEN_REVOKED');
    assert.ok(elapsed < scaled(1000), `the tunnel closed ${Math.round(elapsed)}ms after the revocation`);
    await second.stop();
    // The first agent's token was not touched: its tunnels stay.
    assert.equal((await ask({ port: a.publicPort, host: 'app.test', path: '/status?code=200' })).status, 200);
  });
});

describe('a controller with the wrong fleet secret', () => {
  test('is refused by its peers, says why, and answers 503 at once', async () => {
    // A fourth controller on the same Redis, but with a secret of its own.
    const d = fleet.add('d');
    try {
      await d.start({ SLUICE_PEER_SECRET: 'not-the-fleet-secret-0123456789' });
      const started = performance.now();
      const reply = await ask({ port: d.publicPort, host: 'app.test', path: '/status?code=200' });
      const waited = performance.now() - started;
      // D may first not know of A at all (503 no_tunnel), or try A and be refused: never a hang or a 200.
      assert.equal(reply.status, 503);
      assert.ok(waited < scaled(10_000), `the 503 took ${Math.round(waited)}ms`);
      await waitFor(
        'a log line on D or A naming the refused peer secret',
        () =>
          [...d.proc.lines, ...fleet.at('a').proc.lines].some(
            (l) => /peer/i.test(String(l.msg)) && /secret|unauthori[sz]ed|refused/i.test(JSON.stringify(l)),
          ),
        EVENT_MS,
      );
    } finally {
      if (d.started) await d.stop();
    }
  });
});
