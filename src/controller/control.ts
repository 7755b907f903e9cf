// The control plane of a running controller: the store, and the route table and token index built from
// it. Every change goes to the store first, then the derived table or index is rebuilt and swapped in,
// so the edge and the tunnel listener see it on their next lookup. Revoking a token (or deleting its
// cluster) also closes the tunnels that authenticated with it, at once.
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SessionError } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';
import type { Store, TokenRecord } from '../store/store.js';
import type { ControllerConfig } from './config.js';
import { type Route, RouteTable } from './routes.js';
import { hashToken, TokenIndex, type TunnelRegistry } from './tunnels.js';

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

export class ControlPlane {
  readonly store: Store;
  readonly #registry: TunnelRegistry;
  #routes: RouteTable;
  #tokens: TokenIndex;

  constructor(store: Store, registry: TunnelRegistry) {
    this.store = store;
    this.#registry = registry;
    this.#routes = this.#buildRoutes();
    this.#tokens = this.#buildTokens();
  }

  get routes(): RouteTable {
    return this.#routes;
  }

  get tokens(): TokenIndex {
    return this.#tokens;
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
    this.#closeTunnels([record.hash], `token ${record.id} was revoked`);
    return record;
  }

  /** Deletes a cluster and its tokens, closing their tunnels; false when there is no such cluster. */
  removeCluster(name: string): boolean {
    const hashes = this.store.removeCluster(name);
    if (hashes === undefined) return false;
    this.#tokens = this.#buildTokens();
    this.#closeTunnels(hashes, `cluster ${name} was deleted`);
    return true;
  }

  addRoute(route: Route): void {
    // Built before the store is written: the table checks the route against the others the same way.
    const next = new RouteTable([...this.store.listRoutes(), route]);
    this.store.addRoute(route);
    this.#routes = next;
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
        tunnel.session.destroy(new SessionError('SLUICE_ERR_TOKEN_REVOKED', reason, ErrorCode.FORBIDDEN));
      }
    }
  }

  #buildRoutes(): RouteTable {
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
