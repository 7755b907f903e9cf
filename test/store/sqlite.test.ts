// The SQLite store against a real file in a temp dir: the Store contract (test/store/contract.ts), and
// what only a file has: persistence across reopening, and a file written before seed sources existed.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import Database from 'better-sqlite3';
import { DATABASE_FILE, openSqliteStore } from '../../src/store/sqlite.js';
import { H1, route, storeContract } from './contract.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-store-'));
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
function fresh(): { dir: string; store: ReturnType<typeof openSqliteStore> } {
  const dir = join(root, `d${n++}`, 'nested');
  return { dir, store: openSqliteStore(dir) };
}

storeContract('sqlite', {
  async fresh() {
    const { dir, store } = fresh();
    return { store, another: async () => openSqliteStore(dir) };
  },
});

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
