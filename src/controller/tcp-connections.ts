// The connections of one TCP route, or of one TLS passthrough host (docs/tcp.md): both relay a client's
// socket raw through a `tcp` stream (tcp-relay.ts), so both share this piece. It holds the limits
// (tcp.maxConnectionsPerClient and tcp.maxConnectionsPerRoute), counted over each client socket's
// lifetime as openConnections is, so that a connection closed is a place freed at once; it writes the
// one log line per connection, tells the observer (metrics, /api/traffic) about each start and end,
// and keeps the route's running totals for the dashboard. A connection over a limit is reset, not
// closed with a FIN: the client must not take it for a served connection with an empty answer.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { LiveSet } from '../collections.js';
import type { TcpStreamMeta } from '../proxy/meta.js';
import { resetSocket } from '../proxy/upgrade.js';
import type { ClusterDispatcher } from './dispatcher.js';
import { newRequestId } from './edge.js';
import type { TcpLimits } from './tcp-config.js';
import { TcpRelay, type TcpOutcome } from './tcp-relay.js';

/** A TCP route's listener, or a passthrough host on the TLS listener. */
export type ConnectionKind = 'tcp' | 'tls-passthrough';

/** How a connection ended: the relay's outcome, or turned away at a limit. */
export type ConnectionOutcome = TcpOutcome | 'over_limit';

/** What a finished (or refused) connection reports, for metrics and /api/traffic. */
export interface TcpConnectionDone {
  readonly kind: ConnectionKind;
  /** The TCP route's bound listen address, or the passthrough route's host. */
  readonly route: string;
  /** `address:port`. */
  readonly client: string;
  readonly cluster: string;
  readonly target: string;
  /** Wall-clock time it was accepted, in ms since the epoch. */
  readonly at: number;
  readonly ms: number;
  readonly outcome: ConnectionOutcome;
  readonly bytesIn: number;
  readonly bytesOut: number;
}

export interface TcpObserver {
  opened?(route: string, kind: ConnectionKind): void;
  done?(done: TcpConnectionDone): void;
}

/** One route's counts since it was added: what /api/traffic shows per route. */
export interface ConnectionTotals {
  /** Connections open now. */
  open: number;
  /** Connections admitted (open ones included). */
  connections: number;
  /** Connections turned away at a limit. */
  refused: number;
  /** Client to target, open connections' bytes so far included. */
  bytesIn: number;
  /** Target to client, likewise. */
  bytesOut: number;
}

export interface RouteConnectionsOptions {
  readonly kind: ConnectionKind;
  /** The name the route goes by in logs, metrics and /api/traffic. */
  readonly route: string;
  readonly dispatcher: ClusterDispatcher;
  readonly limits: TcpLimits;
  readonly log: Logger;
  readonly observer?: TcpObserver;
  /** Called each time the last open connection closes. */
  readonly onIdle?: () => void;
}

/** Where one connection goes, and what its log line adds. */
export interface Destination {
  readonly cluster: string;
  readonly target: string;
  /** Adds to the stream's meta (a PROXY v2 header's addresses). */
  readonly decorate?: (meta: TcpStreamMeta, socket: Socket) => void;
  /** Extra fields for both log lines (the SNI name). */
  readonly fields?: Readonly<Record<string, string>>;
}

const MESSAGES: Record<ConnectionKind, { done: string; refused: string }> = {
  tcp: { done: 'tcp connection', refused: 'tcp connection refused: over limit' },
  'tls-passthrough': {
    done: 'tls passthrough connection',
    refused: 'tls passthrough connection refused: over limit',
  },
};

export class RouteConnections {
  readonly #options: RouteConnectionsOptions;
  readonly #sockets = new LiveSet<Socket>('tcp.sockets');
  readonly #perClient = new Map<string, number>();
  readonly #relays = new LiveSet<TcpRelay>('tcp.relays');
  #admitted = 0;
  #refused = 0;
  /** Bytes of the relays that finished. */
  #bytesIn = 0;
  #bytesOut = 0;

  constructor(options: RouteConnectionsOptions) {
    this.#options = options;
  }

  /** Client sockets open now. */
  get open(): number {
    return this.#sockets.size;
  }

  totals(): ConnectionTotals {
    let bytesIn = this.#bytesIn;
    let bytesOut = this.#bytesOut;
    for (const relay of this.#relays.list()) {
      bytesIn += relay.stats.bytesIn;
      bytesOut += relay.stats.bytesOut;
    }
    return { open: this.open, connections: this.#admitted, refused: this.#refused, bytesIn, bytesOut };
  }

  /** Relays `socket` to `to`, or resets it when a limit is reached. */
  accept(socket: Socket, to: Destination): void {
    const { kind, route, limits, log, observer } = this.#options;
    const started = Date.now();
    const address = unmapIPv4(socket.remoteAddress ?? '');
    const client = `${address}:${socket.remotePort ?? 0}`;
    socket.on('error', ignore);
    const held = this.#perClient.get(address) ?? 0;
    if (
      (limits.maxConnectionsPerClient > 0 && held >= limits.maxConnectionsPerClient) ||
      (limits.maxConnectionsPerRoute > 0 && this.#sockets.size >= limits.maxConnectionsPerRoute)
    ) {
      resetSocket(socket);
      this.#refused++;
      const line = { client, ...to.fields, route, cluster: to.cluster, target: to.target };
      log.info(line, MESSAGES[kind].refused);
      const d = { kind, route, client, cluster: to.cluster, target: to.target, at: started, ms: 0 };
      observer?.done?.({ ...d, outcome: 'over_limit', bytesIn: 0, bytesOut: 0 });
      return;
    }
    this.#admitted++;
    this.#perClient.set(address, held + 1);
    this.#sockets.add(socket);
    socket.once('close', () => this.#closed(socket, address));
    observer?.opened?.(route, kind);
    const relay = new TcpRelay(socket);
    this.#relays.add(relay);
    const meta: TcpStreamMeta = { kind: 'tcp', target: to.target, client, requestId: newRequestId() };
    to.decorate?.(meta, socket);
    const finish = (outcome: TcpOutcome): void => {
      this.#relays.delete(relay);
      const { bytesIn, bytesOut, via, detail } = relay.stats;
      this.#bytesIn += bytesIn;
      this.#bytesOut += bytesOut;
      const ms = Date.now() - started;
      log.info(
        {
          client,
          ...to.fields,
          route,
          cluster: to.cluster,
          target: to.target,
          requestId: meta.requestId,
          via,
          bytesIn,
          bytesOut,
          ms,
          outcome,
          ...(outcome === 'done' || detail === undefined ? {} : { detail }),
        },
        MESSAGES[kind].done,
      );
      const d = { kind, route, client, cluster: to.cluster, target: to.target, at: started, ms };
      observer?.done?.({ ...d, outcome, bytesIn, bytesOut });
    };
    relay.run(this.#options.dispatcher, to.cluster, meta).then(finish, (err: Error) => {
      relay.stats.detail = err.message;
      relay.cut();
      finish('reset');
    });
  }

  /** Ends every relay with a FIN both ways (the drain's grace is over); how many there were. */
  closeUpgraded(): number {
    for (const relay of this.#relays.list()) relay.close();
    return this.#relays.size;
  }

  /** Cuts every relay with an RST. */
  destroyUpgraded(): void {
    for (const relay of this.#relays.list()) relay.cut();
  }

  /** Cuts every relay and destroys every client socket left. */
  destroy(): void {
    this.destroyUpgraded();
    for (const socket of this.#sockets.list()) socket.destroy();
  }

  #closed(socket: Socket, address: string): void {
    this.#sockets.delete(socket);
    const left = (this.#perClient.get(address) ?? 1) - 1;
    if (left <= 0) this.#perClient.delete(address);
    else this.#perClient.set(address, left);
    if (this.#sockets.size === 0) this.#options.onIdle?.();
  }
}

export function unmapIPv4(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function ignore(): void {}
