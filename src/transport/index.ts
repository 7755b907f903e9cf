// The tunnel transports behind one interface: the agent dials a URL and gets a connected byte stream,
// the controller listens on a URL and is handed one per connection. Nothing above this folder knows
// whether the bytes travel over TCP, TLS or a WebSocket.
import type { Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ConfigError } from '../errors.js';
import {
  Connections,
  Listener,
  type PeerInfo,
  type PendingDial,
  peerOf,
  startListening,
  TransportError,
} from './common.js';
import { createTcpServer, dialTcp } from './tcp.js';
import {
  type ClientTlsOptions,
  clientTlsOptions,
  createTlsServer,
  dialTls,
  serverTlsOptions,
} from './tls.js';
import { dialHint, dialReason } from './hints.js';
import { isSecureScheme, parseTransportUrl, type TransportScheme, type TransportTarget } from './url.js';
import { createWebSocketServer, dialWebSocket } from './websocket.js';

export { KEEPALIVE_DELAY_MS, type PeerInfo, TransportError } from './common.js';
export { type HandshakeWatch, watchHandshake } from './hints.js';
export { parseTransportUrl, type TransportScheme, type TransportTarget } from './url.js';
export { MAX_MESSAGE_BYTES, WebSocketDuplex } from './websocket.js';

export const DEFAULT_DIAL_TIMEOUT_MS = 10_000;

export interface DialOptions {
  /** tcp://host:port, tls://host:port, ws://host[:port][/path] or wss://host[:port][/path]. */
  url: string;
  /** PEM contents of the CA(s) to trust for tls/wss instead of the system roots. */
  ca?: string | Buffer;
  /** The name the certificate must carry; defaults to the URL host (no SNI for an IP address). */
  servername?: string;
  /** Covers connect, TLS handshake and WebSocket upgrade. Default 10 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
  path?: never;
}

export interface ListenOptions {
  /** e.g. tcp://127.0.0.1:0, tls://0.0.0.0:7000, ws://127.0.0.1:0/tunnel. */
  url: string;
  /** PEM contents; required for tls and wss. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /**
   * Errors the server raises after it is listening (EMFILE on accept, say). Node keeps listening after
   * them; without a handler they would crash the process. Default: ignored.
   */
  onError?: (err: Error) => void;
}

export interface TunnelListener {
  /** The listen URL with the port actually bound. */
  readonly url: string;
  address(): { host: string; port: number };
  /** Stops accepting; connections already open carry on (a drain). Idempotent. */
  stopAccepting(): void;
  /** Stops accepting and destroys open connections. Idempotent. */
  close(): Promise<void>;
}

export type OnConnection = (transport: Duplex, info: PeerInfo) => void;

type Dialer = (target: TransportTarget, tls: ClientTlsOptions | undefined) => PendingDial;

const DIALERS: Record<TransportScheme, Dialer> = {
  tcp: dialTcp,
  tls: (target, tls) => dialTls(target, tls!),
  ws: dialWebSocket,
  wss: dialWebSocket,
};

/** Connects to `options.url`. Rejects with a TransportError whose code is the underlying one. */
export async function dial(options: DialOptions): Promise<Duplex> {
  const { target, tls, timeoutMs } = checkDial(options);
  if (options.signal?.aborted) throw abortError(options.url, options.signal.reason);
  const pending = DIALERS[target.scheme](target, tls);
  return settleDial(options, pending, timeoutMs);
}

/**
 * Checks the options as dial() would, without dialling: the URL, the timeout, and for tls and wss the
 * CA. Lets a process refuse a bad CA at startup rather than at every dial.
 */
export function checkDialOptions(options: DialOptions): void {
  checkDial(options);
}

function checkDial(options: DialOptions) {
  const target = parseTransportUrl(options.url);
  const timeoutMs = options.timeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS;
  if (!(timeoutMs > 0 && Number.isFinite(timeoutMs))) {
    throw new ConfigError('timeoutMs', `must be a positive number of milliseconds, got ${timeoutMs}`);
  }
  const tls = isSecureScheme(target.scheme) ? clientTlsOptions(target, options) : undefined;
  return { target, tls, timeoutMs };
}

/**
 * Checks the options as listen() would, without binding: the URL, and for tls and wss that the cert and
 * key are usable together. Lets a process check them before it binds anything else.
 */
export function checkListenOptions(options: ListenOptions): void {
  const target = parseTransportUrl(options.url);
  if (isSecureScheme(target.scheme)) serverTlsOptions(options.url, options);
}

/** Listens on `options.url` and hands each connected transport to `onConnection`. */
export async function listen(options: ListenOptions, onConnection: OnConnection): Promise<TunnelListener> {
  const target = parseTransportUrl(options.url);
  const connections = new Connections();
  const accept = (transport: Duplex, socket: Socket) => {
    connections.trackTransport(transport);
    onConnection(transport, peerOf(socket));
  };
  const server = createServer(target, options, accept);
  // Every accepted socket, including ones still in a TLS handshake or an HTTP upgrade.
  server.on('connection', (socket: Socket) => connections.trackSocket(socket));
  await startListening(server, target, options.url);
  server.on('error', options.onError ?? ignore);
  return new Listener(server, target, connections);
}

function createServer(
  target: TransportTarget,
  options: ListenOptions,
  accept: (transport: Duplex, socket: Socket) => void,
): Server {
  switch (target.scheme) {
    case 'tcp':
      return createTcpServer(accept);
    case 'tls':
      return createTlsServer(serverTlsOptions(options.url, options), accept);
    case 'ws':
      return createWebSocketServer(target, undefined, accept);
    case 'wss':
      return createWebSocketServer(target, serverTlsOptions(options.url, options), accept);
  }
}

// Races the attempt against the deadline and the caller's signal; the loser is torn down, and a
// connection that completes after the race was decided is destroyed rather than leaked.
function settleDial(options: DialOptions, pending: PendingDial, timeoutMs: number): Promise<Duplex> {
  const { url, signal } = options;
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = () => {
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: Error) => {
      if (settled) return;
      finish();
      pending.cancel();
      reject(err);
    };
    const onAbort = () => fail(abortError(url, signal?.reason));
    const timer = setTimeout(() => fail(timeoutError(url, timeoutMs)), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    const onConnected = (transport: Duplex) => {
      if (settled) return void transport.destroy();
      finish();
      resolve(transport);
    };
    pending.connected.then(onConnected, (err: NodeJS.ErrnoException) => fail(dialError(options, err)));
  });
}

function dialError(options: DialOptions, err: NodeJS.ErrnoException): TransportError {
  const { url } = options;
  const hint = dialHint(url, err, options);
  const message = `dial ${url} failed: ${dialReason(err)}${hint === undefined ? '' : `; ${hint}`}`;
  return new TransportError(url, message, err.code, { cause: err });
}

function timeoutError(url: string, timeoutMs: number): TransportError {
  return new TransportError(url, `dial ${url} timed out after ${timeoutMs} ms`, 'ETIMEDOUT');
}

function abortError(url: string, reason: unknown): TransportError {
  const err = new TransportError(url, `dial ${url} aborted`, 'ABORT_ERR', { cause: reason });
  err.name = 'AbortError';
  return err;
}

function ignore(): void {}
