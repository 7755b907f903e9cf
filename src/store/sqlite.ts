// The embedded store: one SQLite file (better-sqlite3, synchronous) in the controller's data directory.
// Every write is one statement or one transaction, so a crash never leaves half a change behind. The
// methods are async only to fit the Store interface; each answers from the file at once. Watchers hear
// of this store's own writes, synchronously once the write is committed (another process writing the
// same file is not seen until it restarts: a shared fleet store is Redis's job).
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { Route } from './model.js';
import {
  type AgentRouteConflict,
  type AgentRoutesResult,
  type ClusterRecord,
  hostHolder,
  type RouteRecord,
  type Seed,
  type Source,
  type Store,
  ChangeWatchers,
  type StoreChange,
  StoreConflict,
  type StoreHealth,
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
-- Which config sources list which entry (docs/admin.md, "Seeding"): kind is cluster, token or route;
-- key is the cluster name, the token hash, or "host path". A config entry no source lists is deleted.
CREATE TABLE IF NOT EXISTS seed_owners (
  kind    TEXT NOT NULL,
  key     TEXT NOT NULL,
  source  TEXT NOT NULL,
  PRIMARY KEY (kind, key, source)
);
-- Shared settings (Store.claim): set once, never changed.
CREATE TABLE IF NOT EXISTS settings (
  key     TEXT PRIMARY KEY,
  value   TEXT NOT NULL
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
  readonly #watchers = new ChangeWatchers();

  constructor(file: string) {
    this.#db = new Database(file);
    this.#db.pragma('journal_mode = WAL');
    this.#db.pragma('foreign_keys = ON');
    // Another connection (a second controller on the same file) may hold the write lock for a moment.
    this.#db.pragma('busy_timeout = 5000');
    this.#db.exec(SCHEMA);
    // Added after the first release: a file made before it gets the column, empty for every route.
    const columns = this.#db.prepare('PRAGMA table_info(routes)').all() as { name: string }[];
    if (!columns.some((c) => c.name === 'server_name')) {
      this.#db.exec('ALTER TABLE routes ADD COLUMN server_name TEXT');
    }
    // `passthrough` for a route with tls: passthrough (docs/tls.md), else NULL.
    if (!columns.some((c) => c.name === 'tls')) this.#db.exec('ALTER TABLE routes ADD COLUMN tls TEXT');
  }

  async listClusters(): Promise<ClusterRecord[]> {
    return this.#db
      .prepare('SELECT name, created, source FROM clusters ORDER BY name')
      .all() as ClusterRecord[];
  }

  async getCluster(name: string): Promise<ClusterRecord | undefined> {
    return this.#cluster(name);
  }

  async addCluster(name: string, source: Source = 'api'): Promise<ClusterRecord> {
    if (this.#cluster(name) !== undefined) {
      throw new StoreConflict(`cluster ${JSON.stringify(name)} already exists`, 'name');
    }
    const record = { name, created: now(), source };
    this.#db
      .prepare('INSERT INTO clusters (name, created, source) VALUES (@name, @created, @source)')
      .run(record);
    this.#watchers.emit({ kind: 'cluster', op: 'add', name });
    return record;
  }

  async removeCluster(name: string): Promise<boolean> {
    const removed = this.#db.transaction(() => {
      if (this.#cluster(name) === undefined) return false;
      const routes = this.#db
        .prepare("SELECT count(*) AS n FROM routes WHERE cluster = ? AND source != 'agent'")
        .get(name) as { n: number };
      if (routes.n > 0) {
        throw new StoreConflict(
          `cluster ${JSON.stringify(name)} still has ${routes.n} route(s); remove them first`,
          'name',
        );
      }
      this.#db.prepare('DELETE FROM routes WHERE cluster = ?').run(name);
      this.#db.prepare('DELETE FROM clusters WHERE name = ?').run(name);
      return true;
    })();
    if (removed) this.#watchers.emit({ kind: 'cluster', op: 'remove', name });
    return removed;
  }

  async addToken(cluster: string, hash: string, source: Source = 'api'): Promise<TokenRecord> {
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
    this.#watchers.emit({ kind: 'token', op: 'add', id: record.id, cluster });
    return record;
  }

  async listTokens(cluster: string): Promise<TokenRecord[]> {
    return this.#db
      .prepare('SELECT * FROM tokens WHERE cluster = ? ORDER BY created, id')
      .all(cluster) as TokenRow[];
  }

  async revokeToken(id: string): Promise<TokenRecord | undefined> {
    const stamped = this.#db
      .prepare('UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL')
      .run(now(), id).changes;
    const record = this.#db.prepare('SELECT * FROM tokens WHERE id = ?').get(id) as TokenRow | undefined;
    if (stamped > 0 && record !== undefined) {
      this.#watchers.emit({ kind: 'token', op: 'revoke', id, cluster: record.cluster });
    }
    return record;
  }

  async activeTokens(): Promise<{ cluster: string; hash: string }[]> {
    return this.#db.prepare('SELECT cluster, hash FROM tokens WHERE revoked IS NULL').all() as {
      cluster: string;
      hash: string;
    }[];
  }

  async revokedTokens(): Promise<{ id: string; hash: string }[]> {
    return this.#db.prepare('SELECT id, hash FROM tokens WHERE revoked IS NOT NULL').all() as {
      id: string;
      hash: string;
    }[];
  }

  async listRoutes(): Promise<RouteRecord[]> {
    const rows = this.#db
      .prepare(
        'SELECT host, path, cluster, target, server_name AS serverName, tls, created, source FROM routes ' +
          'ORDER BY host, path',
      )
      .all() as (RouteRecord & { serverName: string | null; tls: string | null })[];
    for (const row of rows) {
      if (row.serverName === null) delete (row as { serverName?: unknown }).serverName;
      if (row.tls === null) delete (row as { tls?: unknown }).tls;
    }
    return rows;
  }

  async addRoute(route: Route, source: Source = 'api'): Promise<RouteRecord> {
    const record: RouteRecord = {
      host: route.host,
      path: route.path ?? '/',
      cluster: route.cluster,
      target: route.target,
      ...(route.serverName === undefined ? {} : { serverName: route.serverName }),
      ...(route.tls === undefined ? {} : { tls: route.tls }),
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
        'INSERT INTO routes (host, path, cluster, target, server_name, tls, created, source) ' +
          'VALUES (@host, @path, @cluster, @target, @serverName, @tls, @created, @source)',
      )
      .run({ serverName: null, tls: null, ...record });
    this.#watchers.emit({ kind: 'route', op: 'add', host: record.host, path: record.path });
    return record;
  }

  async removeRoute(host: string, path: string): Promise<boolean> {
    const removed =
      this.#db.prepare('DELETE FROM routes WHERE host = ? AND path = ?').run(host, path).changes > 0;
    if (removed) this.#watchers.emit({ kind: 'route', op: 'remove', host, path });
    return removed;
  }

  async replaceAgentRoutes(cluster: string, routes: readonly Route[]): Promise<AgentRoutesResult> {
    const db = this.#db;
    const { result, changed } = db.transaction(() => {
      if (this.#cluster(cluster) === undefined) {
        throw new StoreConflict(`names no cluster: ${JSON.stringify(cluster)}`, 'cluster');
      }
      const before = new Map(
        (
          db
            .prepare("SELECT host, path, target, created FROM routes WHERE cluster = ? AND source = 'agent'")
            .all(cluster) as { host: string; path: string; target: string; created: string }[]
        ).map((r) => [routeKey(r.host, r.path), r]),
      );
      db.prepare("DELETE FROM routes WHERE cluster = ? AND source = 'agent'").run(cluster);
      const held = db.prepare('SELECT host, cluster, source FROM routes WHERE host = ?');
      const insert = db.prepare(
        'INSERT INTO routes (host, path, cluster, target, server_name, created, source) ' +
          "VALUES (?, ?, ?, ?, NULL, ?, 'agent')",
      );
      const stored: Route[] = [];
      const conflicts: AgentRouteConflict[] = [];
      let changed = false;
      for (const r of routes) {
        const path = r.path ?? '/';
        const holder = hostHolder(held.all(r.host) as RouteRecord[], cluster, r.host);
        if (holder !== undefined) {
          conflicts.push({ host: r.host, path, holder });
          continue;
        }
        const old = before.get(routeKey(r.host, path));
        before.delete(routeKey(r.host, path));
        changed ||= old?.target !== r.target;
        insert.run(r.host, path, cluster, r.target, old?.created ?? now());
        stored.push({ host: r.host, path, cluster, target: r.target });
      }
      return { result: { stored, conflicts }, changed: changed || before.size > 0 };
    })();
    if (changed) this.#watchers.emit({ kind: 'agent-routes', op: 'replace', cluster });
    return result;
  }

  async seed(seed: Seed, source: string): Promise<void> {
    const db = this.#db;
    db.transaction(() => {
      // This source's claims are replaced by what it lists now; other sources' claims stay.
      db.prepare('DELETE FROM seed_owners WHERE source = ?').run(source);
      const claim = db.prepare('INSERT OR IGNORE INTO seed_owners (kind, key, source) VALUES (?, ?, ?)');
      for (const c of seed.clusters) {
        claim.run('cluster', c.name, source);
        for (const hash of c.hashes) claim.run('token', hash, source);
      }
      for (const r of seed.routes) claim.run('route', routeKey(r.host, r.path ?? '/'), source);
      this.#dropUnowned();
      this.#upsert(seed);
    })();
    this.#watchers.emit({ kind: 'seed', op: 'seed', source });
  }

  async claim(key: string, value: string): Promise<string> {
    this.#db.prepare('INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)').run(key, value);
    return (this.#db.prepare('SELECT value FROM settings WHERE key = ?').get(key) as { value: string }).value;
  }

  health(): StoreHealth {
    return { ok: true };
  }

  watch(onChange: (change: StoreChange) => void): () => void {
    return this.#watchers.add(onChange);
  }

  async close(): Promise<void> {
    this.#watchers.clear();
    this.#db.close();
  }

  #cluster(name: string): ClusterRecord | undefined {
    return this.#db.prepare('SELECT name, created, source FROM clusters WHERE name = ?').get(name) as
      ClusterRecord | undefined;
  }

  /** Deletes the config entries no source lists any more: routes, then tokens, then clusters. */
  #dropUnowned(): void {
    const db = this.#db;
    const unowned = (kind: string, key: string): string =>
      `source = 'config' AND NOT EXISTS ` +
      `(SELECT 1 FROM seed_owners o WHERE o.kind = '${kind}' AND o.key = ${key})`;
    db.prepare(`DELETE FROM routes WHERE ${unowned('route', "host || ' ' || path")}`).run();
    db.prepare(`DELETE FROM tokens WHERE ${unowned('token', 'hash')}`).run();
    for (const c of db.prepare(`SELECT name FROM clusters WHERE ${unowned('cluster', 'name')}`).all() as {
      name: string;
    }[]) {
      db.prepare('DELETE FROM routes WHERE cluster = ?').run(c.name);
      db.prepare('DELETE FROM clusters WHERE name = ?').run(c.name);
    }
  }

  #upsert(seed: Seed): void {
    const db = this.#db;
    const created = now();
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
      'INSERT INTO routes (host, path, cluster, target, server_name, tls, created, source) ' +
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'config') " +
        'ON CONFLICT (host, path) DO UPDATE SET cluster = excluded.cluster, target = excluded.target, ' +
        "server_name = excluded.server_name, tls = excluded.tls, source = 'config'",
    );
    for (const r of seed.routes) {
      const { host, cluster, target } = r;
      upsertRoute.run(host, r.path ?? '/', cluster, target, r.serverName ?? null, r.tls ?? null, created);
    }
  }
}

function routeKey(host: string, path: string): string {
  return `${host} ${path}`;
}

function now(): string {
  return new Date().toISOString();
}
