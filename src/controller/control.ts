// The control plane of a running controller: the store, and the caches the edge and the tunnel listener
// read on every request: the route table, the token index, the revoked digests and the cluster names.
// They are rebuilt from the store's change events, whoever wrote (this controller's admin API, or
// another controller sharing the store), so no request ever waits on the store. A token that stops being
// valid, revoked or deleted by anyone, closes the tunnels that authenticated with it, at once.
import { hostname } from 'node:os';
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { SessionError } from '../errors.js';
import { hashToken, type Route } from '../store/model.js';
import type { AgentRoutesResult, ClusterRecord, Store, StoreChange, TokenRecord } from '../store/store.js';
import { ErrorCode } from '../protocol/constants.js';
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

/**
 * Who this controller is as a seed source (docs/admin.md, "Seeding"): stable across its restarts, and
 * distinct for controllers on other hosts or with other data dirs, which may list other YAML entries.
 */
export function seedSource(config: Pick<ControllerConfig, 'dataDir'>): string {
  return `${hostname()}:${resolve(config.dataDir)}`;
}

/** What the tunnel listener answers an agent's token with. */
export type Admission =
  | { readonly ok: true; readonly cluster: string }
  | { readonly ok: false; readonly code: 'UNAUTHORIZED' | 'FORBIDDEN'; readonly reason: string };

/** The caches one change makes stale. */
interface Stale {
  routes: boolean;
  tokens: boolean;
  clusters: boolean;
}

const NOTHING: Stale = { routes: false, tokens: false, clusters: false };
const EVERYTHING: Stale = { routes: true, tokens: true, clusters: true };

function staleAfter(change: StoreChange): Stale {
  switch (change.kind) {
    case 'route':
    case 'agent-routes':
      return { ...NOTHING, routes: true };
    case 'token':
      return { ...NOTHING, tokens: true };
    // A deleted cluster takes its tokens (and their revocations) with it.
    case 'cluster':
      return { ...NOTHING, clusters: true, tokens: change.op === 'remove' };
    // A seed changes anything; a reset means changes were missed while the store was away.
    case 'seed':
    case 'reset':
      return EVERYTHING;
  }
}

export class ControlPlane {
  readonly store: Store;
  readonly #registry: TunnelRegistry;
  #routes = new RouteTable([]);
  #tokens = new TokenIndex([]);
  /** Valid token digest → its cluster: a tunnel whose token is not here (for its cluster) is closed. */
  #active: ReadonlyMap<string, string> = new Map();
  /** Digests of revoked tokens: known, so refused as FORBIDDEN rather than UNAUTHORIZED. */
  /** Revoked token hash → token id. */
  #revoked: ReadonlyMap<string, string> = new Map();
  #clusters: readonly string[] = [];
  /** What the next refresh rebuilds, gathered from the changes since the last one started. */
  #stale: Stale = { ...NOTHING };
  /** The refresh not yet started, which new changes join; undefined when none is waiting. */
  #queued: Promise<void> | undefined;
  /** The last refresh queued, settled or not: the next one starts after it, so they never overlap. */
  #tail: Promise<void> = Promise.resolve();

  /**
   * Builds the caches from `store` and keeps them current from its change events. A rebuild that fails
   * after a remote change keeps the previous cache and goes to `onError`.
   */
  static async open(
    store: Store,
    registry: TunnelRegistry,
    onError: (err: unknown) => void = () => {},
  ): Promise<ControlPlane> {
    const control = new ControlPlane(store, registry);
    // Watch first: a change made while the first read is under way then queues another read.
    store.watch((change) => void control.#refresh(staleAfter(change)).catch(onError));
    await control.#refresh(EVERYTHING);
    return control;
  }

  private constructor(store: Store, registry: TunnelRegistry) {
    this.store = store;
    this.#registry = registry;
  }

  get routes(): RouteTable {
    return this.#routes;
  }

  get tokens(): TokenIndex {
    return this.#tokens;
  }

  /** The names of the clusters the store holds, as last read: for gauges, which never wait. */
  get clusters(): readonly string[] {
    return this.#clusters;
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

  // Each write below waits for the caches it made stale before it answers, so that the admin API's
  // answer means "in effect on the next request". The store's own event queues the same refresh; for a
  // remote store, whose event may come later, the explicit one is what guarantees it.

  async addCluster(name: string): Promise<ClusterRecord> {
    const record = await this.store.addCluster(name);
    await this.#refresh({ ...NOTHING, clusters: true });
    return record;
  }

  /** Creates a token for `cluster` and returns it with the plain token, which is never stored. */
  async createToken(cluster: string): Promise<{ token: string; record: TokenRecord }> {
    const token = newToken();
    const record = await this.store.addToken(cluster, hashToken(token));
    await this.#refresh({ ...NOTHING, tokens: true });
    return { token, record };
  }

  /** Revokes a token; its live tunnels close. Undefined when there is no such id. */
  async revokeToken(id: string): Promise<TokenRecord | undefined> {
    const record = await this.store.revokeToken(id);
    if (record !== undefined) await this.#refresh({ ...NOTHING, tokens: true });
    return record;
  }

  /** Deletes a cluster and its tokens, closing their tunnels; false when there is no such cluster. */
  async removeCluster(name: string): Promise<boolean> {
    const removed = await this.store.removeCluster(name);
    if (removed) await this.#refresh({ ...NOTHING, clusters: true, tokens: true });
    return removed;
  }

  /** Adds a validated route; rejects with StoreConflict when a route has the same host and path. */
  async addRoute(route: Route): Promise<void> {
    // The store refuses a repeat (409 naming `host`); the table is then built from what it holds, and
    // should it refuse the route after all, the store is put back, so that the two never disagree.
    const stored = await this.store.addRoute(route);
    try {
      await this.#refresh({ ...NOTHING, routes: true });
    } catch (err) {
      await this.store.removeRoute(stored.host, stored.path);
      throw err;
    }
  }

  /**
   * Replaces a cluster's discovered routes (Store.replaceAgentRoutes) and waits until the route table
   * serves the new set, so that the agent's answer means "in effect on the next request".
   */
  async replaceAgentRoutes(cluster: string, routes: readonly Route[]): Promise<AgentRoutesResult> {
    const result = await this.store.replaceAgentRoutes(cluster, routes);
    await this.#refresh({ ...NOTHING, routes: true });
    return result;
  }

  async removeRoute(host: string, path: string): Promise<boolean> {
    const removed = await this.store.removeRoute(host, path);
    if (removed) await this.#refresh({ ...NOTHING, routes: true });
    return removed;
  }

  /**
   * Rebuilds what `stale` names, after any refresh already running. Changes that arrive before it
   * starts join it, so a burst of events costs one read. Rejects when a cache could not be rebuilt
   * (that cache keeps its previous state; the others are rebuilt all the same).
   */
  #refresh(stale: Stale): Promise<void> {
    this.#stale = {
      routes: this.#stale.routes || stale.routes,
      tokens: this.#stale.tokens || stale.tokens,
      clusters: this.#stale.clusters || stale.clusters,
    };
    if (this.#queued !== undefined) return this.#queued;
    const queued = this.#tail.then(() => {
      const wanted = this.#stale;
      this.#stale = { ...NOTHING };
      this.#queued = undefined;
      return this.#rebuild(wanted);
    });
    this.#queued = queued;
    this.#tail = queued.catch(() => {});
    return queued;
  }

  async #rebuild(stale: Stale): Promise<void> {
    // Clusters first: the reason a tunnel closes names a deleted cluster.
    const steps = [
      stale.clusters ? () => this.#readClusters() : undefined,
      stale.routes ? () => this.#readRoutes() : undefined,
      stale.tokens ? () => this.#readTokens() : undefined,
    ];
    let failure: unknown;
    for (const step of steps) {
      try {
        await step?.();
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
  }

  async #readClusters(): Promise<void> {
    this.#clusters = Object.freeze((await this.store.listClusters()).map((c) => c.name));
  }

  async #readRoutes(): Promise<void> {
    // Only the route fields: a stored record also carries `created` and `source`, which no route has.
    const routes = await this.store.listRoutes();
    this.#routes = new RouteTable(
      routes.map(({ host, path, cluster, target, serverName, tls }) => ({
        host,
        path,
        cluster,
        target,
        ...(serverName === undefined ? {} : { serverName }),
        ...(tls === undefined ? {} : { tls }),
      })),
    );
  }

  async #readTokens(): Promise<void> {
    const [active, revoked] = await Promise.all([this.store.activeTokens(), this.store.revokedTokens()]);
    const byCluster = new Map<string, string[]>();
    for (const { cluster, hash } of active) {
      const list = byCluster.get(cluster);
      if (list === undefined) byCluster.set(cluster, [hash]);
      else list.push(hash);
    }
    this.#tokens = new TokenIndex([...byCluster].map(([name, tokens]) => ({ name, tokens })));
    this.#active = new Map(active.map(({ cluster, hash }) => [hash, cluster]));
    // A deleted cluster's revoked tokens went with it: from now on they are unknown.
    this.#revoked = new Map(revoked.map(({ id, hash }) => [hash, id]));
    this.#closeInvalid();
  }

  /** Closes every tunnel whose token is no longer valid for its cluster, whoever withdrew it. */
  #closeInvalid(): void {
    for (const tunnel of this.#registry.all()) {
      const hash = tunnel.tokenHash;
      if (hash === undefined || this.#active.get(hash) === tunnel.cluster) continue;
      const revokedId = this.#revoked.get(hash);
      const reason =
        revokedId !== undefined
          ? `token ${revokedId} was revoked`
          : this.#clusters.includes(tunnel.cluster)
            ? 'the agent token was deleted'
            : `cluster ${tunnel.cluster} was deleted`;
      tunnel.session.destroy(new SessionError('SLUICE_ERR_TOKEN_REVOKED', reason, ErrorCode.FORBIDDEN));
    }
  }
}

/** The setting a shared store keeps the generated admin token's digest under. */
export const ADMIN_TOKEN_SETTING = 'admin-token-hash';

/**
 * The digest (`sha256:…`) of the admin API's bearer token: of SLUICE_ADMIN_TOKEN (`adminToken`) when
 * set. Otherwise, with SQLite, of the data dir's `admin-token` file, created (mode 0600) with a new
 * token on first start, which `announce` then shows once. With a shared (Redis) store, the first
 * controller to start generates the token and claims its digest in the store; every other controller
 * uses that digest (`note` says so: the token is in the first one's stderr and data dir).
 */
export async function loadAdminToken(
  config: Pick<ControllerConfig, 'dataDir' | 'adminToken' | 'store'>,
  store: Pick<Store, 'claim'>,
  announce: (token: string, file: string) => void,
  note: (message: string) => void = () => {},
): Promise<string> {
  if (config.adminToken !== undefined) return hashToken(config.adminToken);
  const file = join(config.dataDir, ADMIN_TOKEN_FILE);
  const existing = readAdminTokenFile(file);
  if (config.store.kind === 'sqlite') {
    if (existing !== undefined) return hashToken(existing);
    const token = newAdminToken();
    writeAdminTokenFile(file, token);
    announce(token, file);
    return hashToken(token);
  }
  const token = existing ?? newAdminToken();
  const held = await store.claim(ADMIN_TOKEN_SETTING, hashToken(token));
  if (held !== hashToken(token)) {
    note(
      'the admin token is the one another controller of the fleet generated first (shown on its stderr, ' +
        'and in its data dir); set SLUICE_ADMIN_TOKEN to choose one',
    );
    return held;
  }
  if (existing === undefined) {
    writeAdminTokenFile(file, token);
    announce(token, file);
  }
  return held;
}

function readAdminTokenFile(file: string): string | undefined {
  try {
    const token = readFileSync(file, 'utf8').trim();
    return token === '' ? undefined : token;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return undefined;
  }
}

function newAdminToken(): string {
  return `sluadm_${randomBytes(32).toString('base64url')}`;
}

function writeAdminTokenFile(file: string, token: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  // `wx`: never overwrite a token another process wrote meanwhile.
  writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
}

/**
 * Whether a presented bearer token is the admin token, given the latter's `sha256:` digest; compared
 * in constant time.
 */
export function adminTokenMatches(presented: string, expectedDigest: string): boolean {
  const a = createHash('sha256').update(hashToken(presented)).digest();
  const b = createHash('sha256').update(expectedDigest).digest();
  return timingSafeEqual(a, b);
}
