// The SQLite store against a real file in a temp dir: CRUD, revocation, conflicts, persistence across
// reopening, and the YAML seeding rule (config entries upserted, removed ones deleted, API ones kept).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DATABASE_FILE, openSqliteStore } from '../../src/store/sqlite.js';
import { StoreConflict } from '../../src/store/store.js';

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

test('creates the data dir and the database file, and keeps state across reopening', () => {
  const { dir, store } = fresh();
  assert.ok(existsSync(join(dir, DATABASE_FILE)));
  store.addCluster('c1');
  const token = store.addToken('c1', H1);
  store.addRoute(route);
  store.close();
  const again = openSqliteStore(dir);
  assert.deepEqual(
    again.listClusters().map((c) => [c.name, c.source]),
    [['c1', 'api']],
  );
  assert.deepEqual(again.listTokens('c1'), [token]);
  assert.deepEqual(
    again.listRoutes().map(({ host, path, cluster, target }) => ({ host, path, cluster, target })),
    [route],
  );
  again.close();
});

test('clusters: a repeated name and a cluster with routes are conflicts; removal returns live hashes', () => {
  const { store } = fresh();
  store.addCluster('c1');
  assert.throws(() => store.addCluster('c1'), StoreConflict);
  store.addToken('c1', H1);
  const revoked = store.addToken('c1', H2);
  store.revokeToken(revoked.id);
  store.addRoute(route);
  assert.throws(() => store.removeCluster('c1'), /still has 1 route/);
  assert.equal(store.removeRoute(route.host, '/'), true);
  assert.equal(store.removeRoute(route.host, '/'), false);
  assert.deepEqual(store.removeCluster('c1'), [H1]);
  assert.equal(store.removeCluster('c1'), undefined);
  assert.deepEqual(store.activeTokens(), []);
  store.close();
});

test('tokens: ids are public handles; revocation is stamped once and drops the hash from activeTokens', () => {
  const { store } = fresh();
  store.addCluster('c1');
  const t = store.addToken('c1', H1);
  assert.match(t.id, /^tok_[0-9a-f]{16}$/);
  assert.deepEqual(store.activeTokens(), [{ cluster: 'c1', hash: H1 }]);
  const first = store.revokeToken(t.id)!;
  assert.ok(first.revoked !== null);
  assert.equal(store.revokeToken(t.id)!.revoked, first.revoked);
  assert.equal(store.revokeToken('tok_nope'), undefined);
  assert.deepEqual(store.activeTokens(), []);
  // Still known as revoked (the controller refuses it as FORBIDDEN), until its cluster goes.
  assert.deepEqual(store.revokedHashes(), [H1]);
  store.removeCluster('c1');
  assert.deepEqual(store.revokedHashes(), []);
  store.close();
});

test('routes: a repeated host and path is a conflict naming host', () => {
  const { store } = fresh();
  store.addCluster('c1');
  store.addRoute(route);
  assert.throws(
    () => store.addRoute({ ...route, target: 'http://127.0.0.1:1' }),
    (err: unknown) => err instanceof StoreConflict && err.field === 'host',
  );
  store.close();
});

test('seed: upserts config entries, deletes config entries no longer listed, keeps API entries', () => {
  const { store } = fresh();
  store.addCluster('api-made');
  store.addToken('api-made', H2);
  store.seed({
    clusters: [
      { name: 'c1', hashes: [H1] },
      { name: 'gone', hashes: [] },
    ],
    routes: [route],
  });
  assert.deepEqual(
    store.listClusters().map((c) => `${c.name}:${c.source}`),
    ['api-made:api', 'c1:config', 'gone:config'],
  );
  const [before] = store.listTokens('c1');
  // Seeding again with the same file changes nothing (ids and creation times are kept).
  store.seed({
    clusters: [
      { name: 'c1', hashes: [H1] },
      { name: 'gone', hashes: [] },
    ],
    routes: [route],
  });
  assert.deepEqual(store.listTokens('c1'), [before]);
  // A token revoked through the API stays revoked even though the file still lists it.
  store.revokeToken(before!.id);
  store.seed({ clusters: [{ name: 'c1', hashes: [H1] }], routes: [] });
  assert.ok(store.listTokens('c1')[0]!.revoked !== null);
  assert.deepEqual(
    store.listClusters().map((c) => c.name),
    ['api-made', 'c1'],
  );
  assert.deepEqual(store.listRoutes(), []);
  // A token dropped from the file is deleted; API tokens stay.
  store.seed({ clusters: [{ name: 'c1', hashes: [] }], routes: [] });
  assert.deepEqual(store.listTokens('c1'), []);
  assert.deepEqual(store.activeTokens(), [{ cluster: 'api-made', hash: H2 }]);
  store.close();
});
