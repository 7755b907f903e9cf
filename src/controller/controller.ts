// The controller process, composed: the public front ends (the HTTP/1.1 listener today) whose edge
// asks the dispatcher for streams, the tunnel listener agents dial and its admission, the control plane,
// and a small admin listener. `startController` returns once every listener is bound and has logged
// its readiness line (DESIGN §5); `close()` drains (shutdown.ts): it stops accepting, sends GO_AWAY to
// every agent, lets the requests in flight finish within the grace period, then tears down.
import type { Logger } from 'pino';
import { bindFailure } from '../config/startup.js';
import { readinessLogger } from '../logging.js';
import { closeHttp, listenHttp, type Readiness } from '../ops.js';
import type { Store } from '../store/store.js';
import { listen } from '../transport/index.js';
import { createAdminApi } from './admin-api.js';
import { createAdminServer } from './admin-server.js';
import { TunnelAdmission } from './admission.js';
import type { ControllerConfig } from './config.js';
import { ControlPlane, loadAdminToken, seedFrom, seedSource } from './control.js';
import { DiscoveredRoutes } from './discovered.js';
import { ClusterDispatcher } from './dispatcher.js';
import { PublicEdge } from './edge.js';
import { Fleet } from './fleet.js';
import { HttpListener } from './http-listener.js';
import { FileCertificates } from './certificates.js';
import { ControllerMetrics } from './metrics.js';
import type { PublicListener } from './public-listener.js';
import { TcpRoutes } from './tcp-listener.js';
import { TlsPassthrough } from './tls-passthrough.js';
import { shutdown } from './shutdown.js';
import { openStore, readTunnelTls } from './startup-files.js';
import type { TcpObserver } from './tcp-connections.js';
import { Traffic } from './traffic.js';
import { TunnelRegistry } from './tunnels.js';

export { UPGRADE_CLOSE_MS } from './shutdown.js';

export interface ControllerHandle {
  /** http://host:port actually bound. */
  readonly publicUrl: string;
  /** The tunnel listener URL actually bound. */
  readonly tunnelUrl: string;
  /** http://host:port of the admin listener, or null when it is off. */
  readonly adminUrl: string | null;
  /** https://host:port of the public TLS listener, or null when there is none. */
  readonly tlsUrl: string | null;
  /** The TCP routes' listeners, to add and remove at runtime (docs/tcp.md). */
  readonly tcpRoutes: TcpRoutes;
  /** Reads the TLS certificate files again (SIGHUP); resolves whether the new ones are in use. */
  reload(): Promise<boolean>;
  /** Stops accepting, drains tunnels and in-flight requests for up to `graceMs`, then tears down. */
  close(graceMs?: number): Promise<void>;
}

export interface StartOptions {
  /** The state; default the SQLite store in `config.dataDir`. Closed with the controller either way. */
  store?: Store;
  /** Shows a newly generated admin token once; default a note on stderr. */
  announceAdminToken?: (token: string, file: string) => void;
}

export async function startController(
  config: ControllerConfig,
  logger: Logger,
  options: StartOptions = {},
): Promise<ControllerHandle> {
  // Files first: a missing or unusable certificate is found before anything is bound.
  const tunnelTls = readTunnelTls(config);
  const certificates =
    config.tls === undefined
      ? undefined
      : new FileCertificates({
          files: config.tls.certs,
          unknownName: config.tls.unknownName,
          key: 'tls.certs',
          log: logger.child({ component: 'tls' }),
        });
  let store: Store;
  try {
    store = options.store ?? (await openStore(config));
  } catch (err) {
    certificates?.close();
    throw err;
  }
  const registry = new TunnelRegistry();
  let control: ControlPlane;
  try {
    await store.seed(seedFrom(config), seedSource(config));
    control = await ControlPlane.open(store, registry, (err) =>
      logger.error({ err: err instanceof Error ? err.message : String(err) }, 'store change not applied'),
    );
  } catch (err) {
    await store.close();
    throw err;
  }
  let http: HttpListener | undefined;
  let tls: HttpListener | undefined;
  // The gauges read the edge and the public connections only when scraped, once both exist.
  const metrics: ControllerMetrics = new ControllerMetrics({
    tunnels: registry,
    clusters: () => control.clusters,
    upgradesOpen: () => (http?.counts.upgraded ?? 0) + (tls?.counts.upgraded ?? 0),
    inFlight: () => edge.inFlight,
    ...(certificates === undefined ? {} : { certificates: () => certificates.all() }),
  });
  const traffic = new Traffic();
  // With a Redis store this controller is one of a fleet: a cluster with no tunnel here may have one
  // on a peer (docs/fleet.md).
  let fleet: Fleet | undefined;
  if (config.peer !== undefined && config.store.kind !== 'sqlite') {
    try {
      fleet = await Fleet.start({ ...config, peer: config.peer }, store, registry, metrics, logger);
    } catch (err) {
      await store.close();
      throw err;
    }
  }
  const dispatcher = new ClusterDispatcher(fleet?.source ?? registry);
  const edge = new PublicEdge({
    routes: () => control.routes,
    dispatcher,
    http: config.http,
    logger: logger.child({ component: 'edge' }),
    onRequestDone: (done) => {
      metrics.requestDone(done);
      traffic.record(done);
    },
    // http.redirectHttps sends plain requests to http.redirectPort, else to the TLS listener's port as
    // bound (an https URL without a port is 443); the configured one serves until it is.
    httpsPort: () => {
      if (config.http.redirectPort !== 0) return config.http.redirectPort;
      const port = tls === undefined ? config.tls?.listen.port : new URL(tls.url).port;
      return port === '' ? 443 : Number(port ?? 443);
    },
  });

  const passthrough =
    config.tls === undefined
      ? undefined
      : new TlsPassthrough({
          routes: () => control.routes,
          dispatcher,
          peekTimeoutMs: config.tls.peekTimeoutMs,
          log: logger.child({ component: 'tls-passthrough' }),
          limits: config.tcp,
          observer: recorded(metrics.passthrough, traffic),
        });

  const frontEnds: PublicListener[] = [];
  const closers: (() => Promise<void>)[] = [];
  const ready = readinessLogger(logger);
  const closeStore = (): Promise<void> => store.close();
  if (certificates !== undefined) closers.push(async () => certificates.close());
  if (fleet !== undefined) closers.push(() => fleet.close());
  let stopping = false;
  try {
    http = await HttpListener.start(config, edge);
    frontEnds.push(http);
    ready.info({ event: 'listening', listener: 'public', url: http.url }, 'public listener ready');
    let tlsUrl: string | null = null;
    if (config.tls !== undefined) {
      const listener = await HttpListener.start(
        {
          listen: config.tls.listen,
          http: config.http,
          certificates: certificates!,
          key: 'tls.listen',
          log: logger.child({ component: 'tls' }),
          ...(passthrough === undefined ? {} : { passthrough }),
        },
        edge,
      );
      frontEnds.push(listener);
      tls = listener;
      tlsUrl = listener.url;
      ready.info({ event: 'listening', listener: 'tls', url: tlsUrl }, 'TLS listener ready');
    }

    const tcpRoutes = new TcpRoutes({
      dispatcher,
      limits: config.tcp,
      log: logger.child({ component: 'tcp' }),
      observer: recorded(metrics.tcp, traffic),
      graceMs: config.tunnel.gracePeriod,
    });
    for (const [i, route] of config.tcpRoutes.entries()) {
      const listener = await tcpRoutes.add(route).catch((err: unknown) => {
        throw bindFailure(`tcpRoutes[${i}].listen`, route.listen, err);
      });
      ready.info({ event: 'listening', listener: 'tcp', url: listener.url }, 'TCP route listener ready');
    }
    // One front end for them all, so that routes added at runtime drain as the configured ones do.
    frontEnds.push(tcpRoutes.frontEnd);

    const tunnelLog = logger.child({ component: 'tunnel' });
    const discovered = new DiscoveredRoutes({
      control,
      settings: config.discovery,
      hostsOf: (cluster) => config.clusters.find((c) => c.name === cluster)?.hosts ?? [],
      tunnels: (cluster) => registry.count(cluster),
      ...(fleet === undefined
        ? {}
        : {
            tunnelsElsewhere: (cluster: string) =>
              fleet.instances().some((i) => !i.self && (i.clusters[cluster] ?? 0) > 0),
          }),
      metrics,
      log: logger,
    });
    closers.push(async () => discovered.close());
    await discovered.start();
    const admission = new TunnelAdmission({
      session: config.tunnel,
      control,
      registry,
      metrics,
      log: tunnelLog,
      stopping: () => stopping,
      discovered,
    });
    closers.push(async () => admission.close());
    const tunnels = await listen(
      {
        url: config.tunnelListen,
        ...tunnelTls,
        onError: (err) => tunnelLog.error({ err: err.message }, 'tunnel listener error'),
      },
      (transport, peer) => admission.accept(transport, `${peer.remoteAddress}:${peer.remotePort}`),
    ).catch((err: unknown) => {
      throw bindFailure('tunnelListen', config.tunnelListen, err);
    });
    closers.push(() => tunnels.close());
    ready.info({ event: 'listening', listener: 'tunnel', url: tunnels.url }, 'tunnel listener ready');

    let adminUrl: string | null = null;
    if (config.adminListen !== null) {
      const adminTokenHash = await loadAdminToken(
        config,
        store,
        options.announceAdminToken ?? announceOnStderr,
        (message) => logger.info({ event: 'admin-token' }, message),
      );
      const api = createAdminApi(
        control,
        registry,
        adminTokenHash,
        traffic,
        fleet === undefined ? undefined : () => fleet.instances(),
        tcpRoutes,
        passthrough,
      );
      const admin = createAdminServer(registry, { edge, http }, api, metrics, () =>
        readiness(stopping, store, fleet),
      );
      adminUrl = await listenHttp(admin, config.adminListen, 'adminListen');
      closers.push(() => closeHttp(admin));
      ready.info({ event: 'listening', listener: 'admin', url: adminUrl }, 'admin listener ready');
    }
    // The drain waits for passthrough and TCP route connections as for upgraded ones, within the
    // grace period; without them, a controller with no HTTP request in flight cut them at once.
    const relayed = inFlightOf(edge, tcpRoutes);
    const served = passthrough === undefined ? relayed : inFlightOf(relayed, passthrough);
    const requests = fleet === undefined ? served : inFlightOf(served, fleet.relaying);
    const running = { frontEnds, requests, registry, tunnels, closers, fleet };
    return {
      publicUrl: http.url,
      tunnelUrl: tunnels.url,
      adminUrl,
      tlsUrl,
      tcpRoutes,
      reload: () => certificates?.reload() ?? Promise.resolve(false),
      close: once((graceMs = config.tunnel.gracePeriod) => {
        stopping = true;
        return shutdown(running, graceMs, logger).finally(closeStore);
      }),
    };
  } catch (err) {
    await Promise.allSettled([...frontEnds.map((f) => f.close()), ...closers.map((close) => close())]);
    await closeStore();
    throw err;
  }
}

/**
 * What /readyz answers: not ready while draining (a load balancer stops sending new connections). A
 * fleet member whose Redis is away stays ready, serving from its caches, and says so.
 */
function readiness(stopping: boolean, store: Store, fleet: Fleet | undefined): Readiness {
  const reasons: string[] = [];
  if (stopping) reasons.push('draining: the controller is stopping');
  const health = store.health();
  if (!health.ok) reasons.push(`store unavailable, serving from the cache: ${health.reason}`);
  const problem = fleet?.problem;
  if (problem !== undefined) reasons.push(`fleet presence unavailable: ${problem}`);
  return { ready: !stopping, reasons };
}

/** `metrics`, and every finished connection kept for /api/traffic too. */
function recorded(metrics: TcpObserver, traffic: Traffic): TcpObserver {
  return {
    opened: (route, kind) => metrics.opened?.(route, kind),
    done: (done) => {
      metrics.done?.(done);
      traffic.recordConnection(done);
    },
  };
}

type InFlight = { readonly inFlight: number; whenIdle(): Promise<void> };

/** Requests and relayed peer streams together, for the drain. */
function inFlightOf(a: InFlight, b: InFlight): InFlight {
  return {
    get inFlight() {
      return a.inFlight + b.inFlight;
    },
    async whenIdle() {
      while (a.inFlight + b.inFlight > 0) await Promise.all([a.whenIdle(), b.whenIdle()]);
    },
  };
}

function announceOnStderr(token: string, file: string): void {
  process.stderr.write(
    `sluice: generated the admin token (shown once; also in ${file}, mode 0600):\n  ${token}\n`,
  );
}

function once<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  let done: Promise<void> | undefined;
  return (...args) => (done ??= fn(...args));
}
