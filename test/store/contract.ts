// The Store contract, run against every store (test/store/sqlite.test.ts, test/store/redis.test.ts):
// CRUD, revocation, conflicts, the YAML seeding rule (config entries upserted, ones no source lists
// deleted, API entries kept; two sources on one store never delete each other's), claim(), and the
// change events of watch(), which a store's own writes deliver before the write resolves.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Store, type StoreChange, StoreConflict, type TokenRecord } from '../../src/store/store.js';

export interface Backend {
  /** A store on an empty backing state, and a way to open another connection to that same state. */
  fresh(): Promise<{ store: Store; another(): Promise<Store> }>;
}

export const H1 = `sha256:${'1'.repeat(64)}`;
export const H2 = `sha256:${'2'.repeat(64)}`;
export const route = { host: 'app.example.test', path: '/', cluster: 'c1', target: 'http://127.0.0.1:9000' };

export function storeContract(name: string, { fresh }: Backend): void {
  test(`${name}: clusters: a repeated name and a cluster with routes are conflicts; removal says whether there was one`, async () => {
    const { store } = await fresh();
    await store.addCluster('c1');
    await assert.rejects(store.addCluster('c1'), StoreConflict);
    await store.addToken('c1', H1);
    const revoked = await store.addToken('c1', H2);
    await store.revokeToken(revoked.id);
    await store.addRoute(route);
    await assert.rejects(store.removeCluster('c1'), /still has 1 route/);
    assert.equal(await store.removeRoute(route.host, '/'), true);
    assert.equal(await store.removeRoute(route.host, '/'), false);
    assert.equal(await store.removeCluster('c1'), true);
    assert.equal(await store.removeCluster('c1'), false);
    assert.deepEqual(await store.activeTokens(), []);
    await store.close();
  });

  test(`${name}: tokens: ids are public handles; revocation is stamped once and drops the hash from activeTokens`, async () => {
    const { store } = await fresh();
    await store.addCluster('c1');
    const t = await store.addToken('c1', H1);
    assert.match(t.id, /^tok_[0-9a-f]{16}$/);
    assert.deepEqual(await store.activeTokens(), [{ cluster: 'c1', hash: H1 }]);
    const first = (await store.revokeToken(t.id))!;
    assert.ok(first.revoked !== null);
    assert.equal((await store.revokeToken(t.id))!.revoked, first.revoked);
    assert.equal(await store.revokeToken('tok_nope'), undefined);
    assert.deepEqual(await store.activeTokens(), []);
    // Still known as revoked (the controller refuses it as FORBIDDEN), until its cluster goes.
    assert.deepEqual(
      (await store.revokedTokens()).map((t) => t.hash),
      [H1],
    );
    await store.removeCluster('c1');
    assert.deepEqual(await store.revokedTokens(), []);
    await store.close();
  });

  test(`${name}: routes: a repeated host and path is a conflict naming host`, async () => {
    const { store } = await fresh();
    await store.addCluster('c1');
    await store.addRoute(route);
    await assert.rejects(
      store.addRoute({ ...route, target: 'http://127.0.0.1:1' }),
      (err: unknown) => err instanceof StoreConflict && err.field === 'host',
    );
    await store.close();
  });

  test(`${name}: routes: tls passthrough is kept, from the API and from a seed, and other routes have none`, async () => {
    const { store, another } = await fresh();
    await store.addCluster('c1');
    const pass = { host: 'db.example.test', path: '/', cluster: 'c1', target: 'tcp://db:443' } as const;
    const added = await store.addRoute({ ...pass, tls: 'passthrough' });
    assert.equal(added.tls, 'passthrough');
    await store.addRoute(route);
    await store.seed(
      {
        clusters: [{ name: 'c1', hashes: [] }],
        routes: [{ ...pass, host: 'seeded.example.test', tls: 'passthrough' }],
      },
      'ctl-a',
    );
    const second = await another();
    for (const s of [store, second]) {
      const listed = await s.listRoutes();
      const tls = Object.fromEntries(listed.map((r) => [r.host, r.tls]));
      assert.deepEqual(tls, {
        'app.example.test': undefined,
        'db.example.test': 'passthrough',
        'seeded.example.test': 'passthrough',
      });
      assert.ok(!('tls' in listed.find((r) => r.host === route.host)!));
    }
    await second.close();
    await store.close();
  });

  test(`${name}: seed: upserts config entries, deletes config entries no longer listed, keeps API entries`, async () => {
    const { store } = await fresh();
    await store.addCluster('api-made');
    await store.addToken('api-made', H2);
    await store.seed(
      {
        clusters: [
          { name: 'c1', hashes: [H1] },
          { name: 'gone', hashes: [] },
        ],
        routes: [route],
      },
      'ctl-a',
    );
    assert.deepEqual(
      (await store.listClusters()).map((c) => `${c.name}:${c.source}`),
      ['api-made:api', 'c1:config', 'gone:config'],
    );
    const [before] = await store.listTokens('c1');
    // Seeding again with the same file changes nothing (ids and creation times are kept).
    await store.seed(
      {
        clusters: [
          { name: 'c1', hashes: [H1] },
          { name: 'gone', hashes: [] },
        ],
        routes: [route],
      },
      'ctl-a',
    );
    assert.deepEqual(await store.listTokens('c1'), [before]);
    // A token revoked through the API stays revoked even though the file still lists it.
    await store.revokeToken(before!.id);
    await store.seed({ clusters: [{ name: 'c1', hashes: [H1] }], routes: [] }, 'ctl-a');
    assert.ok((await store.listTokens('c1'))[0]!.revoked !== null);
    assert.deepEqual(
      (await store.listClusters()).map((c) => c.name),
      ['api-made', 'c1'],
    );
    assert.deepEqual(await store.listRoutes(), []);
    // A token dropped from the file is deleted; API tokens stay.
    await store.seed({ clusters: [{ name: 'c1', hashes: [] }], routes: [] }, 'ctl-a');
    assert.deepEqual(await store.listTokens('c1'), []);
    assert.deepEqual(await store.activeTokens(), [{ cluster: 'api-made', hash: H2 }]);
    await store.close();
  });

  test(`${name}: seed: two sources on one store each keep what they list; an entry goes when no source lists it`, async () => {
    // Two controllers with different YAML on one store: two connections, as two processes would be.
    const { store: a, another } = await fresh();
    const b = await another();
    const r2 = { ...route, host: 'b.example.test', cluster: 'c2' };
    const shared = { ...route, host: 'shared.example.test', cluster: 'both' };
    await a.seed(
      {
        clusters: [
          { name: 'c1', hashes: [H1] },
          { name: 'both', hashes: [] },
        ],
        routes: [route, shared],
      },
      'ctl-a',
    );
    await b.seed(
      {
        clusters: [
          { name: 'c2', hashes: [H2] },
          { name: 'both', hashes: [] },
        ],
        routes: [r2, shared],
      },
      'ctl-b',
    );
    // Each start seeds again: neither deletes the other's clusters, tokens or routes.
    await a.seed(
      {
        clusters: [
          { name: 'c1', hashes: [H1] },
          { name: 'both', hashes: [] },
        ],
        routes: [route, shared],
      },
      'ctl-a',
    );
    const names = async (): Promise<string[]> => (await b.listClusters()).map((c) => c.name);
    const hosts = async (): Promise<string[]> => (await b.listRoutes()).map((r) => r.host);
    assert.deepEqual(await names(), ['both', 'c1', 'c2']);
    assert.deepEqual(await hosts(), ['app.example.test', 'b.example.test', 'shared.example.test']);
    assert.deepEqual((await b.activeTokens()).map((t) => t.hash).sort(), [H1, H2]);
    // A drops the shared route and cluster from its YAML: B still lists them, so they stay.
    await a.seed({ clusters: [{ name: 'c1', hashes: [H1] }], routes: [route] }, 'ctl-a');
    assert.deepEqual(await names(), ['both', 'c1', 'c2']);
    assert.deepEqual(await hosts(), ['app.example.test', 'b.example.test', 'shared.example.test']);
    // B drops them too: now no source lists them, and they go.
    await b.seed({ clusters: [{ name: 'c2', hashes: [H2] }], routes: [r2] }, 'ctl-b');
    assert.deepEqual(await names(), ['c1', 'c2']);
    assert.deepEqual(await hosts(), ['app.example.test', 'b.example.test']);
    // A source that drops its own token deletes it; the other's is untouched.
    await b.seed({ clusters: [{ name: 'c2', hashes: [] }], routes: [r2] }, 'ctl-b');
    assert.deepEqual(await b.activeTokens(), [{ cluster: 'c1', hash: H1 }]);
    await a.close();
    await b.close();
  });

  test(`${name}: watch: every change is one event, a write that changes nothing is none, unsubscribing stops them`, async () => {
    const { store } = await fresh();
    const seen: StoreChange[] = [];
    const other: StoreChange[] = [];
    const stop = store.watch((c) => seen.push(c));
    store.watch((c) => other.push(c));
    // A throwing watcher neither fails the write nor keeps the others from hearing of it.
    store.watch(() => {
      throw new Error('a buggy watcher');
    });
    await store.addCluster('c1');
    await assert.rejects(store.addCluster('c1'), StoreConflict);
    const t = await store.addToken('c1', H1);
    await store.revokeToken(t.id);
    await store.revokeToken(t.id);
    assert.equal(await store.revokeToken('tok_nope'), undefined);
    await store.addRoute(route);
    await assert.rejects(store.addRoute(route), StoreConflict);
    await store.removeRoute(route.host, '/');
    assert.equal(await store.removeRoute(route.host, '/'), false);
    await store.removeCluster('c1');
    assert.equal(await store.removeCluster('c1'), false);
    await store.seed({ clusters: [{ name: 'c2', hashes: [H2] }], routes: [] }, 'ctl-a');
    assert.deepEqual(seen, [
      { kind: 'cluster', op: 'add', name: 'c1' },
      { kind: 'token', op: 'add', id: t.id, cluster: 'c1' },
      { kind: 'token', op: 'revoke', id: t.id, cluster: 'c1' },
      { kind: 'route', op: 'add', host: route.host, path: '/' },
      { kind: 'route', op: 'remove', host: route.host, path: '/' },
      { kind: 'cluster', op: 'remove', name: 'c1' },
      { kind: 'seed', op: 'seed', source: 'ctl-a' },
    ]);
    assert.deepEqual(other, seen);
    stop();
    stop();
    await store.addCluster('c3');
    assert.equal(seen.length, 7);
    assert.equal(other.length, 8);
    await store.close();
  });

  test(`${name}: 100 routes and 100 tokens: the second and the hundredth are stored, listed and removable`, async () => {
    const { store } = await fresh();
    await store.addCluster('c1');
    const hashes = Array.from({ length: 100 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);
    const tokens: TokenRecord[] = [];
    for (const hash of hashes) tokens.push(await store.addToken('c1', hash));
    const hosts = Array.from({ length: 100 }, (_, i) => `h${String(i).padStart(3, '0')}.example.test`);
    for (const host of hosts)
      await store.addRoute({ ...route, host, target: `http://127.0.0.1:${1000 + hosts.indexOf(host)}` });
    assert.equal(new Set(tokens.map((t) => t.id)).size, 100);
    const listed = await store.listTokens('c1');
    assert.equal(listed.length, 100);
    assert.deepEqual(
      listed.find((t) => t.id === tokens[1]!.id),
      tokens[1],
    );
    assert.deepEqual(
      listed.find((t) => t.id === tokens[99]!.id),
      tokens[99],
    );
    const routes = await store.listRoutes();
    assert.deepEqual(
      routes.map((r) => r.host),
      hosts,
    );
    assert.equal(routes[1]!.target, 'http://127.0.0.1:1001');
    assert.equal(routes[99]!.target, 'http://127.0.0.1:1099');
    await assert.rejects(store.addRoute({ ...route, host: hosts[99]! }), StoreConflict);
    // Revoking the second and the hundredth leaves the 98 others active.
    await store.revokeToken(tokens[1]!.id);
    await store.revokeToken(tokens[99]!.id);
    const active = (await store.activeTokens()).map((t) => t.hash);
    assert.equal(active.length, 98);
    assert.ok(!active.includes(hashes[1]!) && !active.includes(hashes[99]!) && active.includes(hashes[98]!));
    assert.deepEqual(
      (await store.revokedTokens()).map((t) => t.id).sort(),
      [tokens[1]!.id, tokens[99]!.id].sort(),
    );
    assert.equal(await store.removeRoute(hosts[1]!, '/'), true);
    assert.equal(await store.removeRoute(hosts[99]!, '/'), true);
    assert.equal((await store.listRoutes()).length, 98);
    await assert.rejects(store.removeCluster('c1'), /still has 98 route/);
    await store.close();
  });

  test(`${name}: agent routes: one write replaces a cluster's set; hosts others hold are refused`, async () => {
    const { store } = await fresh();
    await store.addCluster('c1');
    await store.addCluster('c2');
    await store.seed(
      {
        clusters: [{ name: 'c1', hashes: [H1] }],
        routes: [{ host: 'config.example.test', path: '/', cluster: 'c1', target: 'http://a.b.svc:80' }],
      },
      'src',
    );
    await store.addRoute({
      host: 'api.example.test',
      path: '/x',
      cluster: 'c1',
      target: 'http://a.b.svc:80',
    });
    const changes: StoreChange[] = [];
    store.watch((c) => changes.push(c));
    const agent = (host: string, path = '/', target = 'http://web.shop.svc.cluster.local:80') => ({
      host,
      path,
      cluster: 'c1',
      target,
    });
    const first = await store.replaceAgentRoutes('c1', [
      agent('a.example.test'),
      agent('a.example.test', '/api'),
      // Held by the config route, and by the api route at another path: the host is claimed whole.
      agent('config.example.test', '/other'),
      agent('api.example.test'),
    ]);
    assert.deepEqual(
      first.stored.map((r) => `${r.host}${r.path}`),
      ['a.example.test/', 'a.example.test/api'],
    );
    assert.deepEqual(first.conflicts, [
      { host: 'config.example.test', path: '/other', holder: 'config route' },
      { host: 'api.example.test', path: '/', holder: 'api route' },
    ]);
    assert.deepEqual(changes, [{ kind: 'agent-routes', op: 'replace', cluster: 'c1' }]);
    const listed = (await store.listRoutes()).filter((r) => r.source === 'agent');
    assert.deepEqual(
      listed.map((r) => [r.host, r.path, r.cluster]),
      [
        ['a.example.test', '/', 'c1'],
        ['a.example.test', '/api', 'c1'],
      ],
    );
    // Another cluster cannot claim a host c1's agent holds.
    const other = await store.replaceAgentRoutes('c2', [{ ...agent('a.example.test', '/z'), cluster: 'c2' }]);
    assert.deepEqual(other, {
      stored: [],
      conflicts: [{ host: 'a.example.test', path: '/z', holder: 'cluster c1' }],
    });
    // The same set again changes nothing and reports nothing; created stamps are kept.
    changes.length = 0;
    await store.replaceAgentRoutes('c1', [agent('a.example.test'), agent('a.example.test', '/api')]);
    assert.deepEqual(changes, []);
    assert.deepEqual(
      (await store.listRoutes()).filter((r) => r.source === 'agent').map((r) => r.created),
      listed.map((r) => r.created),
    );
    // A changed target is a change; a smaller set drops the rest.
    await store.replaceAgentRoutes('c1', [
      agent('a.example.test', '/', 'http://web.shop.svc.cluster.local:81'),
    ]);
    assert.equal(changes.length, 1);
    assert.deepEqual(
      (await store.listRoutes()).filter((r) => r.source === 'agent').map((r) => [r.path, r.target]),
      [['/', 'http://web.shop.svc.cluster.local:81']],
    );
    await assert.rejects(store.replaceAgentRoutes('nope', []), /names no cluster/);
    await store.close();
  });

  test(`${name}: agent routes survive a seed (a config reload), never block removeCluster, and go with it`, async () => {
    const { store } = await fresh();
    const seed = {
      clusters: [{ name: 'c1', hashes: [H1] }],
      routes: [{ host: 'config.example.test', path: '/', cluster: 'c1', target: 'http://a.b.svc:80' }],
    };
    await store.seed(seed, 'src');
    await store.addCluster('c2');
    const agentRoute = { host: 'a.example.test', path: '/', cluster: 'c2', target: 'http://w.s.svc:80' };
    await store.replaceAgentRoutes('c2', [agentRoute]);
    // The file changed: its route is gone, and the agent route stays.
    await store.seed({ ...seed, routes: [] }, 'src');
    assert.deepEqual(
      (await store.listRoutes()).map((r) => [r.host, r.source]),
      [['a.example.test', 'agent']],
    );
    // A config route for the same host and path takes it over, as it does an api route.
    await store.seed({ ...seed, routes: [{ ...agentRoute, cluster: 'c1' }] }, 'src');
    assert.deepEqual(
      (await store.listRoutes()).map((r) => [r.host, r.cluster, r.source]),
      [['a.example.test', 'c1', 'config']],
    );
    await store.seed({ ...seed, routes: [] }, 'src');
    await store.replaceAgentRoutes('c2', [agentRoute, { ...agentRoute, host: 'b.example.test' }]);
    assert.equal(await store.removeCluster('c2'), true);
    assert.deepEqual(await store.listRoutes(), []);
    await store.close();
  });

  test(`${name}: claim sets a setting once; later claims, from any connection, get the first value`, async () => {
    const { store, another } = await fresh();
    const other = await another();
    assert.equal(await store.claim('k', 'first'), 'first');
    assert.equal(await store.claim('k', 'second'), 'first');
    assert.equal(await other.claim('k', 'third'), 'first');
    assert.equal(await other.claim('k2', 'x'), 'x');
    assert.deepEqual(store.health(), { ok: true });
    await other.close();
    await store.close();
  });
}
