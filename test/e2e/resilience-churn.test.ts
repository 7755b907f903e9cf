// Bounded memory under churn (the resilience issue): 10,000 short connections through real controller
// and agent processes (plain requests on fresh connections, WebSockets opened and closed, requests the
// client gives up on) leave no streams, requests, sockets, timers or map entries behind, and the heap
// after a full collection returns to near its baseline. Both processes run with --expose-gc so that
// their `/debug/memory` endpoints collect before they measure.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { type SluiceProcess, Stack } from '../helpers/sluice-procs.js';
import { startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { wsClosed, wsConnect, wsEcho, wsOpened } from '../helpers/ws-client.js';
import { EVENT_MS, scaled, within } from '../helpers/wait.js';

const CONNECTIONS = 10_000;
const WARM_UP = 1_000;
const CONCURRENCY = 24;
/** Heap growth allowed after the churn, after a full collection: well under 200 bytes a connection. */
const HEAP_SLACK = 2 * 1024 * 1024;

let origin: Origin;
let upgrades: UpgradeOrigin;
let stack: Stack;
let agent: SluiceProcess;
let agentHealth = '';

before(async () => {
  origin = await startOrigin('main');
  upgrades = await startUpgradeOrigin();
  const gc = { NODE_OPTIONS: '--expose-gc' };
  stack = await Stack.start({
    routes: [
      { host: 'app.test', target: origin.url },
      { host: 'ws.test', target: upgrades.url },
    ],
    agent: false,
    admin: true,
    controllerEnv: gc,
  });
  agent = await stack.spawnAgent({ tunnels: 2, args: ['--health-listen', '127.0.0.1:0'], env: gc });
  const health = await agent.waitLine('the health listener', (l) => l.listener === 'health');
  agentHealth = String(health.url);
});

after(async () => {
  await stack?.stop();
  await origin?.close();
  await upgrades?.close();
});

interface Memory {
  gc: boolean;
  heapUsed: number;
  resources: Record<string, number>;
  reportConnections: number;
  [key: string]: unknown;
}

async function memory(url: string): Promise<Memory> {
  return (await (await fetch(`${url}/debug/memory`)).json()) as Memory;
}

/** One short connection: mostly a plain request, every 10th a WebSocket, every 10th one abandoned. */
async function connection(i: number): Promise<void> {
  if (i % 10 === 3) {
    const ws = wsConnect({ port: stack.port, host: 'ws.test' }, `/churn-${i}`);
    await wsOpened(ws);
    assert.equal((await wsEcho(ws, `m${i}`)).data.toString(), `m${i}`);
    const closed = wsClosed(ws);
    ws.close(1000);
    await within(closed, EVENT_MS, 'the WebSocket to close');
    return;
  }
  const id = `churn-${i}`;
  const abandon = i % 10 === 7;
  await new Promise<void>((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port: stack.port,
      path: abandon ? '/hang' : '/headers',
      headers: { host: 'app.test', 'x-request-id': id, connection: 'close' },
      agent: false,
    });
    req.on('error', (err) => (abandon ? resolve() : reject(err)));
    req.on('response', (res) => {
      if (res.statusCode !== 200) reject(new Error(`${id}: ${res.statusCode}`));
      res.resume();
      res.on('end', resolve);
    });
    req.end();
    // Given up once the origin has it: the cancel has to travel through both processes.
    if (abandon) void origin.whenRequested(id).then(() => req.destroy());
  });
}

async function churn(from: number, count: number): Promise<void> {
  let next = from;
  const end = from + count;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < end) await connection(next++);
    }),
  );
}

/** TCP sockets of the process's traffic: its tunnels, clients and targets, not the memory askers'. */
const sockets = (m: Memory): number => (m.resources.TCPSocketWrap ?? 0) - m.reportConnections;

/**
 * Polls both processes until everything per-connection is gone: no request, stream or upgraded socket,
 * and (given a baseline) no more sockets than then, bar idle keep-alive connections in the agent's
 * pool. A closing connection's socket lingers a moment after its exchange ended, hence the polling;
 * it is paced, and bounded in count and time.
 */
async function settled(baseline?: { controller: Memory; agent: Memory }): Promise<void> {
  const deadline = Date.now() + scaled(EVENT_MS);
  let last = '';
  for (let i = 0; i < 3_000 && Date.now() < deadline; i++) {
    // Each ask makes both processes collect: a pause between rounds leaves the CPU to what they wait for.
    if (i > 0) await sleep(10);
    const [c, a] = await Promise.all([memory(stack.adminUrl), memory(agentHealth)]);
    const idle =
      c.inFlight === 0 && c.streams === 0 && c.responses === 0 && c.upgraded === 0 && a.streams === 0;
    const closed =
      baseline === undefined ||
      (sockets(c) <= sockets(baseline.controller) &&
        sockets(a) <= sockets(baseline.agent) + Number(a.targetFreeSockets));
    if (idle && closed) return;
    last = JSON.stringify({ controller: c, agent: a });
  }
  throw new Error(`connections or streams were still open after the churn: ${last}`);
}

test('10,000 short connections leave no entries behind, and the heap returns near its baseline', async (t) => {
  assert.equal((await memory(stack.adminUrl)).gc, true, 'the controller runs with --expose-gc');
  assert.equal((await memory(agentHealth)).gc, true, 'the agent runs with --expose-gc');
  await churn(0, WARM_UP);
  await settled();
  const before = { controller: await memory(stack.adminUrl), agent: await memory(agentHealth) };

  const started = performance.now();
  await churn(WARM_UP, CONNECTIONS);
  t.diagnostic(`${CONNECTIONS} connections in ${Math.round(performance.now() - started)} ms`);
  // Every socket of the churn closes (compared with the baseline's), and nothing is left in flight.
  await settled(before);
  const after = { controller: await memory(stack.adminUrl), agent: await memory(agentHealth) };

  for (const side of ['controller', 'agent'] as const) {
    const grew = after[side].heapUsed - before[side].heapUsed;
    t.diagnostic(
      `${side}: heap ${before[side].heapUsed} -> ${after[side].heapUsed} (${grew >= 0 ? '+' : ''}${grew} bytes); ` +
        `resources ${JSON.stringify(before[side].resources)} -> ${JSON.stringify(after[side].resources)}`,
    );
    assert.ok(grew < HEAP_SLACK, `${side} heap grew by ${grew} bytes over ${CONNECTIONS} connections`);
    // Timers that hold the process open; the sessions' own timers are unref'd and show in the heap.
    assert.equal(
      after[side].resources.Timeout ?? 0,
      before[side].resources.Timeout ?? 0,
      `${side}: no timer left behind`,
    );
  }
  assert.deepEqual(after.controller.registry, { tunnels: 2, slots: 2 });
  assert.equal(after.agent.sessions, 2);
  // Connections to the origin: at most what the agent's keep-alive pool holds (it keeps idle ones).
  assert.equal(after.agent.targetSockets, 0, 'no target connection is in use');
});
