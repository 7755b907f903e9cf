// The controller process: the public HTTP edge, the tunnel listener agents dial, and a small admin
// listener for probes. `startController` returns once every listener is bound and has logged its
// readiness line (DESIGN §5); `close()` drains: it stops accepting, sends GO_AWAY to every agent, lets
// the requests in flight finish within the grace period, then tears down.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { listenerUrl } from '../config/values.js';
import { readinessLogger } from '../logging.js';
import { bindFailure, readConfiguredFile } from '../config/startup.js';
import { hashToken } from '../store/model.js';
import type { Store } from '../store/store.js';
import { memoryReport } from '../diagnostics.js';
import { sendMetrics } from '../metrics.js';
import { ConfigError, SessionError, SluiceError } from '../errors.js';
import { ErrorCode } from '../protocol/constants.js';
import { checkListenOptions, listen, type TunnelListener } from '../transport/index.js';
import { Session } from '../tunnel/session.js';
import { parseSlotCaps, type TunnelSlotId } from '../tunnel/slot.js';
import { type AdminApi, createAdminApi, sendJson } from './admin-api.js';
import type { HostPort } from '../config/values.js';
import type { ControllerConfig } from './config.js';
import { ControlPlane, loadAdminToken, seedFrom, seedSource } from './control.js';
import { serveDashboard } from './dashboard.js';
import { PublicEdge } from './edge.js';
import { isH2cUpgrade, serveWithoutUpgrade } from './h2c.js';
import { HandshakeBrake } from './handshake-brake.js';
import { ControllerMetrics } from './metrics.js';
import { Traffic } from './traffic.js';
import { type Tunnel, TunnelRegistry } from './tunnels.js';

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
  // Files first: a missing or unusable certificate is found before anything is bound.
  const tunnelTls = readTunnelTls(config);
  const store = options.store ?? (await openStore(config.dataDir));
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
  // The gauges read the edge and the public connections only when scraped, once both exist.
  const metrics: ControllerMetrics = new ControllerMetrics({
    tunnels: registry,
    clusters: () => control.clusters,
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
  const closeStore = (): Promise<void> => store.close();
  let stopping = false;
  try {
    const publicUrl = await listenHttp(publicServer, config.listen, 'listen');
    closers.push(() => closeHttp(publicServer));
    ready.info({ event: 'listening', listener: 'public', url: publicUrl }, 'public listener ready');

    const tunnelLog = logger.child({ component: 'tunnel' });
    const brake = new HandshakeBrake((r) =>
      tunnelLog.warn(
        {
          event: 'tunnel-refusals',
          remote: r.address,
          failures: r.failures,
          shed: r.shed,
          intervalMs: r.intervalMs,
        },
        'more failed tunnel handshakes from this address, not logged one by one',
      ),
    );
    closers.push(async () => brake.close());
    const tunnels = await listen(
      {
        url: config.tunnelListen,
        ...tunnelTls,
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
          brake,
        }),
    ).catch((err: unknown) => {
      throw bindFailure('tunnelListen', config.tunnelListen, err);
    });
    closers.push(() => tunnels.close());
    ready.info({ event: 'listening', listener: 'tunnel', url: tunnels.url }, 'tunnel listener ready');

    let adminUrl: string | null = null;
    if (config.adminListen !== null) {
      const adminToken = loadAdminToken(config, options.announceAdminToken ?? announceOnStderr);
      const api = createAdminApi(control, registry, adminToken, traffic);
      const admin = createAdminServer(registry, { edge, connections, publicServer }, api, metrics);
      adminUrl = await listenHttp(admin, config.adminListen, 'adminListen');
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
    await closeStore();
    throw err;
  }
}

/** The tunnel listener's cert and key, read and checked together; ConfigErrors name the keys. */
function readTunnelTls(config: ControllerConfig): { cert?: Buffer; key?: Buffer } {
  const { tunnelCert, tunnelKey } = config;
  if (tunnelCert === undefined || tunnelKey === undefined) return {};
  const cert = readConfiguredFile('tunnelCert', tunnelCert, 'SLUICE_ERR_TLS_CONFIG');
  const key = readConfiguredFile('tunnelKey', tunnelKey, 'SLUICE_ERR_TLS_CONFIG');
  try {
    checkListenOptions({ url: config.tunnelListen, cert, key });
  } catch (err) {
    if (!(err instanceof SluiceError) || err.code !== 'SLUICE_ERR_TLS_CONFIG') throw err;
    const reason = err.cause instanceof Error ? err.cause.message : err.message;
    const files = `${JSON.stringify(tunnelCert)} and tunnelKey ${JSON.stringify(tunnelKey)}`;
    throw new ConfigError('tunnelCert', `${files} are not usable: ${reason}`, err.code, { cause: err });
  }
  return { cert, key };
}

/**
 * The SQLite store, loaded only here: a process that never runs a controller with its own store (an
 * agent) needs no native module.
 */
async function openStore(dataDir: string): Promise<Store> {
  const { openSqliteStore } = await import('../store/sqlite.js');
  try {
    return openSqliteStore(dataDir);
  } catch (err) {
    throw new ConfigError(
      'dataDir',
      `${JSON.stringify(dataDir)} cannot be opened: ${(err as Error).message}`,
      'SLUICE_ERR_INVALID_OPTION',
      { cause: err },
    );
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
  // Connection: upgrade + Upgrade: X, any protocol: relayed as raw bytes after the target's 101. An
  // h2c upgrade is served as the plain request it also is (see h2c.ts).
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (isH2cUpgrade(req)) serveWithoutUpgrade(server, req, socket, head);
    else connections.onUpgrade(req, socket, head);
  });
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
  /** Slows repeated failed handshakes from one address and samples their log lines. */
  brake: HandshakeBrake;
}

/** A timer that does not keep the process up: a held handshake is nothing to wait for at exit. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function acceptTunnel(transport: Duplex, remote: string, ctx: TunnelContext): void {
  const { config, control, registry, log, brake } = ctx;
  const address = remote.slice(0, remote.lastIndexOf(':'));
  let cluster: string | undefined;
  let slot: TunnelSlotId | undefined;
  let token = '';
  // Where the handshake got to, for the brake and for whether its failure is logged on a line of its own.
  let admitted = false;
  let shed = false;
  let logFailure: boolean | undefined;
  // Until its token is accepted, the session logs nothing: a failed handshake is logged here, sampled
  // per address, and the session's own lines about it would repeat each one.
  const sessionLog = log.child({});
  sessionLog.level = 'silent';
  Session.accept(transport, {
    options: config.tunnel,
    logger: sessionLog,
    authenticate: async (hello) => {
      // The slot caps are for this side only: they are not offered back, so WELCOME does not carry them.
      slot = parseSlotCaps(hello.caps);
      const hold = brake.admit(address);
      if (hold === 'shed') {
        shed = true;
        return {
          ok: false,
          code: 'OVERLOAD',
          reason: 'too many failed handshakes from this address; retry later',
        };
      }
      admitted = true;
      // Within the handshake timeout, so that the answer is still awaited.
      if (hold > 0) await delay(Math.min(hold, config.tunnel.handshakeTimeout / 2));
      const admission = control.admit(hello.token);
      token = hello.token;
      if (admission.ok) {
        sessionLog.level = log.level;
        brake.succeeded(address);
        cluster = admission.cluster;
        return { ok: true };
      }
      logFailure = brake.failed(address, true);
      if (logFailure) {
        const what = admission.code === 'FORBIDDEN' ? 'revoked token' : 'unknown token';
        log.warn(
          { remote, agent: hello.agent, replica: hello.replica, code: admission.code },
          `tunnel refused: ${what}`,
        );
      }
      return admission;
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
        session.destroy(new SessionError('SLUICE_ERR_SESSION_CLOSED', 'the agent token was revoked'));
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
      if (shed) return;
      // A refusal was counted when it was decided; any other failure (a timeout, a bad HELLO) is now.
      if (logFailure ?? brake.failed(address, admitted)) {
        log.info({ remote, err: err.message }, 'tunnel handshake failed');
      }
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
        'SLUICE_ERR_SESSION_CLOSED',
        `replaced by generation ${by.slot?.generation} of the same agent tunnel`,
      ),
    ),
  );
}

function createAdminServer(
  registry: TunnelRegistry,
  front: { edge: PublicEdge; connections: PublicConnections; publicServer: Server },
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
      void Promise.all([memoryReport(server), connectionCount(front.publicServer)]).then(
        ([report, publicConnections]) => {
          const tunnels = registry.all();
          sendJson(res, 200, {
            ...report,
            registry: registry.size(),
            streams: tunnels.reduce((n, t) => n + t.session.streamCount, 0),
            inFlight: front.edge.inFlight,
            publicConnections,
            ...front.connections.counts,
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

function connectionCount(server: Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
  );
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
  const cut = new SessionError('SLUICE_ERR_SESSION_CLOSED', 'the controller stopped: grace period ended');
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

function listenHttp(server: Server, at: HostPort, key: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const host = at.host.includes(':') ? `[${at.host}]` : at.host;
    const onError = (err: Error): void => reject(bindFailure(key, `${host}:${at.port}`, err));
    server.once('error', onError);
    server.listen(at.port, at.host, () => {
      server.off('error', onError);
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : at.port;
      resolve(listenerUrl(at.host, port));
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
