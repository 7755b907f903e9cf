// The control plane of a running controller: the store, and the route table and token index built from
// it. Every change goes to the store first, then the derived table or index is rebuilt and swapped in,
// so the edge and the tunnel listener see it on their next lookup. Revoking a token (or deleting its
// cluster) also closes the tunnels that authenticated with it, at once.
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SessionError } from '../errors.js';
import { hashToken, type Route } from '../store/model.js';
import type { Store, TokenRecord } from '../store/store.js';
import type { ControllerConfig } from './config.js';
import { RouteTable } from './routes.js';
import { TokenIndex, type TunnelRegistry } from './tunnels.js';

export const ADMIN_TOKEN_FILE = 'admin-token';
export const TOKEN_PREFIX = 'slu_';

/** A new agent token: 256 random bits, base64url, prefixed so that it is recognizable in a leak scan. */
export function newToken(): string {
  return `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** YAML tokens as the store keeps them: digests, a plain (dev) token hashed. */
export function seedFrom(config: Pick<ControllerConfig, 'clusters' | 'routes'>) {
  return {
    clusters: config.clusters.map((c) => ({
      name: c.name,
      hashes: c.tokens.map((t) => (t.startsWith('sha256:') ? t.toLowerCase() : hashToken(t))),
    })),
    routes: config.routes,
  };
}

/** What the tunnel listener answers an agent's token with. */
export type Admission =
  | { readonly ok: true; readonly cluster: string }
  | { readonly ok: false; readonly code: 'UNAUTHORIZED' | 'FORBIDDEN'; readonly reason: string };

export class ControlPlane {
  readonly store: Store;
  readonly #registry: TunnelRegistry;
  #routes: RouteTable;
  #tokens: TokenIndex;
  /** Digests of revoked tokens: known, so refused as FORBIDDEN rather than UNAUTHORIZED. */
  #revoked: ReadonlySet<string>;

  constructor(store: Store, registry: TunnelRegistry) {
    this.store = store;
    this.#registry = registry;
    this.#routes = this.#buildRoutes();
    this.#tokens = this.#buildTokens();
    this.#revoked = new Set(store.revokedHashes());
  }

  get routes(): RouteTable {
    return this.#routes;
  }

  get tokens(): TokenIndex {
    return this.#tokens;
  }

  /**
   * Whether an agent presenting `token` may connect (docs/protocol.md §4): a valid token names its
   * cluster; a revoked one is FORBIDDEN (the agent holds a real token that was withdrawn: issue a new
   * one); any other is UNAUTHORIZED (mistyped, of another controller, or a deleted cluster's).
   */
  admit(token: string): Admission {
    const cluster = this.#tokens.clusterFor(token);
    if (cluster !== undefined) return { ok: true, cluster };
    if (this.#revoked.has(hashToken(token))) {
      return { ok: false, code: 'FORBIDDEN', reason: 'the agent token was revoked' };
    }
    return { ok: false, code: 'UNAUTHORIZED', reason: 'unknown agent token' };
  }

  /** Creates a token for `cluster` and returns it with the plain token, which is never stored. */
  createToken(cluster: string): { token: string; record: TokenRecord } {
    const token = newToken();
    const record = this.store.addToken(cluster, hashToken(token));
    this.#tokens = this.#buildTokens();
    return { token, record };
  }

  /** Revokes a token and closes its live tunnels; undefined when there is no such id. */
  revokeToken(id: string): TokenRecord | undefined {
    const record = this.store.revokeToken(id);
    if (record === undefined) return undefined;
    this.#tokens = this.#buildTokens();
    this.#revoked = new Set(this.store.revokedHashes());
    this.#closeTunnels([record.hash], `token ${record.id} was revoked`);
    return record;
  }

  /** Deletes a cluster and its tokens, closing their tunnels; false when there is no such cluster. */
  removeCluster(name: string): boolean {
    const hashes = this.store.removeCluster(name);
    if (hashes === undefined) return false;
    this.#tokens = this.#buildTokens();
    // Its revoked tokens went with it: from now on they are unknown.
    this.#revoked = new Set(this.store.revokedHashes());
    this.#closeTunnels(hashes, `cluster ${name} was deleted`);
    return true;
  }

  /** Adds a validated route; throws StoreConflict when a route has the same host and path. */
  addRoute(route: Route): void {
    // The store refuses a repeat (409 naming `host`); the table is then built from what it holds, and
    // should it refuse the route after all, the store is put back, so that the two never disagree.
    const stored = this.store.addRoute(route);
    try {
      this.#routes = this.#buildRoutes();
    } catch (err) {
      this.store.removeRoute(stored.host, stored.path);
      throw err;
    }
  }

  removeRoute(host: string, path: string): boolean {
    const removed = this.store.removeRoute(host, path);
    if (removed) this.#routes = this.#buildRoutes();
    return removed;
  }

  #closeTunnels(hashes: readonly string[], reason: string): void {
    if (hashes.length === 0) return;
    const gone = new Set(hashes);
    for (const tunnel of this.#registry.all()) {
      if (tunnel.tokenHash !== undefined && gone.has(tunnel.tokenHash)) {
        tunnel.session.destroy(new SessionError('SLUICE_ERR_SESSION_CLOSED', reason));
      }
    }
  }

  #buildRoutes(): RouteTable {
    // Only the route fields: a stored record also carries `created` and `source`, which no route has.
    return new RouteTable(
      this.store.listRoutes().map(({ host, path, cluster, target }) => ({ host, path, cluster, target })),
    );
  }

  #buildTokens(): TokenIndex {
    const byCluster = new Map<string, string[]>();
    for (const { cluster, hash } of this.store.activeTokens()) {
      const list = byCluster.get(cluster);
      if (list === undefined) byCluster.set(cluster, [hash]);
      else list.push(hash);
    }
    return new TokenIndex([...byCluster].map(([name, tokens]) => ({ name, tokens })));
  }
}

/**
 * The admin API's bearer token: SLUICE_ADMIN_TOKEN when set; else the data dir's `admin-token` file,
 * created (mode 0600) with a new token on first start, which `announce` then shows once.
 */
export function loadAdminToken(
  config: Pick<ControllerConfig, 'dataDir' | 'adminToken'>,
  announce: (token: string, file: string) => void,
): string {
  if (config.adminToken !== undefined) return config.adminToken;
  const file = join(config.dataDir, ADMIN_TOKEN_FILE);
  try {
    const token = readFileSync(file, 'utf8').trim();
    if (token !== '') return token;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const token = `sluadm_${randomBytes(32).toString('base64url')}`;
  // `wx`: never overwrite a token another process wrote meanwhile.
  writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  announce(token, file);
  return token;
}

/** Compares a presented bearer token with the admin token in constant time (over their digests). */
export function adminTokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
