// An agent that knows several controllers (--controller repeated: a fleet without a load balancer in
// front of its tunnel listeners), against real in-process controllers on 127.0.0.1:
// - tunnel slot i starts on URL i mod n, so the tunnels spread over the controllers;
// - when a controller drains (GO_AWAY) its tunnel redials the next controller at once, not the same
//   URL again after a backoff, and requests keep being served;
// - a URL that refuses connections is skipped at once for the next one, and only a whole round of
//   failures in a row backs off;
// - the second and the hundredth request through the moved tunnel are served like the first.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { type ControllerHandle, startController } from '../../src/controller/controller.js';
import { inProcessControllerConfig } from '../helpers/controller-config.js';
import { freePort } from '../helpers/listen.js';
import { type CapturedLog, captureLog } from '../helpers/log-capture.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask } from '../helpers/sluice-procs.js';
import { READY_MS, waitFor } from '../helpers/wait.js';

const TOKEN = 'failover-token-0123456789abcdef';
const root = mkdtempSync(join(tmpdir(), 'sluice-failover-'));
let origin: Origin;
const controllers: ControllerHandle[] = [];
const agents: AgentHandle[] = [];

function yaml(): string {
  return [
    'clusters:',
    '  - name: c1',
    `    tokens: ["${TOKEN}"]`,
    'routes:',
    `  - { host: app.test, cluster: c1, target: "${origin.url}" }`,
  ].join('\n');
}

async function controller(name: string): Promise<ControllerHandle> {
  const config = inProcessControllerConfig(yaml(), join(root, name), {
    SLUICE_ADMIN_TOKEN: 'failover-admin-token-0123456789',
  });
  const handle = await startController(config, captureLog('silent').logger);
  controllers.push(handle);
  return handle;
}

async function agent(urls: string[], tunnels: number): Promise<CapturedLog> {
  const log = captureLog('info');
  const handle = await startAgent(
    loadAgentConfig({
      flags: {
        controller: urls,
        token: TOKEN,
        name: 'failover-agent',
        tunnels: String(tunnels),
        allow: `127.0.0.1:${origin.port}`,
      },
      env: {},
    }),
    log.logger,
  );
  agents.push(handle);
  return log;
}

/** The controller URL each tunnel slot came up on last. */
function placement(log: CapturedLog): Map<number, string> {
  const at = new Map<number, string>();
  for (const line of log.events('tunnel-up')) at.set(line.tunnel as number, line.controller as string);
  return at;
}

/** A GET for app.test on a kept-alive connection of `agent`; resolves to the status, body read. */
function get(port: number, path: string, agent: Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers: { host: 'app.test' }, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function portOf(handle: ControllerHandle): number {
  return Number(new URL(handle.publicUrl).port);
}

before(async () => {
  origin = await startOrigin('failover');
});

after(async () => {
  await Promise.allSettled(agents.map((a) => a.close(0)));
  await Promise.allSettled(controllers.map((c) => c.close(0)));
  await origin?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('an agent with two controllers', () => {
  test('spreads its tunnels, and a drained controller’s tunnel moves to the other at once', async () => {
    const a = await controller('a');
    const b = await controller('b');
    const log = await agent([a.tunnelUrl, b.tunnelUrl], 2);
    await waitFor('both tunnels up', () => placement(log).size === 2, READY_MS);
    assert.deepEqual([...placement(log).entries()].sort(), [
      [0, a.tunnelUrl],
      [1, b.tunnelUrl],
    ]);
    for (const c of [a, b]) {
      assert.equal((await ask({ port: portOf(c), host: 'app.test', path: '/status?code=200' })).status, 200);
    }

    // B drains: its tunnel gets GO_AWAY and must land on A, the next URL, with no wait.
    await b.close(2_000);
    await waitFor('tunnel 1 up on A', () => placement(log).get(1) === a.tunnelUrl, READY_MS);
    const draining = log.events('tunnel-draining').find((l) => l.tunnel === 1);
    assert.ok(draining !== undefined, 'the drain was logged');
    assert.equal(draining.controller, b.tunnelUrl);
    assert.equal(draining.next, a.tunnelUrl);
    assert.equal(draining.retryInMs, 0);
    await waitFor('both tunnels up on A', () => [...placement(log).values()].every((u) => u === a.tunnelUrl));

    // The second and the hundredth request on one kept-alive connection through A.
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      for (let i = 0; i < 100; i++) {
        assert.equal(await get(portOf(a), `/status?code=200&n=${i}`, keepAlive), 200, `request ${i + 1}`);
      }
    } finally {
      keepAlive.destroy();
    }
  });

  test('a controller URL that refuses connections is skipped at once; a whole round of failures backs off', async () => {
    const a = await controller('c');
    const dead = `tcp://127.0.0.1:${await freePort()}`;
    const log = await agent([dead, a.tunnelUrl], 1);
    await waitFor('the tunnel up on the live controller', () => placement(log).get(0) === a.tunnelUrl);
    const failed = log.events('tunnel-failed');
    assert.equal(failed.length, 1, JSON.stringify(failed));
    assert.equal(failed[0]!.controller, dead);
    assert.equal(failed[0]!.next, a.tunnelUrl);
    assert.equal(failed[0]!.retryInMs, 0);

    // Now both are dead: the first failure after the tunnel went moves on at once, the round's last one
    // (every URL failed in a row) takes the backoff, and the rotation goes on.
    const dead2 = `tcp://127.0.0.1:${await freePort()}`;
    const lonely = await agent([dead, dead2], 1);
    await waitFor('a round of failures and then some', () => lonely.events('tunnel-failed').length >= 3);
    const round = lonely.events('tunnel-failed').slice(0, 3);
    assert.deepEqual(
      round.map((l) => [l.controller, l.next]),
      [
        [dead, dead2],
        [dead2, dead],
        [dead, dead2],
      ],
    );
    assert.equal(round[0]!.retryInMs, 0);
    // The backoff's draw may be small, but it is a backoff: the ceiling of the first is 500 ms.
    assert.ok((round[1]!.retryInMs as number) <= 500);
  });
});
