// Resilience through real controller and agent processes (the resilience issue): an agent killed under
// load, a controller restart, a blackholed tunnel, a tunnel the network dropped on one side, a slow
// path, and a refused token. Tunnels ping every 500 ms here (dead after 1.5 s) so that detection is
// quick; faults come from a TCP proxy in the tunnel's path (test/helpers/fault-proxy.ts).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { Load, tally } from '../helpers/load.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask, type LogLine, type SluiceProcess, Stack } from '../helpers/sluice-procs.js';
import { startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { wsClosed, wsConnect, wsEcho, wsOpened } from '../helpers/ws-client.js';
import { EVENT_MS, scaled, within } from '../helpers/wait.js';

const PING_MS = 500;
/** Both ends ping every PING_MS and give a silent peer up after three intervals. */
const FAST_YAML = `tunnel:\n  pingInterval: ${PING_MS}ms\n  pingTimeout: ${3 * PING_MS}ms`;
const FAST_AGENT = ['--ping-interval', `${PING_MS}ms`];

let origin: Origin;
let upgrades: UpgradeOrigin;
const stacks: Stack[] = [];
const proxies: FaultProxy[] = [];

before(async () => {
  origin = await startOrigin('main');
  upgrades = await startUpgradeOrigin();
});

after(async () => {
  await Promise.allSettled(stacks.map((s) => s.stop()));
  await Promise.allSettled(proxies.map((p) => p.close()));
  await origin?.close();
  await upgrades?.close();
});

async function stack(extraYaml = FAST_YAML, admin = false): Promise<Stack> {
  const s = await Stack.start({
    routes: [
      { host: 'app.test', target: origin.url },
      { host: 'ws.test', target: upgrades.url },
    ],
    extraYaml,
    agent: false,
    admin,
  });
  stacks.push(s);
  return s;
}

async function proxyTo(s: Stack): Promise<FaultProxy> {
  const url = new URL(s.tunnelUrl);
  const proxy = await FaultProxy.start({ host: url.hostname, port: Number(url.port) });
  proxies.push(proxy);
  return proxy;
}

function get(s: Stack, path: string, id: string, host = 'app.test') {
  return ask({ port: s.port, host, path, headers: { accept: 'application/json', 'x-request-id': id } });
}

const is =
  (event: string, fields: Record<string, unknown> = {}) =>
  (l: LogLine): boolean =>
    l.event === event && Object.entries(fields).every(([k, v]) => l[k] === v);

/** `promise`'s value and when it came (Date.now(), to compare with a log line's `time`). */
function ended<T>(promise: Promise<T>): Promise<{ value: T; at: number }> {
  return promise.then((value) => ({ value, at: Date.now() }));
}

/** The request log line the controller wrote for `id`. */
function requestLine(controller: SluiceProcess, id: string): Promise<LogLine> {
  return controller.waitLine(`the log line of ${id}`, (l) => l.msg === 'request' && l.requestId === id);
}

describe('an agent killed under load', () => {
  test('in-flight requests get 502, new ones 503, and traffic is back within 2 s of its restart', async (t) => {
    const s = await stack();
    const agent = await s.spawnAgent({ args: FAST_AGENT });
    const hanging = ['kill9-hang-1', 'kill9-hang-2'].map((id) => get(s, '/hang', id));
    await Promise.all(['kill9-hang-1', 'kill9-hang-2'].map((id) => origin.whenRequested(id)));
    const load = new Load({ port: s.port, host: 'app.test', path: '/headers', rate: 100 }).start();
    // Stopped whatever fails: its timer would hold the test process open.
    let recoveredAt = 0;
    try {
      await load.whenSettled(50);

      agent.child.kill('SIGKILL');
      await s.controller.waitCount('both tunnels down', is('tunnel-down'), 2);
      for (const reply of await Promise.all(hanging)) {
        assert.equal(reply.status, 502, reply.body.toString());
        assert.match(reply.body.toString(), /tunnel stream broke/);
      }
      const refused = await get(s, '/headers', 'kill9-while-down');
      assert.equal(refused.status, 503);
      assert.match(refused.body.toString(), /no agent of cluster c1 is connected/);

      const seen = s.controller.lines.filter(is('tunnel-up')).length;
      const restarted = await s.spawnAgent({ args: FAST_AGENT, wait: false });
      // From the new agent's first line: how long node takes to load it is no claim of Sluice's.
      const started = await restarted.waitLine('the new agent to start', is('starting'));
      await s.controller.waitCount('a tunnel of the new agent', is('tunnel-up'), seen + 1);
      const back = await get(s, '/headers', 'kill9-back');
      const backMs = Date.now() - Number(started.time);
      recoveredAt = performance.now();
      assert.equal(back.status, 200);
      t.diagnostic(`served again ${Math.round(backMs)} ms after the new agent started`);
      assert.ok(backMs < scaled(2000), `served again ${Math.round(backMs)} ms after the restart`);

      await load.whenSettled(load.results.length + 50);
    } finally {
      await load.stop();
    }
    const results = load.results;
    const counts = tally(results);
    t.diagnostic(`load outcomes: ${JSON.stringify(counts)}`);
    const unexpected = Object.keys(counts).filter((k) => !['200', '502', '503'].includes(k));
    assert.deepEqual(unexpected, [], `outcomes: ${JSON.stringify(counts)}`);
    assert.ok((counts['503'] ?? 0) > 0, `requests while no agent was up got 503: ${JSON.stringify(counts)}`);
    const slowest = Math.max(...results.map((r) => r.doneAt - r.sentAt));
    t.diagnostic(`the slowest request took ${Math.round(slowest)} ms`);
    assert.ok(slowest < scaled(3000), `no request hung: the slowest took ${Math.round(slowest)} ms`);
    const last = results.filter((r) => r.sentAt > recoveredAt);
    assert.ok(last.length > 0, 'requests were sent after the recovery');
    assert.deepEqual(tally(last), { 200: last.length }, 'after recovery every request is served');
  });
});

describe('a controller restart', () => {
  test('agents reconnect and traffic flows within 2 s of the controller being back', async (t) => {
    const s = await stack();
    const agent = await s.spawnAgent({ args: FAST_AGENT });
    assert.equal((await get(s, '/headers', 'restart-before')).status, 200);

    assert.equal(await s.controller.stop('SIGTERM'), 0, 'the controller drains and exits 0');
    await agent.waitCount('both tunnels told to go away', is('tunnel-draining'), 2);
    const lostAt = Number(agent.lines.find(is('tunnel-draining'))!.time);
    const controller = await s.startController();
    const backAt = Number(controller.lines.find(is('listening', { listener: 'tunnel' }))!.time);
    await s.controller.waitLine('an agent tunnel', is('tunnel-up'));
    const reply = await get(s, '/headers', 'restart-after');
    const ms = Date.now() - backAt;
    assert.equal(reply.status, 200);
    // The agent waits between dials, never longer than the outage has lasted so far (README): a
    // restart of a second is redialed within about a second. A busy machine restarts slower.
    const outage = backAt - lostAt;
    t.diagnostic(
      `traffic flowed ${Math.round(ms)} ms after the controller was back, after ${outage} ms away`,
    );
    assert.ok(
      ms < scaled(Math.max(2000, outage + 1000)),
      `traffic flowed ${Math.round(ms)} ms after the controller was back, after ${outage} ms away`,
    );
    await s.controller.waitCount('both tunnels back', is('tunnel-up'), 2);
  });
});

describe('a blackholed tunnel', () => {
  test('is found dead within 3 ping intervals on both sides; its requests end, new ones go elsewhere', async (t) => {
    const s = await stack();
    const proxy = await proxyTo(s);
    const doomed = await s.spawnAgent({
      controller: proxy.url,
      tunnels: 1,
      name: 'doomed',
      args: FAST_AGENT,
    });
    // While the doomed agent is the only one, its tunnel takes these.
    const hanging = ended(get(s, '/hang', 'bh-hang'));
    await origin.whenRequested('bh-hang');
    const ws = wsConnect({ port: s.port, host: 'ws.test' }, '/bh-ws');
    await wsOpened(ws);
    assert.equal((await wsEcho(ws, 'before')).data.toString(), 'before');
    const wsClose = wsClosed(ws);
    await s.spawnAgent({ tunnels: 1, name: 'healthy', args: FAST_AGENT });

    const blackholedAt = Date.now();
    proxy.blackhole();
    const [controllerSaw, agentSaw] = await Promise.all([
      s.controller.waitLine('the controller to drop the tunnel', is('tunnel-down', { agent: 'doomed' })),
      doomed.waitLine('the agent to drop the tunnel', is('tunnel-down')),
    ]);
    const limit = 3 * PING_MS + PING_MS; // three intervals, and one for timers and log delivery
    for (const [side, line] of [
      ['controller', controllerSaw],
      ['agent', agentSaw],
    ] as const) {
      assert.equal(line.code, 'SLUICE_ERR_PING_TIMEOUT', `${side}: ${JSON.stringify(line)}`);
      const ms = Number(line.time) - blackholedAt;
      t.diagnostic(`${side} found the blackholed tunnel dead after ${ms} ms (ping every ${PING_MS} ms)`);
      assert.ok(ms <= scaled(limit), `${side} found the tunnel dead after ${ms} ms`);
    }

    // Its request and its WebSocket end as soon as the controller has given the tunnel up.
    const deadAt = Number(controllerSaw.time);
    const cut = await within(hanging, EVENT_MS, 'the in-flight request to end');
    assert.equal(cut.value.status, 502);
    assert.ok(cut.at - deadAt < scaled(2000), `the request ended ${cut.at - deadAt} ms after`);
    const wsEnd = await within(wsClose, EVENT_MS, 'the WebSocket on the dead tunnel to close');
    const wsMs = Math.round(Date.now() - (performance.now() - wsEnd.at) - deadAt);
    assert.ok(wsMs < scaled(2000), `the WebSocket closed ${wsMs} ms after`);
    for (let i = 0; i < 5; i++) {
      const id = `bh-after-${i}`;
      assert.equal((await get(s, '/headers', id)).status, 200);
      assert.match(String((await requestLine(s.controller, id)).agent), /^healthy\//);
    }
  });
});

describe('a tunnel dropped on the agent side only', () => {
  test('the agent redials that slot alone, and the new generation replaces the stale tunnel at once', async (t) => {
    // Default pings (15 s / 45 s): the controller cannot notice a stale tunnel by itself in this test.
    const s = await stack('', true);
    const proxy = await proxyTo(s);
    const agent = await s.spawnAgent({ controller: proxy.url, tunnels: 2 });
    assert.deepEqual(
      s.controller.lines.filter(is('tunnel-up')).map((l) => l.generation),
      [1, 1],
    );

    // One connection lost at a NAT: the agent gets a reset, the controller hears nothing.
    const droppedAt = Date.now();
    proxy.links[0]!.drop();
    const down = await agent.waitLine('the agent to see one tunnel drop', is('tunnel-down'));
    const slot = Number(down.tunnel);
    const replaced = await s.controller.waitLine('the stale tunnel replaced', is('tunnel-replaced'));
    assert.equal(replaced.slot, slot);
    assert.equal(replaced.generation, 1);
    assert.equal(replaced.byGeneration, 2);
    t.diagnostic(`stale tunnel replaced ${Number(replaced.time) - droppedAt} ms after the drop`);
    assert.ok(Number(replaced.time) - droppedAt < scaled(2000), 'replaced at once, not at a ping timeout');
    const staleDown = await s.controller.waitLine(
      'the stale tunnel closed',
      (l) => is('tunnel-down')(l) && l.session === replaced.session,
    );
    assert.match(String(staleDown.err), /replaced by generation 2/);
    // The other slot never noticed.
    assert.equal(agent.lines.filter(is('tunnel-down')).length, 1);
    assert.equal(agent.lines.filter((l) => is('tunnel-up')(l) && l.tunnel !== slot).length, 1);
    const memory = (await (await fetch(`${s.adminUrl}/debug/memory`)).json()) as {
      registry: { tunnels: number; slots: number };
    };
    assert.deepEqual(memory.registry, { tunnels: 2, slots: 2 }, 'no entry is left for the stale tunnel');
    assert.equal((await get(s, '/headers', 'drop-after')).status, 200);

    // A request in flight on a stale tunnel fails as soon as the agent is back, not 45 s later.
    const hanging = ended(get(s, '/hang', 'drop-hang'));
    await origin.whenRequested('drop-hang');
    proxy.drop();
    await s.controller.waitCount('both stale tunnels replaced', is('tunnel-replaced'), 3);
    const backAt = Number(s.controller.lines.filter(is('tunnel-replaced'))[2]!.time);
    const cut = await within(hanging, EVENT_MS, 'the request on the stale tunnel to end');
    assert.equal(cut.value.status, 502);
    assert.ok(cut.at - backAt < scaled(2000), `it ended ${cut.at - backAt} ms after the agent was back`);
  });
});

describe('a slow path', () => {
  test('a tunnel with 200 ms each way is slow, not dead', async () => {
    const s = await stack();
    const proxy = await proxyTo(s);
    const agent = await s.spawnAgent({ controller: proxy.url, tunnels: 1, args: FAST_AGENT });
    proxy.delay(200);
    const started = performance.now();
    // Enough round trips to outlast the 1.5 s ping timeout several times over.
    for (let i = 0; i < 6; i++) {
      const t = performance.now();
      assert.equal((await get(s, '/headers', `slow-${i}`)).status, 200);
      assert.ok(performance.now() - t >= 400, 'each request crosses the delay twice');
    }
    assert.ok(performance.now() - started > 3 * PING_MS, 'the test outlasted a ping timeout');
    assert.equal(s.controller.lines.filter(is('tunnel-down')).length, 0);
    assert.equal(agent.lines.filter(is('tunnel-down')).length, 0);
  });
});

describe('a refused token', () => {
  test('a wrong token is logged as refused on each tunnel and retried minutes later, not in a loop', async () => {
    const s = await stack();
    const wrong = await s.spawnAgent({ token: 'not-the-token-0123456789', tunnels: 2, wait: false });
    await wrong.waitCount('both tunnels refused', is('tunnel-failed'), 2);
    for (const line of wrong.lines.filter(is('tunnel-failed'))) {
      assert.equal(line.level, 50, 'logged as an error');
      assert.equal(line.code, 'SLUICE_ERR_UNAUTHORIZED');
      assert.match(String(line.msg), /refused the agent token/);
      assert.ok(Number(line.retryInMs) >= 150_000, `retried in ${String(line.retryInMs)} ms`);
    }
    // A good agent comes up meanwhile; the refused one has not tried again.
    await s.spawnAgent({ tunnels: 1 });
    assert.equal(s.controller.lines.filter((l) => l.msg === 'tunnel refused: unknown token').length, 2);
    assert.equal(wrong.lines.filter(is('tunnel-failed')).length, 2);
    assert.equal(await wrong.stop('SIGTERM'), 0, 'an agent waiting out a refusal still stops at once');
  });

  test('a revoked token: after the controller restarts without it, the agent is refused and backs off', async () => {
    const s = await stack();
    const agent = await s.spawnAgent({ tunnels: 1, args: FAST_AGENT });
    await s.controller.stop('SIGTERM');
    await s.startController({ tokens: ['a-new-token-for-c1-0123456789'] });
    // Dials during the restart found nothing listening; the first one that reaches it is refused.
    const refused = await agent.waitLine(
      'the agent to be refused',
      is('tunnel-failed', { code: 'SLUICE_ERR_UNAUTHORIZED' }),
    );
    assert.ok(Number(refused.retryInMs) >= 150_000);
    assert.equal((await get(s, '/headers', 'revoked')).status, 503);
  });
});
