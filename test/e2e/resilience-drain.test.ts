// Graceful drains through real processes (the resilience issue): a rolling restart of agent replicas
// under steady load loses no request; a controller's SIGTERM answers every request it had accepted; an
// agent's SIGTERM finishes its streams and exits 0; and upgraded connections still open when the grace
// period ends are closed with a FIN each way. A raw relay cannot send a WebSocket close frame (it never
// parses the service's frames), so an orderly TCP close, not a reset, is the proper close here.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Agent } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Load, type LoadResult, tally } from '../helpers/load.js';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask, type LogLine, type Reply, Stack } from '../helpers/sluice-procs.js';
import { startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { rawUpgrade } from '../helpers/ws-client.js';
import { EVENT_MS, READY_MS, within } from '../helpers/wait.js';

let origin: Origin;
let upgrades: UpgradeOrigin;
const stacks: Stack[] = [];

before(async () => {
  origin = await startOrigin('main');
  upgrades = await startUpgradeOrigin();
});

after(async () => {
  await Promise.allSettled(stacks.map((s) => s.stop()));
  await origin?.close();
  await upgrades?.close();
});

async function stack(extraYaml = ''): Promise<Stack> {
  const s = await Stack.start({
    routes: [
      { host: 'app.test', target: origin.url },
      { host: 'up.test', target: upgrades.url },
    ],
    extraYaml,
    agent: false,
  });
  stacks.push(s);
  return s;
}

const is =
  (event: string, fields: Record<string, unknown> = {}) =>
  (l: LogLine): boolean =>
    l.event === event && Object.entries(fields).every(([k, v]) => l[k] === v);

/** An SSE request that the origin holds after its first event until `origin.releaseSse()`. */
async function heldSse(s: Stack, id: string): Promise<{ reply: Promise<Reply> }> {
  const reply = ask({ port: s.port, host: 'app.test', path: '/sse', headers: { 'x-request-id': id } });
  await origin.whenRequested(id);
  return { reply };
}

/** An `echo/1` upgrade through the controller, with its server side at the origin. */
async function openEcho(s: Stack, path: string) {
  const client = await rawUpgrade({ port: s.port, host: 'up.test' }, path);
  assert.equal(client.status, 101);
  const server = await upgrades.raw(path);
  client.socket.resume();
  client.socket.write('ping\n');
  const [echoed] = (await within(once(client.socket, 'data'), EVENT_MS, 'the echo')) as [Buffer];
  assert.equal(echoed.toString(), 'ping\n');
  // How the client's side ended: a FIN ('end') or a reset ('error').
  const ended = new Promise<string>((resolve) => {
    client.socket.once('end', () => resolve('fin'));
    client.socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
  return { client, server, ended };
}

/**
 * What became of each request that did not get its 200, from both ends: the client's outcome, the
 * controller's log line for it (if it wrote one) and whether the origin got it. A lost request has an
 * error or a status; a `timeout` is one still unanswered after the load's generous deadline.
 */
function lostReport(s: Stack, results: readonly LoadResult[], restarts: Restart[]): string {
  const lines = results.map((r) => {
    const line = s.controller.lines.find((l) => l.msg === 'request' && l.requestId === r.id);
    const during = restarts.find((w) => r.sentAt >= w.signalled && r.sentAt <= w.replaced);
    const seen = line === undefined ? 'no log line' : JSON.stringify(line);
    return (
      `${r.id}: ${r.error ?? r.status} after ${Math.round(r.doneAt - r.sentAt)} ms, ` +
      `${r.written ? 'written' : 'not yet written'} to a connection, sent ` +
      `${during === undefined ? 'outside a restart' : `while replica ${during.replica} restarted`}; ` +
      `origin ${origin.requested.has(r.id) ? 'got it' : 'never got it'}; controller: ${seen}`
    );
  });
  return `${results.length} requests lost:\n${lines.slice(0, 20).join('\n')}`;
}

interface Restart {
  replica: number;
  /** performance.now() at its SIGTERM and once its replacement's tunnels were registered. */
  signalled: number;
  replaced: number;
}

describe('a rolling restart of agent replicas', () => {
  // The proof of the zero-downtime claim. A lost request (an error, a status other than 200, or no
  // answer within the load's deadline) fails it, with what each end saw of it. A slow machine does not:
  // every wait is generous, no request is skipped for too many in flight, and the latencies are only
  // reported.
  test('under 200 req/s for 20 s, restarting each of two replicas in turn fails no request', async (t) => {
    const s = await stack();
    const replicas = [await s.spawnAgent({ tunnels: 2 }), await s.spawnAgent({ tunnels: 2 })];
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 32 });
    const load = new Load({
      port: s.port,
      host: 'app.test',
      path: '/headers',
      rate: 200,
      agent: keepAlive,
      maxInFlight: 10_000,
    });
    const restarts: Restart[] = [];
    load.start();
    try {
      for (const [i, at] of [
        [0, 800],
        [1, 2400],
      ] as const) {
        await load.whenSettled(at);
        const old = replicas[i]!;
        const signalled = performance.now();
        old.child.kill('SIGTERM');
        await s.controller.waitCount('its tunnels to drain', is('tunnel-draining'), 2 * (i + 1));
        assert.equal(await within(old.exited, READY_MS, `replica ${i} to exit`), 0, 'it drains, exits 0');
        replicas[i] = await s.spawnAgent({ tunnels: 2 });
        restarts.push({ replica: i, signalled, replaced: performance.now() });
        t.diagnostic(
          `replica ${i} restarted in ${Math.round(performance.now() - signalled)} ms, ` +
            `after ${load.results.length} requests`,
        );
      }
      await load.whenSettled(4000);
    } finally {
      await load.stop();
      keepAlive.destroy();
    }
    const ms = load.results.map((r) => r.doneAt - r.sentAt).sort((x, y) => x - y);
    const at = (q: number): number => Math.round(ms[Math.min(ms.length - 1, Math.floor(q * ms.length))]!);
    t.diagnostic(
      `outcomes: ${JSON.stringify(tally(load.results))}, skipped ${load.skipped}; latency p50 ${at(0.5)} ` +
        `p99 ${at(0.99)} max ${at(1)} ms; at most ${load.peakInFlight} in flight`,
    );
    // Still queued in the client for one of its 32 sockets when its deadline came: never sent, so
    // not lost by Sluice, only a sign of a very slow machine.
    const unsent = load.results.filter((r) => r.error === 'timeout' && !r.written);
    if (unsent.length > 0) t.diagnostic(`${unsent.length} requests never left the client in time`);
    const lost = load.results.filter(
      (r) => (r.status !== 200 || r.error !== undefined) && !unsent.includes(r),
    );
    assert.equal(lost.length, 0, lostReport(s, lost, restarts));
    assert.equal(load.skipped, 0, 'every request due was sent');
    // The load really crossed each restart: requests sent while only the other replica could take
    // them were served.
    for (const r of restarts) {
      const crossing = load.results.filter(
        (x) => x.sentAt >= r.signalled && x.sentAt <= r.replaced && x.status === 200,
      );
      t.diagnostic(`${crossing.length} requests sent and served while replica ${r.replica} restarted`);
      assert.ok(
        crossing.length > 0,
        `no request was served that was sent while replica ${r.replica} restarted`,
      );
    }
    // Both replicas' tunnels served: spread by least outstanding streams.
    const served = new Set(
      s.controller.lines.filter((l) => l.msg === 'request').map((l) => String(l.agent).split('/')[1]),
    );
    assert.ok(served.size >= 4, `requests went to ${served.size} replicas over the test`);
  });
});

describe('a controller drain', () => {
  test('every request accepted before SIGTERM is answered; agents are told to go away; exit 0', async (t) => {
    const s = await stack();
    const agent = await s.spawnAgent({ tunnels: 2 });
    const held = await Promise.all(['cd-sse-1', 'cd-sse-2', 'cd-sse-3'].map((id) => heldSse(s, id)));
    const sse = ['cd-sse-1', 'cd-sse-2', 'cd-sse-3'].map((id) =>
      s.controller.waitLine(`the SSE ${id}`, (l) => l.msg === 'request' && l.requestId === id),
    );
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 16 });
    const load = new Load({ port: s.port, host: 'app.test', path: '/headers', rate: 200, agent: keepAlive });
    load.start();
    try {
      await load.whenSettled(300);
      s.controller.child.kill('SIGTERM');
      const stopping = await s.controller.waitLine('the drain', is('stopping'));
      await agent.waitCount('GO_AWAY on both tunnels', is('tunnel-draining'), 2);
      origin.releaseSse();
      const seen = load.results.length;
      await load.whenSettled(seen + 100);
      assert.equal(await within(s.controller.exited, READY_MS, 'the controller to exit'), 0);

      // What the controller accepted before the signal is what it logged as started before `stopping`.
      const accepted = s.controller.lines.filter(
        (l) => l.msg === 'request' && Number(l.time) - Number(l.ms) < Number(stopping.time),
      );
      t.diagnostic(
        `accepted before SIGTERM: ${accepted.length}; in flight then: ${String(stopping.inFlight)}`,
      );
      assert.ok(accepted.length >= 300);
      assert.ok(Number(stopping.inFlight) >= 3, 'the held requests were in flight');
      const results = new Map(load.results.map((r) => [r.id, r]));
      for (const line of accepted) {
        assert.equal(line.status, 200, `accepted request ${String(line.requestId)}: ${JSON.stringify(line)}`);
        const r = results.get(String(line.requestId));
        if (r !== undefined) assert.deepEqual([r.status, r.error], [200, undefined], r.id);
      }
      for (const line of await Promise.all(sse)) assert.equal(line.status, 200);
    } finally {
      await load.stop();
      keepAlive.destroy();
    }
    for (const reply of await Promise.all(held.map((h) => h.reply))) {
      assert.equal(reply.status, 200);
      assert.equal(reply.body.toString(), 'data: first\n\ndata: last\n\n', 'the held response is whole');
    }
    t.diagnostic(`client outcomes across the drain: ${JSON.stringify(tally(load.results))}`);
  });

  test('an upgraded connection still open when the grace period ends gets a FIN both ways', async () => {
    const s = await stack('tunnel:\n  gracePeriod: 1s');
    const agent = await s.spawnAgent({ tunnels: 1 });
    const echo = await openEcho(s, '/cd-echo');
    const signalled = performance.now();
    s.controller.child.kill('SIGTERM');
    assert.equal(await within(echo.ended, EVENT_MS, 'the client side to end'), 'fin');
    assert.ok(performance.now() - signalled >= 900, 'kept open for the grace period');
    echo.client.socket.end();
    const closed = await within(echo.server.closed, EVENT_MS, 'the target side to close');
    assert.equal(closed.error, undefined, 'the target saw an orderly close, not a reset');
    assert.equal(await within(s.controller.exited, READY_MS, 'the controller to exit'), 0);
    assert.ok(s.controller.lines.some(is('grace-ended', { upgrades: 1 })));
    await agent.waitLine('the agent told to go away', is('tunnel-draining'));
  });
});

describe('an agent drain', () => {
  test('SIGTERM: GO_AWAY, new streams go elsewhere, in-flight ones finish, upgrades close, exit 0', async () => {
    const s = await stack();
    const leaving = await s.spawnAgent({ tunnels: 1, name: 'leaving', args: ['--grace-period', '1s'] });
    const held = await heldSse(s, 'ad-sse');
    const echo = await openEcho(s, '/ad-echo');
    await s.spawnAgent({ tunnels: 1, name: 'staying' });

    const signalled = performance.now();
    leaving.child.kill('SIGTERM');
    await s.controller.waitLine('the tunnel to drain', is('tunnel-draining', { agent: 'leaving' }));
    for (let i = 0; i < 4; i++) {
      const id = `ad-new-${i}`;
      assert.equal(
        (await ask({ port: s.port, host: 'app.test', path: '/headers', headers: { 'x-request-id': id } }))
          .status,
        200,
      );
      const line = await s.controller.waitLine(id, (l) => l.msg === 'request' && l.requestId === id);
      assert.match(String(line.agent), /^staying\//, 'a draining tunnel gets no new stream');
    }
    origin.releaseSse();
    const reply = await held.reply;
    assert.equal(reply.status, 200);
    assert.equal(reply.body.toString(), 'data: first\n\ndata: last\n\n', 'the in-flight response finished');

    const ended = await within(echo.ended, EVENT_MS, 'the upgraded client side to end').catch(
      (err: Error) => {
        // Seen once in CI on a loaded machine: say what each side logged of the drain.
        const events = (lines: readonly LogLine[]): string =>
          JSON.stringify(lines.filter((l) => l.event !== undefined || Number(l.level) >= 40).slice(-30));
        throw new Error(
          `${err.message}\nleaving agent: ${events(leaving.lines)}\ncontroller: ${events(s.controller.lines)}`,
        );
      },
    );
    assert.equal(ended, 'fin');
    assert.ok(performance.now() - signalled >= 900, 'the upgrade was kept for the grace period');
    echo.client.socket.end();
    const closed = await within(echo.server.closed, EVENT_MS, 'the target side to close');
    assert.equal(closed.error, undefined, 'the target saw an orderly close, not a reset');
    assert.equal(await within(leaving.exited, READY_MS, 'the agent to exit'), 0);
    assert.ok(leaving.lines.some(is('grace-ended', { upgrades: 1 })));
  });
});
