// The controller process: the public HTTP edge, the tunnel listener agents dial, and a small admin
// listener for probes. `startController` returns once every listener is bound and has logged its
// readiness line (DESIGN §5); `close()` drains: it stops accepting, sends GO_AWAY to every agent, lets
// the requests in flight finish within the grace period, then tears down.
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { readinessLogger } from '../logging.js';
import { openSqliteStore } from '../store/sqlite.js';
import type { Store } from '../store/store.js';
import { memoryReport } from '../diagnostics.js';
import { sendMetrics } from '../metrics.js';
import { SessionError, SluiceError } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';
import { listen, type TunnelListener } from '../transport/index.js';
import { Session } from '../tunnel/session.js';
import { type AdminApi, createAdminApi, sendJson } from './admin-api.js';
import type { ControllerConfig, HostPort } from './config.js';
import { ControlPlane, loadAdminToken, seedFrom } from './control.js';
import { serveDashboard } from './dashboard.js';
import { PublicEdge } from './edge.js';
import { ControllerMetrics } from './metrics.js';
import { Traffic } from './traffic.js';
import { hashToken, parseSlotCaps, type Tunnel, TunnelRegistry, type TunnelSlotId } from './tunnels.js';

/**
 * After the grace period, how long upgraded connections get to finish the close the drain starts (a FIN
 * each way) before what is left is cut.
 */
export const UPGRADE_CLOSE_MS = 1000;

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
  const store = options.store ?? openSqliteStore(config.dataDir);
  const registry = new TunnelRegistry();
  let control: ControlPlane;
  try {
    store.seed(seedFrom(config));
    control = new ControlPlane(store, registry);
  } catch (err) {
    store.close();
    throw err;
  }
  // The gauges read the edge and the public connections only when scraped, once both exist.
  const metrics: ControllerMetrics = new ControllerMetrics({
    tunnels: registry,
    clusters: () => control.store.listClusters().map((c) => c.name),
    upgradesOpen: () => connections.counts.upgraded,
    inFlight: () => edge.inFlight,
  });
  const traffic = new Traffic();
  const edge = new PublicEdge({
    routes: () => control.routes,
    registry,
    http: config.http,
    logger: logger.child({ component: 'edge' }),
    proto: 'http',
    onRequestDone: (done) => {
      metrics.requestDone(done);
      traffic.record(done);
    },
  });

  const connections = new PublicConnections(edge);
  const publicServer = createPublicServer(config, edge, connections);
  const closers: (() => Promise<void>)[] = [];
  const ready = readinessLogger(logger);
  const closeStore = (): void => store.close();
  let stopping = false;
  try {
    const publicUrl = await listenHttp(publicServer, config.listen);
    closers.push(() => closeHttp(publicServer));
    ready.info({ event: 'listening', listener: 'public', url: publicUrl }, 'public listener ready');

    const tunnelLog = logger.child({ component: 'tunnel' });
    const tunnels = await listen(
      {
        url: config.tunnelListen,
        cert: config.tunnelCert === undefined ? undefined : readFileSync(config.tunnelCert),
        key: config.tunnelKey === undefined ? undefined : readFileSync(config.tunnelKey),
        onError: (err) => tunnelLog.error({ err: err.message }, 'tunnel listener error'),
      },
      (transport, peer) =>
        acceptTunnel(transport, `${peer.remoteAddress}:${peer.remotePort}`, {
          config,
          control,
          registry,
          metrics,
          log: tunnelLog,
          stopping: () => stopping,
        }),
    );
    closers.push(() => tunnels.close());
    ready.info({ event: 'listening', listener: 'tunnel', url: tunnels.url }, 'tunnel listener ready');

    let adminUrl: string | null = null;
    if (config.adminListen !== null) {
      const adminToken = loadAdminToken(config, options.announceAdminToken ?? announceOnStderr);
      const api = createAdminApi(control, registry, adminToken, traffic);
      const admin = createAdminServer(registry, edge, connections, api, metrics);
      adminUrl = await listenHttp(admin, config.adminListen);
      closers.push(() => closeHttp(admin));
      ready.info({ event: 'listening', listener: 'admin', url: adminUrl }, 'admin listener ready');
    }
    return {
      publicUrl,
      tunnelUrl: tunnels.url,
      adminUrl,
      close: once((graceMs = config.tunnel.gracePeriod) => {
        stopping = true;
        return shutdown(
          { publicServer, connections, edge, registry, tunnels, closers },
          graceMs,
          logger,
        ).finally(closeStore);
      }),
    };
  } catch (err) {
    await Promise.allSettled(closers.map((close) => close()));
    closeStore();
    throw err;
  }
}

function announceOnStderr(token: string, file: string): void {
  process.stderr.write(
    `sluice: generated the admin token (shown once; also in ${file}, mode 0600):\n  ${token}\n`,
  );
}

function createPublicServer(
  config: ControllerConfig,
  edge: PublicEdge,
  connections: PublicConnections,
): Server {
  const { http } = config;
  const server = createServer({
    // Slow-loris limits: the head must arrive whole in time, and so must the request when set.
    headersTimeout:
      http.requestTimeoutMs > 0
        ? Math.min(http.headersTimeoutMs, http.requestTimeoutMs)
        : http.headersTimeoutMs,
    requestTimeout: http.requestTimeoutMs,
    keepAliveTimeout: http.keepAliveTimeoutMs,
    maxHeaderSize: http.maxHeaderBytes,
    // Node checks the two timeouts on this period; its default of 30 s would stretch them by as much.
    connectionsCheckingInterval: 1000,
    noDelay: true,
    requireHostHeader: true,
  });
  // One above the limit, so the edge can see that it was exceeded (Node drops fields past the count).
  server.maxHeadersCount = http.maxHeaders + 1;
  server.on('request', connections.onRequest);
  // Expect: 100-continue is the target's to answer: the edge forwards it and relays the 100.
  server.on('checkContinue', connections.onRequest);
  server.on('clientError', edge.onClientError);
  // Connection: upgrade + Upgrade: X, any protocol: relayed as raw bytes after the target's 101.
  server.on('upgrade', connections.onUpgrade);
  return server;
}

/**
 * The public connections as a drain sees them. Responses begun once the drain has started carry
 * `Connection: close`, and a connection whose response was already under way is closed after it, so
 * keep-alive clients go elsewhere instead of sending requests that no tunnel will take. Upgraded
 * sockets are kept so that the drain can close them when the grace period ends.
 */
class PublicConnections {
  #draining = false;
  readonly #responses = new Set<ServerResponse>();
  readonly #upgraded = new Set<Socket>();
  readonly #edge: PublicEdge;
  // One listener function each, shared by every response and socket: `this` is the emitter.
  readonly #forgetResponse: (this: ServerResponse) => void;
  readonly #forgetUpgraded: (this: Socket) => void;

  constructor(edge: PublicEdge) {
    this.#edge = edge;
    const responses = this.#responses;
    const upgraded = this.#upgraded;
    this.#forgetResponse = function (this: ServerResponse) {
      responses.delete(this);
    };
    this.#forgetUpgraded = function (this: Socket) {
      upgraded.delete(this);
    };
  }

  get counts(): { responses: number; upgraded: number } {
    return { responses: this.#responses.size, upgraded: this.#upgraded.size };
  }

  readonly onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (this.#draining) res.shouldKeepAlive = false;
    this.#responses.add(res);
    res.once('close', this.#forgetResponse);
    this.#edge.onRequest(req, res);
  };

  readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const raw = socket as Socket;
    this.#upgraded.add(raw);
    raw.once('close', this.#forgetUpgraded);
    this.#edge.onUpgrade(req, socket, head);
  };

  startDrain(): void {
    this.#draining = true;
    for (const res of this.#responses) {
      if (!res.headersSent) {
        res.shouldKeepAlive = false;
      } else if (!res.writableFinished) {
        // The head went out with keep-alive: end the connection once this response is complete.
        const socket = res.socket;
        res.once('finish', () => socket?.end());
      }
    }
  }

  /**
   * Ends every upgraded connection with a FIN once the bytes already relayed are written: a raw relay
   * cannot send a WebSocket close frame (it would have to cut in between the service's frames, which
   * it never parses), so an orderly TCP close is the proper close. The relay carries the FIN on to
   * the agent and the target, and the client's own FIN back. Returns how many there were.
   */
  closeUpgraded(): number {
    for (const socket of this.#upgraded) socket.end();
    return this.#upgraded.size;
  }

  /**
   * Closes the upgraded sockets that did not finish that close in time. A plain close, not a reset:
   * resetAndDestroy() on a socket whose FIN is still queued leaves node spinning in its exit cleanup.
   */
  destroyUpgraded(): void {
    for (const socket of this.#upgraded) socket.destroy();
  }
}

interface TunnelContext {
  config: ControllerConfig;
  control: ControlPlane;
  registry: TunnelRegistry;
  metrics: ControllerMetrics;
  log: Logger;
  /** True once the controller is draining: tunnels that finish their handshake then are let go. */
  stopping: () => boolean;
}

function acceptTunnel(transport: Duplex, remote: string, ctx: TunnelContext): void {
  const { config, control, registry, log } = ctx;
  let cluster: string | undefined;
  let slot: TunnelSlotId | undefined;
  let token = '';
  Session.accept(transport, {
    options: config.tunnel,
    logger: log,
    authenticate: (hello) => {
      // The slot caps are for this side only: they are not offered back, so WELCOME does not carry them.
      slot = parseSlotCaps(hello.caps);
      cluster = control.tokens.clusterFor(hello.token);
      token = hello.token;
      if (cluster !== undefined) return { ok: true };
      log.warn({ remote, agent: hello.agent, replica: hello.replica }, 'tunnel refused: unknown token');
      return { ok: false, code: 'UNAUTHORIZED', reason: 'unknown agent token' };
    },
    // Agents do not open streams towards the controller.
    onStream: (stream) => stream.reset(ErrorCode.REFUSED_STREAM, 'the controller accepts no streams'),
  }).then(
    (session) => {
      if (ctx.stopping()) {
        void session.close(0);
        return;
      }
      // The token may have been revoked while the handshake finished.
      if (control.tokens.clusterFor(token) !== cluster) {
        const revoked = 'the agent token was revoked';
        session.destroy(new SessionError('SLUICE_ERR_TOKEN_REVOKED', revoked, ErrorCode.FORBIDDEN));
        return;
      }
      const peer = session.peer!;
      const tunnel: Tunnel = {
        session,
        cluster: cluster!,
        agent: peer.agent,
        replica: peer.replica,
        ...(slot === undefined ? {} : { slot }),
        since: Date.now(),
        tokenHash: hashToken(token),
        remote,
      };
      const replaced = registry.add(tunnel);
      const fields = {
        cluster: tunnel.cluster,
        agent: peer.agent,
        replica: peer.replica,
        slot: slot?.index,
        generation: slot?.generation,
        remote,
        session: session.id,
      };
      readinessLogger(log).info(
        { event: 'tunnel-up', ...fields, tunnels: registry.count(tunnel.cluster) },
        'tunnel up',
      );
      if (replaced !== undefined) retire(replaced, tunnel, log);
      session.on('goaway', (_code: number, reason: string) =>
        log.info(
          { event: 'tunnel-draining', ...fields, reason, streams: session.streamCount },
          'agent is draining the tunnel; it gets no new streams',
        ),
      );
      session.once('close', (err?: Error) => {
        registry.remove(tunnel);
        ctx.metrics.tunnelError(err);
        const code = err instanceof SluiceError ? err.code : undefined;
        log.info(
          {
            event: 'tunnel-down',
            ...fields,
            code,
            err: err?.message,
            tunnels: registry.count(tunnel.cluster),
            upForMs: Date.now() - tunnel.since,
          },
          'tunnel down',
        );
      });
    },
    (err: Error) => {
      ctx.metrics.tunnelError(err);
      log.info({ remote, err: err.message }, 'tunnel handshake failed');
    },
  );
}

/**
 * Closes a tunnel that a newer dial of the same agent slot replaced. It already left routing. Unless it
 * is draining, the agent gave it up, so nothing on it can finish: its streams fail now (502) rather than
 * at the ping timeout. A draining one (this side sent GO_AWAY, e.g. its stream ids ran out, and the
 * agent dialed its successor meanwhile) still carries streams both sides know about: it finishes them
 * and closes by itself. Done on a later turn, so that registering the new tunnel never waits on tearing
 * down the old.
 */
function retire(old: Tunnel, by: Tunnel, log: Logger): void {
  const draining = old.session.draining;
  log.info(
    {
      event: 'tunnel-replaced',
      cluster: old.cluster,
      agent: old.agent,
      replica: old.replica,
      slot: old.slot?.index,
      generation: old.slot?.generation,
      session: old.session.id,
      by: by.session.id,
      byGeneration: by.slot?.generation,
      streams: old.session.streamCount,
      draining,
    },
    'a newer tunnel of the same agent slot replaced this one',
  );
  if (draining) return;
  setImmediate(() =>
    old.session.destroy(
      new SessionError(
        'SLUICE_ERR_TUNNEL_REPLACED',
        `replaced by generation ${by.slot?.generation} of the same agent tunnel`,
      ),
    ),
  );
}

function createAdminServer(
  registry: TunnelRegistry,
  edge: PublicEdge,
  connections: PublicConnections,
  api: AdminApi,
  metrics: ControllerMetrics,
): Server {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?', 1)[0]!;
    if (api.handle(req, res, path)) return;
    if (serveDashboard(req, res, path)) return;
    if (path === '/healthz' || path === '/readyz') {
      sendJson(res, 200, { ok: true, tunnels: registry.all().length });
      return;
    }
    // Without the admin token, like the probes: the admin listener is a private port Prometheus scrapes.
    if (path === '/metrics') {
      sendMetrics(metrics.registry, res);
      return;
    }
    if (path === '/debug/memory') {
      // For leak checks: with --expose-gc the heap figure is taken after a full collection.
      void memoryReport(server).then(
        (report) => {
          const tunnels = registry.all();
          sendJson(res, 200, {
            ...report,
            registry: registry.size(),
            streams: tunnels.reduce((n, t) => n + t.session.streamCount, 0),
            inFlight: edge.inFlight,
            ...connections.counts,
          });
        },
        (err: Error) => sendJson(res, 500, { error: err.message }),
      );
      return;
    }
    sendJson(res, 404, { error: 'not found' });
  });
  return server;
}

interface Running {
  publicServer: Server;
  connections: PublicConnections;
  edge: PublicEdge;
  registry: TunnelRegistry;
  tunnels: TunnelListener;
  closers: (() => Promise<void>)[];
}

/**
 * The drain. Nothing new is accepted (public connections, tunnels); every agent gets GO_AWAY, so it
 * opens no stream here and may dial a replacement elsewhere; the requests already accepted run on their
 * streams. When the grace period ends, upgraded connections still open are closed with a FIN and get
 * UPGRADE_CLOSE_MS to finish; whatever runs after that is cut with its tunnel.
 */
async function shutdown(running: Running, graceMs: number, logger: Logger): Promise<void> {
  const { publicServer, connections, edge, registry, tunnels, closers } = running;
  const live = registry.all();
  logger.info(
    { event: 'stopping', inFlight: edge.inFlight, tunnels: live.length, graceMs },
    'controller stopping',
  );
  connections.startDrain();
  publicServer.close();
  publicServer.closeIdleConnections();
  tunnels.stopAccepting();
  const drained = Promise.allSettled(live.map((t) => t.session.close(graceMs + UPGRADE_CLOSE_MS)));
  if (!(await idleWithin(edge, graceMs))) {
    const upgrades = connections.closeUpgraded();
    logger.info(
      { event: 'grace-ended', inFlight: edge.inFlight, upgrades },
      'grace period ended; closing upgraded connections, then cutting what is left',
    );
    await idleWithin(edge, UPGRADE_CLOSE_MS);
    connections.destroyUpgraded();
  }
  const cut = new SessionError('SLUICE_ERR_SHUTDOWN', 'the controller stopped: grace period ended');
  for (const tunnel of registry.all()) tunnel.session.destroy(cut);
  await drained;
  await Promise.allSettled(closers.map((close) => close()));
  logger.info({ event: 'stopped' }, 'controller stopped');
}

/** True once no request is in flight, false when `ms` passed first. */
async function idleWithin(edge: PublicEdge, ms: number): Promise<boolean> {
  if (edge.inFlight === 0) return true;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([edge.whenIdle().then(() => true), expired]);
  } finally {
    clearTimeout(timer);
  }
}

function listenHttp(server: Server, at: HostPort): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : at.port;
      const host = at.host.includes(':') ? `[${at.host}]` : at.host;
      resolve(`http://${host}:${port}`);
    });
  });
}

function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function once<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  let done: Promise<void> | undefined;
  return (...args) => (done ??= fn(...args));
}
