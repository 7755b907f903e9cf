// The controller's state (DESIGN §3): clusters, token hashes and routes, behind one interface so that the
// embedded SQLite store and later ones (Redis) are interchangeable. A store never sees a plain token:
// only its `sha256:` digest. Each entry remembers where it came from: `config` entries are owned by the
// YAML files that list them, which seed the store at every start; `api` entries were made through the
// admin API; `agent` routes were discovered in a cluster by its agent (docs/kubernetes.md, "Discovery"),
// and are only ever written as one cluster's whole set (replaceAgentRoutes).
import type { Route } from './model.js';
import { SluiceError } from '../errors.js';

export type Source = 'config' | 'api' | 'agent';

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

/**
 * What one write changed, as `watch` reports it: what kind of entry and which one, never the whole new
 * state. A consumer re-reads what it needs, so an event from another controller (a shared store) and a
 * local one are handled alike, and a lost or merged event costs only an extra read. A seed changes
 * many entries at once and is one event naming its source.
 */
export type StoreChange =
  | { readonly kind: 'cluster'; readonly op: 'add' | 'remove'; readonly name: string }
  | { readonly kind: 'token'; readonly op: 'add' | 'revoke'; readonly id: string; readonly cluster: string }
  | { readonly kind: 'route'; readonly op: 'add' | 'remove'; readonly host: string; readonly path: string }
  | { readonly kind: 'seed'; readonly op: 'seed'; readonly source: string }
  /** A cluster's discovered routes were replaced (replaceAgentRoutes): one event for the whole set. */
  | { readonly kind: 'agent-routes'; readonly op: 'replace'; readonly cluster: string }
  /**
   * The store's connection came back after it was lost: changes made meanwhile were not reported,
   * so every cache built from the store must be rebuilt.
   */
  | { readonly kind: 'reset' };

/** A discovered route not stored, because another route holds its host. */
export interface AgentRouteConflict {
  readonly host: string;
  readonly path: string;
  /** What holds the host: `config route`, `api route`, or `cluster NAME`. */
  readonly holder: string;
}

/** What replaceAgentRoutes did. */
export interface AgentRoutesResult {
  /** The routes now stored for the cluster. */
  readonly stored: readonly Route[];
  readonly conflicts: readonly AgentRouteConflict[];
}

/**
 * Who holds `host` other than `cluster`'s agent routes, among `routes`, or undefined when nobody does.
 * A host is claimed whole: a config route for `app/` keeps a cluster from claiming `app/api` too, so
 * that an operator's route is never split by what someone wrote into an Ingress.
 */
export function hostHolder(routes: Iterable<RouteRecord>, cluster: string, host: string): string | undefined {
  for (const r of routes) {
    if (r.host !== host) continue;
    if (r.source !== 'agent') return `${r.source} route`;
    if (r.cluster !== cluster) return `cluster ${r.cluster}`;
  }
  return undefined;
}

/** Whether the store can be used now, and if not why (for /readyz and logs). */
export type StoreHealth = { readonly ok: true } | { readonly ok: false; readonly reason: string };

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

/**
 * The store cannot be reached (Redis down or not answering). Every method rejects with this quickly
 * rather than hang; the admin API answers it as `503 store_unavailable`.
 */
export class StoreUnavailable extends SluiceError {
  constructor(message: string, options?: ErrorOptions) {
    super('SLUICE_ERR_STORE_UNAVAILABLE', message, undefined, options);
    this.name = 'StoreUnavailable';
  }
}

/**
 * Every method is async, so that a remote store (Redis) fits the same interface; the controller serves
 * requests from caches built from it (control.ts) and never waits on a store round trip per request.
 * Each write that changes something reports exactly one StoreChange to every watcher; a write that
 * changes nothing (a conflict, an unknown id, a repeated revocation) reports none.
 */
export interface Store {
  listClusters(): Promise<ClusterRecord[]>;
  getCluster(name: string): Promise<ClusterRecord | undefined>;
  /** Rejects with StoreConflict when the cluster exists. */
  addCluster(name: string): Promise<ClusterRecord>;
  /**
   * Deletes a cluster, its tokens and its agent routes; false when there was no such cluster. Rejects
   * with StoreConflict while config or api routes still name it (agent routes never block it: nobody
   * could remove them by hand).
   */
  removeCluster(name: string): Promise<boolean>;

  /** Stores a new token hash for `cluster` (which must exist). */
  addToken(cluster: string, hash: string): Promise<TokenRecord>;
  listTokens(cluster: string): Promise<TokenRecord[]>;
  /** Marks a token revoked; resolves to it, or undefined when there is no such id. Idempotent. */
  revokeToken(id: string): Promise<TokenRecord | undefined>;
  /** Every valid (unrevoked) token: its cluster and hash. */
  activeTokens(): Promise<{ cluster: string; hash: string }[]>;
  /** Every revoked token still stored (its cluster not deleted): its id and hash. */
  revokedTokens(): Promise<{ id: string; hash: string }[]>;

  listRoutes(): Promise<RouteRecord[]>;
  /** Adds a validated route whose cluster exists. Rejects with StoreConflict on a repeated host and path. */
  addRoute(route: Route): Promise<RouteRecord>;
  /** False when no route has this host and path. */
  removeRoute(host: string, path: string): Promise<boolean>;

  /**
   * Replaces every `agent` route of `cluster` (which must exist) with `routes`, in one write: a route
   * whose host another holds (hostHolder) is left out and reported. Reports one `agent-routes` change
   * when the set changed, none when it did not.
   */
  replaceAgentRoutes(cluster: string, routes: readonly Route[]): Promise<AgentRoutesResult>;

  /**
   * Applies one config source's YAML (docs/admin.md, "Seeding"). `source` names the config source
   * stably across restarts (the controller passes its seed source id). The entries it lists are upserted
   * as `config` entries, and `source` becomes one of each one's owners; entries it listed before and no
   * longer does lose it as an owner. A `config` entry left with no owner is deleted, so a controller
   * never deletes an entry that another source sharing the store still lists. Entries made through the
   * API and agent routes are left alone, except that a config entry with the same key takes them over.
   * Revoked tokens stay revoked.
   */
  seed(seed: Seed, source: string): Promise<void>;

  /**
   * A shared setting, set if absent: resolves to the value that holds, `value` or the one set before
   * (by this controller or another sharing the store). Once set, a setting never changes.
   */
  claim(key: string, value: string): Promise<string>;

  /** Whether the store is reachable now; an embedded store always is. Never waits. */
  health(): StoreHealth;

  /**
   * Calls `onChange` after every change, whoever made it (for a shared store, other controllers too),
   * until the returned function is called. A throwing watcher does not fail the write.
   */
  watch(onChange: (change: StoreChange) => void): () => void;

  close(): Promise<void>;
}

/** A store's watchers (Store.watch): every implementation tells them the same way. */
export class ChangeWatchers {
  readonly #watchers = new Set<(change: StoreChange) => void>();

  /** A wrapper per call, so that watching twice with one function is two subscriptions. */
  add(onChange: (change: StoreChange) => void): () => void {
    const watcher = (change: StoreChange): void => onChange(change);
    this.#watchers.add(watcher);
    return () => void this.#watchers.delete(watcher);
  }

  emit(change: StoreChange): void {
    for (const watcher of [...this.#watchers]) {
      try {
        watcher(change);
      } catch {
        // The write is committed; one watcher's bug must not make it look failed to the writer.
      }
    }
  }

  clear(): void {
    this.#watchers.clear();
  }
}
