// The controller's state (DESIGN §3): clusters, token hashes and routes, behind one interface so that the
// embedded SQLite store and later ones (Redis) are interchangeable. A store never sees a plain token:
// only its `sha256:` digest. Each entry remembers where it came from: `config` entries are owned by the
// YAML file, which seeds the store at every start; `api` entries were made through the admin API.
import type { Route } from '../controller/routes.js';
import { SluiceError } from '../errors.js';

export type Source = 'config' | 'api';

export interface ClusterRecord {
  readonly name: string;
  /** ISO 8601. */
  readonly created: string;
  readonly source: Source;
}

export interface TokenRecord {
  /** A public handle for the token (`tok_…`): listing and revoking use it, never the hash. */
  readonly id: string;
  readonly cluster: string;
  /** `sha256:<64 hex>`. */
  readonly hash: string;
  readonly created: string;
  /** ISO 8601 when revoked, else null. A revoked token never becomes valid again. */
  readonly revoked: string | null;
  readonly source: Source;
}

export interface RouteRecord extends Route {
  readonly path: string;
  readonly created: string;
  readonly source: Source;
}

/** What the YAML config declares: clusters with token digests, and routes. */
export interface Seed {
  readonly clusters: readonly { name: string; hashes: readonly string[] }[];
  readonly routes: readonly Route[];
}

/** A write refused because of what the store holds; `field` names the input at fault. */
export class StoreConflict extends SluiceError {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super('SLUICE_ERR_STORE_CONFLICT', message);
    this.name = 'StoreConflict';
  }
}

export interface Store {
  listClusters(): ClusterRecord[];
  getCluster(name: string): ClusterRecord | undefined;
  /** Throws StoreConflict when the cluster exists. */
  addCluster(name: string): ClusterRecord;
  /**
   * Deletes a cluster and its tokens; returns the hashes of its tokens that were still valid (their
   * tunnels must close), or undefined when there was no such cluster. Throws StoreConflict while
   * routes still name it.
   */
  removeCluster(name: string): string[] | undefined;

  /** Stores a new token hash for `cluster` (which must exist). */
  addToken(cluster: string, hash: string): TokenRecord;
  listTokens(cluster: string): TokenRecord[];
  /** Marks a token revoked; returns it, or undefined when there is no such id. Idempotent. */
  revokeToken(id: string): TokenRecord | undefined;
  /** Every valid (unrevoked) token: its cluster and hash. */
  activeTokens(): { cluster: string; hash: string }[];

  listRoutes(): RouteRecord[];
  /** Adds a validated route whose cluster exists. Throws StoreConflict on a repeated host and path. */
  addRoute(route: Route): RouteRecord;
  /** Returns false when no route has this host and path. */
  removeRoute(host: string, path: string): boolean;

  /**
   * Applies the YAML config: its entries are upserted and owned by the config; config-owned entries
   * it no longer lists are deleted. Entries made through the API are left alone, except that a config
   * entry with the same key takes them over. Revoked tokens stay revoked.
   */
  seed(seed: Seed): void;

  close(): void;
}
