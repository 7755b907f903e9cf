// A rolling restart of a whole fleet behind a real haproxy (the fleet issue): three controllers on one
// Redis, an agent that knows all three, haproxy health-checking each controller's /readyz. At 200
// requests a second plus 50 open WebSockets, each controller in turn gets SIGTERM, drains, exits and
// starts again. No request may fail. The WebSockets on a drained controller close with a FIN (a raw
// relay cannot send a close frame) and reconnect through haproxy to another controller.
import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { after, before, test } from 'node:test';
import type { WebSocket } from 'ws';
import { Fleet } from '../helpers/fleet.js';
import { Haproxy } from '../helpers/haproxy.js';
import { Load, tally } from '../helpers/load.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { wsConnect, wsEcho, wsOpened } from '../helpers/ws-client.js';
import { EVENT_MS, READY_MS, waitFor } from '../helpers/wait.js';

const SOCKETS = 50;
const RATE = 200;

let origin: Origin;
let upgrades: UpgradeOrigin;
let fleet: Fleet;
let haproxy: Haproxy;

before(async () => {
  origin = await startOrigin('rolling');
  upgrades = await startUpgradeOrigin();
  fleet = await Fleet.start({
    controllers: 3,
    routes: [
      { host: 'app.test', target: origin.url },
      { host: 'ws.test', target: upgrades.url },
    ],
    args: ['--grace-period', '3s'],
  });
  await fleet.startAgent(fleet.controllers, { tunnels: 3 });
  haproxy = await Haproxy.start(
    fleet.controllers.map((c) => ({ name: c.name, port: c.publicPort, checkPort: c.adminPort })),
  );
  await haproxy.waitForStates(new Map(fleet.controllers.map((c) => [c.name, 'UP'])));
});

after(async () => {
  await haproxy?.stop();
  await fleet?.stop();
  await origin?.close();
  await upgrades?.close();
});

/** A WebSocket through haproxy that reconnects each time it is closed, until `stop()`. */
class Reconnecting {
  ws!: WebSocket;
  opened = 0;
  closes: number[] = [];
  errors: string[] = [];
  #stopped = false;
  readonly #index: number;

  constructor(index: number) {
    this.#index = index;
  }

  async open(): Promise<void> {
    for (let attempt = 0; attempt < 20 && !this.#stopped; attempt++) {
      const ws = wsConnect({ port: haproxy.port, host: 'ws.test' }, `/rolling-${this.#index}`);
      try {
        await wsOpened(ws);
        await wsEcho(ws, `hello ${this.#index}`);
      } catch (err) {
        this.errors.push(`open ${attempt}: ${(err as Error).message}`);
        ws.terminate();
        continue;
      }
      this.ws = ws;
      this.opened++;
      ws.once('error', (err) => this.errors.push(`error: ${err.message}`));
      ws.once('close', (code) => {
        this.closes.push(code);
        if (!this.#stopped) void this.open();
      });
      return;
    }
  }

  stop(): void {
    this.#stopped = true;
    this.ws?.terminate();
  }
}

test('a rolling restart of all three controllers at 200 req/s and 50 WebSockets loses nothing', async () => {
  const sockets = Array.from({ length: SOCKETS }, (_, i) => new Reconnecting(i));
  await Promise.all(sockets.map((s) => s.open()));
  assert.equal(sockets.filter((s) => s.opened === 1).length, SOCKETS);

  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const load = new Load({
    port: haproxy.port,
    host: 'app.test',
    path: '/status?code=200',
    rate: RATE,
    agent,
    prefix: 'rolling',
  }).start();
  try {
    await load.whenSettled(RATE); // a second of steady traffic first
    for (const controller of fleet.controllers) {
      const before = load.results.length;
      assert.equal(await controller.stop('SIGTERM'), 0, `controller ${controller.name} exit code`);
      await controller.start();
      await haproxy.waitForStates(new Map([[controller.name, 'UP']]), READY_MS);
      await load.whenSettled(before + RATE); // traffic on the restarted fleet before the next one
    }
    await waitFor(
      'every WebSocket to be open again',
      () => sockets.every((s) => s.ws.readyState === s.ws.OPEN),
      EVENT_MS,
    );
  } finally {
    await load.stop();
    for (const s of sockets) s.stop();
    agent.destroy();
  }
  const counts = tally(load.results);
  assert.deepEqual(counts, { 200: load.results.length }, `outcomes: ${JSON.stringify(counts)}`);
  assert.equal(load.skipped, 0, 'requests skipped because too many were in flight');
  const closed = sockets.filter((s) => s.closes.length > 0);
  assert.ok(closed.length > 0, 'no WebSocket was on a drained controller');
  for (const s of closed) {
    assert.equal(
      s.opened,
      s.closes.length + 1,
      `a closed WebSocket did not reconnect: ${s.errors.join('; ')}`,
    );
  }
  assert.deepEqual(
    sockets.flatMap((s) => s.errors),
    [],
    'WebSocket errors',
  );
});
