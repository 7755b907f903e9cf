// The embedded store: one SQLite file (better-sqlite3, synchronous) in the controller's data directory.
// Every write is one statement or one transaction, so a crash never leaves half a change behind.
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { Route } from './model.js';
import {
  type ClusterRecord,
  type RouteRecord,
  type Seed,
  type Source,
  type Store,
  StoreConflict,
  type TokenRecord,
} from './store.js';

export const DATABASE_FILE = 'sluice.db';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS clusters (
  name    TEXT PRIMARY KEY,
  created TEXT NOT NULL,
  source  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
  id      TEXT PRIMARY KEY,
  cluster TEXT NOT NULL REFERENCES clusters(name) ON DELETE CASCADE,
  hash    TEXT NOT NULL UNIQUE,
  created TEXT NOT NULL,
  revoked TEXT,
  source  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS routes (
  host    TEXT NOT NULL,
  path    TEXT NOT NULL,
  cluster TEXT NOT NULL REFERENCES clusters(name),
  target  TEXT NOT NULL,
  created TEXT NOT NULL,
  source  TEXT NOT NULL,
  PRIMARY KEY (host, path)
);
`;

interface TokenRow {
  id: string;
  cluster: string;
  hash: string;
  created: string;
  revoked: string | null;
  source: Source;
}

/** Opens (creating when needed) `sluice.db` in `dataDir`; `:memory:` keeps the state in memory. */
export function openSqliteStore(dataDir: string): SqliteStore {
  if (dataDir === ':memory:') return new SqliteStore(':memory:');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return new SqliteStore(join(dataDir, DATABASE_FILE));
}

export class SqliteStore implements Store {
  readonly #db: Database.Database;

  constructor(file: string) {
    this.#db = new Database(file);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('foreign_keys = ON');
    this.#db.exec(SCHEMA);
  }

  listClusters(): ClusterRecord[] {
    return this.#db
      .prepare('SELECT name, created, source FROM clusters ORDER BY name')
      .all() as ClusterRecord[];
  }

  getCluster(name: string): ClusterRecord | undefined {
    return this.#db.prepare('SELECT name, created, source FROM clusters WHERE name = ?').get(name) as
      ClusterRecord | undefined;
  }

  addCluster(name: string, source: Source = 'api'): ClusterRecord {
    if (this.getCluster(name) !== undefined) {
      throw new StoreConflict(`cluster ${JSON.stringify(name)} already exists`, 'name');
    }
    const record = { name, created: now(), source };
    this.#db
      .prepare('INSERT INTO clusters (name, created, source) VALUES (@name, @created, @source)')
      .run(record);
    return record;
  }

  removeCluster(name: string): string[] | undefined {
    return this.#db.transaction(() => {
      if (this.getCluster(name) === undefined) return undefined;
      const routes = this.#db.prepare('SELECT count(*) AS n FROM routes WHERE cluster = ?').get(name) as {
        n: number;
      };
      if (routes.n > 0) {
        throw new StoreConflict(
          `cluster ${JSON.stringify(name)} still has ${routes.n} route(s); remove them first`,
          'name',
        );
      }
      const hashes = this.#activeHashes(name);
      this.#db.prepare('DELETE FROM clusters WHERE name = ?').run(name);
      return hashes;
    })();
  }

  addToken(cluster: string, hash: string, source: Source = 'api'): TokenRecord {
    const record: TokenRecord = {
      id: `tok_${randomBytes(8).toString('hex')}`,
      cluster,
      hash,
      created: now(),
      revoked: null,
      source,
    };
    this.#db
      .prepare(
        'INSERT INTO tokens (id, cluster, hash, created, revoked, source) ' +
          'VALUES (@id, @cluster, @hash, @created, @revoked, @source)',
      )
      .run(record);
    return record;
  }

  listTokens(cluster: string): TokenRecord[] {
    return this.#db
      .prepare('SELECT * FROM tokens WHERE cluster = ? ORDER BY created, id')
      .all(cluster) as TokenRow[];
  }

  revokeToken(id: string): TokenRecord | undefined {
    this.#db.prepare('UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL').run(now(), id);
    return this.#db.prepare('SELECT * FROM tokens WHERE id = ?').get(id) as TokenRow | undefined;
  }

  activeTokens(): { cluster: string; hash: string }[] {
    return this.#db.prepare('SELECT cluster, hash FROM tokens WHERE revoked IS NULL').all() as {
      cluster: string;
      hash: string;
    }[];
  }

  revokedHashes(): string[] {
    const rows = this.#db.prepare('SELECT hash FROM tokens WHERE revoked IS NOT NULL').all() as {
      hash: string;
    }[];
    return rows.map((r) => r.hash);
  }

  listRoutes(): RouteRecord[] {
    return this.#db
      .prepare('SELECT host, path, cluster, target, created, source FROM routes ORDER BY host, path')
      .all() as RouteRecord[];
  }

  addRoute(route: Route, source: Source = 'api'): RouteRecord {
    const record: RouteRecord = {
      host: route.host,
      path: route.path ?? '/',
      cluster: route.cluster,
      target: route.target,
      created: now(),
      source,
    };
    const found = this.#db
      .prepare('SELECT 1 FROM routes WHERE host = ? AND path = ?')
      .get(record.host, record.path);
    if (found !== undefined) {
      throw new StoreConflict(`a route for host ${record.host}, path ${record.path} already exists`, 'host');
    }
    this.#db
      .prepare(
        'INSERT INTO routes (host, path, cluster, target, created, source) ' +
          'VALUES (@host, @path, @cluster, @target, @created, @source)',
      )
      .run(record);
    return record;
  }

  removeRoute(host: string, path: string): boolean {
    return this.#db.prepare('DELETE FROM routes WHERE host = ? AND path = ?').run(host, path).changes > 0;
  }

  seed(seed: Seed): void {
    const db = this.#db;
    db.transaction(() => {
      const created = now();
      const clusters = new Set(seed.clusters.map((c) => c.name));
      const hashes = new Set(seed.clusters.flatMap((c) => c.hashes));
      const routes = new Set(seed.routes.map((r) => routeKey(r.host, r.path ?? '/')));
      // Config entries the file no longer lists go first: routes, then tokens, then clusters.
      for (const r of db.prepare("SELECT host, path FROM routes WHERE source = 'config'").all() as Route[]) {
        if (!routes.has(routeKey(r.host, r.path!))) this.removeRoute(r.host, r.path!);
      }
      for (const t of db.prepare("SELECT id, hash FROM tokens WHERE source = 'config'").all() as TokenRow[]) {
        if (!hashes.has(t.hash)) db.prepare('DELETE FROM tokens WHERE id = ?').run(t.id);
      }
      for (const c of db
        .prepare("SELECT name FROM clusters WHERE source = 'config'")
        .all() as ClusterRecord[]) {
        if (clusters.has(c.name)) continue;
        db.prepare('DELETE FROM routes WHERE cluster = ?').run(c.name);
        db.prepare('DELETE FROM clusters WHERE name = ?').run(c.name);
      }
      const upsertCluster = db.prepare(
        "INSERT INTO clusters (name, created, source) VALUES (?, ?, 'config') " +
          "ON CONFLICT (name) DO UPDATE SET source = 'config'",
      );
      // A token moves to the cluster the file names; a revoked one stays revoked.
      const upsertToken = db.prepare(
        "INSERT INTO tokens (id, cluster, hash, created, revoked, source) VALUES (?, ?, ?, ?, NULL, 'config') " +
          "ON CONFLICT (hash) DO UPDATE SET cluster = excluded.cluster, source = 'config'",
      );
      for (const c of seed.clusters) {
        upsertCluster.run(c.name, created);
        for (const hash of c.hashes)
          upsertToken.run(`tok_${randomBytes(8).toString('hex')}`, c.name, hash, created);
      }
      const upsertRoute = db.prepare(
        "INSERT INTO routes (host, path, cluster, target, created, source) VALUES (?, ?, ?, ?, ?, 'config') " +
          "ON CONFLICT (host, path) DO UPDATE SET cluster = excluded.cluster, target = excluded.target, source = 'config'",
      );
      for (const r of seed.routes) upsertRoute.run(r.host, r.path ?? '/', r.cluster, r.target, created);
    })();
  }

  close(): void {
    this.#db.close();
  }

  #activeHashes(cluster: string): string[] {
    const rows = this.#db
      .prepare('SELECT hash FROM tokens WHERE cluster = ? AND revoked IS NULL')
      .all(cluster) as { hash: string }[];
    return rows.map((r) => r.hash);
  }
}

function routeKey(host: string, path: string): string {
  return `${host} ${path}`;
}

function now(): string {
  return new Date().toISOString();
}
