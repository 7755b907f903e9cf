// The controller process: the public HTTP edge, the tunnel listener agents dial, and a small admin
// listener for probes. `startController` returns once every listener is bound and has logged its
// readiness line (DESIGN §5); `close()` drains and tears down.
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { ErrorCode } from '../protocol/constants.js';
import { listen, type TunnelListener } from '../transport/index.js';
import { Session } from '../tunnel/session.js';
import type { ControllerConfig, HostPort } from './config.js';
import { PublicEdge } from './edge.js';
import { RouteTable } from './routes.js';
import { TokenIndex, type Tunnel, TunnelRegistry } from './tunnels.js';

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

export async function startController(config: ControllerConfig, logger: Logger): Promise<ControllerHandle> {
  const routes = new RouteTable(config.routes);
  const tokens = new TokenIndex(config.clusters);
  const registry = new TunnelRegistry();
  const edge = new PublicEdge({
    routes: () => routes,
    registry,
    http: config.http,
    logger: logger.child({ component: 'edge' }),
    proto: 'http',
  });

  const publicServer = createPublicServer(config, edge);
  const closers: (() => Promise<void>)[] = [];
  try {
    const publicUrl = await listenHttp(publicServer, config.listen);
    closers.push(() => closeHttp(publicServer));
    logger.info({ event: 'listening', listener: 'public', url: publicUrl }, 'public listener ready');

    const tunnelLog = logger.child({ component: 'tunnel' });
    const tunnels = await listen(
      {
        url: config.tunnelListen,
        cert: config.tunnelCert === undefined ? undefined : readFileSync(config.tunnelCert),
        key: config.tunnelKey === undefined ? undefined : readFileSync(config.tunnelKey),
        onError: (err) => tunnelLog.error({ err: err.message }, 'tunnel listener error'),
      },
      (transport, peer) =>
        acceptTunnel(
          transport,
          `${peer.remoteAddress}:${peer.remotePort}`,
          config,
          tokens,
          registry,
          tunnelLog,
        ),
    );
    closers.push(() => tunnels.close());
    logger.info({ event: 'listening', listener: 'tunnel', url: tunnels.url }, 'tunnel listener ready');

    let adminUrl: string | null = null;
    if (config.adminListen !== null) {
      const admin = createAdminServer(registry);
      adminUrl = await listenHttp(admin, config.adminListen);
      closers.push(() => closeHttp(admin));
      logger.info({ event: 'listening', listener: 'admin', url: adminUrl }, 'admin listener ready');
    }
    return {
      publicUrl,
      tunnelUrl: tunnels.url,
      adminUrl,
      close: once((graceMs = config.tunnel.gracePeriod) =>
        shutdown(publicServer, edge, registry, tunnels, closers, graceMs, logger),
      ),
    };
  } catch (err) {
    await Promise.allSettled(closers.map((close) => close()));
    throw err;
  }
}

function createPublicServer(config: ControllerConfig, edge: PublicEdge): Server {
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
  server.on('request', edge.onRequest);
  // Expect: 100-continue is the target's to answer: the edge forwards it and relays the 100.
  server.on('checkContinue', edge.onRequest);
  server.on('clientError', edge.onClientError);
  // Connection: upgrade + Upgrade: X, any protocol: relayed as raw bytes after the target's 101.
  server.on('upgrade', edge.onUpgrade);
  return server;
}

function acceptTunnel(
  transport: Duplex,
  remote: string,
  config: ControllerConfig,
  tokens: TokenIndex,
  registry: TunnelRegistry,
  log: Logger,
): void {
  let cluster: string | undefined;
  Session.accept(transport, {
    options: config.tunnel,
    logger: log,
    authenticate: (hello) => {
      cluster = tokens.clusterFor(hello.token);
      if (cluster !== undefined) return { ok: true };
      log.warn({ remote, agent: hello.agent, replica: hello.replica }, 'tunnel refused: unknown token');
      return { ok: false, code: 'UNAUTHORIZED', reason: 'unknown agent token' };
    },
    // Agents do not open streams towards the controller.
    onStream: (stream) => stream.reset(ErrorCode.REFUSED_STREAM, 'the controller accepts no streams'),
  }).then(
    (session) => {
      const peer = session.peer!;
      const tunnel: Tunnel = {
        session,
        cluster: cluster!,
        agent: peer.agent,
        replica: peer.replica,
        since: Date.now(),
      };
      registry.add(tunnel);
      const fields = {
        cluster: tunnel.cluster,
        agent: peer.agent,
        replica: peer.replica,
        remote,
        session: session.id,
      };
      log.info({ event: 'tunnel-up', ...fields, tunnels: registry.count(tunnel.cluster) }, 'tunnel up');
      session.once('close', (err?: Error) => {
        registry.remove(tunnel);
        const why = err === undefined ? undefined : err.message;
        log.info(
          { event: 'tunnel-down', ...fields, err: why, tunnels: registry.count(tunnel.cluster) },
          'tunnel down',
        );
      });
    },
    (err: Error) => log.info({ remote, err: err.message }, 'tunnel handshake failed'),
  );
}

function createAdminServer(registry: TunnelRegistry): Server {
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?', 1)[0];
    if (path === '/healthz' || path === '/readyz') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify({ ok: true, tunnels: registry.all().length }));
      return;
    }
    res.writeHead(404, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ error: 'not found' }));
  });
}

async function shutdown(
  publicServer: Server,
  edge: PublicEdge,
  registry: TunnelRegistry,
  tunnels: TunnelListener,
  closers: (() => Promise<void>)[],
  graceMs: number,
  logger: Logger,
): Promise<void> {
  logger.info({ event: 'stopping', inFlight: edge.inFlight, graceMs }, 'controller stopping');
  publicServer.close();
  publicServer.closeIdleConnections();
  const deadline = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
  await Promise.race([edge.whenIdle(), deadline]);
  // Requests still running past the grace period are cut with their tunnels.
  await Promise.allSettled(registry.all().map((t) => t.session.close(0)));
  void tunnels;
  await Promise.allSettled(closers.map((close) => close()));
  logger.info({ event: 'stopped' }, 'controller stopped');
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
