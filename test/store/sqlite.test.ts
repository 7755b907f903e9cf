// The SQLite store against a real file in a temp dir: CRUD, revocation, conflicts, persistence across
// reopening, the YAML seeding rule (config entries upserted, ones no source lists deleted, API ones
// kept; two sources on one file never delete each other's), and the change events of watch().
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { DATABASE_FILE, openSqliteStore } from '../../src/store/sqlite.js';
import { type StoreChange, StoreConflict } from '../../src/store/store.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-store-'));
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
function fresh(): { dir: string; store: ReturnType<typeof openSqliteStore> } {
  const dir = join(root, `d${n++}`, 'nested');
  return { dir, store: openSqliteStore(dir) };
}

const H1 = `sha256:${'1'.repeat(64)}`;
const H2 = `sha256:${'2'.repeat(64)}`;
const route = { host: 'app.example.test', path: '/', cluster: 'c1', target: 'http://127.0.0.1:9000' };

test('creates the data dir and the database file, and keeps state across reopening', async () => {
  const { dir, store } = fresh();
  assert.ok(existsSync(join(dir, DATABASE_FILE)));
  await store.addCluster('c1');
  const token = await store.addToken('c1', H1);
  await store.addRoute(route);
  await store.close();
  const again = openSqliteStore(dir);
  assert.deepEqual(
    (await again.listClusters()).map((c) => [c.name, c.source]),
    [['c1', 'api']],
  );
  assert.deepEqual(await again.listTokens('c1'), [token]);
  assert.deepEqual(
    (await again.listRoutes()).map(({ host, path, cluster, target }) => ({ host, path, cluster, target })),
    [route],
  );
  await again.close();
});

test('clusters: a repeated name and a cluster with routes are conflicts; removal says whether there was one', async () => {
  const { store } = fresh();
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

test('tokens: ids are public handles; revocation is stamped once and drops the hash from activeTokens', async () => {
  const { store } = fresh();
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

test('routes: a repeated host and path is a conflict naming host', async () => {
  const { store } = fresh();
  await store.addCluster('c1');
  await store.addRoute(route);
  await assert.rejects(
    store.addRoute({ ...route, target: 'http://127.0.0.1:1' }),
    (err: unknown) => err instanceof StoreConflict && err.field === 'host',
  );
  await store.close();
});

test('seed: upserts config entries, deletes config entries no longer listed, keeps API entries', async () => {
  const { store } = fresh();
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

test('seed: two sources on one file each keep what they list; an entry goes when no source lists it', async () => {
  // Two controllers with different YAML on one SQLite file: two connections, as two processes would be.
  const { dir, store: a } = fresh();
  const b = openSqliteStore(dir);
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

test('seed: a config entry no source claims (a file from before sources) goes unless the seed lists it', async () => {
  const { dir, store } = fresh();
  await store.seed(
    {
      clusters: [
        { name: 'old', hashes: [H1] },
        { name: 'kept', hashes: [] },
      ],
      routes: [],
    },
    'ctl-a',
  );
  // As a file written by an older Sluice holds it: config entries, no claims.
  const raw = new Database(join(dir, DATABASE_FILE));
  raw.exec('DELETE FROM seed_owners');
  raw.close();
  // Whichever source seeds first claims what it lists and deletes the rest, as one controller's seed
  // always did.
  await store.seed({ clusters: [{ name: 'kept', hashes: [] }], routes: [] }, 'ctl-b');
  assert.deepEqual(
    (await store.listClusters()).map((c) => c.name),
    ['kept'],
  );
  assert.deepEqual(await store.activeTokens(), []);
  await store.close();
});

test('watch: every change is one event, a write that changes nothing is none, unsubscribing stops them', async () => {
  const { store } = fresh();
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
