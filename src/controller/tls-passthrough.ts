// TLS passthrough by SNI on the TLS listener (docs/tls.md, "TLS passthrough by SNI"): every new
// connection's first bytes are read, before TLS starts, until they hold a whole ClientHello
// (client-hello.ts). When its server name is a passthrough route's host, the connection is relayed as
// it is, still encrypted, through a `tcp` stream to the route's tcp:// target (tcp-relay.ts), so the
// target's own certificate answers. Anything else (another name, no name, no ClientHello at all) gets
// its bytes put back and goes on to this listener's TLS termination, which answers or fails as it
// would have. The peek is bounded in bytes (MAX_HELLO_BYTES) and in time (tls.peekTimeout).
//
// Each passthrough host has its connections counted, limited (tcp.maxConnectionsPerClient and
// tcp.maxConnectionsPerRoute, as a TCP route) and logged as a TCP route's are (tcp-connections.ts);
// a limit is checked once the ClientHello has named the host. A host's counts are dropped once it is
// no longer a passthrough route and holds no connection, so they are bounded by the routes.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { LiveSet } from '../collections.js';
import type { Route } from '../store/model.js';
import { type HelloResult, parseClientHello } from './client-hello.js';
import type { ClusterDispatcher } from './dispatcher.js';
import type { RouteTable } from './routes.js';
import { DEFAULT_TCP_LIMITS, type TcpLimits } from './tcp-config.js';
import { type ConnectionTotals, RouteConnections, type TcpObserver } from './tcp-connections.js';

export interface TlsPassthroughOptions {
  /** The route table in force, read once per connection when its ClientHello is whole. */
  readonly routes: () => RouteTable;
  readonly dispatcher: ClusterDispatcher;
  /** A connection whose ClientHello is not whole this long after it opened is closed. */
  readonly peekTimeoutMs: number;
  readonly log: Logger;
  /** Per client address and per host; DEFAULT_TCP_LIMITS when absent. */
  readonly limits?: TcpLimits;
  readonly observer?: TcpObserver;
}

/** Hands a socket, its first bytes put back, to the listener's TLS termination. */
export type Terminate = (socket: Socket) => void;

/** The peek in front of one TLS listener, and the passthrough connections it relays. */
export class TlsPassthrough {
  readonly #options: TlsPassthroughOptions;
  readonly #peeking = new LiveSet<Socket>('tls.peeking');
  /** By passthrough route host (`*.suffix` spelt as such). */
  readonly #hosts = new Map<string, RouteConnections>();
  /** whenIdle()'s callers, told once the last relay has finished. */
  #idle: (() => void)[] = [];

  constructor(options: TlsPassthroughOptions) {
    this.#options = options;
  }

  /** Connections relayed right now. */
  get open(): number {
    let n = 0;
    for (const host of this.#hosts.values()) n += host.open;
    return n;
  }

  /** The same, as the drain counts what it waits for (each relay is a request in flight). */
  get inFlight(): number {
    return this.open;
  }

  /** Resolves once no connection is relayed. */
  whenIdle(): Promise<void> {
    if (this.open === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Each passthrough host's counts since its first connection, by host; a host without one is absent. */
  totals(): Map<string, ConnectionTotals> {
    this.#sweep();
    return new Map([...this.#hosts].map(([host, connections]) => [host, connections.totals()]));
  }

  /** Reads `socket`'s ClientHello, then relays it raw or passes it to `terminate`. */
  accept(socket: Socket, terminate: Terminate): void {
    this.#peeking.add(socket);
    peek(socket, this.#options.peekTimeoutMs, (result, bytes) => {
      this.#peeking.delete(socket);
      if (result === 'timeout' || result === 'gone') return;
      const route = passthroughRoute(this.#options.routes(), result);
      // Put back in front of whatever came after them: both the relay and TLS read them first.
      socket.unshift(bytes);
      if (route === undefined) terminate(socket);
      else this.#relay(socket, route, (result as { sni: string }).sni);
    });
  }

  /** Ends every relayed connection with a FIN both ways (the drain's grace is over). */
  closeUpgraded(): number {
    let n = 0;
    for (const host of this.#hosts.values()) n += host.closeUpgraded();
    return n;
  }

  /** Cuts the relays that did not finish closing. */
  destroyUpgraded(): void {
    for (const host of this.#hosts.values()) host.destroyUpgraded();
  }

  /** Cuts every relay and closes every connection still being read. */
  close(): void {
    for (const socket of this.#peeking.list()) socket.destroy();
    this.destroyUpgraded();
  }

  #relay(socket: Socket, route: Route, sni: string): void {
    // A FIN is passed on as a FIN, each way on its own (docs/tcp.md): the target may still answer.
    socket.allowHalfOpen = true;
    this.#connections(route.host).accept(socket, {
      cluster: route.cluster,
      target: route.target,
      fields: { sni },
    });
  }

  #connections(host: string): RouteConnections {
    const found = this.#hosts.get(host);
    if (found !== undefined) return found;
    // A new host is rare (once per route): the time to drop the counts of routes that are gone.
    this.#sweep();
    const { dispatcher, log, limits, observer } = this.#options;
    const created = new RouteConnections({
      kind: 'tls-passthrough',
      route: host,
      dispatcher,
      limits: limits ?? DEFAULT_TCP_LIMITS,
      log,
      ...(observer === undefined ? {} : { observer }),
      onIdle: () => {
        if (this.open === 0) for (const resolve of this.#idle.splice(0)) resolve();
      },
    });
    this.#hosts.set(host, created);
    return created;
  }

  /** Drops the counts of hosts that are no passthrough route any more and hold no connection. */
  #sweep(): void {
    const table = this.#options.routes();
    for (const [host, connections] of this.#hosts) {
      if (connections.open === 0 && table.passthrough(host)?.host !== host) this.#hosts.delete(host);
    }
  }
}

/** The passthrough route a ClientHello's name selects, if any: no name or no hello selects none. */
function passthroughRoute(routes: RouteTable, result: HelloResult): Route | undefined {
  return result.kind === 'hello' && result.sni !== null ? routes.passthrough(result.sni) : undefined;
}

type PeekEnd = HelloResult | 'timeout' | 'gone';

/**
 * Reads `socket` until its bytes give parseClientHello's answer, then stops reading (the socket is
 * left paused, its listeners removed) and calls `done` with the answer and every byte read. A client
 * that sends nothing whole within `timeoutMs`, or half-closes first, is closed (`timeout`); one that
 * goes away is `gone`.
 */
function peek(socket: Socket, timeoutMs: number, done: (result: PeekEnd, bytes: Buffer) => void): void {
  let seen: Buffer = Buffer.alloc(0);
  const finish = (result: PeekEnd): void => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.off('close', onClose);
    socket.pause();
    done(result, seen);
  };
  const onData = (chunk: Buffer): void => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
    const result = parseClientHello(seen);
    if (result.kind !== 'more') finish(result);
  };
  // An unfinished hello followed by a FIN will never be finished.
  const onEnd = (): void => {
    finish('timeout');
    socket.destroy();
  };
  const onClose = (): void => finish('gone');
  const timer = setTimeout(onEnd, timeoutMs);
  // Errors on a socket that is being read end in its close; TLS and the relay add their own after.
  socket.on('error', ignore);
  socket.on('data', onData);
  socket.on('end', onEnd);
  socket.on('close', onClose);
}

function ignore(): void {}
