// A TCP route's public listener (docs/tcp.md): every connection it accepts is relayed, byte for byte,
// to the route's target through a stream to the route's cluster (tcp-relay.ts). It implements
// PublicListener, so the controller's drain stops it like the HTTP listener. TcpRoutes holds one per
// route and opens or closes them at runtime, for the config file now and the admin API later.
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { SluiceError } from '../errors.js';
import type { TcpStreamMeta } from '../proxy/meta.js';
import { resetSocket } from '../proxy/upgrade.js';
import type { ClusterDispatcher } from './dispatcher.js';
import { newRequestId } from './edge.js';
import type { PublicListener } from './public-listener.js';
import { DEFAULT_TCP_LIMITS, splitListen, type TcpLimits, type TcpRoute } from './tcp-config.js';
import { TcpRelay, type TcpOutcome } from './tcp-relay.js';

export { DEFAULT_TCP_LIMITS, splitListen, type TcpLimits, type TcpRoute };

/** What a finished connection reports, for metrics. */
export interface TcpConnectionDone {
  readonly route: string;
  readonly outcome: TcpOutcome | 'over_limit';
  readonly bytesIn: number;
  readonly bytesOut: number;
}

export interface TcpObserver {
  opened?(route: string): void;
  done?(done: TcpConnectionDone): void;
}

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
  readonly #relays = new Set<TcpRelay>();
  readonly #sockets = new Set<Socket>();
  readonly #perClient = new Map<string, number>();
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
    options.log.info({ route: options.route.listen, listen: listener.#bound }, 'tcp route listening');
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
    return this.#sockets.size;
  }

  startDrain(): void {
    if (this.#server.listening) this.#server.close();
  }

  closeUpgraded(): number {
    for (const relay of this.#relays) relay.close();
    return this.#relays.size;
  }

  destroyUpgraded(): void {
    for (const relay of this.#relays) relay.cut();
  }

  async close(): Promise<void> {
    this.startDrain();
    for (const relay of this.#relays) relay.cut();
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => {
      if (this.#sockets.size === 0) resolve();
      else this.#server.once('close', () => resolve());
      // net.Server emits close once its last connection is gone, if it was closed before.
      setImmediate(() => {
        if (this.#sockets.size === 0) resolve();
      });
    });
  }

  #accept(socket: Socket): void {
    const { route, limits, log, observer } = this.#options;
    const started = Date.now();
    const client = unmapIPv4(socket.remoteAddress ?? '');
    const clientPort = socket.remotePort ?? 0;
    socket.on('error', () => {});
    const held = this.#perClient.get(client) ?? 0;
    if (
      (limits.maxConnectionsPerClient > 0 && held >= limits.maxConnectionsPerClient) ||
      (limits.maxConnectionsPerRoute > 0 && this.#sockets.size >= limits.maxConnectionsPerRoute)
    ) {
      // An RST, not a FIN: a FIN reads as an orderly (empty) answer, and a client that keeps its own
      // side open after one would wait for an answer that never comes.
      resetSocket(socket);
      log.info(
        {
          client: `${client}:${clientPort}`,
          route: this.#bound,
          cluster: route.cluster,
          target: route.target,
        },
        'tcp connection refused: over limit',
      );
      observer?.done?.({ route: this.#bound, outcome: 'over_limit', bytesIn: 0, bytesOut: 0 });
      return;
    }
    this.#perClient.set(client, held + 1);
    this.#sockets.add(socket);
    observer?.opened?.(this.#bound);
    const relay = new TcpRelay(socket);
    this.#relays.add(relay);
    const meta: TcpStreamMeta = {
      kind: 'tcp',
      target: route.target,
      client: `${client}:${clientPort}`,
      requestId: newRequestId(),
    };
    if (route.proxyProtocol === 'v2') {
      meta.proxyProtocol = 'v2';
      const local = unmapIPv4(socket.localAddress ?? '');
      meta.addresses = {
        clientAddress: client,
        clientPort,
        listenAddress: local,
        listenPort: socket.localPort ?? 0,
      };
    }
    const finish = (outcome: TcpOutcome): void => {
      this.#relays.delete(relay);
      const left = (this.#perClient.get(client) ?? 1) - 1;
      if (left <= 0) this.#perClient.delete(client);
      else this.#perClient.set(client, left);
      const { bytesIn, bytesOut, via, detail } = relay.stats;
      log.info(
        {
          client: `${client}:${clientPort}`,
          route: this.#bound,
          cluster: route.cluster,
          target: route.target,
          requestId: meta.requestId,
          via,
          bytesIn,
          bytesOut,
          ms: Date.now() - started,
          outcome,
          ...(outcome === 'done' || detail === undefined ? {} : { detail }),
        },
        'tcp connection',
      );
      observer?.done?.({ route: this.#bound, outcome, bytesIn, bytesOut });
    };
    socket.once('close', () => {
      this.#sockets.delete(socket);
      if (this.#sockets.size === 0) this.#options.onIdle?.();
    });
    relay.run(this.#options.dispatcher, route.cluster, meta).then(finish, (err: Error) => {
      relay.stats.detail = err.message;
      relay.cut();
      finish('reset');
    });
  }
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

function unmapIPv4(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
