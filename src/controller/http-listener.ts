// The public HTTP/1.1 listener, the first PublicListener: Node's HTTP server with the edge's limits
// (slow-loris timeouts, header size and count), its requests and upgrades handed to the PublicEdge,
// and the connections it holds tracked so that a drain can end them in order. An h2c upgrade is
// served as the plain HTTP/1.1 request it also is (h2c.ts). Given a CertificateSource it is the TLS
// listener instead: the same server over TLS, each handshake's certificate chosen by its SNI name
// (certificates.ts), the default one (for a client that sends no name) replaced on each reload, and
// HTTP/2 beside HTTP/1.1 through ALPN (http2.ts). With a TlsPassthrough, each connection's
// ClientHello is read first, and those whose SNI names a passthrough route are relayed raw instead of
// terminated (tls-passthrough.ts).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { constants, createSecureServer, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { LiveSet } from '../collections.js';
import type { HostPort } from '../config/values.js';
import { closeHttp, listenHttp } from '../ops.js';
import { type CertificateSource, MIN_TLS_VERSION } from './certificates.js';
import type { HttpOptions } from './config.js';
import type { PublicEdge } from './edge.js';
import { isH2cUpgrade, serveWithoutUpgrade } from './h2c.js';
import { asHttp1Head, clientChannel, http2Settings, Http2Sessions, isHttp2 } from './http2.js';
import type { PublicListener } from './public-listener.js';
import type { TlsPassthrough } from './tls-passthrough.js';

export interface HttpListenerOptions {
  /** Where to listen. */
  listen: HostPort;
  http: HttpOptions;
  /** For the TLS listener: its certificates. */
  certificates?: CertificateSource;
  /** The setting a bind failure names; `listen` by default. */
  key?: string;
  /** Where the TLS listener reports HTTP/2 sessions it cut off. */
  log?: Logger;
  /** For the TLS listener: the peek that takes passthrough routes' connections before TLS. */
  passthrough?: TlsPassthrough;
}

export class HttpListener implements PublicListener {
  readonly url: string;
  readonly #server: Server;
  readonly #connections: PublicConnections;
  readonly #sessions: Http2Sessions | undefined;
  readonly #passthrough: TlsPassthrough | undefined;

  private constructor(
    url: string,
    server: Server,
    connections: PublicConnections,
    sessions: Http2Sessions | undefined,
    passthrough: TlsPassthrough | undefined,
  ) {
    this.url = url;
    this.#server = server;
    this.#connections = connections;
    this.#sessions = sessions;
    this.#passthrough = passthrough;
  }

  /** Binds the listener; resolves once it listens, rejects when it cannot bind. */
  static async start(options: HttpListenerOptions, edge: PublicEdge): Promise<HttpListener> {
    const connections = new PublicConnections(edge);
    const { certificates } = options;
    const sessions =
      certificates === undefined
        ? undefined
        : new Http2Sessions(options.log, options.http.keepAliveTimeoutMs);
    const server = createPublicServer(options.http, edge, connections, certificates, sessions);
    const passthrough = certificates === undefined ? undefined : options.passthrough;
    if (passthrough !== undefined) peekFirst(server, passthrough);
    const url = await listenHttp(server, options.listen, options.key ?? 'listen');
    return new HttpListener(
      certificates === undefined ? url : url.replace(/^http:/, 'https:'),
      server,
      connections,
      sessions,
      passthrough,
    );
  }

  /** Responses being written, and upgraded connections open (passthrough relays among them). */
  get counts(): { responses: number; upgraded: number } {
    const counts = this.#connections.counts;
    return { ...counts, upgraded: counts.upgraded + (this.#passthrough?.open ?? 0) };
  }

  /** Client connections open right now, as Node counts them. */
  connectionCount(): Promise<number> {
    return new Promise((resolve, reject) =>
      this.#server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
    );
  }

  startDrain(): void {
    this.#connections.startDrain();
    this.#sessions?.startDrain();
    this.#server.close();
    this.#server.closeIdleConnections();
  }

  closeUpgraded(): number {
    return this.#connections.closeUpgraded() + (this.#passthrough?.closeUpgraded() ?? 0);
  }

  destroyUpgraded(): void {
    this.#connections.destroyUpgraded();
    this.#passthrough?.destroyUpgraded();
  }

  close(): Promise<void> {
    // The server counts the relayed and the peeked connections as its own: they go first.
    this.#passthrough?.close();
    return closeHttp(this.#server);
  }
}

/**
 * Puts the passthrough peek in front of TLS. Node's TLS server starts a handshake in its 'connection'
 * listener, so those listeners are taken off and called by the peek, with the socket whose first
 * bytes it read and put back, once the connection is not for passthrough. The TLS socket reads bytes
 * left in the socket's buffer before those that come later (the 'connection' event is the documented
 * way to hand a server a socket).
 */
function peekFirst(server: Server, passthrough: TlsPassthrough): void {
  const handlers = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  const terminate = (socket: Socket): void => {
    for (const handler of handlers) handler.call(server, socket);
  };
  server.on('connection', (socket: Socket) => passthrough.accept(socket, terminate));
}

function createPublicServer(
  http: HttpOptions,
  edge: PublicEdge,
  connections: PublicConnections,
  certificates: CertificateSource | undefined,
  sessions: Http2Sessions | undefined,
): Server {
  const options = {
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
  };
  const server =
    certificates === undefined || sessions === undefined
      ? createServer(options)
      : tlsServer(options, http, certificates, sessions, connections);
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
 * The HTTPS server, HTTP/2 and HTTP/1.1 by ALPN: SNI picks each handshake's certificate; no SNI gets
 * the first certificate. Its HTTP/1.1 connections run on Node's HTTP/1.1 server code, which reads the
 * limits from the server's fields and not from the constructor's options, so they are set on it.
 */
function tlsServer(
  options: Record<string, unknown>,
  http: HttpOptions,
  certificates: CertificateSource,
  sessions: Http2Sessions,
  connections: PublicConnections,
): Server {
  const first = (): { cert: Buffer; key: Buffer } => certificates.all()[0]!.pem;
  const server = createSecureServer({
    ...first(),
    allowHTTP1: true,
    settings: http2Settings(http),
    minVersion: MIN_TLS_VERSION,
    SNICallback: (servername, done) => {
      const cert = certificates.select(servername);
      if (cert === undefined) done(new Error(`no certificate serves ${servername}`));
      else done(null, cert.context);
    },
  });
  Object.assign(server, {
    headersTimeout: options.headersTimeout,
    requestTimeout: options.requestTimeout,
    keepAliveTimeout: options.keepAliveTimeout,
    maxHeaderSize: options.maxHeaderSize,
    connectionsCheckingInterval: options.connectionsCheckingInterval,
    requireHostHeader: options.requireHostHeader,
  });
  server.on('connection', (socket: Socket) => socket.setNoDelay(true));
  server.on('session', sessions.onSession);
  // An HTTP/2 CONNECT stream (an RFC 8441 WebSocket, or a refusal), or an HTTP/1.1 CONNECT on its
  // socket: that one is closed, as the plain listener does (Node's default with no listener).
  server.on('connect', (req: IncomingMessage, second: ServerResponse | Duplex) => {
    if (isHttp2(req)) connections.onConnect(req, second as ServerResponse);
    else (second as Duplex).destroy();
  });
  certificates.onChange(() => server.setSecureContext({ ...first(), minVersion: MIN_TLS_VERSION }));
  // A handshake that fails (a refused name, a client that speaks no TLS) is the client's affair.
  server.on('tlsClientError', () => {});
  return server as unknown as Server;
}

/**
 * The public connections as a drain sees them. Responses begun once the drain has started carry
 * `Connection: close`, and a connection whose response was already under way is closed after it, so
 * keep-alive clients go elsewhere instead of sending requests that no tunnel will take. Upgraded
 * sockets, and the HTTP/2 streams of RFC 8441 WebSockets, are kept so that the drain can close them
 * when the grace period ends.
 */
class PublicConnections {
  #draining = false;
  // LiveSets, not Sets: every request passes through one, and the hash tables a Set drops would keep
  // finished responses from the scavenger (collections.ts).
  readonly #responses = new LiveSet<ServerResponse>('http.responses');
  readonly #upgraded = new LiveSet<Socket>('http.upgraded');
  readonly #upgradedStreams = new LiveSet<ServerHttp2Stream>('http.upgradedStreams');
  readonly #edge: PublicEdge;
  // One listener function each, shared by every response and socket: `this` is the emitter.
  readonly #forgetResponse: (this: ServerResponse) => void;
  readonly #forgetUpgraded: (this: Socket) => void;
  readonly #forgetStream: (this: ServerHttp2Stream) => void;

  constructor(edge: PublicEdge) {
    this.#edge = edge;
    const responses = this.#responses;
    const upgraded = this.#upgraded;
    const streams = this.#upgradedStreams;
    this.#forgetResponse = function (this: ServerResponse) {
      responses.delete(this);
    };
    this.#forgetUpgraded = function (this: Socket) {
      upgraded.delete(this);
    };
    this.#forgetStream = function (this: ServerHttp2Stream) {
      streams.delete(this);
    };
  }

  get counts(): { responses: number; upgraded: number } {
    return {
      responses: this.#responses.size,
      upgraded: this.#upgraded.size + this.#upgradedStreams.size,
    };
  }

  readonly onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (isHttp2(req)) asHttp1Head(req);
    else if (this.#draining) res.shouldKeepAlive = false;
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

  readonly onConnect = (req: IncomingMessage, res: ServerResponse): void => {
    const stream = clientChannel(req) as ServerHttp2Stream;
    this.#upgradedStreams.add(stream);
    stream.once('close', this.#forgetStream);
    this.#edge.onConnect(req, res);
  };

  startDrain(): void {
    this.#draining = true;
    for (const res of this.#responses.list()) {
      // An HTTP/2 stream is no connection: its session's GOAWAY is the drain's word (http2.ts).
      if (isHttp2(res.req)) continue;
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
    for (const socket of this.#upgraded.list()) socket.end();
    // A stream's END_STREAM is its FIN (RFC 9113 §8.5); one still waiting for the target's answer has
    // no response to end, and is cancelled instead.
    for (const stream of this.#upgradedStreams.list()) {
      if (stream.headersSent) stream.end();
      else stream.close(constants.NGHTTP2_CANCEL);
    }
    return this.#upgraded.size + this.#upgradedStreams.size;
  }

  /**
   * Closes the upgraded sockets that did not finish that close in time. A plain close, not a reset:
   * resetAndDestroy() on a socket whose FIN is still queued leaves node spinning in its exit cleanup.
   */
  destroyUpgraded(): void {
    for (const socket of this.#upgraded.list()) socket.destroy();
    // RST_STREAM: NO_ERROR when this side's END_STREAM went out (the client just did not end its own,
    // RFC 9113 §8.1), CANCEL when even that did not.
    for (const stream of this.#upgradedStreams.list()) {
      stream.close(stream.writableFinished ? constants.NGHTTP2_NO_ERROR : constants.NGHTTP2_CANCEL);
    }
  }
}
