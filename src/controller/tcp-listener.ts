// A TCP route's public listener (docs/tcp.md): every connection it accepts is relayed, byte for byte,
// to the route's target through a stream to the route's cluster (tcp-relay.ts). It implements
// PublicListener, so the controller's drain stops it like the HTTP listener. TcpRoutes holds one per
// route and opens or closes them at runtime, for the config file now and the admin API later.
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { SluiceError } from '../errors.js';
import type { TcpStreamMeta } from '../proxy/meta.js';
import type { ClusterDispatcher } from './dispatcher.js';
import type { PublicListener } from './public-listener.js';
import { DEFAULT_TCP_LIMITS, splitListen, type TcpLimits, type TcpRoute } from './tcp-config.js';
import {
  type ConnectionTotals,
  RouteConnections,
  type TcpConnectionDone,
  type TcpObserver,
  unmapIPv4,
} from './tcp-connections.js';

export { DEFAULT_TCP_LIMITS, splitListen, type TcpLimits, type TcpRoute };
export type { TcpConnectionDone, TcpObserver };

export interface TcpListenerOptions {
  readonly route: TcpRoute;
  readonly dispatcher: ClusterDispatcher;
  readonly limits: TcpLimits;
  readonly log: Logger;
  readonly observer?: TcpObserver;
  /** Called each time the listener's last open connection closes. */
  readonly onIdle?: () => void;
}

export class TcpListener implements PublicListener {
  readonly #options: TcpListenerOptions;
  readonly #server: Server;
  /** Created once the listener is bound: its connections go by the bound address. */
  #connections: RouteConnections | undefined;
  #bound = '';

  private constructor(options: TcpListenerOptions) {
    this.#options = options;
    this.#server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) =>
      this.#accept(socket),
    );
  }

  /** Binds the route's listen address; a port in use is a SluiceError with `address_in_use` in it. */
  static async open(options: TcpListenerOptions): Promise<TcpListener> {
    const listener = new TcpListener(options);
    const { host, port } = splitListen(options.route.listen);
    await new Promise<void>((resolve, reject) => {
      listener.#server.once('error', reject);
      listener.#server.listen({ host, port, exclusive: true }, () => {
        listener.#server.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        throw new TcpRouteError('address_in_use', `${options.route.listen} is already in use`);
      }
      throw new TcpRouteError('listen_failed', `cannot listen on ${options.route.listen}: ${err.message}`);
    });
    const address = listener.#server.address();
    if (address !== null && typeof address === 'object') {
      const h = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      listener.#bound = `${h}:${address.port}`;
    }
    const { dispatcher, limits, log, observer, onIdle } = options;
    listener.#connections = new RouteConnections({
      kind: 'tcp',
      route: listener.#bound,
      dispatcher,
      limits,
      log,
      ...(observer === undefined ? {} : { observer }),
      ...(onIdle === undefined ? {} : { onIdle }),
    });
    log.info({ route: options.route.listen, listen: listener.#bound }, 'tcp route listening');
    return listener;
  }

  get url(): string {
    return `tcp://${this.#bound}`;
  }

  /** The address as bound, `host:port`. */
  get address(): string {
    return this.#bound;
  }

  get port(): number {
    return Number(this.#bound.slice(this.#bound.lastIndexOf(':') + 1));
  }

  get openConnections(): number {
    return this.#connections?.open ?? 0;
  }

  /** The route's counts since it was added, for /api/traffic. */
  totals(): ConnectionTotals {
    return this.#connections!.totals();
  }

  startDrain(): void {
    if (this.#server.listening) this.#server.close();
  }

  closeUpgraded(): number {
    return this.#connections?.closeUpgraded() ?? 0;
  }

  destroyUpgraded(): void {
    this.#connections?.destroyUpgraded();
  }

  async close(): Promise<void> {
    this.startDrain();
    this.#connections?.destroy();
    await new Promise<void>((resolve) => {
      if (this.openConnections === 0) resolve();
      else this.#server.once('close', () => resolve());
      // net.Server emits close once its last connection is gone, if it was closed before.
      setImmediate(() => {
        if (this.openConnections === 0) resolve();
      });
    });
  }

  #accept(socket: Socket): void {
    const { route } = this.#options;
    if (this.#connections === undefined) {
      socket.destroy(); // Not bound yet: open() has not returned, so nobody knows the port.
      return;
    }
    this.#connections.accept(socket, {
      cluster: route.cluster,
      target: route.target,
      ...(route.proxyProtocol === 'v2' ? { decorate: proxyV2 } : {}),
    });
  }
}

/** The addresses a PROXY v2 header carries: the client's, and the listener's it reached. */
function proxyV2(meta: TcpStreamMeta, socket: Socket): void {
  meta.proxyProtocol = 'v2';
  meta.addresses = {
    clientAddress: unmapIPv4(socket.remoteAddress ?? ''),
    clientPort: socket.remotePort ?? 0,
    listenAddress: unmapIPv4(socket.localAddress ?? ''),
    listenPort: socket.localPort ?? 0,
  };
}

export type TcpRouteErrorCode = 'address_in_use' | 'listen_failed' | 'duplicate' | 'not_found';

/** A TCP route that could not be added or removed; `reason` says which of the typed codes it was. */
export class TcpRouteError extends SluiceError {
  readonly reason: TcpRouteErrorCode;
  constructor(reason: TcpRouteErrorCode, message: string) {
    super('SLUICE_ERR_INVALID_OPTION', message);
    this.name = 'TcpRouteError';
    this.reason = reason;
  }
}

export interface TcpRoutesOptions {
  readonly dispatcher: ClusterDispatcher;
  readonly limits: TcpLimits;
  readonly log: Logger;
  readonly observer?: TcpObserver;
  /** How long remove() leaves a removed route's open connections before it cuts them. */
  readonly graceMs: number;
}

/**
 * The TCP routes, keyed by their configured listen address (the bound one for port 0). add() binds at once; remove() stops
 * accepting at once, lets open connections go on for the grace period, then cuts what is left.
 */
export class TcpRoutes {
  readonly #options: TcpRoutesOptions;
  readonly #listeners = new Map<string, { route: TcpRoute; listener: TcpListener }>();
  /** whenIdle()'s callers, told once the last open connection has closed. */
  #idle: (() => void)[] = [];

  constructor(options: TcpRoutesOptions) {
    this.#options = options;
  }

  async add(route: TcpRoute): Promise<TcpListener> {
    if (this.#listeners.has(route.listen)) {
      throw new TcpRouteError('duplicate', `a tcp route already listens on ${route.listen}`);
    }
    const { dispatcher, limits, log, observer } = this.#options;
    const listener = await TcpListener.open({
      route,
      dispatcher,
      limits,
      log,
      ...(observer === undefined ? {} : { observer }),
      onIdle: () => this.#checkIdle(),
    });
    // Port 0 binds a fresh port each time: such a route is known by the address it got.
    const key = splitListen(route.listen).port === 0 ? listener.address : route.listen;
    this.#listeners.set(key, { route, listener });
    return listener;
  }

  async remove(listen: string): Promise<void> {
    const entry = this.#listeners.get(listen);
    if (entry === undefined) throw new TcpRouteError('not_found', `no tcp route listens on ${listen}`);
    this.#listeners.delete(listen);
    const { listener } = entry;
    listener.startDrain();
    await waitEmpty(listener, this.#options.graceMs);
    await listener.close();
  }

  list(): { route: TcpRoute; address: string; openConnections: number }[] {
    return [...this.#listeners.values()].map(({ route, listener }) => ({
      route,
      address: listener.address,
      openConnections: listener.openConnections,
    }));
  }

  /** Each route with its counts since it was added, for /api/traffic. */
  totals(): { route: TcpRoute; address: string; totals: ConnectionTotals }[] {
    return [...this.#listeners.values()].map(({ route, listener }) => ({
      route,
      address: listener.address,
      totals: listener.totals(),
    }));
  }

  get(listen: string): TcpListener | undefined {
    return this.#listeners.get(listen)?.listener;
  }

  /** Open connections on every listener: the controller's drain waits for them as for requests. */
  get inFlight(): number {
    return this.listeners().reduce((n, l) => n + l.openConnections, 0);
  }

  /** Resolves once no listener holds an open connection. */
  whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #checkIdle(): void {
    if (this.#idle.length === 0 || this.inFlight > 0) return;
    const waiting = this.#idle;
    this.#idle = [];
    for (const resolve of waiting) resolve();
  }

  /** Every listener as one PublicListener, for the controller's drain: those added later included. */
  readonly frontEnd: PublicListener = {
    url: 'tcp://',
    startDrain: () => this.listeners().forEach((l) => l.startDrain()),
    closeUpgraded: () => this.listeners().reduce((n, l) => n + l.closeUpgraded(), 0),
    destroyUpgraded: () => this.listeners().forEach((l) => l.destroyUpgraded()),
    close: async () => {
      await Promise.all(this.listeners().map((l) => l.close()));
    },
  };

  /** Every listener. */
  listeners(): TcpListener[] {
    return [...this.#listeners.values()].map((e) => e.listener);
  }
}

/** Resolves once `listener` holds no connection or `ms` passed; polls, bounded by the deadline. */
async function waitEmpty(listener: TcpListener, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (listener.openConnections > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, Math.min(50, Math.max(1, deadline - Date.now()))));
  }
}
