// Prometheus metrics through real controller and agent processes (the control-plane issue): `/metrics`
// on the controller's admin listener and on the agent's health listener answer in the text format, and
// after known traffic (plain requests of each outcome, a WebSocket held open, a request the client
// gives up on, an agent with a wrong token) the counters have moved by exactly that much, under the
// right labels, and the gauges read the live state.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { type Origin, startOrigin } from '../helpers/origin.js';
import { ask, type LogLine, Stack } from '../helpers/sluice-procs.js';
import { startUpgradeOrigin, type UpgradeOrigin } from '../helpers/upgrade-origin.js';
import { wsClosed, wsConnect, wsEcho, wsOpened } from '../helpers/ws-client.js';
import { EVENT_MS, scaled, within } from '../helpers/wait.js';

const PROMETHEUS_TEXT = 'text/plain; version=0.0.4; charset=utf-8';
const ADMIN_TOKEN = 'metrics-test-admin-token-0123456789';

let origin: Origin;
let upgrades: UpgradeOrigin;
let stack: Stack;
let agentHealth = '';

before(async () => {
  origin = await startOrigin('main');
  upgrades = await startUpgradeOrigin();
  stack = await Stack.start({
    routes: [
      { host: 'app.test', target: origin.url },
      { host: 'ws.test', target: upgrades.url },
      // Outside the agent's policy: refused there with TARGET_DENIED, a 502 here.
      { host: 'denied.test', target: 'http://127.0.0.1:9' },
      // Cluster `empty` has no agent: 503.
      { host: 'nobody.test', cluster: 'empty', target: origin.url },
    ],
    extraYaml: 'tunnel:\n  pingInterval: 200ms',
    admin: true,
    controllerEnv: { SLUICE_ADMIN_TOKEN: ADMIN_TOKEN },
    agent: false,
  });
  await stack.spawnAgent({
    tunnels: 2,
    allow: [`127.0.0.1:${origin.port}`, `127.0.0.1:${upgrades.port}`],
    args: ['--health-listen', '127.0.0.1:0', '--ping-interval', '200ms'],
  });
  const health = await stack.agent!.waitLine('the health listener', (l) => l.listener === 'health');
  agentHealth = String(health.url);
});

after(async () => {
  await stack?.stop();
  await origin?.close();
  await upgrades?.close();
});

// --- a small parser of the Prometheus text format ---

interface Scrape {
  /** `# TYPE` of each metric family. */
  types: Map<string, string>;
  /** Sample values by series key: the name and its labels sorted, e.g. `x{a="1",b="2"}`. */
  samples: Map<string, number>;
}

const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function parseMetrics(text: string): Scrape {
  const types = new Map<string, string>();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type !== null) types.set(type[1]!, type[2]!);
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m !== null, `a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, name, value] of (m[2] ?? '').matchAll(LABEL)) {
      labels[name!] = value!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    samples.set(seriesKey(m[1]!, labels), Number(m[3]));
  }
  return { types, samples };
}

function seriesKey(name: string, labels: Record<string, string> = {}): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`);
  return parts.length === 0 ? name : `${name}{${parts.join(',')}}`;
}

/** A sample's value; 0 when the series is absent (a counter not yet incremented). */
function value(scrape: Scrape, name: string, labels: Record<string, string> = {}): number {
  return scrape.samples.get(seriesKey(name, labels)) ?? 0;
}

/** Every series of `name`, with its labels as written. */
function series(scrape: Scrape, name: string): string[] {
  return [...scrape.samples.keys()].filter((k) => k === name || k.startsWith(`${name}{`));
}

async function scrape(base: string): Promise<Scrape> {
  const res = await fetch(`${base}/metrics`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), PROMETHEUS_TEXT);
  return parseMetrics(await res.text());
}

/**
 * Scrapes until `check` holds. For what a process updates a moment after the client saw its answer
 * (the agent counts a stream once both its ends closed): each round trip paces the next, and the loop
 * is bounded in count and time.
 */
async function scrapeUntil(base: string, what: string, check: (s: Scrape) => boolean): Promise<Scrape> {
  const deadline = Date.now() + scaled(EVENT_MS);
  let last: Scrape | undefined;
  for (let i = 0; i < 2_000 && Date.now() < deadline; i++) {
    last = await scrape(base);
    if (check(last)) return last;
  }
  const seen = last === undefined ? '' : [...last.samples].filter(([k]) => k.startsWith('sluice_'));
  throw new Error(`gave up waiting for ${what}; last scrape: ${JSON.stringify(seen)}`);
}

/** Waits for the controller's log line of each request id: its metrics are counted right after it. */
async function logged(ids: string[]): Promise<LogLine[]> {
  return Promise.all(
    ids.map((id) => stack.controller.waitLine(`the request line of ${id}`, (l) => l.requestId === id)),
  );
}

let seq = 0;
const nextId = (what: string): string => `metrics-${what}-${++seq}`;

describe('controller /metrics', () => {
  test('answers the text format with the process metrics and the tunnels of each cluster', async () => {
    const s = await scrapeUntil(stack.adminUrl, 'a ping round trip on both tunnels', (m) => {
      return series(m, 'sluice_tunnel_rtt_seconds').length === 2;
    });
    // prom-client's process metrics, from this controller's own registry.
    assert.ok(value(s, 'process_cpu_user_seconds_total') > 0);
    assert.ok(value(s, 'nodejs_heap_size_used_bytes') > 0);
    assert.ok(s.types.has('nodejs_eventloop_lag_seconds'));

    assert.equal(s.types.get('sluice_tunnels_up'), 'gauge');
    assert.equal(value(s, 'sluice_tunnels_up', { cluster: 'c1' }), 2);
    // A known cluster without a tunnel shows 0, so that an alert can fire on it.
    assert.equal(s.samples.get(seriesKey('sluice_tunnels_up', { cluster: 'empty' })), 0);
    const tunnels = (await (
      await fetch(`${stack.adminUrl}/api/tunnels`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    ).json()) as { tunnels: unknown[] };
    assert.equal(tunnels.tunnels.length, 2, 'as many as the admin API lists');

    for (const key of series(s, 'sluice_tunnel_rtt_seconds')) {
      assert.match(
        key,
        /^sluice_tunnel_rtt_seconds\{agent="e2e",cluster="c1",replica="[^"]+",tunnel="[01]"\}$/,
      );
      const rtt = s.samples.get(key)!;
      assert.ok(rtt >= 0 && rtt < 1, `a loopback round trip in seconds: ${rtt}`);
    }
    assert.equal(s.types.get('sluice_requests_total'), 'counter');
    assert.equal(s.types.get('sluice_request_duration_seconds'), 'histogram');
    assert.equal(s.types.get('sluice_errors_total'), 'counter');
  });

  test('counts requests by cluster, route and status class, with their bytes and durations', async () => {
    const before = await scrape(stack.adminUrl);
    const ok = [nextId('ok'), nextId('ok'), nextId('ok')];
    const replies = [
      await ask({
        port: stack.port,
        host: 'app.test',
        path: '/status?code=200',
        headers: { 'x-request-id': ok[0]! },
      }),
      await ask({
        port: stack.port,
        host: 'app.test',
        path: '/status?code=201',
        headers: { 'x-request-id': ok[1]! },
      }),
      await ask({
        port: stack.port,
        host: 'app.test',
        method: 'POST',
        path: '/echo',
        body: 'twelve bytes',
        headers: { 'x-request-id': ok[2]! },
      }),
    ];
    assert.deepEqual(
      replies.map((r) => r.status),
      [200, 201, 200],
    );
    const ids = { noRoute: nextId('404'), denied: nextId('502'), nobody: nextId('503') };
    const noRoute = await ask({
      port: stack.port,
      host: 'nowhere.test',
      headers: { 'x-request-id': ids.noRoute },
    });
    const denied = await ask({
      port: stack.port,
      host: 'denied.test',
      headers: { 'x-request-id': ids.denied },
    });
    const nobody = await ask({
      port: stack.port,
      host: 'nobody.test',
      headers: { 'x-request-id': ids.nobody },
    });
    assert.deepEqual([noRoute.status, denied.status, nobody.status], [404, 502, 503]);
    await logged([...ok, ids.noRoute, ids.denied, ids.nobody]);

    const after = await scrape(stack.adminUrl);
    const moved = (name: string, labels: Record<string, string>): number =>
      value(after, name, labels) - value(before, name, labels);
    const requests = (cluster: string, route: string, status: string): number =>
      moved('sluice_requests_total', { cluster, route, status });
    assert.equal(requests('c1', 'app.test', '2xx'), 3);
    assert.equal(requests('', '', '4xx'), 1, 'no route: no cluster, no route label');
    assert.equal(requests('c1', 'denied.test', '5xx'), 1);
    assert.equal(requests('empty', 'nobody.test', '5xx'), 1);

    const c1 = { cluster: 'c1' };
    assert.equal(moved('sluice_request_duration_seconds_count', c1), 4);
    assert.ok(moved('sluice_request_duration_seconds_sum', c1) > 0);
    assert.equal(
      moved('sluice_request_duration_seconds_bucket', { ...c1, le: '+Inf' }),
      4,
      'every observation falls in +Inf',
    );
    assert.equal(moved('sluice_bytes_in_total', c1), 'twelve bytes'.length);
    const c1Bytes = [...replies, denied].reduce((n, r) => n + r.body.length, 0);
    assert.equal(moved('sluice_bytes_out_total', c1), c1Bytes, 'response bodies and the error page');
    assert.equal(moved('sluice_bytes_out_total', { cluster: 'empty' }), nobody.body.length);

    // The agent refused the denied target with a reset: the controller's stream failed with it.
    assert.equal(moved('sluice_errors_total', { code: 'SLUICE_ERR_STREAM_RESET' }), 1);
  });

  test('a request the client gives up on counts with status none', async () => {
    const before = await scrape(stack.adminUrl);
    const id = nextId('hang');
    await abandon(id);
    await logged([id]);
    const after = await scrape(stack.adminUrl);
    const labels = { cluster: 'c1', route: 'app.test', status: 'none' };
    assert.equal(
      value(after, 'sluice_requests_total', labels) - value(before, 'sluice_requests_total', labels),
      1,
    );
  });
});

describe('agent /metrics', () => {
  test('answers the text format with its tunnels and their round trips', async () => {
    const s = await scrapeUntil(agentHealth, 'a ping round trip on both tunnels', (m) => {
      return series(m, 'sluice_agent_tunnel_rtt_seconds').length === 2;
    });
    assert.ok(value(s, 'process_resident_memory_bytes') > 0);
    assert.equal(s.types.get('sluice_agent_tunnels_up'), 'gauge');
    assert.equal(value(s, 'sluice_agent_tunnels_up'), 2);
    assert.deepEqual(series(s, 'sluice_agent_tunnel_rtt_seconds').sort(), [
      'sluice_agent_tunnel_rtt_seconds{tunnel="0"}',
      'sluice_agent_tunnel_rtt_seconds{tunnel="1"}',
    ]);
  });

  test('counts streams by kind and result, and a stream the controller reset as an error', async () => {
    const before = await scrape(agentHealth);
    const streams = (s: typeof before, result: string): number =>
      value(s, 'sluice_agent_streams_total', { kind: 'http', result });
    const reset = (s: typeof before): number =>
      value(s, 'sluice_agent_errors_total', { code: 'SLUICE_ERR_STREAM_RESET' });

    const ok = await ask({ port: stack.port, host: 'app.test', path: '/status?code=200' });
    const missing = await ask({ port: stack.port, host: 'app.test', path: '/nope' });
    const denied = await ask({ port: stack.port, host: 'denied.test' });
    assert.deepEqual([ok.status, missing.status, denied.status], [200, 404, 502]);
    // The client leaves while the origin holds the request: the controller resets the stream.
    const id = nextId('agent-hang');
    await abandon(id);
    await within(origin.whenAborted(id), EVENT_MS, 'the origin to see the request cut');

    const after = await scrapeUntil(agentHealth, 'the four streams counted', (s) => {
      return (
        streams(s, '2xx') - streams(before, '2xx') === 1 &&
        streams(s, '4xx') - streams(before, '4xx') === 1 &&
        streams(s, 'target_denied') - streams(before, 'target_denied') === 1 &&
        streams(s, 'aborted') - streams(before, 'aborted') === 1
      );
    });
    assert.equal(reset(after) - reset(before), 1, 'the CANCEL from the controller');
    assert.equal(after.types.get('sluice_agent_errors_total'), 'counter');
  });
});

describe('an upgrade held open', () => {
  test('shows in the upgrade and stream gauges on both sides, and counts as 1xx once closed', async () => {
    const before = { controller: await scrape(stack.adminUrl), agent: await scrape(agentHealth) };
    const id = nextId('ws');
    const ws = wsConnect({ port: stack.port, host: 'ws.test' }, '/metrics-ws', {
      headers: { 'x-request-id': id },
    });
    await wsOpened(ws);
    assert.equal((await wsEcho(ws, 'ping')).data.toString(), 'ping');

    const open = await scrapeUntil(stack.adminUrl, 'one stream open', (s) => {
      return value(s, 'sluice_streams_open', { cluster: 'c1' }) === 1;
    });
    assert.equal(value(open, 'sluice_upgrades_open'), 1);
    assert.equal(value(open, 'sluice_requests_in_flight'), 1);
    const agentOpen = await scrapeUntil(agentHealth, 'one stream open', (s) => {
      return value(s, 'sluice_agent_streams_open') === 1;
    });
    assert.equal(value(agentOpen, 'sluice_agent_streams_open'), 1);

    const closed = wsClosed(ws);
    ws.close(1000);
    await within(closed, EVENT_MS, 'the WebSocket to close');
    await logged([id]);
    const after = await scrape(stack.adminUrl);
    assert.equal(value(after, 'sluice_upgrades_open'), 0);
    const labels = { cluster: 'c1', route: 'ws.test', status: '1xx' };
    assert.equal(
      value(after, 'sluice_requests_total', labels) -
        value(before.controller, 'sluice_requests_total', labels),
      1,
    );
    // An upgrade's lifetime is not a request duration.
    assert.equal(
      value(after, 'sluice_request_duration_seconds_count', { cluster: 'c1' }),
      value(before.controller, 'sluice_request_duration_seconds_count', { cluster: 'c1' }),
    );
    const upgraded = { kind: 'upgrade', result: '1xx' };
    await scrapeUntil(agentHealth, 'the upgrade counted', (s) => {
      return (
        value(s, 'sluice_agent_streams_total', upgraded) -
          value(before.agent, 'sluice_agent_streams_total', upgraded) ===
        1
      );
    });
  });
});

describe('tunnel errors', () => {
  test('an agent with a wrong token counts SLUICE_ERR_UNAUTHORIZED on both sides', async () => {
    const unauthorized = { code: 'SLUICE_ERR_UNAUTHORIZED' };
    const before = await scrape(stack.adminUrl);
    const seen = stack.controller.lines.length;
    const agent = await stack.spawnAgent({
      token: 'not-a-token-of-any-cluster',
      tunnels: 1,
      args: ['--health-listen', '127.0.0.1:0'],
      wait: false,
    });
    try {
      const health = await agent.waitLine('the health listener', (l) => l.listener === 'health');
      await agent.waitLine('the refusal', (l) => l.event === 'tunnel-failed');
      const s = await scrape(String(health.url));
      assert.equal(value(s, 'sluice_agent_errors_total', unauthorized), 1);
      assert.equal(value(s, 'sluice_agent_tunnels_up'), 0);
      await stack.controller.waitLine(
        'the failed handshake',
        (l) => stack.controller.lines.indexOf(l) >= seen && l.msg === 'tunnel handshake failed',
      );
      const after = await scrape(stack.adminUrl);
      assert.equal(
        value(after, 'sluice_errors_total', unauthorized) -
          value(before, 'sluice_errors_total', unauthorized),
        1,
      );
    } finally {
      await agent.stop();
    }
  });
});

/** Sends a request to `/hang` and leaves once the origin has it. */
async function abandon(id: string): Promise<void> {
  const req = request({
    host: '127.0.0.1',
    port: stack.port,
    path: '/hang',
    headers: { host: 'app.test', 'x-request-id': id },
    agent: false,
  });
  req.on('error', () => {});
  req.end();
  await within(origin.whenRequested(id), EVENT_MS, 'the origin to get the request');
  req.destroy();
}
