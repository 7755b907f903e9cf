// The controller process, composed: the public front ends (the HTTP/1.1 listener today) whose edge
// asks the dispatcher for streams, the tunnel listener agents dial and its admission, the control plane,
// and a small admin listener. `startController` returns once every listener is bound and has logged
// its readiness line (DESIGN §5); `close()` drains (shutdown.ts): it stops accepting, sends GO_AWAY to
// every agent, lets the requests in flight finish within the grace period, then tears down.
import type { Logger } from 'pino';
import { bindFailure } from '../config/startup.js';
import { readinessLogger } from '../logging.js';
import { closeHttp, listenHttp } from '../ops.js';
import type { Store } from '../store/store.js';
import { listen } from '../transport/index.js';
import { createAdminApi } from './admin-api.js';
import { createAdminServer } from './admin-server.js';
import { TunnelAdmission } from './admission.js';
import type { ControllerConfig } from './config.js';
import { ControlPlane, loadAdminToken, seedFrom, seedSource } from './control.js';
import { ClusterDispatcher } from './dispatcher.js';
import { PublicEdge } from './edge.js';
import { HttpListener } from './http-listener.js';
import { ControllerMetrics } from './metrics.js';
import type { PublicListener } from './public-listener.js';
import { shutdown } from './shutdown.js';
import { openStore, readTunnelTls } from './startup-files.js';
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
  const store = options.store ?? (await openStore(config));
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
  // The gauges read the edge and the public connections only when scraped, once both exist.
  const metrics: ControllerMetrics = new ControllerMetrics({
    tunnels: registry,
    clusters: () => control.clusters,
    upgradesOpen: () => http?.counts.upgraded ?? 0,
    inFlight: () => edge.inFlight,
  });
  const traffic = new Traffic();
  const edge = new PublicEdge({
    routes: () => control.routes,
    dispatcher: new ClusterDispatcher(registry),
    http: config.http,
    logger: logger.child({ component: 'edge' }),
    proto: 'http',
    onRequestDone: (done) => {
      metrics.requestDone(done);
      traffic.record(done);
    },
  });

  const frontEnds: PublicListener[] = [];
  const closers: (() => Promise<void>)[] = [];
  const ready = readinessLogger(logger);
  const closeStore = (): Promise<void> => store.close();
  let stopping = false;
  try {
    http = await HttpListener.start(config, edge);
    frontEnds.push(http);
    ready.info({ event: 'listening', listener: 'public', url: http.url }, 'public listener ready');

    const tunnelLog = logger.child({ component: 'tunnel' });
    const admission = new TunnelAdmission({
      session: config.tunnel,
      control,
      registry,
      metrics,
      log: tunnelLog,
      stopping: () => stopping,
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
      const adminToken = loadAdminToken(config, options.announceAdminToken ?? announceOnStderr);
      const api = createAdminApi(control, registry, adminToken, traffic);
      const admin = createAdminServer(registry, { edge, http }, api, metrics);
      adminUrl = await listenHttp(admin, config.adminListen, 'adminListen');
      closers.push(() => closeHttp(admin));
      ready.info({ event: 'listening', listener: 'admin', url: adminUrl }, 'admin listener ready');
    }
    const running = { frontEnds, requests: edge, registry, tunnels, closers };
    return {
      publicUrl: http.url,
      tunnelUrl: tunnels.url,
      adminUrl,
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

function announceOnStderr(token: string, file: string): void {
  process.stderr.write(
    `sluice: generated the admin token (shown once; also in ${file}, mode 0600):\n  ${token}\n`,
  );
}

function once<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  let done: Promise<void> | undefined;
  return (...args) => (done ??= fn(...args));
}
