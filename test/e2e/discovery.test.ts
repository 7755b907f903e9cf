// Route discovery end to end: a fake Kubernetes API server in this process (helpers/fake-kube.ts; no
// kube-apiserver runs on these machines), a real `sluice agent --discover` child watching it through
// @kubernetes/client-node, and a real controller child. Each change to the fake cluster must show in
// what the controller serves: a request through the public listener, the tunnel and the agent to an
// origin here. The Services' in-cluster names resolve to 127.0.0.1 through helpers/cluster-dns.ts in the
// agent, which the test allows by exact name, as an operator would allow a Service on the agent's host.
//
// The tests run in order against one stack, each starting from what the one before left.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rmSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { FakeKube, ingress, type KubeObject, service } from '../helpers/fake-kube.js';
import {
  ask,
  type LogLine,
  type Reply,
  type SluiceProcess,
  Stack,
  tempDir,
  writeFile,
} from '../helpers/sluice-procs.js';
import { scaled, waitFor } from '../helpers/wait.js';

const DNS_HELPER = fileURLToPath(new URL('../helpers/cluster-dns.js', import.meta.url));
const GRACE_MS = 4000;
const ADDRESS = 'edge.example.test';

interface TestOrigin {
  name: string;
  port: number;
  server: Server;
}

/** An origin that answers every request with its name and the path it got. */
async function startNamed(name: string): Promise<TestOrigin> {
  const server = createServer((req, res) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ origin: name, url: req.url }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { name, port: (server.address() as AddressInfo).port, server };
}

let kube: FakeKube;
let stack: Stack;
let web: TestOrigin;
let api: TestOrigin;
let dir = '';
let kubeconfig = '';

const svcName = (o: TestOrigin): string => `${o.name}.shop.svc.cluster.local`;

async function startAgent(): Promise<SluiceProcess> {
  return stack.spawnAgent({
    tunnels: 2,
    allow: [`${svcName(web)}:${web.port}`, `${svcName(api)}:${api.port}`],
    args: ['--discover', '--kubeconfig', kubeconfig, '--health-listen', '127.0.0.1:0'],
    env: {
      NODE_OPTIONS: `--import=${DNS_HELPER}`,
      SLUICE_TEST_CLUSTER_DNS: JSON.stringify({ [svcName(web)]: '127.0.0.1', [svcName(api)]: '127.0.0.1' }),
    },
  });
}

function get(host: string, path = '/'): Promise<Reply> {
  return ask({ port: stack.port, host, path });
}

function servedBy(reply: Reply): string | undefined {
  if (reply.status !== 200) return undefined;
  return (JSON.parse(reply.body.toString('utf8')) as { origin: string }).origin;
}

/**
 * Asks until the answer satisfies `check`, within a bound; returns how long that took. Routes have no
 * event a test can see from outside the controller, so this polls, every 25 ms.
 */
async function until(
  what: string,
  host: string,
  path: string,
  check: (r: Reply) => boolean,
): Promise<number> {
  const started = Date.now();
  const deadline = started + scaled(30_000);
  let last: Reply | undefined;
  for (let i = 0; i < 100_000; i++) {
    last = await get(host, path);
    if (check(last)) return Date.now() - started;
    if (Date.now() > deadline) break;
    await sleep(25);
  }
  throw new Error(
    `timed out waiting for ${what}; last answer ${last?.status} ${last?.body.toString('utf8')}`,
  );
}

function firstPath(o: KubeObject): {
  path: string;
  backend: { service: { name: string; port: { number: number } } };
} {
  const spec = o.spec as unknown as {
    rules: {
      http: { paths: { path: string; backend: { service: { name: string; port: { number: number } } } }[] };
    }[];
  };
  return spec.rules[0]!.http.paths[0]!;
}

const one = (host: string, o: TestOrigin, path = '/') => [
  { host, paths: [{ path, service: o.name, port: o.port }] },
];

function statusOf(object: string): string | undefined {
  const write = kube.statusWrites.filter((w) => w.object === object).at(-1);
  const status = write?.status as { loadBalancer?: { ingress?: { hostname?: string }[] } } | undefined;
  return status?.loadBalancer?.ingress?.[0]?.hostname;
}

const event =
  (name: string, fields: Record<string, unknown> = {}) =>
  (l: LogLine): boolean =>
    l.event === name && Object.entries(fields).every(([k, v]) => l[k] === v);

describe('route discovery end to end', () => {
  before(async () => {
    kube = await FakeKube.start();
    web = await startNamed('web');
    api = await startNamed('api');
    kube.create('services', service('shop', 'web', { http: web.port }));
    kube.create('services', service('shop', 'api', { http: api.port }));
    dir = tempDir();
    kubeconfig = writeFile(dir, 'kubeconfig', kube.kubeConfigYaml());
    stack = await Stack.start({
      // A config route holds one host the cluster may otherwise claim.
      routes: [{ host: 'taken.shop.example.test', target: 'http://127.0.0.1:9' }],
      hosts: ['*.shop.example.test', 'exact.example.test'],
      extraYaml: `discovery:\n  gracePeriod: ${GRACE_MS}ms\n  address: ${ADDRESS}`,
      admin: true,
      agent: false,
    });
    await startAgent();
  });

  after(async () => {
    await stack?.stop();
    await kube?.close();
    for (const o of [web, api]) o?.server.close();
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  test('an Ingress created is served within 2 s, and its status gets the public address', async () => {
    const created = Date.now();
    kube.create('ingresses', ingress('shop', 'web', one('app.shop.example.test', web, '/api')));
    await until('the route', 'app.shop.example.test', '/api/x', (r) => servedBy(r) === 'web');
    const ms = Date.now() - created;
    assert.ok(ms < scaled(2000), `served after ${ms} ms`);
    const reply = await get('app.shop.example.test', '/api/x?q=1');
    assert.deepEqual(JSON.parse(reply.body.toString('utf8')), { origin: 'web', url: '/api/x?q=1' });
    // Only its path: the rest of the host is no route.
    assert.equal((await get('app.shop.example.test', '/other')).status, 404);
    await waitFor('the status', () => statusOf('shop/web') === ADDRESS);
    await stack.controller.waitLine(
      'the stored routes',
      event('discovery-routes', { cluster: 'c1', routes: 1 }),
    );
  });

  test('changing its path and backend changes the routing', async () => {
    kube.update('ingresses', 'shop', 'web', (o) => {
      const p = firstPath(o);
      p.path = '/v2';
      p.backend.service = { name: 'api', port: { number: api.port } };
    });
    await until('the new path', 'app.shop.example.test', '/v2/items', (r) => servedBy(r) === 'api');
    await until('the old path gone', 'app.shop.example.test', '/api/x', (r) => r.status === 404);
  });

  test('a second and a hundredth Ingress are served, and go when deleted', async () => {
    for (let i = 1; i <= 100; i++) {
      kube.create(
        'ingresses',
        ingress('shop', `bulk${i}`, one(`app${i}.shop.example.test`, i % 2 === 0 ? web : api)),
      );
    }
    await until('the hundredth', 'app100.shop.example.test', '/', (r) => servedBy(r) === 'web');
    assert.equal(servedBy(await get('app2.shop.example.test')), 'web');
    assert.equal(servedBy(await get('app99.shop.example.test')), 'api');
    for (let i = 1; i <= 100; i++) kube.remove('ingresses', 'shop', `bulk${i}`);
    await until('the hundredth gone', 'app100.shop.example.test', '/', (r) => r.status === 404);
    assert.equal((await get('app2.shop.example.test')).status, 404);
  });

  test('deleting the Ingress removes its route', async () => {
    kube.remove('ingresses', 'shop', 'web');
    await until('no route', 'app.shop.example.test', '/v2/items', (r) => r.status === 404);
  });

  test('a host outside clusters[].hosts, or one a config route holds, is refused: logged, counted, status untouched', async () => {
    kube.create('ingresses', ingress('shop', 'outside', one('app.other.test', web)));
    kube.create('ingresses', ingress('shop', 'taken', one('taken.shop.example.test', web, '/mine')));
    kube.create('ingresses', ingress('shop', 'good', one('good.shop.example.test', web)));
    kube.create('ingresses', ingress('shop', 'exact', one('exact.example.test', api)));
    await until('the good one', 'good.shop.example.test', '/', (r) => servedBy(r) === 'web');
    assert.equal(servedBy(await get('exact.example.test')), 'api');
    const outside = await stack.controller.waitLine(
      'the refusal',
      event('discovery-refused', { cluster: 'c1', host: 'app.other.test' }),
    );
    assert.equal(outside.object, 'ingress shop/outside');
    assert.match(
      String(outside.reason),
      /outside the hosts cluster c1 may claim \(\*\.shop\.example\.test, exact\.example\.test\)/,
    );
    const taken = await stack.controller.waitLine(
      'the conflict',
      event('discovery-refused', { cluster: 'c1', host: 'taken.shop.example.test' }),
    );
    assert.match(String(taken.reason), /already claimed by config route/);
    // The agent hears of both and logs them.
    await stack.agent!.waitLine('the agent side', event('discovery-refused', { host: 'app.other.test' }));
    await stack.agent!.waitLine(
      'the agent side',
      event('discovery-refused', { host: 'taken.shop.example.test' }),
    );
    assert.equal((await get('app.other.test')).status, 404);
    assert.notEqual(servedBy(await get('taken.shop.example.test', '/mine')), 'web');
    // The accepted ones get the address; the refused ones are left alone, even once the next snapshot is out.
    await waitFor(
      'the good status',
      () => statusOf('shop/good') === ADDRESS && statusOf('shop/exact') === ADDRESS,
    );
    kube.create('ingresses', ingress('shop', 'later', one('later.shop.example.test', web)));
    await waitFor('the later status', () => statusOf('shop/later') === ADDRESS);
    assert.equal(statusOf('shop/outside'), undefined);
    assert.equal(statusOf('shop/taken'), undefined);
    // Each refusal is logged and counted once however many snapshots still carry it.
    const lines = stack.controller.lines.filter(event('discovery-refused', { host: 'app.other.test' }));
    assert.equal(lines.length, 1);
    const controllerMetrics = await (await fetch(`${stack.adminUrl}/metrics`)).text();
    assert.match(
      controllerMetrics,
      /^sluice_discovery_refused_total\{cluster="c1",reason="not_allowed"\} 1$/m,
    );
    assert.match(controllerMetrics, /^sluice_discovery_refused_total\{cluster="c1",reason="conflict"\} 1$/m);
    const health = await stack.agent!.waitLine('the health listener', (l) => l.listener === 'health');
    const agentMetrics = await (await fetch(`${String(health.url)}/metrics`)).text();
    assert.match(agentMetrics, /^sluice_agent_discovery_conflicts_total\{kind="refused"\} 2$/m);
    assert.match(agentMetrics, /^sluice_agent_discovery_conflicts_total\{kind="claimed_twice"\} 0$/m);
  });

  test('a watch that breaks, or meets 410 Gone, resumes without missing a change', async () => {
    await waitFor('both watches', () => kube.openWatches() >= 2);
    // Ended cleanly by the server, then cut: each time a change made meanwhile still arrives.
    kube.breakWatches('end');
    kube.create('ingresses', ingress('shop', 'w0', one('w0.shop.example.test', api)));
    await until('w0', 'w0.shop.example.test', '/', (r) => servedBy(r) === 'api');
    await waitFor('both watches again', () => kube.openWatches() >= 2);
    kube.breakWatches('destroy');
    kube.create('ingresses', ingress('shop', 'w1', one('w1.shop.example.test', web)));
    await until('w1', 'w1.shop.example.test', '/', (r) => servedBy(r) === 'web');
    await waitFor('both watches again', () => kube.openWatches() >= 2);
    kube.breakWatches('destroy');
    // Made while nobody watched, then the history forgotten: only a new list sees them.
    kube.create('ingresses', ingress('shop', 'w2', one('w2.shop.example.test', api)));
    kube.remove('ingresses', 'shop', 'w1');
    kube.expire(kube.resourceVersion, 'status');
    await until('w2', 'w2.shop.example.test', '/', (r) => servedBy(r) === 'api');
    await until('w1 gone', 'w1.shop.example.test', '/', (r) => r.status === 404);
    assert.ok(kube.lists('ingresses').length >= 2, 'listed again');
  });

  test("the cluster's routes go once its last tunnel has been gone for the grace period, and come back with it", async () => {
    const downs = stack.controller.lines.filter(event('tunnel-down', { tunnels: 0 })).length;
    await stack.agent!.stop();
    const down = await stack.controller
      .waitCount('the last tunnel down', event('tunnel-down', { tunnels: 0 }), downs + 1)
      .then(() => stack.controller.lines.filter(event('tunnel-down', { tunnels: 0 })).at(-1)!);
    // Kept meanwhile: no tunnel to serve them (503), but still the cluster's.
    const kept = await get('good.shop.example.test');
    if (Date.now() - Number(down.time) < GRACE_MS - 500) assert.equal(kept.status, 503);
    const expired = await stack.controller.waitLine(
      'the removal',
      event('discovery-expired', { cluster: 'c1' }),
      scaled(60_000),
    );
    const afterMs = Number(expired.time) - Number(down.time);
    assert.ok(afterMs >= GRACE_MS, `removed ${afterMs} ms after the last tunnel went`);
    assert.equal((await get('good.shop.example.test')).status, 404);
    await startAgent();
    await until('back', 'good.shop.example.test', '/', (r) => servedBy(r) === 'web');
  });

  test('a tunnel that comes back within the grace period keeps the routes', async () => {
    const cancelled = stack.controller.lines.filter(event('discovery-grace-cancelled')).length;
    await stack.agent!.stop();
    await startAgent();
    await stack.controller.waitCount(
      'the cancel',
      event('discovery-grace-cancelled', { cluster: 'c1' }),
      cancelled + 1,
    );
    assert.equal(servedBy(await get('good.shop.example.test')), 'web');
  });

  test('a config reload (a restart with another file) keeps the agent routes; the grace period still applies', async () => {
    await stack.agent!.stop();
    await stack.controller.stop();
    // The file's route is gone: the seed drops it, and must leave the agent's routes alone.
    await stack.startController({ routes: [] });
    const started = Date.now();
    const kept = await get('good.shop.example.test');
    if (Date.now() - started < GRACE_MS) assert.equal(kept.status, 503, 'kept, with no agent to serve it');
    await stack.controller.waitLine(
      'the removal',
      event('discovery-expired', { cluster: 'c1' }),
      scaled(60_000),
    );
    assert.equal((await get('good.shop.example.test')).status, 404);
    // The agent comes back: its snapshot, now also free to claim the host the file gave up.
    await startAgent();
    await until('good back', 'good.shop.example.test', '/', (r) => servedBy(r) === 'web');
    await until('taken now ours', 'taken.shop.example.test', '/mine', (r) => servedBy(r) === 'web');
  });
});
