// The controller's public HTTP edge: every request is checked, routed by Host and path, and sent down a
// tunnel of its cluster; whatever goes wrong becomes an error page with a reason and the request id
// (DESIGN §3). One JSON log line per request.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';
import { isIPv6, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ReasonCode, SluiceErrorCode } from '../errors.js';
import {
  cutResponse,
  type ExchangeStats,
  type ForwardOptions,
  forwardHttp,
  type Outcome,
} from '../proxy/forward.js';
import { type ErrorPageInput, renderErrorPage } from '../proxy/error-page.js';
import {
  chooseRequestId,
  clientAddress,
  forwardRequestHeaders,
  trustedProxyCheck,
} from '../proxy/headers.js';
import { COMPACT_HEADS, type HttpStreamMeta } from '../proxy/meta.js';
import { pathRefusal } from '../proxy/request-target.js';
import { forwardUpgrade, relayUpgrade, serializeHead, type UpgradeOptions } from '../proxy/upgrade.js';
import { closeWhenAnswered, Http2WebSocketClient } from '../proxy/websocket-h2.js';
import type { Route } from '../store/model.js';
import type { Stream, StreamMeta } from '../tunnel/stream.js';
import type { HttpOptions } from './config.js';
import {
  ClusterDispatcher,
  type DispatchHandler,
  type Opened,
  type TunnelSource,
  type Unavailable,
} from './dispatcher.js';
import { asHttp1Head, asWebSocketUpgrade, clientChannel, connectProtocol, isHttp2 } from './http2.js';
import { normalizeHost, type RouteTable } from './routes.js';

export interface EdgeOptions {
  routes: () => RouteTable;
  /** Opens the streams to each cluster; by default a dispatcher over `registry`. */
  dispatcher?: ClusterDispatcher;
  /** Where the default dispatcher finds tunnels; needed only when `dispatcher` is not given. */
  registry?: TunnelSource;
  http: HttpOptions;
  logger: Logger;
  /** Told of every request once it is over, after its log line: for metrics and the dashboard. */
  onRequestDone?: (done: RequestDone) => void;
  /**
   * The port the TLS listener is bound on, for the Location of http.redirectHttps; required with it.
   * Read per redirect, as the listener binds after the edge exists (and to port 0 in tests).
   */
  httpsPort?: () => number;
}

/** A finished request, as the log line has it: plain or upgrade, served or refused by this edge. */
export interface RequestDone {
  readonly kind: 'http' | 'upgrade';
  /** Wall-clock time the request arrived, in ms since the epoch. */
  readonly at: number;
  readonly requestId: string;
  readonly method: string;
  readonly host: string;
  readonly path: string;
  /** The route's host and path prefix, as logged; absent when no route matched. */
  readonly route?: string;
  readonly cluster?: string;
  /** 0 when no status was sent (the client left first, or an upgrade broke before its answer). */
  readonly status: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly ms: number;
  /** How the exchange ended (docs/http-over-streams.md); absent when it never reached a tunnel. */
  readonly outcome?: string;
  /**
   * The SLUICE_ERR_* code of the last tunnel error the request met on its streams (a reset, a refusal,
   * a stream that could not be opened); absent when none. A tunnel's own end is not repeated here.
   */
  readonly code?: SluiceErrorCode;
  /** The peer controller (its instance id) the request went through; absent when served locally. */
  readonly peer?: string;
  /** Why this edge answered it itself: an error page, or a redirect to https (http.redirectHttps). */
  readonly reason?: string;
  /** `reason` as a stable code (docs/errors.md), the `code` of the JSON error page. */
  readonly reasonCode?: ReasonCode;
}

// Ids are a random per-process prefix and a counter, 32 hex digits: unique across controllers and
// restarts, one word in a log line, and far cheaper than 16 fresh random bytes per request. They are
// not secrets.
const ID_PREFIX = randomBytes(8).toString('hex');
let idCounter = 0n;

/** A request id: unique enough to join logs across hops, and one word in a log line. */
export function newRequestId(): string {
  idCounter = (idCounter + 1n) & 0xffff_ffff_ffff_ffffn;
  return ID_PREFIX + idCounter.toString(16).padStart(16, '0');
}

/**
 * One request's log line as it fills in. Every field exists from the start (undefined until known), so
 * all requests share one object shape; the finished object is what onRequestDone receives.
 */
interface LogFields {
  requestId: string;
  kind: RequestDone['kind'];
  /** performance.now() at arrival, for `ms`; not logged. */
  started: number;
  at: number;
  method: string;
  host: string;
  path: string;
  route: string | undefined;
  cluster: string | undefined;
  agent: string | undefined;
  /** The peer controller a fleet forwarded it through (its instance id); undefined when local. */
  peer: string | undefined;
  /** The client's address: the peer's, or what a trusted proxy in front said (http.trustedProxies). */
  client: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  ms: number;
  outcome: string | undefined;
  code: SluiceErrorCode | undefined;
  reason: string | undefined;
  reasonCode: ReasonCode | undefined;
  detail: string | undefined;
}

/** One request being served, plain or upgrade: how to run it on a stream and how to refuse it. */
interface Exchange {
  req: IncomingMessage;
  /** Its kind is `log.kind`. */
  log: LogFields;
  /** The client address whose share of http.maxRequestsPerClient it holds, once it holds one. */
  slot: string | undefined;
  run(stream: Stream, meta: HttpStreamMeta, stats: ExchangeStats): Promise<Outcome>;
  fail(status: number, code: ReasonCode, reason: string): void;
  /** Answers 308 to `location` (http.redirectHttps); an upgrade's connection closes after it. */
  redirect(location: string): void;
}

export class PublicEdge {
  readonly #options: EdgeOptions;
  readonly #dispatcher: ClusterDispatcher;
  readonly #trusts: (address: string) => boolean;
  #inFlight = 0;
  #idle: (() => void) | null = null;
  /** Requests in flight by client address, for http.maxRequestsPerClient; absent when none. */
  readonly #perClient = new Map<string, number>();

  constructor(options: EdgeOptions) {
    this.#options = options;
    if (options.dispatcher !== undefined) this.#dispatcher = options.dispatcher;
    else if (options.registry !== undefined) this.#dispatcher = new ClusterDispatcher(options.registry);
    else throw new TypeError('PublicEdge needs a dispatcher or a registry');
    if (options.http.redirectHttps && options.httpsPort === undefined) {
      throw new TypeError('PublicEdge needs httpsPort with http.redirectHttps');
    }
    this.#trusts = trustedProxyCheck(options.http.trustedProxies);
  }

  /** Requests being served right now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Resolves once no request is in flight. */
  whenIdle(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#idle;
      this.#idle = () => {
        previous?.();
        resolve();
      };
    });
  }

  readonly onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    // Node emits 'close' for a response queued behind a pipelined one only once the connection reaches
    // it; if the connection dies first, the response is told here instead (see watchQueued). An
    // HTTP/2 stream has no pipeline: its req.socket stands for the session's, shared by every stream.
    const http1 = !isHttp2(req);
    if (http1) {
      if (res.socket === null) watchQueued(req.socket, res);
      (req.socket as InFlightSocket)[LAST_REQUEST] = req;
    }
    const log = this.#begin(req, 'http');
    const exchange: Exchange = {
      req,
      log,
      slot: undefined,
      run: (stream, meta, stats) => {
        return forwardHttp(req, res, stream, this.#forwardOptions(req, meta), stats);
      },
      fail: (status, code, reason) => this.#sendError(req, res, log, status, code, reason),
      redirect: (location) => this.#sendRedirect(res, log, location),
    };
    const served = this.#serve(exchange)
      .catch((err: unknown) => this.#internalError(exchange, err))
      .finally(() => http1 && closeIfDropped(req.socket, res));
    res.once('close', () =>
      this.#end(exchange, served, () => (res.headersSent && !unsent.has(res) ? res.statusCode : 0)),
    );
  };

  /**
   * An Upgrade request (WebSocket or any protocol): Node hands over the raw socket and the bytes that
   * followed the head, which go to the stream first (docs/http-over-streams.md, "Upgrades").
   */
  readonly onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const log = this.#begin(req, 'upgrade');
    // The status to log: the target's answer, or the error page this edge wrote.
    let status = 0;
    let running: ExchangeStats | undefined;
    const exchange: Exchange = {
      req,
      log,
      slot: undefined,
      run: (stream, meta, stats) => {
        running = stats;
        // A switched connection is meant to stay open: it gives its client's share back.
        const options = this.#upgradeOptions(meta, () => this.#releaseSlot(exchange));
        return forwardUpgrade(socket as Socket, head, stream, options, stats);
      },
      fail: (code, reasonCode, reason) => {
        log.reason = reason;
        log.reasonCode = reasonCode;
        status = code;
        const { accept } = req.headers;
        const page = { status: code, code: reasonCode, reason, requestId: log.requestId, accept };
        log.bytesOut += writeRawError(socket, { ...page, method: req.method }, this.#hsts(req));
      },
      redirect: (location) => {
        log.reason = REDIRECT_REASON;
        status = 308;
        writeRawRedirect(socket, location, log.requestId);
      },
    };
    socket.on('error', ignore);
    // Node hands over an upgrade pipelined behind plain requests while their responses are still to
    // be written: it waits for them, or its 101 and raw bytes would overtake them on the wire.
    const turn = (socket as InFlightSocket)._httpMessage ? afterInFlight(socket) : undefined;
    const served = (
      turn === undefined ? this.#serve(exchange) : turn.then(() => this.#serveUpgrade(exchange))
    ).catch((err: unknown) => this.#internalError(exchange, err));
    socket.once('close', () => this.#end(exchange, served, () => status || (running?.status ?? 0)));
  };

  /**
   * A CONNECT stream on an HTTP/2 connection. With `:protocol websocket` it is a WebSocket (RFC 8441):
   * served as the HTTP/1.1 upgrade it stands for, with the same routing, limits and log line, and
   * answered `:status 200` once the target switched (websocket-h2.ts). A plain CONNECT asks for a
   * forward proxy's tunnel and another `:protocol` for something this gateway does not relay: both
   * get 501.
   */
  readonly onConnect = (req: IncomingMessage, res: ServerResponse): void => {
    const stream = clientChannel(req) as ServerHttp2Stream;
    const protocol = connectProtocol(req);
    let key: string | undefined;
    if (protocol === 'websocket') key = asWebSocketUpgrade(req);
    else asHttp1Head(req);
    const log = this.#begin(req, 'upgrade');
    let status = 0;
    let running: ExchangeStats | undefined;
    const exchange: Exchange = {
      req,
      log,
      slot: undefined,
      run: (tunnel, meta, stats) => {
        running = stats;
        const options = this.#upgradeOptions(meta, () => this.#releaseSlot(exchange));
        return relayUpgrade(new Http2WebSocketClient(stream, key!), NO_BYTES, tunnel, options, stats);
      },
      fail: (code, reasonCode, reason) => {
        status = code;
        this.#sendError(req, res, log, code, reasonCode, reason);
        closeWhenAnswered(stream);
      },
      // HTTP/2 runs on the TLS listener only, which never redirects; here for the Exchange's shape.
      redirect: (location) => {
        status = 308;
        this.#sendRedirect(res, log, location);
        closeWhenAnswered(stream);
      },
    };
    stream.on('error', ignore);
    const served = (
      key === undefined
        ? Promise.resolve(exchange.fail(501, 'not_implemented', unsupportedConnect(protocol)))
        : this.#serve(exchange)
    ).catch((err: unknown) => this.#internalError(exchange, err));
    stream.once('close', () => this.#end(exchange, served, () => status || (running?.status ?? 0)));
  };

  /** An upgrade whose turn came: served, unless its connection closed while it waited. */
  #serveUpgrade(exchange: Exchange): Promise<void> | undefined {
    if (exchange.req.socket.destroyed) {
      exchange.log.reason = 'the client closed the connection before the upgrade could be served';
      return undefined;
    }
    return this.#serve(exchange);
  }

  /**
   * Requests Node could not parse, or that broke a limit before they became requests: answered with a
   * page and a closed connection, as the connection's framing can no longer be trusted.
   */
  readonly onClientError = (err: NodeJS.ErrnoException, socket: Duplex): void => {
    // Its page is written: Node parses each chunk still coming and fails again, and the chunk is dropped.
    if (lingering.has(socket)) return;
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    // Bytes after a request that said `Connection: close` (RFC 9112 §9.6): they are not read, and Node
    // closes the connection once that request's response is written. Destroying it here would cut the
    // very answer the client asked for.
    if (err.code === 'HPE_CLOSED_CONNECTION') return;
    const [status, reasonCode, reason] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? ([431, 'head_too_large', 'the request head is larger than this gateway accepts'] as const)
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? ([408, 'request_timeout', 'the request was not received in time'] as const)
          : ([400, 'bad_request', 'the request is not valid HTTP/1.1'] as const);
    const connection = socket as InFlightSocket;
    if (connection._httpMessage !== null && connection._httpMessage !== undefined) {
      if (refusing.has(socket)) return; // Node parses on and fails again; one page is enough
      // The fault is in a request still being read (a body cut short, bad chunking, too slow): the
      // response in flight is its own, and can never be completed properly.
      if (connection[LAST_REQUEST]?.complete !== true || err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
        socket.destroy();
        return;
      }
      // Whole requests came before the bad one: they are answered first, then the error page.
      refusing.add(socket);
      void afterInFlight(socket).then(() => {
        refusing.delete(socket);
        if (!socket.destroyed) this.onClientError(err, socket);
      });
      return;
    }
    const requestId = newRequestId();
    const hsts = isEncrypted(socket) ? (this.#options.http.hsts ?? undefined) : undefined;
    writeRawError(socket, { status, code: reasonCode, reason, requestId }, hsts);
    linger(socket);
    const fields = { requestId, status, reason, reasonCode, err: err.code ?? err.message };
    this.#options.logger.info(fields, 'bad request');
  };

  #begin(req: IncomingMessage, kind: RequestDone['kind']): LogFields {
    this.#inFlight++;
    return {
      requestId: chooseRequestId(req.rawHeaders, newRequestId),
      kind,
      started: performance.now(),
      at: Date.now(),
      method: req.method ?? '',
      host: req.headers.host ?? '',
      path: (req.url ?? '').split('?', 1)[0]!.slice(0, 512),
      route: undefined,
      cluster: undefined,
      agent: undefined,
      peer: undefined,
      client: this.#client(req),
      status: 0,
      bytesIn: 0,
      bytesOut: 0,
      ms: 0,
      outcome: undefined,
      code: undefined,
      reason: undefined,
      reasonCode: undefined,
      detail: undefined,
    };
  }

  /**
   * The connection closed. The line is written once `served` has settled too: the exchange settles on
   * this same close event and #serve records its bytes and outcome only a microtask later, so a line
   * written right away would lack them.
   */
  #end(exchange: Exchange, served: Promise<void>, status: () => number): void {
    const { log, req } = exchange;
    // An idle keep-alive connection must not keep its last request (head, headers, parser state) alive.
    const socket = req.socket as InFlightSocket;
    if (socket[LAST_REQUEST] === req) socket[LAST_REQUEST] = undefined;
    log.ms = Math.round((performance.now() - log.started) * 10) / 10;
    const write = (): void => {
      log.status = status();
      const level = log.outcome === 'broken' || (log.status >= 500 && log.status !== 503) ? 'warn' : 'info';
      const { logger } = this.#options;
      // The copy that leaves out the fields a log line does not need costs a couple of microseconds,
      // so it is made only when the line is written (the bench and busy gateways log at warn).
      if (logger.isLevelEnabled(level)) {
        const { started, at, kind, ...fields } = log;
        void started;
        void at;
        void kind;
        logger[level](fields, 'request');
      }
      this.#options.onRequestDone?.(log);
      this.#releaseSlot(exchange);
      if (--this.#inFlight === 0 && this.#idle !== null) {
        const idle = this.#idle;
        this.#idle = null;
        idle();
      }
    };
    void served.then(write, write);
  }

  // The options are written out field by field, never spread from a shared part: V8 (Node 20) gives
  // `{ ...part, more }` a hidden class of its own on every call, a new map and descriptor array that
  // live until the next full GC (about 600 bytes promoted per request), and turns every property read
  // of the options megamorphic.
  #forwardOptions(req: IncomingMessage, meta: HttpStreamMeta): ForwardOptions {
    const { http } = this.#options;
    return {
      requestId: meta.requestId,
      via: http.via,
      responseTimeoutMs: http.responseTimeoutMs,
      headRequest: req.method === 'HEAD',
      bodyIdleTimeoutMs: http.bodyIdleTimeoutMs,
      hsts: this.#hsts(req),
    };
  }

  #upgradeOptions(meta: HttpStreamMeta, onSwitch: () => void): UpgradeOptions {
    const { http } = this.#options;
    return {
      requestId: meta.requestId,
      via: http.via,
      responseTimeoutMs: http.responseTimeoutMs,
      idleTimeoutMs: http.upgradeIdleTimeoutMs,
      onSwitch,
    };
  }

  #internalError(exchange: Exchange, err: unknown): void {
    exchange.log.detail = err instanceof Error ? err.message : String(err);
    exchange.fail(502, 'internal', 'internal error while proxying the request');
  }

  async #serve(exchange: Exchange): Promise<void> {
    const { req, log } = exchange;
    const { http } = this.#options;
    if (req.rawHeaders.length / 2 > http.maxHeaders) {
      const reason = `the request has more than ${http.maxHeaders} header fields`;
      return exchange.fail(431, 'too_many_headers', reason);
    }
    if (log.kind === 'upgrade' && carriesBody(req)) {
      return exchange.fail(400, 'bad_request', 'an upgrade request must not carry a body');
    }
    const target = requestTarget(req);
    if (typeof target === 'string') return exchange.fail(400, 'bad_request', target);
    const route = this.#options.routes().match(target.host, target.path);
    if (route !== undefined) {
      log.route = route.path === undefined || route.path === '/' ? route.host : `${route.host}${route.path}`;
      log.cluster = route.cluster;
    }
    // After the match, so that a route's redirects count in its metrics and traffic; a host with no
    // route is redirected too, as every plain request is.
    const location = this.#redirectTo(req, target);
    if (location !== undefined) return exchange.redirect(location);
    if (route === undefined) return exchange.fail(404, 'no_route', `no route for host ${target.host}`);

    const meta = this.#meta(req, route, target.path, log);
    if (meta === undefined) {
      return exchange.fail(508, 'loop', 'the request has already passed through this gateway (Via loop)');
    }
    if (!this.#takeSlot(exchange)) {
      return exchange.fail(
        429,
        'too_many_requests',
        `this client address has ${http.maxRequestsPerClient} requests in flight, the most this gateway allows`,
      );
    }
    const stats: ExchangeStats = { bytesIn: 0, bytesOut: 0, status: 0, code: undefined };
    const outcome = await this.#dispatcher.dispatch(
      route.cluster,
      meta as unknown as StreamMeta,
      new TunnelAttempt(exchange, meta, stats),
      (listener) => clientGone(exchange.req, listener),
    );
    log.bytesIn = stats.bytesIn;
    log.bytesOut = stats.bytesOut;
    log.outcome = outcome.kind;
    log.code = stats.code;
    if (outcome.kind === 'failed') {
      log.detail = outcome.detail;
      exchange.fail(outcome.status, outcome.code, outcome.reason);
    } else if (outcome.kind === 'broken') {
      log.detail = outcome.detail;
    }
  }

  /**
   * Counts a request against its client address's share (http.maxRequestsPerClient), if that has
   * room. One client, slow on purpose or not, then holds at most that many tunnel streams and target
   * connections. An upgrade counts only until its 101: a WebSocket is meant to stay open, and a page
   * may hold many, but one that is never answered holds a stream like any request. The address is the
   * log line's client: behind a trusted proxy, the one it forwarded for, so the clients of one load
   * balancer do not share its single share.
   */
  #takeSlot(exchange: Exchange): boolean {
    const max = this.#options.http.maxRequestsPerClient;
    if (max === 0) return true;
    const address = clientKey(exchange.log.client);
    const held = this.#perClient.get(address) ?? 0;
    if (held >= max) return false;
    this.#perClient.set(address, held + 1);
    exchange.slot = address;
    return true;
  }

  /** Gives the exchange's share back, if it still holds one. */
  #releaseSlot(exchange: Exchange): void {
    const address = exchange.slot;
    if (address === undefined) return;
    exchange.slot = undefined;
    const held = this.#perClient.get(address) ?? 0;
    if (held <= 1) this.#perClient.delete(address);
    else this.#perClient.set(address, held - 1);
  }

  /** Behind a trusted proxy the peer is that proxy; the client is who it says it forwarded for. */
  #client(req: IncomingMessage): string {
    const peer = unmapIPv4(req.socket.remoteAddress ?? '');
    return this.#trusts(peer) ? clientAddress(req.rawHeaders, peer, this.#trusts) : peer;
  }

  /** The stream's open metadata, or undefined for a request that loops through this gateway. */
  #meta(req: IncomingMessage, route: Route, path: string, log: LogFields): HttpStreamMeta | undefined {
    const { requestId, kind } = log;
    const { http } = this.#options;
    const socket = req.socket;
    const address = unmapIPv4(socket.remoteAddress ?? '');
    const trustedPeer = this.#trusts(address);
    const { headers, loop } = forwardRequestHeaders(req.rawHeaders, {
      clientAddress: address,
      clientPort: socket.remotePort,
      trustedPeer,
      forwarded: http.forwarded,
      // The TLS listener's sockets are TLS sockets: its requests were made over https.
      proto: (socket as { encrypted?: boolean }).encrypted === true ? 'https' : 'http',
      host: req.headers.host ?? '',
      requestId,
      via: http.via,
      httpVersion: req.httpVersion,
      upgrade: kind === 'upgrade',
    });
    if (loop) return undefined;
    const client = log.client;
    const meta: HttpStreamMeta = {
      kind,
      target: route.target,
      // A client behind a trusted proxy has no port this hop knows.
      client: `${client}:${client === address ? (socket.remotePort ?? 0) : 0}`,
      requestId,
      head: { method: targetMethod(req, kind), path, version: req.httpVersion, headers },
    };
    if (req.headers['transfer-encoding'] !== undefined) meta.head.chunked = true;
    if (route.serverName !== undefined) meta.serverName = route.serverName;
    // This controller reads the response itself; a peer's relay of the stream does not carry the mark.
    meta[COMPACT_HEADS] = true;
    return meta;
  }

  /**
   * With http.redirectHttps, where a request on the plain listener is sent instead of being served:
   * the same host (its port dropped) on the TLS listener's port, the same path and query. Paths under
   * http.redirectExclude (ACME HTTP-01 challenges, which must be answered over plain HTTP) and
   * `OPTIONS *`, which names no resource to move, are served as usual.
   */
  #redirectTo(req: IncomingMessage, target: { host: string; path: string }): string | undefined {
    const { http } = this.#options;
    if (!http.redirectHttps || isEncrypted(req.socket) || target.path === '*') return undefined;
    if (http.redirectExclude.some((prefix) => target.path.startsWith(prefix))) return undefined;
    // A trusted proxy in front that ended TLS itself says so: redirecting its requests would loop.
    if (this.#trusts(unmapIPv4(req.socket.remoteAddress ?? '')) && forwardedHttps(req)) return undefined;
    const port = this.#options.httpsPort!();
    // requestTarget has checked the Host: normalizeHost gives its name (or [IPv6]) without the port.
    const host = normalizeHost(target.host)!;
    return `https://${host}${port === 443 ? '' : `:${port}`}${target.path}`;
  }

  /** The Strict-Transport-Security value for a response to `req`: over TLS, when http.hsts is set. */
  #hsts(req: IncomingMessage): string | undefined {
    const { hsts } = this.#options.http;
    return hsts !== null && isEncrypted(req.socket) ? hsts : undefined;
  }

  #sendRedirect(res: ServerResponse, log: LogFields, location: string): void {
    log.reason = REDIRECT_REASON;
    if (res.headersSent || res.destroyed) {
      cutResponse(res);
      return;
    }
    // No body: every client follows the Location, and a body would only be bytes for nobody to read.
    res.writeHead(308, ['Location', location, 'Content-Length', '0', 'X-Request-Id', log.requestId]);
    res.end();
  }

  #sendError(
    req: IncomingMessage,
    res: ServerResponse,
    log: LogFields,
    status: number,
    code: ReasonCode,
    reason: string,
  ): void {
    log.reason = reason;
    log.reasonCode = code;
    if (res.headersSent || res.destroyed) {
      cutResponse(res);
      return;
    }
    const page = renderErrorPage({
      status,
      code,
      reason,
      requestId: log.requestId,
      accept: req.headers.accept,
      method: req.method,
      http2: isHttp2(req),
    });
    const hsts = this.#hsts(req);
    if (hsts !== undefined) page.headers.push('Strict-Transport-Security', hsts);
    res.writeHead(page.status, page.headers);
    res.end(page.body);
    log.bytesOut += page.body.length;
  }
}

/**
 * An upgrade request with a body: after the 101 its bytes would be read as the new protocol's, and
 * before it they hold a stream open with no body-idle timer (the socket left Node's parser). Refused,
 * as no WebSocket or other upgrade client sends one.
 */
function carriesBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && Number(length) !== 0);
}

/**
 * One request's turns on the streams the dispatcher opens: the exchange runs on each, and a failure
 * that the exchange marks retryable (the agent refused the stream before reading any of it) sends it
 * to the next tunnel. The stats and the log line carry across the turns.
 */
class TunnelAttempt implements DispatchHandler<Outcome> {
  readonly #exchange: Exchange;
  readonly #meta: HttpStreamMeta;
  readonly #stats: ExchangeStats;

  constructor(exchange: Exchange, meta: HttpStreamMeta, stats: ExchangeStats) {
    this.#exchange = exchange;
    this.#meta = meta;
    this.#stats = stats;
  }

  run(opened: Opened): Promise<Outcome> {
    if (opened.skipped !== undefined) this.#stats.code = opened.skipped;
    const { tunnel } = opened;
    const log = this.#exchange.log;
    // Through a peer, the agent is one hop further and unknown here: the log names the peer instead.
    log.agent = tunnel.peer === undefined ? `${tunnel.agent}/${tunnel.replica}` : undefined;
    log.peer = tunnel.peer;
    return this.#exchange.run(opened.stream, this.#meta, this.#stats);
  }

  refusedUnprocessed(outcome: Outcome): boolean {
    return outcome.kind === 'failed' && outcome.retryable;
  }

  unavailable(why: Unavailable): Outcome {
    if (why.code !== undefined) this.#stats.code = why.code;
    // A tunnel that could not open a stream is no verdict on the request: another request may find one.
    const retryable = why.cause === 'open-failed';
    return {
      kind: 'failed',
      status: 503,
      code: 'no_tunnel',
      reason: why.reason,
      retryable,
      detail: why.detail,
    };
  }
}

/** Where a request goes: the host to route by and the path to send, or why the request is refused. */
function requestTarget(req: IncomingMessage): { host: string; path: string } | string {
  const url = req.url ?? '';
  // RFC 9112 §3.2: exactly one Host field; a second one could route by one and be served by the other.
  let hosts = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.length === 4 && req.rawHeaders[i]!.toLowerCase() === 'host') hosts++;
  }
  if (hosts > 1) return 'the request has more than one Host header';
  const host = req.headers.host ?? '';
  if (host === '' || normalizeHost(host) === undefined) return 'the request has no valid Host header';
  let path = url;
  if (!url.startsWith('/')) {
    if (url === '*' && req.method === 'OPTIONS') return { host, path: '*' };
    // Absolute form (RFC 9112 §3.2.2) is accepted when it names the same host as the Host header.
    const absolute = parseAbsolute(url);
    if (absolute === undefined) return 'the request target is not a path';
    if (normalizeHost(absolute.host) !== normalizeHost(host)) {
      return 'the request target names another host than the Host header';
    }
    path = absolute.path;
  }
  const refused = pathRefusal(path);
  if (refused !== undefined) return refused;
  return { host, path };
}

function parseAbsolute(url: string): { host: string; path: string } | undefined {
  const m = /^https?:\/\/([^/?#@]+)([/?][^#]*)?$/i.exec(url);
  if (m === null) return undefined;
  const rest = m[2] ?? '/';
  return { host: m[1]!, path: rest.startsWith('/') ? rest : `/${rest}` };
}

/**
 * Whose share of http.maxRequestsPerClient a client address counts against: an IPv4 address is its
 * own, an IPv6 one its /64 (`2001:db8:0:1::/64`), since a single host is commonly given a whole /64 and
 * may pick a fresh address in it for every connection. Anything else (not an address) is its own key.
 */
export function clientKey(address: string): string {
  const zone = address.indexOf('%');
  const bare = zone === -1 ? address : address.slice(0, zone);
  if (!isIPv6(bare)) return address;
  const [head = '', tail] = bare.split('::');
  const front = head === '' ? [] : head.split(':');
  if (tail !== undefined) {
    // `::` stands for the zero groups that make eight; a dotted IPv4 tail is two groups.
    const back = tail === '' ? [] : tail.split(':');
    const width = back.length + (back.at(-1)?.includes('.') === true ? 1 : 0);
    for (let i = front.length; i < 8 - width; i++) front.push('0');
    front.push(...back);
  }
  const prefix = front.slice(0, 4).map((group) => parseInt(group, 16).toString(16));
  return `${prefix.join(':')}::/64`;
}

function unmapIPv4(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** Whether a connection (or an HTTP/2 request's stand-in for it) is TLS: the TLS listener's. */
function isEncrypted(socket: Duplex): boolean {
  return (socket as { encrypted?: boolean }).encrypted === true;
}

/** Whether the last X-Forwarded-Proto element (the nearest proxy's) says https. */
function forwardedHttps(req: IncomingMessage): boolean {
  const value = req.headers['x-forwarded-proto'];
  if (value === undefined) return false;
  const last = (Array.isArray(value) ? value.join(',') : value).split(',').at(-1) ?? '';
  return last.trim().toLowerCase() === 'https';
}

/** What the log line of a redirect says (http.redirectHttps). */
const REDIRECT_REASON = 'plain HTTP is redirected to https (http.redirectHttps)';

/**
 * An error page on a socket that left Node's HTTP machinery; the connection closes after it. `hsts`:
 * the Strict-Transport-Security value to add, for a TLS connection.
 */
function writeRawError(socket: Duplex, input: ErrorPageInput, hsts: string | undefined): number {
  if (!socket.writable) {
    socket.destroy();
    return 0;
  }
  const page = renderErrorPage(input);
  const headers = page.headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'connection')
    ? page.headers
    : [...page.headers, 'Connection', 'close'];
  if (hsts !== undefined) headers.push('Strict-Transport-Security', hsts);
  socket.end(Buffer.concat([serializeHead(page.status, undefined, headers), page.body]));
  return page.body.length;
}

/** How long a connection refused with an error page may go on sending before it is cut (nginx: 5 s). */
const LINGER_MS = 5_000;

/** Connections refused with an error page, whose input is read and dropped until they close. */
const lingering = new WeakSet<Duplex>();

/**
 * The staged close of RFC 9112 §9.6 after an error page on a connection whose client may still be
 * sending (a body behind an oversized head, a pipelined request): the page and a FIN are written, and
 * the input is read and dropped until the client closes too, for at most LINGER_MS. Destroying the
 * socket at once would answer the bytes still coming with a reset, which fails the client's send
 * (curl then reports no status at all) and may discard the page before the client reads it.
 */
function linger(socket: Duplex): void {
  if (socket.destroyed) return;
  lingering.add(socket);
  const cut = setTimeout(() => socket.destroy(), LINGER_MS).unref();
  socket.once('close', () => {
    clearTimeout(cut);
    lingering.delete(socket);
  });
  socket.resume();
}

/** The 308 of http.redirectHttps on an upgrade's socket: it is never switched, and closes after it. */
function writeRawRedirect(socket: Duplex, location: string, requestId: string): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const headers = ['Location', location, 'Content-Length', '0', 'X-Request-Id', requestId];
  socket.end(serializeHead(308, undefined, [...headers, 'Connection', 'close']));
}

function ignore(): void {}

const NO_BYTES = Buffer.alloc(0);

/** The method the agent sends: the client's, but an RFC 8441 WebSocket's CONNECT is the GET of RFC 6455 §4.1. */
function targetMethod(req: IncomingMessage, kind: RequestDone['kind']): string {
  return kind === 'upgrade' && req.method === 'CONNECT' && isHttp2(req) ? 'GET' : (req.method ?? 'GET');
}

/** Why a CONNECT that is no WebSocket is refused, for its 501 page. */
function unsupportedConnect(protocol: string | undefined): string {
  return protocol === undefined
    ? 'this gateway is no forward proxy: CONNECT is served only as a WebSocket (:protocol websocket)'
    : `this gateway does not relay the ${JSON.stringify(protocol).slice(0, 80)} protocol over CONNECT, only websocket`;
}

// --- A connection's responses in flight -------------------------------------------------------------

const LAST_REQUEST = Symbol('sluice.lastRequest');

type InFlightSocket = Duplex & {
  /** Node's own field: the response being written on a connection, null between responses. */
  _httpMessage?: ServerResponse | null;
  /** The latest request read from the connection, set by the edge. */
  [LAST_REQUEST]?: IncomingMessage;
};

/** Connections whose next request was malformed, waiting to answer it once the ones before are done. */
const refusing = new WeakSet<Duplex>();

/**
 * Resolves once the connection has no response in flight, or has closed. Node writes pipelined
 * responses one after the other, attaching the next when the current one finishes, so this follows
 * them to the last.
 */
function afterInFlight(socket: Duplex): Promise<void> {
  const connection = socket as InFlightSocket;
  return new Promise((resolve) => {
    const closed = (): void => resolve();
    socket.once('close', closed);
    const next = (): void => {
      // Node's own 'finish' listener, registered before ours, has attached the next response by now.
      const current = connection._httpMessage;
      if (current === null || current === undefined || socket.destroyed) {
        socket.off('close', closed);
        resolve();
        return;
      }
      current.once('finish', next);
    };
    next();
  });
}

// --- Responses queued behind a pipelined one ---------------------------------------------------------

/** The responses of one connection that wait for the ones before them, by connection. */
const QUEUED = Symbol('sluice.queued');
type QueuedSocket = Socket & { [QUEUED]?: Set<ServerResponse> };

/**
 * Responses whose connection closed before any of their bytes could be written: their status is logged
 * as 0, since the client never saw it.
 */
const unsent = new WeakSet<ServerResponse>();

/**
 * Node attaches a pipelined request's response to its connection only once the responses ahead of it
 * are finished, and emits 'close' on it only from then on. A connection that dies first (the client
 * closed it, or Node closed it after an HTTP/1.0 answer or a `Connection: close`) leaves such a
 * response without any event, and whatever waits on its 'close' (the exchange, its tunnel stream, the
 * request's log line) waits forever. So the connection's own 'close' destroys and closes every response
 * still queued on it.
 */
function watchQueued(socket: Socket, res: ServerResponse): void {
  const owner = socket as QueuedSocket;
  let queued = owner[QUEUED];
  if (queued === undefined) {
    queued = owner[QUEUED] = new Set();
    socket.once('close', closeQueued);
  }
  queued.add(res);
  res.once('close', () => queued.delete(res));
}

/**
 * A queued response the edge gave up on (a stream that broke after its head, an error past it):
 * destroying it only arms Node to cut the connection once its turn comes, and till then it has no
 * 'close' and would be logged with a status the client never saw. It is finished here, as unsent.
 */
function closeIfDropped(socket: Socket, res: ServerResponse): void {
  const queued = (socket as QueuedSocket)[QUEUED];
  if (res.socket !== null || !res.destroyed || queued?.has(res) !== true) return;
  queued.delete(res);
  unsent.add(res);
  res.emit('close');
}

/** The request the edge last read on `socket` and has not finished yet; for tests. */
export function pendingLastRequest(socket: Duplex): IncomingMessage | undefined {
  return (socket as InFlightSocket)[LAST_REQUEST];
}

function closeQueued(this: QueuedSocket): void {
  const queued = this[QUEUED];
  if (queued === undefined) return;
  this[QUEUED] = undefined;
  for (const res of queued) {
    // Attached to the connection after all, or already written whole: Node emits its 'close'.
    if (res.socket !== null || res.writableFinished) continue;
    unsent.add(res);
    res.destroy();
    res.emit('close');
  }
}

/** Calls `listener` once the client's connection closes (already closed: at once); returns the undo. */
function clientGone(req: IncomingMessage, listener: () => void): () => void {
  const socket = clientChannel(req);
  if (socket.destroyed) {
    queueMicrotask(listener);
    return () => {};
  }
  socket.once('close', listener);
  return () => socket.off('close', listener);
}
