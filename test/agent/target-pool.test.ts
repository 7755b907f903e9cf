// The agent's pool holds at most maxSocketsPerTarget connections to one target; requests beyond it wait
// for a free one instead of opening more. Before the bound, 1,500 slow requests held 1,500 origin
// connections. An in-process agent, a controller played by a raw peer, and an origin that counts its
// open connections and answers each request only after a while (a slow target).
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { type AgentHandle, startAgent } from '../../src/agent/agent.js';
import { loadAgentConfig } from '../../src/agent/config.js';
import { listenOnLoopback } from '../helpers/listen.js';
import { type Outcome, RawController } from '../helpers/raw-controller.js';
import { SluiceProcess } from '../helpers/sluice-procs.js';
import { within } from '../helpers/wait.js';

let origin: Server;
let port: number;
let open = 0;
let peak = 0;
let controller: RawController;
let agent: AgentHandle | undefined;

before(async () => {
  origin = createServer((req, res) => {
    req.resume();
    setTimeout(() => res.end(`slow ${req.url}`), 300);
  });
  origin.on('connection', (socket) => {
    open++;
    peak = Math.max(peak, open);
    socket.once('close', () => open--);
  });
  port = await listenOnLoopback(origin);
  controller = await RawController.start();
  const config = loadAgentConfig({
    flags: {
      controller: controller.url,
      token: 'pool-token-0123456789',
      name: 'pool',
      tunnels: '1',
      allow: [`127.0.0.1:${port}`],
      maxSocketsPerTarget: '2',
    },
    env: {},
  });
  agent = await startAgent(config, pino({ level: 'silent' }));
  await controller.tunnel();
});

after(async () => {
  await agent?.close(0);
  await controller?.close();
  origin?.closeAllConnections();
  origin?.close();
});

test('with maxSocketsPerTarget 2, five slow concurrent requests hold two connections and all complete', async () => {
  const meta = (i: number) => ({
    kind: 'http',
    target: `http://127.0.0.1:${port}`,
    client: '203.0.113.9:5000',
    requestId: `pool-${i}`,
    head: { method: 'GET', path: `/r${i}`, version: '1.1', headers: ['Host', 'app.test'] },
  });
  const outcomes = await Promise.all([0, 1, 2, 3, 4].map((i) => controller.open(meta(i))));
  for (const [i, outcome] of outcomes.entries()) {
    assert.equal(outcome.kind, 'response', JSON.stringify(outcome).slice(0, 200));
    const response = outcome as Extract<Outcome, { kind: 'response' }>;
    assert.equal(response.status, 200);
    assert.equal(response.body.toString(), `slow /r${i}`);
  }
  assert.equal(peak, 2, `the origin saw at most ${peak} connections at once`);
});

test('sluice agent takes --max-sockets-per-target and SLUICE_MAX_SOCKETS_PER_TARGET, and refuses a bad one', async () => {
  const base = ['agent', '--controller', 'tcp://127.0.0.1:9', '--token', 'pool-token-0123456789'];
  const flag = new SluiceProcess([...base, '--max-sockets-per-target', '0']);
  assert.equal(await within(flag.exited, 30_000, 'the agent to exit'), 2);
  assert.match(
    flag.stderr,
    /maxSocketsPerTarget must be an integer from 1 to 100000, got "0" \(from --max-sockets-per-target\)/,
  );
  const env = new SluiceProcess(base, { SLUICE_MAX_SOCKETS_PER_TARGET: 'lots' });
  assert.equal(await within(env.exited, 30_000, 'the agent to exit'), 2);
  assert.match(env.stderr, /got "lots" \(from SLUICE_MAX_SOCKETS_PER_TARGET\)/);
});
