// Route discovery (`sluice agent --discover`, docs/kubernetes.md "Discovery"): the agent watches its
// cluster's Ingress objects of class `sluice` and its Services annotated `sluice.dev/host`, and turns
// them into one whole snapshot of routes (protocol/route-snapshot.ts) each time something changes.
//
// The watching is client-node's informer (ListWatch): list, then watch from the list's resourceVersion;
// on a clean end of the watch it watches again from the last version seen, and on 410 Gone it lists
// again, firing delete events for whatever vanished meanwhile. Two things it leaves to its user, and
// this file does: an error (a reset connection, a failed list, a 5xx) stops the informer for good, so
// it is restarted here with backoff; and it never asks for bookmarks, which keep the last version seen
// fresh on a quiet watch so that a reconnect need not relist, so the Watch it is given asks for them.
//
// The snapshot is computed from the informers' caches, never patched event by event, so it is right
// whatever order the events came in; computing it is cheap next to the debounce (~100 ms) that batches
// a burst of changes into one snapshot.
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import {
  ApiException,
  KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  ListWatch,
  NetworkingV1Api,
  CoreV1Api,
  type V1Ingress,
  type V1Service,
  Watch,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import {
  type DiscoveredRoute,
  encodeRouteSnapshot,
  type RouteSnapshot,
  type RouteSource,
  snapshotHost,
  snapshotPath,
  sortRoutes,
} from '../protocol/route-snapshot.js';

export type { DiscoveredRoute, RouteSnapshot } from '../protocol/route-snapshot.js';

/** The Ingress class the agent serves (`spec.ingressClassName`). */
export const INGRESS_CLASS = 'sluice';
export const HOST_ANNOTATION = 'sluice.dev/host';
export const PORT_ANNOTATION = 'sluice.dev/port';
export const PATH_ANNOTATION = 'sluice.dev/path';

const DEBOUNCE_MS = 100;
/** Restarting an informer after an error: full jitter over a ceiling doubling from 500 ms to 30 s. */
const RETRY_BASE_MS = 500;
const RETRY_CAP_MS = 30_000;
/** Status writes that meet a conflict re-read the object and try again, this many times in all. */
const STATUS_ATTEMPTS = 3;
/** RFC 1035 label, as Service names are: the first label of a target's host. */
const SERVICE_NAME = /^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

export interface DiscoveryOptions {
  kubeConfig: KubeConfig;
  /** Watch one namespace (a namespaced Role suffices); null or absent: every namespace. */
  namespace?: string | null;
  logger: Logger;
  /** The cluster's DNS domain, for targets; `cluster.local` unless the cluster says otherwise. */
  clusterDomain?: string;
  debounceMs?: number;
}

/** Counts since start, for logs, metrics and tests. */
export interface DiscoveryStats {
  /** Snapshots emitted. */
  snapshots: number;
  /** Host-and-path conflicts between two objects, each counted when it first appears. */
  conflicts: number;
  /** Objects (or paths of one) skipped as invalid, each counted when it first appears. */
  skipped: number;
  /** Lists made after the first of each kind: a 410 Gone or an informer restarted from scratch. */
  relists: number;
  /** Informer errors, each followed by a restart. */
  watchErrors: number;
}

export interface Conflict {
  readonly host: string;
  readonly path: string;
  /** `kind namespace/name` of the object that keeps the route (the older one). */
  readonly winner: string;
  readonly loser: string;
}

export interface Skipped {
  /** `kind namespace/name` */
  readonly object: string;
  readonly reason: string;
}

/**
 * The kubeconfig discovery uses: the file given (`--kubeconfig`), else the pod's service account when
 * the agent runs in a cluster, else the `KUBECONFIG` file(s). Throws when there is none of them.
 */
export function loadKubeConfig(file: string | undefined, env: NodeJS.ProcessEnv): KubeConfig {
  const kc = new KubeConfig();
  if (file !== undefined) {
    kc.loadFromFile(file);
  } else if ((env.KUBERNETES_SERVICE_HOST ?? '') !== '' && existsSync(SERVICE_ACCOUNT_TOKEN)) {
    kc.loadFromCluster();
  } else if ((env.KUBECONFIG ?? '') !== '') {
    // loadFromDefault reads KUBECONFIG first, with its list-of-files syntax.
    kc.loadFromDefault();
  } else {
    throw new Error('no kubeconfig: not in a cluster, no --kubeconfig and no KUBECONFIG');
  }
  if (kc.getCurrentCluster() === null) throw new Error('the kubeconfig names no current cluster');
  return kc;
}

export class Discovery extends EventEmitter<{ routes: [RouteSnapshot] }> {
  readonly stats: DiscoveryStats = { snapshots: 0, conflicts: 0, skipped: 0, relists: 0, watchErrors: 0 };
  readonly #log: Logger;
  readonly #networking: NetworkingV1Api;
  readonly #ingresses: Feed<V1Ingress>;
  readonly #services: Feed<V1Service>;
  readonly #clusterDomain: string;
  readonly #debounceMs: number;
  #timer: NodeJS.Timeout | undefined;
  #routes: RouteSnapshot = Object.freeze([]);
  #encoded: string | undefined;
  #conflicts = new Set<string>();
  #skipped = new Set<string>();
  #closed = false;
  #markSynced!: () => void;
  /** Resolves once the first snapshot is out (both kinds listed once). */
  readonly synced = new Promise<void>((resolve) => (this.#markSynced = resolve));

  constructor(options: DiscoveryOptions) {
    super();
    const { kubeConfig: kc, logger } = options;
    const ns = options.namespace ?? null;
    this.#log = logger.child({ component: 'discovery' });
    this.#clusterDomain = options.clusterDomain ?? 'cluster.local';
    this.#debounceMs = options.debounceMs ?? DEBOUNCE_MS;
    this.#networking = kc.makeApiClient(NetworkingV1Api);
    const core = kc.makeApiClient(CoreV1Api);
    const networking = this.#networking;
    const inNs = ns === null ? '' : `/namespaces/${encodeURIComponent(ns)}`;
    const feed = { kubeConfig: kc, log: this.#log, stats: this.stats, onChange: () => this.#schedule() };
    this.#ingresses = new Feed<V1Ingress>(
      'ingresses',
      `/apis/networking.k8s.io/v1${inNs}/ingresses`,
      feed,
      () =>
        ns === null
          ? networking.listIngressForAllNamespaces()
          : networking.listNamespacedIngress({ namespace: ns }),
    );
    this.#services = new Feed<V1Service>('services', `/api/v1${inNs}/services`, feed, () =>
      ns === null ? core.listServiceForAllNamespaces() : core.listNamespacedService({ namespace: ns }),
    );
  }

  /** Starts listing and watching; the first snapshot follows once both kinds are listed. */
  start(): void {
    this.#log.info({ event: 'discovery-starting' }, 'route discovery starting');
    this.#ingresses.start();
    this.#services.start();
  }

  /** The last snapshot emitted (empty before the first). */
  get routes(): RouteSnapshot {
    return this.#routes;
  }

  /**
   * The targets of the last snapshot as `host:port`: exactly the discovered Services' in-cluster
   * names, for widening the agent's --allow policy (TargetPolicy.setDiscovered).
   */
  allowedTargets(): string[] {
    const targets = new Set(this.#routes.map((r) => r.target.slice('http://'.length)));
    return [...targets].sort();
  }

  /**
   * Sets the public address on a discovered Ingress's `status.loadBalancer.ingress[0]` (`hostname`,
   * or `ip` for an IP address), through the status subresource, and only when it differs from what the
   * status says. Resolves true when it wrote. A conflict (the object changed meanwhile) re-reads it.
   */
  async writeStatus(object: string, address: string): Promise<boolean> {
    const [namespace = '', name = ''] = object.split('/');
    const entry = isIP(address) === 0 ? { hostname: address } : { ip: address };
    let current: V1Ingress | undefined = this.#ingresses.informer.get(name, namespace);
    for (let attempt = 1; current !== undefined; attempt++) {
      if (current.spec?.ingressClassName !== INGRESS_CLASS) break;
      const now = current.status?.loadBalancer?.ingress;
      if (now?.length === 1 && now[0]?.hostname === entry.hostname && now[0]?.ip === entry.ip) return false;
      const body: V1Ingress = { ...current, status: { loadBalancer: { ingress: [entry] } } };
      try {
        await this.#networking.replaceNamespacedIngressStatus({ name, namespace, body });
        this.#log.info(
          { event: 'discovery-status', object: `ingress ${object}`, address },
          'ingress status written',
        );
        return true;
      } catch (err) {
        if (!(err instanceof ApiException && err.code === 409) || attempt >= STATUS_ATTEMPTS) throw err;
        current = await this.#networking.readNamespacedIngress({ name, namespace });
      }
    }
    this.#log.warn(
      { event: 'discovery-status-skipped', object: `ingress ${object}` },
      'no such sluice ingress',
    );
    return false;
  }

  /** Stops both informers; no snapshot follows. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#ingresses.close();
    this.#services.close();
  }

  #schedule(): void {
    if (this.#closed || this.#timer !== undefined) return;
    // A batch, not a sliding window: a steady stream of changes still gets a snapshot every interval.
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#emit();
    }, this.#debounceMs);
  }

  #emit(): void {
    if (this.#closed || !this.#ingresses.synced || !this.#services.synced) return;
    const result = computeRoutes(
      this.#ingresses.informer.list(),
      this.#services.informer.list(),
      this.#clusterDomain,
    );
    this.#report(result);
    const encoded = encodeRouteSnapshot(result.routes);
    if (encoded === this.#encoded) return;
    const first = this.#encoded === undefined;
    this.#encoded = encoded;
    this.#routes = Object.freeze(result.routes);
    this.stats.snapshots++;
    this.#log.info({ event: 'discovery-routes', routes: result.routes.length }, 'discovered routes changed');
    this.emit('routes', this.#routes);
    if (first) this.#markSynced();
  }

  // Each conflict and each skipped object is logged and counted when it appears, not on every snapshot.
  #report({ conflicts, skipped }: ComputedRoutes): void {
    const conflictKeys = new Set<string>();
    for (const c of conflicts) {
      const key = JSON.stringify([c.host, c.path, c.winner, c.loser]);
      conflictKeys.add(key);
      if (this.#conflicts.has(key)) continue;
      this.stats.conflicts++;
      this.#log.warn(
        { event: 'discovery-conflict', host: c.host, path: c.path, winner: c.winner, loser: c.loser },
        'two objects claim one host and path; the older one keeps it',
      );
    }
    this.#conflicts = conflictKeys;
    const skippedKeys = new Set<string>();
    for (const s of skipped) {
      const key = JSON.stringify([s.object, s.reason]);
      skippedKeys.add(key);
      if (this.#skipped.has(key)) continue;
      this.stats.skipped++;
      this.#log.warn({ event: 'discovery-skipped', object: s.object, reason: s.reason }, 'object skipped');
    }
    this.#skipped = skippedKeys;
  }
}

interface FeedContext {
  kubeConfig: KubeConfig;
  log: Logger;
  stats: DiscoveryStats;
  onChange: () => void;
}

/** One kind's informer, restarted with backoff after each error. */
class Feed<T extends KubernetesObject> {
  readonly informer: ListWatch<T>;
  /** Listed at least once. */
  synced = false;
  readonly #watch: BookmarkWatch;
  readonly #ctx: FeedContext;
  readonly #kind: string;
  #lists = 0;
  #failures = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(kind: string, path: string, ctx: FeedContext, list: () => Promise<KubernetesListObject<T>>) {
    this.#kind = kind;
    this.#ctx = ctx;
    this.#watch = new BookmarkWatch(ctx.kubeConfig, () => (this.#failures = 0));
    const listed = async (): Promise<KubernetesListObject<T>> => {
      const result = await list();
      if (this.#lists++ > 0) {
        ctx.stats.relists++;
        ctx.log.info({ event: 'discovery-relisted', kind }, 'listed again');
      }
      this.synced = true;
      this.#failures = 0;
      // The informer applies the list right after this resolves: the debounce runs well after that.
      ctx.onChange();
      return result;
    };
    // makeInformer's ListWatch, with a Watch of our own (BookmarkWatch) and started by us.
    this.informer = new ListWatch<T>(path, this.#watch, listed, false);
    for (const verb of ['add', 'update', 'delete'] as const) this.informer.on(verb, () => ctx.onChange());
    this.informer.on('error', (err: unknown) => this.#failed(err));
  }

  start(): void {
    void this.informer.start();
  }

  close(): void {
    this.#closed = true;
    this.#watch.closed = true;
    clearTimeout(this.#timer);
    void this.informer.stop();
  }

  #failed(err: unknown): void {
    // Stopping aborts the watch, which the informer reports as an error too.
    if (this.#closed) return;
    this.#ctx.stats.watchErrors++;
    const ceiling = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** Math.min(this.#failures++, 16));
    const delayMs = Math.round(Math.random() * ceiling);
    this.#ctx.log.warn(
      { event: 'discovery-watch-error', kind: this.#kind, err: describe(err), retryMs: delayMs },
      'list or watch failed; restarting',
    );
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      if (!this.#closed) void this.informer.start();
    }, delayMs);
  }
}

/**
 * client-node's Watch, asking for bookmarks, and doing nothing once closed: the informer starts a
 * watch after a list even if it was stopped while the list was in flight.
 */
class BookmarkWatch extends Watch {
  closed = false;
  readonly #connected: () => void;

  constructor(kc: KubeConfig, connected: () => void) {
    super(kc);
    this.#connected = connected;
  }

  override async watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    const idle = new AbortController();
    if (this.closed) return idle;
    let failed = false;
    const controller = await super.watch(path, { ...query, allowWatchBookmarks: true }, callback, (err) => {
      failed ||= err !== null && err !== undefined;
      done(err);
    });
    if (!failed) this.#connected();
    return controller;
  }
}

function describe(err: unknown): string {
  if (err instanceof ApiException) return `HTTP ${err.code}`;
  const { statusCode, message } = (err ?? {}) as { statusCode?: unknown; message?: unknown };
  if (typeof statusCode === 'number') return `HTTP ${statusCode}`;
  return typeof message === 'string' ? message : String(err);
}

// --- From objects to routes (pure) ------------------------------------------------------------------

export interface ComputedRoutes {
  routes: DiscoveredRoute[];
  conflicts: Conflict[];
  skipped: Skipped[];
}

interface Candidate {
  route: DiscoveredRoute;
  /** Creation time in ms: the older object wins a conflict. */
  created: number;
}

/**
 * The routes that Ingresses of class `sluice` and Services annotated `sluice.dev/host` make, sorted by
 * host and path. When two objects claim one host and path, the older object keeps it (then the lower
 * `namespace/name`, then an Ingress before a Service), whatever order they were seen in.
 */
export function computeRoutes(
  ingresses: readonly V1Ingress[],
  services: readonly V1Service[],
  clusterDomain = 'cluster.local',
): ComputedRoutes {
  const byName = new Map(
    services.map((s) => [`${s.metadata?.namespace ?? ''}/${s.metadata?.name ?? ''}`, s]),
  );
  const skipped: Skipped[] = [];
  const candidates: Candidate[] = [];
  for (const ing of ingresses) {
    if (ing.spec?.ingressClassName !== INGRESS_CLASS) continue;
    candidates.push(...ingressRoutes(ing, byName, clusterDomain, skipped));
  }
  for (const svc of services) {
    if (svc.metadata?.annotations?.[HOST_ANNOTATION] === undefined) continue;
    const c = serviceRoute(svc, clusterDomain, skipped);
    if (c !== undefined) candidates.push(c);
  }
  candidates.sort(
    (a, b) =>
      a.created - b.created ||
      compare(a.route.object, b.route.object) ||
      compare(a.route.source, b.route.source),
  );
  const kept = new Map<string, DiscoveredRoute>();
  const conflicts: Conflict[] = [];
  for (const { route } of candidates) {
    const key = `${route.host} ${route.path}`;
    const winner = kept.get(key);
    if (winner === undefined) kept.set(key, route);
    else if (winner.object !== route.object || winner.source !== route.source) {
      conflicts.push({ host: route.host, path: route.path, winner: label(winner), loser: label(route) });
    }
    // The same object twice (two rules of one Ingress): its first rule stands, as in the object.
  }
  return { routes: sortRoutes([...kept.values()]), conflicts, skipped };
}

function ingressRoutes(
  ing: V1Ingress,
  services: ReadonlyMap<string, V1Service>,
  domain: string,
  skipped: Skipped[],
): Candidate[] {
  const { namespace, name, created } = identity(ing);
  const object = `${namespace}/${name}`;
  const skip = (reason: string): void => void skipped.push({ object: `ingress ${object}`, reason });
  const found: Candidate[] = [];
  const rules = ing.spec?.rules ?? [];
  if (rules.length === 0) skip('has no rules (a default backend alone names no host)');
  for (const [i, rule] of rules.entries()) {
    const host = snapshotHost(rule.host);
    if (host === undefined) {
      skip(
        rule.host === undefined
          ? `rule ${i} has no host`
          : `rule ${i} host ${show(rule.host)} is not a hostname`,
      );
      continue;
    }
    const paths = rule.http?.paths ?? [];
    if (paths.length === 0) skip(`rule ${i} (${host}) has no http paths`);
    for (const [j, p] of paths.entries()) {
      const where = `rule ${i} (${host}) path ${j}`;
      const path = snapshotPath(p.path ?? '/');
      if (path === undefined) {
        skip(`${where}: ${show(p.path)} is not a path prefix`);
        continue;
      }
      const backend = p.backend?.service;
      if (backend?.name === undefined) {
        skip(`${where}: the backend names no service`);
        continue;
      }
      if (!SERVICE_NAME.test(backend.name)) {
        skip(`${where}: service name ${show(backend.name)} is not a DNS label`);
        continue;
      }
      const port = resolvePort(
        services.get(`${namespace}/${backend.name}`),
        backend.port?.number ?? backend.port?.name,
      );
      if (typeof port === 'string') {
        skip(`${where}: service ${backend.name} ${port}`);
        continue;
      }
      const target = `http://${backend.name}.${namespace}.svc.${domain}:${port}`;
      found.push({ route: { host, path, target, source: 'ingress', object }, created });
    }
  }
  return found;
}

function serviceRoute(svc: V1Service, domain: string, skipped: Skipped[]): Candidate | undefined {
  const { namespace, name, created } = identity(svc);
  const object = `${namespace}/${name}`;
  const annotations = svc.metadata?.annotations ?? {};
  const skip = (reason: string): undefined => void skipped.push({ object: `service ${object}`, reason });
  const host = snapshotHost(annotations[HOST_ANNOTATION]);
  if (host === undefined)
    return skip(`${HOST_ANNOTATION} ${show(annotations[HOST_ANNOTATION])} is not a hostname`);
  const path = snapshotPath(annotations[PATH_ANNOTATION] ?? '/');
  if (path === undefined)
    return skip(`${PATH_ANNOTATION} ${show(annotations[PATH_ANNOTATION])} is not a path prefix`);
  const given = annotations[PORT_ANNOTATION];
  const port = resolvePort(
    svc,
    given === undefined ? undefined : /^\d+$/.test(given) ? Number(given) : given,
  );
  if (typeof port === 'string') return skip(`${given === undefined ? '' : `${PORT_ANNOTATION}: `}${port}`);
  const target = `http://${name}.${namespace}.svc.${domain}:${port}`;
  return { route: { host, path, target, source: 'service', object }, created };
}

/**
 * The Service port a backend means: a number is taken as it is when the Service is not known yet (it
 * may come later, and a number needs no lookup) and checked against its ports when it is; a name must
 * be one of them; none at all is the only port. A string says what is wrong.
 */
function resolvePort(svc: V1Service | undefined, port: number | string | undefined): number | string {
  const ports = svc?.spec?.ports ?? [];
  if (typeof port === 'number') {
    if (!(Number.isInteger(port) && port >= 1 && port <= 65535)) return `port ${port} is outside 1-65535`;
    if (svc !== undefined && ports.length > 0 && !ports.some((p) => p.port === port)) {
      return `has no port ${port} (it has ${ports.map((p) => p.port).join(', ')})`;
    }
    return port;
  }
  if (svc === undefined)
    return port === undefined ? 'names no port' : `is not found (its port ${show(port)} cannot be resolved)`;
  if (port === undefined) {
    if (ports.length === 1) return ports[0]!.port;
    return `has ${ports.length} ports: name one with ${PORT_ANNOTATION}`;
  }
  const named = ports.find((p) => p.name === port);
  return named === undefined ? `has no port named ${show(port)}` : named.port;
}

function identity(o: V1Ingress | V1Service): { namespace: string; name: string; created: number } {
  // From a list the client deserializes creationTimestamp into a Date; from a watch it stays a string.
  const stamp = o.metadata?.creationTimestamp as Date | string | undefined;
  const created = stamp instanceof Date ? stamp.getTime() : Date.parse(stamp ?? '');
  return {
    namespace: o.metadata?.namespace ?? '',
    name: o.metadata?.name ?? '',
    created: Number.isNaN(created) ? Number.MAX_SAFE_INTEGER : created,
  };
}

function label(route: DiscoveredRoute): string {
  return `${route.source} ${route.object}`;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// Object fields come from whoever may write Ingresses: quote them and bound their length in logs.
function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

export type { RouteSource };
