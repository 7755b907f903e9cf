// The controller's Prometheus metrics, served at `/metrics` on the admin listener (docs/metrics.md).
// Requests are counted from the edge's onRequestDone hook into plain numbers per cluster and route,
// published when a scrape asks; tunnels, streams, upgrades and ping round trips are read off the live
// state at that moment. Nothing here runs per byte, and per request only a few additions and one
// histogram observation.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { TcpObserver } from './tcp-connections.js';
import { SluiceError } from '../errors.js';
import { createMetricsRegistry, STATUS_CLASSES, statusClass } from '../metrics.js';
import type { RequestDone } from './edge.js';
import type { TunnelRegistry } from './tunnels.js';

/** Request durations in seconds: from a 1 ms answer on the same network to a minute-long download. */
export const DURATION_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
] as const;

/** What the gauges read at scrape time. */
export interface ControllerGauges {
  readonly tunnels: TunnelRegistry;
  /** The clusters the store knows, so that one without a tunnel shows 0 rather than nothing. */
  clusters(): Iterable<string>;
  /** Upgraded public connections open. */
  upgradesOpen(): number;
  /** Requests being served. */
  inFlight(): number;
  /** The public TLS listener's certificates, when there is one. */
  certificates?(): readonly { readonly names: readonly string[]; readonly notAfter: number }[];
}

/** One cluster's request counts: per route, a count per status class; and its bytes. */
interface ClusterCounts {
  readonly routes: Map<string, Float64Array>;
  bytesIn: number;
  bytesOut: number;
  readonly duration: { observe(seconds: number): void };
}

export class ControllerMetrics {
  readonly registry: Registry = createMetricsRegistry();
  /** By cluster name; '' for requests that matched no route. */
  readonly #clusters = new Map<string, ClusterCounts>();
  readonly #duration: Histogram<'cluster'>;
  readonly #errors: Counter<'code'>;
  readonly #peerStreams: Counter<'peer' | 'direction' | 'result'>;
  readonly #discoveryRefused: Counter<'cluster' | 'reason'>;
  readonly #tcpConnections: Counter<'route' | 'outcome'>;
  readonly #tcpBytes: Counter<'route' | 'direction'>;
  readonly #tcpOpen: Gauge<'route'>;
  readonly #passthroughConnections: Counter<'host' | 'outcome'>;
  readonly #passthroughBytes: Counter<'host' | 'direction'>;
  readonly #passthroughOpen: Gauge<'host'>;

  constructor(gauges: ControllerGauges) {
    const registers = [this.registry];
    const clusters = this.#clusters;
    new Counter({
      name: 'sluice_requests_total',
      help: 'Requests finished, by cluster, route and status class (none: no status was sent).',
      labelNames: ['cluster', 'route', 'status'] as const,
      registers,
      collect() {
        this.reset();
        for (const [cluster, counts] of clusters) {
          for (const [route, byStatus] of counts.routes) {
            byStatus.forEach((n, i) => {
              if (n > 0) this.inc({ cluster, route, status: STATUS_CLASSES[i] }, n);
            });
          }
        }
      },
    });
    this.#duration = new Histogram({
      name: 'sluice_request_duration_seconds',
      help: 'Time from a plain HTTP request to the end of its response, by cluster (upgrades excluded).',
      labelNames: ['cluster'] as const,
      buckets: [...DURATION_BUCKETS],
      registers,
    });
    new Counter({
      name: 'sluice_bytes_in_total',
      help: 'Bytes from clients towards targets (request bodies, upgraded client bytes), by cluster.',
      labelNames: ['cluster'] as const,
      registers,
      collect() {
        this.reset();
        for (const [cluster, counts] of clusters) this.inc({ cluster }, counts.bytesIn);
      },
    });
    new Counter({
      name: 'sluice_bytes_out_total',
      help: 'Bytes to clients (response bodies, upgraded target bytes, error pages), by cluster.',
      labelNames: ['cluster'] as const,
      registers,
      collect() {
        this.reset();
        for (const [cluster, counts] of clusters) this.inc({ cluster }, counts.bytesOut);
      },
    });
    this.#errors = new Counter({
      name: 'sluice_errors_total',
      help: 'Tunnel and stream errors by SLUICE_ERR_* code (docs/errors.md).',
      labelNames: ['code'] as const,
      registers,
    });
    this.#peerStreams = new Counter({
      name: 'sluice_peer_streams_total',
      help:
        'Streams between the controllers of a fleet, by peer instance id, direction (out: sent to the peer; ' +
        'in: from it) and result (relayed, or refused: no usable local tunnel).',
      labelNames: ['peer', 'direction', 'result'] as const,
      registers,
    });
    this.#discoveryRefused = new Counter({
      name: 'sluice_discovery_refused_total',
      help:
        'Discovered routes an agent sent that were not stored, by cluster and reason (not_allowed: outside ' +
        'clusters[].hosts; conflict: another route holds the host).',
      labelNames: ['cluster', 'reason'] as const,
      registers,
    });
    this.#tcpConnections = new Counter({
      name: 'sluice_tcp_connections_total',
      help: 'TCP route connections finished, by route (its bound listen address) and outcome (docs/tcp.md).',
      labelNames: ['route', 'outcome'] as const,
      registers,
    });
    this.#tcpBytes = new Counter({
      name: 'sluice_tcp_bytes_total',
      help: 'Bytes of finished TCP route connections, by route and direction (in: client to target).',
      labelNames: ['route', 'direction'] as const,
      registers,
    });
    this.#tcpOpen = new Gauge({
      name: 'sluice_tcp_open_connections',
      help: 'TCP route connections open now, by route.',
      labelNames: ['route'] as const,
      registers,
    });
    this.#passthroughConnections = new Counter({
      name: 'sluice_tls_passthrough_connections_total',
      help: 'TLS passthrough connections finished, by route host and outcome (as TCP routes, docs/tcp.md).',
      labelNames: ['host', 'outcome'] as const,
      registers,
    });
    this.#passthroughBytes = new Counter({
      name: 'sluice_tls_passthrough_bytes_total',
      help: 'Bytes of finished TLS passthrough connections, by route host and direction (in: client to target).',
      labelNames: ['host', 'direction'] as const,
      registers,
    });
    this.#passthroughOpen = new Gauge({
      name: 'sluice_tls_passthrough_open_connections',
      help: 'TLS passthrough connections open now, by route host.',
      labelNames: ['host'] as const,
      registers,
    });
    this.#tunnelGauges(gauges);
    new Gauge({
      name: 'sluice_tls_cert_expiry_seconds',
      help: 'Seconds until each public TLS certificate expires (negative once it has), by the first name it serves.',
      labelNames: ['name'] as const,
      registers,
      collect() {
        this.reset();
        const now = Date.now();
        for (const cert of gauges.certificates?.() ?? []) {
          this.set({ name: cert.names[0]! }, Math.round((cert.notAfter - now) / 1000));
        }
      },
    });
    new Gauge({
      name: 'sluice_upgrades_open',
      help: 'Upgraded public connections (WebSocket or other) open.',
      registers,
      collect() {
        this.set(gauges.upgradesOpen());
      },
    });
    new Gauge({
      name: 'sluice_requests_in_flight',
      help: 'Requests being served, plain and upgraded.',
      registers,
      collect() {
        this.set(gauges.inFlight());
      },
    });
  }

  /** The edge's `onRequestDone`: counts one finished request. */
  readonly requestDone = (done: RequestDone): void => {
    const counts = this.#counts(done.cluster ?? '');
    const route = done.route ?? '';
    let byStatus = counts.routes.get(route);
    if (byStatus === undefined) {
      byStatus = new Float64Array(STATUS_CLASSES.length);
      counts.routes.set(route, byStatus);
    }
    byStatus[statusClass(done.status)]! += 1;
    counts.bytesIn += done.bytesIn;
    counts.bytesOut += done.bytesOut;
    // An upgrade lasts as long as its connection: its lifetime is no request latency.
    if (done.kind === 'http') counts.duration.observe(done.ms / 1000);
    if (done.code !== undefined) this.#errors.inc({ code: done.code });
    if (done.peer !== undefined)
      this.#peerStreams.inc({ peer: done.peer, direction: 'out', result: 'relayed' });
  };

  /** A stream a peer controller sent here: relayed to a local tunnel, or refused. */
  readonly peerStreamReceived = (peer: string, relayed: boolean): void => {
    this.#peerStreams.inc({ peer, direction: 'in', result: relayed ? 'relayed' : 'refused' });
  };

  /** Discovered routes refused, each counted when it first appears in its cluster's snapshots. */
  discoveryRefused(cluster: string, reason: 'not_allowed' | 'conflict', n: number): void {
    if (n > 0) this.#discoveryRefused.inc({ cluster, reason }, n);
  }

  /** Counts the code of a tunnel that closed with an error or failed its handshake. */
  tunnelError(err: Error | undefined): void {
    if (err instanceof SluiceError) this.#errors.inc({ code: err.code });
  }

  #counts(cluster: string): ClusterCounts {
    let counts = this.#clusters.get(cluster);
    if (counts === undefined) {
      counts = { routes: new Map(), bytesIn: 0, bytesOut: 0, duration: this.#duration.labels(cluster) };
      this.#clusters.set(cluster, counts);
    }
    return counts;
  }

  /** What a TCP listener reports: opened connections, and each one's end with its bytes. */
  readonly tcp: TcpObserver = {
    opened: (route) => this.#tcpOpen.inc({ route }),
    done: (d) => {
      this.#tcpConnections.inc({ route: d.route, outcome: d.outcome });
      if (d.outcome === 'over_limit') return;
      this.#tcpOpen.dec({ route: d.route });
      this.#tcpBytes.inc({ route: d.route, direction: 'in' }, d.bytesIn);
      this.#tcpBytes.inc({ route: d.route, direction: 'out' }, d.bytesOut);
    },
  };

  /** The same for TLS passthrough, by the route's host. */
  readonly passthrough: TcpObserver = {
    opened: (host) => this.#passthroughOpen.inc({ host }),
    done: (d) => {
      this.#passthroughConnections.inc({ host: d.route, outcome: d.outcome });
      if (d.outcome === 'over_limit') return;
      this.#passthroughOpen.dec({ host: d.route });
      this.#passthroughBytes.inc({ host: d.route, direction: 'in' }, d.bytesIn);
      this.#passthroughBytes.inc({ host: d.route, direction: 'out' }, d.bytesOut);
    },
  };

  #tunnelGauges(gauges: ControllerGauges): void {
    const registers = [this.registry];
    new Gauge({
      name: 'sluice_tunnels_up',
      help: 'Tunnels registered, by cluster (draining ones until they close).',
      labelNames: ['cluster'] as const,
      registers,
      collect() {
        this.reset();
        for (const cluster of gauges.clusters()) this.set({ cluster }, 0);
        for (const tunnel of gauges.tunnels.all()) this.inc({ cluster: tunnel.cluster });
      },
    });
    new Gauge({
      name: 'sluice_streams_open',
      help: 'Streams open on the tunnels, by cluster.',
      labelNames: ['cluster'] as const,
      registers,
      collect() {
        this.reset();
        for (const cluster of gauges.clusters()) this.set({ cluster }, 0);
        for (const t of gauges.tunnels.all()) this.inc({ cluster: t.cluster }, t.session.streamCount);
      },
    });
    new Gauge({
      name: 'sluice_tunnel_rtt_seconds',
      help: "Last ping round trip of each tunnel; tunnel is the agent's slot (--tunnels N).",
      labelNames: ['cluster', 'agent', 'replica', 'tunnel'] as const,
      registers,
      collect() {
        this.reset();
        for (const t of gauges.tunnels.all()) {
          if (t.session.rttMs < 0) continue;
          const tunnel = t.slot === undefined ? '' : String(t.slot.index);
          this.set(
            { cluster: t.cluster, agent: t.agent, replica: t.replica, tunnel },
            t.session.rttMs / 1000,
          );
        }
      },
    });
  }
}
