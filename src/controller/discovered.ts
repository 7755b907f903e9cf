// Routes an agent discovered in its cluster (docs/kubernetes.md, "Discovery"), as the controller takes
// them: each snapshot arrives on a control stream (docs/protocol.md §12), is checked again here (the
// agent is not trusted), filtered by the hosts the cluster may claim (`clusters[].hosts`), and replaces
// the cluster's `agent` routes in one store write. The reply tells the agent what was refused, so that
// it leaves those Ingresses' status alone, and the public address to write into the others.
//
// A cluster whose last tunnel is gone keeps its routes for the grace period (its agent restarting, a
// rolling update), then loses them: a route to a cluster that never comes back would answer 503
// forever and hold its host against every other claim. A tunnel coming back cancels the removal.
import type { Logger } from 'pino';
import { ErrorCode } from '../protocol/constants.js';
import {
  CONTROL_KIND,
  decodeRouteSnapshot,
  type DiscoveredRoute,
  encodeRoutesReply,
  MAX_SNAPSHOT_BYTES,
  readMessage,
  type RefusedRoute,
  ROUTES_MESSAGE,
  ROUTES_VERSION,
  type RouteSnapshot,
} from '../protocol/route-snapshot.js';
import type { Stream } from '../tunnel/stream.js';
import type { DiscoverySettings } from './config.js';
import type { ControlPlane } from './control.js';
import type { ControllerMetrics } from './metrics.js';

export interface DiscoveredOptions {
  control: ControlPlane;
  settings: DiscoverySettings;
  /** The host patterns a cluster may claim (`clusters[].hosts`); none for a cluster not in the config. */
  hostsOf: (cluster: string) => readonly string[];
  /** Tunnels of the cluster on this controller. */
  tunnels: (cluster: string) => number;
  /** Whether another controller of the fleet holds tunnels of the cluster (it keeps its routes then). */
  tunnelsElsewhere?: (cluster: string) => boolean;
  metrics: ControllerMetrics;
  log: Logger;
}

/** Whether a route host (`app.x` or `*.x`) falls within one of the patterns. */
export function hostAllowed(patterns: readonly string[], host: string): boolean {
  return patterns.some((p) => (p.startsWith('*.') ? host.endsWith(p.slice(1)) : host === p));
}

export class DiscoveredRoutes {
  readonly #o: DiscoveredOptions;
  readonly #log: Logger;
  /** Per cluster, the last write in flight: snapshots of one cluster apply in the order they came. */
  readonly #tails = new Map<string, Promise<void>>();
  /** Per cluster, the refusals of its last snapshot, so that each is logged and counted once. */
  readonly #refused = new Map<string, Set<string>>();
  readonly #graceTimers = new Map<string, NodeJS.Timeout>();
  #closed = false;

  constructor(options: DiscoveredOptions) {
    this.#o = options;
    this.#log = options.log.child({ component: 'discovery' });
  }

  /**
   * Starts the grace period of every cluster that holds agent routes and no tunnel here: after a
   * restart, a cluster whose agent never comes back must lose its routes all the same.
   */
  async start(): Promise<void> {
    const routes = await this.#o.control.store.listRoutes();
    const clusters = new Set(routes.filter((r) => r.source === 'agent').map((r) => r.cluster));
    for (const cluster of clusters) if (this.#o.tunnels(cluster) === 0) this.tunnelsGone(cluster);
  }

  /** A control stream an agent of `cluster` opened. */
  handleStream(cluster: string, stream: Stream): void {
    const meta = stream.meta;
    if (meta.kind !== CONTROL_KIND || meta.type !== ROUTES_MESSAGE || meta.v !== ROUTES_VERSION) {
      const what = JSON.stringify({ type: meta.type, v: meta.v }).slice(0, 100);
      stream.reset(ErrorCode.REFUSED_STREAM, `unsupported control message ${what}`);
      return;
    }
    readMessage(stream, MAX_SNAPSHOT_BYTES).then(
      (body) => this.#received(cluster, stream, body.toString('utf8')),
      (err: Error) => {
        this.#log.warn(
          { event: 'discovery-snapshot-failed', cluster, err: err.message },
          'snapshot not read',
        );
        if (!stream.destroyed) stream.reset(ErrorCode.FRAME_SIZE_ERROR, err.message);
      },
    );
  }

  /** A tunnel of `cluster` came up: its routes stay. */
  tunnelUp(cluster: string): void {
    const timer = this.#graceTimers.get(cluster);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#graceTimers.delete(cluster);
    this.#log.info({ event: 'discovery-grace-cancelled', cluster }, 'a tunnel came back; routes kept');
  }

  /** The last tunnel of `cluster` here is gone: its routes go after the grace period. */
  tunnelsGone(cluster: string): void {
    if (this.#closed || this.#graceTimers.has(cluster)) return;
    const graceMs = this.#o.settings.gracePeriodMs;
    const timer = setTimeout(() => {
      this.#graceTimers.delete(cluster);
      this.#expire(cluster);
    }, graceMs);
    timer.unref();
    this.#graceTimers.set(cluster, timer);
    this.#log.info(
      { event: 'discovery-grace-started', cluster, graceMs },
      "the cluster's last tunnel here is gone; its discovered routes go after the grace period",
    );
  }

  close(): void {
    this.#closed = true;
    for (const timer of this.#graceTimers.values()) clearTimeout(timer);
    this.#graceTimers.clear();
  }

  #expire(cluster: string): void {
    if (this.#closed || this.#o.tunnels(cluster) > 0) return;
    // The routes are the fleet's, in the shared store: a peer still serving the cluster keeps them, and
    // starts the period itself once its own last tunnel goes.
    if (this.#o.tunnelsElsewhere?.(cluster) === true) {
      this.#log.info(
        { event: 'discovery-grace-kept', cluster },
        'another controller of the fleet holds tunnels of the cluster; its routes stay',
      );
      return;
    }
    this.#serialized(cluster, async () => {
      const { stored } = await this.#o.control.replaceAgentRoutes(cluster, []);
      this.#refused.delete(cluster);
      this.#log.info(
        {
          event: 'discovery-expired',
          cluster,
          graceMs: this.#o.settings.gracePeriodMs,
          routes: stored.length,
        },
        "the cluster's last tunnel has been gone for the grace period; its discovered routes are removed",
      );
    }).catch((err: unknown) =>
      this.#log.error(
        { event: 'discovery-expire-failed', cluster, err: describe(err) },
        'routes not removed',
      ),
    );
  }

  #received(cluster: string, stream: Stream, text: string): void {
    const decoded = decodeRouteSnapshot(text);
    if (!decoded.ok) {
      this.#log.warn(
        { event: 'discovery-snapshot-refused', cluster, reason: decoded.reason },
        'snapshot refused',
      );
      stream.reset(ErrorCode.PROTOCOL_ERROR, decoded.reason.slice(0, 200));
      return;
    }
    this.#serialized(cluster, () => this.#apply(cluster, decoded.routes)).then(
      (refused) => {
        const stored = decoded.routes.length - refused.length;
        const address = this.#o.settings.address;
        stream.end(encodeRoutesReply({ stored, refused, ...(address === undefined ? {} : { address }) }));
      },
      (err: unknown) => {
        this.#log.error(
          { event: 'discovery-store-failed', cluster, err: describe(err) },
          'snapshot not stored',
        );
        if (!stream.destroyed) stream.reset(ErrorCode.INTERNAL_ERROR, 'the snapshot could not be stored');
      },
    );
  }

  async #apply(cluster: string, routes: RouteSnapshot): Promise<RefusedRoute[]> {
    const patterns = this.#o.hostsOf(cluster);
    const refused: (RefusedRoute & { kind: 'not_allowed' | 'conflict' })[] = [];
    const allowed: DiscoveredRoute[] = [];
    for (const route of routes) {
      if (hostAllowed(patterns, route.host)) allowed.push(route);
      else {
        const reason =
          patterns.length === 0
            ? `cluster ${cluster} may claim no host (it has no clusters[].hosts)`
            : `host ${route.host} is outside the hosts cluster ${cluster} may claim (${patterns.join(', ')})`;
        refused.push({ ...pick(route), reason, kind: 'not_allowed' });
      }
    }
    const result = await this.#o.control.replaceAgentRoutes(
      cluster,
      allowed.map(({ host, path, target }) => ({ host, path, cluster, target })),
    );
    const byKey = new Map(allowed.map((r) => [`${r.host} ${r.path}`, r]));
    for (const c of result.conflicts) {
      const route = byKey.get(`${c.host} ${c.path}`)!;
      refused.push({
        ...pick(route),
        reason: `host ${c.host} is already claimed by ${c.holder}`,
        kind: 'conflict',
      });
    }
    this.#report(cluster, refused, routes.length);
    return refused.map(({ kind: _kind, ...r }) => r);
  }

  // Each refusal is logged and counted when it first appears, not again on every snapshot.
  #report(
    cluster: string,
    refused: (RefusedRoute & { kind: 'not_allowed' | 'conflict' })[],
    total: number,
  ): void {
    const before = this.#refused.get(cluster) ?? new Set<string>();
    const now = new Set<string>();
    const counts = { not_allowed: 0, conflict: 0 };
    for (const r of refused) {
      const key = JSON.stringify([r.host, r.path, r.object, r.reason]);
      now.add(key);
      if (before.has(key)) continue;
      counts[r.kind]++;
      this.#log.warn(
        {
          event: 'discovery-refused',
          cluster,
          host: r.host,
          path: r.path,
          object: r.object,
          reason: r.reason,
        },
        'discovered route refused',
      );
    }
    this.#refused.set(cluster, now);
    this.#o.metrics.discoveryRefused(cluster, 'not_allowed', counts.not_allowed);
    this.#o.metrics.discoveryRefused(cluster, 'conflict', counts.conflict);
    this.#log.info(
      { event: 'discovery-routes', cluster, routes: total - refused.length, refused: refused.length },
      'discovered routes stored',
    );
  }

  #serialized<T>(cluster: string, run: () => Promise<T>): Promise<T> {
    const tail = this.#tails.get(cluster) ?? Promise.resolve();
    const next = tail.then(run);
    const settled = next.then(
      () => {},
      () => {},
    );
    this.#tails.set(cluster, settled);
    void settled.then(() => {
      if (this.#tails.get(cluster) === settled) this.#tails.delete(cluster);
    });
    return next;
  }
}

function pick(route: DiscoveredRoute): Omit<RefusedRoute, 'reason'> {
  return { host: route.host, path: route.path, object: `${route.source} ${route.object}` };
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
