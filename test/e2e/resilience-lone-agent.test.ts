// A lone agent's restart (issue 11, item 23), through real processes. With one agent and one WebSocket
// open, SIGTERM used to hold the drain for the whole grace period (30 s) because of the WebSocket, and
// every new request meanwhile got 503 "no agent connected". Now upgraded connections get a short grace
// of their own (--upgrade-grace), are then closed with a FIN each way, and the agent exits as soon as
// nothing is left, while plain requests keep the grace period; a request during the drain hears the
// truth: the only agent is draining.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask, type LogLine, Stack } from '../helpers/sluice-procs.js';
import { startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { wsConnect, wsEcho, wsOpened } from '../helpers/ws-client.js';
import { within } from '../helpers/wait.js';

const GRACE_MS = 60_000;
const UPGRADE_GRACE_MS = 3_000;
/** Room for a busy 2-core machine; still far below the grace period the agent used to wait out. */
const MARGIN_MS = 15_000;

let origin: Origin;
let upgrades: UpgradeOrigin;
let stack: Stack | undefined;

before(async () => {
  origin = await startOrigin('main');
  upgrades = await startUpgradeOrigin();
});

after(async () => {
  await stack?.stop();
  await origin?.close();
  await upgrades?.close();
});

const is =
  (event: string) =>
  (l: LogLine): boolean =>
    l.event === event;

function page(body: Buffer): { reason: string } {
  return (JSON.parse(body.toString()) as { error: { reason: string } }).error;
}

describe('SIGTERM to the only agent of a cluster, with a WebSocket open', () => {
  test('upgrades get --upgrade-grace, the agent exits right after, and the 503 says it is draining', async () => {
    stack = await Stack.start({
      routes: [
        { host: 'app.test', target: origin.url },
        { host: 'ws.test', target: upgrades.url },
      ],
      agent: false,
    });
    const agent = await stack.spawnAgent({
      tunnels: 2,
      name: 'lone',
      args: ['--grace-period', `${GRACE_MS}ms`, '--upgrade-grace', `${UPGRADE_GRACE_MS}ms`],
    });
    const ws = wsConnect({ port: stack.port, host: 'ws.test' }, '/lone-ws');
    await wsOpened(ws);
    assert.equal((await wsEcho(ws, 'before')).data.toString(), 'before');
    const server = await upgrades.ws('/lone-ws');
    const errors: Error[] = [];
    ws.on('error', (err) => errors.push(err));
    const clientClosed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));

    // A plain request in flight: it keeps the whole grace period, and keeps the drain open meanwhile.
    const sse = ask({
      port: stack.port,
      host: 'app.test',
      path: '/sse',
      headers: { 'x-request-id': 'lone-sse' },
    });
    await origin.whenRequested('lone-sse');

    const signalled = performance.now();
    agent.child.kill('SIGTERM');
    await stack.controller.waitCount('both tunnels to drain', is('tunnel-draining'), 2, 10_000);

    // During the drain: the cluster's tunnels exist, but all are draining.
    const during = await ask({
      port: stack.port,
      host: 'app.test',
      path: '/headers',
      headers: { accept: 'application/json' },
    });
    assert.equal(during.status, 503, during.body.toString());
    assert.equal(page(during.body).reason, 'the only agent of cluster c1 is draining');

    // The WebSocket is closed in order once the upgrade grace ends: a FIN, not a reset.
    await within(clientClosed, UPGRADE_GRACE_MS + MARGIN_MS, 'the WebSocket to close');
    const closedAfter = performance.now() - signalled;
    assert.ok(closedAfter >= UPGRADE_GRACE_MS - 100, `kept open for the upgrade grace (${closedAfter} ms)`);
    assert.deepEqual(
      errors.map((e) => e.message),
      [],
      'the client saw no error (no reset)',
    );
    await within(server.closed, MARGIN_MS, 'the service side to close');
    assert.equal(agent.child.exitCode, null, 'the plain request still holds the drain');

    // The plain request finishes whole; then the agent exits at once, not at the end of the grace.
    origin.releaseSse();
    const reply = await within(sse, MARGIN_MS, 'the held response');
    assert.equal(reply.status, 200);
    assert.equal(reply.body.toString(), 'data: first\n\ndata: last\n\n');
    const released = performance.now();
    assert.equal(await within(agent.exited, MARGIN_MS, 'the agent to exit'), 0);
    const exitedAfter = performance.now() - signalled;
    assert.ok(exitedAfter < GRACE_MS / 2, `exited ${exitedAfter} ms after SIGTERM`);
    assert.ok(performance.now() - released < MARGIN_MS);
    assert.ok(agent.lines.some(is('grace-ended')), 'the agent said it closed the upgrades');

    // With the tunnels gone, the page says so.
    const afterExit = await ask({
      port: stack.port,
      host: 'app.test',
      path: '/headers',
      headers: { accept: 'application/json' },
    });
    assert.equal(afterExit.status, 503);
    assert.equal(page(afterExit.body).reason, 'no agent of cluster c1 is connected');
  });
});
