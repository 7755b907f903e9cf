// What every transport shares: socket tuning, the error type of dial and listen failures, a dial in
// progress, and the bookkeeping that lets a listener destroy its connections on close().
import type { AddressInfo, Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { formatTransportUrl, type TransportTarget } from './url.js';

/** Idle time before the first TCP keepalive probe. The session's pings detect a dead peer sooner. */
export const KEEPALIVE_DELAY_MS = 30_000;

export interface PeerInfo {
  remoteAddress: string;
  remotePort: number;
}

/**
 * A dial or listen that failed. `code` is the underlying one (ECONNREFUSED, ETIMEDOUT, a TLS verify code
 * such as UNABLE_TO_VERIFY_LEAF_SIGNATURE, ABORT_ERR) and `cause` the original error.
 */
export class TransportError extends Error {
  readonly code: string | undefined;
  readonly url: string;

  constructor(url: string, message: string, code: string | undefined, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TransportError';
    this.url = url;
    this.code = code;
  }
}

/** A connection attempt: `connected` settles once, `cancel()` tears the attempt down quietly. */
export interface PendingDial {
  readonly connected: Promise<Duplex>;
  cancel(): void;
}

// The tunnel writes small control frames (pings, window updates) whose latency matters more than
// packet count; keepalive lets the kernel notice a peer that vanished while the session is idle.
export function configureSocket(socket: Socket): void {
  socket.setNoDelay(true);
  socket.setKeepAlive(true, KEEPALIVE_DELAY_MS);
}

/** Dials a net/tls socket, ready once `readyEvent` fires. */
export function pendingSocket(socket: Socket, readyEvent: 'connect' | 'secureConnect'): PendingDial {
  const connected = new Promise<Duplex>((resolve, reject) => {
    // `on`, not `once`: the listener must outlive cancel(), or a late error would be uncaught.
    socket.on('error', reject);
    socket.once(readyEvent, () => {
      socket.off('error', reject);
      configureSocket(socket);
      resolve(socket);
    });
  });
  return { connected, cancel: () => socket.destroy() };
}

export function peerOf(socket: Socket): PeerInfo {
  return { remoteAddress: socket.remoteAddress ?? '', remotePort: socket.remotePort ?? 0 };
}

/** Every accepted socket and every transport handed out, so that close() can destroy them. */
export class Connections {
  readonly #transports = new Set<Duplex>();
  readonly #sockets = new Set<Socket>();

  trackSocket(socket: Socket): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
  }

  trackTransport(transport: Duplex): void {
    this.#transports.add(transport);
    transport.once('close', () => this.#transports.delete(transport));
  }

  // Transports first: destroying one quietly emits 'close' without an error, whereas pulling the socket
  // from under a TLS or WebSocket transport would make it fail with a reset.
  destroyAll(): void {
    for (const transport of this.#transports) transport.destroy();
    for (const socket of this.#sockets) socket.destroy();
  }
}

export function startListening(server: Server, target: TransportTarget, url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) =>
      reject(new TransportError(url, `listen ${url} failed: ${err.message}`, err.code, { cause: err }));
    server.once('error', onError);
    server.listen(target.port, target.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

export class Listener {
  readonly url: string;
  readonly #server: Server;
  readonly #connections: Connections;
  // Captured while listening: server.address() returns null once closed.
  readonly #address: { host: string; port: number };
  /** Settles once the server has closed and its last connection is gone. */
  #stopped: Promise<void> | undefined;

  constructor(server: Server, target: TransportTarget, connections: Connections) {
    this.#server = server;
    this.#connections = connections;
    const bound = server.address() as AddressInfo;
    this.#address = { host: bound.address, port: bound.port };
    // Keep the host as given (a TLS name must match it) but report the port actually bound.
    this.url = formatTransportUrl({ ...target, port: bound.port });
  }

  address(): { host: string; port: number } {
    return { ...this.#address };
  }

  stopAccepting(): void {
    this.#stopped ??= new Promise((resolve) => this.#server.close(() => resolve()));
  }

  close(): Promise<void> {
    this.stopAccepting();
    this.#connections.destroyAll();
    return this.#stopped!;
  }
}
