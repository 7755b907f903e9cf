// Route discovery (agent/discovery.ts) against a fake Kubernetes API server (helpers/fake-kube.ts),
// driven by the real @kubernetes/client-node: no kube-apiserver runs on these machines. Each test
// changes the fake cluster and waits for the snapshot that change must produce; watches that end, die
// or meet 410 Gone must resume without losing a change made while they were down.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { V1Ingress } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { computeRoutes, Discovery, loadKubeConfig, type RouteSnapshot } from '../../src/agent/discovery.js';
import { TargetPolicy } from '../../src/agent/policy.js';
import { decodeRouteSnapshot, encodeRouteSnapshot } from '../../src/protocol/route-snapshot.js';
import { FakeKube, ingress, type KubeObject, service } from '../helpers/fake-kube.js';
import { captureLog, type CapturedLog } from '../helpers/log-capture.js';
import { scaled, waitFor } from '../helpers/wait.js';

const SVC = (name: string, ns: string, port: number): string =>
  `http://${name}.${ns}.svc.cluster.local:${port}`;

type LoadBalancerStatus = { loadBalancer?: { ingress?: { hostname?: string }[] } };

/** The first path of an Ingress's first rule, to change in place. */
function firstPath(o: KubeObject): { path: string } {
  const spec = o.spec as unknown as { rules: { http: { paths: { path: string }[] } }[] };
  return spec.rules[0]!.http.paths[0]!;
}

let kube: FakeKube;
let log: CapturedLog;
let discovery: Discovery;
/** Every snapshot emitted, in order. */
let seen: RouteSnapshot[];

async function startDiscovery(namespace: string | null = null): Promise<void> {
  log = captureLog('debug');
  seen = [];
  discovery = new Discovery({ kubeConfig: kube.kubeConfig(), namespace, logger: log.logger });
  discovery.on('routes', (routes) => seen.push(routes));
  discovery.start();
  await discovery.synced;
}

/** Waits until the current snapshot satisfies `check`; returns how long that took. */
async function until(what: string, check: (routes: RouteSnapshot) => boolean): Promise<number> {
  const started = Date.now();
  await waitFor(what, () => check(discovery.routes));
  return Date.now() - started;
}

function routeOf(host: string, path = '/'): RouteSnapshot[number] | undefined {
  return discovery.routes.find((r) => r.host === host && r.path === path);
}

describe('discovery against a fake API server', () => {
  beforeEach(async () => {
    kube = await FakeKube.start();
  });
  afterEach(async () => {
    discovery?.close();
    await kube?.close();
  });

  test('an empty cluster gives one empty snapshot', async () => {
    await startDiscovery();
    assert.deepEqual(seen, [[]]);
    assert.equal(kube.lists('ingresses').length, 1);
    assert.equal(kube.lists('services').length, 1);
    // The informers watch from the lists' version, with bookmarks asked for.
    await waitFor('both watches', () => kube.openWatches() === 2);
    const watch = kube.watches('ingresses')[0]!;
    assert.equal(watch.path, '/apis/networking.k8s.io/v1/ingresses');
    assert.equal(watch.query.allowWatchBookmarks, 'true');
    assert.equal(watch.query.resourceVersion, String(kube.resourceVersion));
  });

  test('an Ingress created is in a snapshot within 2 s; its path changed, then deleted', async () => {
    await startDiscovery();
    kube.create(
      'ingresses',
      ingress('shop', 'web', [
        { host: 'app.example.test', paths: [{ path: '/api', service: 'web', port: 8080 }] },
      ]),
    );
    const ms = await until('the route', () => routeOf('app.example.test', '/api') !== undefined);
    assert.ok(ms < scaled(2000), `the snapshot took ${ms} ms`);
    assert.deepEqual(discovery.routes, [
      {
        host: 'app.example.test',
        path: '/api',
        target: SVC('web', 'shop', 8080),
        source: 'ingress',
        object: 'shop/web',
      },
    ]);
    kube.update('ingresses', 'shop', 'web', (o) => {
      firstPath(o).path = '/v2/';
    });
    await until('the new path', () => routeOf('app.example.test', '/v2') !== undefined);
    assert.equal(discovery.routes.length, 1, 'the old path is gone');
    kube.remove('ingresses', 'shop', 'web');
    await until('no routes', (r) => r.length === 0);
    // Each change made one snapshot: a batch never repeats the one before.
    for (let i = 1; i < seen.length; i++) assert.notDeepEqual(seen[i], seen[i - 1]);
  });

  test('a second and a hundredth Ingress', async () => {
    await startDiscovery();
    for (let i = 1; i <= 100; i++) {
      kube.create(
        'ingresses',
        ingress('ns' + (i % 7), `app${i}`, [
          { host: `app${i}.example.test`, paths: [{ service: `svc${i}`, port: 80 }] },
        ]),
      );
      if (i === 2) await until('two routes', (r) => r.length === 2);
    }
    await until('a hundred routes', (r) => r.length === 100);
    assert.deepEqual(routeOf('app100.example.test'), {
      host: 'app100.example.test',
      path: '/',
      target: SVC('svc100', 'ns2', 80),
      source: 'ingress',
      object: 'ns2/app100',
    });
    // Sorted by host, and the hundred creations came in a few batches, not a hundred snapshots.
    const hosts = discovery.routes.map((r) => r.host);
    assert.deepEqual(hosts, [...hosts].sort());
    assert.ok(seen.length < 50, `${seen.length} snapshots for 100 creations`);
  });

  test("a named port resolves through the Service's ports, and follows the Service", async () => {
    kube.create('services', service('shop', 'web', { http: 8080, metrics: 9090 }));
    await startDiscovery();
    kube.create(
      'ingresses',
      ingress('shop', 'web', [{ host: 'app.example.test', paths: [{ service: 'web', port: 'http' }] }]),
    );
    await until('the route', () => routeOf('app.example.test')?.target === SVC('web', 'shop', 8080));
    kube.update('services', 'shop', 'web', (o) => {
      (o.spec as unknown as { ports: { port: number }[] }).ports[0]!.port = 8081;
    });
    await until('the new port', () => routeOf('app.example.test')?.target === SVC('web', 'shop', 8081));
    // A port name the Service lacks: skipped, logged with the object.
    kube.create(
      'ingresses',
      ingress('shop', 'bad', [{ host: 'bad.example.test', paths: [{ service: 'web', port: 'grpc' }] }]),
    );
    await waitFor('the skip line', () =>
      log.events('discovery-skipped').some((l) => l.object === 'ingress shop/bad'),
    );
    assert.match(String(log.events('discovery-skipped')[0]!.reason), /has no port named "grpc"/);
    assert.equal(routeOf('bad.example.test'), undefined);
  });

  test('a Service annotated sluice.dev/host is a route; port and path from its annotations', async () => {
    await startDiscovery();
    kube.create('services', service('shop', 'one', { http: 80 }, { 'sluice.dev/host': 'One.Example.Test' }));
    kube.create(
      'services',
      service(
        'shop',
        'two',
        { http: 80, admin: 9000 },
        { 'sluice.dev/host': 'two.example.test', 'sluice.dev/port': 'admin', 'sluice.dev/path': '/admin/' },
      ),
    );
    kube.create(
      'services',
      service(
        'shop',
        'three',
        { '': 7000 },
        { 'sluice.dev/host': 'three.example.test', 'sluice.dev/port': '7000' },
      ),
    );
    kube.create('services', service('shop', 'plain', { http: 80 }));
    await until('three routes', (r) => r.length === 3);
    assert.deepEqual(discovery.routes, [
      {
        host: 'one.example.test',
        path: '/',
        target: SVC('one', 'shop', 80),
        source: 'service',
        object: 'shop/one',
      },
      {
        host: 'three.example.test',
        path: '/',
        target: SVC('three', 'shop', 7000),
        source: 'service',
        object: 'shop/three',
      },
      {
        host: 'two.example.test',
        path: '/admin',
        target: SVC('two', 'shop', 9000),
        source: 'service',
        object: 'shop/two',
      },
    ]);
    assert.deepEqual(discovery.allowedTargets(), [
      'one.shop.svc.cluster.local:80',
      'three.shop.svc.cluster.local:7000',
      'two.shop.svc.cluster.local:9000',
    ]);
    // The annotation removed: the route goes.
    kube.update('services', 'shop', 'one', (o) => {
      delete o.metadata.annotations;
    });
    await until('two routes', (r) => r.length === 2 && routeOf('one.example.test') === undefined);
  });

  test('an Ingress of another class, or of none, is ignored', async () => {
    await startDiscovery();
    kube.create(
      'ingresses',
      ingress(
        'shop',
        'nginx',
        [{ host: 'nginx.example.test', paths: [{ service: 'web', port: 80 }] }],
        'nginx',
      ),
    );
    kube.create(
      'ingresses',
      ingress('shop', 'none', [{ host: 'none.example.test', paths: [{ service: 'web', port: 80 }] }], null),
    );
    kube.create(
      'ingresses',
      ingress('shop', 'ours', [{ host: 'ours.example.test', paths: [{ service: 'web', port: 80 }] }]),
    );
    await until('our route', () => routeOf('ours.example.test') !== undefined);
    assert.deepEqual(
      discovery.routes.map((r) => r.host),
      ['ours.example.test'],
    );
    // Moved to our class: now it is ours.
    kube.update('ingresses', 'shop', 'nginx', (o) => {
      o.spec!.ingressClassName = 'sluice';
    });
    await until('the moved route', () => routeOf('nginx.example.test') !== undefined);
  });

  for (const how of ['end', 'destroy'] as const) {
    test(`a watch the server ${how === 'end' ? 'ends' : 'cuts'} is resumed without missing a change made meanwhile`, async () => {
      kube.create(
        'ingresses',
        ingress('shop', 'a', [{ host: 'a.example.test', paths: [{ service: 'a', port: 80 }] }]),
      );
      await startDiscovery();
      await waitFor('both watches', () => kube.openWatches() === 2);
      const watchesBefore = kube.watches('ingresses').length;
      // Nobody watches while these happen: the resumed watch must replay them from its version.
      assert.equal(kube.breakWatches(how), 2);
      kube.create(
        'ingresses',
        ingress('shop', 'b', [{ host: 'b.example.test', paths: [{ service: 'b', port: 80 }] }]),
      );
      kube.remove('ingresses', 'shop', 'a');
      await until('b, and a gone', (r) => r.length === 1 && routeOf('b.example.test') !== undefined);
      assert.ok(kube.watches('ingresses').length > watchesBefore, 'watched again');
      // A watch that resumes does so from its version: no list needed.
      assert.equal(kube.lists('ingresses').length, 1);
      assert.equal(discovery.stats.relists, 0);
      if (how === 'destroy') {
        assert.ok(discovery.stats.watchErrors >= 1);
        assert.ok(log.events('discovery-watch-error').length >= 1);
      }
      // And it still follows changes after that.
      kube.create(
        'ingresses',
        ingress('shop', 'c', [{ host: 'c.example.test', paths: [{ service: 'c', port: 80 }] }]),
      );
      await until('c', () => routeOf('c.example.test') !== undefined);
    });
  }

  for (const as of ['event', 'status'] as const) {
    test(`410 Gone (${as === 'event' ? 'an ERROR event' : 'HTTP 410'}) makes the informer list again, and the state is right`, async () => {
      kube.create(
        'ingresses',
        ingress('shop', 'a', [{ host: 'a.example.test', paths: [{ service: 'a', port: 80 }] }]),
      );
      kube.create(
        'ingresses',
        ingress('shop', 'b', [{ host: 'b.example.test', paths: [{ service: 'b', port: 80 }] }]),
      );
      await startDiscovery();
      await waitFor('both watches', () => kube.openWatches() === 2);
      kube.breakWatches('destroy');
      // Changes while down, then the history they are in forgotten: only a new list can see them.
      kube.remove('ingresses', 'shop', 'a');
      kube.update('ingresses', 'shop', 'b', (o) => {
        firstPath(o).path = '/moved';
      });
      kube.create(
        'ingresses',
        ingress('shop', 'c', [{ host: 'c.example.test', paths: [{ service: 'c', port: 80 }] }]),
      );
      kube.expire(kube.resourceVersion, as);
      await until(
        'the relisted state',
        (r) =>
          r.length === 2 &&
          routeOf('b.example.test', '/moved') !== undefined &&
          routeOf('c.example.test') !== undefined,
      );
      assert.equal(kube.lists('ingresses').length, 2);
      assert.ok(discovery.stats.relists >= 1);
      kube.create(
        'ingresses',
        ingress('shop', 'd', [{ host: 'd.example.test', paths: [{ service: 'd', port: 80 }] }]),
      );
      await until('d after the relist', () => routeOf('d.example.test') !== undefined);
    });
  }

  test('410 Gone on an open watch (a server whose cache fell behind) relists too', async () => {
    await startDiscovery();
    await waitFor('both watches', () => kube.openWatches() === 2);
    kube.create(
      'ingresses',
      ingress('shop', 'a', [{ host: 'a.example.test', paths: [{ service: 'a', port: 80 }] }]),
    );
    await until('a', () => routeOf('a.example.test') !== undefined);
    kube.goneWatches();
    await waitFor(
      'a relist',
      () => kube.lists('ingresses').length === 2 && kube.openWatches('ingresses') === 1,
    );
    kube.remove('ingresses', 'shop', 'a');
    await until('a gone', (r) => r.length === 0);
  });

  test('a bookmark moves the version on, so a reconnect after compaction needs no list', async () => {
    await startDiscovery();
    await waitFor('both watches', () => kube.openWatches() === 2);
    // Changes of another kind move the shared version while the Ingress watch sees nothing.
    for (let i = 0; i < 5; i++) kube.create('services', service('other', `s${i}`, { http: 80 }));
    assert.equal(kube.bookmark(), 2);
    const rv = kube.resourceVersion;
    kube.expire(rv);
    // The bookmark goes out before the end of the stream, so the watch resumes from it, which is
    // within the history; from the list's version it would meet 410 and list again.
    kube.breakWatches('end');
    await waitFor('a watch from the bookmark', () =>
      kube.watches('ingresses').some((w) => w.query.resourceVersion === String(rv)),
    );
    assert.equal(kube.lists('ingresses').length, 1);
  });

  test('a list that fails is retried', async () => {
    kube.failNext((r) => r.path.endsWith('/ingresses') && r.query.watch === undefined, 2);
    kube.create(
      'ingresses',
      ingress('shop', 'a', [{ host: 'a.example.test', paths: [{ service: 'a', port: 80 }] }]),
    );
    await startDiscovery();
    assert.deepEqual(
      discovery.routes.map((r) => r.host),
      ['a.example.test'],
    );
    assert.equal(discovery.stats.watchErrors, 2);
    assert.match(String(log.events('discovery-watch-error')[0]!.err), /HTTP 500/);
  });

  test('one namespace only: its own paths, and nothing from other namespaces', async () => {
    kube.create(
      'ingresses',
      ingress('shop', 'a', [{ host: 'a.example.test', paths: [{ service: 'a', port: 80 }] }]),
    );
    kube.create(
      'ingresses',
      ingress('blog', 'b', [{ host: 'b.example.test', paths: [{ service: 'b', port: 80 }] }]),
    );
    await startDiscovery('shop');
    assert.deepEqual(
      discovery.routes.map((r) => r.object),
      ['shop/a'],
    );
    assert.equal(kube.lists('ingresses')[0]!.path, '/apis/networking.k8s.io/v1/namespaces/shop/ingresses');
    assert.equal(kube.lists('services')[0]!.path, '/api/v1/namespaces/shop/services');
    kube.create(
      'ingresses',
      ingress('blog', 'c', [{ host: 'c.example.test', paths: [{ service: 'c', port: 80 }] }]),
    );
    kube.create(
      'ingresses',
      ingress('shop', 'd', [{ host: 'd.example.test', paths: [{ service: 'd', port: 80 }] }]),
    );
    await until('d', () => routeOf('d.example.test') !== undefined);
    assert.equal(routeOf('c.example.test'), undefined);
  });

  test('two objects claiming one host and path: the older keeps it, logged and counted once', async () => {
    await startDiscovery();
    kube.create(
      'ingresses',
      ingress('shop', 'zz-old', [{ host: 'app.example.test', paths: [{ service: 'old', port: 80 }] }]),
    );
    kube.create(
      'services',
      service('shop', 'aa-new', { http: 80 }, { 'sluice.dev/host': 'app.example.test' }),
    );
    kube.create(
      'ingresses',
      ingress('shop', 'other', [
        { host: 'app.example.test', paths: [{ path: '/x', service: 'x', port: 80 }] },
      ]),
    );
    await until('two routes', (r) => r.length === 2);
    assert.equal(routeOf('app.example.test')!.object, 'shop/zz-old');
    assert.equal(discovery.stats.conflicts, 1);
    const [line] = log.events('discovery-conflict');
    assert.deepEqual(
      { host: line!.host, path: line!.path, winner: line!.winner, loser: line!.loser },
      { host: 'app.example.test', path: '/', winner: 'ingress shop/zz-old', loser: 'service shop/aa-new' },
    );
    // Later snapshots do not log it again; the loser takes over once the winner goes.
    kube.create(
      'ingresses',
      ingress('shop', 'more', [{ host: 'more.example.test', paths: [{ service: 'm', port: 80 }] }]),
    );
    await until('three routes', (r) => r.length === 3);
    assert.equal(log.events('discovery-conflict').length, 1);
    kube.remove('ingresses', 'shop', 'zz-old');
    await until('the service route', () => routeOf('app.example.test')?.object === 'shop/aa-new');
  });

  test('invalid objects are skipped with a log line naming each', async () => {
    await startDiscovery();
    const bad = [
      ingress('shop', 'nohost', [{ paths: [{ service: 'web', port: 80 }] }]),
      ingress('shop', 'badhost', [{ host: 'bad host', paths: [{ service: 'web', port: 80 }] }]),
      ingress('shop', 'badpath', [
        { host: 'p.example.test', paths: [{ path: 'relative', service: 'web', port: 80 }] },
      ]),
      ingress('shop', 'noport', [{ host: 'n.example.test', paths: [{ service: 'missing', port: 'http' }] }]),
    ];
    for (const o of bad) kube.create('ingresses', o);
    // A resource backend (no service), and an Ingress with no rules at all.
    kube.create('ingresses', {
      metadata: { name: 'resource', namespace: 'shop' },
      spec: {
        ingressClassName: 'sluice',
        rules: [
          {
            host: 'r.example.test',
            http: {
              paths: [
                { path: '/', pathType: 'Prefix', backend: { resource: { kind: 'Bucket', name: 'b' } } },
              ],
            },
          },
        ],
      },
    });
    kube.create('ingresses', {
      metadata: { name: 'norules', namespace: 'shop' },
      spec: {
        ingressClassName: 'sluice',
        defaultBackend: { service: { name: 'web', port: { number: 80 } } },
      },
    });
    kube.create(
      'services',
      service('shop', 'multi', { a: 1, b: 2 }, { 'sluice.dev/host': 'multi.example.test' }),
    );
    kube.create(
      'services',
      service('shop', 'badport', { a: 1 }, { 'sluice.dev/host': 'bp.example.test', 'sluice.dev/port': '2' }),
    );
    // One good path beside a bad one still routes.
    kube.create(
      'ingresses',
      ingress('shop', 'mixed', [
        {
          host: 'm.example.test',
          paths: [
            { path: '/ok', service: 'web', port: 80 },
            { path: '/bad', service: 'gone', port: 'x' },
          ],
        },
      ]),
    );
    const expected = [
      ['ingress shop/nohost', /rule 0 has no host/],
      ['ingress shop/badhost', /is not a hostname/],
      ['ingress shop/badpath', /"relative" is not a path prefix/],
      ['ingress shop/noport', /service missing is not found/],
      ['ingress shop/resource', /names no service/],
      ['ingress shop/norules', /has no rules/],
      ['service shop/multi', /has 2 ports: name one with sluice.dev\/port/],
      ['service shop/badport', /has no port 2/],
      ['ingress shop/mixed', /path 1: service gone is not found/],
    ] as const;
    await waitFor('every skip line', () => log.events('discovery-skipped').length >= expected.length);
    const lines = log.events('discovery-skipped');
    for (const [object, reason] of expected) {
      const line = lines.find((l) => l.object === object);
      assert.ok(line !== undefined, `a line for ${object}`);
      assert.match(String(line.reason), reason);
    }
    await until('the good path', () => routeOf('m.example.test', '/ok') !== undefined);
    assert.deepEqual(
      discovery.routes.map((r) => `${r.host}${r.path}`),
      ['m.example.test/ok'],
    );
    assert.equal(discovery.stats.skipped, expected.length);
  });

  test('the status is written once, through the status subresource, and again only when it changes', async () => {
    await startDiscovery();
    kube.create(
      'ingresses',
      ingress('shop', 'web', [{ host: 'app.example.test', paths: [{ service: 'web', port: 80 }] }]),
    );
    kube.create(
      'ingresses',
      ingress('shop', 'nginx', [{ host: 'n.example.test', paths: [{ service: 'web', port: 80 }] }], 'nginx'),
    );
    await until('the route', () => routeOf('app.example.test') !== undefined);
    assert.equal(await discovery.writeStatus('shop/web', 'edge.example.test'), true);
    // Right after, the informer may not have seen the write yet: the stale version meets a conflict,
    // the re-read object already says so, and nothing is written.
    assert.equal(await discovery.writeStatus('shop/web', 'edge.example.test'), false);
    await waitFor('the informer to see the status', () => {
      const status = kube.get('ingresses', 'shop', 'web')!.status as LoadBalancerStatus | undefined;
      return status?.loadBalancer?.ingress?.[0]?.hostname === 'edge.example.test';
    });
    assert.equal(await discovery.writeStatus('shop/web', 'edge.example.test'), false);
    assert.equal(kube.statusWrites.length, 1);
    assert.deepEqual(kube.statusWrites[0], {
      object: 'shop/web',
      status: { loadBalancer: { ingress: [{ hostname: 'edge.example.test' }] } },
      resourceVersion: kube.statusWrites[0]!.resourceVersion,
    });
    // A new address is written; an IP address goes in `ip`.
    assert.equal(await discovery.writeStatus('shop/web', '203.0.113.7'), true);
    assert.deepEqual(kube.statusWrites[1]!.status, { loadBalancer: { ingress: [{ ip: '203.0.113.7' }] } });
    // Not ours: never written.
    assert.equal(await discovery.writeStatus('shop/nginx', 'edge.example.test'), false);
    assert.equal(kube.statusWrites.length, 2);
    // The status write changed no route: no snapshot for it.
    const count = seen.length;
    kube.create(
      'ingresses',
      ingress('shop', 'later', [{ host: 'later.example.test', paths: [{ service: 'web', port: 80 }] }]),
    );
    await until('later', () => routeOf('later.example.test') !== undefined);
    assert.equal(seen.length, count + 1);
  });

  test('--kubeconfig FILE: the same cluster through a file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-kubeconfig-'));
    try {
      const file = join(dir, 'config');
      writeFileSync(file, kube.kubeConfigYaml());
      kube.create(
        'ingresses',
        ingress('shop', 'a', [{ host: 'a.example.test', paths: [{ service: 'a', port: 80 }] }]),
      );
      log = captureLog('debug');
      discovery = new Discovery({ kubeConfig: loadKubeConfig(file, {}), logger: log.logger });
      discovery.start();
      await discovery.synced;
      assert.deepEqual(
        discovery.routes.map((r) => r.host),
        ['a.example.test'],
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.throws(() => loadKubeConfig(undefined, {}), /no kubeconfig/);
  });

  test('the policy is widened by exactly the discovered targets', async () => {
    await startDiscovery();
    const policy = new TargetPolicy(['127.0.0.1:3000'], 'allow');
    discovery.on('routes', () => policy.setDiscovered(discovery.allowedTargets()));
    kube.create(
      'ingresses',
      ingress('shop', 'web', [{ host: 'app.example.test', paths: [{ service: 'web', port: 8080 }] }]),
    );
    await until('the route', () => routeOf('app.example.test') !== undefined);
    assert.equal(policy.check(SVC('web', 'shop', 8080)).ok, true);
    assert.equal(policy.check(SVC('web', 'shop', 8081)).ok, false);
    assert.equal(policy.check(SVC('other', 'shop', 8080)).ok, false);
    kube.remove('ingresses', 'shop', 'web');
    await until('no routes', (r) => r.length === 0);
    assert.equal(policy.check(SVC('web', 'shop', 8080)).ok, false);
  });
});

describe('the route snapshot', () => {
  test('round-trips through its JSON, which has the documented shape', () => {
    const { routes } = computeRoutes(
      [
        ingress('shop', 'web', [
          { host: 'app.example.test', paths: [{ path: '/api', service: 'web', port: 8080 }] },
        ]) as unknown as V1Ingress,
      ],
      [],
    );
    const text = encodeRouteSnapshot(routes);
    assert.equal(
      text,
      '{"routes":[{"host":"app.example.test","path":"/api","target":"http://web.shop.svc.cluster.local:8080","source":"ingress","object":"shop/web"}]}',
    );
    assert.deepEqual(decodeRouteSnapshot(text), { ok: true, routes });
  });

  test('a bad route refuses the snapshot whole, naming it', () => {
    const good = {
      host: 'a.example.test',
      path: '/',
      target: 'http://a.b.svc.cluster.local:80',
      source: 'ingress',
      object: 'b/a',
    };
    const cases: [unknown, RegExp][] = [
      [{ routes: [good, { ...good, host: 'A.example.test' }] }, /route 1: host/],
      [{ routes: [good, { ...good, path: '/x/' }] }, /route 1: path/],
      [{ routes: [{ ...good, target: 'http://169.254.169.254:80' }] }, /route 0: target/],
      [{ routes: [{ ...good, source: 'gateway' }] }, /route 0: source/],
      [{ routes: [{ ...good, object: 'nope' }] }, /route 0: object/],
      [{ routes: [good, good] }, /route 1: a.example.test\/ appears twice/],
      [{}, /no "routes" list/],
    ];
    for (const [value, reason] of cases) {
      const result = decodeRouteSnapshot(JSON.stringify(value));
      assert.equal(result.ok, false);
      assert.match((result as { reason: string }).reason, reason);
    }
    assert.deepEqual(decodeRouteSnapshot('{"routes":[],"later":1}'), { ok: true, routes: [] });
    assert.equal(decodeRouteSnapshot('{').ok, false);
  });
});
